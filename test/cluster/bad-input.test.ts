/**
 * Bad input against a real node (the CLI, real LMDB, real libp2p): each gets the contract's
 * error, the node stays up, and nothing acknowledged is lost.
 */
import '../../src/polyfill.js';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { connect } from 'node:net';
import { after, before, test } from 'node:test';
import { noise } from '@chainsafe/libp2p-noise';
import { yamux } from '@chainsafe/libp2p-yamux';
import { tcp } from '@libp2p/tcp';
import { multiaddr } from '@multiformats/multiaddr';
import { createLibp2p } from 'libp2p';
import { CONSENSUS_PROTOCOL } from '../../src/net/p2p.js';
import { killAll, removeDir, startNode, tempDir, waitFor, type TestNode } from './harness.js';

let node: TestNode;
let dir: string;
const acked = new Map<string, string>();

before(async () => {
  dir = tempDir();
  node = await startNode({ dataDir: `${dir}/n1`, p2pListen: ['/ip4/127.0.0.1/tcp/0'], extra: ['--max-value-bytes', '1024', '--max-request-bytes', '4096', '--max-txn-ops', '4'] });
  await waitFor('ready', async () => (await fetch(`${node.info.http}/readyz`)).status === 200);
  for (let i = 0; i < 10; i++) {
    const res = await fetch(`${node.info.http}/v1/kv/keep${i}`, { method: 'PUT', body: `value${i}` });
    assert.equal(res.status, 200);
    acked.set(`keep${i}`, `value${i}`);
  }
});

after(async () => {
  await killAll();
  removeDir(dir);
});

interface Raw {
  status: number;
  body: string;
  type: string | undefined;
}

/** A request with its path sent byte for byte (fetch would normalise it). */
function raw(method: string, path: string, opts: { headers?: Record<string, string>; body?: string | Buffer } = {}): Promise<Raw> {
  const url = new URL(node.info.http);
  return new Promise((resolve, reject) => {
    const req = request({ host: url.hostname, port: url.port, method, path, headers: opts.headers }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, type: res.headers['content-type'] }));
    });
    req.on('error', reject);
    if (opts.body !== undefined) req.write(opts.body);
    req.end();
  });
}

const json = { 'content-type': 'application/json' };
const txn = (body: unknown) => ({ headers: json, body: JSON.stringify(body) });

const CASES: [string, () => Promise<Raw>, number, string][] = [
  ['bad percent-encoding', () => raw('GET', '/v1/kv/a%zz'), 400, 'bad_request'],
  ['truncated escape', () => raw('PUT', '/v1/kv/a%4', { body: 'x' }), 400, 'bad_request'],
  ['key that is not UTF-8', () => raw('GET', '/v1/kv/%ff%fe'), 400, 'bad_request'],
  ['empty key', () => raw('PUT', '/v1/kv/', { body: 'x' }), 400, 'bad_request'],
  ['key of 1025 bytes', () => raw('DELETE', `/v1/kv/${'k'.repeat(1025)}`), 400, 'bad_request'],
  ['value over --max-value-bytes', () => raw('PUT', '/v1/kv/big', { body: 'x'.repeat(2000) }), 413, 'payload_too_large'],
  ['body over --max-request-bytes', () => raw('POST', '/v1/txn', { headers: json, body: 'x'.repeat(10_000) }), 413, 'payload_too_large'],
  ['too many txn ops', () => raw('POST', '/v1/txn', txn({ success: [1, 2, 3, 4, 5].map((i) => ({ op: 'get', key: `k${i}` })) })), 413, 'payload_too_large'],
  ['malformed JSON', () => raw('POST', '/v1/txn', { headers: json, body: '{"compare": [' }), 400, 'bad_request'],
  ['txn body not an object', () => raw('POST', '/v1/txn', { headers: json, body: '[1,2]' }), 400, 'bad_request'],
  ['unknown txn op', () => raw('POST', '/v1/txn', txn({ success: [{ op: 'explode', key: 'a' }] })), 400, 'bad_request'],
  ['unknown compare target', () => raw('POST', '/v1/txn', txn({ compare: [{ key: 'a', target: 'mood', op: '==', value: 1 }] })), 400, 'bad_request'],
  ['exists with <', () => raw('POST', '/v1/txn', txn({ compare: [{ key: 'a', target: 'exists', op: '<', value: true }] })), 400, 'bad_request'],
  ['invalid base64', () => raw('POST', '/v1/txn', txn({ encoding: 'base64', success: [{ op: 'put', key: 'a', value: '!!!' }] })), 400, 'bad_request'],
  ['unknown encoding', () => raw('POST', '/v1/txn', txn({ encoding: 'rot13', success: [] })), 400, 'bad_request'],
  ['wrong content type', () => raw('POST', '/v1/txn', { headers: { 'content-type': 'text/plain' }, body: '{}' }), 415, 'unsupported_media_type'],
  ['wrong method on a key', () => raw('PATCH', '/v1/kv/a', { body: 'x' }), 405, 'method_not_allowed'],
  ['wrong method on txn', () => raw('GET', '/v1/txn'), 405, 'method_not_allowed'],
  ['If-Match not a quoted decimal', () => raw('PUT', '/v1/kv/keep1', { headers: { 'if-match': 'W/"1"' }, body: 'x' }), 400, 'bad_request'],
  ['If-Match with two revisions', () => raw('PUT', '/v1/kv/keep1', { headers: { 'if-match': '"1", "2"' }, body: 'x' }), 400, 'bad_request'],
  ['If-Match not met', () => raw('PUT', '/v1/kv/keep1', { headers: { 'if-match': '"999999"' }, body: 'x' }), 412, 'precondition_failed'],
  ['request id with a bad client', () => raw('PUT', '/v1/kv/a', { headers: { 'pangea-request-id': 'bad client!:1' }, body: 'x' }), 400, 'bad_request'],
  ['request id with sequence 0', () => raw('PUT', '/v1/kv/a', { headers: { 'pangea-request-id': 'c1:0' }, body: 'x' }), 400, 'bad_request'],
  ['range limit 0', () => raw('GET', '/v1/kv?prefix=a&limit=0'), 400, 'bad_request'],
  ['range limit over 10000', () => raw('GET', '/v1/kv?limit=10001'), 400, 'bad_request'],
  ['unknown consistency', () => raw('GET', '/v1/kv/keep1?consistency=sometimes'), 400, 'bad_request'],
  ['membership change with a malformed body', () => raw('POST', '/v1/cluster/members', txn({ peerId: 7 })), 400, 'bad_request'],
];

for (const [name, run, status, code] of CASES) {
  test(`bad input: ${name} -> ${status} ${code}`, async () => {
    const res = await run();
    assert.equal(res.status, status, res.body);
    assert.match(res.type ?? '', /^application\/json/);
    assert.equal((JSON.parse(res.body) as { error: { code: string } }).error.code, code);
  });
}

test('a reused request id with a different request is 409; the same request gets the first answer', async () => {
  const first = await raw('PUT', '/v1/kv/rid', { headers: { 'pangea-request-id': 'c9:5' }, body: 'one' });
  assert.equal(first.status, 200);
  const again = await raw('PUT', '/v1/kv/rid', { headers: { 'pangea-request-id': 'c9:5' }, body: 'one' });
  assert.equal(again.body, first.body);
  const other = await raw('PUT', '/v1/kv/rid', { headers: { 'pangea-request-id': 'c9:5' }, body: 'two' });
  assert.equal(other.status, 409);
  const lower = await raw('PUT', '/v1/kv/rid', { headers: { 'pangea-request-id': 'c9:4' }, body: 'one' });
  assert.equal(lower.status, 400);
});

test('huge headers, a truncated body and a garbage request line do not hurt the node', async () => {
  const huge = await raw('GET', '/v1/kv/keep1', { headers: { 'x-pad': 'y'.repeat(64 * 1024) } }).catch(() => ({ status: 0 }) as Raw);
  assert.ok(huge.status === 431 || huge.status === 400 || huge.status === 0, `huge headers: ${huge.status}`);
  const url = new URL(node.info.http);
  await new Promise<void>((resolve) => {
    const s = connect(Number(url.port), url.hostname, () => {
      s.write('PUT /v1/kv/trunc HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly-part');
      setTimeout(() => s.destroy(), 100);
    });
    s.on('close', () => resolve());
    s.on('error', () => resolve());
  });
  await new Promise<void>((resolve) => {
    const s = connect(Number(url.port), url.hostname, () => s.end('\x16\x03\x01 NOT HTTP AT ALL\r\n\r\n'));
    s.on('data', () => undefined);
    s.on('close', () => resolve());
    s.on('error', () => resolve());
  });
  assert.equal((await fetch(`${node.info.http}/v1/kv/trunc`)).status, 404, 'a truncated body is never applied');
});

test('garbage and oversized frames on the libp2p consensus protocol are rejected and counted', async () => {
  const peer = await createLibp2p({ addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] }, transports: [tcp()], connectionEncrypters: [noise()], streamMuxers: [yamux()] });
  try {
    const target = multiaddr(node.info.p2p.find((a) => a.includes('/tcp/'))!);
    for (const bytes of [new TextEncoder().encode('\x00\x00\x00\x05GET / HTTP/1.1'), new Uint8Array([0x7f, 0xff, 0xff, 0xff]), new Uint8Array(1000).fill(0xc1)]) {
      const stream = await peer.dialProtocol(target, CONSENSUS_PROTOCOL);
      stream.send(bytes);
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    await peer.stop();
  }
  const metrics = await waitFor('rejections counted', async () => {
    const text = await (await fetch(`${node.info.http}/metrics`)).text();
    const m = /pangea_p2p_frames_rejected_total (\d+)/.exec(text);
    return m && Number(m[1]) >= 2 ? text : null;
  });
  assert.match(metrics, /pangea_p2p_frames_rejected_total/);
});

test('after all of it the node is up and every acknowledged write is there', async () => {
  assert.equal((await fetch(`${node.info.http}/healthz`)).status, 200);
  assert.equal((await fetch(`${node.info.http}/readyz`)).status, 200);
  for (const [key, value] of acked) {
    const res = await fetch(`${node.info.http}/v1/kv/${key}`);
    assert.equal(res.status, 200);
    assert.equal(await res.text(), value);
  }
  assert.equal((await fetch(`${node.info.http}/v1/kv/after-all`, { method: 'PUT', body: 'ok' })).status, 200);
});
