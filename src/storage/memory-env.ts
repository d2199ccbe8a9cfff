/**
 * The in-memory twin of the LMDB environment (env.ts), for the simulator: the same tables
 * and the subset of lmdb-js's API the state machine (src/state/kv.ts) uses, so the
 * simulator runs the real key/value state machine (revisions, conditions, txns, request ids,
 * sessions, the hash chain, segment bounds) and not a model of it.
 *
 * What it keeps of LMDB: keys in byte order; `transactionSync` is atomic (a throw inside
 * undoes every write made in it, so the applied point moves only with its transaction);
 * values are copied in and out of the store (a caller's buffer is never aliased). What
 * survives a crash is the simulator's business: every commit (a transaction, or a write
 * outside one) is reported to `onCommit` with the function that undoes it, so a power loss
 * can keep any prefix of the commits since the last flush. (A `transactionSync` is not
 * durable when it returns: lmdb-js may run it inside its writer's unsynced transaction.)
 */
import type { StoreEnv } from './env.js';

type Entry = { readonly key: Uint8Array | string; readonly value: Uint8Array };
type Undo = () => void;

interface RangeOptions {
  readonly start?: Uint8Array | string;
  readonly end?: Uint8Array | string;
  readonly limit?: number;
  /** As lmdb-js: descending, from `start` (inclusive) down to `end` (exclusive). */
  readonly reverse?: boolean;
}

/** Bytes as a string whose code units are the bytes: string order is byte order. */
function keyString(key: Uint8Array | string): string {
  if (typeof key === 'string') return Buffer.from(key, 'utf8').toString('latin1');
  return Buffer.from(key.buffer, key.byteOffset, key.byteLength).toString('latin1');
}

const copyBytes = (b: Uint8Array): Uint8Array => Uint8Array.prototype.slice.call(b);

export class MemoryRoot {
  /** The undo journal of the transaction running now, if any. */
  journal: Undo[] | null = null;
  readonly flushed: Promise<boolean> = Promise.resolve(true);
  /** Told of every commit, with what undoes it. */
  onCommit: ((undo: Undo) => void) | null = null;

  /** A write outside a transaction commits alone. */
  wrote(undo: Undo): void {
    if (this.journal !== null) this.journal.push(undo);
    else this.onCommit?.(undo);
  }

  transactionSync<T>(fn: () => T): T {
    if (this.journal !== null) return fn(); // nested: part of the outer one
    const { out, undo } = this.journaled(fn);
    if (undo !== null) this.onCommit?.(undo);
    return out;
  }

  /** Runs `fn` as one transaction: all its writes or (if it throws) none; returns what
   *  undoes them (null when it wrote nothing). */
  private journaled<T>(fn: () => T): { out: T; undo: Undo | null } {
    const journal: Undo[] = [];
    this.journal = journal;
    try {
      const out = fn();
      this.journal = null;
      const undo = journal.length === 0 ? null : () => {
        for (let i = journal.length - 1; i >= 0; i--) journal[i]!();
      };
      return { out, undo };
    } catch (err) {
      this.journal = null;
      for (let i = journal.length - 1; i >= 0; i--) journal[i]!();
      throw err;
    }
  }

  /**
   * When set (the simulator), `batch` queues its transaction here, as lmdb-js hands it to its
   * writer thread: the owner commits it later (`QueuedBatch.commit`), in order with its other
   * writes, or fails it; a crash before then loses it. When null, a batch commits at once.
   */
  onQueue: ((batch: QueuedBatch) => void) | null = null;

  /**
   * lmdb-js's `batch`: the writes in `fn` as one transaction, committed when it resolves.
   * The result is a thenable that calls back synchronously (the simulator runs without
   * yielding to the event loop, so a promise's callbacks would never run).
   */
  batch(fn: () => void): Promise<boolean> {
    const queued = new QueuedBatch((): Undo | null => this.journaled(fn).undo);
    if (this.onQueue !== null) this.onQueue(queued);
    else {
      const undo = queued.commit();
      if (undo !== null) this.onCommit?.(undo);
    }
    return queued as unknown as Promise<boolean>;
  }
  useReadTransaction(): { done(): void } {
    return { done: () => undefined };
  }

  async close(): Promise<void> {}
}

/** A transaction handed to the writer and not committed yet (MemoryRoot.batch). */
export class QueuedBatch {
  private ok: ((v: boolean) => unknown) | null = null;
  private err: ((e: unknown) => unknown) | null = null;
  private settled = false;
  /** How it ended, for a `then` that comes after. */
  private outcome: { ok: true } | { ok: false; error: unknown } | null = null;

  constructor(private readonly run: () => Undo | null) {}

  /** What `batch` callers see: told once committed or failed (at once if it has been). */
  then(ok?: (v: boolean) => unknown, err?: (e: unknown) => unknown): this {
    this.ok = ok ?? null;
    this.err = err ?? null;
    if (this.outcome?.ok === true) this.ok?.(true);
    else if (this.outcome !== null) this.err?.(this.outcome.error);
    return this;
  }

  get done(): boolean {
    return this.settled;
  }

  /** Commits it (once); returns what undoes it, and tells the caller. */
  commit(): Undo | null {
    if (this.settled) return null;
    this.settled = true;
    const undo = this.run();
    this.outcome = { ok: true };
    this.ok?.(true);
    return undo;
  }

  /** It never commits: told to the caller (a failed disk). */
  fail(error: unknown): void {
    if (this.settled) return;
    this.settled = true;
    this.outcome = { ok: false, error };
    this.err?.(error);
  }

  /** The process died before it committed: no one is told. */
  drop(): void {
    this.settled = true;
  }
}

class MemoryDb {
  private readonly rows = new Map<string, Entry>();
  private sorted: string[] | null = [];

  constructor(private readonly root: MemoryRoot) {}

  get(key: Uint8Array | string): Uint8Array | undefined {
    const row = this.rows.get(keyString(key));
    return row === undefined ? undefined : copyBytes(row.value);
  }

  getBinary(key: Uint8Array | string): Uint8Array | undefined {
    return this.get(key);
  }

  putSync(key: Uint8Array | string, value: Uint8Array): boolean {
    const k = keyString(key);
    const old = this.rows.get(k);
    this.rows.set(k, { key: typeof key === 'string' ? key : copyBytes(key), value: copyBytes(value) });
    if (old === undefined) this.sorted = null;
    this.root.wrote(() => this.restore(k, old));
    return true;
  }

  removeSync(key: Uint8Array | string): boolean {
    const k = keyString(key);
    const old = this.rows.get(k);
    if (old === undefined) return false;
    this.rows.delete(k);
    this.sorted = null;
    this.root.wrote(() => this.restore(k, old));
    return true;
  }

  remove(key: Uint8Array | string): Promise<boolean> {
    return this.removeSync(key) ? RESOLVED_TRUE : RESOLVED_FALSE;
  }

  put(key: Uint8Array | string, value: Uint8Array): Promise<boolean> {
    return this.putSync(key, value) ? RESOLVED_TRUE : RESOLVED_FALSE;
  }

  *getRange(opts: RangeOptions = {}): Generator<{ key: Uint8Array | string; value: Uint8Array }> {
    const start = opts.start === undefined ? null : keyString(opts.start);
    const end = opts.end === undefined ? null : keyString(opts.end);
    let n = 0;
    const rev = opts.reverse === true;
    const sorted = this.keysSorted();
    for (const k of rev ? [...sorted].reverse() : sorted) {
      if (start !== null && (rev ? k > start : k < start)) continue;
      if (end !== null && (rev ? k <= end : k >= end)) break;
      if (opts.limit !== undefined && n >= opts.limit) break;
      const row = this.rows.get(k);
      if (row === undefined) continue; // removed while iterating
      n++;
      yield { key: typeof row.key === 'string' ? row.key : copyBytes(row.key), value: copyBytes(row.value) };
    }
  }

  *getKeys(opts: RangeOptions = {}): Generator<Uint8Array | string> {
    for (const { key } of this.getRange(opts)) yield key;
  }

  /** Sorted keys; a write replaces (never mutates) the array, so iterations in progress
   *  keep theirs. */
  private keysSorted(): string[] {
    if (this.sorted === null) this.sorted = [...this.rows.keys()].sort();
    return this.sorted;
  }

  private restore(k: string, old: Entry | undefined): void {
    if (old === undefined) this.rows.delete(k);
    else this.rows.set(k, old);
    this.sorted = null;
  }
}

/** Shared, already settled: a promise per write was a promise the test runner's async hook
 *  tracks per write, and a file of simulations passed its limit (Map maximum size). */
const RESOLVED_TRUE = Promise.resolve(true);
const RESOLVED_FALSE = Promise.resolve(false);

const TABLES = ['logMeta', 'logSlots', 'logSeq', 'smMeta', 'kv', 'sessions', 'sessionUse', 'members', 'chain', 'segments', 'votersEver', 'configs', 'removed', 'effects', 'leases', 'leaseExpiry', 'leaseKeys', 'blocks', 'actions', 'actionExpiry', 'blockHolds', 'blockLog', 'blockRevs', 'providers', 'provided', 'leaseProviders', 'collections', 'collDefs', 'records', 'recIndex', 'collGarbage', 'leaseRecords', 'collBuilding'] as const;

/** A fresh in-memory environment with every table of `openEnv`. */
export function openMemoryEnv(): StoreEnv {
  const root = new MemoryRoot();
  const env: Record<string, unknown> = { root };
  for (const t of TABLES) env[t] = new MemoryDb(root);
  return env as unknown as StoreEnv;
}
