/**
 * The in-memory twin of `LmdbLogStore`, for tests of other modules: the same semantics
 * (monotonic commit marker, compaction by point, slots at or below it ignored, chosen
 * slots for catch-up), durable "at once" (a write resolves on the next microtask, in order).
 */
import { BALLOT_NONE, type Ballot, type LogPoint, type PersistOp, type StoredSlot } from '../consensus/index.js';
import type { LoadedLog, LogStore } from './log-store.js';

export class MemoryLogStore implements LogStore {
  private promised: Ballot = BALLOT_NONE;
  private readonly slots = new Map<number, StoredSlot>();
  private compacted: LogPoint | null = null;
  private commit = 0;
  private closed = false;

  load(): LoadedLog {
    const slots = [...this.slots.values()].sort((a, b) => a.slot - b.slot);
    return { promised: this.promised, slots, compacted: this.compacted, commit: this.commit };
  }

  committed(): Promise<void> {
    return Promise.resolve();
  }

  write(ops: readonly PersistOp[]): Promise<void> {
    if (this.closed) return Promise.reject(new Error('log store is closed'));
    const compactedSlot = (): number => this.compacted?.slot ?? 0;
    for (const op of ops) {
      switch (op.kind) {
        case 'promise':
          this.promised = op.ballot;
          break;
        case 'slot':
          if (op.slot.slot > compactedSlot()) this.slots.set(op.slot.slot, op.slot);
          break;
        case 'commit':
          this.commit = Math.max(this.commit, op.slot);
          break;
        case 'compact':
          if (op.through.slot > compactedSlot()) {
            this.compacted = op.through;
            for (const s of this.slots.keys()) if (s <= op.through.slot) this.slots.delete(s);
          }
          break;
      }
    }
    return Promise.resolve();
  }

  readSlots(from: number, to: number, chosenThrough = 0): StoredSlot[] {
    const commit = Math.max(this.commit, chosenThrough);
    const out: StoredSlot[] = [];
    for (const s of this.load().slots) {
      if (s.slot < from || s.slot > to) continue;
      if (s.chosen) out.push(s);
      else if (s.slot <= commit) out.push({ ...s, chosen: true });
    }
    return out;
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}

/**
 * A log whose durability the caller (the simulator) controls, with the crash semantics of
 * `LmdbLogStore`: batches become durable in the order handed over, only when `flush` says
 * so; a crash keeps the durable batches and a prefix of the rest, whole batches only (LMDB
 * transactions are atomic). `durable` is what a restarted process loads. `break()` is a disk
 * that fails: every batch not yet durable, and every later one, fails.
 */
export class ControlledLog {
  private pending: { ops: readonly PersistOp[]; done: (err?: unknown) => void }[] = [];
  private failure: Error | null = null;

  constructor(
    readonly durable: MemoryLogStore,
    /** Told of each batch handed over: the simulator schedules its flush. */
    private readonly onWrite: () => void,
  ) {}

  load(): LoadedLog {
    return this.durable.load();
  }

  write(ops: readonly PersistOp[], done: (err?: unknown) => void): void {
    if (this.failure !== null) return done(this.failure);
    this.pending.push({ ops, done });
    this.onWrite();
  }

  /** Batches waiting for their flush. */
  get unflushed(): number {
    return this.pending.length;
  }

  get broken(): Error | null {
    return this.failure;
  }

  /** The oldest `count` batches are durable now; their writers hear of it, in order. */
  flush(count = this.pending.length): void {
    if (this.failure !== null) return; // the writers heard of the failure already
    const done = this.pending.splice(0, count);
    for (const b of done) void this.durable.write(b.ops);
    for (const b of done) b.done();
  }

  /** The disk fails: every batch not yet durable fails (as far as its writer knows; a
   *  power loss may still keep a prefix of them, see `crash`). */
  break(err: Error): void {
    this.failure = err;
    for (const b of this.pending) b.done(err);
  }

  /** Power loss: the first `keep` unflushed batches reached the disk, the rest did not. */
  crash(keep: number): void {
    for (const b of this.pending.slice(0, keep)) void this.durable.write(b.ops);
    this.pending = [];
  }
}
