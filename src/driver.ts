/**
 * The driver: the one loop around the pure consensus core that production and the simulator
 * both run. It depends only on interfaces (the log, the state machine, the network, a clock
 * and a source of randomness), and keeps the order `Ready` demands:
 *
 *   ready = replica.ready()
 *   1. log.write(ready.persist) -> once durable: send ready.sendAfterPersist, persisted(seq)
 *      (batches are durable in the order handed over; an error stops the node). A batch
 *      that only moves the commit marker is not written on its own: the marker rides with
 *      the next batch that writes anything, or the next tick (see `deferMarker`).
 *   2. net.send(ready.send): at once, they depend on nothing unpersisted
 *   3. once every log write handed over so far is committed: state.apply(ready.commit),
 *      then answer the clients whose commands applied (the log is what peers catch up from:
 *      the state machine is never ahead of it)
 *   4. release reads whose read index the applied index has reached
 *   5. ready.snapshotNeeded: tell the owner (production catches up through block sync)
 *
 * A follower hands a client's write to the leader on the same link as consensus (a `fwd`
 * frame with a correlation id, answered by a `fwd_reply` once the leader applied it or
 * refused it), as etcd followers forward MsgProp: one HTTP parse per write wherever it
 * arrives, no second HTTP request. These frames never reach the core.
 *
 * It owns the writes and reads waiting for their outcome, read ids (unique across restarts:
 * they start at a random point), the log time commands carry, and what enters the core from
 * outside it (chosen values from block sync, compaction). Nothing here reads a wall clock or
 * touches a socket or a file: production gives it LMDB, libp2p and Node's timers (node.ts),
 * the simulator gives it in-memory twins that fail the way those do (test/sim).
 */
import {
  Replica,
  ballotEquals,
  isBallot,
  isCommand,
  isMember,
  type Ballot,
  type Command,
  type Entry,
  type Envelope,
  type LogPoint,
  type Persisted,
  type PersistOp,
  type Ready,
  type ReplicaOptions,
  type SlotValue,
  type TransferResult,
} from './consensus/index.js';
import type { LoadedLog } from './log/log-store.js';
import { LEASE_GRACE_MS, LOG_TIME_STEP_MS, restampAppCommand, type ApplyResult } from './state/command.js';

import type { SegmentBound } from './state/segments.js';

/** The durable log, as the driver uses it. */
export interface DriverLog {
  load(): LoadedLog;
  /** Writes one batch atomically; `done` once it is durable, or with the error. Batches
   *  become durable in the order handed over. */
  write(ops: readonly PersistOp[], done: (err?: unknown) => void): void;
  /** `done` once every batch handed over so far is committed (readable), if not yet durable. */
  committed(done: (err?: unknown) => void): void;
}

/** The state machine, as the driver uses it (src/state/state-store.ts has the whole contract). */
export interface DriverState {
  applied(): { point: LogPoint; chain: Uint8Array };
  /** The applied point as committed to storage, which may lag `applied()`
   *  (src/state/staged.ts): the log is compacted no further, so a crash never keeps a
   *  compaction without the state it relies on. */
  committedPoint(): LogPoint;
  /** Hands applied writes held back to storage (src/state/staged.ts). The log store hands
   *  them over with each of its transactions (LmdbLogStore.beforeHandOver), so both share
   *  one fsync; the driver calls this on each tick, so none waits longer than a tick when
   *  no log write comes. */
  handOver(): void;
  apply(entries: readonly Entry[], onSegment?: (bound: SegmentBound) => void): ApplyResult[];
  logTime(): number;
}

/** A write a follower hands to the leader, and the leader's answer (see the header). */
export type ForwardMessage =
  /** `ballot`: the leader's term as the follower knows it; the leader takes the write only
   *  in that very term (a process holds every term it leads, so its duplicate check covers
   *  the term: a late copy cannot reach a later term of the same node, after a restart). */
  | { readonly type: 'fwd'; readonly id: number; readonly ballot: Ballot; readonly cmd: Command }
  | { readonly type: 'fwd_reply'; readonly id: number; readonly outcome: WriteOutcome };

export interface ForwardEnvelope {
  readonly cluster: string;
  readonly from: string;
  readonly to: string;
  readonly msg: ForwardMessage;
}

/** A forwarded write's answer comes within the leader's own proposal timeout; this much more
 *  covers the trip back before the follower answers `outcome_unknown` itself. */
export const FORWARD_SLACK_MS = 1_000;
/** Forward ids a leader remembers to drop duplicates (see Driver.forwardsSeen). */
export const FORWARDS_SEEN_MAX = 65_536;

export interface DriverNet {
  send(envelopes: readonly (Envelope | ForwardEnvelope)[]): void;
  onMessage(handler: (raw: unknown) => void): void;
}

/** Time, as the driver sees it: monotonic milliseconds and callbacks. */
export interface DriverClock {
  now(): number;
  /** Runs `fn` after the current event, before timers (setImmediate). */
  soon(fn: () => void): void;
  /** Runs `fn` after `ms`; the returned function cancels it. */
  after(ms: number, fn: () => void): () => void;
}

/** Linearizable reads waiting here at most (for a read index, or for the apply to reach it):
 *  past it a read is refused `unavailable` at once, never queued without bound. */
export const READS_WAITING_MAX = 16_384;

export interface DriverTiming {
  /** One consensus tick. Election timeouts are `electionTicks` to twice that. */
  readonly tickMs: number;
  readonly electionTicks: number;
  readonly heartbeatTicks: number;
  /** How long a handed-over write waits for its outcome before it is answered `unknown`. */
  readonly proposalTimeoutMs: number;
}

/** Why a write or read did not get its answer. The owner maps these to its errors. */
export type DriverRefusal =
  | { readonly kind: 'not_leader'; readonly leader: string | null }
  | { readonly kind: 'unavailable'; readonly message: string }
  | { readonly kind: 'outcome_unknown'; readonly message: string };

export type WriteOutcome = { readonly ok: true; readonly result: ApplyResult } | { readonly ok: false; readonly refusal: DriverRefusal };
export type ReadOutcome = { readonly ok: true; readonly index: number } | { readonly ok: false; readonly refusal: DriverRefusal };

/** Deliberate defects, switched on only by the simulator's self-test to prove it notices. */
export interface DriverDefects {
  /** Messages that wait for a persist leave, and the core hears it is durable, at once. */
  persistedBeforeFlush?: boolean;
  /** A read is answered as soon as its read index arrives, whatever has been applied. */
  readBeforeApplied?: boolean;
  /** Read ids start at 0 in every process. */
  reuseReadIds?: boolean;
  /** Commands carry this node's clock as their time, unclamped. */
  logTimeUnclamped?: boolean;
  /** The commit marker is written in a batch of its own before the slots of its Ready. */
  markerBeforeSlots?: boolean;
  /** A Ready's commits are applied before its log writes are handed over. */
  applyBeforeLogWrite?: boolean;
  /** The leader ignores the writes followers forward to it. */
  dropForwards?: boolean;
}

export interface DriverParts {
  readonly clusterId: string;
  readonly peerId: string;
  readonly log: DriverLog;
  readonly state: DriverState;
  readonly net: DriverNet;
  readonly clock: DriverClock;
  /** Uniform in [0, 1): election timeouts and the start of read ids. */
  readonly random: () => number;
  readonly timing: DriverTiming;
  /** More options for the replica (the simulator's batch and byte bounds). */
  readonly replica?: Partial<ReplicaOptions>;
  /** Makes the replica (default `new Replica`): the simulator's self-test breaks one of its
   *  rules in a subclass. */
  readonly newReplica?: (opts: ReplicaOptions, state: Persisted) => Replica;
  readonly defects?: DriverDefects;
  /** A write to the log or the state failed: the node has stopped; the owner ends it. */
  readonly onFatal?: (err: unknown, what: string) => void;
  /** Latency histograms (the node's metrics); never consulted by any decision. */
  readonly observe?: DriverObserver;
  /** After each apply: the entries and their results (membership, metrics, the simulator's checks). */
  readonly onApplied?: (entries: readonly Entry[], results: readonly ApplyResult[]) => void;
  /** Each archive segment boundary, right after the state there is sealed (a snapshot
   *  taken then reads it, staged writes included: StateSnapshot over a FrozenStage). */
  readonly onSegment?: (bound: SegmentBound) => void;
  /** The core asked for a snapshot (peers pruned past this node's commit point). */
  readonly onSnapshotNeeded?: (from: string) => void;
  /** Once, when the core says this replica, removed from the configuration, may stop for
   *  good (Replica.departed): the node logs it and exits. */
  readonly onDeparted?: (fromSlot: number) => void;
  /** Why this write forwarded by a follower is refused now (the owner's admission), or null. */
  readonly admitForwarded?: (cmd: Command) => string | null;
  /** False: a follower answers `not_leader` instead of forwarding writes (default true). */
  readonly forwardWrites?: boolean;
}

interface PendingWrite {
  readonly done: (o: WriteOutcome) => void;
  readonly cancel: () => void;
  /** clock.now() when proposed (the commit latency histogram). */
  readonly at: number;
  /** When this node, leading, stamped it (proposeHere): its time, when the leader's clock
   *  read that time (logNow), and the ballot it led under. */
  readonly stamp?: { readonly time: number; readonly at: number; readonly ballot: Ballot };
}

/** noteLease rounds its constraints' offsets down to this (stricter by less than it). */
const OFFSET_GRAIN_MS = 50;

/** Latencies the driver measures on its own clock, for the node's histograms (ms). */
export interface DriverObserver {
  /** A log batch: handed to the log until durable. */
  logWrite?(ms: number): void;
  /** One apply of committed entries (staging its writes; their commit rides with the
   *  next log batch, src/state/staged.ts). */
  apply?(ms: number, entries: number): void;
  /** A write of this node's: proposed until applied and answered. */
  commit?(ms: number): void;
}

interface PendingRead {
  readonly done: (o: ReadOutcome) => void;
  index: number | null;
}

interface PendingForward {
  readonly done: (o: WriteOutcome) => void;
  /** The leader it went to: only its answer counts, and it is given up if another leads. */
  readonly leader: string;
  readonly cancel: () => void;
}

export class Driver {
  readonly replica: Replica;
  readonly counters = { proposals: 0, commits: 0, applied: 0, persistBatches: 0, reads: 0, readsRefused: 0, forwardsSent: 0, forwardsServed: 0, forwardsRefused: 0, forwardsDropped: 0 };
  private readonly parts: DriverParts;
  private readonly writes = new Map<Command, PendingWrite>();
  private readonly reads = new Map<number, PendingRead>();
  private readonly waitingReads: PendingRead[] = [];
  private readonly forwards = new Map<number, PendingForward>();
  /** Forwards served lately (`from:id`, oldest first): a frame that arrives twice is
   *  proposed once. The simulator's network duplicates frames; libp2p never resends one (a
   *  broken stream drops its queue), and that matters: a duplicate that reached a restarted
   *  leader would be proposed again, which a write with a request id survives (its session
   *  answers it) and one without does not. */
  private readonly forwardsSeen = new Set<string>();
  /** Like read ids, forward ids start at a random point: a late answer to a previous
   *  process's forward must not answer this one's. */
  private forwardId: number;
  /** Read ids start at a random multiple of 32 below 2^52, so a process never takes an id
   *  its previous incarnation used: a late reply to that one would confirm a new read with
   *  an older index (issue 10, bug 3). Two processes' ranges overlap with odds of about
   *  (reads per process) / 2^51. */
  private readId: number;
  private drainScheduled = false;
  private departedTold = false;
  private lastPersistSeq = 0;
  /** Log writes handed over and not yet durable or failed. */
  private writesInFlight = 0;
  /** A commit marker not written yet (see deferMarker), or 0. */
  private markerPending = 0;
  private idleWaiters: (() => void)[] = [];
  /** Applies wait for the log; they run in order, one chain. */
  private applyQueue: Ready[] = [];
  private applyWaiting = false;
  private stopTicks: (() => void) | null = null;
  private stopped = false;
  private failure: string | null = null;
  /** See logNow. */
  private logClock: { base: number; at: number };
  /** The applied log time, and when this node saw it move, or read it itself (logNow). */
  private logSeen: { time: number; at: number };
  /** When logNow's last reading was real on this node's clock (the clock crossed it). */
  private readingAt = 0;
  /** Leases this node applied grants or renewals of, as bounds on its readings (noteLease). */
  private leaseDue: { offset: number; until: number }[] = [];
  /** The commit index last seen moving, and when (stall detection). */
  private progress: { index: number; at: number };

  constructor(parts: DriverParts) {
    this.parts = parts;
    const loaded = parts.log.load();
    const applied = parts.state.applied();
    const persisted: Persisted = {
      promised: loaded.promised,
      slots: loaded.slots,
      base: applied.point,
      // Nothing compacted yet: the whole log from slot 1 can be served to peers.
      compacted: loaded.compacted ?? { slot: 0, index: 0, epochs: applied.point.epochs },
      commit: loaded.commit,
    };
    this.replica = (parts.newReplica ?? ((o, st) => new Replica(o, st)))(
      {
        id: parts.peerId,
        cluster: parts.clusterId,
        random: parts.random,
        electionTicks: parts.timing.electionTicks,
        heartbeatTicks: parts.timing.heartbeatTicks,
        ...parts.replica,
      },
      persisted,
    );
    this.readId = parts.defects?.reuseReadIds ? 0 : Math.floor(parts.random() * 2 ** 47) * 32;
    this.forwardId = Math.floor(parts.random() * 2 ** 47) * 32;
    this.logClock = { base: parts.state.logTime(), at: parts.clock.now() };
    this.logSeen = { time: parts.state.logTime(), at: parts.clock.now() };
    this.progress = { index: this.replica.commit.index, at: parts.clock.now() };
    parts.net.onMessage((env) => {
      if (this.stopped) return;
      const type = (env as { msg?: { type?: unknown } } | null)?.msg?.type;
      if (type === 'fwd' || type === 'fwd_reply') return this.onForwardFrame(env);
      this.replica.step(env);
      this.scheduleDrain();
    });
  }

  /** Starts ticking. */
  start(): void {
    const tick = (): void => {
      if (this.stopped) return;
      this.stalledMs(); // keeps the commit-progress clock current
      this.writeMarker();
      this.parts.state.handOver();
      this.abandonForwards();
      this.replica.tick();
      this.scheduleDrain();
      this.stopTicks = this.parts.clock.after(this.parts.timing.tickMs, tick);
    };
    this.stopTicks = this.parts.clock.after(this.parts.timing.tickMs, tick);
    this.scheduleDrain();
  }

  get isStopped(): boolean {
    return this.stopped;
  }

  /** Why the node failed (fail-stop), once it has. */
  get failed(): string | null {
    return this.failure;
  }

  /**
   * Fail-stop: a write to the log or the state failed. Stops serving at once (every waiting
   * client is answered) and tells the owner, which ends the process; a restart recovers from
   * what is durable. Nothing is retried, an fsync least of all.
   */
  fail(err: unknown, what: string): void {
    if (this.failure !== null) return;
    this.failure = `${what} failed: ${(err as Error)?.message ?? String(err)}`;
    this.stop();
    this.parts.onFatal?.(err, what);
  }

  /**
   * Stops: waiting writes are answered `outcome_unknown`, waiting reads `unavailable`. A clean
   * stop writes a deferred commit marker first (prune-hot reads it offline); `killed` (the
   * simulator's crash: the process is gone) writes nothing.
   */
  stop(killed = false): void {
    if (this.stopped) return;
    if (this.failure === null && !killed) this.writeMarker();
    this.stopped = true;
    this.stopTicks?.();
    for (const w of [...this.writes.values(), ...this.forwards.values()]) {
      w.cancel();
      w.done({ ok: false, refusal: { kind: 'outcome_unknown', message: 'the node is shutting down' } });
    }
    this.writes.clear();
    this.forwards.clear();
    for (const r of [...this.reads.values(), ...this.waitingReads]) r.done({ ok: false, refusal: { kind: 'unavailable', message: 'the node is shutting down' } });
    this.reads.clear();
    this.waitingReads.length = 0;
    if (this.writesInFlight === 0) this.wakeIdle();
  }

  /** Calls `done` once no log write handed over is still in flight. */
  whenLogIdle(done: () => void): void {
    if (this.writesInFlight === 0) done();
    else this.idleWaiters.push(done);
  }

  private wakeIdle(): void {
    for (const w of this.idleWaiters.splice(0)) w();
  }

  // ------------------------------------------------------------------------------------
  // The Ready loop.

  /** Drains the core once per event-loop turn, so writes of one turn share a commit. */
  private scheduleDrain(): void {
    if (this.drainScheduled || this.stopped) return;
    this.drainScheduled = true;
    this.parts.clock.soon(() => {
      this.drainScheduled = false;
      this.drain();
    });
  }

  private drain(): void {
    for (let ready = this.replica.ready(); ready !== null && !this.stopped; ready = this.replica.ready()) {
      this.perform(ready);
    }
    this.refuseDropped();
    if (!this.departedTold && this.replica.departed !== null && !this.stopped) {
      this.departedTold = true;
      this.parts.onDeparted?.(this.replica.departed.fromSlot);
    }
  }

  /** Writes a leader queued and dropped unproposed when it stepped down are in no slot:
   *  their clients hear so now (safe to retry elsewhere), not at the proposal timeout. */
  private refuseDropped(): void {
    for (const cmd of this.replica.takeDropped()) {
      const pending = this.writes.get(cmd);
      if (pending === undefined) continue;
      this.writes.delete(cmd);
      pending.cancel();
      pending.done({ ok: false, refusal: { kind: 'unavailable', message: 'the leader stepped down before proposing it: it was not applied; retry' } });
    }
  }

  /**
   * Why the commit marker waits: it is only what this replica learned (a restart learns it
   * again from the applied point, which covers at least what was applied, and from the
   * leader), yet written on its own it costs a commit and an fsync, and every apply waits
   * for the log writes handed over before it: a lone write would wait for three serial
   * fsyncs (its slot, the marker, the apply) where two are needed. A marker written with
   * later slots is never ahead of them on disk, so the log never serves as chosen a slot
   * it does not hold (LmdbLogStore.readSlots). The core needs no durability of it:
   * `persisted` acknowledges promises and slots only, except where messages wait on the
   * batch (`held`: a commit reply, which must never name a commit a restart takes back).
   */
  private deferMarker(persist: readonly PersistOp[], held: boolean): readonly PersistOp[] {
    if (this.parts.defects?.markerBeforeSlots) {
      const markers = persist.filter((op) => op.kind === 'commit');
      if (markers.length > 0) {
        this.markerPending = Math.max(this.markerPending, ...markers.map((op) => (op.kind === 'commit' ? op.slot : 0)));
        this.writeMarker();
      }
      return persist.filter((op) => op.kind !== 'commit');
    }
    if (!held && persist.length > 0 && persist.every((op) => op.kind === 'commit')) {
      for (const op of persist) if (op.kind === 'commit') this.markerPending = Math.max(this.markerPending, op.slot);
      return [];
    }
    if (this.markerPending === 0) return persist;
    const marker: PersistOp = { kind: 'commit', slot: this.markerPending };
    this.markerPending = 0;
    return [...persist, marker];
  }

  /** Writes a deferred commit marker on its own (each tick), so it is never stale for long. */
  private writeMarker(): void {
    if (this.markerPending === 0 || this.stopped) return;
    const marker: PersistOp = { kind: 'commit', slot: this.markerPending };
    this.markerPending = 0;
    this.writesInFlight++;
    this.parts.log.write([marker], (err) => {
      this.writesInFlight--;
      if (this.writesInFlight === 0) this.wakeIdle();
      if (err !== undefined) this.fail(err, 'writing the log');
    });
  }

  private perform(ready: Ready): void {
    if (this.parts.defects?.applyBeforeLogWrite && ready.commit.length > 0) {
      try {
        this.apply(ready.commit);
      } catch (e) {
        return this.fail(e, 'applying committed entries');
      }
      ready = { ...ready, commit: [] };
    }
    if (ready.persistSeq > this.lastPersistSeq) {
      const { persistSeq: seq, sendAfterPersist } = ready;
      const persist = this.deferMarker(ready.persist, sendAfterPersist.length > 0);
      this.lastPersistSeq = seq;
      this.counters.persistBatches++;
      this.writesInFlight++;
      const early = this.parts.defects?.persistedBeforeFlush === true;
      if (early) {
        if (sendAfterPersist.length > 0) this.parts.net.send(sendAfterPersist);
        this.replica.persisted(seq);
        this.scheduleDrain();
      }
      const handedAt = this.parts.clock.now();
      this.parts.log.write(persist, (err) => {
        this.writesInFlight--;
        this.parts.observe?.logWrite?.(this.parts.clock.now() - handedAt);
        if (this.writesInFlight === 0) this.wakeIdle();
        if (err !== undefined) return this.fail(err, 'writing the log');
        if (this.stopped || early) return;
        if (sendAfterPersist.length > 0) this.parts.net.send(sendAfterPersist);
        this.replica.persisted(seq);
        this.scheduleDrain();
      });
    }
    if (ready.send.length > 0) this.parts.net.send(ready.send);
    if (ready.commit.length > 0 || ready.reads.length > 0) {
      this.applyQueue.push(ready);
      this.pumpApplies();
    }
    if (ready.snapshotNeeded !== null) this.parts.onSnapshotNeeded?.(ready.snapshotNeeded.from);
  }

  /** Applies queued commits in order, each once the log writes handed over before it are
   *  committed (one wait covers every Ready queued by then). */
  private pumpApplies(): void {
    if (this.applyWaiting || this.applyQueue.length === 0 || this.stopped) return;
    this.applyWaiting = true;
    const batch = this.applyQueue.splice(0);
    this.parts.log.committed((err) => {
      this.applyWaiting = false;
      if (err !== undefined) return this.fail(err, 'applying committed entries');
      if (this.stopped) return;
      try {
        // One apply for every Ready that waited; its writes are visible at once (staged,
        // src/state/staged.ts). Reads then see at least what their Ready committed.
        const entries = batch.length === 1 ? batch[0]!.commit : batch.flatMap((ready) => ready.commit);
        if (entries.length > 0) this.apply(entries);
        for (const ready of batch) for (const r of ready.reads) this.onReadState(r.id, r.index);
      } catch (e) {
        return this.fail(e, 'applying committed entries');
      }
      this.pumpApplies();
    });
  }

  private apply(entries: readonly Entry[]): void {
    const started = this.parts.clock.now();
    const results = this.parts.state.apply(entries, this.parts.onSegment);
    const now = this.parts.clock.now();
    this.seeApplied(entries, results, now);
    this.parts.observe?.apply?.(now - started, entries.length);
    this.counters.commits += entries.length;
    let i = 0;
    for (const entry of entries) {
      for (const cmd of entry.batch) {
        const result = results[i++];
        const pending = this.writes.get(cmd);
        if (pending !== undefined && result !== undefined) {
          this.writes.delete(cmd);
          pending.cancel();
          this.parts.observe?.commit?.(now - pending.at);
          pending.done({ ok: true, result });
        }
      }
    }
    this.counters.applied += i;
    this.parts.onApplied?.(entries, results);
    this.releaseReads();
  }

  // ------------------------------------------------------------------------------------
  // Inputs from outside the core.

  /** Chosen values block sync fetched and checked: through the core's catch-up path. */
  /** Hands leadership to voter `to` (Replica.transferLeadership). */
  transferLeadership(to: string): TransferResult {
    const r = this.replica.transferLeadership(to);
    this.scheduleDrain();
    return r;
  }

  learnChosen(values: readonly SlotValue[]): void {
    if (this.stopped) return;
    this.replica.learnChosen(values);
    this.scheduleDrain();
  }

  /** Prunes the hot log through `point` (a snapshot point at or below the applied one). */
  compact(point: LogPoint): void {
    if (this.stopped) return;
    const applied = this.parts.state.committedPoint();
    if (point.slot > applied.slot) throw new Error(`cannot prune through slot ${point.slot}: applied (and committed) only through ${applied.slot}`);
    this.replica.compact(point);
    this.scheduleDrain();
  }

  /**
   * Log time as this node reads it, for the commands it proposes. Only the leader's reading
   * moves log time: it stamps every command it proposes, its clients' and those forwarded to
   * it (proposeHere), so while a leader holds there is one clock. Any other node's reading
   * is the applied log time, which moves nothing (its commands are stamped again by the
   * leader; those it proposes itself while it does not lead carry it).
   *
   * The leader's reading: the applied log time when it started, plus its monotonic time
   * since; moved up to the applied log time whenever that ran ahead, and down to a ceiling
   * when this reading ran further ahead: the applied log time plus the time since it was
   * real here, at most a step (LOG_TIME_STEP_MS). A value is real here from when this node
   * stamped it on a command of its own that set it (seeLogTime), or else from when it saw it
   * applied. So log time keeps pace with the leader's clock however slow commits are, and
   * after a quiet spell or a stall it moves one step and forgives the rest: a stalled
   * cluster costs no lease its life. No wall clock: a clock stepped by an hour changes
   * nothing (issue 10, bug 4).
   *
   * What can take a lease early is log time catching up after its grant: a leader's first
   * reading past a value it saw applied late, once, by at most a step, and a lease lives a
   * step of grace past its TTL (LEASE_GRACE_MS). Found by three reviews of earlier rules:
   * readings of different nodes (and leaders in turn) stacked their leads and catch-ups;
   * followers' stamps kept log time from keeping pace; and a value matched to this node's
   * readings by number, not by command, credited another leader's value as this node's own,
   * a second catch-up (test/lease-clock.test.ts holds their schedules).
   */
  logNow(): number {
    const applied = this.parts.state.logTime();
    const now = this.parts.clock.now();
    this.seeLogTime(applied, now);
    let mine = this.logClock.base + (now - this.logClock.at);
    if (this.parts.defects?.logTimeUnclamped) return Math.floor(mine);
    if (this.replica.currentRole !== 'leader') return applied;
    let ceiling = applied + Math.min(LOG_TIME_STEP_MS, now - this.logSeen.at);
    // No lease this node applied a grant or renewal of may reach its expiry before its TTL
    // of this node's time since that apply (leaseDue).
    while (this.leaseDue.length > 0 && this.leaseDue[0]!.until <= applied) this.leaseDue.shift();
    const due = this.leaseDue[0];
    if (due !== undefined) ceiling = Math.max(applied, Math.min(ceiling, now + due.offset + LOG_TIME_STEP_MS));
    if (mine < applied || mine > ceiling) {
      mine = Math.min(Math.max(mine, applied), ceiling);
      this.logClock = { base: mine, at: now };
    }
    const reading = Math.floor(mine);
    // The clock crossed the whole millisecond read a fraction ago (clock.now() has fractions:
    // counting from now lost them on every command, and log time ran at half speed under
    // load: third review).
    this.readingAt = now - (mine - reading);
    return reading;
  }

  /** After an apply at `now`: the log time it reached (seeLogTime), and the leases it granted
   *  or renewed (leaseDue). */
  private seeApplied(entries: readonly Entry[], results: readonly ApplyResult[], now: number): void {
    const logTime = this.parts.state.logTime();
    this.seeLogTime(logTime, now, entries);
    // Only the grants and renewals this node answers: another node's answer is that node's
    // to keep (a backlog of them applied at once froze log time: review of noteLease).
    let i = 0;
    for (const entry of entries) {
      for (const cmd of entry.batch) {
        const r = results[i++];
        if (r === undefined || !this.writes.has(cmd)) continue;
        if (r.kind === 'lease_granted') this.noteLease(r.at, r.ttlMs, now, logTime);
        else if (r.kind === 'lease_kept') {
          let ttl = -1;
          for (const t of r.ttls) if (t !== null && t > ttl) ttl = t;
          if (ttl >= 0) this.noteLease(r.at, ttl, now, logTime);
        }
      }
    }
  }

  /**
   * A lease granted or renewed at log time `at` (its expiry is at + ttl + LEASE_GRACE_MS),
   * applied here at `now` and answered by this node: from now on this node's readings stay at or below at + a step +
   * the time since `now`, until log time passes that expiry. So log time reaches it no sooner
   * than the TTL after this node applied it, however far log time lagged when it did: with
   * a slow commit the lease's own stamp lags its answer, and the later stamps of the same
   * batch had already moved log time toward real time (fifth review: a stable leader's grant
   * applied 2.5 s after its stamp, with the leader's own tick and a write behind it, was gone
   * 970 ms early). Each constraint is `offset` = at - now; only the lowest offset among those
   * not yet past (`until`) binds, so the list keeps those no other one dominates: ordered by
   * `until`, offsets rising.
   *
   * Never below the log time this apply reached less a step: a node applying a backlog
   * (catching up, or elected with what its phase 1 brought in) applies long-answered grants
   * whose log time is far behind; bound by them, it froze log time as leader for as long as
   * the backlog spanned (review: a 2 s lease gone 13 s late). A slow commit of this node's
   * own never moves log time more than a step past the grant's (its readings all wait on
   * the same applied value), so the floor does not weaken the case above. Offsets are
   * rounded down to OFFSET_GRAIN_MS, so that a catch-up's thousands of renewals, whose offsets
   * all differ, collapse into a few (each a little stricter); the list stays short.
   */
  private noteLease(at: number, ttl: number, now: number, logTime: number): void {
    const offset = Math.floor((Math.max(at, logTime - LOG_TIME_STEP_MS) - now) / OFFSET_GRAIN_MS) * OFFSET_GRAIN_MS;
    const until = at + ttl + LEASE_GRACE_MS;
    while (this.leaseDue.length > 0 && this.leaseDue[0]!.until <= logTime) this.leaseDue.shift();
    const list = this.leaseDue;
    if (list.some((d) => d.until >= until && d.offset <= offset)) return;
    const kept = list.filter((d) => !(d.until <= until && d.offset >= offset));
    let i = kept.length;
    while (i > 0 && kept[i - 1]!.until > until) i--;
    kept.splice(i, 0, { offset, until });
    this.leaseDue = kept;
  }

  /**
   * Notes the applied log time `time` at `now`. When it moved, it is real here from now, or,
   * when one of this node's own stamped commands in `entries` set it, from when this node
   * stamped it: its commit's latency is not lost. Only commands, never values, are matched:
   * another leader's command with the same time proves nothing about this node's clock.
   */
  private seeLogTime(time: number, now: number, entries: readonly Entry[] = []): void {
    if (time === this.logSeen.time) return;
    let at = now;
    // Only stamps of the term this node leads now: a term's own slots follow every slot its
    // phase 1 recovered, so no other leader's command lands between such a stamp and its
    // command. An older stamp of ours recovered after another leader's grant would credit a
    // second catch-up (fourth review: 960 ms early).
    const ballot = this.replica.currentRole === 'leader' ? this.replica.currentBallot : null;
    for (const entry of entries) {
      for (const cmd of entry.batch) {
        const stamp = this.writes.get(cmd)?.stamp;
        if (stamp !== undefined && stamp.time === time && ballot !== null && ballotEquals(stamp.ballot, ballot)) at = Math.min(at, stamp.at);
      }
    }
    this.logSeen = { time, at };
  }

  /**
   * Hands `cmd` to consensus; `done` gets its result once applied (here, or on the leader a
   * follower forwarded it to), or why not. Only client writes (`app` commands) are forwarded.
   * Each call needs a Command object of its own: writes are known by object identity, and a
   * write handed back unproposed is refused `unavailable` (refuseDropped), which would be
   * wrong for another copy of the same object in a slot.
   */
  propose(cmd: Command, done: (o: WriteOutcome) => void): void {
    this.proposeHere(cmd, done, this.parts.forwardWrites !== false && cmd.kind === 'app');
  }

  private proposeHere(cmd: Command, done: (o: WriteOutcome) => void, mayForward: boolean): void {
    if (this.stopped) return done({ ok: false, refusal: { kind: 'unavailable', message: 'the node is shutting down' } });
    let stamp: PendingWrite['stamp'];
    if (cmd.kind === 'app' && this.replica.currentRole === 'leader' && !this.parts.defects?.logTimeUnclamped) {
      // The leader's clock stamps what it proposes (logNow).
      const time = this.logNow();
      const data = restampAppCommand(cmd.data, time);
      if (data !== null) {
        cmd = { kind: 'app', data };
        stamp = { time, at: this.readingAt, ballot: this.replica.currentBallot };
      }
    }
    const result = this.replica.propose(cmd);
    if (!result.ok) {
      if (result.reason === 'not_leader') {
        // A node outside the configuration (removed) does not forward: the leader would refuse
        // it, and the client goes to the leader at once (simulator seed 703125).
        if (mayForward && result.leader !== null && result.leader !== this.parts.peerId && isMember(this.replica.latestConfig, this.parts.peerId)) {
          return this.forward(cmd, result.leader, done);
        }
        return done({ ok: false, refusal: { kind: 'not_leader', leader: result.leader } });
      }
      const why =
        result.reason === 'busy' ? 'the proposal queue is full' : result.reason === 'transferring' ? 'the leader is handing leadership to another voter' : 'a membership change is in progress';
      return done({ ok: false, refusal: { kind: 'unavailable', message: why } });
    }
    this.counters.proposals++;
    this.scheduleDrain();
    const cancel = this.parts.clock.after(this.parts.timing.proposalTimeoutMs, () => {
      if (!this.writes.delete(cmd)) return;
      done({ ok: false, refusal: { kind: 'outcome_unknown', message: `no outcome within ${this.parts.timing.proposalTimeoutMs} ms; it may still be applied` } });
    });
    this.writes.set(cmd, { done, cancel, at: this.parts.clock.now(), ...(stamp === undefined ? {} : { stamp }) });
  }

  // ------------------------------------------------------------------------------------
  // Writes forwarded to the leader.

  private forward(cmd: Command, leader: string, done: (o: WriteOutcome) => void): void {
    const id = ++this.forwardId;
    const waitMs = this.parts.timing.proposalTimeoutMs + FORWARD_SLACK_MS;
    const cancel = this.parts.clock.after(waitMs, () => {
      if (!this.forwards.delete(id)) return;
      done({ ok: false, refusal: { kind: 'outcome_unknown', message: `no answer from the leader within ${waitMs} ms; it may still be applied` } });
    });
    this.forwards.set(id, { done, leader, cancel });
    this.counters.forwardsSent++;
    const ballot = this.replica.currentBallot;
    this.parts.net.send([{ cluster: this.parts.clusterId, from: this.parts.peerId, to: leader, msg: { type: 'fwd', id, ballot, cmd } }]);
  }

  /** Forwards whose leader no longer leads (as this node sees it) get no answer: say so now
   *  rather than at the timeout. The old leader may have applied them. */
  private abandonForwards(): void {
    if (this.forwards.size === 0) return;
    const leader = this.replica.currentLeader;
    for (const [id, f] of this.forwards) {
      if (f.leader === leader) continue;
      this.forwards.delete(id);
      f.cancel();
      f.done({ ok: false, refusal: { kind: 'outcome_unknown', message: `the leader ${f.leader} lost its lead before answering; the write may still be applied` } });
    }
  }

  private onForwardFrame(raw: unknown): void {
    const env = forwardEnvelope(raw);
    if (env === null || env.cluster !== this.parts.clusterId || env.to !== this.parts.peerId) {
      this.counters.forwardsDropped++;
      return;
    }
    const { from, msg } = env;
    if (msg.type === 'fwd_reply') {
      const f = this.forwards.get(msg.id);
      if (f === undefined || f.leader !== from) {
        this.counters.forwardsDropped++;
        return;
      }
      this.forwards.delete(msg.id);
      f.cancel();
      f.done(msg.outcome);
      return;
    }
    if (this.parts.defects?.dropForwards) return;
    const key = `${from}:${msg.id}`;
    if (this.forwardsSeen.has(key)) {
      this.counters.forwardsDropped++;
      return;
    }
    this.forwardsSeen.add(key);
    if (this.forwardsSeen.size > FORWARDS_SEEN_MAX) this.forwardsSeen.delete(this.forwardsSeen.values().next().value!);
    const answer = (outcome: WriteOutcome): void => {
      if (this.stopped) return;
      this.parts.net.send([{ cluster: this.parts.clusterId, from: this.parts.peerId, to: from, msg: { type: 'fwd_reply', id: msg.id, outcome } }]);
    };
    // First: a term of this node's own that it no longer leads may have taken the write (in an
    // earlier process, or before the duplicate check forgot it), so any refusal of it would be
    // a lie that the follower acts on by sending it again (review of 4b91980: a late copy after
    // a quick restart was refused not_leader; review of aa5dc9b: the membership and admission
    // refusals below came first and said unavailable).
    const leading = this.replica.currentRole === 'leader' && ballotEquals(this.replica.currentBallot, msg.ballot);
    if (!leading && msg.ballot.leader === this.parts.peerId) {
      this.counters.forwardsRefused++;
      return answer({ ok: false, refusal: { kind: 'outcome_unknown', message: `this node no longer leads the term (${msg.ballot.round}) the write was handed to` } });
    }
    // Only a member may hand us writes (the transport authenticated `from`). One that is not
    // (removed, and not told yet) hears so, and its client tries elsewhere (simulator seed 83:
    // a silent drop left the client waiting for its timeout).
    if (!isMember(this.replica.latestConfig, from)) {
      this.counters.forwardsRefused++;
      return answer({ ok: false, refusal: { kind: 'unavailable', message: `${from} is not a member of the cluster's configuration` } });
    }
    const refused = this.parts.admitForwarded?.(msg.cmd) ?? null;
    if (refused !== null) return answer({ ok: false, refusal: { kind: 'unavailable', message: refused } });
    // Never forwarded again: a node that does not lead under the follower's term says so (a
    // term not its own: it never took the write), and the follower answers.
    if (!leading) return answer({ ok: false, refusal: { kind: 'not_leader', leader: this.replica.currentLeader } });
    this.counters.forwardsServed++;
    this.proposeHere(msg.cmd, answer, false);
  }

  /** A linearizable read point: `done` gets the applied index once it covers the read. */
  read(done: (o: ReadOutcome) => void): void {
    if (this.stopped) return done({ ok: false, refusal: { kind: 'unavailable', message: 'the node is shutting down' } });
    if (this.readsWaiting >= READS_WAITING_MAX) {
      this.counters.readsRefused++;
      return done({ ok: false, refusal: { kind: 'unavailable', message: `${READS_WAITING_MAX} reads are waiting already` } });
    }
    this.counters.reads++;
    const id = ++this.readId;
    this.reads.set(id, { done, index: null });
    this.replica.read(id);
    this.scheduleDrain();
  }

  private onReadState(id: number, index: number | null): void {
    const r = this.reads.get(id);
    if (r === undefined) return;
    this.reads.delete(id);
    if (index === null) {
      r.done({ ok: false, refusal: { kind: 'unavailable', message: 'no leader could confirm a read index now' } });
      return;
    }
    r.index = index;
    this.waitingReads.push(r);
    this.releaseReads();
  }

  private releaseReads(): void {
    if (this.waitingReads.length === 0) return;
    const applied = this.parts.state.applied().point.index;
    for (let i = 0; i < this.waitingReads.length; ) {
      const r = this.waitingReads[i]!;
      if (r.index !== null && (r.index <= applied || this.parts.defects?.readBeforeApplied)) {
        this.waitingReads.splice(i, 1);
        r.done({ ok: true, index: applied });
      } else i++;
    }
  }

  // ------------------------------------------------------------------------------------
  // Views.

  /** Writes waiting here: handed to consensus, or forwarded to the leader. */
  get pendingWrites(): number {
    return this.writes.size + this.forwards.size;
  }

  /** Reads waiting for a read index or for the apply to reach it. */
  get readsWaiting(): number {
    return this.reads.size + this.waitingReads.length;
  }

  /** How long the commit index has not moved while writes wait here (0 if none wait). */
  stalledMs(): number {
    const index = this.replica.commit.index;
    const now = this.parts.clock.now();
    if (this.writes.size === 0 || index !== this.progress.index) this.progress = { index, at: now };
    return now - this.progress.at;
  }

}

// ------------------------------------------------------------------------------------
// Forward frames off the wire: checked here, since the core never sees them.

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const isId = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const isText = (v: unknown, max = 4096): v is string => typeof v === 'string' && v.length <= max;
const REFUSALS = new Set(['not_leader', 'unavailable', 'outcome_unknown']);

function isOutcome(v: unknown): v is WriteOutcome {
  if (!isObj(v)) return false;
  if (v.ok === true) return isObj(v.result) && isText(v.result.kind, 64) && isId(v.result.index);
  if (v.ok !== false || !isObj(v.refusal) || !REFUSALS.has(v.refusal.kind as string)) return false;
  return v.refusal.kind === 'not_leader' ? v.refusal.leader === null || isText(v.refusal.leader, 128) : isText(v.refusal.message);
}

function forwardEnvelope(raw: unknown): ForwardEnvelope | null {
  if (!isObj(raw) || !isText(raw.cluster, 128) || !isText(raw.from, 128) || !isText(raw.to, 128) || !isObj(raw.msg)) return null;
  const m = raw.msg;
  if (!isId(m.id)) return null;
  // The core's own checks of a ballot and a command; only client writes are forwarded.
  if (m.type === 'fwd') return isBallot(m.ballot) && isCommand(m.cmd) && m.cmd.kind === 'app' ? (raw as unknown as ForwardEnvelope) : null;
  if (m.type === 'fwd_reply' && isOutcome(m.outcome)) return raw as unknown as ForwardEnvelope;
  return null;
}
