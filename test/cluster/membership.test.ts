/**
 * Safe reconfiguration over HTTP against a real 3-node cluster (etcd's strict reconfig check,
 * learner first): a peer id that is none, a voter that never joined, a learner the leader
 * cannot reach, a removal that leaves no live quorum and a removal of a non-member are each
 * refused with what to do; nothing is proposed.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { clusterView, killAll, leaderOf, removeDir, startCluster, startNode, tempDir, waitFor, type TestNode } from './harness.js';

const root = tempDir();
after(async () => {
  await killAll();
  removeDir(root);
});

/** A real peer id no node runs. */
const STRANGER = '12D3KooWMthYPineX4vfvhwCUrwf4eB7QD1e5vGuQETPJ1K7HqRF';

/** One request; a 503 (a membership change still in progress, no leader yet) is retried. */
async function call(node: TestNode, method: string, path: string, body?: object): Promise<{ status: number; code: string | null; message: string }> {
  for (let attempt = 0; ; attempt++) {
    const r = await once(node, method, path, body);
    if (r.status !== 503 || attempt >= 50) return r;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

async function once(node: TestNode, method: string, path: string, body?: object): Promise<{ status: number; code: string | null; message: string }> {
  const res = await fetch(`${node.info.http}${path}`, { method, headers: body ? { 'content-type': 'application/json' } : {}, body: body ? JSON.stringify(body) : undefined, signal: AbortSignal.timeout(15_000) });
  const text = await res.text();
  const err = res.status >= 400 ? (JSON.parse(text) as { error: { code: string; message: string } }).error : null;
  return { status: res.status, code: err?.code ?? null, message: err?.message ?? text };
}

test('membership changes that would weaken the cluster are refused, through any member', { timeout: 120_000 }, async () => {
  const nodes = await startCluster(root, 3);
  const leader = await leaderOf(nodes);
  const [first, f2] = nodes.filter((n) => n !== leader) as [TestNode, TestNode];
  let f1 = first;
  const member = (peerId: string, role: string) => ({ peerId, p2p: ['/ip4/127.0.0.1/tcp/1'], http: 'http://127.0.0.1:1', role });

  const bogus = await call(f1, 'POST', '/v1/cluster/members', member('bogus', 'voter'));
  assert.deepEqual([bogus.status, bogus.code], [400, 'bad_request']);
  // Through a follower: forwarded to the leader, which refuses.
  const voter = await call(f1, 'POST', '/v1/cluster/members', member(STRANGER, 'voter'));
  assert.deepEqual([voter.status, voter.code], [409, 'conflict'], voter.message);
  assert.match(voter.message, /add it as a learner/);
  // As a learner it may be added (learners never count in a quorum)...
  assert.equal((await call(leader, 'POST', '/v1/cluster/members', member(STRANGER, 'learner'))).status, 200);
  // ...but not promoted while the leader cannot reach it.
  const promote = await call(leader, 'POST', '/v1/cluster/members', member(STRANGER, 'voter'));
  assert.deepEqual([promote.status, promote.code], [409, 'conflict'], promote.message);
  assert.equal((await call(leader, 'DELETE', `/v1/cluster/members/${STRANGER}`)).status, 200);
  const again = await call(leader, 'DELETE', `/v1/cluster/members/${STRANGER}`);
  assert.deepEqual([again.status, again.code], [404, 'not_found'], again.message);
  const view = await clusterView(leader.info.http);
  assert.equal(view.members.filter((m) => m.role === 'voter').length, 3);
  assert.ok(!view.members.some((m) => m.peerId === STRANGER));

  // A follower restarted on other ports is listed at its new address within seconds.
  await f1.kill('SIGTERM');
  const moved = await startNode({ dataDir: f1.dataDir });
  assert.notEqual(moved.info.http, f1.info.http);
  await waitFor('the new address listed', async () => (await clusterView(leader.info.http)).members.find((m) => m.peerId === moved.info.peerId)?.http === moved.info.http, 15_000);
  f1 = moved;

  // One voter down: removing a live one would leave one of two voters answering.
  await f2.kill('SIGKILL');
  await new Promise((resolve) => setTimeout(resolve, 2_000)); // several election timeouts
  const live = await call(leader, 'DELETE', `/v1/cluster/members/${f1.info.peerId}`);
  assert.deepEqual([live.status, live.code], [409, 'conflict'], live.message);
  assert.match(live.message, /short of a quorum/);
  // Removing the dead one leaves two live voters of two.
  assert.equal((await call(leader, 'DELETE', `/v1/cluster/members/${f2.info.peerId}`)).status, 200);
  await waitFor('two voters', async () => (await clusterView(leader.info.http)).members.filter((m) => m.role === 'voter').length === 2);
  assert.equal((await call(leader, 'PUT', '/v1/kv/still-writable')).status, 200);
});
