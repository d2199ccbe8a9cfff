/**
 * Blocks, providers and collections (API.md "Blocks", "Providers", "Collections") over HTTP. Blocks against a real 3-node cluster, every request through a
 * follower: insert, read (now, at an index, in a batch), history, two commits on one read
 * (one wins, the other's 409 carries the winner's transform and its rebase commits), a
 * write-skew pair, pend against pend until the first's TTL of cluster time passes, cancel,
 * action ids, the watch `blocks=` selector, `client.transact` under contention, and bad
 * inputs that each get the contract's error and change nothing.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { PangeaClient } from '../../src/client.js';
import { APPLY_LEVEL_MAX } from '../../src/state/command.js';
import { readEvents } from '../../src/net/sse.js';
import { clusterView, killAll, leaderOf, pangea, removeDir, startCluster, tempDir, type TestNode } from './harness.js';

const root = tempDir();
let nodes: TestNode[] = [];
let follower: TestNode;

before(async () => {
  nodes = await startCluster(root, 3);
  const leader = await leaderOf(nodes);
  follower = nodes.find((n) => n !== leader)!;
});

after(async () => {
  await killAll();
  removeDir(root);
});

type Json = Record<string, unknown>;

async function call(method: string, path: string, body?: unknown, node = follower): Promise<{ status: number; json: Json; headers: Headers }> {
  const init: RequestInit = { method, signal: AbortSignal.timeout(15_000) };
  if (body !== undefined) {
    init.body = typeof body === 'string' ? body : JSON.stringify(body);
    init.headers = { 'content-type': 'application/json' };
  }
  const res = await fetch(`${node.info.http}${path}`, init);
  const text = await res.text();
  let json: Json = {};
  try {
    json = JSON.parse(text) as Json;
  } catch {
    json = { raw: text };
  }
  return { status: res.status, json, headers: res.headers };
}

async function ok(method: string, path: string, body?: unknown): Promise<Json> {
  const r = await call(method, path, body);
  assert.equal(r.status, 200, `${method} ${path}: ${JSON.stringify(r.json)}`);
  return r.json;
}

test('the cluster starts at the newest apply level, where blocks, providers and collections are', async () => {
  assert.equal((await clusterView(follower.info.http)).applyLevel, APPLY_LEVEL_MAX);
  assert.ok(APPLY_LEVEL_MAX >= 3);
});

test('insert, read now, at an index and in a batch, and the history', async () => {
  const c1 = await ok('POST', '/v1/blocks/commit', { actionId: 'h1', reads: [], transform: { inserts: { 'doc.1': { title: 'a', tags: [] } } } });
  const r1 = (c1.revisions as Record<string, number>)['doc.1']!;
  assert.equal(r1, c1.index);
  const got = await call('GET', '/v1/blocks/doc.1');
  assert.equal(got.status, 200);
  assert.deepEqual([got.json.id, got.json.revision, got.json.body], ['doc.1', r1, { tags: [], title: 'a' }]);
  assert.equal(got.headers.get('etag'), `"${r1}"`);
  const c2 = await ok('POST', '/v1/blocks/commit', { actionId: 'h2', reads: [{ id: 'doc.1', revision: r1 }], transform: { updates: { 'doc.1': [{ op: 'splice', field: 'tags', index: 0, deleteCount: 0, insert: ['x', 'y'] }, { op: 'set', field: 'title', value: 'b' }] } } });
  const r2 = c2.index as number;
  assert.deepEqual((await ok('GET', `/v1/blocks/doc.1?at=${r2 - 1}`)).body, { tags: [], title: 'a' });
  assert.deepEqual((await ok('GET', `/v1/blocks/doc.1?at=${r2}`)).body, { tags: ['x', 'y'], title: 'b' });
  const before = await call('GET', `/v1/blocks/doc.1?at=${r1 - 1}`);
  assert.deepEqual([before.status, before.json.revision], [404, 0]);
  const batch = await ok('POST', '/v1/blocks/get', { ids: ['doc.1', 'nope'] });
  assert.deepEqual(batch.items, [
    { id: 'doc.1', revision: r2, deleted: false, body: { tags: ['x', 'y'], title: 'b' } },
    { id: 'nope', revision: 0, deleted: false, body: null },
  ]);
  const hist = await ok('GET', '/v1/blocks/doc.1/revisions?after=0');
  assert.deepEqual((hist.items as Json[]).map((i) => [i.revision, i.actionId]), [[r1, 'h1'], [r2, 'h2']]);
  assert.deepEqual((hist.items as Json[])[1]!.transform, { updates: { 'doc.1': [{ op: 'splice', field: 'tags', index: 0, deleteCount: 0, insert: ['x', 'y'] }, { op: 'set', field: 'title', value: 'b' }] } });
  // Deleted: 404 with the tombstone's revision; a block named like an operation is a block.
  const d = await ok('POST', '/v1/blocks/commit', { actionId: 'h3', reads: [{ id: 'doc.1', revision: r2 }], transform: { deletes: ['doc.1'] } });
  const gone = await call('GET', '/v1/blocks/doc.1');
  assert.deepEqual([gone.status, gone.json.revision, (gone.json.error as Json).code], [404, d.index, 'not_found']);
  await ok('POST', '/v1/blocks/commit', { actionId: 'h4', reads: [], transform: { inserts: { get: { v: 1 } } } });
  assert.deepEqual((await ok('GET', '/v1/blocks/get')).body, { v: 1 });
  assert.equal((await call('PUT', '/v1/blocks/get')).status, 405);
  // pangea blocks get, now and at an index; a deleted block exits 1.
  const now = await pangea(follower.info.http, ['blocks', 'get', 'get']);
  assert.deepEqual([now.code, JSON.parse(now.stdout)], [0, { v: 1 }]);
  const at = await pangea(follower.info.http, ['blocks', 'get', 'doc.1', '--at', String(r2 - 1), '--json']);
  assert.deepEqual(JSON.parse(at.stdout), { id: 'doc.1', revision: r1, body: { tags: [], title: 'a' }, index: JSON.parse(at.stdout).index });
  const deleted = await pangea(follower.info.http, ['blocks', 'get', 'doc.1']);
  assert.equal(deleted.code, 1);
  assert.match(deleted.stderr, /deleted at/);
  assert.equal((await call('GET', `/v1/blocks/get?at=${Number.MAX_SAFE_INTEGER}`)).status, 400);
});

test('two commits on one read: one wins; the other gets 409 with the winner\'s transform, and its rebase commits', async () => {
  const base = (await ok('POST', '/v1/blocks/commit', { actionId: 'c0', reads: [], transform: { inserts: { counter: { n: 0 } } } })).index as number;
  const inc = (id: string, rev: number, n: number): Promise<{ status: number; json: Json }> =>
    call('POST', '/v1/blocks/commit', { actionId: id, reads: [{ id: 'counter', revision: rev }], transform: { updates: { counter: [{ op: 'set', field: 'n', value: n }] } } });
  const [a, b] = await Promise.all([inc('c1', base, 1), inc('c2', base, 1)]);
  const [win, lose] = a.status === 200 ? [a, b] : [b, a];
  assert.equal(win.status, 200);
  assert.equal(lose.status, 409);
  assert.equal((lose.json.error as Json).code, 'conflict');
  const conflict = (lose.json.conflicts as Json[])[0]!;
  assert.deepEqual([conflict.id, conflict.expected, conflict.current, conflict.more], ['counter', base, win.json.index, false]);
  const missing = conflict.missing as Json[];
  assert.deepEqual(missing, [{ revision: win.json.index, actionId: win === a ? 'c1' : 'c2', transform: { updates: { counter: [{ op: 'set', field: 'n', value: 1 }] } } }]);
  // Rebased on what it missed (n was 1): n becomes 2.
  const rebased = await inc(win === a ? 'c2' : 'c1', conflict.current as number, 2);
  assert.equal(rebased.status, 200);
  assert.deepEqual((await ok('GET', '/v1/blocks/counter')).body, { n: 2 });
  // An action id commits once.
  const again = await inc('c1', rebased.json.index as number, 3);
  assert.equal(again.status, 409);
  assert.equal(typeof again.json.committed, 'number');
});

test('a write-skew pair: exactly one commits', async () => {
  const r0 = (await ok('POST', '/v1/blocks/commit', { actionId: 'w0', reads: [], transform: { inserts: { 'oncall.a': { on: true }, 'oncall.b': { on: true } } } })).index as number;
  const reads = [{ id: 'oncall.a', revision: r0 }, { id: 'oncall.b', revision: r0 }];
  const off = (id: string, actionId: string): Promise<{ status: number }> => call('POST', '/v1/blocks/commit', { actionId, reads, transform: { updates: { [id]: [{ op: 'set', field: 'on', value: false }] } } });
  const results = await Promise.all([off('oncall.a', 'w1'), off('oncall.b', 'w2')]);
  assert.deepEqual(results.map((r) => r.status).sort(), [200, 409]);
  const items = (await ok('POST', '/v1/blocks/get', { ids: ['oncall.a', 'oncall.b'] })).items as Json[];
  assert.equal(items.filter((i) => (i.body as Json).on === true).length, 1);
});

test('pend holds; a competing pend gets 409 pending until the first TTL of cluster time passes; commit, cancel', async () => {
  const r0 = (await ok('POST', '/v1/blocks/commit', { actionId: 'p0', reads: [], transform: { inserts: { held: { v: 0 } } } })).index as number;
  const pend = (actionId: string, ttl: number): Promise<{ status: number; json: Json }> =>
    call('POST', '/v1/blocks/pend', { actionId, reads: [{ id: 'held', revision: r0 }], transform: { updates: { held: [{ op: 'set', field: 'v', value: actionId }] } }, ttl });
  const first = await pend('p1', 1);
  assert.equal(first.status, 200, JSON.stringify(first.json));
  const started = Date.now();
  const second = await pend('p2', 30);
  assert.equal(second.status, 409);
  assert.equal((second.json.error as Json).code, 'pending');
  assert.deepEqual((second.json.pending as Json[])[0], { id: 'held', actionId: 'p1', expiresAt: first.json.expiresAt });
  let r = second;
  while (r.status === 409) {
    assert.ok(Date.now() - started < 10_000, 'the first pend let go within 10 s');
    await new Promise((res) => setTimeout(res, 200));
    r = await pend('p2', 30);
  }
  assert.equal(r.status, 200);
  assert.ok(Date.now() - started >= 900, `the hold lasted ${Date.now() - started} ms, its TTL is 1 s`);
  assert.equal((await call('POST', '/v1/blocks/commit', { actionId: 'p1' })).status, 404, 'the expired pend is gone');
  const committed = await ok('POST', '/v1/blocks/commit', { actionId: 'p2' });
  assert.deepEqual((await ok('GET', '/v1/blocks/held')).body, { v: 'p2' });
  assert.equal((committed.revisions as Json).held, committed.index);
  // Cancel releases; a second cancel finds nothing.
  const p3 = await call('POST', '/v1/blocks/pend', { actionId: 'p3', reads: [{ id: 'held', revision: committed.index }], transform: { deletes: ['held'] } });
  assert.equal(p3.status, 200);
  assert.deepEqual((await ok('POST', '/v1/blocks/cancel', { actionId: 'p3' })).cancelled, true);
  assert.equal((await call('POST', '/v1/blocks/cancel', { actionId: 'p3' })).status, 404);
  assert.equal((await call('POST', '/v1/blocks/commit', { actionId: 'p3' })).status, 404);
  assert.deepEqual((await ok('GET', '/v1/blocks/held')).body, { v: 'p2' });
});

test('watch blocks= streams block changes, and only those', async () => {
  const from = (await clusterView(follower.info.http)).appliedIndex;
  const ctl = new AbortController();
  const res = await fetch(`${follower.info.http}/v1/watch?blocks=w.1,w.2&after=${from}`, { signal: ctl.signal });
  assert.equal(res.status, 200);
  const c = await ok('POST', '/v1/blocks/commit', { actionId: 'wa', reads: [], transform: { inserts: { 'w.1': { a: 1 }, 'w.3': { a: 3 } } } });
  await fetch(`${follower.info.http}/v1/kv/w.1`, { method: 'PUT', body: 'not a block' });
  const c2 = await ok('POST', '/v1/blocks/commit', { actionId: 'wb', reads: [{ id: 'w.1', revision: c.index }], transform: { updates: { 'w.1': [{ op: 'set', field: 'a', value: 2 }] } } });
  const seen: Json[] = [];
  for await (const ev of readEvents(res.body!)) {
    if (ev.event !== 'change') continue;
    seen.push(JSON.parse(ev.data) as Json);
    if (seen.length === 2) break;
  }
  ctl.abort();
  assert.deepEqual(seen, [
    { index: c.index, changes: [{ type: 'block', id: 'w.1', revision: c.index, transform: { inserts: { 'w.1': { a: 1 } } } }] },
    { index: c2.index, changes: [{ type: 'block', id: 'w.1', revision: c2.index, transform: { updates: { 'w.1': [{ op: 'set', field: 'a', value: 2 }] } } }] },
  ]);
  assert.equal((await call('GET', '/v1/watch?blocks=bad%20id')).status, 400);
  assert.equal((await call('GET', '/v1/watch?blocks=a&prefix=b')).status, 400);
});

test('client.transact: 8 clients add to one list at once through different nodes; every add lands once', async () => {
  const clients = nodes.map((n) => new PangeaClient({ endpoints: [n.info.http] }));
  await clients[0]!.commit({ actionId: 'list0', reads: [], transform: { inserts: { list: { items: [] } } } });
  const adds = Array.from({ length: 8 }, (_, i) => clients[i % clients.length]!.transact(['list'], (blocks) => {
    const list = blocks.get('list')!.body!;
    return { updates: { list: [{ op: 'splice', field: 'items', index: (list.items as unknown[]).length, deleteCount: 0, insert: [i] }] } };
  }));
  const results = await Promise.all(adds);
  const list = await clients[1]!.getBlock('list');
  assert.deepEqual([...(list.body!.items as number[])].sort((a, b) => a - b), [0, 1, 2, 3, 4, 5, 6, 7]);
  assert.ok(results.some((r) => r.attempts > 1), 'some rebased');
});

test('bad inputs: each the contract\'s error, and nothing changes', async () => {
  const r0 = (await ok('POST', '/v1/blocks/commit', { actionId: 'b0', reads: [], transform: { inserts: { target: { list: [1, 2], n: 1 } } } })).index as number;
  const read = [{ id: 'target', revision: r0 }];
  const deep = JSON.parse(`{"x":${'['.repeat(70)}${']'.repeat(70)}}`) as unknown;
  const cases: [string, unknown, number][] = [
    ['bad block id', { actionId: 'b1', reads: [], transform: { inserts: { 'no/slash': {} } } }, 400],
    ['bad action id', { actionId: 'no spaces', reads: [], transform: { inserts: { fresh: {} } } }, 400],
    ['an update missing from reads', { actionId: 'b2', reads: [], transform: { updates: { target: [{ op: 'set', field: 'n', value: 2 }] } } }, 400],
    ['an unknown op', { actionId: 'b3', reads: read, transform: { updates: { target: [{ op: 'push', field: 'list', value: 3 }] } } }, 400],
    ['a negative splice', { actionId: 'b4', reads: read, transform: { updates: { target: [{ op: 'splice', field: 'list', index: -1, deleteCount: 0 }] } } }, 422],
    ['a fractional splice', { actionId: 'b5', reads: read, transform: { updates: { target: [{ op: 'splice', field: 'list', index: 0.5, deleteCount: 0 }] } } }, 422],
    ['a splice past the end', { actionId: 'b6', reads: read, transform: { updates: { target: [{ op: 'set', field: 'n', value: 9 }, { op: 'splice', field: 'list', index: 1, deleteCount: 2 }] } } }, 422],
    ['a field __proto__', `{"actionId":"b7","reads":[],"transform":{"inserts":{"fresh":{"__proto__":{"a":1}}}}}`, 400],
    ['a field constructor', { actionId: 'b8', reads: [], transform: { inserts: { fresh: { constructor: 1 } } } }, 400],
    ['a field prototype', { actionId: 'b9', reads: read, transform: { updates: { target: [{ op: 'set', field: 'prototype', value: 1 }] } } }, 400],
    ['a body that is not an object', { actionId: 'b10', reads: [], transform: { inserts: { fresh: [1] } } }, 400],
    ['nesting deeper than 64', { actionId: 'b11', reads: [], transform: { inserts: { fresh: deep } } }, 400],
    ['an insert of a block that exists', { actionId: 'b12', reads: [], transform: { inserts: { target: {} } } }, 422],
    ['an unknown field', { actionId: 'b13', reads: [], transform: { inserts: { fresh: {} } }, extra: 1 }, 400],
    ['a pend ttl over 300 s', { actionId: 'b14', reads: [], transform: { inserts: { fresh: {} } }, ttl: 301 }, 400],
  ];
  const index = (await clusterView(follower.info.http)).appliedIndex;
  for (const [what, body, status] of cases) {
    const path = what.startsWith('a pend') ? '/v1/blocks/pend' : '/v1/blocks/commit';
    const r = await call('POST', path, body);
    assert.equal(r.status, status, `${what}: ${JSON.stringify(r.json)}`);
  }
  assert.equal((await call('GET', '/v1/blocks/bad%2Fid')).status, 400);
  assert.equal((await call('POST', '/v1/blocks/get', { ids: [] })).status, 400);
  assert.equal((await call('POST', '/v1/blocks/commit', '{"actionId":')).status, 400);
  const plain = await fetch(`${follower.info.http}/v1/blocks/commit`, { method: 'POST', body: '{}', headers: { 'content-type': 'text/plain' } });
  assert.equal(plain.status, 415);
  assert.deepEqual((await ok('GET', '/v1/blocks/target')).body, { list: [1, 2], n: 1 });
  assert.equal((await call('GET', '/v1/blocks/fresh')).status, 404);
  // Apply-time refusals (422) take an index; nothing else was written.
  const now = (await clusterView(follower.info.http)).appliedIndex;
  assert.ok(now - index <= 4, `only the 422s reached the log (${now - index} indexes)`);
});

test('providers: put, get, list by provider, the 21st refused, delete, watch, and a provider that stops renewing is gone within TTL + 1.5 s', async () => {
  const lease = (await ok('POST', '/v1/leases', { ttl: 30 })).id as string;
  const put = (key: string, provider: string, l = lease, addrs = ['/ip4/127.0.0.1/tcp/4001']): Promise<{ status: number; json: Json }> => call('PUT', `/v1/providers/${key}`, { provider, addrs, lease: l });
  const from = (await clusterView(follower.info.http)).appliedIndex;
  const ctl = new AbortController();
  const res = await fetch(`${follower.info.http}/v1/watch?providers=cid%2F1&after=${from}`, { signal: ctl.signal });
  for (let i = 0; i < 20; i++) assert.equal((await put('cid%2F1', `peer${i}`)).status, 200);
  const over = await put('cid%2F1', 'peer20');
  assert.deepEqual([over.status, (over.json.error as Json).code], [409, 'limit_reached']);
  const got = await ok('GET', '/v1/providers/cid%2F1');
  assert.equal((got.items as Json[]).length, 20);
  assert.deepEqual((got.items as Json[])[0], { provider: 'peer0', addrs: ['/ip4/127.0.0.1/tcp/4001'], lease, revision: (got.items as Json[])[0]!.revision });
  await ok('PUT', '/v1/providers/cid%2F2', { provider: 'peer0', addrs: [], lease });
  const provided = await ok('GET', '/v1/providers?provider=peer0');
  assert.deepEqual((provided.items as Json[]).map((i) => i.key), ['cid/1', 'cid/2']);
  // Pages: limit and after (a key), more.
  const page1 = await ok('GET', '/v1/providers?provider=peer0&limit=1');
  assert.deepEqual([(page1.items as Json[]).map((i) => i.key), page1.more], [['cid/1'], true]);
  const page2 = await ok('GET', '/v1/providers?provider=peer0&limit=1&after=cid%2F1');
  assert.deepEqual([(page2.items as Json[]).map((i) => i.key), page2.more], [['cid/2'], false]);
  assert.equal((await call('GET', `/v1/providers?provider=peer0&after=${'k'.repeat(5000)}`)).status, 400, 'an after over 1024 bytes');
  assert.equal((await call('GET', '/v1/providers?provider=peer0&limit=0')).status, 400);
  const del = await ok('DELETE', '/v1/providers/cid%2F1/peer5');
  assert.equal(del.deleted, true);
  assert.equal((await ok('DELETE', '/v1/providers/cid%2F1/peer5')).deleted, false);
  assert.equal((await put('cid%2F1', 'peer20')).status, 200, 'room again after a delete');
  const seen: Json[] = [];
  for await (const ev of readEvents(res.body!)) {
    if (ev.event !== 'change') continue;
    seen.push(...((JSON.parse(ev.data) as Json).changes as Json[]));
    if (seen.length === 22) break;
  }
  ctl.abort();
  assert.deepEqual(seen[0], { type: 'provider', op: 'put', key: 'cid/1', provider: 'peer0', addrs: ['/ip4/127.0.0.1/tcp/4001'], lease, revision: seen[0]!.revision });
  assert.deepEqual(seen[20], { type: 'provider', op: 'delete', key: 'cid/1', provider: 'peer5', cause: 'delete' });
  assert.equal(seen[21]!.provider, 'peer20');

  // Bad inputs: no lease, an unknown one, a bad address, a name with "/".
  for (const [body, status] of [
    [{ provider: 'x', addrs: [] }, 400],
    [{ provider: 'x', addrs: [], lease: '999999999' }, 404],
    [{ provider: 'x', addrs: ['not a multiaddr'], lease }, 400],
    [{ provider: 'a/b', addrs: [], lease }, 400],
  ] as const) assert.equal((await call('PUT', '/v1/providers/cid%2F3', body)).status, status, JSON.stringify(body));
  assert.deepEqual((await ok('GET', '/v1/providers/cid%2F3')).items, []);

  // A provider that stops renewing: gone with its lease, within TTL + 1.5 s.
  const short = await ok('POST', '/v1/leases', { ttl: 2 });
  const granted = Date.now();
  await ok('PUT', '/v1/providers/cid%2F4', { provider: 'mortal', addrs: [], lease: short.id });
  let gone = 0;
  while (gone === 0) {
    if (((await ok('GET', '/v1/providers/cid%2F4')).items as Json[]).length === 0) gone = Date.now() - granted;
    else await new Promise((r) => setTimeout(r, 50));
    assert.ok(Date.now() - granted < 10_000, 'the record outlived its lease by far');
  }
  assert.ok(gone >= 1_900 && gone <= 3_500 + 500, `the record went ${gone} ms after its 2 s lease was granted (TTL + 1.5 s, and the poll)`);
});

const PEOPLE = {
  kind: 'table',
  schema: { type: 'object', properties: { id: { type: 'string' }, email: { type: 'string', format: 'email' }, age: { type: 'integer' } }, required: ['id', 'email'] },
  primaryKey: { field: 'id', type: 'string' },
  indexes: [{ name: 'by_email', field: 'email', type: 'string', unique: true }, { name: 'by_age', field: 'age', type: 'integer' }],
};

test('collections: define, list, get; put, get, query by pk and by index with paging, update, delete; conditions; watch collection=', async () => {
  const d = await ok('PUT', '/v1/collections/people', PEOPLE);
  assert.equal(d.version, d.index);
  assert.equal((await call('PUT', '/v1/collections/people', PEOPLE, follower)).status, 200, 'a define again (no condition) is fine');
  const again = await call('GET', '/v1/collections/people');
  const version = again.json.version as number;
  assert.equal((await fetch(`${follower.info.http}/v1/collections/people`, { method: 'PUT', body: JSON.stringify(PEOPLE), headers: { 'content-type': 'application/json', 'if-none-match': '*' } })).status, 412);
  assert.equal((await fetch(`${follower.info.http}/v1/collections/people`, { method: 'PUT', body: JSON.stringify(PEOPLE), headers: { 'content-type': 'application/json', 'if-match': `"${version + 1000}"` } })).status, 412);
  const from = (await clusterView(follower.info.http)).appliedIndex;
  const ctl = new AbortController();
  const watch = await fetch(`${follower.info.http}/v1/watch?collection=people&after=${from}`, { signal: ctl.signal });
  assert.equal(watch.status, 200);
  const puts: number[] = [];
  for (let i = 0; i < 7; i++) puts.push((await ok('PUT', `/v1/collections/people/records/p${i}`, { id: `p${i}`, email: `p${i}@x.org`, age: 30 + (i % 2) })).revision as number);
  const got = await call('GET', '/v1/collections/people/records/p3');
  assert.deepEqual([got.status, got.json, got.headers.get('etag')], [200, { age: 31, email: 'p3@x.org', id: 'p3' }, `"${puts[3]}"`]);
  assert.equal((await call('GET', '/v1/collections/people/records/nobody')).status, 404);
  const info = await ok('GET', '/v1/collections/people');
  assert.deepEqual([info.name, info.kind, info.count, (info.indexes as Json[]).map((x) => [x.name, x.state])], ['people', 'table', 7, [['by_email', 'ready'], ['by_age', 'ready']]]);
  assert.deepEqual(((await ok('GET', '/v1/collections')).items as Json[]).map((x) => x.name), ['people']);
  // By pk, in pages.
  const p1 = await ok('GET', '/v1/collections/people/records?limit=3');
  assert.deepEqual([(p1.items as Json[]).map((x) => x.pk), p1.more], [['p0', 'p1', 'p2'], true]);
  const p2 = await ok('GET', `/v1/collections/people/records?limit=3&cursor=${p1.cursor as string}`);
  assert.deepEqual((p2.items as Json[]).map((x) => x.pk), ['p3', 'p4', 'p5']);
  assert.deepEqual(((await ok('GET', '/v1/collections/people/records?after=p5')).items as Json[]).map((x) => x.pk), ['p6']);
  // By index: eq, a range, paging by cursor.
  assert.deepEqual(((await ok('GET', '/v1/collections/people/records?index=by_age&eq=31')).items as Json[]).map((x) => x.pk), ['p1', 'p3', 'p5']);
  assert.deepEqual(((await ok('GET', `/v1/collections/people/records?index=by_email&eq=${encodeURIComponent('p4@x.org')}`)).items as Json[]).map((x) => x.pk), ['p4']);
  const r1 = await ok('GET', '/v1/collections/people/records?index=by_age&gte=30&lt=32&limit=4');
  assert.deepEqual([(r1.items as Json[]).map((x) => x.pk), r1.more], [['p0', 'p2', 'p4', 'p6'], true]);
  const r2 = await ok('GET', `/v1/collections/people/records?index=by_age&gte=30&lt=32&limit=4&cursor=${r1.cursor as string}`);
  assert.deepEqual([(r2.items as Json[]).map((x) => x.pk), r2.more, r2.cursor], [['p1', 'p3', 'p5'], false, null]);
  // An update moves its entries; conditions; a unique clash names the holder; delete.
  const up = await fetch(`${follower.info.http}/v1/collections/people/records/p3`, { method: 'PUT', body: JSON.stringify({ id: 'p3', email: 'p3@x.org', age: 99 }), headers: { 'content-type': 'application/json', 'if-match': `"${puts[3]}"` } });
  assert.equal(up.status, 200);
  assert.deepEqual(((await ok('GET', '/v1/collections/people/records?index=by_age&eq=31')).items as Json[]).map((x) => x.pk), ['p1', 'p5']);
  const stale = await fetch(`${follower.info.http}/v1/collections/people/records/p3`, { method: 'PUT', body: JSON.stringify({ id: 'p3', email: 'p3@x.org' }), headers: { 'content-type': 'application/json', 'if-match': `"${puts[3]}"` } });
  assert.equal(stale.status, 412);
  const clash = await call('PUT', '/v1/collections/people/records/zz', { id: 'zz', email: 'p4@x.org' });
  assert.deepEqual([clash.status, (clash.json.error as Json).code, clash.json.pk], [409, 'unique_violation', 'p4']);
  const bad = await call('PUT', '/v1/collections/people/records/zz', { id: 'zz', email: 'nope', age: 'old' });
  assert.equal(bad.status, 422);
  assert.equal((bad.json.error as Json).code, 'schema_violation');
  assert.ok(['format', 'type'].includes((bad.json.errors as Json[])[0]!.keyword as string), JSON.stringify(bad.json.errors));
  // On a lease: shown with it, and gone with its revoke.
  const lease = (await ok('POST', '/v1/leases', { ttl: 60 })).id as string;
  await ok('PUT', `/v1/collections/people/records/tmp?lease=${lease}`, { id: 'tmp', email: 'tmp@x.org' });
  const tmp = await call('GET', '/v1/collections/people/records/tmp');
  assert.equal(tmp.headers.get('pangea-lease'), lease);
  assert.equal((await call('PUT', '/v1/collections/people/records/tmp2?lease=999999999', { id: 'tmp2', email: 't2@x.org' })).status, 404);
  await ok('DELETE', `/v1/leases/${lease}`);
  assert.equal((await call('GET', '/v1/collections/people/records/tmp')).status, 404);
  const del = await ok('DELETE', '/v1/collections/people/records/p0');
  assert.equal(del.deleted, true);
  assert.equal((await ok('DELETE', '/v1/collections/people/records/p0')).deleted, false);
  const seen: Json[] = [];
  for await (const ev of readEvents(watch.body!)) {
    if (ev.event !== 'change') continue;
    for (const c of (JSON.parse(ev.data) as { changes: Json[] }).changes) seen.push(c);
    if (seen.length === 11) break;
  }
  ctl.abort();
  assert.deepEqual(seen[0], { type: 'put', collection: 'people', pk: 'p0', record: { age: 30, email: 'p0@x.org', id: 'p0' }, revision: puts[0] });
  assert.deepEqual(seen[7]!.record, { age: 99, email: 'p3@x.org', id: 'p3' });
  assert.deepEqual([seen[8]!.type, seen[8]!.pk, seen[9]!.type, seen[9]!.pk], ['put', 'tmp', 'delete', 'tmp'], 'the lease\'s revoke deletes it');
  assert.deepEqual(seen[10], { type: 'delete', collection: 'people', pk: 'p0' });
});

test('collections: an index added to records builds to ready; a diary appends; a drop empties it; bad inputs get the contract\'s errors', async () => {
  await ok('PUT', '/v1/collections/later', { primaryKey: { field: 'n', type: 'integer' } });
  for (let i = 0; i < 50; i++) await ok('PUT', `/v1/collections/later/records/${i - 10}`, { n: i - 10, color: i % 2 === 0 ? 'red' : 'blue' });
  await ok('PUT', '/v1/collections/later', { primaryKey: { field: 'n', type: 'integer' }, indexes: [{ name: 'by_color', field: 'color', type: 'string' }] });
  let state = '';
  for (let i = 0; i < 100 && state !== 'ready'; i++) {
    const info = await ok('GET', '/v1/collections/later');
    state = (info.indexes as Json[])[0]!.state as string;
    if (state === 'building') {
      // (Unless it became ready between the two reads: the leader builds as fast as it can.)
      const early = await call('GET', '/v1/collections/later/records?index=by_color&eq=red');
      if (early.status !== 200) assert.deepEqual([early.status, (early.json.error as Json).code], [409, 'index_not_ready']);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  assert.equal(state, 'ready', 'the leader built the index');
  const reds = ((await ok('GET', '/v1/collections/later/records?index=by_color&eq=red&limit=100')).items as Json[]).map((x) => x.pk);
  assert.deepEqual(reds, Array.from({ length: 25 }, (_, i) => 2 * i - 10));
  assert.deepEqual(((await ok('GET', '/v1/collections/later/records?after=-2&limit=2')).items as Json[]).map((x) => x.pk), [-1, 0]);
  // A unique index over two records that share a value fails, naming them; reads on it: 409.
  await ok('PUT', '/v1/collections/later/records/100', { n: 100, color: 'red' });
  await ok('PUT', '/v1/collections/later', { primaryKey: { field: 'n', type: 'integer' }, indexes: [{ name: 'by_color', field: 'color', type: 'string' }, { name: 'one_color', field: 'color', type: 'string', unique: true }] });
  let failed: Json | undefined;
  for (let i = 0; i < 100 && failed === undefined; i++) {
    failed = ((await ok('GET', '/v1/collections/later')).indexes as Json[]).find((x) => x.name === 'one_color' && x.state === 'failed');
    if (failed === undefined) await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(failed?.why, 'two records hold the same value');
  const notReady = await call('GET', '/v1/collections/later/records?index=one_color&eq=red');
  assert.deepEqual([notReady.status, (notReady.json.error as Json).code, notReady.json.state], [409, 'index_not_ready', 'failed']);
  // A diary: appends numbered by their index.
  await ok('PUT', '/v1/collections/log', { kind: 'diary', primaryKey: { field: 'seq', type: 'integer' } });
  const a = await ok('POST', '/v1/collections/log/records', { what: 'start' });
  assert.equal(a.pk, a.index);
  assert.deepEqual(await ok('GET', `/v1/collections/log/records/${a.pk as number}`), { seq: a.pk, what: 'start' });
  assert.equal((await call('PUT', '/v1/collections/log/records/1', { seq: 1 })).status, 422);
  // Drop: gone at once for readers.
  assert.equal((await ok('DELETE', '/v1/collections/later')).dropped, true);
  assert.equal((await call('GET', '/v1/collections/later')).status, 404);
  assert.equal(((await call('GET', '/v1/collections/later/records/1')).json.error as Json).code, 'collection_not_found');
  // Bad inputs: each its error, nothing changes.
  const before = await ok('GET', '/v1/collections/people');
  const cases: [string, string, unknown, number, string?][] = [
    ['PUT', '/v1/collections/Bad', PEOPLE, 400],
    ['PUT', '/v1/collections/_sys', PEOPLE, 400],
    ['PUT', '/v1/collections/remote', { ...PEOPLE, schema: { $ref: 'https://example.com/s.json' } }, 400],
    ['PUT', '/v1/collections/regex', { ...PEOPLE, schema: { type: 'object', properties: { note: { type: 'string', pattern: '^(a+)+$' } } } }, 200],
    ['PUT', '/v1/collections/people/records/p9', { id: 'other', email: 'x@x.org' }, 400],
    ['PUT', '/v1/collections/people/records/p9', { email: 'x@x.org' }, 400],
    ['PUT', '/v1/collections/people/records/p9', '[1]', 400],
    ['PUT', '/v1/collections/people/records/p9', '{"id":"p9","email":"x@x.org","__proto__":{"x":1}}', 400],
    ['PUT', '/v1/collections/people/records/p9', { id: 'p9', email: 'x@x.org', nested: { constructor: 1 } }, 400],
    ['PUT', '/v1/collections/people/records/p9', { id: 'p9', email: 'x@x.org', deep: JSON.parse('['.repeat(70) + ']'.repeat(70)) as unknown }, 400],
    ['PUT', '/v1/collections/ints', { primaryKey: { field: 'n', type: 'integer' } }, 200],
    ['PUT', '/v1/collections/ints/records/9007199254740993', { n: 9007199254740993 }, 400],
    ['PUT', '/v1/collections/ints/records/1.5', { n: 1.5 }, 400],
    ['PUT', '/v1/collections/nobody/records/x', { id: 'x' }, 404, 'collection_not_found'],
    ['GET', '/v1/collections/people/records?index=nope&eq=1', undefined, 400],
    ['GET', '/v1/collections/people/records?index=by_age&eq=old', undefined, 400],
    ['GET', '/v1/collections/people/records?limit=0', undefined, 400],
    ['PATCH', '/v1/collections/people', {}, 405],
  ];
  for (const [method, path, body, status, code] of cases) {
    const r = await call(method, path, body);
    assert.equal(r.status, status, `${method} ${path}: ${JSON.stringify(r.json)}`);
    if (code !== undefined) assert.equal((r.json.error as Json).code, code);
  }
  // A catastrophic pattern runs in linear time (RE2): 50 KB of input answers at once.
  const t0 = Date.now();
  assert.equal((await call('PUT', '/v1/collections/regex/records/x', { id: `${'a'.repeat(50_000)}!`, email: 'a@x.org' })).status, 400, 'a pk over 1024 bytes');
  const slow = await call('PUT', '/v1/collections/regex/records/y', { id: 'y', email: 'a@x.org', note: `${'a'.repeat(50_000)}!` });
  assert.equal(slow.status, 422, 'no match, found in linear time');
  assert.ok(Date.now() - t0 < 5_000);
  const wrongType = await fetch(`${follower.info.http}/v1/collections/people/records/p8`, { method: 'PUT', body: JSON.stringify({ id: 'p8', email: 'a@x.org' }), headers: { 'content-type': 'text/plain' } });
  assert.equal(wrongType.status, 415);
  const afterwards = await ok('GET', '/v1/collections/people');
  assert.equal(afterwards.count, before.count, 'nothing was added');
  assert.equal((await call('GET', '/v1/collections/people/records/p9')).status, 404);
});

test('collections through PangeaClient (typed put, get, query, scan, watch) and `pangea collections define|list|get`', async () => {
  const file = `${root}/tasks.json`;
  const { writeFileSync } = await import('node:fs');
  writeFileSync(file, JSON.stringify({ primaryKey: { field: 'id', type: 'integer' }, schema: { type: 'object', properties: { title: { type: 'string' }, done: { type: 'boolean' } } }, indexes: [{ name: 'by_done', field: 'done', type: 'boolean' }] }));
  const defined = await pangea(follower.info.http, ['collections', 'define', 'tasks', file, '--if-absent']);
  assert.equal(defined.code, 0, defined.stderr);
  assert.match(defined.stdout, /^version \d+ index \d+$/m);
  assert.equal((await pangea(follower.info.http, ['collections', 'define', 'tasks', file, '--if-absent'])).code, 1, 'it exists');
  type Task = { id: number; title: string; done: boolean };
  const client = new PangeaClient({ endpoints: nodes.map((n) => n.info.http) });
  try {
    const tasks = client.collection<Task>('tasks');
    const from = (await clusterView(follower.info.http)).appliedIndex;
    for (let i = 1; i <= 12; i++) await tasks.put(i, { id: i, title: `task ${i}`, done: i % 3 === 0 });
    const three = await tasks.get(3);
    assert.deepEqual(three?.record, { id: 3, title: 'task 3', done: true });
    assert.equal(await tasks.get(99), null);
    await assert.rejects(client.collection('nope').get(1), (e: unknown) => (e as { code?: string }).code === 'collection_not_found');
    const put = await tasks.put(3, { id: 3, title: 'task 3', done: false }, { ifMatch: three!.revision });
    await assert.rejects(tasks.put(3, { id: 3, title: 'x', done: false }, { ifMatch: three!.revision }), (e: unknown) => (e as { status?: number }).status === 412);
    assert.ok(put.revision > three!.revision);
    const done: number[] = [];
    for await (const r of tasks.scan({ index: 'by_done', eq: true, limit: 2 })) done.push(r.pk as number);
    assert.deepEqual(done, [6, 9, 12]);
    const page = await tasks.query({ after: 10 });
    assert.deepEqual(page.items.map((r) => r.pk), [11, 12]);
    const ctl = new AbortController();
    const seen: unknown[] = [];
    for await (const ev of client.watch({ collection: 'tasks', after: from, signal: ctl.signal })) {
      for (const c of ev.changes) seen.push([c.type, c.pk]);
      if (seen.length >= 13) break;
    }
    ctl.abort();
    assert.deepEqual(seen.slice(0, 3), [['put', 1], ['put', 2], ['put', 3]]);
    assert.deepEqual(seen[12], ['put', 3]);
    const info = (await client.collection('tasks').info())!;
    assert.deepEqual([info.count, info.indexes[0]!.state], [12, 'ready']);
  } finally {
    client.close();
  }
  const list = await pangea(follower.info.http, ['collections', 'list']);
  assert.equal(list.code, 0, list.stderr);
  assert.match(list.stdout, /^tasks {2}table {2}version \d+ {2}12 records {2}by_done:ready$/m);
  const got = await pangea(follower.info.http, ['collections', 'get', 'tasks']);
  assert.equal((JSON.parse(got.stdout) as { count: number }).count, 12);
  assert.equal((await pangea(follower.info.http, ['collections', 'get', 'nope'])).code, 1);
});

test('collections in POST /v1/txn: record ops and compares; a txn over two collections that breaks uniqueness applies nothing', async () => {
  await ok('PUT', '/v1/collections/accounts', { primaryKey: { field: 'id', type: 'string' }, indexes: [{ name: 'by_handle', field: 'handle', type: 'string', unique: true }] });
  await ok('PUT', '/v1/collections/audit', { primaryKey: { field: 'id', type: 'integer' } });
  const first = await ok('POST', '/v1/txn', {
    compare: [{ collection: 'accounts', pk: 'a1', target: 'exists', op: '==', value: false }],
    success: [{ op: 'putRecord', collection: 'accounts', pk: 'a1', record: { id: 'a1', handle: 'ann' } }, { op: 'putRecord', collection: 'audit', pk: 1, record: { id: 1, what: 'a1 created' } }, { op: 'getRecord', collection: 'accounts', pk: 'a1' }],
  });
  assert.equal(first.succeeded, true);
  assert.deepEqual((first.results as Json[])[2], { record: { handle: 'ann', id: 'a1' }, revision: first.index });
  const clash = await call('POST', '/v1/txn', {
    success: [{ op: 'put', key: 'side-effect', value: 'x' }, { op: 'putRecord', collection: 'audit', pk: 2, record: { id: 2, what: 'a2 created' } }, { op: 'putRecord', collection: 'accounts', pk: 'a2', record: { id: 'a2', handle: 'ann' } }],
  });
  assert.deepEqual([clash.status, (clash.json.error as Json).code, clash.json.pk], [409, 'unique_violation', 'a1']);
  assert.equal((await call('GET', '/v1/kv/side-effect')).status, 404);
  assert.equal((await call('GET', '/v1/collections/audit/records/2')).status, 404);
  const bad = await call('POST', '/v1/txn', { success: [{ op: 'putRecord', collection: 'accounts', pk: 'a3', record: [1] }] });
  assert.equal(bad.status, 400);
  const notThere = await call('POST', '/v1/txn', { success: [{ op: 'deleteRecord', collection: 'nope', pk: 'x' }] });
  assert.equal((notThere.json.error as Json).code, 'collection_not_found');
});

test('a batch get over 8 MiB of bodies is 413; fewer of the same blocks answer', async () => {
  const big = 'x'.repeat(1_000_000);
  const ids = Array.from({ length: 9 }, (_, i) => `big.${i}`);
  for (const id of ids) await ok('POST', '/v1/blocks/commit', { actionId: `big-${id}`, reads: [], transform: { inserts: { [id]: { big } } } });
  const over = await call('POST', '/v1/blocks/get', { ids });
  assert.deepEqual([over.status, (over.json.error as Json).code], [413, 'payload_too_large']);
  const fewer = await ok('POST', '/v1/blocks/get', { ids: ids.slice(0, 4) });
  assert.equal((fewer.items as Json[]).length, 4);
});
