/**
 * Collections on the log (API contract, "Collections"; apply level 3): what the collection
 * and record commands do at apply, and the reads beside them. The judge of definitions,
 * records and index values is collections.ts (pure); this module keeps the tables.
 *
 * State (in snapshots, equal on every replica):
 * - `sm.collections`: name -> the collection's meta: its id (the index that first defined
 *   it), version (the index of its last define), kind, primary key, record count, and each
 *   index's id, definition and state (`building` with a cursor, `ready`, `failed` naming two
 *   clashing pks). Small: rewritten by each insert and delete (its count).
 * - `sm.coll_defs`: u64 id -> the definition in force, canonical JSON (schema included:
 *   up to 64 KiB, rewritten only by a define).
 * - `sm.records`: u64 id + orderedKey(pk) -> [revision, canonical record JSON, lease?].
 * - `sm.lease_records`: u64 lease + u64 id + orderedKey(pk) -> the collection's name: a
 *   lease's records, deleted with it (kv.ts dropLease, in the budget of its keys) and
 *   counted in its keys. A drop's reclaim takes its records off their leases.
 * - `sm.rec_index`: u64 id + u16 index id + indexKey(value) + orderedKey(pk) -> empty. A
 *   unique index has at most one pk under a value; one being built may hold clashes until its
 *   backfill finds them and marks it `failed`.
 * - `sm.coll_building`: name -> empty while one of its indexes is being built: where the
 *   leader finds its next backfill step (a scan of every collection stopped at 10,000 and
 *   left the ones after it building for ever: helper-49).
 * - `sm.coll_garbage`: u64 id + u16 index id (0xffff: the whole collection) -> empty: what a
 *   drop or a define left to reclaim, RECLAIM_ROWS_MAX rows a command (`reclaim`), so a
 *   drop is immediate for readers and bounded at apply.
 *
 * Ids keep a dropped collection's rows apart from a new one of the same name; index ids keep
 * a changed index's old entries apart from its new ones.
 */
import canonicalize from 'canonicalize';
import { pack, prefixEnd, readU64, u64Key, unpack } from '../storage/env.js';
import type { ApplyResult, CollectionCmd, RecordCompare } from './command.js';
import type { ProviderApplyContext } from './providers.js';
import { CollectionError, checkCollectionName, indexValue, judgeRecord, orderedKey, parseDefinition, pkOf, type CollectionDef, type IndexDef, type Pk, type SchemaError } from './collections.js';
import type { Json } from './blocks.js';
import type { StateTables } from './staged.js';

/** Records one backfill step visits at most, and bytes of records it parses at most: a step
 *  of 1,000 took 20-70 ms of apply (bench index-build), past the 50 ms apply p99 a build
 *  under write load should keep; with 256 the p99 was in the 50 ms bucket, with 128 in the
 *  25 ms one (100,000 records under 16 writers, built in 48 s instead of 32). */
export const BACKFILL_RECORDS_MAX = 128;
export const BACKFILL_BYTES_MAX = 1024 * 1024;
/** Rows of dropped collections and indexes one command reclaims at most. */
export const RECLAIM_ROWS_MAX = 1_000;
/** lmdb-js's key limit: an index entry (value and pk) longer than this cannot be stored. */
const LMDB_KEY_BYTES_MAX = 1978;
const WHOLE = 0xffff;

const EMPTY = new Uint8Array(0);
const utf8 = new TextEncoder();
// ignoreBOM: a name or key may start with U+FEFF, which the default decoder drops (helper-48:
// a provider "\uFEFFp" was reaped as "p", another lease's record).
const fromUtf8 = new TextDecoder('utf-8', { ignoreBOM: true });

export type IndexState = 'building' | 'ready' | 'failed';

export interface IndexMeta {
  readonly id: number;
  readonly def: IndexDef;
  readonly state: IndexState;
  /** Building: the last pk key the backfill covered (null: none yet). */
  readonly cursor?: Uint8Array | null;
  /** Failed: two records whose values clash. */
  readonly clash?: readonly [Pk, Pk];
  /** Failed: why, in words. */
  readonly why?: string;
}

export interface CollectionMeta {
  readonly name: string;
  readonly id: number;
  readonly version: number;
  readonly count: number;
  readonly indexes: readonly IndexMeta[];
  readonly nextIndexId: number;
}

/** What apply needs around it: the tables, this index, the journal's changes, and the
 *  leases (records on them count in their keys), as provider records need. */
export type RecordApplyContext = ProviderApplyContext;

// --- keys ----------------------------------------------------------------------------------

const metaKey = (name: string): Uint8Array => utf8.encode(name);
const recordKey = (id: number, pk: Pk): Uint8Array => u64Key(id, orderedKey(pk));

function u16(n: number): Uint8Array {
  return Uint8Array.of(n >> 8, n & 0xff);
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}

/** An index value as a key part that sorts as the values do and ends where it ends, so a pk
 *  can follow it: orderedKey, with a string's 0x00 bytes escaped as 0x00 0xff and a 0x00
 *  after it (FoundationDB's tuple layer; a pk key starts with 0x03 or 0x04, below 0xff). */
export function indexKeyPart(v: boolean | number | string): Uint8Array {
  const k = orderedKey(v);
  if (typeof v !== 'string') return k;
  let zeros = 0;
  for (let i = 1; i < k.byteLength; i++) if (k[i] === 0) zeros++;
  const out = new Uint8Array(k.byteLength + zeros + 1);
  let at = 0;
  for (let i = 0; i < k.byteLength; i++) {
    out[at++] = k[i]!;
    if (i > 0 && k[i] === 0) out[at++] = 0xff;
  }
  out[at] = 0;
  return out;
}

const indexPrefix = (id: number, indexId: number): Uint8Array => u64Key(id, u16(indexId));


/** A pk back from its orderedKey (type tag 0x03: a number; 0x04: a string). */
export function pkFromKey(k: Uint8Array): Pk {
  if (k[0] === 0x04) return fromUtf8.decode(k.subarray(1));
  if (k[0] !== 0x03 || k.byteLength !== 9) throw new Error(`records: ${Buffer.from(k.subarray(0, 16)).toString('hex')} is no primary key`);
  const b = Buffer.from(k.subarray(1, 9));
  if ((b[0]! & 0x80) !== 0) b[0]! &= 0x7f;
  else for (let i = 0; i < 8; i++) b[i] = ~b[i]! & 0xff;
  return b.readDoubleBE(0);
}

// --- reads -------------------------------------------------------------------------------

export function readMeta(t: StateTables, name: string): CollectionMeta | undefined {
  const v = t.get('collections', metaKey(name));
  if (v === undefined) return undefined;
  const [id, version, count, indexes, nextIndexId] = unpack(v) as [number, number, number, [number, IndexDef, IndexState, (Uint8Array | null)?, ([Pk, Pk] | null)?, string?][], number];
  return {
    name,
    id,
    version,
    count,
    nextIndexId,
    indexes: indexes.map(([iid, def, state, cursor, clash, why]) => ({ id: iid, def, state, ...(state === 'building' ? { cursor: cursor ?? null } : {}), ...(clash ? { clash } : {}), ...(why !== undefined ? { why } : {}) })),
  };
}

function writeMeta(t: StateTables, m: CollectionMeta): void {
  const indexes = m.indexes.map((x) => (x.state === 'building' ? [x.id, x.def, x.state, x.cursor ?? null] : x.state === 'failed' ? [x.id, x.def, x.state, null, x.clash ?? null, x.why ?? ''] : [x.id, x.def, x.state]));
  t.put('collections', metaKey(m.name), pack([m.id, m.version, m.count, indexes, m.nextIndexId]));
  const building = m.indexes.some((x) => x.state === 'building');
  if (building !== (t.get('collBuilding', metaKey(m.name)) !== undefined)) {
    if (building) t.put('collBuilding', metaKey(m.name), EMPTY);
    else t.remove('collBuilding', metaKey(m.name));
  }
}

/** Parsed definitions by their canonical JSON: parsing compiles the schema (collections.ts
 *  caches the judge; this saves the walk). Bounded. */
const parsed = new Map<string, CollectionDef>();
/** The same by collection id and version, with the stored bytes they were parsed from: a
 *  record put compares the row (memcmp) rather than decode and hash it (up to 64 KiB). The
 *  bytes are compared, not trusted: another store in this process (a test's, the
 *  simulator's other histories) may hold another definition under the same id and version. */
const byVersion = new Map<string, { readonly bytes: Uint8Array; readonly def: CollectionDef }>();

export function definitionOf(t: StateTables, m: CollectionMeta): CollectionDef {
  const row = t.get('collDefs', u64Key(m.id))!;
  const at = `${m.id}:${m.version}`;
  const known = byVersion.get(at);
  if (known !== undefined && Buffer.compare(known.bytes, row) === 0) return known.def;
  const json = fromUtf8.decode(row);
  let def = parsed.get(json);
  if (def === undefined) {
    def = parseDefinition(JSON.parse(json));
    if (parsed.size >= 256) parsed.delete(parsed.keys().next().value!);
    parsed.set(json, def);
  }
  if (byVersion.size >= 256) byVersion.delete(byVersion.keys().next().value!);
  byVersion.set(at, { bytes: Uint8Array.prototype.slice.call(row), def });
  return def;
}

/** A collection's definition as its GET shows it. */
export function collectionInfo(t: StateTables, name: string): { meta: CollectionMeta; definition: string } | undefined {
  const meta = readMeta(t, name);
  if (meta === undefined) return undefined;
  return { meta, definition: fromUtf8.decode(t.get('collDefs', u64Key(meta.id))!) };
}

/** The collections, by name, after `after`, at most `limit`. */
export function listCollections(t: StateTables, after: string | null, limit: number): { items: CollectionMeta[]; more: boolean } {
  const items: CollectionMeta[] = [];
  const start = after === null ? EMPTY : concat(metaKey(after), Uint8Array.of(0));
  for (const k of t.keys('collections', { start })) {
    if (items.length === limit) return { items, more: true };
    items.push(readMeta(t, fromUtf8.decode(k as Uint8Array))!);
  }
  return { items, more: false };
}

export interface StoredRecord {
  readonly pk: Pk;
  readonly revision: number;
  /** Canonical JSON. */
  readonly record: string;
  readonly lease?: number;
}

function decodeRecord(pk: Pk, v: Uint8Array): StoredRecord {
  const [revision, record, lease] = unpack(v) as [number, string, number?];
  return lease === undefined ? { pk, revision, record } : { pk, revision, record, lease };
}

const leaseRow = (lease: number, id: number, pkKey: Uint8Array): Uint8Array => concat(u64Key(lease), u64Key(id), pkKey);

export function getRecord(t: StateTables, m: CollectionMeta, pk: Pk): StoredRecord | undefined {
  const v = t.get('records', recordKey(m.id, pk));
  return v === undefined ? undefined : decodeRecord(pk, v);
}

/** Records by pk after `after` (exclusive), at most `limit`, and past the first no more
 *  than `bytesMax` characters of records. */
export function recordsByPk(t: StateTables, m: CollectionMeta, after: Pk | null, limit: number, bytesMax = Infinity): { items: StoredRecord[]; more: boolean } {
  const prefix = u64Key(m.id);
  const start = after === null ? prefix : concat(recordKey(m.id, after), Uint8Array.of(0));
  const items: StoredRecord[] = [];
  let bytes = 0;
  for (const { key, value } of t.range('records', { start, end: prefixEnd(prefix)! })) {
    if (items.length === limit || (items.length > 0 && bytes >= bytesMax)) return { items, more: true };
    const r = decodeRecord(pkFromKey((key as Uint8Array).subarray(8)), value);
    bytes += r.record.length;
    items.push(r);
  }
  return { items, more: false };
}

/** A query of an index: values `eq`, or from `gte` (inclusive) to `lt` (exclusive), after
 *  the entry `cursor` (an opaque key the last page returned), at most `limit`. */
export interface IndexQuery {
  readonly eq?: boolean | number | string;
  readonly gte?: boolean | number | string;
  readonly lt?: boolean | number | string;
  readonly cursor?: Uint8Array;
  readonly limit: number;
  /** Characters of records a page holds at most past its first. */
  readonly bytesMax?: number;
}

export function recordsByIndex(t: StateTables, m: CollectionMeta, idx: IndexMeta, q: IndexQuery): { items: StoredRecord[]; more: boolean; cursor: Uint8Array | null } {
  const prefix = indexPrefix(m.id, idx.id);
  let start = prefix;
  let end = prefixEnd(prefix)!;
  if (q.eq !== undefined) {
    // The value then a pk (which starts 0x03 or 0x04): a longer string's escaped 0x00 goes
    // on with 0xff, past the end.
    start = concat(prefix, indexKeyPart(q.eq));
    end = concat(start, Uint8Array.of(0xff));
  } else {
    if (q.gte !== undefined) start = concat(prefix, indexKeyPart(q.gte));
    if (q.lt !== undefined) end = concat(prefix, indexKeyPart(q.lt));
  }
  // The cursor is the last entry's key without the prefix: after it, within the range.
  if (q.cursor !== undefined) {
    const after = concat(prefix, q.cursor, Uint8Array.of(0));
    if (Buffer.compare(after, start) > 0) start = after;
  }
  const items: StoredRecord[] = [];
  let last: Uint8Array | null = null;
  if (Buffer.compare(start, end) >= 0) return { items, more: false, cursor: null };
  let bytes = 0;
  for (const k of t.keys('recIndex', { start, end })) {
    if (items.length === q.limit || (items.length > 0 && bytes >= (q.bytesMax ?? Infinity))) return { items, more: true, cursor: last };
    const key = k as Uint8Array;
    const pkKey = pkKeyOfEntry(key.subarray(prefix.byteLength));
    const v = t.get('records', concat(u64Key(m.id), pkKey));
    if (v === undefined) continue; // an entry a building index left for a record since gone: none should exist
    const r = decodeRecord(pkFromKey(pkKey), v);
    bytes += r.record.length;
    items.push(r);
    last = key.slice(prefix.byteLength);
  }
  return { items, more: false, cursor: null };
}

/** The pk key at the end of an index entry (after its value part). */
function pkKeyOfEntry(entry: Uint8Array): Uint8Array {
  const tag = entry[0];
  let at: number;
  if (tag === 0x01 || tag === 0x02) at = 1;
  else if (tag === 0x03) at = 9;
  else {
    at = 1;
    for (;;) {
      if (entry[at] === 0 && entry[at + 1] !== 0xff) break;
      at += entry[at] === 0 ? 2 : 1;
    }
    at++;
  }
  return entry.subarray(at);
}

// --- apply -------------------------------------------------------------------------------

class Refused extends Error {
  constructor(readonly result: ApplyResult) {
    super(result.kind);
  }
}

function judged<T>(index: number, f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (!(e instanceof CollectionError)) throw e;
    if (e.code === 'schema_violation') throw new Refused({ kind: 'schema_violation', index, message: e.message, errors: e.errors as SchemaError[] });
    if (e.code === 'invalid_operation') throw new Refused({ kind: 'invalid_operation', index, message: e.message });
    throw new Refused({ kind: 'invalid', index, message: e.message });
  }
}

function parseJson(index: number, json: string, what: string): unknown {
  try {
    return JSON.parse(json) as unknown;
  } catch {
    throw new Refused({ kind: 'invalid', index, message: `${what} is not JSON` });
  }
}

export function applyCollectionCmd(ctx: RecordApplyContext, op: CollectionCmd): ApplyResult {
  try {
    switch (op.t) {
      case 'collection_define':
        return define(ctx, op);
      case 'collection_drop':
        return drop(ctx, op.name);
      case 'record_put':
      case 'record_append':
        return put(ctx, op);
      case 'record_delete':
        return remove(ctx, op);
      case 'index_backfill':
        return backfill(ctx, op);
    }
  } catch (e) {
    if (e instanceof Refused) return e.result;
    throw e;
  }
}

function existing(ctx: RecordApplyContext, name: string): CollectionMeta {
  const m = readMeta(ctx.t, name);
  if (m === undefined) throw new Refused({ kind: 'collection_not_found', index: ctx.index, name });
  return m;
}

function define(ctx: RecordApplyContext, op: Extract<CollectionCmd, { t: 'collection_define' }>): ApplyResult {
  const { t, index } = ctx;
  judged(index, () => checkCollectionName(op.name));
  if (op.name.startsWith('_')) return { kind: 'invalid', index, message: 'collection names starting with _ are reserved' };
  const def = judged(index, () => parseDefinition(parseJson(index, op.definition, 'the definition')));
  const old = readMeta(t, op.name);
  if ((op.ifAbsent === true && old !== undefined) || (op.ifVersion !== undefined && old?.version !== op.ifVersion)) {
    return { kind: 'precondition_failed', index, revision: old?.version ?? null };
  }
  const json = canonicalize(def) as string;
  if (old === undefined) {
    const indexes = def.indexes.map((d, i): IndexMeta => ({ id: i, def: d, state: 'ready' }));
    writeMeta(t, { name: op.name, id: index, version: index, count: 0, indexes, nextIndexId: indexes.length });
    t.put('collDefs', u64Key(index), utf8.encode(json));
    return { kind: 'collection_defined', index, version: index };
  }
  const was = definitionOf(t, old);
  if (was.kind !== def.kind) return { kind: 'invalid_operation', index, message: `${op.name} is a ${was.kind}: its kind does not change` };
  if (was.primaryKey.field !== def.primaryKey.field || was.primaryKey.type !== def.primaryKey.type) return { kind: 'invalid_operation', index, message: `${op.name}'s primary key does not change` };
  // An index kept by name with the same field, type and uniqueness keeps its entries and
  // state; any other is new (built from the records, or ready at once when there are none).
  let nextIndexId = old.nextIndexId;
  const indexes = def.indexes.map((d): IndexMeta => {
    const same = old.indexes.find((x) => x.def.name === d.name && x.def.field === d.field && x.def.type === d.type && x.def.unique === d.unique);
    if (same !== undefined) return same;
    if (nextIndexId >= WHOLE) throw new Refused({ kind: 'invalid_operation', index, message: `${op.name} has had as many indexes as a collection may: define it anew (drop it first)` });
    return old.count === 0 ? { id: nextIndexId++, def: d, state: 'ready' } : { id: nextIndexId++, def: d, state: 'building', cursor: null };
  });
  for (const x of old.indexes) if (!indexes.includes(x)) t.put('collGarbage', u64Key(old.id, u16(x.id)), EMPTY);
  writeMeta(t, { ...old, version: index, indexes, nextIndexId });
  t.put('collDefs', u64Key(old.id), utf8.encode(json));
  return { kind: 'collection_defined', index, version: index };
}

function drop(ctx: RecordApplyContext, name: string): ApplyResult {
  const { t, index } = ctx;
  const m = readMeta(t, name);
  if (m === undefined) return { kind: 'collection_dropped', index, dropped: false };
  t.remove('collections', metaKey(name));
  t.remove('collBuilding', metaKey(name));
  t.remove('collDefs', u64Key(m.id));
  t.put('collGarbage', u64Key(m.id, u16(WHOLE)), EMPTY);
  return { kind: 'collection_dropped', index, dropped: true };
}

/**
 * The index entries a record has (null: not indexed), for the indexes being kept. A new
 * record's wrong type or overlong entry refuses the command; a stored record's (`stored`:
 * written before the index existed, which its backfill skipped) has no entry.
 */
function entriesOf(index: number, m: CollectionMeta, record: Record<string, Json>, pkKey: Uint8Array, stored = false): (Uint8Array | null)[] {
  return m.indexes.map((x) => {
    if (x.state === 'failed') return null;
    let v: boolean | number | string | null;
    try {
      v = indexValue(x.def, record);
    } catch (e) {
      if (stored && e instanceof CollectionError) return null;
      return judged(index, () => {
        throw e;
      });
    }
    if (v === null) return null;
    const entry = concat(indexPrefix(m.id, x.id), indexKeyPart(v), pkKey);
    if (entry.byteLength <= LMDB_KEY_BYTES_MAX) return entry;
    if (stored) return null;
    throw new Refused({ kind: 'invalid_operation', index, message: `index ${x.def.name}: its value and the primary key take ${entry.byteLength} bytes together; at most ${LMDB_KEY_BYTES_MAX}` });
  });
}

/** Another record holding `entry`'s value in a unique index, or null. */
function holder(t: StateTables, entry: Uint8Array, pkKey: Uint8Array): Uint8Array | null {
  const valuePrefix = entry.subarray(0, entry.byteLength - pkKey.byteLength);
  // The value then a pk (0x03 or 0x04 first): not a longer string, whose escaped 0x00 goes
  // on with 0xff (helper-49: "a" found "a\0"'s entry and read its tail as a pk).
  for (const k of t.keys('recIndex', { start: valuePrefix, end: concat(valuePrefix, Uint8Array.of(0xff)), limit: 2 })) {
    const other = (k as Uint8Array).subarray(valuePrefix.byteLength);
    if (Buffer.compare(other, pkKey) !== 0) return Uint8Array.prototype.slice.call(other);
  }
  return null;
}

function put(ctx: RecordApplyContext, op: Extract<CollectionCmd, { t: 'record_put' | 'record_append' }>): ApplyResult {
  const { t, index } = ctx;
  const m = existing(ctx, op.collection);
  const def = definitionOf(t, m);
  const append = op.t === 'record_append';
  if (append !== (def.kind === 'diary')) return { kind: 'invalid_operation', index, message: append ? `${m.name} is a table: put records by their primary key` : `${m.name} is a diary: it takes appends only` };
  const raw = parseJson(index, op.record, 'the record');
  if (append) {
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return { kind: 'invalid', index, message: 'a record is a JSON object' };
    if (Object.hasOwn(raw, def.primaryKey.field)) return { kind: 'invalid', index, message: `an appended record has no ${def.primaryKey.field}: its primary key is the index it is appended at` };
    Object.defineProperty(raw, def.primaryKey.field, { value: index, enumerable: true, writable: true, configurable: true });
  }
  const { record, json } = judged(index, () => judgeRecord(def, raw));
  const pk = judged(index, () => pkOf(def, record));
  if (!append && pk !== (op as { pk: Pk }).pk) return { kind: 'invalid', index, message: 'the record\'s primary key is not the one the command names' };
  const pkKey = orderedKey(pk);
  const key = concat(u64Key(m.id), pkKey);
  const oldRow = t.get('records', key);
  const old = oldRow === undefined ? undefined : decodeRecord(pk, oldRow);
  if (op.t === 'record_put' && ((op.ifAbsent === true && old !== undefined) || (op.ifMatch !== undefined && old?.revision !== op.ifMatch))) {
    return { kind: 'precondition_failed', index, revision: old?.revision ?? null };
  }
  const lease = op.t === 'record_put' ? op.lease : undefined;
  if (lease !== undefined) {
    const room = ctx.leaseRoom(lease);
    if (room === null) return { kind: 'lease_not_found', index, id: lease };
    if (old?.lease !== lease && room < 1) return { kind: 'limit_reached', index, message: `lease ${lease} holds as many keys and records as a lease may` };
  }
  const entries = entriesOf(index, m, record, pkKey);
  const oldEntries = old === undefined ? m.indexes.map(() => null) : entriesOf(index, m, JSON.parse(old.record) as Record<string, Json>, pkKey, true);
  // Unique indexes: a ready one refuses a value another record holds; one being built cannot
  // tell yet, so it takes the write and fails, naming both (its backfill would have).
  let indexes = m.indexes;
  m.indexes.forEach((x, i) => {
    const e = entries[i];
    if (!x.def.unique || e === null || e === undefined) return;
    const other = holder(t, e, pkKey);
    if (other === null) return;
    if (x.state === 'ready') throw new Refused({ kind: 'unique_violation', index, indexName: x.def.name, pk: pkFromKey(other) });
    indexes = indexes.map((y) => (y === x ? { id: x.id, def: x.def, state: 'failed', clash: [pkFromKey(other), pk], why: 'two records hold the same value' } : y));
  });
  t.put('records', key, pack(lease === undefined ? [index, json] : [index, json, lease]));
  // A put without a lease takes the record off the one it was on (as a key's, in etcd).
  if (old?.lease !== lease) {
    if (old?.lease !== undefined) {
      t.remove('leaseRecords', leaseRow(old.lease, m.id, pkKey));
      ctx.onLease(old.lease, -1);
    }
    if (lease !== undefined) {
      t.put('leaseRecords', leaseRow(lease, m.id, pkKey), utf8.encode(m.name));
      ctx.onLease(lease, 1);
    }
  }
  m.indexes.forEach((x, i) => {
    if (indexes[i] !== x) return; // failed by this write: its entries are reclaimed
    const before = oldEntries[i] ?? null;
    const after = entries[i] ?? null;
    if (before !== null && (after === null || Buffer.compare(before, after) !== 0)) t.remove('recIndex', before);
    if (after !== null) t.put('recIndex', after, EMPTY);
  });
  if (old === undefined || indexes !== m.indexes) writeMeta(t, { ...m, count: m.count + (old === undefined ? 1 : 0), indexes });
  // A failed index's entries are reclaimed.
  for (const x of indexes) if (x.state === 'failed' && !m.indexes.some((y) => y.id === x.id && y.state === 'failed')) t.put('collGarbage', u64Key(m.id, u16(x.id)), EMPTY);
  ctx.changes.push({ type: 'record', collection: m.name, pk, record: json });
  return append ? { kind: 'record_appended', index, pk: index } : { kind: 'record_put', index, revision: index };
}

function remove(ctx: RecordApplyContext, op: Extract<CollectionCmd, { t: 'record_delete' }>): ApplyResult {
  const { t, index } = ctx;
  const m = existing(ctx, op.collection);
  const pkKey = orderedKey(op.pk);
  const key = concat(u64Key(m.id), pkKey);
  const oldRow = t.get('records', key);
  const old = oldRow === undefined ? undefined : decodeRecord(op.pk, oldRow);
  if (op.ifMatch !== undefined && old?.revision !== op.ifMatch) return { kind: 'precondition_failed', index, revision: old?.revision ?? null };
  if (old === undefined) return { kind: 'record_deleted', index, deleted: false };
  if (old.lease !== undefined) ctx.onLease(old.lease, -1);
  deleteRecord(t, m, old, pkKey);
  ctx.changes.push({ type: 'record', collection: m.name, pk: op.pk });
  return { kind: 'record_deleted', index, deleted: true };
}

/** Removes a record, its index entries and its lease row (the caller counts it off). */
function deleteRecord(t: StateTables, m: CollectionMeta, old: StoredRecord, pkKey: Uint8Array): void {
  for (const e of entriesOf(0, m, JSON.parse(old.record) as Record<string, Json>, pkKey, true)) if (e !== null) t.remove('recIndex', e);
  if (old.lease !== undefined) t.remove('leaseRecords', leaseRow(old.lease, m.id, pkKey));
  t.remove('records', concat(u64Key(m.id), pkKey));
  writeMeta(t, { ...m, count: m.count - 1 });
}

/** Deletes up to `budget` of the records on `lease` (its end) as deletes in the journal;
 *  returns how many lease rows it took. The caller counts them off the lease. A row whose
 *  record is gone, on another lease or in a dropped collection is only removed. */
export function dropLeaseRecords(ctx: RecordApplyContext, lease: number, budget: number): number {
  if (budget <= 0) return 0;
  const rows: { row: Uint8Array; name: string }[] = [];
  for (const { key, value } of ctx.t.range('leaseRecords', { start: u64Key(lease), end: u64Key(lease + 1), limit: budget })) {
    rows.push({ row: Uint8Array.prototype.slice.call(key as Uint8Array), name: fromUtf8.decode(value) });
  }
  for (const { row, name } of rows) {
    ctx.t.remove('leaseRecords', row);
    const id = readU64(row.subarray(8, 16));
    const pkKey = row.subarray(16);
    const m = readMeta(ctx.t, name);
    if (m === undefined || m.id !== id) continue;
    const v = ctx.t.get('records', concat(u64Key(id), pkKey));
    const old = v === undefined ? undefined : decodeRecord(pkFromKey(pkKey), v);
    if (old === undefined || old.lease !== lease) continue;
    deleteRecord(ctx.t, m, old, pkKey);
    ctx.changes.push({ type: 'record', collection: m.name, pk: old.pk });
  }
  return rows.length;
}

/** One bounded step of building an index: the records after its cursor get their entries;
 *  at the end it is `ready`, or `failed` at the first clash of a unique index. A step whose
 *  cursor is not the index's (a repeat, a stale proposal) changes nothing. */
function backfill(ctx: RecordApplyContext, op: Extract<CollectionCmd, { t: 'index_backfill' }>): ApplyResult {
  const { t, index } = ctx;
  const m = existing(ctx, op.collection);
  const x = m.indexes.find((y) => y.id === op.indexId);
  const same = (a: Uint8Array | null | undefined, b: Uint8Array | null): boolean => (a ?? null) === null ? b === null : b !== null && Buffer.compare(a!, b) === 0;
  if (x === undefined || x.state !== 'building' || !same(x.cursor, op.cursor)) return { kind: 'backfilled', index, state: x?.state ?? null };
  const prefix = u64Key(m.id);
  const start = op.cursor === null ? prefix : concat(prefix, op.cursor, Uint8Array.of(0));
  let visited = 0;
  let bytes = 0;
  let cursor: Uint8Array | null = op.cursor;
  let done = true;
  let next: IndexMeta = x;
  for (const { key, value } of t.range('records', { start, end: prefixEnd(prefix)! })) {
    if (visited === BACKFILL_RECORDS_MAX || bytes >= BACKFILL_BYTES_MAX) {
      done = false;
      break;
    }
    visited++;
    bytes += value.byteLength;
    const pkKey = (key as Uint8Array).slice(8);
    cursor = pkKey;
    const stored = decodeRecord(pkFromKey(pkKey), value);
    let v: boolean | number | string | null;
    try {
      v = indexValue(x.def, JSON.parse(stored.record) as Record<string, Json>);
    } catch (e) {
      if (!(e instanceof CollectionError)) throw e;
      // A record written before the index existed whose field has another type: not indexed
      // (the index's type binds the writes after it).
      v = null;
    }
    if (v === null) continue;
    const entry = concat(indexPrefix(m.id, x.id), indexKeyPart(v), pkKey);
    // A record the index cannot hold fails it: skipping it would leave a ready index that
    // misses a record (and a unique one that lets its value be taken again: helper-49).
    if (entry.byteLength > LMDB_KEY_BYTES_MAX) {
      next = { id: x.id, def: x.def, state: 'failed', why: `record ${JSON.stringify(stored.pk).slice(0, 80)}: its value and primary key take ${entry.byteLength} bytes, over ${LMDB_KEY_BYTES_MAX}` };
      t.put('collGarbage', u64Key(m.id, u16(x.id)), EMPTY);
      break;
    }
    if (x.def.unique) {
      const other = holder(t, entry, pkKey);
      if (other !== null) {
        next = { id: x.id, def: x.def, state: 'failed', clash: [pkFromKey(other), stored.pk], why: 'two records hold the same value' };
        t.put('collGarbage', u64Key(m.id, u16(x.id)), EMPTY);
        break;
      }
    }
    t.put('recIndex', entry, EMPTY);
  }
  if (next === x) next = done ? { id: x.id, def: x.def, state: 'ready' } : { id: x.id, def: x.def, state: 'building', cursor };
  writeMeta(t, { ...m, indexes: m.indexes.map((y) => (y === x ? next : y)) });
  return { kind: 'backfilled', index, state: next.state };
}

/** The first index being built (by collection name), at its cursor: the next backfill step
 *  to propose. */
export function nextBackfill(t: StateTables): Extract<CollectionCmd, { t: 'index_backfill' }> | null {
  for (const key of t.keys('collBuilding', { limit: 1 })) {
    const name = fromUtf8.decode(key as Uint8Array);
    const x = readMeta(t, name)?.indexes.find((y) => y.state === 'building');
    if (x !== undefined) return { t: 'index_backfill', collection: name, indexId: x.id, cursor: x.cursor ?? null };
  }
  return null;
}

/** A txn's compare of a record (command.ts RecordCompare): an absent record (or
 *  collection) has revision 0 and does not exist. */
export function recordTxnCompare(t: StateTables, c: RecordCompare): boolean {
  const m = readMeta(t, c.collection);
  const r = m === undefined ? undefined : getRecord(t, m, c.pk);
  if (c.target === 'exists') return c.op === '==' ? (r !== undefined) === c.value : (r !== undefined) !== c.value;
  const d = Math.sign((r?.revision ?? 0) - (c.value as number));
  return c.op === '==' ? d === 0 : c.op === '!=' ? d !== 0 : c.op === '<' ? d < 0 : d > 0;
}

/** A txn's getRecord: the record's canonical JSON and revision, or nulls. */
export function recordTxnGet(t: StateTables, collection: string, pk: Pk): { record: string | null; revision: number | null } {
  const m = readMeta(t, collection);
  const r = m === undefined ? undefined : getRecord(t, m, pk);
  return r === undefined ? { record: null, revision: null } : { record: r.record, revision: r.revision };
}

/** Whether anything dropped waits to be reclaimed. */
export function hasGarbage(t: StateTables): boolean {
  for (const _ of t.keys('collGarbage', { limit: 1 })) return true;
  return false;
}

/** Deletes up to RECLAIM_ROWS_MAX rows of dropped collections and indexes; returns whether
 *  any are left. Every replica reclaims the same rows at the same command. */
export function reclaim(t: StateTables, onLease: (lease: number, delta: number) => void): boolean {
  let budget = RECLAIM_ROWS_MAX;
  const work: Uint8Array[] = [];
  for (const k of t.keys('collGarbage', { limit: 16 })) work.push(Uint8Array.prototype.slice.call(k as Uint8Array));
  for (const g of work) {
    const id = g.subarray(0, 8);
    const indexId = (g[8]! << 8) | g[9]!;
    const scopes: ['records' | 'recIndex', Uint8Array][] = indexId === WHOLE ? [['recIndex', id], ['records', id]] : [['recIndex', g]];
    let left = false;
    for (const [table, prefix] of scopes) {
      const rows: Uint8Array[] = [];
      for (const k of t.keys(table, { start: prefix, end: prefixEnd(prefix)!, limit: budget + 1 })) rows.push(Uint8Array.prototype.slice.call(k as Uint8Array));
      const now = rows.slice(0, budget);
      for (const r of now) {
        // A dropped record on a lease leaves it (and its count) now.
        if (table === 'records') {
          const v = t.get('records', r);
          const lease = v === undefined ? undefined : decodeRecord(0, v).lease;
          // Counted off only if still on it: its lease's end may have taken the row (and
          // counted it) already (helper-50).
          const row = lease === undefined ? undefined : leaseRow(lease, readU64(r), r.subarray(8));
          if (row !== undefined && t.get('leaseRecords', row) !== undefined) {
            t.remove('leaseRecords', row);
            onLease(lease!, -1);
          }
        }
        t.remove(table, r);
      }
      budget -= now.length;
      if (rows.length > now.length) left = true;
      if (left) break;
    }
    if (!left) t.remove('collGarbage', g);
    if (budget <= 0) break;
  }
  return hasGarbage(t);
}

/**
 * What must hold of the collection tables, checked from scratch (the simulator and tests):
 * each collection's count is its records'; each `ready` index holds exactly its records'
 * entries and, unique, no value twice; a `building` one no entry a record does not have.
 * Returns the first problem found, or null. Reads everything: not for apply.
 */
export function auditCollections(t: StateTables): string | null {
  for (const { key } of t.range('collections')) {
    const name = fromUtf8.decode(key as Uint8Array);
    const m = readMeta(t, name)!;
    const prefix = u64Key(m.id);
    const derived = m.indexes.map(() => new Set<string>());
    let count = 0;
    for (const { key: k, value } of t.range('records', { start: prefix, end: prefixEnd(prefix)! })) {
      count++;
      const pkKey = (k as Uint8Array).subarray(8);
      const stored = decodeRecord(pkFromKey(pkKey), value);
      if (stored.lease !== undefined && t.get('leaseRecords', leaseRow(stored.lease, m.id, pkKey)) === undefined) return `${name}: record ${JSON.stringify(stored.pk)} on lease ${stored.lease} has no lease row`;
      const rec = JSON.parse(stored.record) as Record<string, Json>;
      entriesOf(0, m, rec, pkKey, true).forEach((e, i) => {
        if (e !== null) derived[i]!.add(Buffer.from(e).toString('hex'));
      });
    }
    if (count !== m.count) return `${name}: count ${m.count}, ${count} records`;
    if (m.indexes.some((x) => x.state === 'building') !== (t.get('collBuilding', key) !== undefined)) return `${name}: sm.coll_building disagrees with its indexes`;
    for (const [i, x] of m.indexes.entries()) {
      if (x.state === 'failed') continue;
      const p = indexPrefix(m.id, x.id);
      const values = new Set<string>();
      let n = 0;
      for (const k of t.keys('recIndex', { start: p, end: prefixEnd(p)! })) {
        const e = k as Uint8Array;
        n++;
        if (!derived[i]!.has(Buffer.from(e).toString('hex'))) return `${name}.${x.def.name} (${x.state}): an entry no record has (${Buffer.from(e).toString('hex')})`;
        if (x.def.unique && x.state === 'ready') {
          const value = Buffer.from(e.subarray(p.byteLength, e.byteLength - pkKeyOfEntry(e.subarray(p.byteLength)).byteLength)).toString('hex');
          if (values.has(value)) return `${name}.${x.def.name}: a unique index holds a value twice`;
          values.add(value);
        }
      }
      if (x.state === 'ready' && n !== derived[i]!.size) return `${name}.${x.def.name}: ${n} entries, its records have ${derived[i]!.size}`;
    }
  }
  return null;
}
