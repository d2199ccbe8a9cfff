/**
 * One Multi-Paxos replica: proposer, acceptor and learner in a single pure state machine.
 *
 * Inputs: `step(envelope)`, `tick()`, `propose(command)`, `read(id)`, `persisted(seq)`,
 * `compact(point)`, `learnChosen(values)`. Output: `ready()`, a batch of obligations
 * (see `Ready`). Nothing here performs I/O, reads a clock or draws randomness: time is
 * ticks, and randomness is the `random` function the driver passes in.
 *
 * The protocol (Lamport's Paxos Made Simple, section 3, with a stable leader):
 * - A would-be leader first asks for pre-votes, which change no state and are refused while
 *   a live leader is heard from, so a partitioned or removed replica cannot depose it.
 * - Phase 1 runs once for every slot after the candidate's commit slot. Promises carry each
 *   acceptor's commit and compaction points, and a promise speaks only for the slots after
 *   them (the acceptor may have compacted the rest): a candidate leads once a quorum of
 *   promises speaks for the slot after its commit, and otherwise catches up to the furthest
 *   promiser first, so it never mistakes a compacted slot for an empty one. For each
 *   open slot the leader re-proposes the value accepted under the highest ballot among the
 *   promisers that vote in that slot's configuration, and fills holes with no-ops.
 * - Phase 2 is pipelined (at most `alpha` slots past the commit slot) and batched (many
 *   commands a slot). A slot is chosen when a quorum of its configuration's voters has
 *   durably accepted it; the leader counts itself only once its own write is durable.
 * - Followers learn the commit slot from accepts, commits and heartbeats, and treat a slot
 *   as chosen only if they accepted it under the very ballot that declares it chosen;
 *   otherwise they fetch the chosen value (catch-up).
 * - Reads: a read index is handed out only after the leader has committed an entry under
 *   its own ballot, and after a heartbeat round that started after the read arrived has been
 *   answered by a quorum, so the leader knows it was still the leader when the read came.
 */
import { BALLOT_NONE, ballotEquals, compareBallots, nextBallot } from './ballot.js';
import {
  applyChange,
  configAt,
  epochsAfter,
  hasQuorum,
  isMember,
  isVoter,
  knownNodes,
  latestConfig,
  trimEpochs,
} from './config.js';
import { validateEnvelope } from './validate.js';
import type {
  Ballot,
  Batch,
  Command,
  Config,
  ConfigChange,
  ConfigEpoch,
  Entry,
  Envelope,
  LogPoint,
  Message,
  NodeId,
  Persisted,
  PersistOp,
  Ready,
  ReadState,
  SlotValue,
  StoredSlot,
} from './types.js';

export interface ReplicaOptions {
  readonly id: NodeId;
  readonly cluster: string;
  /** Uniform in [0, 1); the only source of randomness (election timeouts). */
  readonly random: () => number;
  /** Pipeline window and configuration delay, in slots. */
  readonly alpha?: number;
  /** A follower campaigns after this many to twice this many ticks without a leader. */
  readonly electionTicks?: number;
  readonly heartbeatTicks?: number;
  readonly batchCommandsMax?: number;
  readonly batchBytesMax?: number;
  readonly proposalQueueMax?: number;
  /** Bytes (`commandBytes`) the proposal queue may hold; past it `propose` answers busy. */
  readonly proposalQueueBytesMax?: number;
  /** Bytes of accepted-but-unchosen slots a leader keeps in flight (beside the `alpha` slots). */
  readonly windowBytesMax?: number;
  /** Bytes of values one accept or catch-up message carries (one value always fits). */
  readonly messageBytesMax?: number;
  /**
   * Memory for chosen values (at or below the commit slot) kept to answer catch-up
   * requests, each command counted as its bytes plus RETAINED_COMMAND_OVERHEAD_BYTES. Older ones are dropped from memory, never from the durable log: a peer that
   * asks for them is told to catch up another way (`Ready.snapshotNeeded`; the node's block
   * sync reads them from a peer's durable log). Memory stays bounded however long the log.
   */
  readonly retainBytesMax?: number;
  readonly catchupSlotsMax?: number;
  /**
   * This replica was a member of the cluster before this start (production: its data dir is
   * not still joining). A member removed while it was away may restart with configurations
   * trimmed past its removal; this is how it knows it must ask to leave (`departed`).
   */
  readonly wasMember?: boolean;
}

export const DEFAULTS = {
  alpha: 32,
  electionTicks: 10,
  heartbeatTicks: 2,
  /** Commands in one slot: more amortises a round trip, fewer bounds one message. */
  batchCommandsMax: 512,
  batchBytesMax: 1 << 20,
  proposalQueueMax: 16_384,
  proposalQueueBytesMax: 64 << 20,
  windowBytesMax: 8 << 20,
  messageBytesMax: 4 << 20,
  retainBytesMax: 16 << 20,
  catchupSlotsMax: 64,
} as const;

export type ProposeResult =
  | { readonly ok: true }
  | { readonly ok: false; readonly reason: 'not_leader'; readonly leader: NodeId | null }
  | { readonly ok: false; readonly reason: 'busy' | 'config_pending' | 'transferring' };

export type TransferResult = { readonly ok: true } | { readonly ok: false; readonly reason: string };

export type Role = 'follower' | 'precandidate' | 'candidate' | 'leader';

/** Counters a driver exports as metrics. */
export interface ReplicaStats {
  dropped: Record<string, number>;
  elections: number;
  leaderTerms: number;
  catchupRequests: number;
  /** Terms given up because promisers ahead of the leader's commit left a slot without a
   *  quorum that speaks for it (see fillWindow). */
  leaderBehindPromiser: number;
}

interface Inflight {
  readonly batch: Batch;
  readonly acks: Set<NodeId>;
  selfDurable: boolean;
  sentTick: number;
  /** Retransmissions so far: the first waits a heartbeat, later ones two, so a follower slow
   *  to persist big values gets half the copies (it does not write them again either). Longer
   *  backoffs were tried: they made the simulator's runs calmer and hid a defective replica
   *  (ignoreHighestBallot) from the seeds CI runs. */
  resends: number;
}

export interface PromiseInfo {
  /** The promiser's commit or compaction point, whichever is later: the promise reports
   *  accepted values only after it, so it counts toward the quorum of later slots only. */
  readonly commit: number;
  readonly accepted: Map<number, StoredSlot>;
}

interface PendingRead {
  readonly id: number;
  /** Where the read must be answered: this replica, or a follower that asked. */
  readonly origin: NodeId;
  index: number;
  seq: number;
  readonly tick: number;
}

const emptyPoint = (config: Config): LogPoint => ({ slot: 0, index: 0, epochs: [{ fromSlot: 1, config }] });

/** The durable state of a brand-new member of a new cluster. */
export function bootstrapState(config: Config): Persisted {
  const point = emptyPoint(config);
  return { promised: BALLOT_NONE, slots: [], base: point, compacted: point, commit: 0 };
}

/** The bytes a command counts for in batch and range bounds (a membership change: 64). */
export function commandBytes(cmd: Command): number {
  return cmd.kind === 'app' ? cmd.data.byteLength : 64;
}

/** Two batches hold the same commands, byte for byte. */
function sameBatch(a: Batch, b: Batch): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!;
    const y = b[i]!;
    if (x.kind === 'app' && y.kind === 'app') {
      if (!sameBytes(x.data, y.data)) return false;
    } else if (x.kind === 'config' && y.kind === 'config') {
      if (x.change.op !== y.change.op || x.change.node !== y.change.node) return false;
      if ((x.change.meta === undefined) !== (y.change.meta === undefined)) return false;
      if (x.change.meta !== undefined && !sameBytes(x.change.meta, y.change.meta!)) return false;
    } else return false;
  }
  return true;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  // memcmp, not a loop: a JavaScript loop over 1 MB values took 4 of every 5 s of a
  // follower's CPU under retransmissions (profiled), which slowed its acks, which brought
  // more retransmissions.
  return a.byteLength === b.byteLength && Buffer.compare(a, b) === 0;
}

/** `commandBytes` over a batch. */
export function batchBytes(batch: Batch): number {
  let n = 0;
  for (const c of batch) n += commandBytes(c);
  return n;
}

/**
 * What a command held in memory costs beyond its bytes: the objects around them. Measured
 * in a heap snapshot of a leader after 70,000 puts of 100-byte values (issue 12): each
 * retained command of about 200 bytes held about 760 bytes (a Buffer, its ArrayBuffer and
 * backing store, a DataView, the command object), so the bound on chosen values in memory
 * counted a third of what they took.
 */
export const RETAINED_COMMAND_OVERHEAD_BYTES = 512;

/** Memory a batch held in the log takes, as `retainBytesMax` counts it. */
export function retainedMemory(batch: Batch): number {
  return batchBytes(batch) + RETAINED_COMMAND_OVERHEAD_BYTES * batch.length;
}

export class Replica {
  readonly id: NodeId;
  readonly cluster: string;
  private readonly random: () => number;
  private readonly alpha: number;
  private readonly electionTicks: number;
  private readonly heartbeatTicks: number;
  private readonly batchCommandsMax: number;
  private readonly batchBytesMax: number;
  private readonly proposalQueueMax: number;
  private readonly proposalQueueBytesMax: number;
  private readonly windowBytesMax: number;
  private readonly messageBytesMax: number;
  private readonly retainBytesMax: number;
  private readonly catchupSlotsMax: number;

  readonly stats: ReplicaStats = { dropped: {}, elections: 0, leaderTerms: 0, catchupRequests: 0, leaderBehindPromiser: 0 };

  // Acceptor state (durable).
  private promised: Ballot;
  private readonly log = new Map<number, StoredSlot>();
  private compacted: LogPoint;
  /** Chosen values in memory run from this slot to the commit slot, `retainedBytes` in all
   *  (see `retainBytesMax`); below it `log` holds nothing. */
  private retainedFrom = 1;
  private retainedBytes = 0;

  // Learner state.
  private commitSlot: number;
  private commitIndex: number;
  private epochs: readonly ConfigEpoch[];
  private known: Set<NodeId>;

  // Role state.
  private role: Role = 'follower';
  private leader: NodeId | null = null;
  private ticks = 0;
  private electionElapsed = 0;
  private electionTimeout = 0;
  private maxRoundSeen = 0;

  // Candidate and leader state.
  private ballot: Ballot = BALLOT_NONE;
  private readonly prevotes = new Set<NodeId>();
  private readonly promises = new Map<NodeId, PromiseInfo>();
  private prepareSentTick = -Infinity;
  private nextSlot = 0;
  private firstOwnSlot = 0;
  private recoverThrough = 0;
  private readonly inflight = new Map<number, Inflight>();
  private queue: Command[] = [];
  private queueBytes = 0;
  /** Commands dropped from the queue when this node stopped leading: in no slot, ever. */
  private dropped: Command[] = [];
  private configInFlight = false;
  private heartbeatElapsed = 0;
  private checkQuorumElapsed = 0;
  /** Leadership handed to this voter: no new proposals meanwhile (transferLeadership). */
  private transferTo: NodeId | null = null;
  private transferTick = 0;
  private transferSent = false;
  /** This candidacy was asked for by the leader of this ballot (timeout_now): its prepares
   *  say so. */
  private transferCampaign: Ballot | null = null;
  /** Per peer, while leading: the highest slot it acknowledged under this ballot. */
  private readonly ackedSlot = new Map<NodeId, number>();
  private readonly recentlyActive = new Set<NodeId>();
  /** While leading: the tick each peer last answered (accepted, heartbeat ack). */
  private readonly lastHeard = new Map<NodeId, number>();
  private heartbeatSeq = 0;
  private heartbeatRequested = false;
  private readonly ackedSeq = new Map<NodeId, number>();
  private readsWaitingForOwnCommit: PendingRead[] = [];
  private pendingReads: PendingRead[] = [];
  /** Reads asked of a leader: id -> when, and of whom (only that node's reply counts). */
  private readonly remoteReads = new Map<number, { tick: number; leader: NodeId }>();
  private commitDirty = false;
  private commitMarker = 0;
  private leaderCommitSeen = 0;

  // Catch-up.
  private catchupFrom: NodeId | null = null;
  private catchupTick = -Infinity;
  /** Whom this replica asked for catch-up, and when: their answers count for a while after
   *  the request is given up on (a slow answer still helps; an unasked one never counts). */
  private readonly catchupAsked = new Map<NodeId, number>();
  private snapshotNeeded: { from: NodeId; point: LogPoint } | null = null;

  // Departure: this replica is a member of an older configuration and not of the newest.
  /** The newest configuration, which leaves this replica out, while it has one. */
  private leaving: ConfigEpoch | null = null;
  /** Some configuration this replica held named it (since it started). */
  private wasMember = false;
  /** Voters of `leaving` that said their commit is at or past `leaving.fromSlot - 1`. */
  private readonly leaveConfirmed = new Set<NodeId>();
  private leaveQueryTick = -Infinity;
  private departedFrom: ConfigEpoch | null = null;

  // Outputs accumulated for the next Ready.
  private persistSeq = 0;
  private readonly persistOps: PersistOp[] = [];
  private readonly afterPersist: Envelope[] = [];
  private outbox: Envelope[] = [];
  private readonly acceptOut = new Map<NodeId, SlotValue[]>();
  private commits: Entry[] = [];
  private readStates: ReadState[] = [];
  private selfAcceptSlots: number[] = [];
  private selfPromise = false;
  /** Persist batches handed out and not yet durable: the slots this replica accepted as
   *  leader in each, under which ballot, and the promise it made itself. */
  private readonly unackedBatches: { seq: number; slots: number[]; ballot: Ballot; promise: Ballot | null }[] = [];

  constructor(opts: ReplicaOptions, state: Persisted) {
    this.id = opts.id;
    this.cluster = opts.cluster;
    this.random = opts.random;
    this.alpha = opts.alpha ?? DEFAULTS.alpha;
    this.electionTicks = opts.electionTicks ?? DEFAULTS.electionTicks;
    this.heartbeatTicks = opts.heartbeatTicks ?? DEFAULTS.heartbeatTicks;
    this.batchCommandsMax = opts.batchCommandsMax ?? DEFAULTS.batchCommandsMax;
    this.batchBytesMax = opts.batchBytesMax ?? DEFAULTS.batchBytesMax;
    this.proposalQueueMax = opts.proposalQueueMax ?? DEFAULTS.proposalQueueMax;
    this.proposalQueueBytesMax = opts.proposalQueueBytesMax ?? DEFAULTS.proposalQueueBytesMax;
    this.windowBytesMax = opts.windowBytesMax ?? DEFAULTS.windowBytesMax;
    this.messageBytesMax = opts.messageBytesMax ?? DEFAULTS.messageBytesMax;
    this.retainBytesMax = opts.retainBytesMax ?? DEFAULTS.retainBytesMax;
    this.catchupSlotsMax = opts.catchupSlotsMax ?? DEFAULTS.catchupSlotsMax;
    assert(this.alpha >= 1 && this.heartbeatTicks >= 1 && this.electionTicks > this.heartbeatTicks, 'bad timing options');

    this.promised = state.promised;
    this.maxRoundSeen = state.promised.round;
    this.compacted = state.compacted;
    const base = state.base.slot >= state.compacted.slot ? state.base : state.compacted;
    this.commitSlot = base.slot;
    this.commitIndex = base.index;
    this.epochs = base.epochs;
    this.known = knownNodes(this.epochs);
    this.wasMember = opts.wasMember === true;
    this.noteMembership();
    this.commitMarker = state.commit;
    // The stored commit marker may lag the applied point (the driver defers it): a slot up to
    // either holds its chosen value (apply waits for the slots' writes; nothing overwrites a
    // chosen slot).
    const chosenThrough = Math.max(state.commit, base.slot);
    for (const s of state.slots) {
      if (s.slot <= this.compacted.slot) continue;
      this.log.set(s.slot, s.slot <= chosenThrough && !s.chosen ? { ...s, chosen: true } : s);
    }
    this.resetElectionTimeout();
    this.recountRetained();
    this.advanceCommit();
  }

  // ------------------------------------------------------------------------------------
  // Read-only views.

  get currentRole(): Role {
    return this.role;
  }
  get currentLeader(): NodeId | null {
    return this.role === 'leader' ? this.id : this.leader;
  }
  get currentBallot(): Ballot {
    return this.role === 'leader' ? this.ballot : this.promised;
  }
  get commit(): { slot: number; index: number } {
    return { slot: this.commitSlot, index: this.commitIndex };
  }
  /** The commit slot the current leader last announced (this replica's own, if it leads). */
  get leaderCommit(): number {
    return this.role === 'leader' ? this.commitSlot : Math.max(this.leaderCommitSeen, this.commitSlot);
  }
  /** Ticks since the current leader was last heard from (0 on the leader itself). */
  get ticksSinceLeader(): number {
    return this.role === 'leader' ? 0 : this.leader === null ? Infinity : this.electionElapsed;
  }
  /** The leader this replica follows and heard from within an election timeout (itself when
   *  it leads), while it is a voter of its own newest configuration; else null. A pre-candidate
   *  keeps the leader it last followed but follows no one. What it tells a lagging peer asking
   *  whom the voters follow (block sync). */
  get liveLeader(): NodeId | null {
    if (!isVoter(this.latestConfig, this.id)) return null;
    if (this.role === 'leader') return this.id;
    return this.role === 'follower' && this.leader !== null && this.electionElapsed <= this.electionTicks ? this.leader : null;
  }
  get compactedPoint(): LogPoint {
    return this.compacted;
  }
  /** The configuration that governs the next slot. */
  get config(): Config {
    return configAt(this.epochs, this.commitSlot + 1);
  }
  /** While leading: itself and the peers that answered it within an election timeout (the
   *  live part of the cluster, for membership changes that must keep a live quorum); else
   *  empty. */
  get livePeers(): ReadonlySet<NodeId> {
    if (this.role !== 'leader') return new Set();
    const live = new Set<NodeId>([this.id]);
    for (const [id, tick] of this.lastHeard) if (this.ticks - tick <= this.electionTicks) live.add(id);
    return live;
  }

  /**
   * Set, for good, once this replica may stop: it is left out of the newest configuration
   * (governing from `fromSlot`), and every voter of that configuration has durably learned
   * every slot before `fromSlot` as chosen (its commit is at least `fromSlot - 1`).
   *
   * Why it must wait: slots before `fromSlot` belong to the older configuration, whose
   * quorums may need this replica (old {a,b,c,d} removing d: 3 of 4, so a, b and c all). A
   * voter whose commit is behind `fromSlot - 1` must learn those slots from the older
   * configuration: from the leader's memory while it has them, else by block sync, which
   * trusts a range only on the word of a majority of the voters the laggard knows (or of the
   * leader it follows, which it cannot follow before it knows it). Waiting for a quorum of
   * new voters only, as this once did, let a new voter that was down at the time (its
   * configuration still {a,b,c,d}, d gone) find only 2 of 4 to vouch, for ever, once the
   * leader had compacted those slots (simulator seed 34223 --blocks, helper-54). A new voter
   * that never comes back keeps this replica running, idle: it only delays its exit.
   * Liveness only: safety never depends on who is running.
   */
  get departed(): { readonly fromSlot: number } | null {
    return this.departedFrom === null ? null : { fromSlot: this.departedFrom.fromSlot };
  }

  /** The newest configuration, including a change not yet in effect. */
  get latestConfig(): Config {
    return latestConfig(this.epochs);
  }
  get configEpochs(): readonly ConfigEpoch[] {
    return this.epochs;
  }
  /** The newest configuration and the slot it governs from. */
  get latestEpoch(): ConfigEpoch {
    return this.epochs[this.epochs.length - 1]!;
  }
  /** The commands dropped unproposed (never in any slot) since the last call: a leader
   *  that stepped down had them queued. Their proposers may tell clients they were not
   *  taken, rather than wait for a timeout. */
  takeDropped(): Command[] {
    const out = this.dropped;
    this.dropped = [];
    return out;
  }

  get queuedCommands(): number {
    return this.queue.length;
  }
  /** Memory of chosen values (at or below the commit slot) held, as `retainBytesMax`
   *  counts it: at most that between inputs. O(slots held); for checks, not hot paths. */
  chosenBytesInMemory(): number {
    let n = 0;
    for (const s of this.log.values()) if (s.slot <= this.commitSlot) n += retainedMemory(s.batch);
    return n;
  }

  /** The chosen value at `slot`, if this replica knows it. */
  chosenAt(slot: number): Batch | undefined {
    const s = this.log.get(slot);
    return s?.chosen ? s.batch : undefined;
  }

  // ------------------------------------------------------------------------------------
  // Inputs.

  /** One unit of logical time. */
  tick(): void {
    this.ticks++;
    this.expireRemoteReads();
    this.askToLeave();
    if (this.role === 'leader') {
      this.tickLeader();
      return;
    }
    this.electionElapsed++;
    // No leader heard for an election timeout: ask the voters how far the log is chosen, and
    // catch up from one that is ahead. A member removed while it was away hears from no
    // leader (it is a stranger to them now): this is how it learns of its removal and leaves.
    if (this.electionElapsed % this.electionTicks === 0) {
      for (const v of this.latestConfig.voters) if (v !== this.id) this.send(v, { type: 'commit_query' });
    }
    if (this.catchupFrom !== null && this.ticks - this.catchupTick >= this.electionTicks) {
      this.catchupFrom = null; // the request or its answer was lost: ask again when told of a commit
      // A candidate hears of no commit: it asks again now (promises are not sent twice).
      if (this.role === 'candidate') this.maybeLead();
    }
    if (this.role === 'candidate' && this.ticks - this.prepareSentTick >= this.heartbeatTicks * 2) {
      this.sendPrepares();
    }
    if (this.electionElapsed >= this.electionTimeout && isVoter(this.config, this.id)) {
      this.startPreVote();
    } else if (this.role === 'follower' && this.soleVoter()) {
      // No one else can lead or needs to be heard from: campaign at once (a one-node
      // cluster is ready a tick after it starts, not an election timeout later).
      this.startPreVote();
    }
  }

  /** This replica is the only voter of the current and every pending configuration. */
  private soleVoter(): boolean {
    const only = (c: Config): boolean => c.voters.length === 1 && c.voters[0] === this.id;
    return only(this.config) && only(latestConfig(this.epochs));
  }

  /** Hands a command to consensus. A command accepted here is proposed unless this replica
   *  stops leading first; its fate is then known only through the committed log. */
  propose(command: Command): ProposeResult {
    if (this.role !== 'leader') return { ok: false, reason: 'not_leader', leader: this.leader };
    if (this.transferTo !== null) return { ok: false, reason: 'transferring' };
    const size = commandBytes(command);
    // Bounded in commands and in bytes; an empty queue takes any one command, so a value at
    // the size limit always makes progress.
    if (this.queue.length >= this.proposalQueueMax) return { ok: false, reason: 'busy' };
    if (this.queue.length > 0 && this.queueBytes + size > this.proposalQueueBytesMax) return { ok: false, reason: 'busy' };
    if (command.kind === 'config') {
      // One change at a time, and only once this leader has committed under its own ballot.
      const pending = this.configInFlight || this.epochs[this.epochs.length - 1]!.fromSlot > this.commitSlot + 1;
      if (pending || !this.ownCommitDone()) return { ok: false, reason: 'config_pending' };
      this.configInFlight = true;
    }
    this.queue.push(command);
    this.queueBytes += size;
    return { ok: true };
  }

  /**
   * Hands leadership to voter `to` (an operator's `leader transfer`, etcd's MsgTimeoutNow):
   * this leader stops taking proposals, commits what it has in flight and queued, then tells
   * `to` to campaign at once; acceptors promise that candidate's ballot despite this leader's
   * lease (its prepares say `transfer`), and `to` catches up from the promises before it
   * leads, as any candidate does. Safety is Paxos's whatever happens; if no new leader is
   * heard of within an election timeout, this one resumes taking proposals. Only the ballot
   * order decides who leads, never this request.
   */
  transferLeadership(to: NodeId): TransferResult {
    if (this.role !== 'leader') return { ok: false, reason: 'this node does not lead' };
    if (to === this.id) return { ok: false, reason: 'this node leads already' };
    if (!isVoter(this.config, to) || !isVoter(this.latestConfig, to)) return { ok: false, reason: `${to} is not a voter` };
    if (!this.ownCommitDone()) return { ok: false, reason: 'this leader has not committed under its own ballot yet' };
    if (this.configInFlight || this.latestEpoch.fromSlot > this.commitSlot + 1) return { ok: false, reason: 'a membership change is in progress' };
    if (this.transferTo !== null) return { ok: false, reason: `leadership is being handed to ${this.transferTo} already` };
    this.transferTo = to;
    this.transferTick = this.ticks;
    this.transferSent = false;
    return { ok: true };
  }

  /** The voter leadership is being handed to, while it is. */
  get transferringTo(): NodeId | null {
    return this.transferTo;
  }

  /** Once nothing is queued or in flight and the target has acknowledged the last slot
   *  proposed (it is not behind: a candidate that skips the pre-vote must not be), tells it
   *  to campaign, once. */
  private maybeHandOver(): void {
    const to = this.transferTo;
    if (to === null || this.transferSent || this.role !== 'leader') return;
    if (!isVoter(this.latestConfig, to) || !isVoter(configAt(this.epochs, this.nextSlot), to)) {
      this.transferTo = null;
      return;
    }
    if (this.queue.length > 0 || this.inflight.size > 0 || (this.ackedSlot.get(to) ?? 0) < this.nextSlot - 1) return;
    this.transferSent = true;
    this.send(to, { type: 'timeout_now', ballot: this.ballot });
  }

  private onTimeoutNow(from: NodeId, ballot: Ballot): void {
    if (ballot.leader !== from) return this.drop('forged_ballot');
    // Only from the leader this replica follows, under the ballot it promised, and only a
    // voter of the next slot campaigns.
    if (this.role !== 'follower' || this.leader !== from || !ballotEquals(ballot, this.promised) || !isVoter(this.config, this.id) || !isVoter(this.latestConfig, this.id)) return;
    this.transferCampaign = ballot;
    this.resetElectionTimeout();
    this.startCandidacy();
  }

  /** Asks for a linearizable read point; the answer comes in `Ready.reads` with this id.
   *  Ids must be unique across this replica's restarts too (start them at a random point). */
  read(id: number): void {
    if (this.role === 'leader') {
      this.startLeaderRead(id, this.id);
      return;
    }
    if (this.leader === null || this.role !== 'follower') {
      this.readStates.push({ id, index: null });
      return;
    }
    this.remoteReads.set(id, { tick: this.ticks, leader: this.leader });
    this.send(this.leader, { type: 'read_req', id });
  }

  /** Receives a message. Malformed, foreign or unknown-sender messages are dropped and counted. */
  step(raw: unknown): void {
    const env = validateEnvelope(raw);
    if (env === null) return this.drop('malformed');
    if (env.cluster !== this.cluster) return this.drop('other_cluster');
    if (env.to !== this.id || env.from === this.id) return this.drop('misaddressed');
    const { from, msg } = env;
    if (!this.known.has(from)) {
      this.stepFromStranger(from, msg);
      return;
    }
    switch (msg.type) {
      case 'prevote':
        return this.onPreVote(from, msg.round, msg.commit);
      case 'prevote_reply':
        return this.onPreVoteReply(from, msg.round, msg.granted);
      case 'prepare':
        return this.onPrepare(from, msg.ballot, msg.commit, msg.transfer ?? null);
      case 'timeout_now':
        return this.onTimeoutNow(from, msg.ballot);
      case 'promise':
        return this.onPromise(from, msg);
      case 'accept':
        return this.onAccept(from, msg.ballot, msg.commit, msg.values);
      case 'accepted':
        return this.onAccepted(from, msg.ballot, msg.slots);
      case 'reject':
        return this.onReject(msg.ballot, msg.promised);
      case 'commit':
        return this.onLeaderContact(from, msg.ballot, msg.commit, null);
      case 'heartbeat':
        return this.onLeaderContact(from, msg.ballot, msg.commit, msg.seq);
      case 'heartbeat_ack':
        return this.onHeartbeatAck(from, msg.ballot, msg.seq);
      case 'catchup_req':
        return this.onCatchupRequest(from, msg.from, msg.to);
      case 'catchup':
        return this.onCatchup(from, msg.values, msg.commit, msg.snapshot);
      case 'read_req':
        return this.onReadRequest(from, msg.id);
      case 'read_reply':
        return this.onReadReply(from, msg.id, msg.index);
      case 'commit_query':
        return this.onCommitQuery(from);
      case 'commit_reply':
        return this.onCommitReply(from, msg.commit, msg.member, msg.fromSlot);
    }
  }

  /** The persist batch `seq` (and every one before it) is durable. */
  persisted(seq: number): void {
    while (this.unackedBatches.length > 0 && this.unackedBatches[0]!.seq <= seq) {
      const batch = this.unackedBatches.shift()!;
      if (batch.promise !== null && this.role === 'candidate' && ballotEquals(batch.promise, this.ballot)) {
        this.recordPromise(this.id, { commit: this.commitSlot, accepted: new Map() });
      }
      // Matched by (slot, ballot): the flush of a slot written under an earlier ballot of
      // this replica says nothing of the value it holds at that slot now.
      if (this.role === 'leader' && ballotEquals(batch.ballot, this.ballot)) {
        for (const slot of batch.slots) {
          const inf = this.inflight.get(slot);
          if (inf !== undefined) inf.selfDurable = true;
        }
        for (const slot of batch.slots) this.checkChosen(slot);
        this.advanceCommit();
      }
    }
  }

  /** The state machine has a snapshot through `point` (at or below the commit slot):
   *  drop the log up to it. */
  compact(point: LogPoint): void {
    assert(point.slot <= this.commitSlot, 'compact beyond the commit slot');
    if (point.slot <= this.compacted.slot) return;
    for (const slot of this.log.keys()) if (slot <= point.slot) this.log.delete(slot);
    this.compacted = point;
    this.persistOps.push({ kind: 'compact', through: point });
    this.recountRetained();
  }

  /** Collects everything the replica needs done. Returns null when there is nothing. */
  ready(): Ready | null {
    if (this.role === 'leader') {
      this.fillWindow();
      this.flushLeaderMessages();
      this.maybeHandOver();
    }
    if (this.commitSlot > this.commitMarker) {
      this.commitMarker = this.commitSlot;
      this.persistOps.push({ kind: 'commit', slot: this.commitSlot });
    }
    for (const [to, values] of this.acceptOut) {
      for (const part of this.splitByBytes(values)) {
        this.outbox.push(this.envelope(to, { type: 'accept', ballot: this.ballot, commit: this.commitSlot, values: part }));
      }
    }
    this.acceptOut.clear();

    const needsBarrier =
      this.persistOps.length > 0 || this.afterPersist.length > 0 || this.selfAcceptSlots.length > 0 || this.selfPromise;
    if (!needsBarrier && this.outbox.length === 0 && this.commits.length === 0 && this.readStates.length === 0 && this.snapshotNeeded === null) {
      return null;
    }
    let seq = this.persistSeq;
    if (needsBarrier) {
      seq = ++this.persistSeq;
      this.unackedBatches.push({ seq, slots: this.selfAcceptSlots, ballot: this.ballot, promise: this.selfPromise ? this.ballot : null });
      this.selfAcceptSlots = [];
      this.selfPromise = false;
    }
    const ready: Ready = {
      persistSeq: seq,
      persist: this.persistOps.splice(0),
      sendAfterPersist: this.afterPersist.splice(0),
      send: this.outbox,
      commit: this.commits,
      reads: this.readStates,
      snapshotNeeded: this.snapshotNeeded,
    };
    this.outbox = [];
    this.commits = [];
    this.readStates = [];
    this.snapshotNeeded = null; // asked once; a failed fetch is asked again by the next catch-up
    return ready;
  }

  // ------------------------------------------------------------------------------------
  // Elections.

  private resetElectionTimeout(): void {
    this.electionElapsed = 0;
    this.electionTimeout = this.electionTicks + Math.floor(this.random() * this.electionTicks);
  }

  private startPreVote(): void {
    this.resetElectionTimeout();
    this.becomeFollowerState('precandidate');
    this.prevotes.clear();
    this.prevotes.add(this.id);
    const round = Math.max(this.maxRoundSeen, this.promised.round) + 1;
    for (const voter of this.config.voters) {
      if (voter !== this.id) this.send(voter, { type: 'prevote', round, commit: this.commitSlot });
    }
    this.maybeWinPreVote();
  }

  /**
   * A pre-vote is granted only by a replica that has not heard from a leader lately, and only
   * to one whose commit slot is not behind its own: a candidate behind a promiser must catch
   * up before it leads, and when its peers can serve that only through block sync, whose
   * ranges need a leader (or a majority of voters) to vouch for them, a behind candidate
   * that keeps winning elections keeps the cluster leaderless (seed 3287). A replica that is
   * no voter of its own configuration (it applied its removal) never campaigns: it does not
   * refuse a behind candidate, or no one would lead (found by review: a removed leader that
   * alone heard its removal commit).
   */
  private onPreVote(from: NodeId, round: number, commit: number): void {
    const leaderAlive =
      this.role === 'leader' || (this.leader !== null && this.role === 'follower' && this.electionElapsed < this.electionTicks);
    const ahead = commit < this.commitSlot && isVoter(this.config, this.id);
    const granted = !leaderAlive && round > this.promised.round && !ahead;
    this.send(from, { type: 'prevote_reply', round: granted ? round : this.promised.round, granted });
  }

  private onPreVoteReply(from: NodeId, round: number, granted: boolean): void {
    // A refusal names a higher promised round: the next pre-vote asks above it (without this,
    // the replica that promised the highest round, if behind, could win no election and
    // refuse every other: seed 135).
    if (!granted) this.maxRoundSeen = Math.max(this.maxRoundSeen, round);
    if (this.role !== 'precandidate' || !granted) return;
    this.prevotes.add(from);
    this.maybeWinPreVote();
  }

  private maybeWinPreVote(): void {
    if (this.role === 'precandidate' && this.quorum(this.config, this.prevotes)) this.startCandidacy();
  }

  private startCandidacy(): void {
    this.role = 'candidate';
    this.stats.elections++;
    this.leader = null;
    this.ballot = nextBallot({ round: Math.max(this.maxRoundSeen, this.promised.round), leader: '' }, this.id);
    this.maxRoundSeen = this.ballot.round;
    this.promised = this.ballot;
    this.persistPromise(this.ballot);
    this.selfPromise = true;
    this.promises.clear();
    this.sendPrepares();
  }

  /**
   * Phase 1a to every voter that governs a slot after the commit slot and has not promised.
   * Prepares leave only once this replica's own promise of the ballot is durable (they wait
   * for the next persist barrier, which comes after the promise's write): otherwise a crash
   * could forget the ballot after others promised it, and the restarted replica could
   * promise a lower ballot and accept under it while its prepares and accepts of the higher
   * one are still out. Nothing else would stop that: pre-votes do not persist.
   */
  private sendPrepares(): void {
    this.prepareSentTick = this.ticks;
    for (const voter of this.votersAfterCommit()) {
      if (voter === this.id || this.promises.has(voter)) continue;
      this.afterPersist.push(
        this.envelope(voter, { type: 'prepare', ballot: this.ballot, commit: this.commitSlot, ...(this.transferCampaign !== null ? { transfer: this.transferCampaign } : {}) }),
      );
    }
  }

  private votersAfterCommit(): Set<NodeId> {
    const out = new Set<NodeId>();
    const from = this.commitSlot + 1;
    for (let i = 0; i < this.epochs.length; i++) {
      const next = this.epochs[i + 1];
      if (next !== undefined && next.fromSlot <= from) continue;
      for (const v of this.epochs[i]!.config.voters) out.add(v);
    }
    return out;
  }

  private onPrepare(from: NodeId, ballot: Ballot, candidateCommit: number, transfer: Ballot | null = null): void {
    if (ballot.leader !== from) return this.drop('forged_ballot');
    const order = compareBallots(ballot, this.promised);
    if (order < 0) {
      this.send(from, { type: 'reject', ballot, promised: this.promised });
      return;
    }
    if (order > 0) {
      // Check-quorum's other half: while a live leader is heard from, ignore usurpers.
      // A candidate the leader this replica follows (or is) asked to take over is no usurper.
      const askedByOurLeader = transfer !== null && ballotEquals(this.promised, transfer) && (this.leader === transfer.leader || this.id === transfer.leader);
      const leaderAlive = this.role === 'follower' && this.leader !== null && this.electionElapsed < this.electionTicks;
      if (!askedByOurLeader && (leaderAlive || this.role === 'leader')) return this.drop('prepare_during_lease');
      this.promised = ballot;
      this.maxRoundSeen = Math.max(this.maxRoundSeen, ballot.round);
      this.persistPromise(ballot);
      this.becomeFollowerState('follower');
      this.leader = null;
      this.resetElectionTimeout();
    }
    const report = this.promiseReport(candidateCommit);
    const accepted: StoredSlot[] = [];
    for (const s of this.log.values()) if (s.slot > report.after) accepted.push(s);
    this.afterPersist.push(this.envelope(from, { type: 'promise', ballot, commit: report.commit, compacted: report.compacted, accepted }));
  }

  /**
   * A leader takes promises too: slots a new configuration governs need a quorum of its
   * voters (fillWindow). A late promise changes no slot already proposed (each was proposed
   * once a quorum of its configuration had promised, which recovered any value that could
   * have been chosen there), and for later slots recovery reads a superset of a quorum,
   * whose highest-ballot value is still the one that may have been chosen; slots up to a
   * raised `recoverThrough` are filled (recovered values or no-ops) before anything new.
   */
  private onPromise(from: NodeId, msg: Extract<Message, { type: 'promise' }>): void {
    if (this.role !== 'candidate' && this.role !== 'leader') return;
    if (!ballotEquals(msg.ballot, this.ballot) || this.promises.has(from)) return;
    const accepted = new Map<number, StoredSlot>();
    for (const s of msg.accepted) accepted.set(s.slot, s);
    this.recordPromise(from, { commit: Math.max(msg.commit, msg.compacted), accepted });
  }

  private recordPromise(from: NodeId, info: PromiseInfo): void {
    this.promises.set(from, info);
    for (const s of info.accepted.keys()) this.recoverThrough = Math.max(this.recoverThrough, s);
    if (this.role === 'candidate') this.maybeLead();
  }

  /**
   * A candidate leads once a quorum of the next slot's configuration has promised, and, if a
   * promiser's commit is past its own, once promises speak for every slot it could propose
   * up to that commit (a promise speaks only for the slots after its sender's commit). If
   * they do not, it first catches up to the furthest promiser. It does not wait for that
   * when promises speak for those slots without the promisers ahead: their chosen values
   * are recovered like any others (a removed member that alone still held the log's end in
   * full kept the voters from electing anyone: simulator seed 202142).
   */
  private maybeLead(): void {
    if (!this.quorum(this.config, this.promises.keys())) return;
    let behind: { node: NodeId; commit: number } | null = null;
    for (const [node, info] of this.promises) {
      if (info.commit > this.commitSlot && (behind === null || info.commit > behind.commit)) behind = { node, commit: info.commit };
    }
    if (behind === null || this.promisesSpeakThrough(behind.commit)) {
      this.becomeLeader();
      return;
    }
    this.requestCatchup(behind.node, behind.commit);
  }

  /** Promises speak for every slot from the next to `through` (or the window's end, beyond
   *  which the configurations are not known yet) under the configuration that governs it. */
  private promisesSpeakThrough(through: number): boolean {
    const last = Math.min(through, this.commitSlot + this.alpha);
    for (let slot = this.commitSlot + 1; slot <= last; slot++) {
      if (!this.quorum(configAt(this.epochs, slot), this.promisersFor(slot))) return false;
    }
    return true;
  }

  /**
   * Promises that do not speak for `slot` (promisers ahead of it) keep it from a quorum that
   * does: a quorum of `config` has promised and does not speak for it, or even if every
   * voter that has not promised did, promises would not. (Waiting for the voters that have
   * not promised is no answer: one may be down for good. Found by review: a voter of the new
   * configuration down, the leader stalled forever.)
   */
  private behindForGood(config: Config, slot: number): boolean {
    const speakers = this.promisersFor(slot);
    if (this.quorum(config, this.promises.keys())) return true;
    const could = [...speakers];
    for (const v of config.voters) if (!this.promises.has(v)) could.push(v);
    return !this.quorum(config, could);
  }

  /** The promisers whose promise speaks for `slot`. */
  private promisersFor(slot: number): NodeId[] {
    const out: NodeId[] = [];
    for (const [node, info] of this.promises) if (this.speaksFor(node, info, slot)) out.push(node);
    return out;
  }

  private becomeLeader(): void {
    this.role = 'leader';
    this.transferCampaign = null;
    this.transferTo = null;
    this.ackedSlot.clear();
    this.leader = this.id;
    this.stats.leaderTerms++;
    this.nextSlot = this.commitSlot + 1;
    this.recoverThrough = Math.max(this.recoverThrough, this.commitSlot);
    for (const s of this.log.values()) if (s.slot > this.commitSlot) this.recoverThrough = Math.max(this.recoverThrough, s.slot);
    // The first slot after everything that may have been chosen before: committing it
    // commits all of those, which is what reads and configuration changes wait for.
    this.firstOwnSlot = this.recoverThrough + 1;
    this.inflight.clear();
    // Empty here (only a leader queues, and leaving the lead drops the queue), but never
    // lose a write silently should that change.
    for (const c of this.queue) this.dropped.push(c);
    this.queue = [];
    this.queueBytes = 0;
    this.configInFlight = false;
    this.heartbeatElapsed = 0;
    this.checkQuorumElapsed = 0;
    this.recentlyActive.clear();
    this.lastHeard.clear();
    this.ackedSeq.clear();
    this.heartbeatRequested = true;
    this.catchupFrom = null;
  }

  private becomeFollowerState(role: 'follower' | 'precandidate'): void {
    if (this.role === 'leader') this.stepDown();
    this.role = role;
    this.transferCampaign = null;
    this.promises.clear();
    this.recoverThrough = 0;
  }

  /** Leaves leadership: queued commands are dropped (takeDropped), pending reads fail. */
  private stepDown(): void {
    this.transferTo = null;
    this.inflight.clear();
    for (const c of this.queue) this.dropped.push(c);
    this.queue = [];
    this.queueBytes = 0;
    this.configInFlight = false;
    for (const r of [...this.pendingReads, ...this.readsWaitingForOwnCommit]) this.answerRead(r, null);
    this.pendingReads = [];
    this.readsWaitingForOwnCommit = [];
    this.role = 'follower';
    this.leader = null;
    this.resetElectionTimeout();
  }

  private onReject(ballot: Ballot, promised: Ballot): void {
    this.maxRoundSeen = Math.max(this.maxRoundSeen, promised.round);
    if ((this.role === 'candidate' || this.role === 'leader') && ballotEquals(ballot, this.ballot)) {
      if (compareBallots(promised, this.ballot) > 0) this.becomeFollowerState('follower');
    }
  }

  // ------------------------------------------------------------------------------------
  // Phase 2: the leader side.

  private tickLeader(): void {
    this.heartbeatElapsed++;
    this.checkQuorumElapsed++;
    // A transfer that did not bring a new leader within an election timeout is given up.
    if (this.transferTo !== null && this.ticks - this.transferTick >= this.electionTicks) this.transferTo = null;
    if (this.heartbeatElapsed >= this.heartbeatTicks) {
      this.heartbeatElapsed = 0;
      this.heartbeatRequested = true;
      this.retransmit();
    }
    if (this.checkQuorumElapsed >= this.electionTicks) {
      this.checkQuorumElapsed = 0;
      const active = new Set(this.recentlyActive);
      active.add(this.id);
      this.recentlyActive.clear();
      if (!this.quorum(this.config, active)) {
        this.stepDown();
        return;
      }
    }
    // A leader removed from the configuration of its next slot hands over once idle.
    if (!isVoter(configAt(this.epochs, this.nextSlot), this.id) && this.inflight.size === 0) this.stepDown();
  }

  /** Proposes into every open slot of the window that can be filled now. */
  private fillWindow(): void {
    while (this.role === 'leader' && this.nextSlot <= this.commitSlot + this.alpha) {
      const slot = this.nextSlot;
      const config = configAt(this.epochs, slot);
      if (!isVoter(config, this.id)) return;
      if (!this.quorum(config, this.promisersFor(slot))) {
        // Promisers ahead of this leader's commit speak for no slot up to theirs: under this
        // ballot the slot may never be proposed. Once every slot before it committed (no
        // work in flight is thrown away), the leader steps down; a later election, which
        // knows this configuration, catches up first (maybeLead). Found by the simulator
        // (seed 4783 at 2abf942): a configuration recovered after the election added a
        // voter that was ahead.
        if (this.commitSlot + 1 >= slot && this.behindForGood(config, slot)) {
          this.stats.leaderBehindPromiser++;
          this.stepDown();
          return;
        }
        if (this.ticks - this.prepareSentTick >= this.heartbeatTicks) this.sendPrepares();
        return;
      }
      let batch: Batch | null = null;
      if (slot <= this.recoverThrough) {
        batch = this.recoveredValue(slot, config) ?? [];
      } else if (this.queue.length > 0) {
        // Bytes in flight are bounded too: big values wait here, not in every peer's memory.
        if (this.inflight.size > 0 && this.inflightBytes() >= this.windowBytesMax) return;
        batch = this.takeBatch();
      } else if (slot === this.firstOwnSlot || slot < this.epochs[this.epochs.length - 1]!.fromSlot) {
        batch = []; // a no-op: commit under our own ballot, or bring a new configuration into effect
      }
      if (batch === null) return;
      this.proposeAt(slot, batch);
    }
  }

  /** Phase 1's rule: the value accepted under the highest ballot among this slot's voters. */
  private recoveredValue(slot: number, config: Config): Batch | undefined {
    let best: StoredSlot | undefined;
    for (const [node, info] of this.promises) {
      if (!this.recoversFrom(config, node) || !this.speaksFor(node, info, slot)) continue;
      const s = node === this.id ? this.log.get(slot) : info.accepted.get(slot);
      if (s === undefined) continue;
      if (s.chosen) return s.batch;
      if (best === undefined || this.outranks(s, best)) best = s;
    }
    return best?.batch;
  }

  private takeBatch(): Batch {
    let bytes = 0;
    let n = 0;
    while (n < this.queue.length && n < this.batchCommandsMax) {
      const c = this.queue[n]!;
      const size = commandBytes(c);
      if (n > 0 && bytes + size > this.batchBytesMax) break;
      bytes += size;
      n++;
    }
    this.queueBytes -= bytes;
    return this.queue.splice(0, n);
  }

  private inflightBytes(): number {
    let n = 0;
    for (const inf of this.inflight.values()) n += batchBytes(inf.batch);
    return n;
  }

  private proposeAt(slot: number, batch: Batch): void {
    const stored: StoredSlot = { slot, ballot: this.ballot, batch, chosen: false };
    this.log.set(slot, stored);
    this.persistOps.push({ kind: 'slot', slot: stored });
    this.selfAcceptSlots.push(slot);
    this.inflight.set(slot, { batch, acks: new Set(), selfDurable: false, sentTick: this.ticks, resends: 0 });
    const config = configAt(this.epochs, slot);
    for (const node of [...config.voters, ...config.learners]) {
      if (node !== this.id) this.queueAccept(node, { slot, batch });
    }
    this.nextSlot = slot + 1;
  }

  /** Consecutive runs of `values` of at most `messageBytesMax` each (one value always goes). */
  private splitByBytes(values: readonly SlotValue[]): SlotValue[][] {
    const parts: SlotValue[][] = [];
    let part: SlotValue[] = [];
    let bytes = 0;
    for (const v of values) {
      const size = batchBytes(v.batch);
      if (part.length > 0 && bytes + size > this.messageBytesMax) {
        parts.push(part);
        part = [];
        bytes = 0;
      }
      part.push(v);
      bytes += size;
    }
    if (part.length > 0) parts.push(part);
    return parts;
  }

  private queueAccept(to: NodeId, value: SlotValue): void {
    let list = this.acceptOut.get(to);
    if (list === undefined) this.acceptOut.set(to, (list = []));
    list.push(value);
  }

  /** Accepts not yet acknowledged are sent again to the voters that have not answered. */
  private retransmit(): void {
    for (const [slot, inf] of this.inflight) {
      if (this.ticks - inf.sentTick < this.heartbeatTicks * Math.min(2 ** inf.resends, 2)) continue;
      inf.sentTick = this.ticks;
      inf.resends++;
      for (const voter of configAt(this.epochs, slot).voters) {
        if (voter !== this.id && !inf.acks.has(voter)) this.queueAccept(voter, { slot, batch: inf.batch });
      }
    }
  }

  private onAccepted(from: NodeId, ballot: Ballot, slots: readonly number[]): void {
    if (this.role !== 'leader' || !ballotEquals(ballot, this.ballot)) return;
    this.recentlyActive.add(from);
    this.lastHeard.set(from, this.ticks);
    for (const slot of slots) if (slot > (this.ackedSlot.get(from) ?? 0)) this.ackedSlot.set(from, slot);
    for (const slot of slots) {
      const inf = this.inflight.get(slot);
      if (inf === undefined) continue;
      inf.acks.add(from);
      this.checkChosen(slot);
    }
    this.advanceCommit();
  }

  private checkChosen(slot: number): void {
    const inf = this.inflight.get(slot);
    const stored = this.log.get(slot);
    if (inf === undefined || stored === undefined || stored.chosen) return;
    const voters = new Set(inf.acks);
    if (inf.selfDurable) voters.add(this.id);
    if (this.quorum(configAt(this.epochs, slot), voters)) {
      this.log.set(slot, { ...stored, chosen: true });
    }
  }

  private flushLeaderMessages(): void {
    if (this.readsWaitingForOwnCommit.length > 0 && this.ownCommitDone()) {
      for (const r of this.readsWaitingForOwnCommit) this.beginReadRound(r);
      this.readsWaitingForOwnCommit = [];
    }
    const members = this.peersToInform();
    if (this.heartbeatRequested) {
      this.heartbeatRequested = false;
      this.commitDirty = false;
      const seq = ++this.heartbeatSeq;
      for (const node of members) this.send(node, { type: 'heartbeat', ballot: this.ballot, commit: this.commitSlot, seq });
    } else if (this.commitDirty) {
      this.commitDirty = false;
      for (const node of members) {
        if (!this.acceptOut.has(node)) this.send(node, { type: 'commit', ballot: this.ballot, commit: this.commitSlot });
      }
    }
  }

  /** Every member of every configuration from the commit slot on. */
  private peersToInform(): Set<NodeId> {
    const out = new Set<NodeId>();
    for (let i = 0; i < this.epochs.length; i++) {
      const next = this.epochs[i + 1];
      if (next !== undefined && next.fromSlot <= this.commitSlot + 1) continue;
      const c = this.epochs[i]!.config;
      for (const n of c.voters) out.add(n);
      for (const n of c.learners) out.add(n);
    }
    out.delete(this.id);
    return out;
  }

  // ------------------------------------------------------------------------------------
  // Phase 2: the acceptor side, and learning the commit slot.

  private onAccept(from: NodeId, ballot: Ballot, commit: number, values: readonly SlotValue[]): void {
    if (ballot.leader !== from) return this.drop('forged_ballot');
    if (this.refusesAccept(ballot)) {
      this.send(from, { type: 'reject', ballot, promised: this.promised });
      return;
    }
    this.followLeader(ballot);
    const acked: number[] = [];
    for (const { slot, batch } of values) {
      const existing = this.log.get(slot);
      // Not written again: a slot known chosen (in memory, or at or below the commit slot,
      // whose value may have been dropped from memory), and a retransmission of what is
      // stored already under this ballot. The acknowledgement below waits for the next
      // persist barrier, which comes after the first write of it.
      const held = slot <= this.commitSlot || existing?.chosen === true;
      const again = existing !== undefined && ballotEquals(existing.ballot, ballot) && sameBatch(existing.batch, batch);
      if (slot > this.compacted.slot && !held && !again) {
        const stored: StoredSlot = { slot, ballot, batch, chosen: false };
        this.log.set(slot, stored);
        this.persistOps.push({ kind: 'slot', slot: stored });
      }
      acked.push(slot);
    }
    this.afterPersist.push(this.envelope(from, { type: 'accepted', ballot, slots: acked }));
    this.learnCommit(from, ballot, commit);
  }

  /** Accepts a leader of `ballot` (at least the promised one) as the current leader. */
  private followLeader(ballot: Ballot): void {
    this.maxRoundSeen = Math.max(this.maxRoundSeen, ballot.round);
    if (compareBallots(ballot, this.promised) > 0) {
      this.promised = ballot;
      this.persistOps.push({ kind: 'promise', ballot });
    }
    if (this.role !== 'follower') this.becomeFollowerState('follower');
    this.leader = ballot.leader;
    this.resetElectionTimeout();
  }

  private onLeaderContact(from: NodeId, ballot: Ballot, commit: number, seq: number | null): void {
    if (ballot.leader !== from) return this.drop('forged_ballot');
    if (compareBallots(ballot, this.promised) < 0) {
      this.send(from, { type: 'reject', ballot, promised: this.promised });
      return;
    }
    this.followLeader(ballot);
    if (seq !== null) this.send(from, { type: 'heartbeat_ack', ballot, seq });
    this.learnCommit(from, ballot, commit);
  }

  /**
   * The leader of `ballot` says slots up to `commit` are chosen. A slot accepted here under
   * that same ballot holds the chosen value; any other slot is fetched from the leader.
   */
  private learnCommit(leader: NodeId, ballot: Ballot, commit: number): void {
    this.leaderCommitSeen = commit;
    let missing = 0;
    const upTo = Math.min(commit, this.commitSlot + this.alpha * 4);
    for (let slot = this.commitSlot + 1; slot <= upTo; slot++) {
      const s = this.log.get(slot);
      if (s !== undefined && !s.chosen && this.commitNoticeCovers(s, ballot)) {
        this.log.set(slot, { ...s, chosen: true });
      } else if (s === undefined || !s.chosen) {
        if (missing === 0) missing = slot;
      }
    }
    this.advanceCommit();
    if (commit > this.commitSlot && (missing !== 0 || upTo < commit)) this.requestCatchup(leader, commit);
  }

  /** Hands every newly chosen slot, in order, to the state machine. */
  private advanceCommit(): void {
    for (;;) {
      const next = this.log.get(this.commitSlot + 1);
      if (next === undefined || !next.chosen) break;
      const slot = next.slot;
      const changes: ConfigChange[] = [];
      for (const c of next.batch) if (c.kind === 'config') changes.push(c.change);
      this.setEpochs(trimEpochs(epochsAfter(this.epochs, slot, changes, this.alpha), slot));
      this.commits.push({ slot, index: this.commitIndex + 1, batch: next.batch, epochs: this.epochs });
      this.commitSlot = slot;
      this.commitIndex += next.batch.length;
      this.retainedBytes += retainedMemory(next.batch);
      if (this.role === 'leader') {
        this.inflight.delete(slot);
        if (changes.length > 0) this.configInFlight = false;
        this.commitDirty = true;
      }
    }
    // A leader may have known slots past a gap as chosen before it led: once the gap is
    // filled its commit can pass the next slot it would propose, and the configurations it
    // keeps (trimmed to those after the commit slot) no longer govern that slot (seed 3075).
    if (this.role === 'leader' && this.nextSlot <= this.commitSlot) this.nextSlot = this.commitSlot + 1;
    this.evictChosen();
  }

  /** Drops the oldest chosen values from memory while they hold more than `retainBytesMax`. */
  private evictChosen(): void {
    while (this.retainedBytes > this.retainBytesMax && this.retainedFrom <= this.commitSlot) {
      const s = this.log.get(this.retainedFrom);
      if (s !== undefined) {
        this.retainedBytes -= retainedMemory(s.batch);
        this.log.delete(this.retainedFrom);
      }
      this.retainedFrom++;
    }
  }

  /** Recomputes what chosen values are in memory (after compaction or a snapshot dropped some). */
  private recountRetained(): void {
    this.retainedFrom = Math.max(this.retainedFrom, this.compacted.slot + 1);
    this.retainedBytes = 0;
    for (const s of this.log.values()) if (s.slot >= this.retainedFrom && s.slot <= this.commitSlot) this.retainedBytes += retainedMemory(s.batch);
    this.evictChosen();
  }

  private setEpochs(epochs: readonly ConfigEpoch[]): void {
    if (epochs === this.epochs) return;
    this.epochs = epochs;
    this.known = knownNodes(epochs);
    this.noteMembership();
  }

  // ------------------------------------------------------------------------------------
  // Departure (see `departed`).

  /** Notices the newest configuration leaving out this replica after one named it. */
  private noteMembership(): void {
    const latest = this.epochs[this.epochs.length - 1]!;
    if (isMember(latest.config, this.id)) {
      // Added back before it left (or never removed): nothing to wait for.
      this.wasMember = true;
      this.leaving = null;
      this.departedFrom = null;
      this.leaveConfirmed.clear();
      return;
    }
    if (this.epochs.some((e) => isMember(e.config, this.id))) this.wasMember = true;
    // A joiner that has not reached its own addition was never a member: it stays.
    if (!this.wasMember || this.leaving === latest) return;
    // A newer configuration without this replica: ask about that one (its voters, its slot).
    this.leaving = latest;
    this.leaveConfirmed.clear();
    this.leaveQueryTick = -Infinity;
  }

  /** Asks the new voters that have not confirmed yet, every heartbeat interval. A leader
   *  hands over first (tickLeader). */
  private askToLeave(): void {
    if (this.leaving === null || this.departedFrom !== null || this.role === 'leader') return;
    if (this.ticks - this.leaveQueryTick < this.heartbeatTicks) return;
    this.leaveQueryTick = this.ticks;
    for (const v of this.leaving.config.voters) if (!this.leaveConfirmed.has(v)) this.send(v, { type: 'commit_query' });
  }

  /** Answered once the commit slot it names is durable here (the marker goes out in the same
   *  write), so a restart never takes back what the asker counted on. */
  private onCommitQuery(from: NodeId): void {
    const member = this.epochs.some((e) => isMember(e.config, from));
    this.afterPersist.push(this.envelope(from, { type: 'commit_reply', commit: this.commitSlot, member, fromSlot: this.latestEpoch.fromSlot }));
  }

  private onCommitReply(from: NodeId, commit: number, member: boolean, fromSlot: number): void {
    // Catch up only from a voter of the next slot as this replica knows it: a node that left
    // and formed a cluster of its own under the same id must not feed it another log.
    if (commit > this.commitSlot && this.role !== 'leader' && isVoter(this.config, from)) this.requestCatchup(from, commit);
    const leaving = this.leaving;
    // Only answers about the configuration this replica is leaving for: one that knows a
    // newer one is ahead, and this replica catches up from it first (review: a node added
    // back and removed again, still behind, counted answers about the second removal).
    if (leaving === null || this.departedFrom !== null || fromSlot !== leaving.fromSlot || !this.countsForLeaving(leaving, from, commit, member)) return;
    this.leaveConfirmed.add(from);
    if (this.mayLeave(leaving, this.leaveConfirmed)) this.departedFrom = leaving;
  }

  /** A reply counts toward leaving when its sender is a voter of the newest configuration,
   *  knows of none naming this replica (`member`: added back, so stay), and has durably
   *  learned every slot before that configuration governs. */
  protected countsForLeaving(leaving: ConfigEpoch, from: NodeId, commit: number, member: boolean): boolean {
    return !member && isVoter(leaving.config, from) && commit >= leaving.fromSlot - 1;
  }

  /** Every voter of the newest configuration confirmed. */
  protected mayLeave(leaving: ConfigEpoch, confirmed: ReadonlySet<NodeId>): boolean {
    return leaving.config.voters.every((v) => confirmed.has(v));
  }

  /** The configurations after this replica's commit point, for the state machine's snapshot. */
  logPoint(): LogPoint {
    return { slot: this.commitSlot, index: this.commitIndex, epochs: this.epochs };
  }

  // ------------------------------------------------------------------------------------
  // Catch-up.

  private requestCatchup(from: NodeId, commit: number): void {
    if (this.catchupFrom !== null && this.ticks - this.catchupTick < this.electionTicks) return;
    this.catchupFrom = from;
    this.catchupTick = this.ticks;
    this.catchupAsked.set(from, this.ticks);
    this.stats.catchupRequests++;
    const to = Math.min(commit, this.commitSlot + this.catchupSlotsMax);
    this.send(from, { type: 'catchup_req', from: this.commitSlot + 1, to });
  }

  /** Answers with chosen values only, or points at a snapshot when the log cannot serve the
   *  range (compacted away, or applied before a restart without a durable commit marker). */
  private onCatchupRequest(from: NodeId, first: number, last: number): void {
    const unservable = first <= this.compacted.slot || (first <= this.commitSlot && !this.log.get(first)?.chosen);
    if (unservable) {
      this.send(from, { type: 'catchup', values: [], commit: this.commitSlot, snapshot: this.logPoint() });
      return;
    }
    const values: SlotValue[] = [];
    const end = Math.min(last, first + this.catchupSlotsMax - 1, this.commitSlot);
    let bytes = 0;
    for (let slot = first; slot <= end; slot++) {
      const s = this.log.get(slot);
      if (s === undefined || !s.chosen) break;
      const size = batchBytes(s.batch);
      if (values.length > 0 && bytes + size > this.messageBytesMax) break;
      bytes += size;
      values.push({ slot, batch: s.batch });
    }
    this.send(from, { type: 'catchup', values, commit: this.commitSlot, snapshot: null });
  }

  private onCatchup(from: NodeId, values: readonly SlotValue[], commit: number, snapshot: LogPoint | null): void {
    // Only answers to a request outstanding, and never on a leader: a value it took from
    // elsewhere would replace its in-flight proposal, which followers that accepted under its
    // ballot would then commit (issue 10, bug 2). (A leader may be behind a promiser that
    // spoke for no slot it needed: phase 1 recovers those slots' values instead.)
    const asked = this.catchupAsked.get(from);
    if (asked === undefined || this.ticks - asked > this.electionTicks * 4 || this.takesNoChosen()) return this.drop('unsolicited_catchup');
    if (this.catchupFrom === from) this.catchupFrom = null;
    if (snapshot !== null) {
      if (snapshot.slot > this.commitSlot) this.snapshotNeeded = { from, point: snapshot };
      return;
    }
    this.storeChosen(values);
    if (commit > this.commitSlot && values.length > 0) this.requestCatchup(from, commit);
    if (this.role === 'candidate') this.maybeLead();
  }

  /**
   * The driver learned these slots' chosen values from a source it checked itself (block
   * sync: a peer's log or the archive, verified against the hash chain). The same path as
   * a catch-up answer: stored as chosen, then committed in order.
   */
  learnChosen(values: readonly SlotValue[]): void {
    if (this.takesNoChosen()) {
      // A leader takes no chosen values from others (phase 1 recovered every value that may
      // have been chosen after its commit slot, and it proposes those). One that differs from
      // what it proposed in that slot means a later ballot chose it, so this leader was
      // deposed without hearing of it: it steps down, then learns it. A slot it has not
      // proposed yet proves nothing (its window may not reach it): its own proposal there
      // is either the same value or refused by a later ballot's promisers.
      const deposed = values.some(({ slot, batch }) => {
        if (slot <= this.commitSlot) return false;
        const own = this.log.get(slot);
        return own !== undefined && !sameBatch(own.batch, batch);
      });
      if (!deposed) return;
      this.becomeFollowerState('follower');
    }
    this.storeChosen(values);
    if (this.role === 'candidate') this.maybeLead();
  }

  private storeChosen(values: readonly SlotValue[]): void {
    for (const { slot, batch } of values) {
      if (slot <= this.commitSlot || slot <= this.compacted.slot) continue;
      const existing = this.log.get(slot);
      if (existing?.chosen) continue;
      // The accepted ballot stays only beside the very batch accepted under it: a promise
      // reports (ballot, batch) pairs, and a later leader must never see a ballot paired
      // with a value that was not accepted under it.
      const ballot = existing !== undefined && sameBatch(existing.batch, batch) ? existing.ballot : BALLOT_NONE;
      const stored: StoredSlot = { slot, ballot, batch, chosen: true };
      this.log.set(slot, stored);
      this.persistOps.push({ kind: 'slot', slot: stored });
    }
    this.advanceCommit();
  }

  /** A node this replica does not know (a configuration it has not reached yet) may still
   *  be the leader: learn from it what is chosen, but take no orders from it. */
  private stepFromStranger(from: NodeId, msg: Message): void {
    switch (msg.type) {
      case 'accept':
      case 'commit':
      case 'heartbeat':
        if (msg.ballot.leader !== from) return this.drop('forged_ballot');
        // A leader of a later ballot that this replica does not know yet: if this one
        // leads or campaigns, it has been deposed (it must not go on committing).
        if (this.role !== 'follower' && compareBallots(msg.ballot, this.currentBallot) > 0) this.becomeFollowerState('follower');
        if (msg.commit > this.commitSlot) this.requestCatchup(from, msg.commit);
        return;
      case 'catchup':
        if (this.catchupAsked.has(from)) return this.onCatchup(from, msg.values, msg.commit, msg.snapshot);
        return this.drop('unknown_sender');
      case 'catchup_req':
        return this.onCatchupRequest(from, msg.from, msg.to);
      // A member removed from a configuration this replica no longer keeps asks whether it
      // may leave: the answer is only this replica's commit slot.
      case 'commit_query':
        return this.onCommitQuery(from);
      // A stranger whose commit is past this replica's may be a voter of a configuration
      // chosen since: it may need this replica's vote, and acceptors may answer any proposer
      // (safety never depends on who proposes). Without the answer a lagging voter and the
      // voters added since can fail to elect anyone (simulator seed 202142). A stranger at or
      // behind this replica's commit would be known if it were a voter: it gets nothing.
      case 'prevote':
        if (msg.commit <= this.commitSlot) return this.drop('unknown_sender');
        return this.onPreVote(from, msg.round, msg.commit);
      case 'prepare':
        if (msg.commit <= this.commitSlot) return this.drop('unknown_sender');
        return this.onPrepare(from, msg.ballot, msg.commit);
      default:
        return this.drop('unknown_sender');
    }
  }

  // ------------------------------------------------------------------------------------
  // Linearizable reads.

  private startLeaderRead(id: number, origin: NodeId): void {
    const read: PendingRead = { id, origin, index: 0, seq: 0, tick: this.ticks };
    if (this.readWaitsForOwnCommit()) {
      this.readsWaitingForOwnCommit.push(read);
    } else {
      this.beginReadRound(read);
    }
  }

  /** Has this leader committed a slot of its own after every slot that could have been
   *  chosen before it was elected (so its commit index covers every acknowledged write)? */
  private ownCommitDone(): boolean {
    return this.commitSlot >= this.firstOwnSlot && this.commitSlot >= this.recoverThrough;
  }

  /** The read point is the commit index now; it is confirmed by the next heartbeat round. */
  private beginReadRound(read: PendingRead): void {
    read.index = this.commitIndex;
    read.seq = this.heartbeatSeq + 1;
    this.heartbeatRequested = true;
    this.pendingReads.push(read);
    this.confirmReads();
  }

  private onHeartbeatAck(from: NodeId, ballot: Ballot, seq: number): void {
    if (this.role !== 'leader' || !ballotEquals(ballot, this.ballot)) return;
    this.recentlyActive.add(from);
    this.lastHeard.set(from, this.ticks);
    if ((this.ackedSeq.get(from) ?? 0) < seq) this.ackedSeq.set(from, seq);
    this.confirmReads();
  }

  /** Releases reads whose heartbeat round was answered by a quorum of every configuration
   *  a rival leader could use for a slot after the read point. */
  private confirmReads(): void {
    if (this.pendingReads.length === 0) return;
    const configs = this.readQuorumConfigs();
    const still: PendingRead[] = [];
    for (const r of this.pendingReads) {
      const ackers = [this.id];
      for (const [node, seq] of this.ackedSeq) if (seq >= r.seq) ackers.push(node);
      if (configs.every((c) => this.quorum(c, ackers))) this.answerRead(r, r.index);
      else still.push(r);
    }
    this.pendingReads = still;
  }

  private readQuorumConfigs(): Config[] {
    const configs: Config[] = [];
    for (let i = 0; i < this.epochs.length; i++) {
      const next = this.epochs[i + 1];
      if (next !== undefined && next.fromSlot <= this.commitSlot + 1) continue;
      configs.push(this.epochs[i]!.config);
    }
    // A change still in flight may govern slots just past the window.
    if (this.configInFlight) {
      let c = latestConfig(this.epochs);
      for (const inf of this.inflight.values()) {
        for (const cmd of inf.batch) if (cmd.kind === 'config') c = applyChange(c, cmd.change);
      }
      for (const cmd of this.queue) if (cmd.kind === 'config') c = applyChange(c, cmd.change);
      configs.push(c);
    }
    return configs;
  }

  private answerRead(r: PendingRead, index: number | null): void {
    if (r.origin === this.id) this.readStates.push({ id: r.id, index });
    else this.send(r.origin, { type: 'read_reply', id: r.id, index });
  }

  private onReadRequest(from: NodeId, id: number): void {
    if (this.role !== 'leader') {
      this.send(from, { type: 'read_reply', id, index: null });
      return;
    }
    this.startLeaderRead(id, from);
  }

  /** Matched by id and sender. Ids must also differ across the driver's restarts (a reply
   *  to the previous process would otherwise confirm a new read with an older index). */
  private onReadReply(from: NodeId, id: number, index: number | null): void {
    const asked = this.remoteReads.get(id);
    if (asked === undefined || asked.leader !== from) return this.drop('unmatched_read_reply');
    this.remoteReads.delete(id);
    this.readStates.push({ id, index });
  }

  private expireRemoteReads(): void {
    for (const [id, { tick }] of this.remoteReads) {
      if (this.ticks - tick >= this.electionTicks) {
        this.remoteReads.delete(id);
        this.readStates.push({ id, index: null });
      }
    }
  }

  // ------------------------------------------------------------------------------------
  // Helpers.

  // ------------------------------------------------------------------------------------
  // Rules the simulator's self-test breaks one at a time, to prove it notices
  // (test/sim/defective-replica.ts overrides them). Each is the whole rule here.

  /** A majority of `config`'s voters is among `ids` (learners never count). */
  protected quorum(config: Config, ids: Iterable<NodeId>): boolean {
    return hasQuorum(config, ids);
  }

  /** A promise (the candidate's own, or one given) is persisted before anything that relies
   *  on it leaves: prepares and promises wait for the persist barrier after it. */
  protected persistPromise(ballot: Ballot): void {
    this.persistOps.push({ kind: 'promise', ballot });
  }

  /** What a promise reports to a candidate at `candidateCommit`: the slots accepted after
   *  `after`, and this replica's commit and compaction points (so a candidate behind them
   *  catches up before it leads, rather than re-propose over chosen values it cannot see). */
  protected promiseReport(candidateCommit: number): { after: number; commit: number; compacted: number } {
    return { after: Math.max(candidateCommit, this.commitSlot), commit: this.commitSlot, compacted: this.compacted.slot };
  }

  /** A promise speaks for the slots after the promiser's commit and compaction points
   *  only: it reports nothing at or below them (see PromiseInfo.commit). Ours speaks for
   *  every slot after our commit. */
  protected speaksFor(node: NodeId, info: PromiseInfo, slot: number): boolean {
    return node === this.id || info.commit < slot;
  }

  /** Phase 1 recovers a slot's value from the promises of that slot's voters only. */
  protected recoversFrom(config: Config, node: NodeId): boolean {
    return isVoter(config, node);
  }

  /** Phase 1 takes the value accepted under the highest ballot. */
  protected outranks(s: StoredSlot, best: StoredSlot): boolean {
    return compareBallots(s.ballot, best.ballot) > 0;
  }

  /** An acceptor refuses an accept below the ballot it promised. */
  protected refusesAccept(ballot: Ballot): boolean {
    return compareBallots(ballot, this.promised) < 0;
  }

  /** A commit notice under `ballot` makes an accepted slot chosen only if it was accepted
   *  under that very ballot (else the leader may have chosen another value there). */
  protected commitNoticeCovers(s: StoredSlot, ballot: Ballot): boolean {
    return ballotEquals(s.ballot, ballot);
  }

  /** A leader takes no chosen values from others (catch-up answers, block sync). */
  protected takesNoChosen(): boolean {
    return this.role === 'leader';
  }

  /** A new leader serves linearizable reads only once a value of its own ballot commits. */
  protected readWaitsForOwnCommit(): boolean {
    return !this.ownCommitDone();
  }

  private envelope(to: NodeId, msg: Message): Envelope {
    return { cluster: this.cluster, from: this.id, to, msg };
  }

  private send(to: NodeId, msg: Message): void {
    this.outbox.push(this.envelope(to, msg));
  }

  private drop(reason: string): void {
    this.stats.dropped[reason] = (this.stats.dropped[reason] ?? 0) + 1;
  }
}

function assert(condition: boolean, message: string): asserts condition {
  if (!condition) throw new Error(`consensus invariant violated: ${message}`);
}
