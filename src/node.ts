/**
 * The composition root: one Pangea node. It owns all I/O, time and randomness around the
 * pure consensus core, and keeps the Ready contract:
 *
 *   ready = replica.ready()
 *   1. log.write(ready.persist) -> once durable: send ready.sendAfterPersist, persisted(seq)
 *   2. transport.send(ready.send)
 *   3. state.apply(ready.commit) -> answer the clients whose commands were applied
 *   4. release reads whose index is applied
 *
 * A write's whole path: HTTP (net/http.ts) -> PangeaNode.write -> Replica.propose ->
 * Ready.persist/send -> LmdbLogStore.write + Transport -> peers' acceptances ->
 * Ready.commit -> StateStore.apply -> the pending write resolves -> HTTP answers.
 */
import { randomInt, randomUUID } from 'node:crypto';
import {
  Replica,
  bootstrapState,
  type Ballot,
  type Command,
  type Config,
  type Entry,
  type LogPoint,
  type Persisted,
  type SlotValue,
  type Ready,
} from './consensus/index.js';
import type { Logger } from './logger.js';
import type { LogStore } from './log/log-store.js';
import type { Transport } from './net/transport.js';
import { ServiceError, type ClusterView, type Consistency, type KvService } from './net/service.js';
import { encodeAppCommand, type ApplyResult, type ArchiveSettings, type KvOp, type RequestId, type SettingsOp } from './state/command.js';
import type { SegmentBound } from './state/segments.js';
import type { KeyValue, MemberRecord, StateStore } from './state/state-store.js';
import { Packr } from 'msgpackr';
import { PromText } from './metrics.js';

export interface NodeTiming {
  /** One consensus tick. Election timeouts are `electionTicks` to twice that. */
  readonly tickMs: number;
  readonly electionTicks: number;
  readonly heartbeatTicks: number;
  /** How long a handed-over write waits for its outcome before answering 504. */
  readonly proposalTimeoutMs: number;
  /** How far (in indexes) behind the leader's commit /readyz still says ready. */
  readonly readyLagMax: number;
  /** How long the commit index may stand still while writes wait before /readyz fails. */
  readonly stallMs: number;
}

export const DEFAULT_TIMING: NodeTiming = {
  tickMs: 50,
  electionTicks: 10,
  heartbeatTicks: 2,
  proposalTimeoutMs: 10_000,
  readyLagMax: 1000,
  stallMs: 5000,
};

export interface NodeParts {
  readonly clusterId: string;
  readonly peerId: string;
  readonly http: string;
  readonly log: LogStore;
  readonly state: StateStore;
  readonly transport: Transport;
  readonly logger: Logger;
  readonly timing?: Partial<NodeTiming>;
  /** The cluster's first configuration, told to joining nodes. */
  readonly genesis: Config;
  /** More Prometheus text to append to /metrics (HTTP metrics). */
  readonly extraMetrics?: () => Promise<string>;
  /**
   * Called once when a write to the log or the state machine failed (a full or vanished
   * disk, an I/O error). The node has stopped serving by then (/readyz fails) and must not
   * go on: the caller ends the process. Nothing is retried, an fsync least of all: after a
   * failed fsync the kernel may have dropped the dirty pages it could not write.
   */
  readonly onFatal?: (err: unknown, what: string) => void;
}

interface PendingWrite {
  resolve(r: ApplyResult): void;
  reject(e: Error): void;
  timer: NodeJS.Timeout;
}

interface PendingRead {
  resolve(index: number): void;
  reject(e: Error): void;
  index: number | null;
}

const metaPackr = new Packr({ useRecords: false, mapsAsObjects: true });

/** The member record a membership change carries, opaque to the core. */
export function encodeMemberMeta(m: { http: string; p2p: readonly string[] }): Uint8Array {
  return metaPackr.pack({ http: m.http, p2p: [...m.p2p] });
}

/** The durable state of a node that creates a new one-member cluster. */
export function genesisPoint(self: string): LogPoint {
  return bootstrapState({ voters: [self], learners: [] }).base;
}

export class PangeaNode implements KvService {
  readonly clusterId: string;
  readonly peerId: string;
  readonly http: string;
  private readonly genesis: Config;
  private readonly extraMetrics: (() => Promise<string>) | undefined;
  private readonly log: LogStore;
  private readonly state: StateStore;
  private readonly transport: Transport;
  private readonly logger: Logger;
  private readonly timing: NodeTiming;
  private readonly replica: Replica;
  private readonly writes = new Map<Command, PendingWrite>();
  private readonly reads = new Map<number, PendingRead>();
  private readonly waitingReads: PendingRead[] = [];
  /** Read ids start at a random point below 2^52, so a process never takes an id its
   *  previous incarnation used: a late reply to that one would confirm a new read with an
   *  older index (issue 10, bug 3). Two processes' ranges overlap with odds of about
   *  (reads per process) / 2^51. */
  private readId = randomInt(2 ** 47) * 32;
  private proposalSeq = 0;
  private ticker: NodeJS.Timeout | null = null;
  private drainScheduled = false;
  private persistChain: Promise<void> = Promise.resolve();
  private lastPersistSeq = 0;
  private applyChain: Promise<void> = Promise.resolve();
  private stopped = false;
  /** Why the node failed (fail-stop), once it has. */
  private failure: string | null = null;
  private readonly onFatal: ((err: unknown, what: string) => void) | undefined;
  /** The commit index last seen moving, and when: /readyz fails when it stalls while writes wait. */
  private progress = { index: 0, at: Date.now() };
  private members: MemberRecord[] = [];
  /** See logNow. */
  private logClock: { base: number; at: number };
  private segmentListener: ((bound: SegmentBound) => void) | null = null;
  private snapshotListener: (() => void) | null = null;
  /** Why client writes are refused now (the hot-log quota), or null. */
  private admission: () => string | null = () => null;
  private readonly counters = { proposals: 0, commits: 0, applied: 0, persistBatches: 0, reads: 0 };

  constructor(parts: NodeParts) {
    this.clusterId = parts.clusterId;
    this.peerId = parts.peerId;
    this.http = parts.http;
    this.genesis = parts.genesis;
    this.extraMetrics = parts.extraMetrics;
    this.onFatal = parts.onFatal;
    this.log = parts.log;
    this.state = parts.state;
    this.transport = parts.transport;
    this.logger = parts.logger;
    this.timing = { ...DEFAULT_TIMING, ...parts.timing };

    const loaded = this.log.load();
    const applied = this.state.applied();
    const persisted: Persisted = {
      promised: loaded.promised,
      slots: loaded.slots,
      base: applied.point,
      // Nothing compacted yet: the whole log from slot 1 can be served to peers.
      compacted: loaded.compacted ?? { slot: 0, index: 0, epochs: applied.point.epochs },
      commit: loaded.commit,
    };
    this.replica = new Replica(
      {
        id: this.peerId,
        cluster: this.clusterId,
        random: Math.random,
        electionTicks: this.timing.electionTicks,
        heartbeatTicks: this.timing.heartbeatTicks,
      },
      persisted,
    );
    this.logClock = { base: this.state.logTime(), at: performance.now() };
    this.refreshMembers();
    this.transport.onMessage((env) => {
      if (this.stopped) return;
      this.replica.step(env);
      this.scheduleDrain();
    });
  }

  /** Starts ticking. The transport is started by the caller (it must know its addresses first). */
  start(): void {
    this.ticker = setInterval(() => {
      this.stalledMs(); // keeps the commit-progress clock current
      this.replica.tick();
      this.scheduleDrain();
    }, this.timing.tickMs);
    this.ticker.unref?.();
    this.scheduleDrain();
  }

  /**
   * Fail-stop: a write to the log or the state failed. Stops serving at once (every waiting
   * client is answered, /readyz fails with the reason) and tells the owner, which ends the
   * process; a restart recovers from what is durable.
   */
  fail(err: unknown, what: string): void {
    if (this.failure !== null) return;
    this.failure = `${what} failed: ${(err as Error)?.message ?? String(err)}`;
    this.logger.error(`${what} failed; the node stops`, { err });
    void this.stop();
    this.onFatal?.(err, what);
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.ticker) clearInterval(this.ticker);
    for (const w of this.writes.values()) {
      clearTimeout(w.timer);
      w.reject(new ServiceError('outcome_unknown', 'the node is shutting down'));
    }
    this.writes.clear();
    for (const r of [...this.reads.values(), ...this.waitingReads]) r.reject(new ServiceError('unavailable', 'the node is shutting down'));
    this.reads.clear();
    await this.persistChain.catch(() => undefined);
  }

  // ------------------------------------------------------------------------------------
  // The Ready loop.

  /** Drains the core once per event-loop turn, so writes of one turn share a commit. */
  private scheduleDrain(): void {
    if (this.drainScheduled || this.stopped) return;
    this.drainScheduled = true;
    setImmediate(() => {
      this.drainScheduled = false;
      this.drain();
    });
  }

  private drain(): void {
    for (let ready = this.replica.ready(); ready !== null && !this.stopped; ready = this.replica.ready()) {
      this.perform(ready);
    }
  }

  private perform(ready: Ready): void {
    if (ready.persistSeq > this.lastPersistSeq) {
      const { persistSeq: seq, persist, sendAfterPersist } = ready;
      this.lastPersistSeq = seq;
      this.counters.persistBatches++;
      // Batches are written in order and each completes only once durable (an empty one
      // completes once everything before it is), so acknowledgements keep their order.
      const written = this.log.write(persist);
      this.persistChain = written;
      written.then(
        () => {
          if (this.stopped) return;
          if (sendAfterPersist.length > 0) this.transport.send(sendAfterPersist);
          this.replica.persisted(seq);
          this.scheduleDrain();
        },
        (err: unknown) => this.fail(err, 'writing the log'),
      );
    }
    if (ready.send.length > 0) this.transport.send(ready.send);
    if (ready.commit.length > 0 || ready.reads.length > 0) {
      // Apply only once the log writes handed over so far are committed, so the state
      // machine is never ahead of the log peers catch up from (a crash keeps both in order).
      const { commit, reads } = ready;
      this.applyChain = this.applyChain
        .then(() => this.log.committed())
        .then(() => {
          if (this.stopped) return;
          if (commit.length > 0) this.apply(commit);
          for (const r of reads) this.onReadState(r.id, r.index);
        })
        .catch((err: unknown) => this.fail(err, 'applying committed entries'));
    }
    if (ready.snapshotNeeded !== null) {
      // Peers' hot logs no longer reach back to this node's commit point: it catches up
      // through block sync (from a peer's hot log or the archive) instead of a snapshot.
      this.logger.debug('peers have pruned past this node; catching up through block sync', { from: ready.snapshotNeeded.from });
      this.snapshotListener?.();
    }
  }

  private apply(entries: readonly Entry[]): void {
    const results = this.state.apply(entries, (bound) => this.segmentListener?.(bound));
    this.counters.commits += entries.length;
    let i = 0;
    let membership = false;
    for (const entry of entries) {
      for (const cmd of entry.batch) {
        const result = results[i++];
        if (cmd.kind === 'config') membership = true;
        const pending = this.writes.get(cmd);
        if (pending !== undefined && result !== undefined) {
          this.writes.delete(cmd);
          clearTimeout(pending.timer);
          pending.resolve(result);
        }
      }
    }
    this.counters.applied += i;
    if (membership) this.refreshMembers();
    this.releaseReads();
  }

  private refreshMembers(): void {
    this.members = this.state.members();
    for (const m of this.members) {
      if (m.peerId !== this.peerId && m.p2p.length > 0) this.transport.setPeerAddresses(m.peerId, m.p2p);
    }
  }

  // ------------------------------------------------------------------------------------
  // KvService.

  private leaderHttp(): string | null {
    const leader = this.replica.currentLeader;
    if (leader === null) return null;
    return this.members.find((m) => m.peerId === leader)?.http ?? null;
  }

  /** Called right after the state at each segment boundary is committed (the archiver). */
  onSegment(listener: (bound: SegmentBound) => void): void {
    this.segmentListener = listener;
  }

  /** Called when the core asks for a snapshot (block sync catches up instead). */
  onSnapshotNeeded(listener: () => void): void {
    this.snapshotListener = listener;
  }

  /** Client writes are refused (503) while `check` returns a reason. */
  setAdmission(check: () => string | null): void {
    this.admission = check;
  }

  /** Chosen values block sync fetched and checked: through the core's catch-up path. */
  learnChosen(values: readonly SlotValue[]): void {
    if (this.stopped) return;
    this.replica.learnChosen(values);
    this.scheduleDrain();
  }

  /** Proposes the cluster's archive settings (once at bootstrap, or to change them). */
  async proposeSettings(settings: ArchiveSettings): Promise<{ index: number }> {
    const result = await this.write({ t: 'archive_settings', settings });
    return { index: result.index };
  }

  /** The ballot this node leads under, or null. */
  get leaderBallot(): Ballot | null {
    return this.replica.currentRole === 'leader' ? this.replica.currentBallot : null;
  }

  get commitIndex(): number {
    return this.replica.commit.index;
  }

  /** The commit slot and the index of its last command. */
  get commitPoint(): { slot: number; index: number } {
    return this.replica.commit;
  }

  /** The hot log is pruned through this point. */
  get compactedPoint(): LogPoint {
    return this.replica.compactedPoint;
  }

  /** Prunes the hot log through `point` (a snapshot point at or below the applied one). */
  compact(point: LogPoint): void {
    if (this.stopped) return;
    const applied = this.state.applied().point;
    if (point.slot > applied.slot) throw new Error(`cannot prune through slot ${point.slot}: applied only through ${applied.slot}`);
    this.replica.compact(point);
    try {
      this.state.pruneChain(point.index);
    } catch (err) {
      this.fail(err, 'pruning the state’s chain values');
      throw err;
    }
    this.scheduleDrain();
  }

  write(op: KvOp | SettingsOp, requestId?: RequestId): Promise<ApplyResult> {
    const refused = op.t === 'archive_settings' ? null : this.admission();
    if (refused !== null) return Promise.reject(new ServiceError('unavailable', refused));
    const data = encodeAppCommand({
      op,
      ...(requestId ? { requestId } : {}),
      time: this.logNow(),
      proposal: `${this.peerId}:${++this.proposalSeq}`,
    });
    return this.propose({ kind: 'app', data });
  }

  /**
   * Log time as this node reads it, for the commands it proposes: the applied log time when
   * this process started, plus the monotonic time since, moved up to the applied log time
   * whenever another node's reading ran ahead. No wall clock: a clock stepped by an hour
   * changes nothing (issue 10, bug 4), and apply bounds each command's step anyway.
   */
  private logNow(): number {
    const applied = this.state.logTime();
    const now = performance.now();
    let mine = this.logClock.base + (now - this.logClock.at);
    if (applied > mine) {
      this.logClock = { base: applied, at: now };
      mine = applied;
    }
    return Math.floor(mine);
  }

  private propose(cmd: Command): Promise<ApplyResult> {
    if (this.stopped) return Promise.reject(new ServiceError('unavailable', 'the node is shutting down'));
    const result = this.replica.propose(cmd);
    if (!result.ok) {
      if (result.reason === 'not_leader') {
        const http = this.leaderHttp();
        return Promise.reject(new ServiceError('not_leader', http ? `the leader is ${result.leader}` : 'no leader is known', http));
      }
      const why = result.reason === 'busy' ? 'the proposal queue is full' : 'a membership change is in progress';
      return Promise.reject(new ServiceError('unavailable', why));
    }
    this.counters.proposals++;
    this.scheduleDrain();
    return new Promise<ApplyResult>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.writes.delete(cmd);
        reject(new ServiceError('outcome_unknown', `no outcome within ${this.timing.proposalTimeoutMs} ms; it may still be applied`));
      }, this.timing.proposalTimeoutMs);
      this.writes.set(cmd, { resolve, reject, timer });
    });
  }

  readBarrier(consistency: Consistency): Promise<number> {
    const applied = this.state.applied().point.index;
    if (consistency === 'stale') return Promise.resolve(applied);
    if (this.stopped) return Promise.reject(new ServiceError('unavailable', 'the node is shutting down'));
    this.counters.reads++;
    return new Promise<number>((resolve, reject) => {
      const id = ++this.readId;
      this.reads.set(id, { resolve, reject, index: null });
      this.replica.read(id);
      this.scheduleDrain();
    });
  }

  private onReadState(id: number, index: number | null): void {
    const r = this.reads.get(id);
    if (r === undefined) return;
    this.reads.delete(id);
    if (index === null) {
      r.reject(new ServiceError('unavailable', 'no leader could confirm a read index now'));
      return;
    }
    r.index = index;
    this.waitingReads.push(r);
    this.releaseReads();
  }

  private releaseReads(): void {
    if (this.waitingReads.length === 0) return;
    const applied = this.state.applied().point.index;
    for (let i = 0; i < this.waitingReads.length; ) {
      const r = this.waitingReads[i]!;
      if (r.index !== null && r.index <= applied) {
        this.waitingReads.splice(i, 1);
        r.resolve(applied);
      } else i++;
    }
  }

  get(key: Uint8Array): KeyValue | undefined {
    return this.state.get(key);
  }

  range(prefix: Uint8Array, after: Uint8Array | null, limit: number, bytesMax: number): { items: KeyValue[]; more: boolean } {
    return this.state.range(prefix, after, limit, bytesMax);
  }

  cluster(): ClusterView {
    const config = this.replica.latestConfig;
    const known = new Map(this.members.map((m) => [m.peerId, m]));
    const members: MemberRecord[] = [];
    for (const [ids, role] of [
      [config.voters, 'voter'],
      [config.learners, 'learner'],
    ] as const) {
      for (const id of ids) {
        const m = known.get(id);
        members.push({ peerId: id, role, http: m?.http ?? (id === this.peerId ? this.http : ''), p2p: m?.p2p ?? (id === this.peerId ? this.transport.addresses() : []) });
      }
    }
    members.sort((a, b) => (a.peerId < b.peerId ? -1 : a.peerId > b.peerId ? 1 : 0));
    return {
      clusterId: this.clusterId,
      self: { peerId: this.peerId, http: this.http, p2p: this.transport.addresses() },
      leader: this.replica.currentLeader,
      commitIndex: this.replica.commit.index,
      appliedIndex: this.state.applied().point.index,
      members,
      genesis: this.genesis,
      chain: Buffer.from(this.state.applied().chain).toString('hex'),
      archive: this.state.archiveSettings(),
    };
  }

  /** The configuration that governs the next slot, for tests and the banner. */
  get config(): Config {
    return this.replica.config;
  }

  /** The newest configuration, a change not yet in effect included. */
  get latestConfig(): Config {
    return this.replica.latestConfig;
  }

  /** The leader this node follows (itself when it leads), if any. */
  get leader(): string | null {
    return this.replica.currentLeader;
  }

  get role(): string {
    return this.replica.currentRole;
  }

  addMember(member: { peerId: string; http: string; p2p: readonly string[]; role: 'voter' | 'learner' }): Promise<{ index: number }> {
    const meta = encodeMemberMeta(member);
    const op = member.role === 'voter' ? 'add_voter' : 'add_learner';
    return this.proposeConfig({ kind: 'config', change: { op, node: member.peerId, meta } });
  }

  removeMember(peerId: string): Promise<{ index: number }> {
    return this.proposeConfig({ kind: 'config', change: { op: 'remove', node: peerId } });
  }

  private async proposeConfig(cmd: Command): Promise<{ index: number }> {
    const result = await this.propose(cmd);
    return { index: result.index };
  }

  isReady(): boolean {
    return this.notReady() === null;
  }

  notReady(): string | null {
    if (this.failure !== null) return this.failure;
    if (this.stopped) return 'the node is stopping';
    const r = this.replica;
    if (r.currentLeader === null || r.ticksSinceLeader > this.timing.electionTicks) return 'no leader heard from recently';
    // Slots and indexes differ; the lag bound is loose on purpose (a follower a few slots
    // behind is ready), so compare slots.
    const lag = r.leaderCommit - r.commit.slot;
    if (lag > this.timing.readyLagMax) return `applying ${lag} slots behind the leader's commit`;
    const stalled = this.stalledMs();
    if (stalled > this.timing.stallMs) return `the commit index has stood at ${r.commit.index} for ${Math.round(stalled / 1000)} s while ${this.writes.size} writes wait`;
    return this.admission();
  }

  /** How long the commit index has not moved while writes of this node wait (0 if none wait). */
  private stalledMs(): number {
    const index = this.replica.commit.index;
    const now = Date.now();
    if (this.writes.size === 0 || index !== this.progress.index) this.progress = { index, at: now };
    return now - this.progress.at;
  }

  async metrics(): Promise<string> {
    const r = this.replica;
    const mem = process.memoryUsage();
    const t = new PromText()
      .gauge('pangea_commit_index', 'Index of the last command known chosen here.', r.commit.index)
      .gauge('pangea_applied_index', 'Index of the last command applied to the state machine.', this.state.applied().point.index)
      .gauge('pangea_is_leader', '1 when this node leads.', r.currentRole === 'leader' ? 1 : 0)
      .gauge('pangea_ballot_round', 'Round of the ballot this node follows or leads.', r.currentBallot.round)
      .gauge('pangea_voters', 'Voters in the configuration of the next slot.', r.config.voters.length)
      .gauge('pangea_learners', 'Learners in the configuration of the next slot.', r.config.learners.length)
      .gauge('pangea_pending_writes', 'Writes handed to consensus and not yet answered.', this.writes.size)
      .gauge('pangea_ready', '1 when /readyz answers 200.', this.isReady() ? 1 : 0)
      .gauge('pangea_commit_stalled_seconds', 'How long the commit index has stood still while writes wait here (0: none wait).', this.stalledMs() / 1000)
      .gauge('pangea_process_resident_bytes', 'Resident set size of this process.', mem.rss)
      .gauge('pangea_process_heap_used_bytes', 'JavaScript heap in use.', mem.heapUsed)
      .gauge('pangea_process_external_bytes', 'Memory of buffers and native objects held from JavaScript.', mem.external)
      .counter('pangea_proposals_total', 'Commands handed to consensus here.', this.counters.proposals)
      .counter('pangea_slots_applied_total', 'Slots applied.', this.counters.commits)
      .counter('pangea_commands_applied_total', 'Commands applied.', this.counters.applied)
      .counter('pangea_persist_batches_total', 'Batches written to the log.', this.counters.persistBatches)
      .counter('pangea_linearizable_reads_total', 'Read barriers requested.', this.counters.reads)
      .counter('pangea_elections_total', 'Elections this node started.', r.stats.elections);
    for (const [name, n] of Object.entries((this.transport.stats ?? {}) as Record<string, number>)) {
      t.counter(`pangea_p2p_${name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)}_total`, `Peer transport counter ${name}.`, n);
    }
    t.family('counter', 'pangea_messages_dropped_total', 'Consensus messages dropped, by reason.', Object.entries(r.stats.dropped).map(([reason, n]) => [{ reason }, n] as const));
    return t.toString() + (this.extraMetrics ? await this.extraMetrics() : '');
  }

  /** Makes sure the member table has this node's current addresses (they are not in the
   *  genesis configuration, and may change across restarts). Idempotent; retried by the caller. */
  async registerSelf(): Promise<boolean> {
    const self = this.members.find((m) => m.peerId === this.peerId);
    const p2p = this.transport.addresses();
    if (self !== undefined && self.http === this.http && sameList(self.p2p, p2p)) return true;
    if (this.replica.currentRole !== 'leader') return false;
    const config = this.replica.latestConfig;
    const role = config.voters.includes(this.peerId) ? 'voter' : 'learner';
    await this.addMember({ peerId: this.peerId, http: this.http, p2p, role });
    return true;
  }
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

export function newClusterId(): string {
  return randomUUID();
}
