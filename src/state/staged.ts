/**
 * The state machine's writes on their way to LMDB, and every read of its tables.
 *
 * Why: a synchronous LMDB commit (`transactionSync`) flushes to disk on the calling thread,
 * and apply ran one for every batch: 0.3-1.2 ms of the main thread each, on the path that
 * answers clients (issue 12's profile: 13.5% of a leader's CPU at 256 clients, 22% of a
 * follower's). Apply needs no flush of its own: the log is the durable record, the applied
 * point lives in the same commit as the state, so a crash loses a suffix of applies and the
 * log replays it, exactly once.
 *
 * How: apply writes here (`put`/`remove`), every read of a state table goes through `get`
 * and `range`, which see the writes not yet committed, and `commit()` seals one apply's
 * writes. `handOver()` gives the sealed writes to lmdb-js as asynchronous operations inside
 * one `root.batch`, committed (and flushed, overlapping) on lmdb-js's writer thread. A write
 * stays visible here until its transaction has committed, after which LMDB's own reads see
 * it (lmdb-js renews its read transaction before it resolves a commit).
 *
 * When: the log store calls `handOver()` just before it queues each batch
 * (`LmdbLogStore.beforeHandOver`, wired in src/stores.ts), and the driver on each tick, so
 * the state rides in the log's transaction (lmdb-js commits the operations queued in one
 * event-loop turn together) and costs no commit or fsync of its own. Measured on a lone
 * write (3 nodes, 2 cores): two fdatasyncs per write per node became one (issue 12).
 * Sealed writes past `SEALED_WRITES_MAX` go at once, and `committed()` sends them too.
 *
 * Order and durability: lmdb-js commits its queued operations in the order they were
 * queued, in one writer, so what a crash keeps is a prefix of the commits: the log's writes
 * queued before an apply (apply waits for them to be committed, driver.ts) are never lost
 * while the apply is kept, and each apply is whole or absent. One state transaction is on
 * its way at a time, and none after one failed (see `handOver`). A log compaction must not be
 * queued ahead of the state it relies on: the driver compacts only through the point whose
 * apply has committed (`LmdbStateStore.committedPoint`). Nothing in a running node may
 * commit state with `transactionSync` while writes are staged: lmdb-js may run a
 * synchronous transaction ahead of asynchronous ones still queued, which would reorder
 * them. The methods that use one (bootstrap, forced configurations, restore) run only when
 * nothing is staged, and say so by calling `assertIdle`.
 */
import { plain, type BytesDb, type NamedDb, type StoreEnv } from '../storage/env.js';

/** The state machine's tables in `StoreEnv` (the log's are not staged). */
export type StateTable = 'smMeta' | 'kv' | 'sessions' | 'sessionUse' | 'members' | 'chain' | 'segments' | 'votersEver' | 'configs' | 'removed' | 'effects' | 'leases' | 'leaseExpiry' | 'leaseKeys' | 'blocks' | 'actions' | 'actionExpiry' | 'blockHolds' | 'blockLog' | 'blockRevs' | 'providers' | 'provided' | 'leaseProviders' | 'collections' | 'collDefs' | 'records' | 'recIndex' | 'collGarbage' | 'leaseRecords' | 'collBuilding';

type Key = Uint8Array | string;

/** Sealed writes held back for the next log write at most: past it they go on their own. */
export const SEALED_WRITES_MAX = 4_096;

/** lmdb-js's default `maxKeySize`. */
const LMDB_KEY_BYTES_MAX = 1978;

/** A write sealed by `commit`: its table, key string and staged value. */
export interface SealedWrite {
  readonly table: StateTable;
  readonly k: string;
  readonly staged: Staged;
}

interface Staged {
  readonly key: Key;
  /** Undefined: removed. */
  readonly value: Uint8Array | undefined;
  /** Which write this is (a later write of the same key replaces it). */
  readonly seq: number;
}

export interface RangeOptions {
  readonly start?: Key;
  /** Exclusive. */
  readonly end?: Key;
  readonly limit?: number;
  /** As lmdb-js: descending, from `start` (inclusive) down to `end` (exclusive). */
  readonly reverse?: boolean;
}

/** Bytes as a string whose code units are the bytes: string order is byte order (LMDB's). */
function keyString(key: Key): string {
  if (typeof key === 'string') return Buffer.from(key, 'utf8').toString('latin1');
  // Short keys (u64 ids, most of the state's) by char codes: 146 ns against 207-338 for a
  // Buffer view's toString, measured for 8-byte keys.
  if (key.byteLength <= 32) return String.fromCharCode.apply(null, key as unknown as number[]);
  return Buffer.from(key.buffer, key.byteOffset, key.byteLength).toString('latin1');
}

/** Reads and writes of the state tables: staged (`StagedState`), or straight on LMDB inside
 *  a `transactionSync` (`directTables`). */
export interface StateTables {
  /** The value of `key`. The caller must not change it. */
  get(t: StateTable, key: Key): Uint8Array | undefined;
  /** Records in key order; keys and values never alias lmdb-js's buffers. */
  range(t: StateTable, opts?: RangeOptions): Iterable<{ key: Key; value: Uint8Array }>;
  keys(t: StateTable, opts?: RangeOptions): Iterable<Key>;
  put(t: StateTable, key: Key, value: Uint8Array): void;
  remove(t: StateTable, key: Key): void;
}

/** The tables straight on LMDB, synchronous writes: only inside `root.transactionSync`. */
export function directTables(env: StoreEnv): StateTables {
  const db = (t: StateTable): BytesDb => env[t] as BytesDb;
  return {
    get: (t, key) => db(t).get(key as Uint8Array),
    range: (t, opts = {}) => copies(db(t).getRange(opts as { start?: Uint8Array })),
    *keys(t, opts = {}) {
      for (const { key } of copies(db(t).getRange(opts as { start?: Uint8Array }))) yield key;
    },
    put: (t, key, value) => void db(t).putSync(key as Uint8Array, value),
    remove: (t, key) => void db(t).removeSync(key as Uint8Array),
  };
}

export class StagedState implements StateTables {
  /** Writes not yet committed, per table, by key. */
  private readonly pending = new Map<StateTable, Map<string, Staged>>();
  /** Each table's pending keys in order, while known (stagedIn); dropped when a key leaves. */
  private readonly sortedKeys = new Map<StateTable, string[]>();
  /** Writes staged since the last `commit()`, in order, with what each replaced. */
  private queued: { table: StateTable; k: string; staged: Staged; replaced: Staged | undefined }[] = [];
  /** Whole applies' writes waiting for the transaction on its way (see `handOver`). */
  private sealed: SealedWrite[] = [];
  private sealedCallbacks: (() => void)[] = [];
  private seq = 0;
  /** A transaction handed to lmdb-js and not yet committed. */
  private inFlight = false;
  private failure: { error: unknown } | null = null;
  private readonly idleWaiters: (() => void)[] = [];
  /** Told once if a commit fails (the disk is full or gone): the node must stop. Every
   *  later write or commit throws that failure too. */
  onFailure: (error: unknown) => void = () => {};

  constructor(private readonly env: StoreEnv) {}

  private db(t: StateTable): BytesDb | NamedDb {
    return this.env[t];
  }

  /** The value of `key` as staged or committed. The caller must not change it. */
  get(t: StateTable, key: Key): Uint8Array | undefined {
    const table = this.pending.get(t);
    if (table !== undefined && table.size > 0) {
      const s = table.get(keyString(key));
      if (s !== undefined) return s.value;
    }
    return (this.db(t) as BytesDb).get(key as Uint8Array);
  }

  /**
   * Records in key order, staged writes merged over the committed ones. Keys and values
   * are fresh copies when they come from LMDB (never views of lmdb-js's buffers).
   */
  *range(t: StateTable, opts: RangeOptions = {}): Generator<{ key: Key; value: Uint8Array }> {
    const limit = opts.limit ?? Number.POSITIVE_INFINITY;
    if (limit <= 0) return;
    const rev = opts.reverse === true;
    const bounds = { ...(opts.start === undefined ? {} : { start: opts.start }), ...(opts.end === undefined ? {} : { end: opts.end }), ...(rev ? { reverse: true } : {}) };
    const table = this.pending.get(t);
    const from = opts.start === undefined ? null : keyString(opts.start);
    const to = opts.end === undefined ? null : keyString(opts.end);
    const staged = table === undefined || table.size === 0 ? [] : this.stagedIn(t, table, rev ? to : from, rev ? from : to, rev);
    if (rev) staged.reverse();
    // Without staged writes in range LMDB's own limit applies; with them, removals may drop
    // records, so the limit applies to the merged stream.
    const lmdb = (this.db(t) as BytesDb).getRange({ ...bounds, ...(staged.length === 0 && Number.isFinite(limit) ? { limit } : {}) } as { start?: Uint8Array });
    let n = 0;
    if (staged.length === 0) {
      // Nothing staged in range (the common case: a unique index's check per record put
      // spent a fifth of its apply in the layers below).
      for (const { key, value } of lmdb as Iterable<{ key: Key; value: Uint8Array }>) {
        yield { key: typeof key === 'string' ? key : copy(key), value: copy(value) };
        if (++n >= limit) return;
      }
      return;
    }
    for (const r of merge(staged, copies(lmdb), rev)) {
      yield r;
      if (++n >= limit) return;
    }
  }

  *keys(t: StateTable, opts: RangeOptions = {}): Generator<Key> {
    for (const { key } of this.range(t, opts)) yield key;
  }

  put(t: StateTable, key: Key, value: Uint8Array): void {
    this.stage(t, key, value);
  }

  remove(t: StateTable, key: Key): void {
    this.stage(t, key, undefined);
  }

  private stage(t: StateTable, key: Key, value: Uint8Array | undefined): void {
    this.check();
    // A put lmdb-js refuses inside a batch would still commit the writes before it: refuse
    // here, where the apply rolls back whole (commands are checked long before this).
    const bytes = typeof key === 'string' ? Buffer.byteLength(key) : key.byteLength;
    if (bytes < 1 || bytes > LMDB_KEY_BYTES_MAX) throw new Error(`state key of ${bytes} bytes: LMDB takes 1 to ${LMDB_KEY_BYTES_MAX}`);
    let table = this.pending.get(t);
    if (table === undefined) this.pending.set(t, (table = new Map()));
    const staged: Staged = { key: typeof key === 'string' ? key : copy(key), value, seq: ++this.seq };
    const k = keyString(key);
    const replaced = table.get(k);
    this.queued.push({ table: t, k, staged, replaced });
    table.set(k, staged);
    // A new key goes into the table's sorted keys, if they are kept.
    const sorted = replaced === undefined ? this.sortedKeys.get(t) : undefined;
    if (sorted !== undefined) sorted.splice(lowerBound(sorted, k), 0, k);
  }

  /**
   * The staged entries of `table` with keys in [lo, hi) (for a reverse range, (lo, hi]),
   * in key order. The table's keys are kept sorted between calls (a new key is inserted in
   * place; a removal drops the sorted copy), so a range costs a binary search, not a sort of
   * everything staged: an index build step, whose every record reads a range of the index
   * beside the entries it staged, spent most of its time sorting them (bench index-build).
   */
  private stagedIn(t: StateTable, table: ReadonlyMap<string, Staged>, lo: string | null, hi: string | null, reverse: boolean): [string, Staged][] {
    let sorted = this.sortedKeys.get(t);
    if (sorted === undefined) {
      sorted = [...table.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
      this.sortedKeys.set(t, sorted);
    }
    const out: [string, Staged][] = [];
    let i = lo === null ? 0 : reverse ? upperBound(sorted, lo) : lowerBound(sorted, lo);
    for (; i < sorted.length; i++) {
      const k = sorted[i]!;
      if (hi !== null && (reverse ? k > hi : k >= hi)) break;
      out.push([k, table.get(k)!]);
    }
    return out;
  }

  /** Where the writes staged so far end: `rollbackTo` it forgets the ones after it (a txn
   *  one of whose record ops was refused applies nothing). */
  mark(): number {
    return this.queued.length;
  }

  rollbackTo(mark: number): void {
    for (let i = this.queued.length - 1; i >= mark; i--) {
      const { table, k, replaced } = this.queued[i]!;
      if (replaced === undefined) this.dropKey(table, k);
      else this.pending.get(table)!.set(k, replaced);
    }
    this.queued.length = Math.min(this.queued.length, mark);
  }

  /** Forgets the writes staged since the last `commit()` (an apply that threw). */
  rollback(): void {
    for (let i = this.queued.length - 1; i >= 0; i--) {
      const { table, k, replaced } = this.queued[i]!;
      if (replaced === undefined) this.dropKey(table, k);
      else this.pending.get(table)!.set(k, replaced);
    }
    this.queued = [];
  }

  /**
   * Seals the writes staged since the last call (one apply: all of them or none reach the
   * disk). They go to lmdb-js at the next `handOver()` (see the top of the file), or now if
   * too many wait. `onCommitted` runs once they are committed. They stay visible here until
   * then. Call it in the same event-loop turn as the writes.
   */
  commit(onCommitted?: () => void): void {
    this.check();
    if (this.queued.length === 0 && onCommitted === undefined) return;
    // Not push(...queued): a prune stages hundreds of thousands of writes at once, past the
    // arguments a call takes (found measuring block history pruning). Nor concat: that copies
    // every sealed write again on each apply while a transaction is on its way.
    if (this.sealed.length === 0) this.sealed = this.queued;
    else for (const q of this.queued) this.sealed.push(q);
    this.queued = [];
    if (onCommitted !== undefined) this.sealedCallbacks.push(onCommitted);
    if (this.sealed.length >= SEALED_WRITES_MAX) this.handOver();
  }

  /**
   * Hands the sealed writes to lmdb-js as one transaction, unless one is on its way: then
   * they wait for the next call. One transaction at a time, because lmdb-js's writer goes on
   * to the next queued transaction after one fails (a full disk may still take a small one),
   * so a later apply handed over beside a failed one could reach the disk without it: a
   * state that is no applied point's (found by review). After a failure nothing more is
   * handed over.
   */
  handOver(): void {
    if (this.inFlight || this.failure !== null) return;
    const batch = this.sealed;
    const callbacks = this.sealedCallbacks;
    if (batch.length === 0 && callbacks.length === 0) return this.settle();
    this.sealed = [];
    this.sealedCallbacks = [];
    let done: Promise<unknown>;
    try {
      done = this.env.root.batch(() => {
        for (const { table, staged } of batch) {
          const db = this.db(table) as BytesDb;
          if (staged.value === undefined) void db.remove(staged.key as Uint8Array);
          else void db.put(staged.key as Uint8Array, staged.value);
        }
      });
    } catch (error) {
      return this.failed(error); // refused at hand-over (a closed environment)
    }
    this.inFlight = true;
    this.handedOver(batch);
    done.then(
      () => {
        this.inFlight = false;
        this.forget(batch);
        for (const cb of callbacks) cb();
        // `committed()` waiting: what was sealed meanwhile goes now.
        if (this.idleWaiters.length > 0 || this.sealed.length >= SEALED_WRITES_MAX) this.handOver();
        else this.settle();
      },
      (error: unknown) => {
        this.inFlight = false;
        // lmdb-js rejects with "Commit failed" and the cause in a promise of its own.
        const detail = (error as { commitError?: unknown }).commitError;
        if (!(detail instanceof Promise)) return this.failed(error);
        this.failure = { error }; // refuses everything from now on; told with the cause
        detail.then(() => this.failed(error, true), (cause: unknown) => this.failed(cause, true));
      },
    );
  }

  /** A transaction was handed to lmdb-js (a seam for the simulator's self-test, which
   *  forgets the writes here, too early, to prove it notices). */
  protected handedOver(_batch: readonly SealedWrite[]): void {}

  /** Drops these writes from the stage: LMDB's reads see them now. A later write of the
   *  same key stays. */
  protected forget(batch: readonly SealedWrite[]): void {
    for (const { table, k, staged } of batch) {
      if (this.pending.get(table)!.get(k)?.seq === staged.seq) this.dropKey(table, k);
    }
  }

  private dropKey(table: StateTable, k: string): void {
    this.pending.get(table)!.delete(k);
    this.sortedKeys.delete(table);
  }

  private failed(error: unknown, known = false): void {
    if (this.failure !== null && !known) return;
    this.failure = { error };
    this.onFailure(error);
    this.settle();
  }

  /** Wakes `committed()` waiters once nothing is sealed or on its way (or after a failure). */
  private settle(): void {
    if (this.failure === null && (this.inFlight || this.sealed.length > 0)) return;
    for (const w of this.idleWaiters.splice(0)) w();
  }

  /** Hands over what is sealed (now, or once the transaction on its way is done) and
   *  resolves once every write sealed so far is committed; rejects after a failure. */
  async committed(): Promise<void> {
    if (this.failure === null && !this.inFlight && this.sealed.length === 0) return;
    this.handOver();
    if (this.failure === null) await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
    this.check();
  }

  /** True when no write is staged or on its way. */
  idle(): boolean {
    return this.queued.length === 0 && this.sealed.length === 0 && !this.inFlight;
  }

  /** Throws unless idle: before a synchronous transaction (see the top of the file). */
  assertIdle(what: string): void {
    if (!this.idle()) throw new Error(`${what}: state writes are still on their way to disk`);
  }

  /** A frozen copy of what is staged, for a snapshot read beside an LMDB read transaction. */
  freeze(): FrozenStage {
    const out = new Map<StateTable, Map<string, Staged>>();
    for (const [t, m] of this.pending) if (m.size > 0) out.set(t, new Map(m));
    return new FrozenStage(out);
  }

  /** Throws the commit failure, if one happened: nothing more may be applied. */
  private check(): void {
    if (this.failure !== null) throw this.failure.error;
  }
}

/** Staged writes as of one moment (StagedState.freeze). */
export class FrozenStage {
  constructor(private readonly tables: ReadonlyMap<StateTable, ReadonlyMap<string, Staged>>) {}

  get(t: StateTable, key: Key): { value: Uint8Array | undefined } | undefined {
    const s = this.tables.get(t)?.get(keyString(key));
    return s === undefined ? undefined : { value: s.value };
  }

  /** Merges this table's staged writes over `records` (in key order, from LMDB). */
  over(t: StateTable, records: Iterable<{ key: Key; value: Uint8Array }>): Iterable<{ key: Key; value: Uint8Array }> {
    const table = this.tables.get(t);
    return table === undefined ? records : merge(sortedEntries(table, () => true), records);
  }
}

/** The first index of sorted `a` whose key is >= `k` (upperBound: > `k`). */
function lowerBound(a: readonly string[], k: string): number {
  let lo = 0;
  let hi = a.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (a[mid]! < k) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function upperBound(a: readonly string[], k: string): number {
  let lo = 0;
  let hi = a.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (a[mid]! <= k) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function sortedEntries(table: ReadonlyMap<string, Staged>, keep: (k: string) => boolean): [string, Staged][] {
  const out: [string, Staged][] = [];
  for (const e of table) if (keep(e[0])) out.push(e);
  return out.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
}

/** `records` (in key order) with `staged` (sorted by key string) written over them:
 *  a staged value replaces or adds its record, a staged removal drops it. */
function* merge(staged: readonly [string, Staged][], records: Iterable<{ key: Key; value: Uint8Array }>, reverse = false): Generator<{ key: Key; value: Uint8Array }> {
  let i = 0;
  /** Whether staged key `a` comes before record key `b` in the order walked. */
  const before = reverse ? (a: string, b: string) => a > b : (a: string, b: string) => a < b;
  for (const r of records) {
    if (i === staged.length) {
      yield r;
      continue;
    }
    const rk = keyString(r.key);
    for (; i < staged.length && before(staged[i]![0], rk); i++) {
      const s = staged[i]![1];
      if (s.value !== undefined) yield { key: s.key, value: s.value };
    }
    if (i < staged.length && staged[i]![0] === rk) {
      const s = staged[i++]![1];
      if (s.value !== undefined) yield { key: s.key, value: s.value };
      continue;
    }
    yield r;
  }
  for (; i < staged.length; i++) {
    const s = staged[i]![1];
    if (s.value !== undefined) yield { key: s.key, value: s.value };
  }
}

function* copies(records: Iterable<{ key: Key; value: Uint8Array }>): Generator<{ key: Key; value: Uint8Array }> {
  for (const { key, value } of records) yield { key: typeof key === 'string' ? key : copy(key), value: copy(value) };
}

/** A plain `Uint8Array` copy (lmdb-js hands out Buffers it may reuse; slicing a Buffer
 *  through `Uint8Array.prototype` would still make a Buffer). */
function copy(b: Uint8Array): Uint8Array {
  return Uint8Array.prototype.slice.call(plain(b));
}
