/**
 * Watch below the hot log (issue 14), with real processes and s3rver: a node archives each
 * segment's effects beside it and prunes its hot log and journal; a watch resumed from index
 * 0 is served from the archive, then the journal, then live, and its change events are byte
 * for byte those of a watcher that never left. With the archive unreachable the watch gets
 * `archive_unavailable`, and once the archive is back it is served again.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { join } from 'node:path';
import { writeNewKeyFile } from '../../src/ces/index.js';
import { readEvents, type SseEvent } from '../../src/net/sse.js';
import { killAll, metric, removeDir, startNode, tempDir, waitFor, type TestNode } from '../cluster/harness.js';
import { startS3, type TestS3 } from './s3rver.js';

const dirs: string[] = [];
let s3: (TestS3 & { port: number }) | null = null;
after(async () => {
  await killAll();
  await s3?.close();
  for (const d of dirs) removeDir(d);
});

const FAST = ['--archive-delay-entries', '5', '--archive-delay', '0s', '--archive-interval', '100ms', '--prune-interval', '300ms', '--hot-retention', '20'];

async function send(node: TestNode, i: number): Promise<void> {
  const key = `w/k${i % 17}`;
  let res: Response;
  if (i % 7 === 3) res = await fetch(`${node.info.http}/v1/kv/${key}`, { method: 'DELETE' });
  else if (i % 5 === 1) {
    const body = { compare: [{ key, target: 'exists', op: '==', value: true }], success: [{ op: 'put', key: `w/o${i % 5}`, value: `t${i}` }, { op: 'delete', key }], failure: [{ op: 'put', key, value: `f${i}` }] };
    res = await fetch(`${node.info.http}/v1/txn`, { method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json' } });
  } else res = await fetch(`${node.info.http}/v1/kv/${i % 3 === 0 ? `other/${i}` : key}`, { method: 'PUT', body: `v${i}` });
  assert.equal(res.status, 200, await res.text());
}

/** A watch from `after`: its events until `until` says stop, or the stream ends. */
async function collect(node: TestNode, after: number, until: (events: SseEvent[]) => boolean, timeoutMs = 30_000): Promise<SseEvent[]> {
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), timeoutMs);
  const out: SseEvent[] = [];
  try {
    const res = await fetch(`${node.info.http}/v1/watch?prefix=w/&after=${after}`, { signal: ac.signal });
    assert.equal(res.status, 200);
    for await (const e of readEvents(res.body!)) {
      if (e.event === 'change' || e.event === 'error') out.push(e);
      if (e.event === 'error' || until(out)) break;
    }
  } catch (err) {
    if (!ac.signal.aborted) throw err;
  } finally {
    clearTimeout(timer);
    ac.abort();
  }
  return out;
}

const lastIndex = (events: SseEvent[]): number => (events.length === 0 ? 0 : (JSON.parse(events.at(-1)!.data) as { index: number }).index);

test('a watch from index 0 below the pruned hot log is served from the archive, byte-equal to one that never left; the archive down, then back', { timeout: 180_000 }, async () => {
  const root = tempDir();
  dirs.push(root);
  s3 = await startS3(join(root, 's3'));
  const keyFile = join(root, 'archive.key');
  await writeNewKeyFile(keyFile);
  const node = await startNode({
    dataDir: join(root, 'n1'),
    extra: ['--archive-key-file', keyFile, ...FAST, '--archive-url', s3.url('c'), '--segment-entries', '40', '--snapshot-segments', '1'],
  });
  await waitFor('the node to lead', async () => (await fetch(`${node.info.http}/readyz`)).status === 200);

  // A watcher that never leaves, from the start.
  let target = Number.POSITIVE_INFINITY;
  const live = collect(node, 0, (ev) => lastIndex(ev) >= target, 120_000);
  for (let i = 0; i < 400; i++) await send(node, i);
  let i = 400;
  await waitFor('the hot log and journal pruned past index 200', async () => {
    await send(node, i++);
    return (await metric(node, 'pangea_hot_first_index')) > 200;
  }, 60_000);
  // The last change of the prefix: both watchers must get to it.
  const res = await fetch(`${node.info.http}/v1/kv/w/last`, { method: 'PUT', body: 'end' });
  target = ((await res.json()) as { index: number }).index;
  await send(node, i++); // wakes the live watcher's `until`
  const reference = await live;
  assert.equal(lastIndex(reference), target, JSON.stringify(reference.slice(-3)));
  assert.ok(reference.length > 250, `${reference.length} change events`);

  // The archive unreachable: the resumed watch is told so, and changes nothing.
  await s3.close();
  const down = await collect(node, 0, () => false);
  assert.equal(down.at(-1)?.event, 'error', JSON.stringify(down));
  const error = JSON.parse(down.at(-1)!.data) as { code: string; resumeAfter: number };
  assert.equal(error.code, 'archive_unavailable', down.at(-1)!.data);
  assert.equal(error.resumeAfter, 0);
  assert.deepEqual(down.slice(0, -1), [], 'no event before the error');

  // Back: the watch from index 0 is the live watcher's stream, byte for byte.
  s3 = await startS3(join(root, 's3'), 'pangea-test', s3.port);
  const resumed = await collect(node, 0, (ev) => lastIndex(ev) >= target, 60_000);
  assert.equal(resumed.length, reference.length, JSON.stringify(resumed.slice(-2)));
  for (let k = 0; k < reference.length; k++) {
    assert.equal(resumed[k]!.id, reference[k]!.id);
    assert.equal(resumed[k]!.data, reference[k]!.data, `event ${k} (index ${reference[k]!.id})`);
  }
  assert.ok((await metric(node, 'pangea_watch_cold_pages_total')) > 0, 'no page read from the archive');
  assert.ok((await metric(node, 'pangea_hot_first_index')) > 200);
});
