/**
 * What the HTTP API needs from a node. The HTTP layer (http.ts) parses, validates and maps
 * errors to the contract; the node (src/node.ts) does consensus and state.
 */
import type { ApplyResult, ArchiveSettings, BlockCmd, KvOp, LeaseOp, ProviderCmd, CollectionCmd, RequestId } from '../state/command.js';
import type { BlockReader, KeyValue, LeaseRecord, MemberRecord, ProviderReader } from '../state/state-store.js';
import type { StateTables } from '../state/staged.js';
import type { StateSnapshot } from '../state/snapshot.js';
import type { WatchSource } from './watch.js';
import type { BuildInfo } from '../version.js';

export type Consistency = 'linearizable' | 'stale';

/** What a keep-alive answers: the lease's TTL, or null when it is unknown or expired, and
 *  the index of the command that renewed it. */
export interface KeptAlive {
  readonly index: number;
  readonly ttlMs: number | null;
}

export interface ClusterView {
  readonly clusterId: string;
  readonly self: { readonly peerId: string; readonly http: string; readonly p2p: readonly string[] };
  readonly leader: string | null;
  readonly commitIndex: number;
  readonly appliedIndex: number;
  readonly members: readonly MemberRecord[];
  /** The cluster's first configuration: what a joining node starts its log from. */
  readonly genesis: { readonly voters: readonly string[]; readonly learners: readonly string[] };
  /** The hash chain value at `appliedIndex`, hex: equal on every replica at equal indexes. */
  readonly chain: string;
  /** The cluster's archive settings (store URL, segment size, CES parameters), once set. */
  readonly archive: ArchiveSettings | null;
  /** The cluster's apply level as of `appliedIndex`, and this node's build (src/version.ts). */
  readonly applyLevel: number;
  readonly build: BuildInfo;
}

/** Why a request could not be served here. */
export class ServiceError extends Error {
  constructor(
    /** unavailable: never handed to consensus (503, safe to retry); outcome_unknown: handed
     *  over, fate unknown (504); not_leader: forward to `leaderHttp` (null: no leader known). */
    readonly code: 'unavailable' | 'outcome_unknown' | 'not_leader',
    message: string,
    readonly leaderHttp: string | null = null,
    readonly retryAfterS = 1,
  ) {
    super(message);
  }
}

/** A membership change the leader refuses: it names no member (`not_found`, 404), it would
 *  leave the cluster weaker than the rules allow (`conflict`, 409), or it adds back a peer
 *  the cluster removed (`removed`, 410); or an apply level a member's build does not know
 *  (`conflict`). Nothing was proposed. */
export class MembershipError extends Error {
  constructor(
    readonly code: 'not_found' | 'conflict' | 'removed',
    message: string,
  ) {
    super(message);
  }
}

export interface KvService {
  /** Proposes one write on the leader and resolves with its answer once applied here. */
  write(op: KvOp | LeaseOp | BlockCmd | ProviderCmd | CollectionCmd, requestId?: RequestId): Promise<ApplyResult>;
  /** Blocks and provider records as of the applied index (API contract, "Blocks",
   *  "Providers"); absent: the node has none. */
  blocks?(): BlockReader;
  providers?(): ProviderReader;
  /** The state's tables, for the collections' reads (state/records.ts); absent: none. */
  collections?(): StateTables;
  /** Renews leases with this node's next keep-alive command (src/leases.ts): one answer
   *  per id, in order. */
  keepAlive(ids: readonly number[]): Promise<KeptAlive[]>;
  /** A live lease as of the applied index, and the leases after `after` (by id). */
  lease(id: number): LeaseRecord | undefined;
  leases(after: number, limit: number): { items: LeaseRecord[]; more: boolean };
  /** Log time as of the applied index (what a lease's remaining time is counted in). */
  logTime(): number;
  /**
   * Resolves with the applied index a read may be served at: for `linearizable`, once this
   * node has applied up to a read index confirmed by the leader; for `stale`, at once.
   */
  readBarrier(consistency: Consistency): Promise<number>;
  get(key: Uint8Array): KeyValue | undefined;
  range(prefix: Uint8Array, after: Uint8Array | null, limit: number, bytesMax: number): { items: KeyValue[]; more: boolean };
  cluster(): ClusterView;
  addMember(member: { peerId: string; http: string; p2p: readonly string[]; role: 'voter' | 'learner' }): Promise<{ index: number }>;
  removeMember(peerId: string): Promise<{ index: number }>;
  /** Raises the cluster's apply level once every member's build knows it (POST
   *  /v1/cluster/level); `index` is the command's, or the applied index when it was there. */
  raiseLevel?(level: number): Promise<{ index: number; level: number }>;
  /** Hands leadership to voter `peerId`; resolves once it leads (POST /v1/cluster/leader). */
  transferLeader?(peerId: string): Promise<{ leader: string }>;
  /**
   * GET /readyz: null when ready (a leader heard from recently, applied up to its commit
   * index less a small lag, commits moving while writes wait, writes admitted), else why not.
   */
  notReady(): string | null;
  /** More for /readyz's body, ready or not: the archive's state (`{archive: {state, reason,
   *  archivedThroughIndex, behindIndexes, behind}}`). */
  readyInfo?(): Record<string, unknown>;
  /** Prometheus text exposition. */
  metrics(): Promise<string>;
  /** What watch streams read: the applied index and the effects journal (net/watch.ts). */
  watchSource(): WatchSource;
  /** The applied state as of now, from one read transaction (close it if unread). Callers
   *  take a linearizable read barrier first, so it holds every write acknowledged before. */
  snapshot(): StateSnapshot;
}
