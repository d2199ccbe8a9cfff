/**
 * PangeaClient against real HttpApi servers over an in-memory KvService: the calls, typed
 * errors, failover between endpoints, and retries that reuse one request id.
 */
import { BUILD_INFO } from '../src/version.js';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { PangeaClient, PangeaError } from '../src/index.js';
import { createHttpApi, type HttpApi } from '../src/net/http.js';
import { ServiceError, type ClusterView, type KvService } from '../src/net/service.js';
import type { ApplyResult, KvOp, RequestId, TxnResult } from '../src/state/command.js';
import type { KeyValue, MemberRecord } from '../src/state/state-store.js';
import type { WatchSource } from '../src/net/watch.js';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const text = (b: Uint8Array | null | undefined): string | undefined => (b ? Buffer.from(b).toString('utf8') : undefined);

/** An in-memory KvService with request-id sessions; just enough of the state machine for a client. */
class Fake implements KvService {
  readonly data = new Map<string, KeyValue>();
  index = 0;
  applied = 0;
  readonly sessions = new Map<string, { seq: number; digest: string; answer: ApplyResult }>();
  readonly ids: (RequestId | undefined)[] = [];
  failWith: ServiceError | null = null;
  applyThenHang = 0;
  hang = false;
  members: MemberRecord[] = [{ peerId: 'p1', role: 'voter', http: 'http://127.0.0.1:1', p2p: [] }];

  write(op: KvOp, rid?: RequestId): Promise<ApplyResult> {
    this.ids.push(rid);
    if (this.failWith) return Promise.reject(this.failWith);
    if (this.hang) return new Promise(() => {});
    const index = ++this.index;
    let answer: ApplyResult;
    const s = rid && this.sessions.get(rid.client);
    if (rid && s && rid.seq < s.seq) answer = { kind: 'request_id_stale', index };
    else if (rid && s && rid.seq === s.seq) answer = s.digest === hex(rid.digest) ? s.answer : { kind: 'request_id_conflict', index };
    else {
      answer = this.exec(op, index);
      if (rid) this.sessions.set(rid.client, { seq: rid.seq, digest: hex(rid.digest), answer });
    }
    if (this.applyThenHang > 0) {
      this.applyThenHang--;
      return new Promise(() => {});
    }
    return Promise.resolve(answer);
  }

  private exec(op: KvOp, index: number): ApplyResult {
    this.applied++;
    const cur = op.t === 'txn' ? undefined : this.data.get(hex(op.key));
    if (op.t === 'put') {
      if ((op.ifMatch !== undefined && cur?.revision !== op.ifMatch) || (op.ifAbsent && cur)) return { kind: 'precondition_failed', index, revision: cur?.revision ?? null };
      this.data.set(hex(op.key), { key: op.key, value: op.value, revision: index });
      return { kind: 'put', index, revision: index };
    }
    if (op.t === 'delete') return { kind: 'delete', index, deleted: this.data.delete(hex(op.key)) };
    // Compares: only `exists`, enough for the client's encoding.
    const ok = op.compare.every((c) => this.data.has(hex(c.key)) === (c.op === '==' ? c.value : !c.value));
    const results = (ok ? op.success : op.failure).map((o): TxnResult => {
      if (o.op === 'put') {
        this.data.set(hex(o.key), { key: o.key, value: o.value, revision: index });
        return { revision: index };
      }
      if (o.op === 'delete') return { deleted: this.data.delete(hex(o.key)) };
      if (o.op !== 'get') throw new Error(`${o.op}: not in this fake`);
      const kv = this.data.get(hex(o.key));
      return { value: kv?.value ?? null, revision: kv?.revision ?? null };
    });
    return { kind: 'txn', index, succeeded: ok, results };
  }

  readBarrier(): Promise<number> {
    return this.failWith ? Promise.reject(this.failWith) : Promise.resolve(this.index);
  }

  get(key: Uint8Array): KeyValue | undefined {
    return this.data.get(hex(key));
  }

  range(prefix: Uint8Array, afterKey: Uint8Array | null, limit: number): { items: KeyValue[]; more: boolean } {
    const all = [...this.data.values()]
      .filter((kv) => Buffer.from(kv.key).subarray(0, prefix.byteLength).equals(prefix) && (afterKey === null || Buffer.compare(kv.key, afterKey) > 0))
      .sort((a, b) => Buffer.compare(a.key, b.key));
    return { items: all.slice(0, limit), more: all.length > limit };
  }

  cluster(): ClusterView {
    return { clusterId: 'c', self: { peerId: 'p1', http: '', p2p: [] }, leader: 'p1', commitIndex: this.index, appliedIndex: this.index, members: this.members, genesis: { voters: ['p1'], learners: [] }, chain: '', archive: null, applyLevel: 1, build: BUILD_INFO };
  }

  addMember(m: MemberRecord): Promise<{ index: number }> {
    this.members.push(m);
    return Promise.resolve({ index: ++this.index });
  }

  removeMember(peerId: string): Promise<{ index: number }> {
    this.members = this.members.filter((m) => m.peerId !== peerId);
    return Promise.resolve({ index: ++this.index });
  }

  notReady(): string | null {
    return null;
  }

  metrics(): Promise<string> {
    return Promise.resolve('');
  }
  keepAlive(): never {
    throw new Error('no leases in this fake (test/cluster/leases.test.ts runs real nodes)');
  }
  lease(): undefined {
    return undefined;
  }
  leases(): { items: never[]; more: boolean } {
    return { items: [], more: false };
  }
  logTime(): number {
    return 0;
  }
  watchSource(): WatchSource {
    return { applied: () => 0, floor: () => 0, effects: () => [], subscribe: () => () => {} };
  }

  snapshot(): never {
    throw new Error('no snapshots in this fake (test/cluster/cli.test.ts streams a real one)');
  }
}

async function rejects(p: Promise<unknown>, status: number, code: string): Promise<PangeaError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof PangeaError, `not a PangeaError: ${String(e)}`);
    assert.equal(e.code, code, e.message);
    assert.equal(e.status, status, e.message);
    return e;
  }
  assert.fail(`expected ${code}`);
}

/** A port that refuses connections: bound, then closed. */
async function deadEndpoint(): Promise<string> {
  const s = createNetServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as AddressInfo).port;
  await new Promise((r) => s.close(r));
  return `http://127.0.0.1:${port}`;
}

describe('PangeaClient', () => {
  const a = new Fake();
  const b = new Fake();
  let apiA: HttpApi;
  let apiB: HttpApi;
  let urlA: string;
  let urlB: string;
  before(async () => {
    apiA = createHttpApi(a, { requestTimeoutMs: 300, adminToken: 'tok', forward: false });
    apiB = createHttpApi(b, { requestTimeoutMs: 300, adminToken: 'tok', forward: false });
    urlA = (await apiA.listen('127.0.0.1:0')).url;
    urlB = (await apiB.listen('127.0.0.1:0')).url;
  });
  after(async () => {
    await apiA.close();
    await apiB.close();
  });

  test('get, put, delete, list, scan, txn, compareAndSet', async () => {
    const c = new PangeaClient({ endpoints: [urlA], timeoutMs: 2_000, retries: 1 });
    const p = await c.put('dir/a b+c', 'one');
    const g = await c.get('dir/a b+c');
    assert.equal(text(g?.value), 'one');
    assert.equal(g?.revision, p.revision);
    assert.equal(g?.index, a.index);
    assert.ok(a.get(Buffer.from('dir/a b+c')), 'keys travel byte for byte');
    assert.equal(await c.get('missing'), null);
    await c.put(new Uint8Array([0x64, 0x69, 0x72, 0x2f, 0x7a]), new Uint8Array([0, 255]));
    assert.deepEqual([...(await c.get('dir/z'))!.value], [0, 255]);
    for (let i = 0; i < 5; i++) await c.put(`dir/k${i}`, `v${i}`);
    const page = await c.list({ prefix: 'dir/', limit: 3 });
    assert.deepEqual(page.items.map((i) => i.key), ['dir/a b+c', 'dir/k0', 'dir/k1']);
    assert.equal(page.more, true);
    const all: string[] = [];
    for await (const item of c.scan({ prefix: 'dir/', limit: 2 })) all.push(item.key);
    assert.deepEqual(all, ['dir/a b+c', 'dir/k0', 'dir/k1', 'dir/k2', 'dir/k3', 'dir/k4', 'dir/z']);
    assert.deepEqual(await c.delete('dir/k0'), { index: a.index, deleted: true });
    assert.equal((await c.delete('dir/k0')).deleted, false);

    const t = await c.txn({ compare: [{ key: 'dir/k1', target: 'exists', op: '==', value: true }], success: [{ op: 'put', key: 'dir/k1', value: 'new' }, { op: 'get', key: 'dir/k1' }, { op: 'get', key: 'nope' }] });
    assert.equal(t.succeeded, true);
    assert.equal(text((t.results[1] as { value: Uint8Array }).value), 'new');
    assert.deepEqual(t.results[2], { value: null, revision: null });

    const cas1 = await c.compareAndSet('cas', null, 'first');
    assert.ok(cas1.ok);
    const cas2 = await c.compareAndSet('cas', null, 'second');
    assert.deepEqual(cas2, { ok: false, revision: cas1.revision });
    assert.ok((await c.compareAndSet('cas', cas1.revision, 'third')).ok);
    const e = await rejects(c.put('cas', 'x', { ifMatch: 1 }), 412, 'precondition_failed');
    assert.equal(e.revision, a.get(Buffer.from('cas'))!.revision);
  });

  test('cluster and membership, with the admin token', async () => {
    const anon = new PangeaClient({ endpoints: [urlA], retries: 0 });
    assert.equal((await anon.cluster()).clusterId, 'c');
    assert.equal((await anon.members())[0]!.peerId, 'p1');
    await rejects(anon.addMember({ peerId: '12D3KooWPSRqWtnWzMNNWJDdsYP6n3T8YGq9D4G2m7DV26Ng3VNB', http: 'http://h:1', p2p: [] }), 401, 'unauthorized');
    await rejects(new PangeaClient({ endpoints: [urlA], adminToken: 'bad', retries: 0 }).removeMember('p1'), 403, 'forbidden');
    const admin = new PangeaClient({ endpoints: [urlA], adminToken: 'tok' });
    await admin.addMember({ peerId: '12D3KooWPSRqWtnWzMNNWJDdsYP6n3T8YGq9D4G2m7DV26Ng3VNB', http: 'http://h:1', p2p: ['/ip4/1.2.3.4/tcp/1'], role: 'learner' });
    assert.equal(a.members.at(-1)!.role, 'learner');
    await admin.removeMember('12D3KooWPSRqWtnWzMNNWJDdsYP6n3T8YGq9D4G2m7DV26Ng3VNB');
    assert.ok(!a.members.some((m) => m.peerId === '12D3KooWPSRqWtnWzMNNWJDdsYP6n3T8YGq9D4G2m7DV26Ng3VNB'));
  });

  test('failover: a refused endpoint and a 503 move on to the next', async () => {
    const dead = await deadEndpoint();
    const c = new PangeaClient({ endpoints: [dead, urlA], retries: 2 });
    await c.put('fo', '1');
    assert.equal(text(a.get(Buffer.from('fo'))?.value), '1');
    b.failWith = new ServiceError('unavailable', 'no quorum');
    try {
      const c2 = new PangeaClient({ endpoints: [urlB, urlA], retries: 2 });
      const appliedB = b.applied;
      await c2.put('fo2', '2');
      assert.equal(text(a.get(Buffer.from('fo2'))?.value), '2');
      assert.equal(b.applied, appliedB);
      assert.equal(text((await c2.get('fo2'))?.value), '2', 'reads fail over too');
      // Everything unavailable: a typed 503 after the retries.
      await rejects(new PangeaClient({ endpoints: [urlB], retries: 2 }).put('x', 'y'), 503, 'unavailable');
      await rejects(new PangeaClient({ endpoints: [urlB, dead], retries: 3 }).put('x', 'y'), 0, 'unavailable');
      await rejects(new PangeaClient({ endpoints: [dead], retries: 1 }).get('x'), 0, 'unavailable');
    } finally {
      b.failWith = null;
    }
  });

  test('a write retried after a 504 or a timeout reuses its request id and applies once', async () => {
    const c = new PangeaClient({ endpoints: [urlA], retries: 2, clientId: 'me' });
    a.applyThenHang = 1; // applied, then the answer never comes: the server answers 504 after 300 ms
    const appliedBefore = a.applied;
    const idsBefore = a.ids.length;
    const r = await c.put('once', 'v');
    assert.equal(a.applied, appliedBefore + 1, 'applied once');
    const ids = a.ids.slice(idsBefore);
    assert.equal(ids.length, 2);
    assert.equal(ids[0]!.client, 'me');
    assert.equal(ids[1]!.seq, ids[0]!.seq);
    assert.deepEqual(ids[1]!.digest, ids[0]!.digest);
    assert.equal(r.revision, a.get(Buffer.from('once'))!.revision);

    // The client's own deadline (100 ms) passes first; the retry goes to another endpoint.
    const quick = new PangeaClient({ endpoints: [urlA, urlA], retries: 2, timeoutMs: 100, clientId: 'me' });
    a.applyThenHang = 1;
    const before = a.applied;
    const idsAt = a.ids.length;
    const t = await quick.txn({ success: [{ op: 'put', key: 'once-txn', value: 'v' }] });
    assert.equal(a.applied, before + 1);
    assert.equal(t.succeeded, true);
    assert.equal(a.ids[idsAt]!.seq, a.ids[idsAt + 1]!.seq);

    // Next call: a new, higher sequence.
    await c.delete('once');
    assert.ok(a.ids.at(-1)!.seq > ids[0]!.seq);
  });

  test('a write whose every attempt is unknown ends as outcome_unknown', async () => {
    a.hang = true;
    try {
      await rejects(new PangeaClient({ endpoints: [urlA], retries: 1 }).put('u', 'v'), 504, 'outcome_unknown');
    } finally {
      a.hang = false;
    }
  });

  test('concurrent writes of one client never see each other as stale', async () => {
    const c = new PangeaClient({ endpoints: [urlA] });
    const rs = await Promise.all(Array.from({ length: 20 }, (_, i) => c.put(`conc/${i}`, String(i))));
    assert.equal(new Set(rs.map((r) => r.index)).size, 20);
  });

  test('contract errors are typed and not retried', async () => {
    const c = new PangeaClient({ endpoints: [urlA] });
    const idsBefore = a.ids.length;
    await rejects(c.put('k'.repeat(1025), 'v'), 400, 'bad_request');
    assert.equal(a.ids.length, idsBefore);
    await rejects(c.get('..'), 0, 'bad_request');
    const dots = await c.txn({ success: [{ op: 'put', key: '..', value: 'dots' }, { op: 'get', key: '..' }] });
    assert.equal(text((dots.results[1] as { value: Uint8Array }).value), 'dots');
    assert.throws(() => new PangeaClient({ endpoints: [] }));
    assert.throws(() => new PangeaClient({ endpoints: [urlA], clientId: 'has space' }));
  });

  test('a call rides out a window of 503s, waiting at least their Retry-After, until its deadline', async () => {
    b.failWith = new ServiceError('unavailable', 'electing', null, 1);
    setTimeout(() => (b.failWith = null), 600);
    const started = Date.now();
    await new PangeaClient({ endpoints: [urlB], discover: false }).put('ride', '1');
    assert.ok(Date.now() - started >= 900, 'waited for Retry-After: 1');
    b.failWith = new ServiceError('unavailable', 'no quorum');
    try {
      const t0 = Date.now();
      const e = await rejects(new PangeaClient({ endpoints: [urlB], deadlineMs: 300, discover: false }).put('late', '1'), 503, 'unavailable');
      assert.equal(e.mayHaveApplied, false);
      assert.ok(Date.now() - t0 < 2_000, 'gave up at its deadline');
    } finally {
      b.failWith = null;
    }
  });

  test('an AbortSignal per call, close(), and typed errors that say whether a write may have applied', async () => {
    a.hang = true;
    try {
      const c = new PangeaClient({ endpoints: [urlA], discover: false });
      const sent = await rejects(c.put('abort', 'v', { signal: AbortSignal.timeout(100) }), 0, 'outcome_unknown');
      assert.equal(sent.mayHaveApplied, true, 'a write that left may apply');
      const closing = c.put('closing', 'v');
      setTimeout(() => c.close(), 50);
      await rejects(closing, 0, 'outcome_unknown');
      await rejects(c.get('after-close'), 0, 'closed');
    } finally {
      a.hang = false;
    }
    const aborted = new AbortController();
    aborted.abort();
    await rejects(new PangeaClient({ endpoints: [urlA] }).get('x', { signal: aborted.signal }), 0, 'aborted');
  });

  test('a client given one member learns the others from /v1/cluster and moves to them', async () => {
    b.members = [
      { peerId: 'pb', role: 'voter', http: urlB, p2p: [] },
      { peerId: 'pa', role: 'voter', http: urlA, p2p: [] },
    ];
    try {
      const c = new PangeaClient({ endpoints: [urlB] });
      await c.put('disc/1', '1');
      await new Promise((r) => setTimeout(r, 100)); // discovery runs beside the call
      b.failWith = new ServiceError('unavailable', 'gone');
      await c.put('disc/2', '2');
      assert.equal(text(a.get(Buffer.from('disc/2'))?.value), '2');
    } finally {
      b.failWith = null;
    }
  });
});
