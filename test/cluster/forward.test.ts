/**
 * A write through a follower reaches the leader over the peer link (libp2p, FORWARD_PROTOCOL),
 * not by a second HTTP request, and a retry with the same request id gets the first answer.
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

async function httpPutsServed(node: TestNode): Promise<number> {
  const text = await (await fetch(`${node.info.http}/metrics`)).text();
  const m = /^pangea_http_request_duration_seconds_count\{route="\/v1\/kv\/\{key\}",method="PUT",status="200"\} (\d+)$/m.exec(text);
  return m ? Number(m[1]) : 0;
}

test('a write through a follower goes to the leader over the peer link and applies once when retried', { timeout: 120_000 }, async () => {
  const nodes = await startCluster(root, 3);
  const leader = await leaderOf(nodes);
  const follower = nodes.find((n) => n !== leader)!;
  const before = await httpPutsServed(leader);

  const first = await put(follower, 'fwd/a', 'one', 'fwd-client:1');
  assert.equal(first.status, 200, first.body);
  const again = await put(follower, 'fwd/a', 'one', 'fwd-client:1');
  assert.equal(again.status, 200, again.body);
  assert.equal(again.body, first.body, 'the retry gets the first answer');
  assert.equal(again.index, first.index);
  assert.equal((await put(follower, 'fwd/a', 'two', 'fwd-client:1')).status, 409, 'the same id for another request');
  // A value near the limit (1 MiB) crosses the peer link too.
  assert.equal((await put(follower, 'fwd/big', Buffer.alloc(1_000_000, 0x62))).status, 200);

  // Many at once (more than the default 16 request streams a connection may hold: found by
  // review, the rest failed as 504s the leader never saw).
  const many = await Promise.all(Array.from({ length: 64 }, (_, i) => put(follower, `fwd/many/${i}`, String(i))));
  assert.deepEqual(many.filter((r) => r.status !== 200), []);

  assert.equal(await metric(follower, 'pangea_writes_forwarded_total'), 68);
  assert.equal(await metric(follower, 'pangea_writes_forwarded_failed_total'), 0);
  assert.equal(await metric(leader, 'pangea_writes_forwarded_served_total'), 68);
  assert.equal(await httpPutsServed(leader), before, 'no PUT reached the leader over HTTP');
  const read = await fetch(`${leader.info.http}/v1/kv/fwd/a`);
  assert.equal(await read.text(), 'one');
});
