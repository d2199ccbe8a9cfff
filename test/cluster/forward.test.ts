/**
 * Writes through a follower: forwarded to the leader on the peer link (not HTTP), a retry with the same request id gets
 * the first answer (applied once), the same id for another request is a conflict, a value
 * near the limit crosses, and many at once all succeed.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { killAll, leaderOf, metric, removeDir, startCluster, tempDir, type TestNode } from './harness.js';

const root = tempDir();
after(async () => {
  await killAll();
  removeDir(root);
});

async function put(node: TestNode, key: string, body: string | Buffer, requestId?: string): Promise<{ status: number; body: string; index: string | null }> {
  const res = await fetch(`${node.info.http}/v1/kv/${key}`, { method: 'PUT', body, headers: requestId ? { 'pangea-request-id': requestId } : {}, signal: AbortSignal.timeout(15_000) });
  return { status: res.status, body: await res.text(), index: res.headers.get('pangea-index') };
}

test('a write through a follower reaches the leader and applies once when retried', { timeout: 120_000 }, async () => {
  const nodes = await startCluster(root, 3);
  const leader = await leaderOf(nodes);
  const follower = nodes.find((n) => n !== leader)!;

  const first = await put(follower, 'fwd/a', 'one', 'fwd-client:1');
  assert.equal(first.status, 200, first.body);
  const again = await put(follower, 'fwd/a', 'one', 'fwd-client:1');
  assert.equal(again.status, 200, again.body);
  assert.equal(again.body, first.body, 'the retry gets the first answer');
  assert.equal(again.index, first.index);
  assert.equal((await put(follower, 'fwd/a', 'two', 'fwd-client:1')).status, 409, 'the same id for another request');
  // A value near the limit (1 MiB), and many at once.
  assert.equal((await put(follower, 'fwd/big', Buffer.alloc(1_000_000, 0x62))).status, 200);
  const many = await Promise.all(Array.from({ length: 64 }, (_, i) => put(follower, `fwd/many/${i}`, String(i))));
  assert.deepEqual(many.filter((r) => r.status !== 200), []);
  const read = await fetch(`${leader.info.http}/v1/kv/fwd/a`);
  assert.equal(await read.text(), 'one');

  // Over the peer link, not HTTP: the follower handed every write (68, the conflict too) to
  // the leader as a fwd frame, and the leader answered no PUT over HTTP.
  assert.ok((await metric(follower, 'pangea_forwarded_writes_sent_total')) >= 68);
  assert.ok((await metric(leader, 'pangea_forwarded_writes_served_total')) >= 68);
  const puts = /^pangea_http_request_duration_seconds_count\{.*method="PUT"/m;
  assert.match(await (await fetch(`${follower.info.http}/metrics`)).text(), puts, 'the follower served the PUTs');
  assert.doesNotMatch(await (await fetch(`${leader.info.http}/metrics`)).text(), puts, 'the leader served no PUT over HTTP');
  assert.equal(await metric(leader, 'pangea_forward_frames_dropped_total'), 0);
});
