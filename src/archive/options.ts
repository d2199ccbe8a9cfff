/**
 * The archive's settings, as `pangea serve` hands them to the server. Cluster-wide ones
 * (`ArchiveSettings`, src/state/command.ts) are recorded in the log at bootstrap and changed
 * only by a log entry, so every node agrees on them; the rest are each node's own.
 */
// Where segments end is a rule every replica computes alike: it lives with the state
// machine (src/state/segments.ts), once.
export { SEGMENT_ENTRIES_DEFAULT } from '../state/segments.js';
export const SEGMENT_ENTRIES_MAX = 1_000_000;
export const SNAPSHOT_SEGMENTS_DEFAULT = 4;

/** One node's archive, prune, quota and blocksync settings. */
export interface NodeArchiveOptions {
  /** Bootstrap only: the cluster's archive URL; default `file://<data-dir>/archive`. */
  readonly url?: string | undefined;
  /** Bootstrap only: see ArchiveSettings (src/state/command.ts). */
  readonly segmentEntries?: number | undefined;
  readonly snapshotSegments?: number | undefined;
  /** File holding the CES master key (`pangea ces keygen`); default `<data-dir>/archive.key`,
   *  generated on a node that bootstraps a cluster. */
  readonly keyFile?: string | undefined;
  /** A segment is archived only once the commit index is this many indexes past its end. */
  readonly delayEntries: number;
  /** ... and once this long has passed since this node saw it committed. */
  readonly delayMs: number;
  /** How often the leader looks for segments to archive; 0 turns archiving off on this node. */
  readonly intervalMs: number;
  /** How often the node prunes its verified hot log; 0: never (use `pangea prune-hot`). */
  readonly pruneIntervalMs: number;
  /** Indexes the hot log keeps whatever the archive holds. */
  readonly hotRetention: number;
  /** Hot-log size (bytes) at which writes are refused with 503; 0: no quota. */
  readonly hotQuotaBytes: number;
  /** Trusted chain values: `index -> 32-byte hash`. */
  readonly checkpoints: ReadonlyMap<number, Uint8Array>;
  /** Bootstrap a new cluster from this archive (state of its latest index, or `restoreIndex`). */
  readonly restoreFrom?: string | undefined;
  readonly restoreIndex?: number | undefined;
  /** Blocksync: cold reads served at once, queued cold requests, request timeout. */
  readonly coldReadsMax: number;
  readonly coldQueueMax: number;
  readonly blocksyncTimeoutMs: number;
}

export const NODE_ARCHIVE_DEFAULTS: NodeArchiveOptions = {
  delayEntries: 1_000,
  delayMs: 10_000,
  intervalMs: 5_000,
  pruneIntervalMs: 60_000,
  hotRetention: 100_000,
  hotQuotaBytes: 0,
  checkpoints: new Map(),
  coldReadsMax: 4,
  coldQueueMax: 64,
  blocksyncTimeoutMs: 10_000,
};
