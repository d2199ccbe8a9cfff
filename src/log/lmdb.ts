/**
 * The durable log on LMDB (see storage/env.ts for the layout and the durability argument).
 * `openStores` (src/stores.ts) opens it with the state machine in one LMDB environment.
 *
 * `write` queues each batch's puts and removes as lmdb-js asynchronous operations: those
 * queued in one event-loop turn go into one LMDB transaction, in call order, committed on
 * lmdb-js's writer thread. A batch resolves only after its commit has been flushed to disk
 * (`root.flushed`), and never before the batches handed over before it.
 *
 * No batch reaches the disk without every batch before it. lmdb-js's writer goes on to the
 * next queued transaction after one fails (a full disk may still take a small one), and a
 * slot rewritten at a new ballot, lost with its transaction while the next batch's commit
 * marker covering it was kept, made the slot's old value look chosen after a restart (found
 * by review, reproduced with a file size limit: test/log/lmdb-gap.test.ts). So each batch is
 * a conditional block (`ifVersion`) on a sequence record (`log.seq`, versioned) that the
 * batch before it sets: the writer thread skips it unless that batch committed. A skipped
 * batch fails its `write`, and the node stops. (Waiting for each commit before queueing the
 * next batch would do too, but it holds the writer thread idle between transactions; in
 * alternating 6 s runs it was no faster, inside this machine's noise.)
 *
 * `beforeHandOver` (the state machine's writes held back, src/state/staged.ts) runs just
 * before a batch is queued, so both share its transaction and its fsync. The stage keeps
 * one transaction of its own on its way at a time and none after a failure, and it holds
 * only applies of slots whose log writes committed, so a state write is never kept without
 * what it relies on.
 *
 * Why single operations and not `root.transaction(callback)`: lmdb-js runs asynchronous
 * transaction callbacks through a N-API thread-safe call, and on this project's Node 20
 * build those callbacks never ran (the promise hung). Single puts and removes run wholly on
 * the writer thread and keep their call order, which is all a batch needs. The state
 * machine's applies go through the same writer queue (src/state/staged.ts), so what a crash
 * keeps is a prefix of both.
 *
 * Compaction writes the `compacted` point in the batch and removes the slots at or below it
 * that are already committed; `load` and `readSlots` ignore anything at or below the point,
 * so a slot whose removal was missed (queued in the same turn) is garbage, never state.
 */
import { BALLOT_NONE, type Ballot, type LogPoint, type PersistOp, type StoredSlot } from '../consensus/index.js';
import { pack, readU64, u64Key, unpack, type BytesDb, type NamedDb, type StoreEnv } from '../storage/env.js';
import type { LoadedLog, LogStore } from './log-store.js';
import { decodeSlot, encodeSlot } from './slot-codec.js';

export interface LmdbLogOptions {
  /** Test hook: awaited after a batch is flushed and before its `write` resolves, so a test
   *  can hold acknowledgements back and observe that nothing leaves early. */
  readonly flushGate?: () => Promise<void>;
}

const noop = (): void => {};
const SEQ_KEY = 'seq';
const EMPTY = new Uint8Array(0);

export class LmdbLogStore implements LogStore {
  private readonly flushGate: (() => Promise<void>) | undefined;
  private lastCommitted: Promise<void> = Promise.resolve();
  /** The sequence number of the last batch queued (see the top of the file). */
  private seq: number;
  /** Runs just before each batch is queued: what else should ride in its transaction. */
  beforeHandOver: () => void = () => {};
  /** As queued (ahead of what is committed): decides which ops are no-ops. */
  private compactedSlot: number;
  private commitSlot: number;
  /** Resolves when every batch handed over so far is durable; rejects for good after a
   *  failed write, so no later batch is ever reported durable out of order. */
  private tail: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(
    private readonly env: StoreEnv,
    opts: LmdbLogOptions = {},
    private readonly onClose: () => Promise<void> = async () => {},
  ) {
    this.flushGate = opts.flushGate;
    this.compactedSlot = this.readCompacted()?.slot ?? 0;
    this.commitSlot = this.readCommit();
    // A store from before `log.seq` existed starts its sequence at 0.
    if (env.logSeq.get(SEQ_KEY) === undefined) env.logSeq.putSync(SEQ_KEY, EMPTY, 0);
    this.seq = env.logSeq.getEntry(SEQ_KEY)?.version ?? 0;
  }

  load(): LoadedLog {
    const compacted = this.readCompacted();
    const slots: StoredSlot[] = [];
    for (const { key, value } of this.env.logSlots.getRange({ start: u64Key((compacted?.slot ?? 0) + 1) })) {
      slots.push(decodeSlot(readU64(key), value));
    }
    return { promised: this.readPromised(), slots, compacted, commit: this.readCommit() };
  }

  write(ops: readonly PersistOp[]): Promise<void> {
    if (this.closed) return Promise.reject(new Error('log store is closed'));
    const { logMeta, logSlots, logSeq } = this.env;
    let committed: Promise<void>;
    try {
      // Encoded before the block: a throw inside it would leave part of it queued.
      const puts: [BytesDb | NamedDb, Uint8Array | string, Uint8Array | undefined][] = [];
      for (const op of ops) {
        switch (op.kind) {
          case 'promise':
            puts.push([logMeta, 'promised', pack(op.ballot)]);
            break;
          case 'slot':
            if (op.slot.slot > this.compactedSlot) puts.push([logSlots, u64Key(op.slot.slot), encodeSlot(op.slot)]);
            break;
          case 'commit':
            if (op.slot > this.commitSlot) {
              this.commitSlot = op.slot;
              puts.push([logMeta, 'commit', pack(op.slot)]);
            }
            break;
          case 'compact':
            if (op.through.slot > this.compactedSlot) {
              this.compactedSlot = op.through.slot;
              puts.push([logMeta, 'compacted', pack(op.through)]);
              for (const key of logSlots.getKeys({ end: u64Key(op.through.slot + 1) })) puts.push([logSlots, key, undefined]);
            }
            break;
        }
      }
      if (puts.length === 0) {
        // Nothing to write (a deferred marker's turn): no transaction, no fsync; `done`
        // still waits for every batch before it (below).
        committed = Promise.resolve();
      } else {
        this.beforeHandOver();
        const seq = this.seq + 1;
        // Every op of one turn returns the same commit promise: the set stays tiny.
        const commits = new Set<PromiseLike<boolean>>();
        const block = logSeq.ifVersion(SEQ_KEY, this.seq, () => {
          commits.add(logSeq.put(SEQ_KEY, EMPTY, seq));
          for (const [db, key, value] of puts) commits.add(value === undefined ? (db as BytesDb).remove(key as Uint8Array) : (db as BytesDb).put(key as Uint8Array, value));
        });
        this.seq = seq;
        committed = Promise.all([block, ...commits]).then(([done]) => {
          if (done !== true) throw new Error('log batch skipped: an earlier log write failed to commit (or another writer changed log.seq)');
        });
      }
    } catch (error) {
      committed = Promise.reject(error); // refused at hand-over (a closed environment)
    }
    // A failed commit fails every later `committed()` too: the node must never apply
    // entries whose log write did not commit (the state would be ahead of the log).
    this.lastCommitted = Promise.all([this.lastCommitted, committed]).then(noop);
    this.lastCommitted.catch(noop); // the caller of committed() gets the rejection
    const durable = committed
      .then(() => this.env.root.flushed)
      .then(() => this.flushGate?.());
    const done = Promise.all([this.tail, durable]).then(noop);
    this.tail = done;
    done.catch(noop); // the caller gets the rejection; the chain only keeps it
    return done;
  }

  /** Resolves once every batch handed over so far is committed (visible to a crash that
   *  keeps the page cache, as SIGKILL does), which is sooner than durable. */
  committed(): Promise<void> {
    return this.lastCommitted;
  }

  /** `chosenThrough`: the applied slot, when the caller knows it. The stored marker may lag
   *  it (the driver defers the marker); a slot up to it holds its chosen value, since apply
   *  waits for the slots' writes. Without it, the archiver met a segment whose last slots
   *  were not yet covered by the marker and failed it until the next write (review). */
  readSlots(from: number, to: number, chosenThrough = 0): StoredSlot[] {
    // One read snapshot: the commit marker and the slots it covers agree.
    const commit = Math.max(this.readCommit(), chosenThrough);
    const start = Math.max(from, (this.readCompacted()?.slot ?? 0) + 1);
    const out: StoredSlot[] = [];
    if (start > to) return out;
    for (const { key, value } of this.env.logSlots.getRange({ start: u64Key(start), end: u64Key(to + 1) })) {
      const slot = decodeSlot(readU64(key), value);
      if (slot.chosen) out.push(slot);
      else if (slot.slot <= commit) out.push({ ...slot, chosen: true });
    }
    return out;
  }

  /**
   * Restore: the log begins after `point` (the snapshot the state machine was restored
   * from), everything up to it chosen. Only on a log that holds nothing after it.
   */
  async startAfter(point: LogPoint): Promise<void> {
    await this.env.logMeta.put('compacted', pack(point));
    await this.env.logMeta.put('commit', pack(point.slot));
    await this.env.root.flushed;
    this.compactedSlot = point.slot;
    this.commitSlot = point.slot;
  }

  /** Bytes of LMDB pages the hot log's slots occupy. */
  hotBytes(): number {
    const st = this.env.logSlots.getStats() as { pageSize?: number; treeBranchPageCount?: number; treeLeafPageCount?: number; overflowPages?: number };
    return (st.pageSize ?? 0) * ((st.treeBranchPageCount ?? 0) + (st.treeLeafPageCount ?? 0) + (st.overflowPages ?? 0));
  }

  /** Waits for every queued batch, then releases the environment (once). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.tail.catch(noop);
    await this.onClose();
  }

  private readPromised(): Ballot {
    const v = this.env.logMeta.get('promised');
    return v === undefined ? BALLOT_NONE : (unpack(v) as Ballot);
  }

  private readCommit(): number {
    const v = this.env.logMeta.get('commit');
    return v === undefined ? 0 : (unpack(v) as number);
  }

  private readCompacted(): LogPoint | null {
    const v = this.env.logMeta.get('compacted');
    return v === undefined ? null : (unpack(v) as LogPoint);
  }
}
