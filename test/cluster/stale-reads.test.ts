/**
 * Stale reads after a restart. An apply is not flushed before its clients are answered
 * (src/state/staged.ts), so a node killed with -9 may come back having applied less than
 * it had shown; it serves stale reads again only once one linearizable read has gone
 * through (src/node.ts `staleReadsSafe`). Real processes on loopback.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { killAll, leaderOf, removeDir, startCluster, startNode, tempDir, waitFor, type TestNode } from './harness.js';

const dirs: string[] = [];
after(async () => {
  await killAll();
  for (const d of dirs) removeDir(d);
});

async function getStale(n: TestNode, key: string): Promise<{ status: number; body: string }> {
  const res = await fetch(`${n.info.http}/v1/kv/${key}?consistency=stale`, { signal: AbortSignal.timeout(15_000) });
  return { status: res.status, body: await res.text() };
}

/** The same data dir and addresses again (peers know it by them). */
function restart(n: TestNode): Promise<TestNode> {
  return startNode({ dataDir: n.dataDir, httpListen: new URL(n.info.http).host, p2pListen: n.info.p2p.map((a) => a.replace(/\/p2p\/[^/]+$/, '')) });
}

test('a node restarted after kill -9 serves stale reads only once it has caught up with a quorum', { timeout: 180_000 }, async () => {
  const root = tempDir();
  dirs.push(root);
  const nodes = await startCluster(root, 3);
  const leader = await leaderOf(nodes);
  const [a, b] = nodes.filter((n) => n !== leader) as [TestNode, TestNode];
  for (let i = 0; i < 20; i++) {
    const res = await fetch(`${leader.info.http}/v1/kv/k`, { method: 'PUT', body: `v${i}` });
    assert.equal(res.status, 200);
  }
  await waitFor('follower a to apply the last write', async () => (await getStale(a, 'k')).body === 'v19');

  // Alone, a restarted node cannot know what it had shown before: it refuses, saying why.
  await Promise.all([a.kill('SIGKILL'), b.kill('SIGKILL'), leader.kill('SIGKILL')]);
  const a2 = await restart(a);
  const alone = await getStale(a2, 'k');
  assert.equal(alone.status, 503, alone.body);
  assert.match(alone.body, /not caught up with the cluster since it started/);

  // With a quorum back, the same read waits for it and is at least as new as before.
  const b2 = await restart(b);
  const back = await waitFor('a stale read on the restarted node', async () => {
    const r = await getStale(a2, 'k');
    return r.status === 200 ? r : null;
  }, 60_000);
  assert.equal(back.body, 'v19');
  // Once caught up, it answers stale reads without the cluster.
  await b2.kill('SIGKILL');
  const later = await getStale(a2, 'k');
  assert.equal(later.status, 200);
  assert.equal(later.body, 'v19');
});
