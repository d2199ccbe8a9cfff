/**
 * The HTTP API against an in-memory KvService: every malformed input is the contract's
 * error and leaves the server serving; every endpoint's happy path; 503 vs 504; the admin
 * token; forwarding to a leader.
 */
import { BUILD_INFO } from '../../src/version.js';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { connect, createServer as createNetServer, type Server as NetServer } from 'node:net';
import { createHttpApi, type HttpApi } from '../../src/net/http.js';
import { ServiceError, type ClusterView, type Consistency, type KvService } from '../../src/net/service.js';
import type { ApplyResult, Compare, KvOp, RequestId, TxnOp, TxnResult } from '../../src/state/command.js';
import type { KeyValue, MemberRecord } from '../../src/state/state-store.js';
import type { WatchSource } from '../../src/net/watch.js';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

/** An in-memory KvService: applies writes at once, with the state machine's conditions and request-id sessions. */
export class FakeService implements KvService {
  readonly data = new Map<string, KeyValue>();
  index = 0;
  readonly sessions = new Map<string, { seq: number; digest: string; answer: ApplyResult }>();
  readonly received: { op: KvOp; requestId: RequestId | undefined }[] = [];
  /** Thrown by every write (and read barrier, when `failReads`). */
  failWith: ServiceError | Error | null = null;
  failReads = false;
  hangWrites = false;
  hangReads = false;
  /** Apply the next write, then never answer it. */
  applyThenHang = 0;
  ready = true;
  members: MemberRecord[] = [{ peerId: 'p1', role: 'voter', http: 'http://127.0.0.1:1', p2p: ['/ip4/127.0.0.1/tcp/1'] }];
  constructor(readonly http = 'http://127.0.0.1:1') {}

  write(op: KvOp, requestId?: RequestId): Promise<ApplyResult> {
    this.received.push({ op, requestId });
    if (this.failWith) return Promise.reject(this.failWith);
    if (this.hangWrites) return new Promise(() => {});
    const r = this.apply(op, requestId);
    if (this.applyThenHang > 0) {
      this.applyThenHang--;
      return new Promise(() => {});
    }
    return Promise.resolve(r);
  }

  private apply(op: KvOp, rid: RequestId | undefined): ApplyResult {
    const index = ++this.index;
    if (rid) {
      const s = this.sessions.get(rid.client);
      if (s && rid.seq < s.seq) return { kind: 'request_id_stale', index };
      if (s && rid.seq === s.seq) return s.digest === hex(rid.digest) ? s.answer : { kind: 'request_id_conflict', index };
    }
    const answer = this.exec(op, index);
    if (rid) this.sessions.set(rid.client, { seq: rid.seq, digest: hex(rid.digest), answer });
    return answer;
  }

  private exec(op: KvOp, index: number): ApplyResult {
    if (op.t === 'put') {
      const cur = this.data.get(hex(op.key));
      if ((op.ifMatch !== undefined && cur?.revision !== op.ifMatch) || (op.ifAbsent && cur)) return { kind: 'precondition_failed', index, revision: cur?.revision ?? null };
      this.data.set(hex(op.key), { key: op.key, value: op.value, revision: index });
      return { kind: 'put', index, revision: index };
    }
    if (op.t === 'delete') {
      const cur = this.data.get(hex(op.key));
      if (op.ifMatch !== undefined && cur?.revision !== op.ifMatch) return { kind: 'precondition_failed', index, revision: cur?.revision ?? null };
      return { kind: 'delete', index, deleted: this.data.delete(hex(op.key)) };
    }
    const ok = op.compare.every((c) => this.compare(c));
    const results = (ok ? op.success : op.failure).map((o) => this.txnOp(o, index));
    return { kind: 'txn', index, succeeded: ok, results };
  }

  private compare(c: Compare): boolean {
    const cur = this.data.get(hex(c.key));
    const cmp = (a: number, b: number): boolean => (c.op === '==' ? a === b : c.op === '!=' ? a !== b : c.op === '<' ? a < b : a > b);
    if (c.target === 'exists') return c.op === '==' ? (cur !== undefined) === c.value : (cur !== undefined) !== c.value;
    if (c.target === 'revision') return cmp(cur?.revision ?? 0, c.value as number);
    return cur !== undefined && cmp(Buffer.compare(Buffer.from(cur.value), Buffer.from(c.value as Uint8Array)), 0);
  }

  private txnOp(o: TxnOp, index: number): TxnResult {
    if (o.op === 'put') {
      this.data.set(hex(o.key), { key: o.key, value: o.value, revision: index });
      return { revision: index };
    }
    if (o.op === 'delete') return { deleted: this.data.delete(hex(o.key)) };
    if (o.op !== 'get') throw new Error(`${o.op}: not in this fake`);
    const cur = this.data.get(hex(o.key));
    return { value: cur?.value ?? null, revision: cur?.revision ?? null };
  }

  readBarrier(_c: Consistency): Promise<number> {
    if (this.failReads && this.failWith) return Promise.reject(this.failWith);
    if (this.hangReads) return new Promise(() => {});
    return Promise.resolve(this.index);
  }

  get(key: Uint8Array): KeyValue | undefined {
    return this.data.get(hex(key));
  }

  range(prefix: Uint8Array, afterKey: Uint8Array | null, limit: number, bytesMax: number): { items: KeyValue[]; more: boolean } {
    const all = [...this.data.values()]
      .filter((kv) => Buffer.from(kv.key).subarray(0, prefix.byteLength).equals(prefix) && (afterKey === null || Buffer.compare(kv.key, afterKey) > 0))
      .sort((a, b) => Buffer.compare(a.key, b.key));
    const items: KeyValue[] = [];
    let bytes = 0;
    for (const kv of all) {
      if (items.length === limit || (items.length > 0 && bytes + kv.value.byteLength > bytesMax)) break;
      items.push(kv);
      bytes += kv.value.byteLength;
    }
    return { items, more: items.length < all.length };
  }

  cluster(): ClusterView {
    return { clusterId: 'c1', self: { peerId: 'p1', http: this.http, p2p: [] }, leader: 'p1', commitIndex: this.index, appliedIndex: this.index, members: this.members, genesis: { voters: ['p1'], learners: [] }, chain: '', archive: null, applyLevel: 1, build: BUILD_INFO };
  }

  addMember(m: MemberRecord): Promise<{ index: number }> {
    if (this.failWith) return Promise.reject(this.failWith);
    this.members.push(m);
    return Promise.resolve({ index: ++this.index });
  }

  removeMember(peerId: string): Promise<{ index: number }> {
    if (this.failWith) return Promise.reject(this.failWith);
    this.members = this.members.filter((m) => m.peerId !== peerId);
    return Promise.resolve({ index: ++this.index });
  }

  notReady(): string | null {
    return this.ready ? null : 'not ready (test)';
  }

  metrics(): Promise<string> {
    return Promise.resolve('# TYPE pangea_up gauge\npangea_up 1\n');
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

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  json: any; // eslint-disable-line @typescript-eslint/no-explicit-any
}

/** One request on a fresh connection, the path sent exactly as given. */
function send(base: string, method: string, path: string, opts: { headers?: Record<string, string>; body?: string | Buffer } = {}): Promise<Reply> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const req = request({ host: u.hostname, port: u.port, method, path, headers: opts.headers ?? {}, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const body = Buffer.concat(chunks);
        let json: unknown = undefined;
        if (String(res.headers['content-type']).startsWith('application/json')) json = JSON.parse(body.toString('utf8'));
        resolve({ status: res.statusCode!, headers: res.headers, body, json });
      });
    });
    req.on('error', reject);
    req.end(opts.body);
  });
}

/** Raw bytes on a socket; resolves with everything the server sent before closing. */
function raw(base: string, write: (s: import('node:net').Socket) => void): Promise<string> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const s = connect(Number(u.port), u.hostname, () => write(s));
    const chunks: Buffer[] = [];
    s.on('data', (c) => chunks.push(c));
    s.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')));
    s.on('error', (e) => (chunks.length ? resolve(Buffer.concat(chunks).toString('latin1')) : reject(e)));
  });
}

function assertError(r: Reply, status: number, code: string, what = ''): void {
  assert.equal(r.status, status, `${what}: ${r.status} ${r.body.toString('utf8').slice(0, 200)}`);
  assert.match(String(r.headers['content-type']), /^application\/json/, what);
  assert.equal(r.json?.error?.code, code, what);
  assert.equal(typeof r.json.error.message, 'string', what);
}

const json = { 'content-type': 'application/json' };
const txnOps = (n: number): string => JSON.stringify({ success: Array.from({ length: n }, (_, i) => ({ op: 'get', key: `k${i}` })) });

describe('HTTP API', () => {
  const service = new FakeService();
  let api: HttpApi;
  let url: string;
  before(async () => {
    api = createHttpApi(service, { maxValueBytes: 1024, maxRequestBytes: 64 * 1024, maxTxnOps: 16, requestTimeoutMs: 600, rangeBytesMax: 10 });
    url = (await api.listen('127.0.0.1:0')).url;
  });
  after(() => api.close());

  const bad: { name: string; method: string; path: string; headers?: Record<string, string>; body?: string | Buffer; status: number; code: string }[] = [
    { name: 'bad escape', method: 'GET', path: '/v1/kv/%ZZ', status: 400, code: 'bad_request' },
    { name: 'cut escape', method: 'GET', path: '/v1/kv/abc%2', status: 400, code: 'bad_request' },
    { name: 'cut escape on PUT', method: 'PUT', path: '/v1/kv/abc%', body: 'v', status: 400, code: 'bad_request' },
    { name: 'non-UTF-8 key on PUT', method: 'PUT', path: '/v1/kv/%FF', body: 'v', status: 400, code: 'bad_request' },
    { name: 'non-UTF-8 key on DELETE', method: 'DELETE', path: '/v1/kv/%C3%28', status: 400, code: 'bad_request' },
    { name: 'empty key', method: 'GET', path: '/v1/kv/', status: 400, code: 'bad_request' },
    { name: 'empty key on PUT', method: 'PUT', path: '/v1/kv/', body: 'v', status: 400, code: 'bad_request' },
    { name: '1025-byte key', method: 'GET', path: `/v1/kv/${'a'.repeat(1025)}`, status: 400, code: 'bad_request' },
    { name: '1025-byte key, encoded', method: 'PUT', path: `/v1/kv/${'%41'.repeat(1025)}`, body: 'v', status: 400, code: 'bad_request' },
    { name: 'value over the limit', method: 'PUT', path: '/v1/kv/big', body: Buffer.alloc(1025), status: 413, code: 'payload_too_large' },
    { name: 'request over the limit', method: 'POST', path: '/v1/txn', headers: json, body: Buffer.alloc(65 * 1024, 0x20), status: 413, code: 'payload_too_large' },
    { name: 'too many txn ops', method: 'POST', path: '/v1/txn', headers: json, body: txnOps(17), status: 413, code: 'payload_too_large' },
    { name: 'txn put value over the limit', method: 'POST', path: '/v1/txn', headers: json, body: JSON.stringify({ success: [{ op: 'put', key: 'a', value: 'x'.repeat(1025) }] }), status: 413, code: 'payload_too_large' },
    { name: 'malformed JSON', method: 'POST', path: '/v1/txn', headers: json, body: '{"success": [', status: 400, code: 'bad_request' },
    { name: 'empty txn body', method: 'POST', path: '/v1/txn', headers: json, body: '', status: 400, code: 'bad_request' },
    { name: 'txn body an array', method: 'POST', path: '/v1/txn', headers: json, body: '[]', status: 400, code: 'bad_request' },
    { name: 'txn body a string', method: 'POST', path: '/v1/txn', headers: json, body: '"x"', status: 400, code: 'bad_request' },
    { name: 'unknown txn op', method: 'POST', path: '/v1/txn', headers: json, body: '{"success": [{"op": "incr", "key": "a"}]}', status: 400, code: 'bad_request' },
    { name: 'unknown target', method: 'POST', path: '/v1/txn', headers: json, body: '{"compare": [{"key": "a", "target": "size", "op": "==", "value": 1}]}', status: 400, code: 'bad_request' },
    { name: 'unknown compare op', method: 'POST', path: '/v1/txn', headers: json, body: '{"compare": [{"key": "a", "target": "revision", "op": "<=", "value": 1}]}', status: 400, code: 'bad_request' },
    { name: 'exists with <', method: 'POST', path: '/v1/txn', headers: json, body: '{"compare": [{"key": "a", "target": "exists", "op": "<", "value": true}]}', status: 400, code: 'bad_request' },
    { name: 'revision compare with a string', method: 'POST', path: '/v1/txn', headers: json, body: '{"compare": [{"key": "a", "target": "revision", "op": "==", "value": "1"}]}', status: 400, code: 'bad_request' },
    { name: 'unknown encoding', method: 'POST', path: '/v1/txn', headers: json, body: '{"encoding": "hex", "success": []}', status: 400, code: 'bad_request' },
    { name: 'invalid base64', method: 'POST', path: '/v1/txn', headers: json, body: '{"encoding": "base64", "success": [{"op": "put", "key": "a", "value": "@@@"}]}', status: 400, code: 'bad_request' },
    { name: 'txn key empty', method: 'POST', path: '/v1/txn', headers: json, body: '{"success": [{"op": "get", "key": ""}]}', status: 400, code: 'bad_request' },
    { name: 'txn key not a string', method: 'POST', path: '/v1/txn', headers: json, body: '{"success": [{"op": "get", "key": 7}]}', status: 400, code: 'bad_request' },
    { name: 'txn unknown field', method: 'POST', path: '/v1/txn', headers: json, body: '{"sucess": []}', status: 400, code: 'bad_request' },
    { name: 'txn wrong content type', method: 'POST', path: '/v1/txn', headers: { 'content-type': 'text/plain' }, body: '{}', status: 415, code: 'unsupported_media_type' },
    { name: 'txn no content type', method: 'POST', path: '/v1/txn', body: '{}', status: 415, code: 'unsupported_media_type' },
    { name: 'member wrong content type', method: 'POST', path: '/v1/cluster/members', headers: { 'content-type': 'application/jsonx' }, body: '{}', status: 415, code: 'unsupported_media_type' },
    { name: 'member malformed', method: 'POST', path: '/v1/cluster/members', headers: json, body: '{"peerId": ""}', status: 400, code: 'bad_request' },
    { name: 'member peer id not a peer id', method: 'POST', path: '/v1/cluster/members', headers: json, body: '{"peerId": "bogus", "p2p": [], "http": "http://127.0.0.1:1", "role": "voter"}', status: 400, code: 'bad_request' },
    { name: 'member p2p not a multiaddr', method: 'POST', path: '/v1/cluster/members', headers: json, body: '{"peerId": "12D3KooWPSRqWtnWzMNNWJDdsYP6n3T8YGq9D4G2m7DV26Ng3VNB", "p2p": ["/ip4/999.1.1.1/tcp/1"], "http": "http://127.0.0.1:1"}', status: 400, code: 'bad_request' },
    { name: 'POST on a key', method: 'POST', path: '/v1/kv/a', body: 'v', status: 405, code: 'method_not_allowed' },
    { name: 'PUT on the range', method: 'PUT', path: '/v1/kv', body: 'v', status: 405, code: 'method_not_allowed' },
    { name: 'GET on txn', method: 'GET', path: '/v1/txn', status: 405, code: 'method_not_allowed' },
    { name: 'DELETE on cluster', method: 'DELETE', path: '/v1/cluster', status: 405, code: 'method_not_allowed' },
    { name: 'GET on a member', method: 'GET', path: '/v1/cluster/members/p1', status: 405, code: 'method_not_allowed' },
    { name: 'level not an integer', method: 'POST', path: '/v1/cluster/level', headers: json, body: '{"level": 1.5}', status: 400, code: 'bad_request' },
    { name: 'level zero', method: 'POST', path: '/v1/cluster/level', headers: json, body: '{"level": 0}', status: 400, code: 'bad_request' },
    { name: 'level with another field', method: 'POST', path: '/v1/cluster/level', headers: json, body: '{"level": 2, "force": true}', status: 400, code: 'bad_request' },
    { name: 'GET on the level', method: 'GET', path: '/v1/cluster/level', status: 405, code: 'method_not_allowed' },
    { name: 'POST on metrics', method: 'POST', path: '/metrics', status: 405, code: 'method_not_allowed' },
    { name: 'PUT on healthz', method: 'PUT', path: '/healthz', status: 405, code: 'method_not_allowed' },
    { name: 'If-Match unquoted', method: 'PUT', path: '/v1/kv/a', headers: { 'if-match': '1' }, body: 'v', status: 400, code: 'bad_request' },
    { name: 'If-Match two revisions', method: 'PUT', path: '/v1/kv/a', headers: { 'if-match': '"1", "2"' }, body: 'v', status: 400, code: 'bad_request' },
    { name: 'If-Match weak', method: 'DELETE', path: '/v1/kv/a', headers: { 'if-match': 'W/"1"' }, status: 400, code: 'bad_request' },
    { name: 'If-Match star', method: 'PUT', path: '/v1/kv/a', headers: { 'if-match': '*' }, body: 'v', status: 400, code: 'bad_request' },
    { name: 'If-None-Match a revision', method: 'PUT', path: '/v1/kv/a', headers: { 'if-none-match': '"1"' }, body: 'v', status: 400, code: 'bad_request' },
    { name: 'request id without seq', method: 'PUT', path: '/v1/kv/a', headers: { 'pangea-request-id': 'abc' }, body: 'v', status: 400, code: 'bad_request' },
    { name: 'request id seq 0', method: 'PUT', path: '/v1/kv/a', headers: { 'pangea-request-id': 'abc:0' }, body: 'v', status: 400, code: 'bad_request' },
    { name: 'request id seq negative', method: 'DELETE', path: '/v1/kv/a', headers: { 'pangea-request-id': 'abc:-1' }, status: 400, code: 'bad_request' },
    { name: 'request id client too long', method: 'PUT', path: '/v1/kv/a', headers: { 'pangea-request-id': `${'c'.repeat(65)}:1` }, body: 'v', status: 400, code: 'bad_request' },
    { name: 'request id client bad chars', method: 'POST', path: '/v1/txn', headers: { ...json, 'pangea-request-id': 'a.b:1' }, body: '{}', status: 400, code: 'bad_request' },
    { name: 'range limit 0', method: 'GET', path: '/v1/kv?limit=0', status: 400, code: 'bad_request' },
    { name: 'range limit over 10000', method: 'GET', path: '/v1/kv?limit=10001', status: 400, code: 'bad_request' },
    { name: 'range limit not a number', method: 'GET', path: '/v1/kv?limit=ten', status: 400, code: 'bad_request' },
    { name: 'range encoding', method: 'GET', path: '/v1/kv?encoding=hex', status: 400, code: 'bad_request' },
    { name: 'range consistency', method: 'GET', path: '/v1/kv?consistency=strong', status: 400, code: 'bad_request' },
    { name: 'range bad prefix escape', method: 'GET', path: '/v1/kv?prefix=%G0', status: 400, code: 'bad_request' },
    { name: 'get consistency', method: 'GET', path: '/v1/kv/a?consistency=eventual', status: 400, code: 'bad_request' },
    { name: 'unknown path', method: 'GET', path: '/v2/kv/a', status: 404, code: 'not_found' },
  ];

  test(`a table of ${bad.length} bad inputs: the contract's status and JSON, and the server still serves`, async () => {
    const before = service.received.length;
    for (const b of bad) {
      const r = await send(url, b.method, b.path, { headers: b.headers ?? {}, ...(b.body !== undefined ? { body: b.body } : {}) });
      assertError(r, b.status, b.code, b.name);
      if (b.status === 405) assert.ok(r.headers.allow, `${b.name}: Allow header`);
      assert.equal((await send(url, 'GET', '/healthz')).status, 200, `${b.name}: still serving`);
    }
    assert.equal(service.received.length, before, 'no bad input reached the service');
  });

  test('a body over the limit is refused without reading it, declared or streamed', async () => {
    // Declared: 100 MiB that are never sent.
    const declared = await raw(url, (s) => s.write('PUT /v1/kv/x HTTP/1.1\r\nhost: x\r\ncontent-length: 104857600\r\n\r\n'));
    assert.match(declared, /^HTTP\/1.1 413 /);
    assert.match(declared, /"payload_too_large"/);
    // Streamed (chunked) past the limit: answered before the body ends.
    const u = new URL(url);
    const r = await new Promise<number>((resolve, reject) => {
      const req = request({ host: u.hostname, port: u.port, method: 'POST', path: '/v1/txn', headers: json, agent: false }, (res) => {
        res.resume();
        resolve(res.statusCode!);
        req.destroy();
      });
      req.on('error', reject);
      const chunk = Buffer.alloc(16 * 1024, 0x20);
      const pump = (): void => {
        if (req.destroyed) return;
        if (req.write(chunk)) setImmediate(pump);
        else req.once('drain', pump);
      };
      pump();
    });
    assert.equal(r, 413);
    assert.equal((await send(url, 'GET', '/healthz')).status, 200);
  });

  test('huge headers: 431 JSON, the node stays up', async () => {
    const out = await raw(url, (s) => s.write(`GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: ${'a'.repeat(64 * 1024)}\r\n\r\n`));
    assert.match(out, /^HTTP\/1.1 431 /);
    assert.match(out, /"code":"headers_too_large"/);
    assert.equal((await send(url, 'GET', '/healthz')).status, 200);
  });

  test('garbage request line: 400 JSON', async () => {
    const out = await raw(url, (s) => s.write('NOT HTTP AT ALL\r\n\r\n'));
    assert.match(out, /^HTTP\/1.1 400 /);
    assert.match(out, /"code":"bad_request"/);
  });

  test('a slow body times out (408 JSON), the node stays up', async () => {
    const t0 = Date.now();
    const out = await raw(url, (s) => s.write('PUT /v1/kv/slow HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nab'));
    assert.match(out, /^HTTP\/1.1 408 /);
    assert.match(out, /"code":"request_timeout"/);
    assert.ok(Date.now() - t0 < 5_000);
    assert.equal(service.get(Buffer.from('slow')), undefined);
    assert.equal((await send(url, 'GET', '/healthz')).status, 200);
  });

  test('a truncated body (peer half-closes): 400 JSON, nothing written', async () => {
    const out = await raw(url, (s) => s.end('PUT /v1/kv/cut HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nabc'));
    assert.match(out, /^HTTP\/1.1 400 /);
    assert.match(out, /"code":"bad_request"/);
    assert.equal(service.get(Buffer.from('cut')), undefined);
    assert.equal((await send(url, 'GET', '/healthz')).status, 200);
  });

  test('put, get, delete; ETag and Pangea-Index', async () => {
    const p = await send(url, 'PUT', '/v1/kv/hello', { body: 'world' });
    assert.equal(p.status, 200);
    assert.deepEqual(Object.keys(p.json).sort(), ['index', 'revision']);
    assert.equal(p.json.revision, p.json.index);
    const g = await send(url, 'GET', '/v1/kv/hello');
    assert.equal(g.status, 200);
    assert.equal(g.body.toString(), 'world');
    assert.equal(g.headers.etag, `"${p.json.revision}"`);
    assert.equal(Number(g.headers['pangea-index']), service.index);
    assert.equal((await send(url, 'GET', '/v1/kv/hello?consistency=stale')).status, 200);
    assertError(await send(url, 'GET', '/v1/kv/nothing'), 404, 'not_found');
    const d = await send(url, 'DELETE', '/v1/kv/hello');
    assert.deepEqual(d.json, { index: d.json.index, deleted: true });
    assert.equal((await send(url, 'DELETE', '/v1/kv/hello')).json.deleted, false);
    const empty = await send(url, 'PUT', '/v1/kv/empty', { body: '' });
    assert.equal(empty.status, 200);
    assert.equal((await send(url, 'GET', '/v1/kv/empty')).body.byteLength, 0);
  });

  test('key decoding: %2F is /, + is a plus, UTF-8, 1024 bytes is fine', async () => {
    await send(url, 'PUT', '/v1/kv/a%2Fb', { body: '1' });
    assert.equal((await send(url, 'GET', '/v1/kv/a/b')).body.toString(), '1');
    await send(url, 'PUT', '/v1/kv/a+b', { body: 'plus' });
    assert.equal(service.get(Buffer.from('a+b'))?.value.toString(), 'plus');
    assertError(await send(url, 'GET', '/v1/kv/a%20b'), 404, 'not_found');
    await send(url, 'PUT', '/v1/kv/%C3%A9t%C3%A9', { body: 'summer' });
    assert.equal(service.get(Buffer.from('été'))?.value.toString(), 'summer');
    assert.equal((await send(url, 'PUT', `/v1/kv/${'k'.repeat(1024)}`, { body: 'x' })).status, 200);
    assert.equal((await send(url, 'PUT', '/v1/kv/max', { body: Buffer.alloc(1024) })).status, 200);
    assert.equal((await send(url, 'PUT', '/v1/kv/..', { body: 'dots' })).status, 200, 'no path normalisation');
    assert.equal(service.get(Buffer.from('..'))?.value.toString(), 'dots');
  });

  test('conditionals: If-Match and If-None-Match, 412 with revision', async () => {
    const p = await send(url, 'PUT', '/v1/kv/c', { body: '1' });
    const ok = await send(url, 'PUT', '/v1/kv/c', { headers: { 'if-match': `"${p.json.revision}"` }, body: '2' });
    assert.equal(ok.status, 200);
    const stale = await send(url, 'PUT', '/v1/kv/c', { headers: { 'if-match': `"${p.json.revision}"` }, body: '3' });
    assertError(stale, 412, 'precondition_failed');
    assert.equal(stale.json.revision, ok.json.revision);
    const exists = await send(url, 'PUT', '/v1/kv/c', { headers: { 'if-none-match': '*' }, body: '4' });
    assertError(exists, 412, 'precondition_failed');
    assert.equal((await send(url, 'PUT', '/v1/kv/c-new', { headers: { 'if-none-match': '*' }, body: '4' })).status, 200);
    const absent = await send(url, 'DELETE', '/v1/kv/absent', { headers: { 'if-match': '"3"' } });
    assertError(absent, 412, 'precondition_failed');
    assert.equal(absent.json.revision, null);
    assert.equal(service.received.at(-1)!.op.t, 'delete');
    assert.equal((service.received.at(-1)!.op as { ifMatch?: number }).ifMatch, 3);
  });

  test('range: prefix, after, limit, more, encodings, bytes bound', async () => {
    for (const k of ['r/a', 'r/b', 'r/c', 'r/d', 's/a']) await send(url, 'PUT', `/v1/kv/${k}`, { body: k.toUpperCase() });
    const p1 = await send(url, 'GET', '/v1/kv?prefix=r%2F&limit=2');
    assert.equal(p1.status, 200);
    assert.deepEqual(p1.json.items.map((i: { key: string }) => i.key), ['r/a', 'r/b']);
    assert.equal(p1.json.items[0].value, 'R/A');
    assert.equal(typeof p1.json.items[0].revision, 'number');
    assert.equal(p1.json.more, true);
    assert.equal(p1.json.index, service.index);
    const p2 = await send(url, 'GET', '/v1/kv?prefix=r/&after=r/b&limit=2&encoding=base64&consistency=stale');
    assert.deepEqual(p2.json.items.map((i: { key: string; value: string }) => [i.key, Buffer.from(i.value, 'base64').toString()]), [['r/c', 'R/C'], ['r/d', 'R/D']]);
    assert.equal(p2.json.more, false);
    // rangeBytesMax is 10 bytes here: three 3-byte values, then more.
    const p3 = await send(url, 'GET', '/v1/kv?prefix=r/');
    assert.equal(p3.json.items.length, 3);
    assert.equal(p3.json.more, true);
    await send(url, 'PUT', '/v1/kv/bin/x', { body: Buffer.from([0xff, 0xfe]) });
    assertError(await send(url, 'GET', '/v1/kv?prefix=bin/'), 400, 'bad_request');
    assert.equal((await send(url, 'GET', '/v1/kv?prefix=bin/&encoding=base64')).json.items[0].value, '//4=');
  });

  test('txn: compares, branches, results, encodings, charset allowed', async () => {
    await send(url, 'PUT', '/v1/kv/t/a', { body: 'x' });
    const body = {
      compare: [
        { key: 't/a', target: 'value', op: '==', value: 'x' },
        { key: 't/b', target: 'revision', op: '<', value: 10 },
        { key: 't/c', target: 'exists', op: '==', value: false },
      ],
      success: [{ op: 'put', key: 't/a', value: 'y' }, { op: 'get', key: 't/a' }, { op: 'delete', key: 't/zz' }, { op: 'get', key: 't/none' }],
      failure: [{ op: 'get', key: 't/a' }],
    };
    const r = await send(url, 'POST', '/v1/txn', { headers: { 'content-type': 'application/json; charset=utf-8' }, body: JSON.stringify(body) });
    assert.equal(r.status, 200, r.body.toString());
    assert.equal(r.json.succeeded, true);
    assert.deepEqual(r.json.results, [{ revision: r.json.index }, { value: 'y', revision: r.json.index }, { deleted: false }, { value: null, revision: null }]);
    const f = await send(url, 'POST', '/v1/txn', { headers: json, body: JSON.stringify({ ...body, encoding: 'base64', compare: [{ key: 't/a', target: 'value', op: '==', value: 'eA==' }], success: [{ op: 'put', key: 't/a', value: 'eg' }] }) });
    assert.equal(f.json.succeeded, false);
    assert.deepEqual(f.json.results, [{ value: Buffer.from('y').toString('base64'), revision: r.json.index }]);
    const none = await send(url, 'POST', '/v1/txn', { headers: json, body: '{}' });
    assert.deepEqual(none.json, { succeeded: true, index: none.json.index, results: [] });
    const op = service.received.at(-2)!.op;
    assert.equal(op.t, 'txn');
    assert.ok(op.t === 'txn' && op.compare[0]!.value instanceof Uint8Array);
    assert.equal((await send(url, 'POST', '/v1/txn', { headers: json, body: txnOps(16) })).status, 200, 'exactly maxTxnOps is fine');
  });

  test('request ids: a retry gets the first answer once; another request is 409; a lower sequence 400', async () => {
    const h = { 'pangea-request-id': 'client_1:5' };
    const a = await send(url, 'PUT', '/v1/kv/rid', { headers: h, body: 'one' });
    const indexAfter = service.get(Buffer.from('rid'))!.revision;
    const b = await send(url, 'PUT', '/v1/kv/rid', { headers: h, body: 'one' });
    assert.deepEqual(b.json, a.json);
    assert.equal(service.get(Buffer.from('rid'))!.revision, indexAfter, 'not applied twice');
    const rid = service.received.at(-1)!.requestId!;
    assert.equal(rid.client, 'client_1');
    assert.equal(rid.seq, 5);
    assert.equal(rid.digest.byteLength, 32);
    assertError(await send(url, 'PUT', '/v1/kv/rid', { headers: h, body: 'two' }), 409, 'request_id_conflict');
    assertError(await send(url, 'PUT', '/v1/kv/rid', { headers: { ...h, 'if-match': '"1"' }, body: 'one' }), 409, 'request_id_conflict');
    assertError(await send(url, 'DELETE', '/v1/kv/rid', { headers: h }), 409, 'request_id_conflict');
    assertError(await send(url, 'PUT', '/v1/kv/rid', { headers: { 'pangea-request-id': 'client_1:4' }, body: 'one' }), 400, 'bad_request');
    const t = { ...json, 'pangea-request-id': 'client_2:1' };
    const t1 = await send(url, 'POST', '/v1/txn', { headers: t, body: '{"success": [{"op": "put", "key": "rt", "value": "v"}]}' });
    const t2 = await send(url, 'POST', '/v1/txn', { headers: t, body: '{ "success" : [ {"key": "rt", "op": "put", "value": "v"} ] }' });
    assert.deepEqual(t2.json, t1.json, 'the digest is of the request, not its spelling');
  });

  test('cluster, members, healthz, readyz, metrics', async () => {
    const c = await send(url, 'GET', '/v1/cluster');
    assert.deepEqual(Object.keys(c.json).sort(), ['appliedIndex', 'applyLevel', 'archive', 'build', 'chain', 'clusterId', 'commitIndex', 'genesis', 'leader', 'members', 'self']);
    assert.deepEqual(c.json.members[0], { peerId: 'p1', p2p: ['/ip4/127.0.0.1/tcp/1'], http: 'http://127.0.0.1:1', role: 'voter' });
    const add = await send(url, 'POST', '/v1/cluster/members', { headers: json, body: JSON.stringify({ peerId: '12D3KooWPSRqWtnWzMNNWJDdsYP6n3T8YGq9D4G2m7DV26Ng3VNB', p2p: ['/ip4/127.0.0.1/tcp/2'], http: 'http://127.0.0.1:2', role: 'learner' }) });
    assert.equal(add.status, 200);
    assert.equal(typeof add.json.index, 'number');
    assert.equal(service.members.at(-1)!.role, 'learner');
    const rm = await send(url, 'DELETE', '/v1/cluster/members/12D3KooWPSRqWtnWzMNNWJDdsYP6n3T8YGq9D4G2m7DV26Ng3VNB');
    assert.equal(rm.status, 200);
    assert.ok(!service.members.some((m) => m.peerId === '12D3KooWPSRqWtnWzMNNWJDdsYP6n3T8YGq9D4G2m7DV26Ng3VNB'));
    assert.equal((await send(url, 'GET', '/healthz')).status, 200);
    assert.equal((await send(url, 'GET', '/readyz')).status, 200);
    service.ready = false;
    const nr = await send(url, 'GET', '/readyz');
    assertError(nr, 503, 'unavailable');
    assert.ok(nr.headers['retry-after']);
    service.ready = true;
    const m = await send(url, 'GET', '/metrics');
    assert.equal(m.status, 200);
    assert.match(String(m.headers['content-type']), /^text\/plain; version=0\.0\.4/);
    assert.match(m.body.toString(), /pangea_up 1/);
  });

  test('503 only for unavailable; 504 for outcome_unknown and for writes past the deadline', async () => {
    try {
      service.failWith = new ServiceError('unavailable', 'no quorum', null, 3);
      const u = await send(url, 'PUT', '/v1/kv/f', { body: 'v' });
      assertError(u, 503, 'unavailable');
      assert.equal(u.headers['retry-after'], '3');
      service.failWith = new ServiceError('outcome_unknown', 'deposed');
      assertError(await send(url, 'PUT', '/v1/kv/f', { body: 'v' }), 504, 'outcome_unknown');
      assertError(await send(url, 'POST', '/v1/txn', { headers: json, body: '{}' }), 504, 'outcome_unknown');
      service.failWith = new ServiceError('not_leader', 'no leader', null);
      assertError(await send(url, 'DELETE', '/v1/kv/f'), 503, 'unavailable');
      service.failWith = new Error('boom');
      assertError(await send(url, 'PUT', '/v1/kv/f', { body: 'v' }), 500, 'internal');
      service.failWith = null;
      service.hangWrites = true;
      assertError(await send(url, 'PUT', '/v1/kv/f', { body: 'v' }), 504, 'outcome_unknown');
      service.hangWrites = false;
      service.hangReads = true;
      assertError(await send(url, 'GET', '/v1/kv/f'), 503, 'unavailable');
    } finally {
      service.failWith = null;
      service.hangWrites = false;
      service.hangReads = false;
    }
    assert.equal((await send(url, 'PUT', '/v1/kv/f', { body: 'v' })).status, 200);
  });
});

describe('admin token', () => {
  const service = new FakeService();
  let api: HttpApi;
  let url: string;
  before(async () => {
    api = createHttpApi(service, { adminToken: 'sekret' });
    url = (await api.listen('127.0.0.1', 0)).url;
  });
  after(() => api.close());

  test('membership changes: none 401, wrong 403, right 200; other endpoints need none', async () => {
    const body = JSON.stringify({ peerId: '12D3KooWMbUdHz5myPqAUbXsBgKWKnPsNGQVrqRsgFJKYdUaR2h6', p2p: [], http: 'http://127.0.0.1:9', role: 'voter' });
    assertError(await send(url, 'POST', '/v1/cluster/members', { headers: json, body }), 401, 'unauthorized');
    assertError(await send(url, 'POST', '/v1/cluster/members', { headers: { ...json, authorization: 'Bearer nope' }, body }), 403, 'forbidden');
    assertError(await send(url, 'POST', '/v1/cluster/members', { headers: { ...json, authorization: 'Basic c2VrcmV0' }, body }), 401, 'unauthorized');
    assertError(await send(url, 'DELETE', '/v1/cluster/members/p1'), 401, 'unauthorized');
    assertError(await send(url, 'POST', '/v1/cluster/level', { headers: json, body: '{"level": 1}' }), 401, 'unauthorized');
    assertError(await send(url, 'DELETE', '/v1/cluster/members/p1', { headers: { authorization: 'Bearer sekret2' } }), 403, 'forbidden');
    assert.equal((await send(url, 'POST', '/v1/cluster/members', { headers: { ...json, authorization: 'Bearer sekret' }, body })).status, 200);
    assert.equal((await send(url, 'DELETE', '/v1/cluster/members/12D3KooWMbUdHz5myPqAUbXsBgKWKnPsNGQVrqRsgFJKYdUaR2h6', { headers: { authorization: 'Bearer sekret' } })).status, 200);
    assert.equal((await send(url, 'PUT', '/v1/kv/a', { body: 'v' })).status, 200);
  });
});

describe('forwarding to the leader', () => {
  const leader = new FakeService();
  const follower = new FakeService();
  let leaderApi: HttpApi;
  let followerApi: HttpApi;
  let leaderUrl: string;
  let followerUrl: string;
  let dropper: NetServer;
  let dropperUrl: string;
  before(async () => {
    leaderApi = createHttpApi(leader, { requestTimeoutMs: 1_000 });
    followerApi = createHttpApi(follower, { requestTimeoutMs: 1_000 });
    leaderUrl = (await leaderApi.listen('127.0.0.1:0')).url;
    followerUrl = (await followerApi.listen('127.0.0.1:0')).url;
    // A "leader" that takes the request and then drops the connection.
    dropper = createNetServer((s) => s.once('data', () => s.destroy()));
    await new Promise<void>((r) => dropper.listen(0, '127.0.0.1', r));
    dropperUrl = `http://127.0.0.1:${(dropper.address() as import('node:net').AddressInfo).port}`;
  });
  after(async () => {
    await followerApi.close();
    await leaderApi.close();
    await new Promise((r) => dropper.close(r));
  });

  test('a write on a follower is applied by the leader and answered through the follower', async () => {
    follower.failWith = new ServiceError('not_leader', 'follower', leaderUrl);
    const p = await send(followerUrl, 'PUT', '/v1/kv/fw%2Fkey', { headers: { 'pangea-request-id': 'fw:1', 'if-none-match': '*' }, body: 'via follower' });
    assert.equal(p.status, 200, p.body.toString());
    assert.equal(p.headers.etag, `"${p.json.revision}"`);
    assert.equal(leader.get(Buffer.from('fw/key'))?.value.toString(), 'via follower');
    assert.equal(leader.received.at(-1)!.requestId?.client, 'fw');
    assert.equal((leader.received.at(-1)!.op as { ifAbsent?: boolean }).ifAbsent, true);
    const again = await send(followerUrl, 'PUT', '/v1/kv/fw%2Fkey', { headers: { 'pangea-request-id': 'fw:1', 'if-none-match': '*' }, body: 'via follower' });
    assert.deepEqual(again.json, p.json, 'a retry through the follower gets the first answer');
    const t = await send(followerUrl, 'POST', '/v1/txn', { headers: json, body: '{"success": [{"op": "get", "key": "fw/key"}]}' });
    assert.equal(t.json.results[0].value, 'via follower');
    const c = await send(followerUrl, 'PUT', '/v1/kv/fw%2Fkey', { headers: { 'if-match': '"999"' }, body: 'x' });
    assertError(c, 412, 'precondition_failed');
    const d = await send(followerUrl, 'DELETE', '/v1/kv/fw%2Fkey');
    assert.equal(d.json.deleted, true);
    assert.equal((await send(followerUrl, 'POST', '/v1/cluster/members', { headers: json, body: JSON.stringify({ peerId: '12D3KooWMthYPineX4vfvhwCUrwf4eB7QD1e5vGuQETPJ1K7HqRF', p2p: [], http: 'http://h:1' }) })).status, 200);
    assert.ok(leader.members.some((m) => m.peerId === '12D3KooWMthYPineX4vfvhwCUrwf4eB7QD1e5vGuQETPJ1K7HqRF'));
  });

  test('never forwarded twice: a forwarded request reaching a non-leader is 503', async () => {
    follower.failWith = new ServiceError('not_leader', 'follower', leaderUrl);
    leader.failWith = new ServiceError('not_leader', 'deposed', followerUrl);
    try {
      const r = await send(followerUrl, 'PUT', '/v1/kv/loop', { body: 'v' });
      assertError(r, 503, 'unavailable');
      assert.ok(r.headers['retry-after']);
    } finally {
      leader.failWith = null;
    }
  });

  test('no leader known, or the leader unreachable: 503; broken after sending: 504', async () => {
    follower.failWith = new ServiceError('not_leader', 'electing', null);
    assertError(await send(followerUrl, 'PUT', '/v1/kv/x', { body: 'v' }), 503, 'unavailable');
    follower.failWith = new ServiceError('not_leader', 'follower', 'http://127.0.0.1:1');
    assertError(await send(followerUrl, 'PUT', '/v1/kv/x', { body: 'v' }), 503, 'unavailable');
    follower.failWith = new ServiceError('not_leader', 'follower', dropperUrl);
    assertError(await send(followerUrl, 'PUT', '/v1/kv/x', { body: 'v' }), 504, 'outcome_unknown');
    assertError(await send(followerUrl, 'POST', '/v1/txn', { headers: json, body: '{}' }), 504, 'outcome_unknown');
    follower.failWith = null;
    assert.equal((await send(followerUrl, 'PUT', '/v1/kv/x', { body: 'v' })).status, 200);
  });
});

describe('metrics listener', () => {
  const service = new FakeService();
  let api: HttpApi;
  let m: { url: string; close(): Promise<void> };
  before(async () => {
    api = createHttpApi(service);
    m = await api.listenMetrics('127.0.0.1:0');
  });
  after(async () => {
    await m.close();
    await api.close();
  });

  test('serves /healthz, /readyz, /metrics and nothing else', async () => {
    assert.equal((await send(m.url, 'GET', '/healthz')).status, 200);
    assert.equal((await send(m.url, 'GET', '/readyz')).status, 200);
    assert.match(String((await send(m.url, 'GET', '/metrics')).headers['content-type']), /version=0\.0\.4/);
    assertError(await send(m.url, 'GET', '/v1/kv/a'), 404, 'not_found');
    assertError(await send(m.url, 'PUT', '/v1/kv/a', { body: 'x' }), 404, 'not_found');
  });
});
