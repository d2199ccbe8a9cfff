/**
 * The limits a node serves with by default, over HTTP against a real node started as users
 * start it: the key limit (the state machine's own, KEY_BYTES_MAX) in paths, txns and range
 * prefixes, and the value limit (serve's default is the HTTP API's own).
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { KEY_BYTES_MAX } from '../../src/state/command.js';
import { maxValueBytesDefault } from '../../src/net/http.js';
import { killAll, removeDir, startCluster, tempDir } from '../cluster/harness.js';

const root = tempDir('pangea-limits-');
let http = '';
before(async () => {
  http = (await startCluster(root, 1))[0]!.info.http;
});
after(async () => {
  await killAll();
  removeDir(root);
});

async function call(method: string, path: string, body?: string | Uint8Array, headers: Record<string, string> = {}): Promise<{ status: number; text: string }> {
  const res = await fetch(`${http}${path}`, { method, ...(body === undefined ? {} : { body }), headers, signal: AbortSignal.timeout(10_000) });
  return { status: res.status, text: await res.text() };
}

test('a key of KEY_BYTES_MAX bytes is stored and read back; one byte more is 400 in a path, a txn and a prefix', async () => {
  const longest = 'k'.repeat(KEY_BYTES_MAX);
  assert.equal((await call('PUT', `/v1/kv/${longest}`, 'v')).status, 200);
  const got = await call('GET', `/v1/kv/${longest}`);
  assert.equal(got.status, 200);
  assert.equal(got.text, 'v');
  const over = 'k'.repeat(KEY_BYTES_MAX + 1);
  for (const [method, path] of [['PUT', `/v1/kv/${over}`], ['GET', `/v1/kv/${over}`], ['DELETE', `/v1/kv/${over}`], ['GET', `/v1/kv?prefix=${over}`]] as const) {
    const r = await call(method, path, method === 'PUT' ? 'v' : undefined);
    assert.equal(r.status, 400, `${method} ${path.slice(0, 20)}...: ${r.text}`);
  }
  const txn = await call('POST', '/v1/txn', JSON.stringify({ success: [{ op: 'put', key: over, value: 'v' }] }), { 'content-type': 'application/json' });
  assert.equal(txn.status, 400, txn.text);
});

test('a value of the default limit is stored; one byte more is 413 and changes nothing', async () => {
  assert.equal((await call('PUT', '/v1/kv/big', new Uint8Array(maxValueBytesDefault))).status, 200);
  const over = await call('PUT', '/v1/kv/big', new Uint8Array(maxValueBytesDefault + 1).fill(1));
  assert.equal(over.status, 413, over.text);
  const res = await fetch(`${http}/v1/kv/big`, { signal: AbortSignal.timeout(10_000) });
  assert.equal((await res.arrayBuffer()).byteLength, maxValueBytesDefault);
});
