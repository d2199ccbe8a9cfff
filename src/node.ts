/**
 * The composition root: one Pangea node. The driver (driver.ts) runs the consensus loop;
 * this adapter gives it LMDB (log and state), libp2p (transport) and Node's timers, and
 * serves clients (KvService, behind the HTTP API) with it.
 *
 * A write's whole path: HTTP (net/http.ts) -> PangeaNode.write -> Driver.propose ->
 * Replica.propose -> Ready.persist/send -> LmdbLogStore.write + Transport -> peers'
 * acceptances -> Ready.commit -> StateStore.apply -> the pending write resolves -> HTTP answers.
 * On a follower, Driver.propose hands the write to the leader on the peer link (a `fwd`
 * frame) and answers with the leader's `fwd_reply`.
 */
import { randomInt, randomUUID } from 'node:crypto';
import { bootstrapState, hasQuorum, type Ballot, type Command, type Config, type ConfigEpoch, type LogPoint, type SlotValue } from './consensus/index.js';
import { Driver, type DriverClock, type DriverRefusal, type DriverTiming } from './driver.js';
import type { Logger } from './logger.js';
import type { LogStore } from './log/log-store.js';
import type { Transport } from './net/transport.js';
import { MembershipError, ServiceError, type ClusterView, type Consistency, type KeptAlive, type KvService } from './net/service.js';
import { JournalWindow, type WatchSource } from './net/watch.js';
import { APPLY_LEVEL_DEFAULT, decodeAppCommand, encodeAppCommand, opLevel, type ApplyResult, type ArchiveSettings, type BlockCmd, type ClusterSettings, type ProviderCmd, type CollectionCmd, type KvOp, type LeaseOp, type RequestId, type SettingsOp } from './state/command.js';
import { LeaseKeeper } from './leases.js';
import { IndexBuilder } from './backfill.js';
import { nextBackfill } from './state/records.js';
import type { SegmentBound } from './state/segments.js';
import type { BlockReader, KeyValue, LeaseRecord, MemberRecord, ProviderReader, StateStore } from './state/state-store.js';
import type { StateTables } from './state/staged.js';
import type { StateSnapshot } from './state/snapshot.js';
import { Packr } from 'msgpackr';
import { Metrics } from './metrics.js';
import { BUILD_INFO, type BuildInfo } from './version.js';

/** How often a node looks whether its role or leader changed, to log it. */
const ROLE_WATCH_MS = 250;

export interface NodeTiming extends DriverTiming {
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
  /** The registry /metrics serves, shared with the node's other parts (default: its own). */
  readonly metrics?: Metrics;
  /**
   * Called once when a write to the log or the state machine failed (a full or vanished
   * disk, an I/O error). The node has stopped serving by then (/readyz fails) and must not
   * go on: the caller ends the process. Nothing is retried, an fsync least of all: after a
   * failed fsync the kernel may have dropped the dirty pages it could not write.
   */
  readonly onFatal?: (err: unknown, what: string) => void;
  /**
   * Called once when this node, removed from the cluster, may stop for good (the voters left
   * no longer need it: Replica.departed). The caller ends the process.
   */
  readonly onDeparted?: (fromSlot: number) => void;
  /** The node was a member before this start (its data dir is not joining): see
   *  ReplicaOptions.wasMember. */
  readonly wasMember?: boolean;
  /** `--lease-tick`: how often keep-alives are proposed and the leader ticks (leases.ts). */
  readonly leaseTickMs?: number;
  /** Asks a peer which build it runs (server.ts: BUILD_PROTOCOL over libp2p); raiseLevel
   *  needs every member's answer. */
  readonly probeBuild?: (peerId: string) => Promise<BuildInfo | null>;
}

/** Moved only by `jumpClock`. */
let clockJumpMs = 0;

/**
 * A test hook: moves this process's clock by `ms` from now on, as a stepped clock would
 * (`serve` calls it on SIGUSR2 when PANGEA_TEST_CLOCK_JUMP_MS is set). Log time, and so
 * every lease, must not notice more than a step (test/cluster/leases.test.ts).
 */
export function jumpClock(ms: number): void {
  clockJumpMs += ms;
}

/** Node's timers and monotonic clock. */
export const NODE_CLOCK: DriverClock = {
  now: () => performance.now() + clockJumpMs,
  soon: (fn) => void setImmediate(fn),
  after: (ms, fn) => {
    const t = setTimeout(fn, ms);
    t.unref?.();
    return () => clearTimeout(t);
  },
};

const metaPackr = new Packr({ useRecords: false, mapsAsObjects: true });

/** How long `transferLeader` waits to see the new leader: an election takes well under this. */
const TRANSFER_WAIT_MS = 5_000;

/** The member record a membership change carries, opaque to the core. */
export function encodeMemberMeta(m: { http: string; p2p: readonly string[] }): Uint8Array {
  return metaPackr.pack({ http: m.http, p2p: [...m.p2p] });
}

/** Settings are never refused by admission: archiving, which frees the hot-log quota, needs
 *  them. Nor are lease ticks and keep-alives: refusing them would expire the leases of
 *  clients that did everything right. */
function bypassesAdmission(op: { readonly t: string } | undefined): boolean {
  return op?.t === 'archive_settings' || op?.t === 'cluster_settings' || op?.t === 'cluster_level' || op?.t === 'lease_tick' || op?.t === 'lease_keepalive';
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
  private readonly registry: Metrics;
  private readonly state: StateStore;
  private readonly probeBuild: NodeParts['probeBuild'];
  private readonly transport: Transport;
  private readonly logger: Logger;
  private readonly timing: NodeTiming;
  private readonly driver: Driver;
  private readonly leaseKeeper: LeaseKeeper;
  private readonly indexBuilder: IndexBuilder;
  private proposalSeq = 0;
  private members: MemberRecord[] = [];
  private segmentListener: ((bound: SegmentBound) => void) | null = null;
  private snapshotListener: (() => void) | null = null;
  /** The role and leader last logged (watchRole). */
  private roleWatch: ReturnType<typeof setInterval> | null = null;
  /**
   * Stale reads never go back in time on one node, across restarts too. An apply is not
   * flushed before its clients are answered (src/state/staged.ts), so a node that crashed
   * may come back having applied less than it had shown. Its first stale read therefore
   * waits for one linearizable read (whose index covers every write answered before it
   * began, and which the applied index then reaches); once one has succeeded, stale reads
   * answer at once.
   */
  private staleReadsSafe = false;
  /** Watch streams to wake after each apply (net/watch.ts). */
  private readonly appliedWatchers = new Set<() => void>();
  /** See setWatchCold. */
  private watchCold: WatchSource['cold'] | null = null;
  /** The newest journal rows, decoded once for all of this node's watch streams. */
  private readonly journalWindow = new JournalWindow((after, through, limit) => this.state.effects(after, through, limit));
  private seenRole: string | null = null;
  private seenLeader: string | null = null;
  /** Why client writes are refused now (the hot-log quota), or null. */
  private admission: () => string | null = () => null;
  private readyDetails: () => Record<string, unknown> = () => ({});

  constructor(parts: NodeParts) {
    this.clusterId = parts.clusterId;
    this.peerId = parts.peerId;
    this.http = parts.http;
    this.genesis = parts.genesis;
    this.registry = parts.metrics ?? new Metrics();
    this.state = parts.state;
    this.probeBuild = parts.probeBuild;
    this.transport = parts.transport;
    this.logger = parts.logger;
    this.timing = { ...DEFAULT_TIMING, ...parts.timing };
    const log = parts.log;
    this.driver = new Driver({
      clusterId: parts.clusterId,
      peerId: parts.peerId,
      log: {
        load: () => log.load(),
        // Batches are written in order and each completes only once durable (an empty one
        // completes once everything before it is), so acknowledgements keep their order.
        write: (ops, done) => log.write(ops).then(() => done(), (err: unknown) => done(err ?? new Error('log write failed'))),
        committed: (done) => log.committed().then(() => done(), (err: unknown) => done(err ?? new Error('log commit failed'))),
      },
      state: parts.state,
      net: parts.transport,
      clock: NODE_CLOCK,
      // From the CSPRNG: read ids start at a random point, and a seeded Math.random
      // (--random_seed) would make every restart reuse them.
      random: () => randomInt(2 ** 47) / 2 ** 47,
      timing: this.timing,
      onFatal: (err, what) => {
        this.logger.error(`${what} failed; the node stops`, { err });
        parts.onFatal?.(err, what);
      },
      onApplied: (entries) => {
        for (const wake of this.appliedWatchers) wake();
        if (!entries.some((e) => e.batch.some((c) => c.kind === 'config'))) return;
        this.refreshMembers();
        for (const e of entries) {
          for (const c of e.batch) {
            if (c.kind !== 'config') continue;
            const { op, node } = c.change;
            this.logger.info('membership change applied', { op, peerId: node, slot: e.slot, index: e.index });
            if (node === this.peerId && op === 'remove') {
              this.logger.warn('this node was removed from the cluster: it exits once the voters left no longer need it', { slot: e.slot });
            }
          }
        }
      },
      onSegment: (bound) => this.segmentListener?.(bound),
      replica: { wasMember: parts.wasMember === true },
      onDeparted: (fromSlot) => {
        this.logger.error('this node was removed from the cluster, and the voters left no longer need it: it leaves', { fromSlot });
        parts.onDeparted?.(fromSlot);
      },
      observe: {
        logWrite: this.registry.latency('pangea_log_write_seconds', 'Log batches, from hand-over to LMDB until durable (commit and fsync).'),
        apply: this.registry.latency('pangea_apply_seconds', 'Applies of committed entries to the state machine, its LMDB transaction included.'),
        commit: this.registry.latency('pangea_commit_seconds', "This node's own writes, from proposal until applied and answered (forwarded ones: on the leader)."),
      },
      // Writes a follower forwards pass the leader's own admission (the hot-log quota), as
      // its own do; settings never wait for it (archiving, which frees the quota, needs them).
      admitForwarded: (cmd) => (cmd.kind === 'app' && bypassesAdmission(decodeAppCommand(cmd.data)?.op) ? null : this.admission()),
      onSnapshotNeeded: (from) => {
        // Peers' hot logs no longer reach back to this node's commit point: it catches up
        // through block sync (from a peer's hot log or the archive) instead of a snapshot.
        this.logger.debug('peers have pruned past this node; catching up through block sync', { from });
        this.snapshotListener?.();
      },
    });
    this.leaseKeeper = new LeaseKeeper({
      write: (op) => this.write(op),
      leads: () => this.driver.replica.currentRole === 'leader',
      hasLeases: () => this.state.leaseCount() > 0,
      ...(parts.leaseTickMs === undefined ? {} : { tickMs: parts.leaseTickMs }),
    });
    this.indexBuilder = new IndexBuilder({
      write: (op) => this.write(op),
      leads: () => this.driver.replica.currentRole === 'leader',
      next: () => (this.state.applyLevel() >= 3 ? nextBackfill(this.state.tables) : null),
    });
    this.refreshMembers();
    this.registerMetrics(this.registry);
  }

  /** Starts ticking. The transport is started by the caller (it must know its addresses first). */
  start(): void {
    this.driver.start();
    this.leaseKeeper.start();
    this.indexBuilder.start();
    this.roleWatch ??= setInterval(() => this.watchRole(), ROLE_WATCH_MS).unref();
  }

  /** One log line whenever this node starts or stops leading, or follows another leader. */
  private watchRole(): void {
    const r = this.driver.replica;
    const role = r.currentRole;
    const leader = r.currentLeader;
    if (role === this.seenRole && leader === this.seenLeader) return;
    const ballot = r.currentBallot.round;
    if (role === 'leader' && this.seenRole !== 'leader') this.logger.info('this node leads now: it won an election', { ballot });
    else if (this.seenRole === 'leader' && role !== 'leader') this.logger.warn('this node no longer leads', { leader, ballot });
    else if (leader !== this.seenLeader) {
      if (leader === null) this.logger.warn('no leader known: an election is under way', { ballot });
      else this.logger.info('following a leader', { leader, ballot });
    }
    this.seenRole = role;
    this.seenLeader = leader;
  }

  /** Fail-stop (see NodeParts.onFatal): stops serving at once, tells the owner. */
  fail(err: unknown, what: string): void {
    this.driver.fail(err, what);
  }

  async stop(): Promise<void> {
    if (this.roleWatch !== null) clearInterval(this.roleWatch);
    this.leaseKeeper.stop(new ServiceError('unavailable', 'the node is shutting down'));
    this.indexBuilder.stop();
    this.driver.stop();
    await new Promise<void>((resolve) => this.driver.whenLogIdle(resolve));
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
    const leader = this.driver.replica.currentLeader;
    if (leader === null) return null;
    return this.members.find((m) => m.peerId === leader)?.http ?? null;
  }

  /** Called right after the state at each segment boundary is applied, before the next
   *  entry is (the archiver): a snapshot taken then is the state at the boundary
   *  (src/state/staged.ts: LMDB plus what is staged). */
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

  /** What /readyz adds to its answer, ready or not (the archive's state). */
  setReadyInfo(details: () => Record<string, unknown>): void {
    this.readyDetails = details;
  }

  readyInfo(): Record<string, unknown> {
    return this.readyDetails();
  }

  /** Chosen values block sync fetched and checked: through the core's catch-up path. */
  learnChosen(values: readonly SlotValue[]): void {
    this.driver.learnChosen(values);
  }

  /** Proposes the cluster's archive settings (once at bootstrap, or to change them). */
  async proposeSettings(settings: ArchiveSettings): Promise<{ index: number }> {
    const result = await this.write({ t: 'archive_settings', settings });
    return { index: result.index };
  }

  /** Proposes the cluster settings apply reads (once at bootstrap, or to change them). */
  async proposeClusterSettings(settings: ClusterSettings): Promise<{ index: number }> {
    const result = await this.write({ t: 'cluster_settings', settings });
    return { index: result.index };
  }

  /** The ballot this node leads under, or null. */
  get leaderBallot(): Ballot | null {
    return this.driver.replica.currentRole === 'leader' ? this.driver.replica.currentBallot : null;
  }

  get commitIndex(): number {
    return this.driver.replica.commit.index;
  }

  /** The commit slot and the index of its last command. */
  get commitPoint(): { slot: number; index: number } {
    return this.driver.replica.commit;
  }

  /** The hot log is pruned through this point. */
  get compactedPoint(): LogPoint {
    return this.driver.replica.compactedPoint;
  }

  /** Prunes the hot log through `point` (a snapshot point at or below the applied one). */
  compact(point: LogPoint): void {
    if (this.driver.isStopped) return;
    this.driver.compact(point);
    try {
      this.state.pruneChain(point.index);
    } catch (err) {
      this.fail(err, 'pruning the state’s chain values');
      throw err;
    }
  }

  write(op: KvOp | SettingsOp | LeaseOp | BlockCmd | ProviderCmd | CollectionCmd, requestId?: RequestId): Promise<ApplyResult> {
    const refused = bypassesAdmission(op) ? null : this.admission();
    if (refused !== null) return Promise.reject(new ServiceError('unavailable', refused));
    // Apply would answer it `invalid` (the level only rises): refused before it is proposed.
    const level = this.state.applyLevel();
    if (opLevel(op) > level) return Promise.reject(new MembershipError('conflict', `${op.t} needs cluster apply level ${opLevel(op)}; the cluster is at ${level}: \`pangea cluster upgrade\` once every member runs a build that has it`));
    const data = encodeAppCommand({
      op,
      ...(requestId ? { requestId } : {}),
      time: this.driver.logNow(),
      proposal: `${this.peerId}:${++this.proposalSeq}`,
    });
    return this.propose({ kind: 'app', data });
  }

  private propose(cmd: Command): Promise<ApplyResult> {
    return new Promise<ApplyResult>((resolve, reject) => {
      this.driver.propose(cmd, (o) => (o.ok ? resolve(o.result) : reject(this.serviceError(o.refusal))));
    });
  }

  private serviceError(r: DriverRefusal): ServiceError {
    if (r.kind === 'not_leader') {
      const http = this.leaderHttp();
      return new ServiceError('not_leader', http ? `the leader is ${r.leader}` : 'no leader is known', http);
    }
    return new ServiceError(r.kind, r.message);
  }

  readBarrier(consistency: Consistency): Promise<number> {
    if (consistency === 'stale') {
      if (this.staleReadsSafe) return Promise.resolve(this.state.applied().point.index);
      return this.linearizableRead().then(
        () => {
          this.staleReadsSafe = true;
          return this.state.applied().point.index;
        },
        (err: unknown) => {
          throw new ServiceError('unavailable', `this node has not caught up with the cluster since it started, so it serves no stale read yet: ${(err as Error).message}`);
        },
      );
    }
    return this.linearizableRead();
  }

  private linearizableRead(): Promise<number> {
    return new Promise<number>((resolve, reject) => {
      this.driver.read((o) => (o.ok ? resolve(o.index) : reject(this.serviceError(o.refusal))));
    });
  }

  get(key: Uint8Array): KeyValue | undefined {
    return this.state.get(key);
  }

  blocks(): BlockReader {
    return this.state;
  }

  providers(): ProviderReader {
    return this.state;
  }

  collections(): StateTables {
    return this.state.tables;
  }

  keepAlive(ids: readonly number[]): Promise<KeptAlive[]> {
    return this.leaseKeeper.keepAlive(ids);
  }

  lease(id: number): LeaseRecord | undefined {
    return this.state.lease(id);
  }

  leases(after: number, limit: number): { items: LeaseRecord[]; more: boolean } {
    return this.state.leases(after, limit);
  }

  logTime(): number {
    return this.state.logTime();
  }

  range(prefix: Uint8Array, after: Uint8Array | null, limit: number, bytesMax: number): { items: KeyValue[]; more: boolean } {
    return this.state.range(prefix, after, limit, bytesMax);
  }

  cluster(): ClusterView {
    const config = this.driver.replica.latestConfig;
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
      leader: this.driver.replica.currentLeader,
      commitIndex: this.driver.replica.commit.index,
      appliedIndex: this.state.applied().point.index,
      members,
      genesis: this.genesis,
      chain: Buffer.from(this.state.applied().chain).toString('hex'),
      archive: this.state.archiveSettings(),
      applyLevel: this.state.applyLevel(),
      build: BUILD_INFO,
    };
  }

  /**
   * Raises the cluster's apply level (state/command.ts) to `level`, once every member, this
   * one included, answers that its build applies it. A member that does not answer counts as
   * one that does not know it. A member that changes its build after this check and cannot
   * apply the level halts at its index (kv.ts ApplyHalt) rather than diverge.
   */
  async raiseLevel(level: number): Promise<{ index: number; level: number }> {
    const current = this.state.applyLevel();
    if (level < current) throw new MembershipError('conflict', `the cluster is at apply level ${current}, and a level is never lowered`);
    const probe = this.probeBuild;
    const behind: string[] = [];
    const members = this.cluster().members;
    await Promise.all(members.map(async (m) => {
      let info: BuildInfo | null;
      try {
        info = m.peerId === this.peerId ? BUILD_INFO : probe === undefined ? null : await probe(m.peerId);
      } catch (err) {
        behind.push(`${m.peerId} did not say which build it runs (${(err as Error).message})`);
        return;
      }
      if (info === null) behind.push(`${m.peerId} did not say which build it runs`);
      else if (level < info.levels[0] || level > info.levels[1]) behind.push(`${m.peerId} runs pangea ${info.version}, which applies levels ${info.levels[0]} to ${info.levels[1]}`);
    }));
    if (behind.length > 0) throw new MembershipError('conflict', `apply level ${level} needs every member to run a build that applies it: ${behind.sort().join('; ')}`);
    if (level === current) return { index: this.state.applied().point.index, level };
    // Apply refuses it unless these are the members where it lands.
    const r = await this.write({ t: 'cluster_level', level, members: members.map((m) => m.peerId).sort() });
    if (r.kind !== 'level') throw new MembershipError('conflict', r.kind === 'invalid' ? r.message : `the level command applied as ${r.kind}`);
    return { index: r.index, level: r.level };
  }

  /** The configuration that governs the next slot, for tests and the banner. */
  get config(): Config {
    return this.driver.replica.config;
  }

  /** The newest configuration, a change not yet in effect included. */
  get latestConfig(): Config {
    return this.driver.replica.latestConfig;
  }

  /** The newest configuration and the slot it governs from. */
  get latestEpoch(): ConfigEpoch {
    return this.driver.replica.latestEpoch;
  }

  /** The leader this node follows (itself when it leads), if any. */
  get leader(): string | null {
    return this.driver.replica.currentLeader;
  }

  /** See Replica.liveLeader. */
  get liveLeader(): string | null {
    return this.driver.replica.liveLeader;
  }

  get role(): string {
    return this.driver.replica.currentRole;
  }

  /**
   * Adds a member, or changes a member's role or addresses. Learner first (etcd's rule): a
   * peer becomes a voter only as a learner this leader has heard from within an election
   * timeout, so a node that joins and stops, or a mistyped peer id, never weakens the quorum.
   * Checked where the change is proposed, on the leader; a follower forwards it.
   */
  addMember(member: { peerId: string; http: string; p2p: readonly string[]; role: 'voter' | 'learner' }): Promise<{ index: number }> {
    const r = this.driver.replica;
    const config = r.latestConfig;
    const known = this.members.find((m) => m.peerId === member.peerId);
    const inRole = member.role === 'voter' ? config.voters.includes(member.peerId) : config.learners.includes(member.peerId);
    if (r.currentRole === 'leader' && inRole && known !== undefined && known.http === member.http && sameList(known.p2p, member.p2p)) {
      // Nothing changes: no log entry (a node re-registering, a join retried).
      return Promise.resolve({ index: this.state.applied().point.index });
    }
    if (r.currentRole === 'leader' && !inRole && !config.learners.includes(member.peerId) && this.state.wasRemoved(member.peerId)) {
      // etcd's rule for removed ids: the node left (or is leaving) with the old data; it joins
      // again as a new peer, from a fresh data dir.
      return Promise.reject(new MembershipError('removed', `${member.peerId} was removed from this cluster and does not come back: start it on a fresh data dir (a new peer id) and join with that`));
    }
    if (r.currentRole === 'leader' && member.role === 'voter' && !config.voters.includes(member.peerId)) {
      if (!config.learners.includes(member.peerId)) {
        return Promise.reject(new MembershipError('conflict', `${member.peerId} is not a member: add it as a learner ("role": "learner"), and promote it once it has caught up (pangea serve --join does both)`));
      }
      if (this.justElected()) return Promise.reject(new ServiceError('unavailable', 'the leader was elected moments ago and has not heard from its peers yet; retry shortly'));
      if (!r.livePeers.has(member.peerId)) {
        return Promise.reject(new MembershipError('conflict', `learner ${member.peerId} has not answered the leader within an election timeout: it becomes a voter once it is reachable and caught up`));
      }
    }
    const meta = encodeMemberMeta(member);
    const op = member.role === 'voter' ? 'add_voter' : 'add_learner';
    const propose = (): Promise<{ index: number }> => this.proposeConfig({ kind: 'config', change: { op, node: member.peerId, meta } });
    const level = this.state.applyLevel();
    const promoting = member.role === 'voter' && config.learners.includes(member.peerId);
    const isNew = !config.voters.includes(member.peerId) && !config.learners.includes(member.peerId);
    if (r.currentRole !== 'leader' || !(isNew || promoting) || level === APPLY_LEVEL_DEFAULT) return propose();
    // Above the first level a member must run a build that applies the cluster's level
    // (a build from before levels would apply the log differently and never know it). A new
    // learner that cannot be asked yet (added before it is started, as etcd's `member add`)
    // is added all the same: it counts in no quorum, a build that does not know the level
    // refuses to join or halts at it, and it is asked again before it becomes a voter.
    return this.buildOf(member).then((info) => {
      if (info === null && !promoting) return propose();
      if (info === null) throw new MembershipError('conflict', `cannot ask ${member.peerId} which build it runs, and the cluster is at apply level ${level}: it becomes a voter once it answers`);
      if (level < info.levels[0] || level > info.levels[1]) throw new MembershipError('conflict', `${member.peerId} runs pangea ${info.version}, which applies levels ${info.levels[0]} to ${info.levels[1]}; the cluster is at apply level ${level}: run a build that applies it`);
      return propose();
    });
  }

  /** Which build a peer runs, or null when it does not say. */
  private async buildOf(member: { peerId: string; p2p: readonly string[] }): Promise<BuildInfo | null> {
    if (this.probeBuild === undefined) return null;
    if (member.p2p.length > 0) this.transport.setPeerAddresses(member.peerId, member.p2p);
    try {
      return await this.probeBuild(member.peerId);
    } catch {
      return null;
    }
  }

  /** Removes a member; refused for a peer that is no member, or when the voters left would
   *  not hold a live quorum (checked on the leader, as `addMember`). `unchecked`: propose the
   *  removal whatever the configuration says (after --force-new-cluster, so that nodes that
   *  replay the log leave the former members out as the forced configuration does). */
  removeMember(peerId: string, unchecked = false): Promise<{ index: number }> {
    const r = this.driver.replica;
    const config = r.latestConfig;
    if (r.currentRole === 'leader' && !unchecked) {
      if (!config.voters.includes(peerId) && !config.learners.includes(peerId)) return Promise.reject(new MembershipError('not_found', `${peerId} is not a member`));
      if (this.justElected()) return Promise.reject(new ServiceError('unavailable', 'the leader was elected moments ago and has not heard from its peers yet; retry shortly'));
      const left = { voters: config.voters.filter((v) => v !== peerId), learners: [] };
      if (config.voters.includes(peerId) && !hasQuorum(left, r.livePeers)) {
        const live = left.voters.filter((v) => r.livePeers.has(v)).length;
        return Promise.reject(new MembershipError('conflict', `removing ${peerId} would leave ${live} of ${left.voters.length} voters answering the leader, short of a quorum: bring a voter back first`));
      }
    }
    return this.proposeConfig({ kind: 'config', change: { op: 'remove', node: peerId } });
  }

  /**
   * Hands leadership to voter `peerId` (Replica.transferLeadership) and resolves once this
   * node sees it lead. On a follower: not_leader (the HTTP API forwards to the leader).
   */
  async transferLeader(peerId: string, timeoutMs = TRANSFER_WAIT_MS): Promise<{ leader: string }> {
    const r = this.driver.replica;
    if (r.currentRole !== 'leader') throw this.serviceError({ kind: 'not_leader', leader: r.currentLeader });
    if (peerId === this.peerId) return { leader: peerId };
    const config = r.latestConfig;
    if (!config.voters.includes(peerId)) {
      throw new MembershipError(config.learners.includes(peerId) ? 'conflict' : 'not_found', config.learners.includes(peerId) ? `${peerId} is a learner: promote it first` : `${peerId} is not a member`);
    }
    if (this.justElected()) throw new ServiceError('unavailable', 'the leader was elected moments ago and has not heard from its peers yet; retry shortly');
    if (!r.livePeers.has(peerId)) throw new MembershipError('conflict', `${peerId} has not answered the leader within an election timeout: it cannot take over`);
    const started = this.driver.transferLeadership(peerId);
    if (!started.ok) throw new ServiceError('unavailable', `cannot hand over now: ${started.reason}`);
    this.logger.info('handing leadership over', { to: peerId });
    const deadline = performance.now() + timeoutMs;
    while (performance.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      const now = this.driver.replica;
      if (now.currentLeader === peerId) return { leader: peerId };
      if (now.currentRole === 'leader' && now.transferringTo === null) break;
    }
    const leader = this.driver.replica.currentLeader;
    throw new ServiceError('unavailable', leader === this.peerId ? `${peerId} did not take over; this node still leads` : `${peerId} has not been heard of as leader yet (the leader now: ${leader ?? 'none known'})`);
  }

  /** A leader that has heard from no peer yet, in a cluster of several voters: elected moments
   *  ago (a leader that hears no quorum within an election timeout steps down). */
  private justElected(): boolean {
    const r = this.driver.replica;
    return r.livePeers.size <= 1 && r.latestConfig.voters.length > 1;
  }

  private async proposeConfig(cmd: Command): Promise<{ index: number }> {
    const result = await this.propose(cmd);
    return { index: result.index };
  }

  isReady(): boolean {
    return this.notReady() === null;
  }

  notReady(): string | null {
    if (this.driver.failed !== null) return this.driver.failed;
    if (this.driver.isStopped) return 'the node is stopping';
    const r = this.driver.replica;
    if (r.currentLeader === null || r.ticksSinceLeader > this.timing.electionTicks) return 'no leader heard from recently';
    // Slots and indexes differ; the lag bound is loose on purpose (a follower a few slots
    // behind is ready), so compare slots.
    const lag = r.leaderCommit - r.commit.slot;
    if (lag > this.timing.readyLagMax) return `applying ${lag} slots behind the leader's commit`;
    const stalled = this.driver.stalledMs();
    if (stalled > this.timing.stallMs) return `the commit index has stood at ${r.commit.index} for ${Math.round(stalled / 1000)} s while ${this.driver.pendingWrites} writes wait`;
    return this.admission();
  }

  metrics(): Promise<string> {
    return this.registry.text();
  }

  watchSource(): WatchSource {
    const state = this.state;
    const cold = this.watchCold;
    return {
      applied: () => state.applied().point.index,
      floor: () => state.journalFloor(),
      effects: (after, through, limit) => this.journalWindow.effects(after, through, limit, state.applied().point.index),
      subscribe: (wake) => {
        this.appliedWatchers.add(wake);
        return () => this.appliedWatchers.delete(wake);
      },
      ...(cold === null ? {} : { cold }),
    };
  }

  /** Where watchers below the journal's floor read the archive (server.ts: the archive's
   *  cold source, through block sync's cold queue). */
  setWatchCold(cold: NonNullable<WatchSource['cold']>): void {
    this.watchCold = cold;
  }

  snapshot(): StateSnapshot {
    return this.state.snapshot();
  }

  /** The node's own figures, read when scraped. */
  private registerMetrics(m: Metrics): void {
    const r = this.driver.replica;
    const c = this.driver.counters;
    m.gauge('pangea_commit_index', 'Index of the last command known chosen here.', () => r.commit.index);
    m.gauge('pangea_applied_index', 'Index of the last command applied to the state machine.', () => this.state.applied().point.index);
    m.gauge('pangea_is_leader', '1 when this node leads.', () => (r.currentRole === 'leader' ? 1 : 0));
    m.gauge('pangea_ballot_round', 'Round of the ballot this node follows or leads.', () => r.currentBallot.round);
    m.gauge('pangea_voters', 'Voters in the configuration of the next slot.', () => r.config.voters.length);
    m.gauge('pangea_learners', 'Learners in the configuration of the next slot.', () => r.config.learners.length);
    m.gauge('pangea_pending_writes', 'Writes handed to consensus and not yet answered.', () => this.driver.pendingWrites);
    m.gauge('pangea_reads_waiting', 'Linearizable reads waiting for a read index or the apply (at most READS_WAITING_MAX).', () => this.driver.readsWaiting);
    m.gauge('pangea_ready', '1 when /readyz answers 200.', () => (this.isReady() ? 1 : 0));
    m.gauge('pangea_commit_stalled_seconds', 'How long the commit index has stood still while writes wait here (0: none wait).', () => this.driver.stalledMs() / 1000);
    m.gauge('pangea_process_resident_bytes', 'Resident set size of this process.', () => process.memoryUsage.rss());
    m.gauge('pangea_process_heap_used_bytes', 'JavaScript heap in use.', () => process.memoryUsage().heapUsed);
    m.gauge('pangea_process_external_bytes', 'Memory of buffers and native objects held from JavaScript.', () => process.memoryUsage().external);
    m.counter('pangea_proposals_total', 'Commands handed to consensus here.', () => c.proposals);
    m.counter('pangea_forwarded_writes_sent_total', 'Client writes this node, not leading, handed to the leader on the peer link.', () => c.forwardsSent);
    m.counter('pangea_forwarded_writes_served_total', 'Client writes followers handed to this node, as leader, on the peer link.', () => c.forwardsServed);
    m.counter('pangea_forwarded_writes_refused_total', 'Client writes a node outside the configuration forwarded to this node, refused.', () => c.forwardsRefused);
    m.counter('pangea_forward_frames_dropped_total', 'Forward frames dropped: malformed, duplicated, or an answer no write here waits for.', () => c.forwardsDropped);
    m.counter('pangea_slots_applied_total', 'Slots applied.', () => c.commits);
    m.counter('pangea_commands_applied_total', 'Commands applied.', () => c.applied);
    m.counter('pangea_persist_batches_total', 'Batches written to the log.', () => c.persistBatches);
    m.counter('pangea_linearizable_reads_total', 'Read barriers requested.', () => c.reads);
    m.counter('pangea_linearizable_reads_refused_total', 'Reads refused because too many were waiting.', () => c.readsRefused);
    m.counter('pangea_elections_total', 'Elections this node started.', () => r.stats.elections);
    m.gauge('pangea_leases', 'Leases the cluster holds, as of the applied index.', () => this.state.leaseCount());
    const lk = this.leaseKeeper.counts;
    m.counter('pangea_lease_keepalives_total', 'Lease keep-alives received here and proposed.', () => lk.keepalives);
    m.counter('pangea_lease_keepalive_commands_total', 'Keep-alive commands proposed here (one a tick carries every keep-alive of the tick).', () => lk.keepaliveCommands);
    m.counter('pangea_lease_ticks_total', 'Lease ticks this node proposed as leader.', () => lk.ticks);
    m.counter('pangea_index_backfill_steps_total', 'Index build steps this node proposed as leader.', () => this.indexBuilder.steps);
    const stats = this.transport.stats as Record<string, number> | undefined;
    for (const name of Object.keys(stats ?? {})) {
      const snake = name.replace(/[A-Z]/g, (ch) => `_${ch.toLowerCase()}`);
      m.counter(`pangea_p2p_${snake}_total`, `Peer transport counter ${name}.`, () => stats![name] ?? 0);
    }
    m.labelled('counter', 'pangea_messages_dropped_total', 'Consensus messages dropped, by reason.', 'reason', () => Object.entries(r.stats.dropped));
  }

  /** Makes sure the member table has this node's current addresses (they are not in the
   *  genesis configuration, and may change across restarts). Idempotent; retried by the caller. */
  async registerSelf(): Promise<boolean> {
    const self = this.members.find((m) => m.peerId === this.peerId);
    const p2p = this.transport.addresses();
    if (self !== undefined && self.http === this.http && sameList(self.p2p, p2p)) return true;
    if (this.driver.replica.currentRole !== 'leader') return false;
    const config = this.driver.replica.latestConfig;
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
