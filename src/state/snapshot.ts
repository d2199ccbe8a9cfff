/**
 * A state machine snapshot as a byte stream: the state at one applied point, read from one
 * LMDB read transaction (writes go on meanwhile), and its restore into an empty store.
 *
 * The stream is a sequence of frames (u32 big-endian length + one msgpack value, as on the
 * wire, codec/frames.ts):
 *
 *   { t: 'header', v: 2, applied, settings }      the applied record (point with its
 *                                                 configurations, chain value, log time,
 *                                                 open segment) and the archive settings
 *   { t: DB, r: [key, value, key, value, ...] }   records of one table, in key order, DB in
 *                                                 `kv`, `sessions`, `session_use`, `members`,
 *                                                 `voters_ever`, `configs`, `removed`,
 *                                                 `leases`, `lease_expiry`, `lease_keys`,
 *                                                 `blocks`, `actions`, `action_expiry`,
 *                                                 `block_holds`, `providers`, `provided`,
 *                                                 `lease_providers`, `collections`,
 *                                                 `coll_defs`, `records`, `rec_index`,
 *                                                 `coll_garbage`, `lease_records`,
 *                                                 `coll_building`
 *   { t: 'end', records: N }                      the number of records: a cut stream fails
 *
 * What is not in a snapshot: the log, per-index chain values other than the applied one,
 * the segments table (the archive's manifest lists finished segments), and the effects
 * journal and block history (local, back to the hot-log floor: a restored node's start
 * there).
 */
import type { Transaction } from 'lmdb';
import { FrameDecoder, joinFrames } from '../codec/frames.js';
import { pack, u64Key, unpack, type BytesDb, type StoreEnv } from '../storage/env.js';
import type { ArchiveSettings } from './command.js';
import { chainRow, recordConfig, type AppliedRecord } from './applied.js';
import { directTables, type FrozenStage, type StateTable } from './staged.js';

/** 2 added the `configs` table, 3 the `removed` table, 4 the lease tables, 5 the block
 *  and provider tables, 6 the collection tables; older snapshots (without them) still
 *  restore. */
export const SNAPSHOT_VERSION = 6;
const SNAPSHOT_VERSIONS_READ: readonly unknown[] = [1, 2, 3, 4, 5, 6];
/** Record bytes gathered into one frame before it is handed out. */
const FRAME_BYTES_TARGET = 1024 * 1024;
/** Bound on one frame when reading (a record is at most a key and a value, well below). */
const FRAME_BYTES_MAX = 64 * 1024 * 1024;

const TABLES = ['kv', 'sessions', 'session_use', 'members', 'voters_ever', 'configs', 'removed', 'leases', 'lease_expiry', 'lease_keys', 'blocks', 'actions', 'action_expiry', 'block_holds', 'providers', 'provided', 'lease_providers', 'collections', 'coll_defs', 'records', 'rec_index', 'coll_garbage', 'lease_records', 'coll_building'] as const;
type Table = (typeof TABLES)[number];

/** The `StoreEnv` table a snapshot table is. */
function stateTable(t: Table): StateTable {
  switch (t) {
    case 'session_use':
      return 'sessionUse';
    case 'voters_ever':
      return 'votersEver';
    case 'lease_expiry':
      return 'leaseExpiry';
    case 'lease_keys':
      return 'leaseKeys';
    case 'action_expiry':
      return 'actionExpiry';
    case 'block_holds':
      return 'blockHolds';
    case 'lease_providers':
      return 'leaseProviders';
    case 'coll_defs':
      return 'collDefs';
    case 'rec_index':
      return 'recIndex';
    case 'coll_garbage':
      return 'collGarbage';
    case 'lease_records':
      return 'leaseRecords';
    case 'coll_building':
      return 'collBuilding';
    default:
      return t;
  }
}

function table(env: StoreEnv, t: Table): BytesDb {
  return env[stateTable(t)] as BytesDb;
}

export interface SnapshotHeader {
  readonly applied: AppliedRecord;
  readonly settings: ArchiveSettings | null;
}

/**
 * The state as of now, held by a read transaction until `frames` has been read through or
 * `close` is called (call it when the frames are not read: a held read transaction keeps
 * LMDB from reusing pages). `staged`: the applies not yet committed as of the same moment
 * (staged.ts), read over the transaction's records.
 */
export class StateSnapshot implements AsyncIterable<Uint8Array> {
  private readonly txn: Transaction;
  private released = false;
  readonly header: SnapshotHeader;

  constructor(
    private readonly env: StoreEnv,
    private readonly staged?: FrozenStage,
  ) {
    this.txn = env.root.useReadTransaction();
    const meta = (key: string): Uint8Array | undefined => {
      const s = staged?.get('smMeta', key);
      return s !== undefined ? s.value : env.smMeta.get(key, { transaction: this.txn });
    };
    const applied = meta('applied');
    const settings = meta('archive');
    if (applied === undefined) {
      this.close();
      throw new Error('cannot snapshot a state store that was never bootstrapped');
    }
    this.header = {
      applied: unpack(applied) as AppliedRecord,
      settings: settings === undefined ? null : (unpack(settings) as ArchiveSettings),
    };
  }

  /** Frames of about 1 MiB, each already length-prefixed. Readable once. */
  async *[Symbol.asyncIterator](): AsyncGenerator<Uint8Array, void, undefined> {
    yield* this.frames();
  }

  /** The same frames, read synchronously (the simulator's archive). Readable once. */
  *frames(): Generator<Uint8Array, void, undefined> {
    if (this.released) throw new Error('snapshot already read or closed');
    try {
      yield joinFrames([pack({ t: 'header', v: SNAPSHOT_VERSION, ...this.header })]);
      let records = 0;
      for (const t of TABLES) {
        let batch: Uint8Array[] = [];
        let bytes = 0;
        const committed = table(this.env, t).getRange({ transaction: this.txn });
        for (const r of this.staged === undefined ? committed : this.staged.over(stateTable(t), committed)) {
          const key = r.key as Uint8Array; // every snapshot table has byte keys
          const value = r.value;
          batch.push(Uint8Array.prototype.slice.call(key), Uint8Array.prototype.slice.call(value));
          bytes += key.byteLength + value.byteLength;
          records++;
          if (bytes >= FRAME_BYTES_TARGET) {
            yield joinFrames([pack({ t, r: batch })]);
            batch = [];
            bytes = 0;
          }
        }
        if (batch.length > 0) yield joinFrames([pack({ t, r: batch })]);
      }
      yield joinFrames([pack({ t: 'end', records })]);
    } finally {
      this.close();
    }
  }

  close(): void {
    if (this.released) return;
    this.released = true;
    this.txn.done();
  }
}

/**
 * Reads a snapshot stream through, handing each table's records to `onRecords` in order, and
 * returns its header once the end frame has been checked. Throws on a malformed or cut stream.
 */
export async function readSnapshot(
  source: AsyncIterable<Uint8Array>,
  onRecords: (table: Table, records: readonly Uint8Array[]) => void = () => {},
  /** Sees the header before any records; throwing refuses the snapshot there. */
  onHeader: (header: SnapshotHeader) => void = () => {},
): Promise<SnapshotHeader & { records: number }> {
  const reader = new SnapshotReader(onRecords, onHeader);
  for await (const chunk of source) reader.push(chunk);
  return reader.end();
}

/** `readSnapshot` over chunks in memory. */
function readSnapshotSync(source: Iterable<Uint8Array>, onRecords: (table: Table, records: readonly Uint8Array[]) => void): SnapshotHeader & { records: number } {
  const reader = new SnapshotReader(onRecords);
  for (const chunk of source) reader.push(chunk);
  return reader.end();
}

/** Checks a snapshot stream's frames as they come. */
class SnapshotReader {
  private readonly decoder = new FrameDecoder(FRAME_BYTES_MAX);
  private header: SnapshotHeader | null = null;
  private records = 0;
  private ended = false;

  constructor(
    private readonly onRecords: (table: Table, records: readonly Uint8Array[]) => void,
    private readonly onHeader: (header: SnapshotHeader) => void = () => {},
  ) {}

  push(chunk: Uint8Array): void {
    for (const frame of this.decoder.push(chunk)) {
      if (this.ended) throw new Error('snapshot: data after the end frame');
      const f = frame as { t?: unknown; v?: unknown; r?: unknown; records?: unknown } & Partial<SnapshotHeader>;
      if (this.header === null) {
        if (f.t !== 'header' || !SNAPSHOT_VERSIONS_READ.includes(f.v) || typeof f.applied !== 'object') throw new Error('snapshot: missing or unknown header');
        this.header = { applied: f.applied, settings: f.settings ?? null };
        this.onHeader(this.header);
        continue;
      }
      if (f.t === 'end') {
        if (f.records !== this.records) throw new Error(`snapshot: end frame says ${String(f.records)} records, read ${this.records}`);
        this.ended = true;
        continue;
      }
      if (!TABLES.includes(f.t as Table) || !Array.isArray(f.r) || f.r.length % 2 !== 0 || !f.r.every((b) => b instanceof Uint8Array)) {
        throw new Error('snapshot: malformed records frame');
      }
      this.onRecords(f.t as Table, f.r as Uint8Array[]);
      this.records += f.r.length / 2;
    }
  }

  end(): SnapshotHeader & { records: number } {
    if (this.header === null || !this.ended || this.decoder.bufferedBytes > 0) throw new Error('snapshot: stream ends early');
    return { ...this.header, records: this.records };
  }
}

/**
 * Loads a snapshot stream into `env`, whose state must be empty (never bootstrapped).
 * Writes every table first and the applied record last, then waits for the flush, so a
 * crash midway leaves a store that is still "not bootstrapped" and the restore is redone.
 */
export async function restoreSnapshot(env: StoreEnv, source: AsyncIterable<Uint8Array>, accept: (header: SnapshotHeader) => void = () => {}): Promise<SnapshotHeader> {
  clearForRestore(env);
  // A header refused (`accept` throws) stops the restore before any record is written.
  const header = await readSnapshot(source, restoreRecords(env), accept);
  finishRestore(env, header);
  await env.root.flushed;
  return header;
}

/** `restoreSnapshot` from frames in memory, without waiting for a flush: the simulator's,
 *  whose environment is durable as it commits. */
export function restoreSnapshotSync(env: StoreEnv, source: Iterable<Uint8Array>): SnapshotHeader {
  clearForRestore(env);
  return finishRestore(env, readSnapshotSync(source, restoreRecords(env)));
}

function clearForRestore(env: StoreEnv): void {
  if (env.smMeta.get('applied') !== undefined) throw new Error('restore needs an empty state store');
  // Leftovers of an earlier, interrupted restore.
  env.root.transactionSync(() => {
    for (const t of TABLES) for (const key of table(env, t).getKeys({})) table(env, t).removeSync(key);
  });
}

function restoreRecords(env: StoreEnv): (t: Table, r: readonly Uint8Array[]) => void {
  return (t, r) => {
    const db = table(env, t);
    env.root.transactionSync(() => {
      for (let i = 0; i < r.length; i += 2) db.putSync(r[i]!, r[i + 1]!);
    });
  };
}

function finishRestore(env: StoreEnv, header: SnapshotHeader): SnapshotHeader {
  const { applied, settings } = header;
  env.root.transactionSync(() => {
    if (settings !== null) env.smMeta.putSync('archive', pack(settings));
    // The slot stored beside it is the applied slot (the command's own may be earlier): it is
    // read only as the slot after an index below this one, which a restored node never has.
    if (applied.point.index > 0) env.chain.putSync(u64Key(applied.point.index), chainRow(applied.chain, applied.point.slot));
    recordConfig(directTables(env), applied.point.epochs);
    env.smMeta.putSync('applied', pack(applied));
  });
  return { applied, settings };
}
