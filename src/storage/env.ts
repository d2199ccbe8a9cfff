/**
 * The one LMDB environment of a node: a single file in its data dir holding the durable
 * log (acceptor state) and the state machine, so both share one writer and one commit
 * order. Named databases (all values raw bytes, encoded by their owner):
 *
 * | name            | key                          | value                                   | owner |
 * | --------------- | ---------------------------- | --------------------------------------- | ----- |
 * | `log.meta`      | `promised`/`commit`/`compacted` | msgpack                              | log   |
 * | `log.slots`     | u64 slot (big-endian)        | msgpack StoredSlot (slot.ts)            | log   |
 * | `log.seq`       | `seq`                        | empty; its version numbers the log's batches (log/lmdb.ts) | log |
 * | `sm.meta`       | `applied`, `archive`         | msgpack applied point, chain, log time, open segment; archive settings | state |
 * | `sm.kv`         | key bytes                    | u64 revision + value bytes              | state |
 * | `sm.sessions`   | client id (UTF-8)            | msgpack session record                  | state |
 * | `sm.session_use`| u64 last use + client id     | empty: the expiry index                 | state |
 * | `sm.members`    | peer id (UTF-8)              | msgpack member record                   | state |
 * | `sm.chain`      | u64 index                    | chain value after that command (32 bytes), then its slot (u64) | state |
 * | `sm.segments`   | u64 last slot of a segment   | msgpack SegmentBound (state/segments.ts)| state |
 * | `sm.voters_ever`| peer id (UTF-8)              | empty: every peer that was ever a voter | state |
 * | `sm.configs`    | u64 slot it governs from     | msgpack voter ids: the configurations the node applied or restored (applied.ts `recordConfig`) | state |
 * | `sm.removed`    | peer id (UTF-8)              | u64 index of its removal: peers removed from the cluster, never added back (etcd's removed ids) | state |
 * | `sm.effects`    | u64 index                    | msgpack list of the keys that command changed (state/effects.ts): the journal watch serves | state |
| `sm.leases`     | u64 lease id (its grant's index) | msgpack lease record (TTL, expiry in log time, key count) | state |
| `sm.lease_expiry` | u64 expiry (log time) + u64 lease id | empty: the expiry order | state |
| `sm.lease_keys` | u64 lease id + key bytes     | empty: the keys attached to a lease (the key's `sm.kv` value names the lease too) | state |
| `sm.blocks`     | block id (ASCII)             | msgpack [revision, canonical body or null (a tombstone), revisions so far] (state/block-apply.ts) | state |
| `sm.actions`    | action id (ASCII)            | msgpack pending action (blocks held, reads, transform, expiry) or committed one (its index) | state |
| `sm.action_expiry` | u64 expiry (log time) + action id | empty: when pending actions let go | state |
| `sm.block_holds`| block id (ASCII)             | the id of the pending action holding it | state |
| `sm.block_log`  | block id + 0x00 + u64 revision | msgpack history row: action, this block's part of the transform, a full body every 32 revisions (local: pruned with the hot log, not in snapshots) | state |
| `sm.block_revs` | u64 revision + block id      | empty: the history in revision order, for pruning | state |
| `sm.providers`  | u16 key length + key + provider | msgpack [revision, addrs, lease] (state/providers.ts) | state |
| `sm.provided`   | u16 provider length + provider + key | empty: what each provider provides | state |
| `sm.lease_providers` | u64 lease id + u16 key length + key + provider | empty: the provider records on a lease | state |
| `sm.collections`| collection name (ASCII)      | msgpack meta: id, version, record count, indexes and their states (state/records.ts) | state |
| `sm.coll_defs`  | u64 collection id            | the definition in force, canonical JSON | state |
| `sm.records`    | u64 collection id + ordered pk | msgpack [revision, canonical record JSON] | state |
| `sm.rec_index`  | u64 collection id + u16 index id + ordered value + ordered pk | empty: index entries | state |
| `sm.coll_garbage` | u64 collection id + u16 index id (0xffff: all) | empty: dropped rows still to reclaim | state |
| `sm.lease_records` | u64 lease id + u64 collection id + ordered pk | the collection's name: the records on a lease | state |
| `sm.coll_building` | collection name              | empty: the collections with an index being built | state |
 *
 * Durability: lmdb-js commits asynchronous writes on its writer thread and, with
 * `overlappingSync` (on by default outside Windows), flushes to disk after the commit.
 * LMDB commits are totally ordered and a flush covers every earlier commit, so what is
 * durable after a crash is always a prefix of the commits.
 */
import { join } from 'node:path';
import { mkdirSync } from 'node:fs';
import { open, type Database, type RootDatabase } from 'lmdb';
import { Packr } from 'msgpackr';

/** The environment's file inside a data dir (LMDB adds `-lock` beside it). */
export const ENV_FILE = 'pangea.mdb';
/** Named databases above, plus room for the archive and later owners. */
export const DBS_MAX = 40;

export type BytesDb = Database<Uint8Array, Uint8Array>;
export type NamedDb = Database<Uint8Array, string>;

export interface StoreEnv {
  readonly root: RootDatabase;
  readonly logMeta: NamedDb;
  readonly logSlots: BytesDb;
  /** Versioned (`useVersions`): see log/lmdb.ts. */
  readonly logSeq: NamedDb;
  readonly smMeta: NamedDb;
  readonly kv: BytesDb;
  readonly sessions: BytesDb;
  readonly sessionUse: BytesDb;
  readonly members: BytesDb;
  readonly chain: BytesDb;
  readonly segments: BytesDb;
  readonly votersEver: BytesDb;
  readonly configs: BytesDb;
  readonly removed: BytesDb;
  readonly effects: BytesDb;
  readonly leases: BytesDb;
  readonly leaseExpiry: BytesDb;
  readonly leaseKeys: BytesDb;
  readonly blocks: BytesDb;
  readonly actions: BytesDb;
  readonly actionExpiry: BytesDb;
  readonly blockHolds: BytesDb;
  readonly blockLog: BytesDb;
  readonly blockRevs: BytesDb;
  readonly providers: BytesDb;
  readonly provided: BytesDb;
  readonly leaseProviders: BytesDb;
  readonly collections: BytesDb;
  readonly collDefs: BytesDb;
  readonly records: BytesDb;
  readonly recIndex: BytesDb;
  readonly collGarbage: BytesDb;
  readonly leaseRecords: BytesDb;
  readonly collBuilding: BytesDb;
}

export function openEnv(dir: string): StoreEnv {
  mkdirSync(dir, { recursive: true });
  const root = open({ path: join(dir, ENV_FILE), maxDbs: DBS_MAX, noSubdir: true });
  const named = (name: string): NamedDb => root.openDB<Uint8Array, string>({ name, encoding: 'binary' });
  const bytes = (name: string): BytesDb => root.openDB<Uint8Array, Uint8Array>({ name, keyEncoding: 'binary', encoding: 'binary' });
  return {
    root,
    logMeta: named('log.meta'),
    logSlots: bytes('log.slots'),
    logSeq: root.openDB<Uint8Array, string>({ name: 'log.seq', encoding: 'binary', useVersions: true }),
    smMeta: named('sm.meta'),
    kv: bytes('sm.kv'),
    sessions: bytes('sm.sessions'),
    sessionUse: bytes('sm.session_use'),
    members: bytes('sm.members'),
    chain: bytes('sm.chain'),
    segments: bytes('sm.segments'),
    votersEver: bytes('sm.voters_ever'),
    configs: bytes('sm.configs'),
    removed: bytes('sm.removed'),
    effects: bytes('sm.effects'),
    leases: bytes('sm.leases'),
    leaseExpiry: bytes('sm.lease_expiry'),
    leaseKeys: bytes('sm.lease_keys'),
    blocks: bytes('sm.blocks'),
    actions: bytes('sm.actions'),
    actionExpiry: bytes('sm.action_expiry'),
    blockHolds: bytes('sm.block_holds'),
    blockLog: bytes('sm.block_log'),
    blockRevs: bytes('sm.block_revs'),
    providers: bytes('sm.providers'),
    provided: bytes('sm.provided'),
    leaseProviders: bytes('sm.lease_providers'),
    collections: bytes('sm.collections'),
    collDefs: bytes('sm.coll_defs'),
    records: bytes('sm.records'),
    recIndex: bytes('sm.rec_index'),
    collGarbage: bytes('sm.coll_garbage'),
    leaseRecords: bytes('sm.lease_records'),
    collBuilding: bytes('sm.coll_building'),
  };
}

/** The first key after every key with `prefix`, or null when there is none. */
export function prefixEnd(prefix: Uint8Array): Uint8Array | null {
  for (let i = prefix.byteLength - 1; i >= 0; i--) {
    if (prefix[i]! < 0xff) {
      // A copy, never a view: the prefix may be a Buffer, whose slice() shares its bytes.
      const end = Uint8Array.prototype.slice.call(prefix, 0, i + 1);
      end[i]!++;
      return end;
    }
  }
  return null;
}

/** The msgpack options every stored record uses: plain objects, integers as numbers, and
 *  byte strings decoded as copies (never views into LMDB's buffers). */
export const packr = new Packr({ useRecords: false, moreTypes: false, mapsAsObjects: true, int64AsType: 'number', copyBuffers: true });

export function pack(value: unknown): Uint8Array {
  return packr.pack(value);
}

/** Decodes a stored record; byte strings inside come back as plain `Uint8Array`s. */
export function unpack(stored: Uint8Array): unknown {
  return packr.unpack(plain(stored));
}

/** A plain `Uint8Array` view of `b` (lmdb-js hands out Buffers). */
export function plain(b: Uint8Array): Uint8Array {
  return b.constructor === Uint8Array ? b : new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}

const TWO_32 = 2 ** 32;

/** An unsigned integer (up to 2^53) as 8 big-endian bytes: byte order is numeric order. */
export function u64Key(n: number, suffix?: Uint8Array): Uint8Array {
  const out = keyBytes(8 + (suffix?.byteLength ?? 0));
  writeU64(out, 0, n, 'u64Key');
  if (suffix !== undefined) out.set(suffix, 8);
  return out;
}

/** Unsigned integers (each up to 2^53) as 8 big-endian bytes each, one after another. */
export function u64s(...ns: number[]): Uint8Array {
  const out = keyBytes(8 * ns.length);
  for (let i = 0; i < ns.length; i++) writeU64(out, 8 * i, ns[i]!, 'u64s');
  return out;
}

function writeU64(out: Uint8Array, at: number, n: number, what: string): void {
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`${what}: ${n} is not a non-negative safe integer`);
  const hi = Math.floor(n / TWO_32);
  const lo = n >>> 0;
  out[at] = hi >>> 24;
  out[at + 1] = (hi >>> 16) & 0xff;
  out[at + 2] = (hi >>> 8) & 0xff;
  out[at + 3] = hi & 0xff;
  out[at + 4] = lo >>> 24;
  out[at + 5] = (lo >>> 16) & 0xff;
  out[at + 6] = (lo >>> 8) & 0xff;
  out[at + 7] = lo & 0xff;
}

/**
 * Fresh bytes for a key, carved from a shared slab: a `new Uint8Array(8)` allocates an
 * ArrayBuffer of its own, 1.5 us each on this machine against 0.05 us for a view of a slab
 * (u64Key was the largest self time under apply in a profile of lease keep-alives: every
 * state write makes a few). A slab's bytes are never handed out twice nor written again, so
 * a view stays valid as long as anyone holds it (lmdb-js reads a value's bytes after put
 * returns); it keeps its slab alive, at most KEY_SLAB_BYTES.
 */
function keyBytes(length: number): Uint8Array {
  if (length > KEY_SLAB_BYTES / 8) return new Uint8Array(length);
  if (slabUsed + length > KEY_SLAB_BYTES) {
    slab = new ArrayBuffer(KEY_SLAB_BYTES);
    slabUsed = 0;
  }
  const out = new Uint8Array(slab, slabUsed, length);
  slabUsed += length;
  return out;
}

const KEY_SLAB_BYTES = 16 * 1024;
let slab = new ArrayBuffer(KEY_SLAB_BYTES);
let slabUsed = 0;

/** The unsigned integer in 8 big-endian bytes of `b` at `offset`. From the bytes, not a
 *  DataView: 15 ns against 105 (a DataView a call), and lease renewals read four a lease. */
export function readU64(b: Uint8Array, offset = 0): number {
  if (!(offset >= 0 && offset + 8 <= b.byteLength)) throw new RangeError(`readU64: offset ${offset} of ${b.byteLength} bytes`);
  const hi = b[offset]! * 0x1000000 + ((b[offset + 1]! << 16) | (b[offset + 2]! << 8) | b[offset + 3]!);
  const lo = b[offset + 4]! * 0x1000000 + ((b[offset + 5]! << 16) | (b[offset + 6]! << 8) | b[offset + 7]!);
  return hi * TWO_32 + lo;
}
