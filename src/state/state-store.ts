/**
 * The obligations of the key/value state machine. Apply must be deterministic: the same
 * entries give the same answers and the same state on every replica.
 */
import type { StateTables } from './staged.js';
import type { Entry, LogPoint } from '../consensus/index.js';
import type { ApplyResult, ArchiveSettings } from './command.js';
import type { Effects } from './effects.js';
import type { SegmentBound } from './segments.js';
import type { BlockRevision, BlockState } from './block-apply.js';
import type { ProviderRecord } from './providers.js';
import type { StateSnapshot } from './snapshot.js';

export interface KeyValue {
  readonly key: Uint8Array;
  readonly value: Uint8Array;
  /** The index of the command that last wrote the key. */
  readonly revision: number;
  /** The lease the key is attached to, if any. */
  readonly lease?: number;
}

/** A lease as the state machine holds it (kv.ts). Times are log time. */
export interface LeaseRecord {
  readonly id: number;
  readonly ttlMs: number;
  readonly expiresAt: number;
  /** Keys attached. */
  readonly keys: number;
}

/** A member as the state machine records it (from the membership change's meta). */
export interface MemberRecord {
  readonly peerId: string;
  readonly role: 'voter' | 'learner';
  readonly http: string;
  readonly p2p: readonly string[];
}

/** A configuration the node applied: the slot it governs from, and its voters. */
export interface ConfigRecord {
  readonly fromSlot: number;
  readonly voters: readonly string[];
}

/** Blocks as of the applied index (block-apply.ts): the state, any index's from the
 *  history's floor on, and the history. */
export interface BlockReader {
  /** Undefined: never made; a tombstone has `body` null. */
  block(id: string): BlockState | undefined;
  /** The bytes of its body as stored now (0: absent), read without decoding it. */
  blockBytes(id: string): number;
  blockAt(id: string, at: number): BlockState | 'unavailable';
  /** `complete`: false when `after` is below the history's floor (revisions there are not
   *  listed). */
  blockRevisions(id: string, after: number, limit: number): { items: BlockRevision[]; more: boolean; complete: boolean };
  /** The revisions of `id` in (`expected`, `current`]: a conflict's missing transforms. */
  blockMissing(id: string, expected: number, current: number): { items: BlockRevision[]; more: boolean };
}

/** Provider records as of the applied index (providers.ts). */
export interface ProviderReader {
  providers(key: Uint8Array): ProviderRecord[];
  /** What `provider` provides, by key after `after`, at most `limit`. */
  provided(provider: string, after: Uint8Array | null, limit: number): { items: ProviderRecord[]; more: boolean };
}

export interface StateStore extends BlockReader, ProviderReader {
  /** Every read of the state tables (staged.ts), for the collections' reads (records.ts). */
  readonly tables: StateTables;
  /** The last applied point (configurations included) and the hash chain value there. */
  applied(): { point: LogPoint; chain: Uint8Array };
  /**
   * Applies entries in order, sealed together with the new applied point and chain value
   * (committed whole or not at all, staged.ts), so a crash applies every command exactly
   * once. Returns one result per command, in index order (membership changes answer
   * `config`).
   *
   * Entries that end an archive segment (segments.ts) end a sealed unit too: `onSegment` is
   * called right after the state at the boundary is sealed and before the next entry is
   * applied, so a snapshot opened in it holds exactly the state at the boundary.
   */
  apply(entries: readonly Entry[], onSegment?: (bound: SegmentBound) => void): ApplyResult[];
  /** The applied point as committed to LMDB (staged.ts): `applied()` may be ahead. */
  committedPoint(): LogPoint;
  /** The effects journal (effects.ts): its floor, and the effects of indexes in
   *  (`after`, `through`], oldest first, at most `limit`. */
  journalFloor(): number;
  effects(after: number, through: number, limit: number): Effects[];
  /** Hands applies held back to storage now (staged.ts). */
  handOver(): void;
  /** Log time as of the applied point (kv.ts): what a proposer's command times build on. */
  logTime(): number;
  /** The cluster's archive settings, once the log has set them. */
  archiveSettings(): ArchiveSettings | null;
  /** The cluster's apply level as of the applied index (command.ts). */
  applyLevel(): number;
  /** The state as of now, read from one read transaction (snapshot.ts); close it if unread. */
  snapshot(): StateSnapshot;
  /** Finished segments whose last slot is after `afterSlot`, in order, at most `limit`. */
  segments(afterSlot: number, limit?: number): SegmentBound[];
  get(key: Uint8Array): KeyValue | undefined;
  /** A lease that is still live at the applied log time (expired ones, not yet reaped, are
   *  not returned), and leases after `after` (by id), at most `limit`. */
  lease(id: number): LeaseRecord | undefined;
  leases(after: number, limit: number): { items: LeaseRecord[]; more: boolean };
  /** Leases held, expired ones not yet reaped included (the leader ticks while any are). */
  leaseCount(): number;
  /** Keys with `prefix`, after `after` (exclusive), at most `limit` items and `bytesMax`
   *  bytes of values; `more` is true only when further keys match. */
  range(prefix: Uint8Array, after: Uint8Array | null, limit: number, bytesMax: number): { items: KeyValue[]; more: boolean };
  /** Members with their addresses, as of the applied point. */
  members(): MemberRecord[];
  /** Whether `peerId` was removed from the cluster (and not added back since). */
  wasRemoved(peerId: string): boolean;
  /** Every peer that was ever a voter (the cluster's member keys, past ones included). */
  votersEver(): string[];
  /** The configurations this node applied that govern from after `slot` on, oldest first,
   *  at most `limit` (the voters of each). */
  configsAfter(slot: number, limit: number): ConfigRecord[];
  /** The chain value after the command at `index`, if still known. */
  chainAt(index: number): Uint8Array | undefined;
  /** The slot the command at `index` was chosen at, if its chain value is still known. */
  slotAt(index: number): number | undefined;
  /** Forgets chain values below `index` (the hot log was pruned through it). */
  pruneChain(index: number): void;
  close(): Promise<void>;
}
