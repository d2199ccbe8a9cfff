/**
 * Block sync: how a node that is far behind catches up from any peer, from its hot log or,
 * through that peer, from the cold archive.
 *
 * - Every `ANNOUNCE_MS` each node announces its commit point and hot range on the cluster's
 *   gossipsub topic; a node tracks the best commit point its peers announce.
 * - A node more than `BEHIND_SLOTS` behind the best (or asked by the core for a snapshot,
 *   which means its peers' hot logs no longer reach back to it) requests the next range on
 *   `BLOCKSYNC_PROTOCOL` from a peer ahead of it, peers taken in turn, one request at a time.
 * - A peer answers from its hot log when it holds the range, else from the archive (cold),
 *   with at most `coldReadsMax` cold reads at once and `coldQueueMax` waiting; beyond that it
 *   answers `busy` at once, never silence.
 * - The requester checks the range (range-check.ts): the hash chain recomputed from its own
 *   applied value must end at the value the peer states and pass every `--checkpoint`, and
 *   that end must be vouched for by the current leader (or, while this node joins, the member
 *   it joined through) or a majority of the voters (each asked on the same protocol), or be
 *   a `--checkpoint` (which lets in the slots before the slot of the last checkpointed
 *   command only: no chain pins where that slot's batch ends, nor the slots after it). Only
 *   then do the values enter the consensus core as chosen (`learnChosen`). Ranges are
 *   asked only of current members, and a node that reads the archive itself (it has the
 *   key) reads cold ranges itself: the archive's manifests are
 *   signed by voters. (Issue 10, bug 5: a non-member or a member
 *   with a diverged log could otherwise make a lagging voter commit values never chosen.)
 */
import type { ConfigEpoch, SlotValue } from '../consensus/index.js';
import type { ConfigRecord } from '../state/state-store.js';
import { batchBytes, validateEnvelope } from '../consensus/index.js';
import { VOUCHING_ROUNDS_MAX, chainAnswer, chainAnswerFrom, checkRange, laterVoters, leaderNamedByMajority, vouched, vouchersFor, votersWhoVouch, type ChainAnswer } from './range-check.js';
import type { PeerServices } from './peer-services.js';
import { Packr } from 'msgpackr';
import type { Metrics } from '../metrics.js';
import { every, PROGRESS_LOG_INTERVAL_MS } from '../progress.js';

export const BLOCKSYNC_PROTOCOL = '/pangea/blocksync/1.0.0';
export const ANNOUNCE_MS = 1_000;
/** Announcements older than this are forgotten (the peer is gone or partitioned). */
export const ANNOUNCE_STALE_MS = 10_000;
/** How far behind (slots) before block sync starts; closer, the core's own catch-up does. */
export const BEHIND_SLOTS = 128;
/** Slots and bytes in one answer at most. */
export const RANGE_SLOTS_MAX = 512;
export const RANGE_BYTES_MAX = 8 * 1024 * 1024;
const PLAN_MS = 100;

/** What a peer states about itself every `ANNOUNCE_MS`. */
export interface Announcement {
  readonly commitSlot: number;
  readonly commitIndex: number;
  /** The first slot its hot log holds. */
  readonly hotFirstSlot: number;
  /** Whether it can serve cold ranges (it reaches the archive with the key). */
  readonly cold: boolean;
}

export type RangeAnswer =
  | { readonly status: 'ok'; readonly source: 'hot' | 'cold'; readonly values: readonly SlotValue[]; readonly lastIndex: number; readonly chainAfter: Uint8Array }
  | { readonly status: 'busy' }
  | { readonly status: 'none'; readonly reason: string };

/** A range read from the archive (src/archive/cold.ts). */
export interface ColdSource {
  /** Slots from `fromSlot` (whose first command takes `fromIndex`) up to `toSlot`, within one
   *  archived segment and `RANGE_BYTES_MAX`; null when the archive does not hold `fromSlot`. */
  read(fromSlot: number, fromIndex: number, toSlot: number): Promise<{ values: SlotValue[]; lastIndex: number; chainAfter: Uint8Array } | null>;
}

export interface BlocksyncHost {
  readonly cluster: string;
  readonly peerId: string;
  commit(): { slot: number; index: number };
  applied(): { slot: number; index: number; chain: Uint8Array };
  /** The first slot the hot log holds. */
  hotFirstSlot(): number;
  /** Chosen slots `from..to` of the hot log (fewer when it ends). */
  readHot(from: number, to: number): SlotValue[];
  chainAt(index: number): Uint8Array | undefined;
  /** The slot the command at `index` was chosen at, while its chain value is held. */
  slotAt(index: number): number | undefined;
  cold(): ColdSource | null;
  /** Hands verified chosen values to the consensus core. */
  learnChosen(values: readonly SlotValue[]): void;
  /** Trusted chain values by index (`--checkpoint`). */
  readonly checkpoints: ReadonlyMap<number, Uint8Array>;
  /** The newest configuration this node knows (and the slot it governs from): ranges come
   *  only from its members, and its voters vouch for chain values. */
  members(): ConfigEpoch;
  /** The configurations this node applied that govern from after `slot`, oldest first. */
  configsAfter(slot: number, limit: number): readonly ConfigRecord[];
  /** The leader this node follows now, if any. */
  leader(): string | null;
  /** The leader it follows and heard from within an election timeout (itself when it
   *  leads), while it is a voter of its own newest configuration: what it tells a peer
   *  asking whom the voters follow. */
  liveLeader(): string | null;
  /** While this node joins, the member it joined through (the operator named it): trusted
   *  as the leader is, since this node's configuration may name only voters long gone. */
  sponsor(): string | null;
}

export interface BlocksyncOptions {
  readonly coldReadsMax: number;
  readonly coldQueueMax: number;
  readonly timeoutMs: number;
}

export interface BlocksyncStats {
  requests: number;
  requestsInFlight: number;
  timeouts: number;
  failures: number;
  busyAnswers: number;
  rangesReceived: number;
  slotsReceived: number;
  chainMismatches: number;
  checkpointMismatches: number;
  /** Ranges whose chain end neither the leader (or sponsor) nor a majority of voters vouched for. */
  chainUnvouched: number;
  /** Announcements from peers that are not members (ignored). */
  strangerAnnouncements: number;
  servedHot: number;
  servedCold: number;
  servedNone: number;
  servedBusy: number;
  coldReadErrors: number;
  coldReadLastError: string;
  coldReadsInFlight: number;
  coldQueueFull: number;
}

interface PeerState extends Announcement {
  readonly at: number;
}

const packr = new Packr({ useRecords: false, mapsAsObjects: true });

export class Blocksync {
  readonly stats: BlocksyncStats = {
    requests: 0,
    requestsInFlight: 0,
    timeouts: 0,
    failures: 0,
    busyAnswers: 0,
    rangesReceived: 0,
    slotsReceived: 0,
    chainMismatches: 0,
    checkpointMismatches: 0,
    chainUnvouched: 0,
    strangerAnnouncements: 0,
    servedHot: 0,
    servedCold: 0,
    servedNone: 0,
    servedBusy: 0,
    coldReadErrors: 0,
    coldReadLastError: '',
    coldReadsInFlight: 0,
    coldQueueFull: 0,
  };
  private readonly peers = new Map<string, PeerState>();
  /** Peers whose last range no one vouched for, and until when they are passed over. */
  private readonly unvouchedUntil = new Map<string, number>();
  private readonly coldWaiting: (() => void)[] = [];
  private timers: NodeJS.Timeout[] = [];
  private turn = 0;
  /** Set by the core asking for a snapshot: peers' hot logs do not reach back here. */
  private wanted = false;
  private stopped = false;
  /** The leader a majority of the voters named when last asked to vouch (range-check.ts
   *  `leaderNamedByMajority`), and until when: heard from and asked for ranges though this
   *  node's configuration may not name it yet. Not trusted: each of its ranges is vouched
   *  for by the voters' answers of that round. */
  private named: { peer: string; until: number } | null = null;
  /** While catching up, a progress line at most this often. */
  private readonly progressDue = every(PROGRESS_LOG_INTERVAL_MS, () => this.now());

  constructor(
    private readonly host: BlocksyncHost,
    private readonly net: PeerServices,
    private readonly opts: BlocksyncOptions,
    private readonly logger: { info(msg: string, fields?: Record<string, unknown>): void } = { info: () => undefined },
    private readonly now: () => number = Date.now,
  ) {}

  async start(): Promise<void> {
    this.net.onAnnouncement((from, data) => this.onAnnouncement(from, data));
    await this.net.handle(BLOCKSYNC_PROTOCOL, (from, body) => this.serve(body));
    const repeat = (ms: number, fn: () => void): void => {
      const t = setInterval(fn, ms);
      t.unref?.();
      this.timers.push(t);
    };
    repeat(ANNOUNCE_MS, () => this.announce());
    repeat(PLAN_MS, () => void this.plan());
  }

  stop(): void {
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    for (const wake of this.coldWaiting.splice(0)) wake();
  }

  /** The core asked for a snapshot: catch up through block sync instead. */
  want(): void {
    this.wanted = true;
  }

  /** The best commit index peers announce (0 when none is known). */
  peerBestIndex(): number {
    let best = 0;
    for (const p of this.freshPeers()) best = Math.max(best, p.commitIndex);
    return best;
  }

  get coldQueueDepth(): number {
    return this.coldWaiting.length;
  }

  // ------------------------------------------------------------------------------------
  // Announcements.

  private announce(): void {
    const c = this.host.commit();
    const a: Announcement = { commitSlot: c.slot, commitIndex: c.index, hotFirstSlot: this.host.hotFirstSlot(), cold: this.host.cold() !== null };
    this.net.announce(packr.pack(a));
  }

  private onAnnouncement(from: string, data: Uint8Array): void {
    if (from === this.host.peerId) return;
    let a: Partial<Announcement>;
    try {
      a = packr.unpack(data) as Partial<Announcement>;
    } catch {
      return;
    }
    const count = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
    if (typeof a !== 'object' || a === null || !count(a.commitSlot) || !count(a.commitIndex) || !count(a.hotFirstSlot)) return;
    if (!this.isMember(from)) {
      this.stats.strangerAnnouncements++;
      return;
    }
    this.peers.set(from, { commitSlot: a.commitSlot, commitIndex: a.commitIndex, hotFirstSlot: a.hotFirstSlot, cold: a.cold === true, at: this.now() });
  }

  private freshPeers(): PeerState[] {
    const cutoff = this.now() - ANNOUNCE_STALE_MS;
    return [...this.peers.entries()].filter(([id, p]) => p.at >= cutoff && this.isMember(id)).map(([, p]) => p);
  }

  private isMember(peer: string): boolean {
    const m = this.host.members().config;
    return m.voters.includes(peer) || m.learners.includes(peer) || this.trusted().includes(peer) || peer === this.namedLeader();
  }

  /** Whose word alone makes a range chosen. */
  private trusted(): string[] {
    return [this.host.leader(), this.host.sponsor()].filter((p): p is string => p !== null);
  }

  private namedLeader(): string | null {
    return this.named !== null && this.named.until > this.now() ? this.named.peer : null;
  }

  // ------------------------------------------------------------------------------------
  // Requesting.

  private async plan(): Promise<void> {
    if (this.stopped || this.stats.requestsInFlight > 0) return;
    const commit = this.host.commit();
    const applied = this.host.applied();
    if (applied.slot !== commit.slot) return; // the chain is checked from the applied value
    const ahead = [...this.peers.entries()].filter(([id, p]) => p.at >= this.now() - ANNOUNCE_STALE_MS && p.commitSlot > commit.slot && this.isMember(id));
    if (ahead.length === 0) return;
    const best = Math.max(...ahead.map(([, p]) => p.commitSlot));
    if (!this.wanted && best - commit.slot <= BEHIND_SLOTS) return;
    const from = commit.slot + 1;
    const to = Math.min(best, commit.slot + RANGE_SLOTS_MAX);
    // Sources in the order their word is trusted: the leader's (or sponsor's) hot log (it
    // vouches for itself); the archive, read here when this node can (its manifests are
    // signed by voters); the leader (or sponsor) reading the archive; then other members' hot
    // logs and cold reads,
    // whose ranges need a majority of voters to vouch (a peer whose range was not vouched for
    // is passed over for a while, so a pruned-past majority does not stall the catch-up).
    // (The leader the voters last named is asked as the leader is; its ranges are vouched for.)
    const preferred = [...this.trusted(), this.namedLeader()];
    const now = this.now();
    const usable = ahead.filter(([id]) => (this.unvouchedUntil.get(id) ?? 0) <= now);
    const hot = usable.filter(([, p]) => p.hotFirstSlot <= from);
    const leaderHot = hot.filter(([id]) => preferred.includes(id));
    const cold = leaderHot.length === 0 ? this.host.cold() : null;
    const leaderCold = usable.filter(([id, p]) => preferred.includes(id) && p.cold);
    const others = hot.length > 0 ? hot : usable.filter(([, p]) => p.cold);
    const pool = leaderHot.length > 0 ? leaderHot : leaderCold.length > 0 ? leaderCold : others;
    if (cold === null && pool.length === 0) return;
    this.stats.requests++;
    this.stats.requestsInFlight++;
    try {
      if (cold !== null) {
        const got = await cold.read(from, applied.index + 1, to);
        if (got === null) this.stats.failures++;
        else await this.receive(null, from, applied, { status: 'ok', source: 'cold', ...got } satisfies RangeAnswer);
        return;
      }
      const [peer] = pool[this.turn++ % pool.length]!;
      const raw = await this.net.request(peer, BLOCKSYNC_PROTOCOL, { v: 1, cluster: this.host.cluster, from, fromIndex: applied.index + 1, to }, this.opts.timeoutMs);
      await this.receive(peer, from, applied, raw);
    } catch (err) {
      if (/timed out|timeout|aborted/i.test((err as Error).message)) this.stats.timeouts++;
      else this.stats.failures++;
    } finally {
      this.stats.requestsInFlight--;
    }
  }

  /** Checks a range (from `peer`, or from this node's own archive reads when null) and hands
   *  it to the core once its chain end is vouched for. */
  private async receive(peer: string | null, from: number, applied: { index: number; chain: Uint8Array }, raw: unknown): Promise<void> {
    const answer = raw as Partial<RangeAnswer> | null;
    if (answer?.status === 'busy') {
      this.stats.busyAnswers++;
      return;
    }
    if (answer?.status !== 'ok') {
      this.stats.failures++;
      return;
    }
    const ok = answer as Extract<RangeAnswer, { status: 'ok' }>;
    // The core's own validation of a catch-up message checks every value's shape.
    const env = validateEnvelope({ cluster: this.host.cluster, from: peer ?? 'archive', to: this.host.peerId, msg: { type: 'catchup', values: ok.values, commit: 0, snapshot: null } });
    if (env === null || env.msg.type !== 'catchup' || env.msg.values.length === 0 || env.msg.values[0]!.slot !== from) {
      this.stats.failures++;
      return;
    }
    const values = env.msg.values;
    const range = checkRange(from, applied, values, ok.lastIndex, ok.chainAfter, this.host.checkpoints);
    if (!range.ok) {
      if (range.why === 'checkpoint') this.stats.checkpointMismatches++;
      else if (range.why === 'chain') this.stats.chainMismatches++;
      else this.stats.failures++;
      this.passOver(peer);
      return;
    }
    // This node's own archive reads need no voucher; a checkpoint on the way pins the slots
    // before its command's (checkRange).
    let take = peer === null ? values : values.slice(0, range.pinned);
    if (take.length === 0 && peer !== null && (await this.vouched(range, peer))) take = values;
    if (take.length === 0) {
      this.stats.chainUnvouched++;
      this.passOver(peer);
      return;
    }
    if (this.stopped) return;
    this.stats.rangesReceived++;
    this.stats.slotsReceived += take.length;
    this.wanted = false;
    this.host.learnChosen(take);
    if (this.progressDue()) {
      this.logger.info('catching up through block sync', { index: range.lastIndex, peersBest: this.peerBestIndex(), source: ok.source, from: peer });
    }
  }

  /** A peer whose range failed its check or was not vouched for is passed over a while
   *  (and named leader no more). */
  private passOver(peer: string | null): void {
    if (peer === null) return;
    this.unvouchedUntil.set(peer, this.now() + ANNOUNCE_STALE_MS);
    if (this.named?.peer === peer) this.named = null;
  }

  // ------------------------------------------------------------------------------------
  // Serving.

  /** Asks the voters (all at once) whether the range's end is the cluster's (`vouched`);
   *  then, while no leader is named, the voters of later configurations they report. */
  private async vouched(range: { lastIndex: number; chain: Uint8Array; through: number }, source: string): Promise<boolean> {
    const own = votersWhoVouch(this.host.peerId, this.host.members());
    const answers = new Map<string, ChainAnswer | null>();
    const req = { v: 1, cluster: this.host.cluster, chainAt: range.lastIndex, through: range.through, configsAfter: own.fromSlot };
    const ask = (peers: readonly string[]): Promise<unknown> =>
      Promise.all(
        peers.map(async (v) => {
          try {
            answers.set(v, chainAnswerFrom(await this.net.request(v, BLOCKSYNC_PROTOCOL, req, this.opts.timeoutMs)));
          } catch {
            answers.set(v, null);
          }
        }),
      );
    await ask(vouchersFor(source, this.host.peerId, this.trusted(), own.voters));
    for (let round = 0; round < VOUCHING_ROUNDS_MAX && leaderNamedByMajority(own, answers) === null; round++) {
      const more = laterVoters(own, answers).filter((v) => v !== this.host.peerId);
      if (more.length === 0) break;
      await ask(more);
    }
    const named = leaderNamedByMajority(own, answers);
    if (named !== null) this.named = { peer: named, until: this.now() + ANNOUNCE_STALE_MS };
    return vouched(range, source, this.trusted(), own, answers);
  }

  private async serve(body: unknown): Promise<RangeAnswer | ChainAnswer> {
    const req = body as { v?: unknown; cluster?: unknown; from?: unknown; fromIndex?: unknown; to?: unknown; chainAt?: unknown; through?: unknown; configsAfter?: unknown } | null;
    const count = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 1;
    if (req?.cluster === this.host.cluster && (count(req.chainAt) || req.chainAt === 0) && count(req.through)) {
      return chainAnswer(this.host, req.chainAt, req.through, count(req.configsAfter) || req.configsAfter === 0 ? req.configsAfter : undefined);
    }
    if (req?.cluster !== this.host.cluster || !count(req.from) || !count(req.fromIndex) || !count(req.to) || req.to < req.from) {
      return this.none('malformed request');
    }
    const to = Math.min(req.to, req.from + RANGE_SLOTS_MAX - 1, this.host.applied().slot);
    if (req.from > to) return this.none('this node has not applied that range');
    if (req.from >= this.host.hotFirstSlot()) {
      const hot = this.serveHot(req.from, req.fromIndex, to);
      if (hot !== null) {
        this.stats.servedHot++;
        return hot;
      }
    }
    const cold = this.host.cold();
    if (cold === null) return this.none('the range is not in this node\'s hot log and it cannot read the archive');
    const { from, fromIndex } = req;
    try {
      const got = await this.coldTurn(() => cold.read(from, fromIndex, to));
      if (got === 'busy') {
        this.stats.servedBusy++;
        return { status: 'busy' };
      }
      if (got === null) return this.none('the archive does not hold that range');
      this.stats.servedCold++;
      return { status: 'ok', source: 'cold', values: got.values, lastIndex: got.lastIndex, chainAfter: got.chainAfter };
    } catch (err) {
      return this.none(this.stopped ? 'shutting down' : `cold read failed: ${(err as Error).message}`);
    }
  }

  /**
   * Runs one archive read in this node's cold queue: at most `coldReadsMax` at once and
   * `coldQueueMax` waiting, shared by peers' ranges and watchers below the hot log
   * (net/watch.ts); 'busy' when the queue is full. A read that fails is counted and thrown.
   */
  async coldTurn<T>(read: () => Promise<T>): Promise<T | 'busy'> {
    if (this.stats.coldReadsInFlight >= this.opts.coldReadsMax) {
      if (this.coldWaiting.length >= this.opts.coldQueueMax) {
        this.stats.coldQueueFull++;
        return 'busy';
      }
      await new Promise<void>((resolve) => this.coldWaiting.push(resolve));
      if (this.stopped) throw new Error('shutting down');
    }
    this.stats.coldReadsInFlight++;
    try {
      return await read();
    } catch (err) {
      this.stats.coldReadErrors++;
      this.stats.coldReadLastError = (err as Error).message;
      throw err;
    } finally {
      this.stats.coldReadsInFlight--;
      this.coldWaiting.shift()?.();
    }
  }

  private serveHot(from: number, fromIndex: number, to: number): RangeAnswer | null {
    const values: SlotValue[] = [];
    let bytes = 0;
    let index = fromIndex - 1;
    for (const v of this.host.readHot(from, to)) {
      if (v.slot !== from + values.length) break;
      const size = batchBytes(v.batch);
      if (values.length > 0 && bytes + size > RANGE_BYTES_MAX) break;
      values.push({ slot: v.slot, batch: v.batch });
      bytes += size;
      index += v.batch.length;
    }
    if (values.length === 0) return null;
    const chainAfter = this.host.chainAt(index);
    if (chainAfter === undefined) return null;
    return { status: 'ok', source: 'hot', values, lastIndex: index, chainAfter };
  }

  private none(reason: string): RangeAnswer {
    this.stats.servedNone++;
    return { status: 'none', reason };
  }
}

/** Block sync's figures and the peers it hears from, read when scraped. */
export function registerBlocksyncMetrics(m: Metrics, b: Blocksync, peersConnected: () => number, served: () => { first: number; last: number }): void {
  const s = b.stats;
  m.gauge('pangea_peers_connected', 'Peers with an open libp2p connection.', peersConnected);
  m.gauge('pangea_peer_best_index', 'The best commit index peers announce.', () => b.peerBestIndex());
  m.gauge('pangea_served_first_index', 'First index this node can serve to peers (hot or cold).', () => served().first);
  m.gauge('pangea_served_last_index', 'Last index this node can serve to peers.', () => served().last);
  m.counter('pangea_blocksync_requests_total', 'Ranges requested from peers.', () => s.requests);
  m.gauge('pangea_blocksync_requests_inflight', 'Range requests awaiting an answer.', () => s.requestsInFlight);
  m.counter('pangea_blocksync_timeouts_total', 'Range requests that timed out.', () => s.timeouts);
  m.counter('pangea_blocksync_failures_total', 'Range requests that failed or were refused.', () => s.failures);
  m.counter('pangea_blocksync_busy_total', 'Busy answers received.', () => s.busyAnswers);
  m.counter('pangea_blocksync_ranges_received_total', 'Ranges received, checked and handed to consensus.', () => s.rangesReceived);
  m.counter('pangea_blocksync_chain_mismatches_total', 'Ranges rejected: the hash chain did not match.', () => s.chainMismatches);
  m.counter('pangea_blocksync_checkpoint_mismatches_total', 'Ranges rejected: a --checkpoint did not match.', () => s.checkpointMismatches);
  m.labelled('counter', 'pangea_blocksync_served_total', 'Ranges served to peers, by source.', 'source', () => [
    ['hot', s.servedHot],
    ['cold', s.servedCold],
    ['none', s.servedNone],
    ['busy', s.servedBusy],
  ]);
  m.counter('pangea_blocksync_cold_read_errors_total', 'Cold reads from the archive that failed.', () => s.coldReadErrors);
  m.gauge('pangea_blocksync_cold_reads_inflight', 'Cold reads running.', () => s.coldReadsInFlight);
  m.gauge('pangea_blocksync_cold_queue_depth', 'Cold reads waiting for a slot.', () => b.coldQueueDepth);
  m.counter('pangea_blocksync_cold_queue_full_total', 'Cold requests answered busy: the queue was full.', () => s.coldQueueFull);
  m.lastError('pangea_blocksync_cold_read_last_error_info', 'The last cold read error.', () => s.coldReadLastError);
}
