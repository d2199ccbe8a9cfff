/**
 * Collections at apply (src/state/records.ts, level 3): define, put, index queries, paging,
 * an update moving index entries, delete, unique indexes, a schema change leaving old
 * records as they were, an index built by backfill steps (ready, or failed naming two pks),
 * drops reclaimed in bounded steps, diaries, and bad input refused with nothing changed.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ApplyResult } from '../../src/state/command.js';
import type { RecordChange } from '../../src/state/effects.js';
import { BACKFILL_RECORDS_MAX, RECLAIM_ROWS_MAX, auditCollections, collectionInfo, getRecord, listCollections, readMeta, recordsByIndex, recordsByPk, type CollectionMeta } from '../../src/state/records.js';
import { Harness } from './harness.js';

function level3(): Harness {
  const h = new Harness();
  assert.equal(h.one({ t: 'cluster_level', level: 3, members: ['a'] }).kind, 'level');
  return h;
}

const PEOPLE = {
  kind: 'table',
  schema: { type: 'object', properties: { id: { type: 'string' }, email: { type: 'string', format: 'email' }, age: { type: 'integer', minimum: 0 } }, required: ['id', 'email'] },
  primaryKey: { field: 'id', type: 'string' },
  indexes: [{ name: 'by_email', field: 'email', type: 'string', unique: true }, { name: 'by_age', field: 'age', type: 'integer' }],
};

function define(h: Harness, name: string, def: unknown, extra: { ifVersion?: number; ifAbsent?: boolean } = {}): ApplyResult {
  return h.one({ t: 'collection_define', name, definition: JSON.stringify(def), ...extra });
}

function put(h: Harness, collection: string, record: Record<string, unknown>, pk: string | number = record.id as string, extra: { ifMatch?: number; ifAbsent?: boolean } = {}): ApplyResult {
  return h.one({ t: 'record_put', collection, pk, record: JSON.stringify(record), ...extra });
}

const meta = (h: Harness, name: string): CollectionMeta => readMeta(h.state.tables, name)!;
const byIndex = (h: Harness, name: string, index: string, eq: string | number): (string | number)[] => {
  const m = meta(h, name);
  return recordsByIndex(h.state.tables, m, m.indexes.find((x) => x.def.name === index)!, { eq, limit: 1000 }).items.map((r) => r.pk);
};
const byAge = (h: Harness, q: Parameters<typeof recordsByIndex>[3]) => {
  const m = meta(h, 'people');
  return recordsByIndex(h.state.tables, m, m.indexes.find((x) => x.def.name === 'by_age')!, q);
};

test('collections: define, put, get, index queries with paging, an update moving its entries, delete, in the journal', () => {
  const h = level3();
  const d = define(h, 'people', PEOPLE);
  assert.equal(d.kind, 'collection_defined');
  for (let i = 0; i < 10; i++) assert.equal(put(h, 'people', { id: `p${i}`, email: `p${i}@x.org`, age: 20 + (i % 3) }).kind, 'record_put');
  assert.equal(meta(h, 'people').count, 10);
  const t = h.state.tables;
  assert.deepEqual(JSON.parse(getRecord(t, meta(h, 'people'), 'p3')!.record), { age: 20, email: 'p3@x.org', id: 'p3' });
  const first = recordsByPk(t, meta(h, 'people'), null, 4);
  assert.deepEqual(first.items.map((r) => r.pk), ['p0', 'p1', 'p2', 'p3']);
  assert.equal(first.more, true);
  assert.deepEqual(recordsByPk(t, meta(h, 'people'), 'p7', 10).items.map((r) => r.pk), ['p8', 'p9']);
  assert.deepEqual(byAge(h, { eq: 21, limit: 100 }).items.map((r) => r.pk), ['p1', 'p4', 'p7']);
  // Pages of an index: the cursor goes on after the last entry.
  const page1 = byAge(h, { gte: 20, lt: 22, limit: 4 });
  assert.deepEqual(page1.items.map((r) => r.pk), ['p0', 'p3', 'p6', 'p9']);
  assert.equal(page1.more, true);
  const page2 = byAge(h, { gte: 20, lt: 22, limit: 4, cursor: page1.cursor! });
  assert.deepEqual(page2.items.map((r) => r.pk), ['p1', 'p4', 'p7']);
  assert.equal(page2.more, false);
  // An update moves the record's entries.
  const up = put(h, 'people', { id: 'p1', email: 'new@x.org', age: 99 });
  assert.equal(up.kind, 'record_put');
  assert.deepEqual(byAge(h, { eq: 21, limit: 100 }).items.map((r) => r.pk), ['p4', 'p7']);
  assert.deepEqual(byAge(h, { eq: 99, limit: 100 }).items.map((r) => r.pk), ['p1']);
  const email = meta(h, 'people').indexes.find((x) => x.def.name === 'by_email')!;
  assert.deepEqual(recordsByIndex(t, meta(h, 'people'), email, { eq: 'p1@x.org', limit: 10 }).items, []);
  assert.equal(meta(h, 'people').count, 10, 'an update is no new record');
  const del = h.one({ t: 'record_delete', collection: 'people', pk: 'p1' });
  assert.deepEqual(del, { kind: 'record_deleted', index: del.index, deleted: true });
  assert.deepEqual(byAge(h, { eq: 99, limit: 100 }).items, []);
  assert.equal(meta(h, 'people').count, 9);
  assert.equal(h.one({ t: 'record_delete', collection: 'people', pk: 'p1' }).kind, 'record_deleted');
  const changes = h.state.effects(up.index - 1, del.index, 10).flatMap((e) => e.changes) as RecordChange[];
  assert.deepEqual(changes, [
    { type: 'record', collection: 'people', pk: 'p1', record: '{"age":99,"email":"new@x.org","id":"p1"}' },
    { type: 'record', collection: 'people', pk: 'p1' },
  ]);
  assert.deepEqual(listCollections(t, null, 10).items.map((m) => m.name), ['people']);
  assert.equal(auditCollections(h.state.tables), null);
});

test('collections: conditions, unique indexes, schema and type refusals change nothing', () => {
  const h = level3();
  define(h, 'people', PEOPLE);
  const a = put(h, 'people', { id: 'a', email: 'a@x.org', age: 1 });
  assert.equal(put(h, 'people', { id: 'a', email: 'a@x.org' }, 'a', { ifAbsent: true }).kind, 'precondition_failed');
  assert.equal(put(h, 'people', { id: 'a', email: 'a@x.org' }, 'a', { ifMatch: a.index + 5 }).kind, 'precondition_failed');
  assert.equal(put(h, 'people', { id: 'a', email: 'a2@x.org' }, 'a', { ifMatch: a.index }).kind, 'record_put');
  const clash = put(h, 'people', { id: 'b', email: 'a2@x.org' });
  assert.deepEqual(clash, { kind: 'unique_violation', index: clash.index, indexName: 'by_email', pk: 'a' });
  const bad = put(h, 'people', { id: 'b', email: 'not an email', age: -1 });
  assert.equal(bad.kind, 'schema_violation');
  assert.ok(['format', 'minimum'].includes((bad as { errors: readonly { keyword: string }[] }).errors[0]!.keyword));
  assert.equal(put(h, 'people', { id: 'b', email: 'b@x.org', age: 1.5 }).kind, 'schema_violation');
  assert.equal(put(h, 'people', { id: 'b', email: 'b@x.org' }, 'c').kind, 'invalid', 'a pk other than the command\'s');
  assert.equal(put(h, 'nobody', { id: 'b', email: 'b@x.org' }).kind, 'collection_not_found');
  assert.equal(h.one({ t: 'record_put', collection: 'people', pk: 'b', record: '{"id":' }).kind, 'invalid');
  assert.equal(getRecord(h.state.tables, meta(h, 'people'), 'b'), undefined);
  assert.equal(meta(h, 'people').count, 1);
  // An index's type binds: a wrong one is invalid_operation.
  define(h, 'loose', { primaryKey: { field: 'id', type: 'string' }, indexes: [{ name: 'n', field: 'n', type: 'integer' }] });
  assert.equal(put(h, 'loose', { id: 'x', n: 'seven' }).kind, 'invalid_operation');
  assert.equal(put(h, 'loose', { id: 'x', n: null }).kind, 'record_put', 'null is not indexed');
  // Level 2 does not know collections.
  const h2 = new Harness();
  assert.equal(h2.one({ t: 'cluster_level', level: 2, members: ['a'] }).kind, 'level');
  assert.equal(define(h2, 'people', PEOPLE).kind, 'invalid');
  // Definitions: reserved names, remote refs, a changed primary key or kind.
  assert.equal(define(h, '_sys', PEOPLE).kind, 'invalid');
  assert.equal(define(h, 'remote', { ...PEOPLE, schema: { $ref: 'https://example.com/s.json' } }).kind, 'invalid');
  assert.equal(define(h, 'people', { ...PEOPLE, primaryKey: { field: 'email', type: 'string' } }).kind, 'invalid_operation');
  assert.equal(define(h, 'people', { ...PEOPLE, kind: 'diary', primaryKey: { field: 'id', type: 'integer' } }).kind, 'invalid_operation');
  assert.equal(define(h, 'people', PEOPLE, { ifAbsent: true }).kind, 'precondition_failed');
  assert.equal(define(h, 'people', PEOPLE, { ifVersion: 1 }).kind, 'precondition_failed');
  assert.equal(auditCollections(h.state.tables), null);
});

test('collections: a schema change leaves old records as they were; a new index is built in bounded steps to ready', () => {
  const h = level3();
  const v1 = define(h, 'people', { ...PEOPLE, indexes: [] });
  const n = BACKFILL_RECORDS_MAX + 500;
  for (let i = 0; i < n; i++) put(h, 'people', { id: `p${String(i).padStart(5, '0')}`, email: `p${i}@x.org`, age: i % 50 });
  // v2 requires a name: old records stay; new writes need it.
  const v2 = define(h, 'people', { ...PEOPLE, schema: { ...PEOPLE.schema, required: ['id', 'email', 'name'] } }, { ifVersion: v1.index });
  assert.equal(v2.kind, 'collection_defined');
  assert.equal(getRecord(h.state.tables, meta(h, 'people'), 'p00001')!.record, '{"age":1,"email":"p1@x.org","id":"p00001"}');
  assert.equal(put(h, 'people', { id: 'new', email: 'n@x.org' }).kind, 'schema_violation');
  const m = meta(h, 'people');
  assert.deepEqual(m.indexes.map((x) => [x.def.name, x.state]), [['by_email', 'building'], ['by_age', 'building']]);
  // Writes while building keep the index; backfill steps take the rest.
  assert.equal(put(h, 'people', { id: 'p00003', email: 'p3@x.org', age: 7, name: 'moved' }).kind, 'record_put');
  let steps = 0;
  for (;;) {
    const x = meta(h, 'people').indexes.find((y) => y.state === 'building');
    if (x === undefined) break;
    const r = h.one({ t: 'index_backfill', collection: 'people', indexId: x.id, cursor: x.cursor ?? null });
    assert.equal(r.kind, 'backfilled');
    // A repeat of the same step (a stale proposal) changes nothing.
    if (x.cursor !== null && x.cursor !== undefined) assert.equal(h.one({ t: 'index_backfill', collection: 'people', indexId: x.id, cursor: x.cursor }).kind, 'backfilled');
    steps++;
    assert.ok(steps < 20);
  }
  assert.deepEqual(meta(h, 'people').indexes.map((x) => [x.def.name, x.state]), [['by_email', 'ready'], ['by_age', 'ready']]);
  assert.ok(steps >= 4, `${steps} steps for two indexes of ${n} records`);
  const sevens = byAge(h, { eq: 7, limit: 1000 }).items.map((r) => r.pk);
  const expected = Array.from({ length: n }, (_, i) => i).filter((i) => i % 50 === 7).map((i) => `p${String(i).padStart(5, '0')}`);
  assert.deepEqual(sevens, ['p00003', ...expected].sort(), 'the records of age 7, and the one moved there while building');
  assert.equal(byAge(h, { eq: 3, limit: 1000 }).items.some((r) => r.pk === 'p00003'), false, 'the update moved it');
  // Unique now enforced.
  assert.equal(put(h, 'people', { id: 'zz', email: 'p5@x.org', name: 'z' }).kind, 'unique_violation');
  assert.equal(auditCollections(h.state.tables), null);
});

test('collections: a unique index added over clashing records fails, naming both', () => {
  const h = level3();
  define(h, 'people', { ...PEOPLE, indexes: [] });
  put(h, 'people', { id: 'a', email: 'same@x.org' });
  put(h, 'people', { id: 'b', email: 'other@x.org' });
  put(h, 'people', { id: 'c', email: 'same@x.org' });
  define(h, 'people', PEOPLE);
  const x = meta(h, 'people').indexes[0]!;
  assert.equal(x.state, 'building');
  const r = h.one({ t: 'index_backfill', collection: 'people', indexId: x.id, cursor: null });
  assert.deepEqual(r, { kind: 'backfilled', index: r.index, state: 'failed' });
  assert.deepEqual(meta(h, 'people').indexes[0]!.clash, ['a', 'c']);
  // Dropping the failed index from the definition and adding it back builds it anew.
  h.one({ t: 'record_delete', collection: 'people', pk: 'c' });
  define(h, 'people', { ...PEOPLE, indexes: PEOPLE.indexes.slice(1) });
  define(h, 'people', PEOPLE);
  const again = meta(h, 'people').indexes.find((y) => y.def.name === 'by_email')!;
  assert.equal(again.state, 'building');
  assert.notEqual(again.id, x.id);
  assert.equal(h.one({ t: 'index_backfill', collection: 'people', indexId: again.id, cursor: null }).kind, 'backfilled');
  assert.equal(meta(h, 'people').indexes.find((y) => y.def.name === 'by_email')!.state, 'ready');
  assert.equal(auditCollections(h.state.tables), null);
});

test('collections: a drop is immediate and reclaimed in bounded steps; a new collection of the same name starts empty', () => {
  const h = level3();
  define(h, 'people', PEOPLE);
  const n = RECLAIM_ROWS_MAX + 200;
  for (let i = 0; i < n; i++) put(h, 'people', { id: `p${i}`, email: `p${i}@x.org`, age: i });
  const drop = h.one({ t: 'collection_drop', name: 'people' });
  assert.deepEqual(drop, { kind: 'collection_dropped', index: drop.index, dropped: true });
  assert.equal(collectionInfo(h.state.tables, 'people'), undefined);
  assert.equal(put(h, 'people', { id: 'x', email: 'x@x.org' }).kind, 'collection_not_found');
  const rows = (table: 'records' | 'recIndex'): number => [...h.state.tables.keys(table)].length;
  assert.equal(rows('records'), n);
  define(h, 'people', PEOPLE);
  assert.equal(meta(h, 'people').count, 0);
  assert.equal(put(h, 'people', { id: 'p1', email: 'p1@x.org' }).kind, 'record_put', 'no unique clash with the dropped rows');
  for (let i = 0; i < 6; i++) h.one({ t: 'lease_tick' });
  assert.equal(rows('records'), 1);
  assert.equal(rows('recIndex'), 1);
  assert.deepEqual([...h.state.tables.keys('collGarbage')], []);
  assert.equal(h.one({ t: 'collection_drop', name: 'nobody' }).kind, 'collection_dropped');
  assert.equal(auditCollections(h.state.tables), null);
});

test('collections: a diary takes appends, numbered by their index', () => {
  const h = level3();
  define(h, 'events', { kind: 'diary', primaryKey: { field: 'seq', type: 'integer' }, schema: { type: 'object', properties: { what: { type: 'string' } }, required: ['what'] }, indexes: [{ name: 'by_what', field: 'what', type: 'string' }] });
  const a = h.one({ t: 'record_append', collection: 'events', record: '{"what":"start"}' });
  assert.deepEqual(a, { kind: 'record_appended', index: a.index, pk: a.index });
  h.one({ t: 'record_append', collection: 'events', record: '{"what":"stop"}' });
  assert.equal(h.one({ t: 'record_append', collection: 'events', record: '{"seq":5,"what":"x"}' }).kind, 'invalid');
  assert.equal(h.one({ t: 'record_append', collection: 'events', record: '{}' }).kind, 'schema_violation');
  assert.equal(h.one({ t: 'record_put', collection: 'events', pk: 1, record: '{"seq":1,"what":"x"}' }).kind, 'invalid_operation');
  const m = meta(h, 'events');
  assert.deepEqual(recordsByPk(h.state.tables, m, null, 10).items.map((r) => [r.pk, JSON.parse(r.record).what]), [[a.index, 'start'], [a.index + 1, 'stop']]);
  assert.deepEqual(recordsByIndex(h.state.tables, m, m.indexes[0]!, { eq: 'stop', limit: 10 }).items.map((r) => r.pk), [a.index + 1]);
  assert.equal(auditCollections(h.state.tables), null);
});

test('collections: string values with NUL bytes, prefixes of each other and integers sort and page as values do', () => {
  const h = level3();
  define(h, 'words', { primaryKey: { field: 'id', type: 'integer' }, indexes: [{ name: 'w', field: 'w', type: 'string' }, { name: 'n', field: 'n', type: 'number' }] });
  const words = ['a', 'a\u0000', 'a\u0000b', 'ab', '', 'b', '\uFEFFa'];
  words.forEach((w, i) => assert.equal(put(h, 'words', { id: i - 3, w, n: [-1.5, 0, -0, 2, 1e300, -1e300, 3][i] }, i - 3).kind, 'record_put'));
  const m = meta(h, 'words');
  const byW = recordsByIndex(h.state.tables, m, m.indexes[0]!, { limit: 100 }).items.map((r) => JSON.parse(r.record).w as string);
  assert.deepEqual(byW, [...words].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y))));
  assert.deepEqual(recordsByIndex(h.state.tables, m, m.indexes[0]!, { eq: 'a', limit: 100 }).items.map((r) => r.pk), [-3]);
  assert.deepEqual(recordsByIndex(h.state.tables, m, m.indexes[0]!, { gte: 'a', lt: 'b', limit: 100 }).items.map((r) => JSON.parse(r.record).w), ['a', 'a\u0000', 'a\u0000b', 'ab']);
  const byN = recordsByIndex(h.state.tables, m, m.indexes[1]!, { limit: 100 }).items.map((r) => JSON.parse(r.record).n as number);
  assert.deepEqual(byN, [-1e300, -1.5, 0, 0, 2, 3, 1e300]);
  assert.deepEqual(recordsByPk(h.state.tables, m, null, 100).items.map((r) => r.pk), [-3, -2, -1, 0, 1, 2, 3]);
  assert.deepEqual(recordsByPk(h.state.tables, m, -1, 2).items.map((r) => r.pk), [0, 1]);
  assert.equal(auditCollections(h.state.tables), null);
});

test('collections in a txn: a txn over two collections that breaks a unique index applies nothing, its key puts included; compares on records; a get sees an earlier put', () => {
  const h = level3();
  define(h, 'people', PEOPLE);
  define(h, 'teams', { primaryKey: { field: 'id', type: 'string' } });
  const a = put(h, 'people', { id: 'a', email: 'a@x.org' });
  const before = h.state.applied().point.index;
  const te = new TextEncoder();
  const bad = h.one({
    t: 'txn', compare: [], failure: [],
    success: [
      { op: 'put', key: te.encode('k'), value: te.encode('v') },
      { op: 'putRecord', collection: 'teams', pk: 't1', record: '{"id":"t1"}' },
      { op: 'putRecord', collection: 'people', pk: 'b', record: '{"email":"a@x.org","id":"b"}' },
    ],
  });
  assert.deepEqual(bad, { kind: 'unique_violation', index: bad.index, indexName: 'by_email', pk: 'a' });
  assert.equal(h.state.get(te.encode('k')), undefined, 'the key put was undone');
  assert.equal(getRecord(h.state.tables, meta(h, 'teams'), 't1'), undefined, 'the other collection\'s put was undone');
  assert.equal(meta(h, 'teams').count, 0);
  assert.deepEqual(h.state.effects(before, bad.index, 10), [], 'nothing in the journal');
  const good = h.one({
    t: 'txn', compare: [], failure: [],
    recordCompare: [{ collection: 'people', pk: 'a', target: 'revision', op: '==', value: a.index }, { collection: 'teams', pk: 't1', target: 'exists', op: '==', value: false }],
    success: [
      { op: 'putRecord', collection: 'teams', pk: 't1', record: '{"id":"t1"}' },
      { op: 'getRecord', collection: 'teams', pk: 't1' },
      { op: 'deleteRecord', collection: 'people', pk: 'a' },
      { op: 'put', key: te.encode('k'), value: te.encode('v') },
    ],
  });
  assert.deepEqual(good, { kind: 'txn', index: good.index, succeeded: true, results: [{ revision: good.index }, { record: '{"id":"t1"}', revision: good.index }, { deleted: true }, { revision: good.index }] });
  const failed = h.one({ t: 'txn', compare: [], recordCompare: [{ collection: 'people', pk: 'a', target: 'exists', op: '==', value: true }], success: [], failure: [{ op: 'getRecord', collection: 'nobody', pk: 1 }] });
  assert.deepEqual(failed, { kind: 'txn', index: failed.index, succeeded: false, results: [{ record: null, revision: null }] });
  assert.equal(h.one({ t: 'txn', compare: [], failure: [], success: [{ op: 'putRecord', collection: 'nobody', pk: 'x', record: '{"id":"x"}' }] }).kind, 'collection_not_found');
  const h2 = new Harness();
  assert.equal(h2.one({ t: 'cluster_level', level: 2, members: ['a'] }).kind, 'level');
  assert.equal(h2.one({ t: 'txn', compare: [], failure: [], success: [{ op: 'getRecord', collection: 'people', pk: 'a' }] }).kind, 'invalid', 'level 2 knows no record ops');
  assert.equal(auditCollections(h.state.tables), null);
});

test('records on leases: counted in the lease, gone with its expiry (in the budget) and revoke, off it by a put without one, and off it when their collection is dropped', () => {
  const h = level3();
  h.time = h.state.logTime();
  define(h, 'sessions', { primaryKey: { field: 'id', type: 'string' }, indexes: [{ name: 'by_user', field: 'user', type: 'string' }] });
  const grant = (ttlMs: number): number => (h.one({ t: 'lease_grant', ttlMs }) as { id: number }).id;
  const short = grant(2_000);
  const long = grant(60_000);
  const on = (id: string, lease?: number): ApplyResult => h.one({ t: 'record_put', collection: 'sessions', pk: id, record: JSON.stringify({ id, user: 'u' }), ...(lease === undefined ? {} : { lease }) });
  assert.equal(on('s1', short).kind, 'record_put');
  assert.equal(on('s2', short).kind, 'record_put');
  assert.equal(on('s3', long).kind, 'record_put');
  assert.equal(on('s4', 999_999).kind, 'lease_not_found');
  assert.equal(h.state.lease(short)!.keys, 2);
  assert.equal(getRecord(h.state.tables, meta(h, 'sessions'), 's1')!.lease, short);
  assert.equal(on('s2').kind, 'record_put', 'a put without a lease takes it off');
  assert.equal(h.state.lease(short)!.keys, 1);
  const from = h.state.applied().point.index;
  h.time += 2_000 + 1_000 + 5_000;
  for (let i = 0; i < 8; i++) h.one({ t: 'lease_tick' });
  assert.equal(h.state.lease(short), undefined);
  assert.deepEqual(recordsByPk(h.state.tables, meta(h, 'sessions'), null, 10).items.map((r) => r.pk), ['s2', 's3']);
  assert.deepEqual(byIndex(h, 'sessions', 'by_user', 'u'), ['s2', 's3']);
  assert.deepEqual(h.state.effects(from, h.state.applied().point.index, 100).flatMap((e) => e.changes), [{ type: 'record', collection: 'sessions', pk: 's1' }]);
  assert.equal(meta(h, 'sessions').count, 2);
  assert.equal(auditCollections(h.state.tables), null);
  // A dropped collection's records leave their lease as the drop is reclaimed.
  assert.equal(h.state.lease(long)!.keys, 1);
  h.one({ t: 'collection_drop', name: 'sessions' });
  h.one({ t: 'lease_tick' });
  assert.equal(h.state.lease(long)!.keys, 0);
  assert.deepEqual([...h.state.tables.keys('leaseRecords')], []);
  assert.equal(h.one({ t: 'lease_revoke', id: long }).kind, 'lease_revoked');
  assert.equal(auditCollections(h.state.tables), null);
});

test('unique string values that are prefixes with NUL bytes are distinct values; a record an index cannot hold fails its build (helper-49)', () => {
  const h = level3();
  define(h, 'c', { primaryKey: { field: 'id', type: 'string' }, indexes: [{ name: 'u', field: 'u', type: 'string', unique: true }] });
  assert.equal(put(h, 'c', { id: 'A', u: 'a\u0000' }).kind, 'record_put');
  assert.equal(put(h, 'c', { id: 'B', u: 'a' }).kind, 'record_put', '"a" is not "a\\0"');
  assert.equal(put(h, 'c', { id: 'LONGER-PK', u: 'a' }).kind, 'unique_violation');
  // Built over records: the same.
  define(h, 'd', { primaryKey: { field: 'id', type: 'string' } });
  put(h, 'd', { id: 'B', u: 'a\u0000' });
  put(h, 'd', { id: 'C', u: 'a' });
  define(h, 'd', { primaryKey: { field: 'id', type: 'string' }, indexes: [{ name: 'u', field: 'u', type: 'string', unique: true }] });
  const x = meta(h, 'd').indexes[0]!;
  assert.equal(h.one({ t: 'index_backfill', collection: 'd', indexId: x.id, cursor: null }).kind, 'backfilled');
  assert.equal(meta(h, 'd').indexes[0]!.state, 'ready');
  // A value and pk too long to be an entry: the build fails, naming the record.
  define(h, 'e', { primaryKey: { field: 'id', type: 'string' } });
  put(h, 'e', { id: 'a'.repeat(1000), u: 'x'.repeat(1024) });
  define(h, 'e', { primaryKey: { field: 'id', type: 'string' }, indexes: [{ name: 'u', field: 'u', type: 'string', unique: true }] });
  const y = meta(h, 'e').indexes[0]!;
  h.one({ t: 'index_backfill', collection: 'e', indexId: y.id, cursor: null });
  const failed = meta(h, 'e').indexes[0]!;
  assert.equal(failed.state, 'failed');
  assert.match(failed.why!, /over 1978/);
  assert.deepEqual([...h.state.tables.keys('collBuilding')], []);
  assert.equal(auditCollections(h.state.tables), null);
});
