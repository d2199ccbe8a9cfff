/**
 * The obligations of the durable log (acceptor state). Production: `LmdbLogStore`
 * (lmdb.ts). Tests of other modules may use `MemoryLogStore`.
 */
import type { Ballot, LogPoint, PersistOp, StoredSlot } from '../consensus/index.js';

export interface LoadedLog {
  readonly promised: Ballot;
  readonly slots: readonly StoredSlot[];
  readonly compacted: LogPoint | null;
  readonly commit: number;
}

export interface LogStore {
  /** Everything durable, to restart the replica from. */
  load(): LoadedLog;
  /**
   * Writes one batch atomically. The promise resolves only once the batch is on disk
   * (flushed, not merely committed). Batches become durable in the order they were given;
   * all batches handed over in one event-loop turn share one commit and one flush.
   */
  write(ops: readonly PersistOp[]): Promise<void>;
  /**
   * Resolves once every batch handed over so far is committed, if not yet flushed. The node
   * applies chosen entries only after this, so the state machine is never ahead of the log
   * it was applied from (the log is what peers catch up from).
   */
  committed(): Promise<void>;
  /** Chosen slots, for a peer's catch-up or the archive, in slot order. */
  readSlots(from: number, to: number, chosenThrough?: number): StoredSlot[];
  close(): Promise<void>;
}
