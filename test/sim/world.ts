/**
 * The deterministic simulator: replicas of the pure consensus core, a network, durable
 * storage, a key/value state machine and clients, all driven by one seeded scheduler.
 *
 * Faults: message loss, delay, duplication and reordering; garbage messages; crashes that
 * lose everything not yet durable (including a random part of what was being persisted);
 * restarts; partitions; compaction behind snapshots, snapshot transfer; membership changes.
 *
 * Checks, at every commit: no two replicas commit different values at a slot or index,
 * every committed command was proposed by a client and committed once, every replica
 * applies the chosen sequence in order. At the end, with the network healed: new proposals
 * commit within a bound, replicas converge, every acknowledged write is in the log, and the
 * client history is linearizable (checked by a search over the history, not by replaying
 * the implementation).
 */
import {
  BALLOT_NONE,
  Replica,
  bootstrapState,
  formatBallot,
  type Ballot,
  type Batch,
  type Command,
  type Defects,
  type Entry,
  type Envelope,
  type LogPoint,
  type NodeId,
  type Persisted,
  type PersistOp,
  type Ready,
  type StoredSlot,
} from '../../src/consensus/index.js';
import { EventHeap } from './heap.js';
import { checkLinearizable, kvModel, type KvOutput, type Operation } from './linearizability.js';
import { Rng } from './rng.js';

export interface SimOptions {
  readonly seed: number;
  /** Voters at the start (default: 3 to 5, drawn from the seed). */
  readonly replicas?: number;
  /** Ticks of the fault phase. */
  readonly faultTicks?: number;
  readonly clients?: number;
  readonly defects?: Defects;
  /** Keep a trace of every event (slower; used to print a failure). */
  readonly trace?: boolean;
}

export interface SimStats {
  leaderChanges: number;
  crashes: number;
  partitions: number;
  membershipChanges: number;
  compactions: number;
  snapshotsInstalled: number;
  garbage: number;
  pauses: number;
  acked: number;
  unknown: number;
  reads: number;
  slots: number;
}

export interface SimResult {
  readonly seed: number;
  readonly ok: boolean;
  readonly error?: string;
  readonly trace: readonly string[];
  readonly stats: SimStats;
}

/** The tight seeds' bound on chosen values a replica keeps in memory (checked at every Ready). */
const TIGHT_RETAIN_BYTES = 256;
const TICK = 10; // time units per replica tick
export const DEFAULT_FAULT_TICKS = 400;
const ELECTION_TICKS = 10;
const WRITE_TIMEOUT = 60 * TICK;
const READ_TIMEOUT = 30 * TICK;
const FINAL_TICKS = 250;
const KEYS = ['a', 'b', 'c', 'd', 'e', 'f'];

class SimFailure extends Error {}

type In = { kind: 'put'; key: string; value: string } | { kind: 'get'; key: string } | { kind: 'cas'; key: string; expect: string | null; value: string };
type Out = KvOutput;

interface ClientCmd {
  readonly c: number;
  readonly s: number;
  readonly op: 'put' | 'cas';
  readonly k: string;
  readonly v: string;
  readonly e?: string | null;
}

interface Op {
  readonly client: number;
  readonly seq: number;
  readonly input: In;
  readonly call: number;
  output: Out;
  ret: number;
  /** Handed to consensus: its effect may appear even if the client never hears back. */
  handed: boolean;
  /** The replica and ballot that took it: a leader that steps down drops what it queued. */
  handedTo?: { node: NodeId; ballot: string };
  done: boolean;
  readonly finalPhase: boolean;
  /** Not a client's: completes without starting a next operation. */
  readonly probe?: boolean;
}

interface DurableLog {
  promised: Ballot;
  commit: number;
  slots: Map<number, StoredSlot>;
  compacted: LogPoint;
}

interface StateMachine {
  kv: Map<string, string>;
  point: LogPoint;
}

interface Batchlet {
  seq: number;
  ops: readonly PersistOp[];
  after: readonly Envelope[];
  /** The state machine as of this batch: it lives in the same store and is flushed with it. */
  sm: StateMachine;
}

class SimNode {
  alive = true;
  removed = false;
  incarnation = 0;
  replica: Replica | null = null;
  unacked: Batchlet[] = [];
  lastPersistTime = 0;
  /** Writes waiting for their command to be applied here, by client command key. */
  writes = new Map<string, Op>();
  readIds = 0;
  reads = new Map<number, Op>();
  waitingReads: { index: number; op: Op }[] = [];
  snapshotFetching = false;
  leaderTermsBefore = 0;
  pausedUntil = 0;
  wasLeader = false;

  constructor(
    readonly id: NodeId,
    public log: DurableLog,
    public sm: StateMachine,
    /** What of the state machine is on disk: applies are durable only with a later flush. */
    public smDurable: StateMachine,
  ) {}
}

type SimEvent =
  | { time: number; order: number; kind: 'tick'; node: NodeId; inc: number }
  | { time: number; order: number; kind: 'deliver'; env: Envelope }
  | { time: number; order: number; kind: 'persisted'; node: NodeId; inc: number; seq: number }
  | { time: number; order: number; kind: 'client'; client: number }
  | { time: number; order: number; kind: 'timeout'; op: Op }
  | { time: number; order: number; kind: 'retry'; op: Op }
  | { time: number; order: number; kind: 'restart'; node: NodeId }
  | { time: number; order: number; kind: 'heal' }
  | { time: number; order: number; kind: 'snapshot'; node: NodeId; inc: number; from: NodeId }
  | { time: number; order: number; kind: 'stop'; node: NodeId };

type EventBody = SimEvent extends infer E ? (E extends SimEvent ? Omit<E, 'time' | 'order'> : never) : never;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export class World {
  private readonly rng: Rng;
  private readonly faultRng: Rng;
  private readonly netRng: Rng;
  private readonly clientRng: Rng;
  private readonly events = new EventHeap<SimEvent>();
  private order = 0;
  private now = 0;
  private readonly nodes = new Map<NodeId, SimNode>();
  private nextNodeId = 0;
  private partition: Set<NodeId> | null = null;
  private loss: number;
  private dup: number;
  /** Chance that one fsync stalls far longer than a network round trip. */
  private readonly slowSync: number;
  /** Chance, per acknowledged write and per election, of a fault placed right there. */
  private readonly buggify: number;
  private faultsOn = true;
  private clientsOn = true;
  private readonly cluster = 'sim';
  private readonly genesis: LogPoint;
  private readonly traceOn: boolean;
  private readonly traceLines: string[] = [];

  // Global knowledge for the checks.
  private readonly chosen = new Map<number, { fp: string; index: number }>();
  private readonly committedCmd = new Map<string, number>();
  private readonly proposed = new Map<string, string>();
  private readonly history: Op[] = [];
  private readonly clientSeq: number[] = [];
  private readonly clientPending: (Op | null)[] = [];
  private readonly leaderHint: (NodeId | null)[] = [];
  private readonly decoded = new WeakMap<Uint8Array, ClientCmd>();
  private lastAckedKey = KEYS[0]!;
  private pendingCrash: SimNode | null = null;
  private probeSeq = 0;
  readonly stats: SimStats = emptyStats();

  constructor(private readonly opts: SimOptions) {
    this.rng = new Rng(opts.seed);
    this.faultRng = this.rng.fork();
    this.netRng = this.rng.fork();
    this.clientRng = this.rng.fork();
    this.traceOn = opts.trace ?? false;
    // Each seed draws its own weather, so that campaigns cover calm and stormy runs.
    this.loss = this.rng.pick([0.01, 0.05, 0.1, 0.25]);
    this.dup = this.rng.pick([0, 0.03, 0.1]);
    this.slowSync = this.rng.pick([0, 0.05, 0.2]);
    this.buggify = this.rng.pick([0, 0.02, 0.1]);
    const voters = opts.replicas ?? this.rng.int(3, 5);
    const ids: NodeId[] = [];
    for (let i = 0; i < voters; i++) ids.push(this.newNodeId());
    const learners: NodeId[] = [];
    if (this.rng.chance(0.3)) learners.push(this.newNodeId());
    this.genesis = bootstrapState({ voters: ids, learners }).base;
    for (const id of [...ids, ...learners]) this.addNode(id);
    const clients = opts.clients ?? this.rng.int(3, 5);
    for (let c = 0; c < clients; c++) {
      this.clientSeq.push(0);
      this.clientPending.push(null);
      this.leaderHint.push(null);
      this.schedule(this.rng.int(1, 3 * TICK), { kind: 'client', client: c });
    }
  }

  /** Runs the fault phase and the final phase; throws SimFailure on the first violation. */
  run(): void {
    const faultEnd = (this.opts.faultTicks ?? DEFAULT_FAULT_TICKS) * TICK;
    let nextFault = 5 * TICK;
    while (this.now < faultEnd) {
      if (this.now >= nextFault) {
        this.injectFault();
        nextFault = this.now + this.faultRng.int(3, 15) * TICK;
      }
      if (!this.step()) break;
    }
    this.settle();
  }

  // ------------------------------------------------------------------------------------
  // Scheduling.

  private schedule(delay: number, body: EventBody): void {
    const ev = body as SimEvent;
    ev.time = this.now + delay;
    ev.order = this.order++;
    this.events.push(ev);
  }

  private step(): boolean {
    const ev = this.events.pop();
    if (ev === undefined) return false;
    this.now = ev.time;
    this.handle(ev);
    return true;
  }

  private handle(ev: SimEvent): void {
    const target = ev.kind === 'tick' || ev.kind === 'persisted' ? ev.node : ev.kind === 'deliver' ? ev.env.to : null;
    if (target !== null) {
      const node = this.nodes.get(target);
      if (node !== undefined && node.pausedUntil > this.now) {
        // A paused process (a long GC, a stopped VM) sees its timers fire before its mail.
        this.schedule(node.pausedUntil - this.now + (ev.kind === 'deliver' ? 1 : 0), ev as EventBody);
        return;
      }
    }
    switch (ev.kind) {
      case 'tick': {
        const node = this.nodes.get(ev.node)!;
        if (!node.alive || node.incarnation !== ev.inc) return;
        node.replica!.tick();
        this.drain(node);
        this.schedule(TICK, { kind: 'tick', node: node.id, inc: node.incarnation });
        return;
      }
      case 'deliver': {
        const node = this.nodes.get(ev.env.to);
        if (node === undefined || !node.alive) return;
        if (!this.connected(ev.env.from, ev.env.to)) return;
        if (this.traceOn) this.trace(`deliver ${ev.env.from}->${ev.env.to} ${describe(ev.env)}`);
        node.replica!.step(ev.env);
        this.drain(node);
        return;
      }
      case 'persisted':
        return this.onPersisted(ev.node, ev.inc, ev.seq);
      case 'client':
        return this.clientStep(ev.client);
      case 'timeout':
        return this.onTimeout(ev.op);
      case 'retry':
        return this.submit(ev.op);
      case 'restart':
        return this.restart(ev.node);
      case 'heal':
        if (this.traceOn) this.trace('heal');
        this.partition = null;
        return;
      case 'snapshot':
        return this.onSnapshotFetched(ev.node, ev.inc, ev.from);
      case 'stop': {
        const node = this.nodes.get(ev.node)!;
        if (this.stillMember(node.id)) node.removed = false; // the removal never committed
        else if (node.alive) this.crash(node, 'stop (removed)');
        return;
      }
    }
  }

  // ------------------------------------------------------------------------------------
  // Nodes: start, drive, crash, restart.

  private newNodeId(): NodeId {
    return `n${this.nextNodeId++}`;
  }

  private addNode(id: NodeId): SimNode {
    const state = { kv: new Map<string, string>(), point: this.genesis };
    const node = new SimNode(id, { promised: BALLOT_NONE, commit: 0, slots: new Map(), compacted: this.genesis }, state, copyState(state));
    this.nodes.set(id, node);
    this.start(node);
    return node;
  }

  private start(node: SimNode): void {
    const persisted: Persisted = {
      promised: node.log.promised,
      slots: [...node.log.slots.values()],
      base: node.sm.point,
      compacted: node.log.compacted,
      commit: node.log.commit,
    };
    node.alive = true;
    node.incarnation++;
    node.unacked = [];
    node.lastPersistTime = this.now;
    node.snapshotFetching = false;
    const random = this.rng.fork();
    node.replica = new Replica(
      {
        id: node.id,
        cluster: this.cluster,
        random: () => random.float(),
        electionTicks: ELECTION_TICKS,
        heartbeatTicks: 2,
        alpha: 8,
        batchCommandsMax: 16,
        catchupSlotsMax: 16,
        // Every fourth seed (3, 7, ...) bounds bytes so tightly (commands are ~60 bytes) that batches, the
        // window, accept and catch-up messages, the proposal queue and the chosen values kept
        // in memory are cut by bytes.
        ...(this.opts.seed % 4 === 3 ? { batchBytesMax: 256, windowBytesMax: 1024, messageBytesMax: 512, proposalQueueBytesMax: 2048, retainBytesMax: TIGHT_RETAIN_BYTES } : {}),
        ...(this.opts.defects ? { defects: this.opts.defects } : {}),
      },
      persisted,
    );
    if (this.traceOn) this.trace(`start ${node.id} base=${node.sm.point.slot} compacted=${node.log.compacted.slot} promised=${formatBallot(node.log.promised)}`);
    this.schedule(this.rng.int(1, TICK), { kind: 'tick', node: node.id, inc: node.incarnation });
    this.drain(node);
  }

  /** Everything a Ready asks for, as a real driver would do it. */
  private drain(node: SimNode): void {
    for (;;) {
      if (!node.alive) return;
      const ready = node.replica!.ready();
      if (ready === null) break;
      this.perform(node, ready);
    }
    if (!node.alive) return;
    const leading = node.replica!.currentRole === 'leader';
    const elected = leading && !node.wasLeader;
    node.wasLeader = leading;
    if (elected && this.faultsOn && this.faultRng.chance(this.buggify * 5)) this.probeRead(node);
    if (this.pendingCrash !== null) {
      const victim = this.pendingCrash;
      this.pendingCrash = null;
      // Sometimes the whole cluster loses power at that moment: only what is durable survives.
      const victims = this.faultRng.chance(0.3) ? [...this.nodes.values()] : [victim];
      for (const v of victims) {
        if (!v.alive || v.removed) continue;
        this.stats.crashes++;
        this.crash(v, victims.length > 1 ? 'power loss right after an acknowledgement' : 'right after acknowledging a write');
        this.schedule(this.faultRng.int(3, 40) * TICK, { kind: 'restart', node: v.id });
      }
    }
  }

  /** A read of the most recently acknowledged key, sent to a leader the moment it is elected. */
  private probeRead(node: SimNode): void {
    const client = this.clientSeq.length; // probes are their own client
    const op: Op = {
      client,
      seq: ++this.probeSeq,
      input: { kind: 'get', key: this.lastAckedKey },
      call: this.now,
      output: {},
      ret: Infinity,
      handed: false,
      done: false,
      finalPhase: false,
      probe: true,
    };
    const id = ++node.readIds;
    node.reads.set(id, op);
    node.replica!.read(id);
    this.schedule(READ_TIMEOUT, { kind: 'timeout', op });
    this.drain(node);
  }

  private perform(node: SimNode, r: Ready): void {
    const held = node.replica!.chosenBytesInMemory();
    if (this.opts.seed % 4 === 3 && held > TIGHT_RETAIN_BYTES) {
      throw new SimFailure(`${node.id}: holds ${held} bytes of chosen values in memory, over the ${TIGHT_RETAIN_BYTES} it may keep`);
    }
    const last = node.unacked[node.unacked.length - 1];
    const issued = last?.seq ?? 0;
    if (r.persist.length > 0 || r.sendAfterPersist.length > 0 || r.persistSeq > issued) {
      if (r.persistSeq > issued) {
        node.unacked.push({ seq: r.persistSeq, ops: r.persist, after: r.sendAfterPersist, sm: copyState(node.sm) });
        // LMDB commits in order: a later batch is never durable before an earlier one.
        const latency = this.netRng.chance(this.slowSync) ? this.netRng.int(10, 60) : this.netRng.int(1, 4);
        const at = Math.max(this.now + latency, node.lastPersistTime);
        node.lastPersistTime = at;
        this.schedule(at - this.now, { kind: 'persisted', node: node.id, inc: node.incarnation, seq: r.persistSeq });
      } else {
        throw new SimFailure(`${node.id}: Ready has persistence work without a new persist seq`);
      }
    }
    for (const env of r.send) this.send(env);
    for (const entry of r.commit) this.apply(node, entry);
    for (const read of r.reads) this.onReadIndex(node, read.id, read.index);
    if (r.snapshotNeeded !== null && !node.snapshotFetching) {
      node.snapshotFetching = true;
      this.schedule(this.netRng.int(2, 20), { kind: 'snapshot', node: node.id, inc: node.incarnation, from: r.snapshotNeeded.from });
    }
  }

  private onPersisted(id: NodeId, inc: number, seq: number): void {
    const node = this.nodes.get(id)!;
    if (!node.alive || node.incarnation !== inc) return;
    while (node.unacked.length > 0 && node.unacked[0]!.seq <= seq) {
      const b = node.unacked.shift()!;
      this.writeDurably(node, b.ops);
      node.smDurable = b.sm;
      for (const env of b.after) this.send(env);
    }
    node.replica!.persisted(seq);
    this.drain(node);
  }

  private writeDurably(node: SimNode, ops: readonly PersistOp[]): void {
    for (const op of ops) {
      switch (op.kind) {
        case 'promise':
          node.log.promised = op.ballot;
          break;
        case 'slot':
          if (op.slot.slot > node.log.compacted.slot) node.log.slots.set(op.slot.slot, op.slot);
          break;
        case 'commit':
          node.log.commit = Math.max(node.log.commit, op.slot);
          break;
        case 'compact':
          if (op.through.slot > node.log.compacted.slot) {
            node.log.compacted = op.through;
            for (const s of node.log.slots.keys()) if (s <= op.through.slot) node.log.slots.delete(s);
          }
          break;
      }
    }
  }

  private crash(node: SimNode, why: string): void {
    // A crash keeps what was durable, plus some prefix of what was being written.
    const survive = this.faultRng.int(0, node.unacked.length);
    for (let i = 0; i < survive; i++) {
      this.writeDurably(node, node.unacked[i]!.ops);
      node.smDurable = node.unacked[i]!.sm;
    }
    node.sm = copyState(node.smDurable);
    if (this.traceOn) this.trace(`crash ${node.id} (${why}); ${survive}/${node.unacked.length} unacked batches survive`);
    this.stats.leaderChanges += node.replica!.stats.leaderTerms - node.leaderTermsBefore;
    node.leaderTermsBefore = 0;
    node.alive = false;
    node.replica = null;
    node.unacked = [];
    node.incarnation++;
    for (const op of node.writes.values()) this.finishUnknown(op);
    node.writes.clear();
    for (const op of node.reads.values()) this.finishFailedRead(op);
    node.reads.clear();
    for (const w of node.waitingReads) this.finishFailedRead(w.op);
    node.waitingReads = [];
  }

  private restart(id: NodeId): void {
    const node = this.nodes.get(id)!;
    if (node.alive || node.removed) return;
    this.start(node);
  }

  // ------------------------------------------------------------------------------------
  // The network.

  private connected(a: NodeId, b: NodeId): boolean {
    return this.partition === null || this.partition.has(a) === this.partition.has(b);
  }

  private send(env: Envelope): void {
    if (!this.connected(env.from, env.to)) return;
    if (this.faultsOn && this.netRng.chance(this.loss)) return;
    const copies = this.faultsOn && this.netRng.chance(this.dup) ? 2 : 1;
    for (let i = 0; i < copies; i++) {
      const slow = this.faultsOn && this.netRng.chance(0.05);
      this.schedule(slow ? this.netRng.int(20, 80) : this.netRng.int(1, 8), { kind: 'deliver', env });
    }
  }

  // ------------------------------------------------------------------------------------
  // The state machine and the agreement checks.

  private apply(node: SimNode, entry: Entry): void {
    const sm = node.sm;
    if (entry.slot !== sm.point.slot + 1 || entry.index !== sm.point.index + 1) {
      throw new SimFailure(`${node.id}: applies slot ${entry.slot} index ${entry.index} after slot ${sm.point.slot} index ${sm.point.index}`);
    }
    const fp = fingerprint(entry.batch);
    const known = this.chosen.get(entry.slot);
    if (known === undefined) {
      this.chosen.set(entry.slot, { fp, index: entry.index });
      this.stats.slots++;
      this.checkNewlyChosen(entry);
    } else if (known.fp !== fp || known.index !== entry.index) {
      throw new SimFailure(
        `agreement violated at slot ${entry.slot}: ${node.id} commits index ${entry.index} [${fp}], another replica committed index ${known.index} [${known.fp}]`,
      );
    }
    if (this.traceOn) this.trace(`apply ${node.id} slot=${entry.slot} index=${entry.index} [${fp}]`);
    let index = entry.index;
    for (const cmd of entry.batch) {
      if (cmd.kind === 'app') {
        const c = this.decode(cmd.data);
        let result: Out = {};
        if (c.op === 'put') sm.kv.set(c.k, c.v);
        else {
          const current = sm.kv.get(c.k) ?? null;
          const ok = current === c.e;
          if (ok) sm.kv.set(c.k, c.v);
          result = { ok };
        }
        const key = `${c.c}:${c.s}`;
        const op = node.writes.get(key);
        if (op !== undefined) {
          node.writes.delete(key);
          this.finish(op, result);
          this.lastAckedKey = c.k;
          if (this.faultsOn && this.faultRng.chance(this.buggify)) this.pendingCrash = node;
        }
      }
      index++;
    }
    sm.point = { slot: entry.slot, index: index - 1, epochs: entry.epochs };
    this.serveWaitingReads(node);
  }

  private checkNewlyChosen(entry: Entry): void {
    for (const cmd of entry.batch) {
      if (cmd.kind !== 'app') continue;
      const text = decoder.decode(cmd.data);
      const c = this.decode(cmd.data);
      const key = `${c.c}:${c.s}`;
      if (this.proposed.get(key) !== text) throw new SimFailure(`slot ${entry.slot} commits a command no client proposed: ${text}`);
      const earlier = this.committedCmd.get(key);
      if (earlier !== undefined) throw new SimFailure(`command ${key} committed twice, at slots ${earlier} and ${entry.slot}`);
      this.committedCmd.set(key, entry.slot);
    }
  }

  private decode(data: Uint8Array): ClientCmd {
    let c = this.decoded.get(data);
    if (c === undefined) {
      c = JSON.parse(decoder.decode(data)) as ClientCmd;
      this.decoded.set(data, c);
    }
    return c;
  }

  // ------------------------------------------------------------------------------------
  // Compaction and snapshots.

  private maybeCompact(node: SimNode): void {
    const r = node.replica!;
    // Only what the state machine holds durably may be dropped from the log.
    const point = node.smDurable.point;
    if (point.slot - node.log.compacted.slot < 4 || point.slot > r.commit.slot) return;
    r.compact(point); // the state machine is the snapshot: it can be served at any time
    this.stats.compactions++;
    if (this.traceOn) this.trace(`compact ${node.id} through ${point.slot}`);
    this.drain(node);
  }

  private onSnapshotFetched(id: NodeId, inc: number, fromId: NodeId): void {
    const node = this.nodes.get(id)!;
    if (!node.alive || node.incarnation !== inc) return;
    node.snapshotFetching = false;
    const from = this.nodes.get(fromId);
    if (from === undefined || !from.alive || !this.connected(id, fromId)) return;
    const snap = from.sm; // a snapshot of the peer's state as it is now
    if (snap.point.slot <= node.sm.point.slot) return;
    const known = this.chosen.get(snap.point.slot);
    if (known !== undefined && known.index + countOf(known.fp) - 1 !== snap.point.index) {
      throw new SimFailure(`snapshot of ${fromId} at slot ${snap.point.slot} has index ${snap.point.index}, the log says otherwise`);
    }
    node.sm = { kv: new Map(snap.kv), point: snap.point };
    node.smDurable = copyState(node.sm); // a driver writes a received snapshot durably before using it
    this.stats.snapshotsInstalled++;
    if (this.traceOn) this.trace(`install ${node.id} snapshot of ${fromId} at slot ${snap.point.slot}`);
    // Writes waiting here were covered by the snapshot: their outcome is unknown to this node.
    for (const op of node.writes.values()) this.finishUnknown(op);
    node.writes.clear();
    node.replica!.installSnapshot(snap.point);
    this.drain(node);
    this.serveWaitingReads(node);
  }

  // ------------------------------------------------------------------------------------
  // Faults.

  private injectFault(): void {
    const r = this.faultRng;
    const live = [...this.nodes.values()].filter((n) => n.alive && !n.removed);
    const dead = [...this.nodes.values()].filter((n) => !n.alive && !n.removed);
    const roll = r.float();
    if (roll < 0.22 && live.length > 0) {
      const node = r.chance(0.5) ? (this.leaderNode() ?? r.pick(live)) : r.pick(live);
      this.stats.crashes++;
      this.crash(node, 'fault');
      this.schedule(r.int(3, 40) * TICK, { kind: 'restart', node: node.id });
    } else if (roll < 0.34 && this.partition === null) {
      const ids = [...this.nodes.keys()];
      const side = new Set(ids.filter(() => r.chance(0.5)));
      if (r.chance(0.5)) {
        const leader = this.leaderNode();
        if (leader !== null) side.add(leader.id); // often cut the leader off
      }
      this.partition = side;
      this.stats.partitions++;
      if (this.traceOn) this.trace(`partition {${[...side].join(',')}} | rest`);
      this.schedule(r.int(5, 50) * TICK, { kind: 'heal' });
    } else if (roll < 0.5) {
      this.changeMembership();
    } else if (roll < 0.7) {
      for (const n of live) if (r.chance(0.5)) this.maybeCompact(n);
    } else if (roll < 0.75 && dead.length > 0) {
      this.restart(r.pick(dead).id);
    } else if (roll < 0.86 && live.length > 0) {
      const node = r.chance(0.7) ? (this.leaderNode() ?? r.pick(live)) : r.pick(live);
      node.pausedUntil = this.now + r.int(5, 40) * TICK;
      this.stats.pauses++;
      if (this.traceOn) this.trace(`pause ${node.id} until ${node.pausedUntil}`);
    } else if (roll < 0.9 && live.length > 0) {
      this.stats.garbage++;
      const to = r.pick(live);
      to.replica!.step(garbage(r, this.cluster, to.id, [...this.nodes.keys()]));
      this.drain(to);
    }
  }

  private leaderNode(): SimNode | null {
    let best: SimNode | null = null;
    for (const n of this.nodes.values()) {
      if (n.alive && n.replica!.currentRole === 'leader') {
        if (best === null || compare(n.replica!.currentBallot, best.replica!.currentBallot) > 0) best = n;
      }
    }
    return best;
  }

  private changeMembership(): void {
    const leader = this.leaderNode();
    if (leader === null) return;
    const r = this.faultRng;
    const config = leader.replica!.latestConfig;
    const members = config.voters.length + config.learners.length;
    let command: Command | null = null;
    const choice = r.float();
    if (choice < 0.35 && members < 7) {
      const node = this.addNode(this.newNodeId());
      command = { kind: 'config', change: { op: 'add_learner', node: node.id } };
    } else if (choice < 0.7 && config.learners.length > 0) {
      command = { kind: 'config', change: { op: 'promote', node: r.pick(config.learners) } };
    } else if (config.voters.length > 3 || (config.learners.length > 0 && choice < 0.85)) {
      const pool = config.voters.length > 3 ? [...config.voters, ...config.learners] : [...config.learners];
      command = { kind: 'config', change: { op: 'remove', node: r.pick(pool) } };
    }
    if (command === null || command.kind !== 'config') return;
    const result = leader.replica!.propose(command);
    if (this.traceOn) this.trace(`membership ${command.change.op} ${command.change.node} via ${leader.id}: ${result.ok ? 'proposed' : result.reason}`);
    if (!result.ok) return;
    this.stats.membershipChanges++;
    if (command.change.op === 'remove') {
      const target = this.nodes.get(command.change.node);
      // A removed node keeps running for a while (it must not disrupt), then stops for good.
      if (target !== undefined) {
        target.removed = true;
        this.schedule(r.int(20, 80) * TICK, { kind: 'stop', node: target.id });
      }
    }
    this.drain(leader);
  }

  // ------------------------------------------------------------------------------------
  // Clients.

  private clientStep(client: number): void {
    if (this.clientPending[client] !== null || !this.clientsOn) return;
    const r = this.clientRng;
    const key = r.pick(KEYS);
    const roll = r.float();
    const value = `v${client}.${this.clientSeq[client]! + 1}`;
    let input: In;
    if (roll < 0.45) input = { kind: 'put', key, value };
    else if (roll < 0.85) input = { kind: 'get', key };
    else input = { kind: 'cas', key, expect: r.chance(0.3) ? null : r.pick(['v0.1', 'v1.2', 'v2.3', value]), value };
    const seq = ++this.clientSeq[client]!;
    const op: Op = { client, seq, input, call: this.now, output: {}, ret: Infinity, handed: false, done: false, finalPhase: !this.faultsOn };
    this.clientPending[client] = op;
    this.submit(op);
  }

  /** Sends the op to its leader hint or a random node; retries on refusal. */
  private submit(op: Op): void {
    if (op.done) return;
    const r = this.clientRng;
    const hint = this.leaderHint[op.client] ?? null;
    const candidates = [...this.nodes.values()].filter((n) => !n.removed);
    const node = hint !== null && r.chance(0.8) ? this.nodes.get(hint)! : r.pick(candidates);
    if (!node.alive) return this.retryLater(op, null);
    const replica = node.replica!;
    if (op.input.kind === 'get') {
      const id = ++node.readIds;
      node.reads.set(id, op);
      this.schedule(READ_TIMEOUT, { kind: 'timeout', op });
      replica.read(id);
      this.drain(node);
      return;
    }
    const cmd: ClientCmd =
      op.input.kind === 'put'
        ? { c: op.client, s: op.seq, op: 'put', k: op.input.key, v: op.input.value }
        : { c: op.client, s: op.seq, op: 'cas', k: op.input.key, v: op.input.value, e: op.input.expect };
    const text = JSON.stringify(cmd);
    const result = replica.propose({ kind: 'app', data: encoder.encode(text) });
    if (!result.ok) return this.retryLater(op, result.reason === 'not_leader' ? result.leader : null);
    this.proposed.set(`${op.client}:${op.seq}`, text);
    op.handed = true;
    op.handedTo = { node: node.id, ballot: formatBallot(replica.currentBallot) };
    this.history.push(op);
    node.writes.set(`${op.client}:${op.seq}`, op);
    this.leaderHint[op.client] = node.id;
    this.schedule(WRITE_TIMEOUT, { kind: 'timeout', op });
    this.drain(node);
  }

  private retryLater(op: Op, hint: NodeId | null): void {
    this.leaderHint[op.client] = hint;
    this.schedule(this.clientRng.int(1, 3) * TICK, { kind: 'retry', op });
  }

  private onTimeout(op: Op): void {
    if (op.done) return;
    if (op.handed) {
      // A write handed to consensus whose fate this client never learned.
      for (const n of this.nodes.values()) n.writes.delete(`${op.client}:${op.seq}`);
      this.finishUnknown(op);
    } else {
      for (const n of this.nodes.values()) for (const [id, o] of n.reads) if (o === op) n.reads.delete(id);
      this.finishFailedRead(op);
    }
  }

  private onReadIndex(node: SimNode, id: number, index: number | null): void {
    const op = node.reads.get(id);
    if (op === undefined) return;
    node.reads.delete(id);
    if (op.done) return;
    if (index === null) {
      this.leaderHint[op.client] = null;
      this.finishFailedRead(op);
      return;
    }
    node.waitingReads.push({ index, op });
    this.serveWaitingReads(node);
  }

  private serveWaitingReads(node: SimNode): void {
    if (node.waitingReads.length === 0) return;
    const still: { index: number; op: Op }[] = [];
    for (const w of node.waitingReads) {
      if (w.op.done) continue;
      if (node.sm.point.index >= w.index && w.op.input.kind === 'get') {
        this.stats.reads++;
        this.history.push(w.op);
        this.finish(w.op, { value: node.sm.kv.get(w.op.input.key) ?? null });
      } else still.push(w);
    }
    node.waitingReads = still;
  }

  private finish(op: Op, output: Out): void {
    if (op.done) return;
    op.done = true;
    op.output = output;
    op.ret = this.now;
    if (op.input.kind !== 'get') this.stats.acked++;
    if (this.traceOn) this.trace(`ack client ${op.client} seq ${op.seq} ${JSON.stringify(op.input)} -> ${JSON.stringify(output)}`);
    this.nextOp(op.client);
  }

  private finishUnknown(op: Op): void {
    if (op.done) return;
    op.done = true;
    op.ret = Infinity;
    this.stats.unknown++;
    if (this.traceOn) this.trace(`unknown outcome client ${op.client} seq ${op.seq}`);
    this.nextOp(op.client);
  }

  private finishFailedRead(op: Op): void {
    if (op.done) return;
    op.done = true;
    this.nextOp(op.client);
  }

  private nextOp(client: number): void {
    if (client >= this.clientSeq.length) return; // a probe
    this.clientPending[client] = null;
    this.schedule(this.clientRng.int(0, 2 * TICK), { kind: 'client', client });
  }

  // ------------------------------------------------------------------------------------
  // The final phase: heal everything, then demand progress, convergence and linearizability.

  private settle(): void {
    this.faultsOn = false;
    this.partition = null;
    if (this.traceOn) this.trace('final phase: network healed, crashed nodes restarted');
    for (const n of this.nodes.values()) {
      n.pausedUntil = 0;
      if (n.removed && this.stillMember(n.id)) n.removed = false;
      if (!n.alive && !n.removed) this.start(n);
    }
    const finalStart = this.now;
    const end = finalStart + FINAL_TICKS * TICK;
    while (this.now < end && this.step()) {
      if (this.now > end - 80 * TICK) this.clientsOn = false;
    }
    const leader = this.leaderNode();
    if (leader === null) throw new SimFailure(`no leader ${FINAL_TICKS} ticks after the network healed`);
    // Every write the final leader took under its current ballot must have committed.
    const ballot = formatBallot(leader.replica!.currentBallot);
    const late = this.history.filter(
      (op) => op.finalPhase && op.handedTo?.node === leader.id && op.handedTo.ballot === ballot && (!op.done || op.ret === Infinity),
    );
    const finalOps = this.history.filter((op) => op.finalPhase && op.done && op.ret !== Infinity);
    if (finalOps.length === 0) throw new SimFailure(`no client operation completed in the ${FINAL_TICKS} ticks after healing`);
    if (late.length > 0) {
      const which = late.map((op) => `${op.client}:${op.seq}`).join(', ');
      throw new SimFailure(`proposals taken by leader ${leader.id} did not commit within ${WRITE_TIMEOUT / TICK} ticks: ${which}`);
    }

    // Convergence: every live member reaches the leader's commit point and the same state.
    const config = leader.replica!.latestConfig;
    const members = [...config.voters, ...config.learners];
    const target = leader.replica!.commit.slot;
    for (let i = 0; i < 100 * TICK && !this.converged(members, target); i++) this.step();
    for (const id of members) {
      const n = this.nodes.get(id);
      if (n === undefined || !n.alive) continue;
      if (n.sm.point.slot < target) throw new SimFailure(`${id} stuck at slot ${n.sm.point.slot}, leader ${leader.id} committed ${target}`);
      if (n.sm.point.slot === leader.sm.point.slot && !sameMap(n.sm.kv, leader.sm.kv)) {
        throw new SimFailure(`${id} and ${leader.id} applied slot ${target} but hold different states`);
      }
    }
    // Durability: every acknowledged write is in the chosen log.
    for (const op of this.history) {
      if (op.input.kind !== 'get' && op.done && op.ret !== Infinity && !this.committedCmd.has(`${op.client}:${op.seq}`)) {
        throw new SimFailure(`acknowledged write ${op.client}:${op.seq} is not in the chosen log`);
      }
    }
    for (const n of this.nodes.values()) if (n.alive) this.stats.leaderChanges += n.replica!.stats.leaderTerms - n.leaderTermsBefore;
    this.checkHistory();
  }

  /** Whether any live replica's newest configuration still names `id`. */
  private stillMember(id: NodeId): boolean {
    for (const n of this.nodes.values()) {
      if (!n.alive || n.id === id) continue;
      const c = n.replica!.latestConfig;
      if (c.voters.includes(id) || c.learners.includes(id)) return true;
    }
    return false;
  }

  private converged(members: NodeId[], target: number): boolean {
    return members.every((id) => {
      const n = this.nodes.get(id);
      return n === undefined || !n.alive || n.sm.point.slot >= target;
    });
  }

  private checkHistory(): void {
    const ops: Operation<In, Out>[] = [];
    for (const op of this.history) {
      if (op.input.kind === 'get' && (op.ret === Infinity || !op.done)) continue;
      ops.push({ clientId: op.client, input: op.input, call: op.call, output: op.output, ret: op.done ? op.ret : Infinity });
    }
    const result = checkLinearizable(kvModel, ops);
    if (!result.ok) throw new SimFailure(`history is not linearizable (key ${result.partition}): ${result.explanation}`);
  }

  private trace(line: string): void {
    if (this.traceOn) this.traceLines.push(`${String(this.now).padStart(6)} ${line}`);
  }

  result(error?: string): SimResult {
    return { seed: this.opts.seed, ok: error === undefined, ...(error ? { error } : {}), trace: this.traceLines, stats: this.stats };
  }
}

export function emptyStats(): SimStats {
  return { leaderChanges: 0, crashes: 0, partitions: 0, membershipChanges: 0, compactions: 0, snapshotsInstalled: 0, garbage: 0, pauses: 0, acked: 0, unknown: 0, reads: 0, slots: 0 };
}

/** Runs one seed. A failure carries the seed; with `trace`, the events that led to it. */
export function simulate(opts: SimOptions): SimResult {
  const world = new World(opts);
  try {
    world.run();
    return world.result();
  } catch (err) {
    if (err instanceof SimFailure) return world.result(err.message);
    const e = err as Error;
    return world.result(`crash: ${e.stack ?? e.message}`);
  }
}

const fingerprints = new WeakMap<Batch, string>();

/** A batch's content as text; cached, since batches travel by reference in the simulator. */
function copyState(sm: StateMachine): StateMachine {
  return { kv: new Map(sm.kv), point: sm.point };
}

function fingerprint(batch: Batch): string {
  let out = fingerprints.get(batch);
  if (out === undefined) {
    out = computeFingerprint(batch);
    fingerprints.set(batch, out);
  }
  return out;
}

function computeFingerprint(batch: Batch): string {
  let out = '';
  for (const c of batch) {
    if (out.length > 0) out += '|';
    out += c.kind === 'app' ? decoder.decode(c.data) : `${c.change.op}:${c.change.node}`;
  }
  return out;
}

function countOf(fp: string): number {
  return fp.length === 0 ? 0 : fp.split('|').length;
}

function sameMap(a: Map<string, string>, b: Map<string, string>): boolean {
  if (a.size !== b.size) return false;
  for (const [k, v] of a) if (b.get(k) !== v) return false;
  return true;
}

function compare(a: Ballot, b: Ballot): number {
  return a.round !== b.round ? a.round - b.round : a.leader < b.leader ? -1 : a.leader > b.leader ? 1 : 0;
}

function describe(env: Envelope): string {
  const m = env.msg as unknown as Record<string, unknown>;
  const parts = [String(m.type)];
  if (m.ballot) parts.push(`b=${formatBallot(m.ballot as Ballot)}`);
  if (typeof m.commit === 'number') parts.push(`commit=${m.commit}`);
  if (Array.isArray(m.values)) parts.push(`slots=${(m.values as { slot: number }[]).map((v) => v.slot).join(',')}`);
  if (Array.isArray(m.slots)) parts.push(`slots=${(m.slots as number[]).join(',')}`);
  if (Array.isArray(m.accepted)) parts.push(`accepted=${(m.accepted as StoredSlot[]).map((s) => `${s.slot}@${formatBallot(s.ballot)}${s.chosen ? '*' : ''}`).join(',')}`);
  return parts.join(' ');
}

/** Messages no honest peer sends: wrong shapes, wrong cluster, forged senders. */
function garbage(r: Rng, cluster: string, to: NodeId, ids: NodeId[]): unknown {
  const from = r.pick(ids);
  switch (r.int(0, 6)) {
    case 0:
      return null;
    case 1:
      return { cluster, from, to, msg: { type: 'accept', ballot: { round: -1, leader: from }, commit: 0, values: [] } };
    case 2:
      return { cluster: 'other', from, to, msg: { type: 'heartbeat', ballot: { round: 1e9, leader: from }, commit: 1e9, seq: 1 } };
    case 3:
      return { cluster, from, to, msg: { type: 'catchup', values: [{ slot: 0, batch: 'x' }], commit: 5, snapshot: null } };
    case 4:
      return { cluster, from: 'mallory', to, msg: { type: 'prepare', ballot: { round: 1e9, leader: 'mallory' }, commit: 0 } };
    case 5:
      return { cluster, from, to, msg: { type: 'nonsense' } };
    default:
      return { cluster, from, to, msg: { type: 'promise', ballot: { round: 1, leader: to }, commit: 'x', compacted: 0, accepted: [] } };
  }
}
