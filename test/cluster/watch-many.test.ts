/**
 * Watch at scale (issue 14): 10,000 writes (puts, deletes, txns) through a real 3-node
 * cluster whose leader is killed with -9 midway, while watchers break their streams at random
 * and resume through another node. Every watcher must see the same changes, each index once,
 * in index order, with no gap: the sequence that, replayed from an empty prefix, gives the
 * cluster's final state, and holds every acknowledged write at its index.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { PangeaClient, type WatchEvent } from '../../src/client.js';
import { killAll, leaderOf, removeDir, startCluster, startNode, tempDir, waitFor, type TestNode } from './harness.js';

const root = tempDir();
let nodes: TestNode[] = [];

before(async () => {
  nodes = await startCluster(root, 3);
});

after(async () => {
  await killAll();
  removeDir(root);
});

const WRITES = 10_000;
const KEYS = 200;
const WATCHERS = 4;
const CONCURRENCY = 16;

/** A seeded xorshift: the test's choices replay. */
function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 4294967296;
  };
}

test('10,000 writes, a leader killed with -9, watchers that break and resume anywhere: every change once, in order, no gap', { timeout: 300_000 }, async () => {
  const endpoints = nodes.map((n) => n.info.http);
  const writer = new PangeaClient({ endpoints, deadlineMs: 30_000 });
  const start = (await writer.put('y/start', 'x')).index;
  const random = rng(14);

  // Watchers: each breaks its stream after a random number of events and resumes, with the
  // last index it saw, through the next node.
  const stop = new AbortController();
  const seen: WatchEvent[][] = Array.from({ length: WATCHERS }, () => []);
  let resumes = 0;
  const watchers = seen.map(async (events, w) => {
    let after = start;
    let turn = w;
    while (!stop.signal.aborted) {
      const order = endpoints.map((_, i) => endpoints[(turn + i) % endpoints.length]!);
      const client = new PangeaClient({ endpoints: order, discover: false });
      const conn = new AbortController();
      const onStop = (): void => conn.abort();
      stop.signal.addEventListener('abort', onStop, { once: true });
      const breakAfter = 20 + Math.floor(random() * 400);
      let n = 0;
      try {
        for await (const ev of client.watch({ prefix: 'x/', after, signal: conn.signal })) {
          events.push(ev);
          after = ev.index;
          if (++n >= breakAfter) break;
        }
      } finally {
        stop.signal.removeEventListener('abort', onStop);
        client.close();
      }
      resumes++;
      turn++;
    }
  });

  // Writes: puts, deletes and txns over KEYS keys; the leader dies a third of the way in.
  const acked: { index: number; key: string; type: 'put' | 'delete'; value?: string }[] = [];
  let next = 0;
  let killed: TestNode | null = null;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < WRITES) {
        const i = next++;
        if (i === Math.floor(WRITES / 3) && killed === null) {
          killed = await leaderOf(nodes);
          await killed.kill('SIGKILL');
        }
        const key = `x/${Math.floor(random() * KEYS)}`;
        const roll = random();
        if (roll < 0.6) {
          const value = `v${i}`;
          const r = await writer.put(key, value);
          acked.push({ index: r.index, key, type: 'put', value });
        } else if (roll < 0.8) {
          const r = await writer.delete(key);
          if (r.deleted) acked.push({ index: r.index, key, type: 'delete' });
        } else {
          const other = `x/${Math.floor(random() * KEYS)}`;
          const r = await writer.txn({ compare: [{ key, target: 'exists', op: '==', value: true }], success: [{ op: 'put', key, value: `t${i}` }, { op: 'delete', key: other }], failure: [{ op: 'put', key, value: `f${i}` }] });
          acked.push({ index: r.index, key, type: 'put', value: r.succeeded ? `t${i}` : `f${i}` });
        }
      }
    }),
  );
  assert.ok(killed !== null);
  const restarted = await startNode({ dataDir: (killed as TestNode).dataDir });
  nodes = nodes.map((n) => (n === killed ? restarted : n));
  const last = (await writer.put('y/end', 'x')).index;
  const final = await writer.list({ prefix: 'x/', limit: 10_000 });

  // Every watcher reaches the last write's index (y/ is not watched: x/ changes up to it).
  await waitFor('every watcher to catch up', () => seen.every((events) => (events.at(-1)?.index ?? 0) >= Math.max(...acked.map((a) => a.index))) || null, 60_000);
  stop.abort();
  await Promise.all(watchers);
  writer.close();
  assert.ok(resumes >= WATCHERS * 5, `watchers resumed ${resumes} times`);

  const canon = (events: readonly WatchEvent[]): string =>
    JSON.stringify(events.filter((e) => e.index <= last).map((e) => [e.index, e.changes.map((c) => [c.type, c.key, c.value === undefined ? null : Buffer.from(c.value).toString(), c.cause ?? null])]));
  const reference = canon(seen[0]!);
  for (const [w, events] of seen.entries()) {
    const indexes = events.map((e) => e.index);
    assert.ok(indexes.every((x, i) => i === 0 || x > indexes[i - 1]!), `watcher ${w}: indexes strictly increase (no duplicate)`);
    assert.equal(canon(events), reference, `watcher ${w} saw what watcher 0 saw`);
  }

  // Replayed from an empty prefix, the changes give the final state.
  const state = new Map<string, { value: string; revision: number }>();
  for (const e of seen[0]!) {
    for (const c of e.changes) {
      if (c.type === 'put') state.set(c.key, { value: Buffer.from(c.value!).toString(), revision: e.index });
      else state.delete(c.key);
    }
  }
  assert.deepEqual(
    [...state.entries()].sort(([a], [b]) => (a < b ? -1 : 1)),
    final.items.map((i) => [i.key, { value: Buffer.from(i.value).toString(), revision: i.revision }]),
  );
  // Every acknowledged write is there, at its index.
  const byIndex = new Map(seen[0]!.map((e) => [e.index, e]));
  for (const a of acked) {
    const e = byIndex.get(a.index);
    assert.ok(e, `no event at index ${a.index} (${a.type} ${a.key})`);
    assert.ok(e.changes.some((c) => c.type === a.type && c.key === a.key && (a.value === undefined || Buffer.from(c.value!).toString() === a.value)), `index ${a.index}: ${a.type} ${a.key}`);
  }
  assert.ok(acked.length >= WRITES * 0.8, `${acked.length} writes acknowledged with a change`);
  void restarted;
});
