/**
 * PangeaClient through leader failures: 2,000 puts (eight loops of calls one after another)
 * across two kill -9s of the leader (each restarted), with every node's address given. Every put succeeds, and each
 * applied once: the key's revision at the end is the one the put was answered with.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { PangeaClient } from '../../src/index.js';
import { allVoters, killAll, leaderOf, removeDir, startCluster, startNode, tempDir, waitFor, type TestNode } from './harness.js';

const root = tempDir();
after(async () => {
  await killAll();
  removeDir(root);
});

const PUTS = 2_000;

test('2,000 puts across two leader kill -9s: none fails, each applied once', { timeout: 240_000 }, async () => {
  let nodes = await startCluster(root, 3);
  const client = new PangeaClient({ endpoints: nodes.map((n) => n.info.http), deadlineMs: 30_000 });
  const answered: { key: string; revision: number }[] = [];
  const failures: string[] = [];
  let next = 0;
  // Eight loops of puts, one call after another each, sharing one client.
  const loop = async (): Promise<void> => {
    while (next < PUTS) {
      const key = `failover/${next++}`;
      try {
        answered.push({ key, revision: (await client.put(key, key)).revision });
      } catch (e) {
        failures.push(`${key}: ${(e as Error).message}`);
      }
    }
  };
  // The leader is killed at 500 and 1,200 puts, and restarted on its addresses a second
  // later, as a supervisor would.
  const chaos = async (): Promise<void> => {
    for (const at of [500, 1_200]) {
      await waitFor(`${at} puts`, () => answered.length + failures.length >= at, 120_000);
      const leader = await leaderOf(nodes);
      await leader.kill('SIGKILL');
      await new Promise((r) => setTimeout(r, 1_000));
      const again = await startNode({ dataDir: leader.dataDir, httpListen: new URL(leader.info.http).host, p2pListen: leader.info.p2p.map((a) => a.replace(/\/p2p\/[^/]+$/, '')) });
      nodes = nodes.map((n): TestNode => (n === leader ? again : n));
    }
  };
  await Promise.all([chaos(), ...Array.from({ length: 8 }, loop)]);
  assert.deepEqual(failures, []);
  await waitFor('every node back as a voter', () => allVoters(nodes), 60_000);
  for (const { key, revision } of answered) {
    const got = await client.get(key);
    assert.equal(got?.revision, revision, `${key} applied once`);
  }
  client.close();
});
