/**
 * The key/value state machine on LMDB (layout in src/storage/env.ts).
 *
 * `apply` seals each run of entries (up to a segment boundary) as one unit of writes,
 * together with the new applied point, the hash chain and the log time, so after a crash
 * every command has been applied exactly once or not at all (the log replays the rest).
 * The sealed writes ride in the next log batch's LMDB transaction, committed and flushed on
 * lmdb-js's writer thread, not on this thread (staged.ts says why and why that is safe);
 * every read, inside apply and out, sees the writes staged before it.
 *
 * Determinism: an answer depends only on the state and the command. The only clock is the
 * log's: `maxTime`, moved toward each application command's `time` by at most
 * `LOG_TIME_STEP_MS` a command, never back; a client session idle for more than the
 * cluster's `sessionTtlMs` of log time is dropped during apply. The step bound is what keeps
 * a proposer's bad clock from expiring every session at once: a clock an hour fast moves log
 * time by a second a command, so it can delay expiry, never mass-expire. Every parameter
 * apply reads comes from the log (`cluster_settings`, `archive_settings`) or this file.
 *
 * Leases (API contract, "Leases") live on the same clock, log time. A lease expires when
 * log time reaches its `expiresAt`, its TTL and LEASE_GRACE_MS past its grant's or last
 * renewal's log time; from then on it is unknown to every command and read,
 * and its keys are deleted (cause `lease`) by the next commands, in `(expiresAt, id)` order,
 * at most LEASE_EXPIRY_DELETES_MAX deletions a command. Expiry happens only here, at apply,
 * never by a node's timer: the leader's ticks (node.ts) only make log time move while
 * nothing else commits. A key's `sm.kv` value names its lease (encodeKv), and
 * `sm.lease_keys` lists each lease's keys, so both a put and an expiry find what to detach.
 */
import { applyChange, latestConfig, type Command, type Config, type ConfigChange, type ConfigEpoch, type Entry, type LogPoint } from '../consensus/index.js';
import { pack, plain, prefixEnd, readU64, u64Key, u64s, unpack, type StoreEnv } from '../storage/env.js';
import { APPLY_LEVEL_DEFAULT, APPLY_LEVEL_MAX, APPLY_LEVEL_MIN, KEY_BYTES_MAX, LEASES_MAX_DEFAULT, LEASE_EXPIRY_DELETES_MAX, LEASE_GRACE_MS, LEASE_ROW_LOOKAHEAD_MS, LEASE_KEYS_MAX, LEASE_TTL_MS_MAX, LEASE_TTL_MS_MIN, LOG_TIME_STEP_MS, chainBytesLength, decodeAppCommand, nextChain, opLevel,
  type AppCommand, type ApplyResult, type ArchiveSettings, type Compare, type KvOp, type LeaseOp, type TxnOp, type TxnResult, type RequestId } from './command.js';
import { chainRow, readChainRow, recordConfig, type AppliedRecord } from './applied.js';
import { decodeChanges, encodeChanges, type Change, type DeleteCause, type Effects, type EffectsRow } from './effects.js';
import { StagedState, directTables, type StateTables } from './staged.js';
import { SEGMENT_ENTRIES_DEFAULT, SLOT_OVERHEAD_BYTES, endsSegment, type OpenSegment, type SegmentBound } from './segments.js';
import type { ConfigRecord, KeyValue, LeaseRecord, MemberRecord, StateStore } from './state-store.js';
import { StateSnapshot, restoreSnapshot, type SnapshotHeader } from './snapshot.js';
import { applyBlockCmd, blockAt, blockHead, blockMissing, blockRevisions, expireActions, pruneBlockHistory, readBlock, type BlockRevision, type BlockState } from './block-apply.js';
import { isCollectionCmd, isRecordTxnOp, type BlockCmd, type RecordCompare, type RecordTxnOp } from './command.js';
import { applyCollectionCmd, dropLeaseRecords, reclaim, recordTxnCompare, recordTxnGet } from './records.js';
import { applyProviderCmd, dropLeaseProviders, providedBy, providersOf, type ProviderApplyContext, type ProviderRecord } from './providers.js';

export { KEY_BYTES_MAX } from './command.js';
/** Request-id client ids are 1 to 64 characters (API contract). */
export const CLIENT_ID_BYTES_MAX = 64;
export const SESSION_TTL_MS_DEFAULT = 60 * 60 * 1000;
export { LOG_TIME_STEP_MS } from './command.js';
export const CHAIN_BYTES = 32;
const CHAIN_ZERO = new Uint8Array(CHAIN_BYTES);
const REVISION_BYTES = 8;


export type { AppliedRecord } from './applied.js';

export interface SessionRecord {
  readonly seq: number;
  readonly digest: Uint8Array;
  readonly answer: ApplyResult;
  /** Log time of the last use. */
  readonly used: number;
}

type MemberValue = Omit<MemberRecord, 'peerId'>;

/**
 * Two rules of apply, each whole here, that the simulator's self-test breaks one at a time
 * (test/sim/defective-state.ts) to prove it notices: production code carries no switch.
 */
export class ApplyRules {
  constructor(
    /** Keys lease expiry deletes in one command at most (the simulator makes it small, so
     *  that expiry spread over commands is common there). */
    readonly leaseExpiryDeletesMax = LEASE_EXPIRY_DELETES_MAX,
    /** The apply levels this build knows (command.ts): tests build older and newer ones. */
    readonly levelMin = APPLY_LEVEL_MIN,
    readonly levelMax = APPLY_LEVEL_MAX,
  ) {}

  /** Throws ApplyHalt unless this build applies the log at `level`; `what` says where it
   *  is ("index 7 raises the cluster to", "this state is"). */
  checkLevel(level: number, what: string): void {
    if (level >= this.levelMin && level <= this.levelMax) return;
    throw new ApplyHalt(`${what} apply level ${level}; this build applies levels ${this.levelMin} to ${this.levelMax}: run a build that applies level ${level} (\`pangea version\`)`);
  }

  /** Log time after a command proposed at `time`: toward it by at most LOG_TIME_STEP_MS,
   *  never back (see the top of this file). */
  logTimeAfter(logTime: number, time: number): number {
    return time > logTime ? Math.min(time, logTime + LOG_TIME_STEP_MS) : logTime;
  }

  /** A request the client's session answered already (same sequence number): given its
   *  first answer again, never applied twice. */
  answered(session: SessionRecord | undefined, rid: RequestId): boolean {
    return session !== undefined && rid.seq === session.seq;
  }
}

const RULES = new ApplyRules();

/**
 * The log asks for an apply level this build does not know (command.ts): the node stops
 * there (the driver's fail-stop) rather than apply the rest differently from its peers, and
 * stops again at the same index on every restart until it runs a build that knows it.
 */
export class ApplyHalt extends Error {
  override readonly name = 'ApplyHalt';
}

const utf8 = new TextEncoder();
const EMPTY = new Uint8Array(0);
// ignoreBOM: a name or key may start with U+FEFF, which the default decoder drops (helper-48:
// a provider "\uFEFFp" was reaped as "p", another lease's record).
const fromUtf8 = new TextDecoder('utf-8', { ignoreBOM: true });
/** The top bit of a stored revision: the value names a lease (encodeKv). */
const LEASED = 0x80;
const NOT_BOOTSTRAPPED: AppliedRecord = { point: { slot: 0, index: 0, epochs: [] }, chain: CHAIN_ZERO, maxTime: 0, open: openAfter({ slot: 0, index: 0 }, CHAIN_ZERO) };

/** An empty segment starting right after `point`. */
export function openAfter(point: { slot: number; index: number }, chain: Uint8Array): OpenSegment {
  return { first: { slot: point.slot + 1, index: point.index + 1 }, chainBefore: chain, bytes: 0 };
}

export class LmdbStateStore implements StateStore {
  /** Cached copy of `sm.meta/applied`, replaced only after a transaction commits. */
  private current: AppliedRecord;
  /** See committedPoint(). */
  private committed_: LogPoint;
  /** See ApplyBatch.nextExpiry; 0 forces the first scan after opening. */
  private nextExpiry = 0;
  /** See ApplyBatch.nextLeaseExpiry; 0 forces the first scan after opening. */
  private nextLeaseExpiry = 0;
  /** See ApplyBatch.nextActionExpiry; 0 forces the first scan after opening. */
  private nextActionExpiry = 0;
  /** See ApplyBatch.garbage; undefined forces a look after opening. */
  private garbage: boolean | undefined = undefined;
  private settings: ArchiveSettings | null;
  private closed = false;
  /** Every read and write of the state tables (staged.ts). */
  private readonly t: StagedState;
  /** The effects journal's floor (effects.ts), and whether `sm.meta/journal` records it. */
  private journalFrom: number;
  private journalStored: boolean;

  constructor(
    private readonly env: StoreEnv,
    private readonly onClose: () => Promise<void> = async () => {},
    private readonly rules: ApplyRules = RULES,
    /** The simulator's self-test passes a broken stage (test/sim/defective-state.ts). */
    stage: (env: StoreEnv) => StagedState = (e) => new StagedState(e),
  ) {
    this.t = stage(env);
    const applied = this.readApplied();
    this.current = applied ?? NOT_BOOTSTRAPPED;
    if (applied !== null && applied !== undefined) this.rules.checkLevel(applied.level ?? APPLY_LEVEL_DEFAULT, 'this state is at');
    this.committed_ = this.current.point;
    // A store from before the journal existed: it starts at the point opened.
    const journal = this.t.get('smMeta', 'journal');
    this.journalFrom = journal === undefined ? this.current.point.index : (unpack(journal) as { from: number }).from;
    this.journalStored = journal !== undefined;
    const settings = this.t.get('smMeta', 'archive');
    this.settings = settings === undefined ? null : (unpack(settings) as ArchiveSettings);
    // A store from before `sm.configs` existed records at least its newest configuration.
    if (this.current !== NOT_BOOTSTRAPPED && [...this.t.keys('configs', { limit: 1 })].length === 0) {
      this.env.root.transactionSync(() => recordConfig(directTables(this.env), this.current.point.epochs));
    }
  }

  /** True once `bootstrap` ran (or anything was applied): the data dir holds a node. */
  bootstrapped(): boolean {
    return this.readApplied() !== undefined;
  }

  /**
   * Sets the genesis point (its epochs name the first configuration) and the first members,
   * once, in one transaction. `members` defaults to the configuration's nodes without
   * addresses. Throws if this store was bootstrapped before.
   */
  bootstrap(point: LogPoint, members?: readonly MemberRecord[]): void {
    const config = latestConfig(point.epochs);
    const records = members ?? [
      ...config.voters.map((peerId): MemberRecord => ({ peerId, role: 'voter', http: '', p2p: [] })),
      ...config.learners.map((peerId): MemberRecord => ({ peerId, role: 'learner', http: '', p2p: [] })),
    ];
    const record: AppliedRecord = { point, chain: CHAIN_ZERO, maxTime: 0, open: openAfter(point, CHAIN_ZERO) };
    this.t.assertIdle('bootstrap');
    this.env.root.transactionSync(() => {
      const t = directTables(this.env);
      if (t.get('smMeta', 'applied') !== undefined) throw new Error('state store is already bootstrapped');
      for (const m of records) putMember(t, m.peerId, { role: m.role, http: m.http, p2p: m.p2p });
      for (const id of config.voters) t.put('votersEver', utf8.encode(id), EMPTY);
      recordConfig(t, point.epochs);
      t.put('smMeta', 'applied', pack(record));
      t.put('smMeta', 'journal', pack({ from: point.index }));
    });
    this.current = record;
    this.committed_ = record.point; // committed synchronously above
    this.journalFrom = point.index;
    this.journalStored = true;
  }

  /**
   * Disaster recovery (`serve --force-new-cluster`): from the next slot on, `config` alone
   * governs, whatever the log said before; members outside it are forgotten. Everything
   * applied stays.
   */
  forceConfig(config: Config): void {
    const point: LogPoint = { ...this.current.point, epochs: [{ fromSlot: this.current.point.slot + 1, config }] };
    const record: AppliedRecord = { ...this.current, point };
    this.t.assertIdle('forcing a configuration');
    this.env.root.transactionSync(() => {
      const t = directTables(this.env);
      for (const m of readMembers(t)) {
        if (!config.voters.includes(m.peerId) && !config.learners.includes(m.peerId)) t.remove('members', utf8.encode(m.peerId));
      }
      for (const id of config.voters) {
        const m = readMembers(t).find((x) => x.peerId === id);
        putMember(t, id, { role: 'voter', http: m?.http ?? '', p2p: m?.p2p ?? [] });
        t.put('votersEver', utf8.encode(id), EMPTY);
      }
      // Changes chosen before and not yet in effect never will be.
      for (const key of [...t.keys('configs', { start: u64Key(point.slot + 1) })]) t.remove('configs', key);
      recordConfig(t, point.epochs, true);
      t.put('smMeta', 'applied', pack(record));
    });
    this.current = record;
    this.committed_ = record.point; // committed synchronously above
  }

  /**
   * `serve --restore-from`: this state becomes the start of a new cluster that `config`
   * alone governs. Members outside it are forgotten, the old cluster's archive settings and
   * finished segments are dropped (the new cluster records its own), and a new segment opens
   * right after the applied point.
   */
  rebase(config: Config): void {
    this.forceConfig(config);
    const record: AppliedRecord = { ...this.current, open: openAfter(this.current.point, this.current.chain) };
    this.t.assertIdle('rebasing');
    this.env.root.transactionSync(() => {
      const t = directTables(this.env);
      t.remove('smMeta', 'archive');
      for (const key of [...t.keys('segments')]) t.remove('segments', key);
      // The old cluster's configurations (and removals) are not this one's history.
      for (const key of [...t.keys('configs')]) t.remove('configs', key);
      for (const key of [...t.keys('removed')]) t.remove('removed', key);
      recordConfig(t, this.current.point.epochs, true);
      t.put('smMeta', 'applied', pack(record));
    });
    this.current = record;
    this.committed_ = record.point; // committed synchronously above
    this.settings = null;
  }

  applied(): { point: LogPoint; chain: Uint8Array } {
    return { point: this.current.point, chain: this.current.chain };
  }

  logTime(): number {
    return this.current.maxTime;
  }

  apply(entries: readonly Entry[], onSegment?: (bound: SegmentBound) => void): ApplyResult[] {
    if (this.closed) throw new Error('state store is closed');
    const out: ApplyResult[] = [];
    let next = 0;
    // One sealed unit per run of entries up to a segment boundary: the state at a boundary
    // is sealed (and visible to a snapshot, staged writes included) before the next entry
    // is applied.
    while (next < entries.length) {
      const batch = new ApplyBatch(this.t, this.rules, this.current, this.nextExpiry, this.nextLeaseExpiry, this.nextActionExpiry, this.garbage, this.settings);
      let bound: SegmentBound | null = null;
      let end = next;
      const done = out.length;
      try {
        while (end < entries.length && bound === null) bound = batch.applyEntry(entries[end++]!, out);
        this.t.put('smMeta', 'applied', pack(batch.record()));
        if (!this.journalStored) this.t.put('smMeta', 'journal', pack({ from: this.journalFrom }));
        if (batch.settings !== this.settings) this.t.put('smMeta', 'archive', pack(batch.settings));
        if (bound !== null) this.t.put('segments', u64Key(bound.last.slot), pack(bound));
      } catch (e) {
        this.t.rollback();
        out.length = done;
        throw e;
      }
      const point = batch.record().point;
      this.t.commit(() => {
        this.committed_ = point;
      });
      this.journalStored = true;
      // Only once staged whole: a throw above leaves these as they were.
      next = end;
      this.current = batch.record();
      this.nextExpiry = batch.nextExpiry;
      this.nextLeaseExpiry = batch.nextLeaseExpiry;
      this.nextActionExpiry = batch.nextActionExpiry;
      this.garbage = batch.garbage;
      this.settings = batch.settings;
      if (bound !== null) onSegment?.(bound);
    }
    return out;
  }

  /** The effects journal's floor: it holds the effects of every index after it. */
  journalFloor(): number {
    return this.journalFrom;
  }

  /** The effects of the indexes in (`after`, `through`] that changed any key, oldest
   *  first, at most `limit` of them (effects.ts). */
  effects(after: number, through: number, limit: number): Effects[] {
    const out: Effects[] = [];
    if (through <= after || limit <= 0) return out;
    for (const { key, value } of this.t.range('effects', { start: u64Key(after + 1), end: u64Key(through + 1), limit })) {
      out.push({ index: readU64(key as Uint8Array), changes: decodeChanges(value) });
    }
    return out;
  }

  /** The journal's stored rows for indexes in (`after`, `through`], for the archive
   *  (archive/effects-object.ts): the bytes as apply wrote them. */
  effectRows(after: number, through: number): EffectsRow[] {
    const out: EffectsRow[] = [];
    if (through <= after) return out;
    for (const { key, value } of this.t.range('effects', { start: u64Key(after + 1), end: u64Key(through + 1) })) {
      out.push({ index: readU64(key as Uint8Array), bytes: Uint8Array.prototype.slice.call(value) });
    }
    return out;
  }

  applyLevel(): number {
    return this.current.level ?? APPLY_LEVEL_DEFAULT;
  }

  /** The cluster's archive settings, once the log has set them. */
  archiveSettings(): ArchiveSettings | null {
    return this.settings;
  }

  /**
   * Drops the chain values of indexes below `index` (the hot log was pruned through it: no
   * peer can ask for a range there any more, and the archive holds each segment's ends).
   * Asynchronous removes, committed with the next writes.
   */
  pruneChain(index: number): void {
    for (const key of [...this.t.keys('chain', { end: u64Key(Math.max(0, index)) })]) this.t.remove('chain', key);
    // The journal goes with the hot log: below it, history is the archive's.
    if (index - 1 > this.journalFrom) {
      for (const key of [...this.t.keys('effects', { end: u64Key(index) })]) this.t.remove('effects', key);
      this.journalFrom = index - 1;
      this.t.put('smMeta', 'journal', pack({ from: this.journalFrom }));
      pruneBlockHistory(this.t, this.journalFrom);
    }
    this.t.commit();
  }

  /** The state as of now, for the archive (snapshot.ts). Close it if not read through. */
  snapshot(): StateSnapshot {
    return new StateSnapshot(this.env, this.t.freeze());
  }

  /** Fills this empty (never bootstrapped) store from a snapshot stream (snapshot.ts). */
  async restore(source: AsyncIterable<Uint8Array>): Promise<SnapshotHeader> {
    this.t.assertIdle('restoring a snapshot');
    const header = await restoreSnapshot(this.env, source, (h) => this.rules.checkLevel(h.applied.level ?? APPLY_LEVEL_DEFAULT, 'this snapshot is at'));
    this.current = header.applied;
    // The history before a snapshot is not in it: the journal starts there (stored with
    // the next apply; a restart before that opens it at the same point).
    this.journalFrom = header.applied.point.index;
    this.journalStored = false;
    this.committed_ = header.applied.point;
    this.settings = header.settings;
    this.nextExpiry = 0;
    this.nextLeaseExpiry = 0;
    this.nextActionExpiry = 0;
    this.garbage = undefined;
    return header;
  }

  configsAfter(slot: number, limit: number): ConfigRecord[] {
    const out: ConfigRecord[] = [];
    for (const { key, value } of this.t.range('configs', { start: u64Key(slot + 1), limit })) out.push({ fromSlot: readU64(key as Uint8Array), voters: unpack(value) as string[] });
    return out;
  }

  /** Finished segments whose last slot is after `afterSlot`, in order, at most `limit`. */
  segments(afterSlot: number, limit = Number.MAX_SAFE_INTEGER): SegmentBound[] {
    const out: SegmentBound[] = [];
    for (const { value } of this.t.range('segments', { start: u64Key(afterSlot + 1), limit })) out.push(unpack(value) as SegmentBound);
    return out;
  }

  get(key: Uint8Array): KeyValue | undefined {
    return readKv(this.t, key);
  }

  range(prefix: Uint8Array, after: Uint8Array | null, limit: number, bytesMax: number): { items: KeyValue[]; more: boolean } {
    const items: KeyValue[] = [];
    if (limit <= 0) return { items, more: false };
    const start = after !== null && compareBytes(after, prefix) >= 0 ? after : prefix;
    const end = prefixEnd(prefix);
    let bytes = 0;
    const bounds = { ...(start.byteLength > 0 ? { start } : {}), ...(end === null ? {} : { end }) };
    for (const { key, value } of this.t.range('kv', bounds)) {
      const k = key as Uint8Array;
      if (after !== null && compareBytes(k, after) === 0) continue;
      if (!startsWith(k, prefix)) break;
      const valueBytes = value.byteLength - kvHeadBytes(value);
      // A page always carries at least one item, so paging always progresses.
      if (items.length === limit || (items.length > 0 && bytes + valueBytes > bytesMax)) return { items, more: true };
      bytes += valueBytes;
      items.push(decodeKv(k, value));
    }
    return { items, more: false };
  }

  lease(id: number): LeaseRecord | undefined {
    if (!Number.isSafeInteger(id) || id < 1) return undefined;
    return liveLease(this.t, id, this.current.maxTime);
  }

  leases(after: number, limit: number): { items: LeaseRecord[]; more: boolean } {
    const items: LeaseRecord[] = [];
    for (const { key, value } of this.t.range('leases', { start: u64Key(Math.max(0, after) + 1) })) {
      const l = decodeLease(readU64(key as Uint8Array), value);
      if (l.expiresAt <= this.current.maxTime) continue; // expired, keys not yet all reaped
      if (items.length === limit) return { items, more: true };
      items.push(l);
    }
    return { items, more: false };
  }

  leaseCount(): number {
    return this.current.leases ?? 0;
  }

  providers(key: Uint8Array): ProviderRecord[] {
    return providersOf(this.t, key);
  }

  provided(provider: string, after: Uint8Array | null, limit: number): { items: ProviderRecord[]; more: boolean } {
    return providedBy(this.t, provider, after, limit);
  }

  /** The state tables, for the collection reads (records.ts). */
  get tables(): StateTables {
    return this.t;
  }

  block(id: string): BlockState | undefined {
    const b = readBlock(this.t, id);
    return b === undefined ? undefined : blockAt(this.t, id, b.revision, 0) as BlockState;
  }

  blockBytes(id: string): number {
    return blockHead(this.t, id).bytes;
  }

  blockAt(id: string, at: number): BlockState | 'unavailable' {
    return blockAt(this.t, id, at, this.journalFrom);
  }

  blockRevisions(id: string, after: number, limit: number): { items: BlockRevision[]; more: boolean; complete: boolean } {
    return blockRevisions(this.t, id, after, limit, this.journalFrom);
  }

  blockMissing(id: string, expected: number, current: number): { items: BlockRevision[]; more: boolean } {
    return blockMissing(this.t, id, expected, current, this.journalFrom);
  }

  members(): MemberRecord[] {
    return readMembers(this.t);
  }

  /** Every peer that was ever a voter of this cluster: whose signed manifests count. */
  wasRemoved(peerId: string): boolean {
    return this.t.get('removed', utf8.encode(peerId)) !== undefined;
  }

  votersEver(): string[] {
    return [...this.t.keys('votersEver')].map((k) => fromUtf8.decode(k as Uint8Array));
  }

  chainAt(index: number): Uint8Array | undefined {
    return this.chainRowAt(index)?.chain;
  }

  slotAt(index: number): number | undefined {
    return this.chainRowAt(index)?.slot;
  }

  private chainRowAt(index: number): { chain: Uint8Array; slot: number } | undefined {
    if (!Number.isSafeInteger(index) || index < 1) return undefined;
    const v = this.t.get('chain', u64Key(index));
    return v === undefined ? undefined : readChainRow(v);
  }

  /** `handler` is told if an apply's commit fails (the disk is full or gone): the node must
   *  stop; every later apply throws that failure too. */
  onCommitFailure(handler: (error: unknown) => void): void {
    this.t.onFailure = handler;
  }

  /** Hands the applies held back to lmdb-js (see src/state/staged.ts). */
  handOver(): void {
    if (!this.closed) this.t.handOver();
  }

  /** Resolves once every apply so far is committed (not necessarily flushed to disk);
   *  rejects if a commit failed. */
  committed(): Promise<void> {
    return this.t.committed();
  }

  /** The applied point as committed to LMDB (a crash keeps at least this much once it is
   *  flushed; `applied()` may be ahead): the furthest the log may be compacted. */
  committedPoint(): LogPoint {
    return this.committed_;
  }

  /** Marks the store closed, waits for the applies on their way to LMDB, and releases the
   *  environment (once). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.t.committed().catch(() => {}); // a failure was reported when it happened
    await this.onClose();
  }

  private readApplied(): AppliedRecord | undefined {
    const v = this.t.get('smMeta', 'applied');
    return v === undefined ? undefined : (unpack(v) as AppliedRecord);
  }
}

function putMember(t: StateTables, peerId: string, m: MemberValue): void {
  t.put('members', utf8.encode(peerId), pack(m));
}

/**
 * One `apply` call's work, staged as one transaction: every read goes through the staged
 * writes, so it sees this batch's earlier writes.
 */
class ApplyBatch {
  private point: LogPoint;
  private chain: Uint8Array;
  private maxTime: number;
  private sessionTtlMs: number | undefined;
  private maxLeases: number | undefined;
  private level: number;
  /** The configurations as of the entry being applied (its own changes included). */
  private entryEpochs: readonly ConfigEpoch[] = [];
  private leaseCount: number;
  private leasedKeys: number;
  private open: OpenSegment;
  /** What the command being applied changed (effects.ts), written after it. */
  private changes: Change[] = [];
  /** A lower bound on the oldest session's last use (a cache: no scan is needed while the
   *  cutoff is at or below it). New and refreshed sessions are never older than it. */
  nextExpiry: number;
  /** A lower bound on the earliest lease expiry (a cache like `nextExpiry`): no scan is
   *  needed while log time is below it. An expired lease with keys left keeps it at or
   *  below log time, so the next command goes on reaping. */
  nextLeaseExpiry: number;
  /** A lower bound on the earliest pend expiry (block-apply.ts), a cache like the others. */
  nextActionExpiry: number;
  /** Whether dropped collection rows wait to be reclaimed (records.ts), a cache of whether
   *  `sm.coll_garbage` has rows: undefined when not known, set after every collection
   *  command (only those add rows). */
  garbage: boolean | undefined;

  constructor(
    private readonly t: StagedState,
    private readonly rules: ApplyRules,
    from: AppliedRecord,
    nextExpiry: number,
    nextLeaseExpiry: number,
    nextActionExpiry: number,
    garbage: boolean | undefined,
    /** Replaced (never mutated) when a settings command applies. */
    public settings: ArchiveSettings | null,
  ) {
    this.nextExpiry = nextExpiry;
    this.nextLeaseExpiry = nextLeaseExpiry;
    this.nextActionExpiry = nextActionExpiry;
    this.garbage = garbage;
    this.maxLeases = from.maxLeases;
    this.level = from.level ?? APPLY_LEVEL_DEFAULT;
    this.leaseCount = from.leases ?? 0;
    this.leasedKeys = from.leasedKeys ?? 0;
    this.point = from.point;
    this.chain = from.chain;
    this.maxTime = from.maxTime;
    this.sessionTtlMs = from.sessionTtlMs;
    this.open = from.open;
  }

  record(): AppliedRecord {
    return {
      point: this.point,
      chain: this.chain,
      maxTime: this.maxTime,
      open: this.open,
      ...(this.sessionTtlMs === undefined ? {} : { sessionTtlMs: this.sessionTtlMs }),
      ...(this.maxLeases === undefined ? {} : { maxLeases: this.maxLeases }),
      ...(this.level === APPLY_LEVEL_DEFAULT ? {} : { level: this.level }),
      ...(this.leaseCount === 0 ? {} : { leases: this.leaseCount }),
      ...(this.leasedKeys === 0 ? {} : { leasedKeys: this.leasedKeys }),
    };
  }

  /** Applies one slot; returns the segment it finished, if it ended one. */
  applyEntry(entry: Entry, out: ApplyResult[]): SegmentBound | null {
    if (entry.slot !== this.point.slot + 1 || entry.index !== this.point.index + 1) {
      throw new Error(`apply: entry slot ${entry.slot} index ${entry.index} does not follow applied slot ${this.point.slot} index ${this.point.index}`);
    }
    // A build that no longer applies the level the log is at (APPLY_LEVEL_MIN raised) halts
    // before anything of the entry applies.
    if (this.level < this.rules.levelMin) this.rules.checkLevel(this.level, `index ${entry.index} is at`);
    let bytes = this.open.bytes + SLOT_OVERHEAD_BYTES;
    this.entryEpochs = entry.epochs;
    entry.batch.forEach((cmd, i) => {
      const index = entry.index + i;
      out.push(cmd.kind === 'app' ? this.applyApp(cmd.data, index) : this.applyConfig(cmd.change, index));
      if (this.changes.length > 0) {
        this.t.put('effects', u64Key(index), encodeChanges(this.changes));
        this.changes = [];
      }
      bytes += this.extendChain(entry.slot, cmd, index);
    });
    if (entry.epochs !== this.point.epochs) recordConfig(this.t, entry.epochs);
    this.point = { slot: entry.slot, index: entry.index + entry.batch.length - 1, epochs: entry.epochs };
    const segmentEntries = this.settings?.segmentEntries ?? SEGMENT_ENTRIES_DEFAULT;
    if (!endsSegment(this.open, bytes, this.point.index, segmentEntries)) {
      this.open = { ...this.open, bytes };
      return null;
    }
    const bound: SegmentBound = { first: this.open.first, last: { slot: this.point.slot, index: this.point.index }, chainBefore: this.open.chainBefore, chainAfter: this.chain, bytes };
    this.open = openAfter(this.point, this.chain);
    return bound;
  }

  /** Extends the hash chain with `cmd`, chosen at `slot`; returns the bytes it covered. */
  private extendChain(slot: number, cmd: Command, index: number): number {
    this.chain = nextChain(this.chain, slot, cmd);
    this.t.put('chain', u64Key(index), chainRow(this.chain, slot));
    return chainBytesLength(cmd);
  }

  // --- application commands ------------------------------------------------------------

  private applyApp(data: Uint8Array, index: number): ApplyResult {
    const cmd = decodeAppCommand(data);
    if (cmd === null) return { kind: 'invalid', index, message: 'undecodable command' };
    // An op above the cluster's level is what a build without it sees: undecodable, with no
    // effect at all (not even on log time).
    if (opLevel(cmd.op) > this.level) return { kind: 'invalid', index, message: `${cmd.op.t} needs cluster apply level ${opLevel(cmd.op)}; the cluster is at ${this.level} (\`pangea cluster upgrade\`)` };
    const problem = checkCommand(cmd);
    if (problem !== null) return { kind: 'invalid', index, message: problem };
    // Proposers stamp whole milliseconds; a fractional time (a crafted command) would make
    // log time fractional, which no expiry row can key. Refused from level 2 on (review of
    // the blocks apply); below, as before.
    if (this.level >= 2 && !Number.isSafeInteger(cmd.time)) return { kind: 'invalid', index, message: 'time must be whole milliseconds' };
    // And a fractional log time a level-1 command left is rounded up once, here (review:
    // carried into level 2, it made a pend's expiry row throw).
    if (this.level >= 2 && !Number.isSafeInteger(this.maxTime)) this.maxTime = Math.ceil(this.maxTime);
    const op = cmd.op;
    if (op.t === 'cluster_level') {
      // The members that said they apply the level must be the members here: one added
      // since the check may not (review of the apply levels). Refused before anything moves.
      const config = latestConfig(this.entryEpochs);
      const here = [...config.voters, ...config.learners].sort();
      if (here.length !== op.members.length || here.some((m, i) => m !== op.members[i])) {
        return { kind: 'invalid', index, message: `the members changed since their builds were checked (now ${here.join(', ')}): run the upgrade again` };
      }
      // Before it changes anything, as a build that knows the level applies it.
      this.rules.checkLevel(Math.max(op.level, this.level), `index ${index} raises the cluster to`);
    }
    const time = this.rules.logTimeAfter(this.maxTime, cmd.time);
    if (time !== this.maxTime) {
      this.maxTime = time;
      this.expireSessions();
    }
    this.expireLeases();
    if (this.nextActionExpiry <= this.maxTime) this.nextActionExpiry = expireActions(this.t, this.maxTime);
    // Dropped collections and indexes go in bounded steps, one a command while any are left.
    if (this.level >= 3 && this.garbage !== false) this.garbage = reclaim(this.t, this.providerContext(index).onLease);
    if (isCollectionCmd(cmd.op)) {
      this.garbage = undefined;
      return applyCollectionCmd(this.providerContext(index), cmd.op);
    }
    if (cmd.op.t === 'provider_put' || cmd.op.t === 'provider_delete') return applyProviderCmd(this.providerContext(index), cmd.op);
    if (isBlockCmd(cmd.op)) {
      const r = applyBlockCmd({ t: this.t, now: this.maxTime, index, changes: this.changes }, cmd.op);
      if (r.kind === 'block_pended') this.nextActionExpiry = Math.min(this.nextActionExpiry, r.expiresAt);
      return r;
    }
    if (cmd.op.t === 'archive_settings') {
      this.settings = cmd.op.settings;
      return { kind: 'settings', index };
    }
    if (cmd.op.t === 'cluster_level') {
      if (cmd.op.level < this.level) return { kind: 'invalid', index, message: `the cluster's apply level is ${this.level}: it is never lowered` };
      this.level = cmd.op.level;
      return { kind: 'level', index, level: this.level };
    }
    if (cmd.op.t === 'cluster_settings') {
      this.sessionTtlMs = cmd.op.settings.sessionTtlMs;
      this.maxLeases = cmd.op.settings.maxLeases;
      this.nextExpiry = 0; // a shorter TTL may expire sessions the cache says are young
      this.expireSessions();
      return { kind: 'settings', index };
    }
    if (isLeaseOp(cmd.op)) return this.applyLease(cmd.op, index);
    const rid = cmd.requestId;
    if (rid === undefined) return this.execute(cmd.op, index);
    const clientKey = utf8.encode(rid.client);
    const stored = this.t.get('sessions', clientKey);
    const session = stored === undefined ? undefined : (unpack(stored) as SessionRecord);
    if (session !== undefined && rid.seq < session.seq) return { kind: 'request_id_stale', index };
    if (session !== undefined && this.rules.answered(session, rid)) {
      if (compareBytes(rid.digest, session.digest) !== 0) return { kind: 'request_id_conflict', index };
      this.putSession(clientKey, session, { ...session, used: this.maxTime });
      return session.answer; // the first answer, at its own index: not applied again
    }
    const answer = this.execute(cmd.op as KvOp, index);
    this.putSession(clientKey, session, { seq: rid.seq, digest: rid.digest, answer, used: this.maxTime });
    return answer;
  }

  private putSession(clientKey: Uint8Array, old: SessionRecord | undefined, next: SessionRecord): void {
    if (old !== undefined) this.t.remove('sessionUse', u64Key(old.used, clientKey));
    this.t.put('sessionUse', u64Key(next.used, clientKey), new Uint8Array(0));
    this.t.put('sessions', clientKey, pack(next));
  }

  /** Drops sessions last used more than `sessionTtlMs` of log time ago (oldest first). */
  private expireSessions(): void {
    const cutoff = this.maxTime - (this.sessionTtlMs ?? SESSION_TTL_MS_DEFAULT);
    if (cutoff <= this.nextExpiry) return;
    const expired: Uint8Array[] = [];
    this.nextExpiry = this.maxTime; // when none is left: sessions to come are used at or after now
    for (const k of this.t.keys('sessionUse')) {
      const key = k as Uint8Array;
      const used = readU64(key);
      if (used >= cutoff) {
        this.nextExpiry = used;
        break;
      }
      expired.push(key);
    }
    for (const key of expired) {
      this.t.remove('sessionUse', key);
      this.t.remove('sessions', key.subarray(8));
    }
  }

  private execute(op: KvOp, index: number): ApplyResult {
    switch (op.t) {
      case 'put': {
        // An unconditional put needs no read (the common case: it shows in restore speed).
        const cur = op.ifMatch === undefined && op.ifAbsent !== true ? undefined : readKv(this.t, op.key);
        if ((op.ifMatch !== undefined && cur?.revision !== op.ifMatch) || (op.ifAbsent === true && cur !== undefined)) {
          return { kind: 'precondition_failed', index, revision: cur?.revision ?? null };
        }
        const refused = this.checkLeases([{ op: 'put', key: op.key, value: op.value, ...(op.lease === undefined ? {} : { lease: op.lease }) }], index);
        if (refused !== null) return refused;
        this.put(op.key, op.value, index, op.lease);
        return { kind: 'put', index, revision: index };
      }
      case 'delete': {
        const cur = readKv(this.t, op.key);
        if (op.ifMatch !== undefined && cur?.revision !== op.ifMatch) {
          return { kind: 'precondition_failed', index, revision: cur?.revision ?? null };
        }
        if (cur !== undefined) this.remove(op.key, 'delete', cur.lease);
        return { kind: 'delete', index, deleted: cur !== undefined };
      }
      case 'txn': {
        const succeeded = op.compare.every((c) => this.holds(c)) && (op.recordCompare ?? []).every((c: RecordCompare) => recordTxnCompare(this.t, c));
        const branch = succeeded ? op.success : op.failure;
        const refused = this.checkLeases(branch, index);
        if (refused !== null) return refused;
        if (!branch.some(isRecordTxnOp)) return { kind: 'txn', index, succeeded, results: branch.map((o) => this.txnOp(o as Exclude<TxnOp, RecordTxnOp>, index)) };
        // A record op may be refused (its schema, a unique index, no such collection): then
        // the txn applies nothing, so everything it did before that op is undone.
        const mark = this.t.mark();
        const changes = this.changes.length;
        const leasedKeys = this.leasedKeys;
        this.garbage = undefined;
        const results: TxnResult[] = [];
        for (const o of branch) {
          if (!isRecordTxnOp(o)) {
            results.push(this.txnOp(o, index));
            continue;
          }
          if (o.op === 'getRecord') {
            results.push(recordTxnGet(this.t, o.collection, o.pk));
            continue;
          }
          const ctx = this.providerContext(index);
          const r = o.op === 'putRecord' ? applyCollectionCmd(ctx, { t: 'record_put', collection: o.collection, pk: o.pk, record: o.record }) : applyCollectionCmd(ctx, { t: 'record_delete', collection: o.collection, pk: o.pk });
          if (r.kind === 'record_put') results.push({ revision: r.revision });
          else if (r.kind === 'record_deleted') results.push({ deleted: r.deleted });
          else {
            this.t.rollbackTo(mark);
            this.changes.length = changes;
            this.leasedKeys = leasedKeys;
            return r;
          }
        }
        return { kind: 'txn', index, succeeded, results };
      }
    }
  }

  private holds(c: Compare): boolean {
    const cur = readKv(this.t, c.key);
    switch (c.target) {
      case 'value':
        if (cur === undefined || !(c.value instanceof Uint8Array)) return false;
        return compareWith(compareBytes(cur.value, c.value), c.op);
      case 'revision':
        if (typeof c.value !== 'number') return false;
        return compareWith(Math.sign((cur?.revision ?? 0) - c.value), c.op);
      case 'exists':
        if (typeof c.value !== 'boolean') return false;
        return c.op === '==' ? (cur !== undefined) === c.value : c.op === '!=' ? (cur !== undefined) !== c.value : false;
    }
  }

  private txnOp(o: Exclude<TxnOp, RecordTxnOp>, index: number): TxnResult {
    switch (o.op) {
      case 'put':
        this.put(o.key, o.value, index, o.lease);
        return { revision: index };
      case 'delete': {
        const cur = readKv(this.t, o.key);
        if (cur !== undefined) this.remove(o.key, 'txn', cur.lease);
        return { deleted: cur !== undefined };
      }
      case 'get': {
        const cur = readKv(this.t, o.key);
        return cur === undefined ? { value: null, revision: null } : { value: cur.value, revision: cur.revision };
      }
    }
  }

  /** Writes `key`, attached to `lease` (checked live and below its key limit by
   *  checkLeases) or to none: a put without a lease detaches the key, as in etcd. */
  private put(key: Uint8Array, value: Uint8Array, revision: number, lease?: number): void {
    // With no key attached anywhere there is nothing to detach: no read (restore speed).
    const old = lease !== undefined || this.leasedKeys > 0 ? readLeaseOf(this.t, key) : undefined;
    if (old !== lease) {
      if (old !== undefined) this.detach(key, old);
      if (lease !== undefined) this.attach(key, lease);
    }
    this.t.put('kv', key, encodeKv(revision, value, lease));
    this.changes.push(lease === undefined ? { type: 'put', key, value } : { type: 'put', key, value, lease });
  }

  private remove(key: Uint8Array, cause: DeleteCause, lease: number | undefined): void {
    if (lease !== undefined) this.detach(key, lease);
    this.t.remove('kv', key);
    this.changes.push({ type: 'delete', key, cause });
  }

  // --- leases --------------------------------------------------------------------------

  private applyLease(op: LeaseOp, index: number): ApplyResult {
    switch (op.t) {
      case 'lease_tick':
        return { kind: 'tick', index };
      case 'lease_grant': {
        if (op.ttlMs < LEASE_TTL_MS_MIN || op.ttlMs > LEASE_TTL_MS_MAX) return { kind: 'invalid', index, message: `a lease's TTL is ${LEASE_TTL_MS_MIN / 1000} to ${LEASE_TTL_MS_MAX / 1000} seconds` };
        const max = this.maxLeases ?? LEASES_MAX_DEFAULT;
        if (this.leaseCount >= max) return { kind: 'limit_reached', index, message: `the cluster holds ${this.leaseCount} leases, its limit (maxLeases ${max})` };
        const expiresAt = this.maxTime + op.ttlMs + LEASE_GRACE_MS;
        const lease: StoredLease = { id: index, ttlMs: op.ttlMs, expiresAt, keys: 0, row: expiresAt };
        this.putLease(lease);
        this.t.put('leaseExpiry', u64Key(lease.row, u64Key(lease.id)), EMPTY);
        this.nextLeaseExpiry = Math.min(this.nextLeaseExpiry, lease.expiresAt);
        this.leaseCount++;
        return { kind: 'lease_granted', index, id: index, ttlMs: op.ttlMs, at: this.maxTime };
      }
      case 'lease_keepalive': {
        const ttls = op.ids.map((id) => {
          const lease = liveLease(this.t, id, this.maxTime);
          if (lease === undefined) return null;
          // The expiry row stays where it is (expireLeases moves it when its time comes): a
          // renewal is one write, not three (measured: bench watch, lease_keepalive_cost).
          const expiresAt = this.maxTime + lease.ttlMs + LEASE_GRACE_MS;
          if (expiresAt !== lease.expiresAt) this.putLease({ ...lease, expiresAt });
          return lease.ttlMs;
        });
        return { kind: 'lease_kept', index, ttls, at: this.maxTime };
      }
      case 'lease_revoke': {
        const stored = this.t.get('leases', u64Key(op.id));
        if (stored === undefined) return { kind: 'lease_revoked', index, revoked: false };
        const lease = decodeLease(op.id, stored);
        // An expired lease's keys go now too: it was unknown already (revoked: false).
        this.dropLease(lease, Number.MAX_SAFE_INTEGER);
        return { kind: 'lease_revoked', index, revoked: lease.expiresAt > this.maxTime };
      }
    }
  }

  /**
   * Why the puts of `ops` (one put, or a txn's chosen branch, applied in order) cannot
   * attach their keys as asked, or null: a lease unknown or expired, or one that would hold
   * more than LEASE_KEYS_MAX keys once the ops have run. Checked before any op applies, so
   * a refused command changes nothing.
   */
  private checkLeases(ops: readonly TxnOp[], index: number): ApplyResult | null {
    if (this.leasedKeys === 0 && !ops.some((o) => o.op === 'put' && o.lease !== undefined)) return null;
    const leaseOf = new Map<string, number | undefined>();
    /** Every lease a put attaches to, each checked live once (a detach from a lease, which
     *  may be expired, checks nothing: review found a put skipping the check after one). */
    const live = new Map<number, LeaseRecord>();
    const delta = new Map<number, number>();
    const add = (lease: number, n: number): void => void delta.set(lease, (delta.get(lease) ?? 0) + n);
    for (const o of ops) {
      if (o.op === 'get' || isRecordTxnOp(o)) continue;
      const k = Buffer.from(o.key.buffer, o.key.byteOffset, o.key.byteLength).toString('latin1');
      const cur = leaseOf.has(k) ? leaseOf.get(k) : readLeaseOf(this.t, o.key);
      const next = o.op === 'put' ? o.lease : undefined;
      if (next !== undefined && !live.has(next)) {
        const lease = liveLease(this.t, next, this.maxTime);
        if (lease === undefined) return { kind: 'lease_not_found', index, id: next };
        live.set(next, lease);
      }
      if (cur !== next) {
        if (cur !== undefined) add(cur, -1);
        if (next !== undefined) add(next, 1);
      }
      leaseOf.set(k, next);
    }
    for (const [id, lease] of live) {
      const n = delta.get(id) ?? 0;
      if (lease.keys + n > LEASE_KEYS_MAX) return { kind: 'limit_reached', index, message: `lease ${id} would hold ${lease.keys + n} keys; a lease holds at most ${LEASE_KEYS_MAX}` };
    }
    return null;
  }

  private attach(key: Uint8Array, id: number): void {
    const lease = liveLease(this.t, id, this.maxTime);
    // checkLeases let only live leases through: anything else is a bug, and applying on
    // would attach a key to a lease every replica considers gone. Stop instead.
    if (lease === undefined) throw new Error(`apply: attaching a key to lease ${id}, which is not live at log time ${this.maxTime}`);
    this.putLease({ ...lease, keys: lease.keys + 1 });
    this.t.put('leaseKeys', u64Key(id, key), EMPTY);
    this.leasedKeys++;
  }

  private detach(key: Uint8Array, id: number): void {
    const stored = this.t.get('leases', u64Key(id));
    if (stored !== undefined) {
      const lease = decodeLease(id, stored);
      this.putLease({ ...lease, keys: lease.keys - 1 });
    }
    this.t.remove('leaseKeys', u64Key(id, key));
    this.leasedKeys--;
  }

  private putLease(l: StoredLease): void {
    this.t.put('leases', u64Key(l.id), this.level >= 4 ? encodeLease(l) : pack({ ttlMs: l.ttlMs, expiresAt: l.expiresAt, keys: l.keys, row: l.row }));
  }

  /**
   * Deletes up to `budget` of the lease's keys (cause `lease`), and the lease itself once it
   * has none left; returns the number of keys deleted.
   */
  private dropLease(lease: StoredLease, budget: number): number {
    const prefix = u64Key(lease.id);
    const keys: Uint8Array[] = [];
    for (const k of this.t.keys('leaseKeys', { start: prefix, end: u64Key(lease.id + 1), limit: budget })) keys.push(copy(k as Uint8Array));
    for (const k of keys) {
      const key = k.subarray(8);
      this.t.remove('leaseKeys', k);
      this.t.remove('kv', key);
      this.changes.push({ type: 'delete', key, cause: 'lease' });
    }
    this.leasedKeys -= keys.length;
    // Then its provider records (providers.ts) and records (records.ts), in the same budget.
    let n = keys.length + dropLeaseProviders(this.providerContext(0), lease.id, budget - keys.length);
    n += dropLeaseRecords(this.providerContext(0), lease.id, budget - n);
    if (n === budget) {
      // Perhaps more left: the lease goes once a command finds fewer keys than it may delete.
      this.putLease({ ...lease, keys: lease.keys - n });
      return n;
    }
    this.t.remove('leases', prefix);
    this.t.remove('leaseExpiry', u64Key(lease.row, prefix));
    this.leaseCount--;
    return n;
  }

  /** What provider records and collections need from this apply (providers.ts, records.ts):
   *  the tables, the journal, and the leases. */
  private providerContext(index: number): ProviderApplyContext {
    return {
      t: this.t,
      index,
      changes: this.changes,
      leaseRoom: (id) => {
        const lease = liveLease(this.t, id, this.maxTime);
        return lease === undefined ? null : LEASE_KEYS_MAX - lease.keys;
      },
      onLease: (id, delta) => {
        const stored = this.t.get('leases', u64Key(id));
        if (stored !== undefined) {
          const lease = decodeLease(id, stored);
          this.putLease({ ...lease, keys: lease.keys + delta });
        }
      },
    };
  }

  /**
   * Reaps leases whose expiry log time has come, oldest `(expiresAt, id)` first, deleting at
   * most `leaseExpiryDeletesMax` keys (LEASE_EXPIRY_DELETES_MAX) in this command. A lease's
   * row in `sm.lease_expiry` is at its expiry or before it (renewals leave it, see
   * `lease_keepalive`): a row whose time has come for a lease renewed since is moved to the
   * lease's expiry, which costs one unit of the budget.
   *
   * From apply level 4, once a row is due, the rows up to LEASE_ROW_LOOKAHEAD_MS past log
   * time are dealt with too: each renewed lease's row moves to its expiry now (a row may
   * move any time before it). With 10,000 leases renewed every 3 s a row came due every few
   * commands, and each read of the rows cost more than the moves. Whether rows move at a
   * command depends on the state alone (a row is due), never on `nextLeaseExpiry`, a cache
   * that is 0 after a restart: a scan that finds no row due changes nothing, or a restarted
   * replica would move rows at other indexes than the others (found by the simulator).
   */
  private expireLeases(): void {
    if (this.nextLeaseExpiry > this.maxTime) return;
    const max = this.rules.leaseExpiryDeletesMax;
    const horizon = this.maxTime + (this.level >= 4 ? LEASE_ROW_LOOKAHEAD_MS : 0);
    let budget = max;
    // The rows up to the horizon, read in one pass (not the first row again after each
    // change: the staged view skips the rows removed so far one by one, which made reaping
    // 10,000 leases in one command quadratic: a stall of seconds, measured by bench watch),
    // and the row after them: the next expiry, unless a row moved here comes first. Rows
    // move to their lease's expiry, past log time, so this pass never meets them again.
    const rows: Uint8Array[] = [];
    let next = Number.MAX_SAFE_INTEGER;
    for (const k of this.t.keys('leaseExpiry', { limit: max + 1 })) {
      const at = readU64(k as Uint8Array);
      if (at > (rows.length === 0 ? this.maxTime : horizon)) {
        next = at; // none due, or the first past the horizon
        break;
      }
      if (rows.length === max) {
        next = this.maxTime; // more than `max` rows: the next command looks
        break;
      }
      rows.push(copy(k as Uint8Array));
    }
    for (const row of rows) {
      if (budget === 0) {
        this.nextLeaseExpiry = Math.min(next, readU64(row)); // the rest with the next command
        return;
      }
      const id = readU64(row, 8);
      const lease = decodeLease(id, this.t.get('leases', u64Key(id))!);
      if (lease.expiresAt > this.maxTime) {
        // Renewed (or, past log time, within the lookahead): its row goes to its expiry.
        if (lease.expiresAt !== readU64(row)) {
          this.t.remove('leaseExpiry', row);
          this.t.put('leaseExpiry', u64Key(lease.expiresAt, u64Key(id)), EMPTY);
          this.putLease({ ...lease, row: lease.expiresAt });
          budget--;
        }
        next = Math.min(next, lease.expiresAt);
        continue;
      }
      budget -= this.dropLease(lease, budget);
      if (budget === 0) {
        this.nextLeaseExpiry = Math.min(next, readU64(row)); // perhaps keys left: the next command goes on
        return;
      }
    }
    this.nextLeaseExpiry = next;
  }

  // --- membership ----------------------------------------------------------------------

  /** Keeps the member table in step with `applyChange` (same roles, same no-ops); the
   *  change's meta, when it decodes, gives the node's addresses. */
  private applyConfig(change: ConfigChange, index: number): ApplyResult {
    const before = readMembers(this.t);
    const config: Config = {
      voters: before.filter((m) => m.role === 'voter').map((m) => m.peerId),
      learners: before.filter((m) => m.role === 'learner').map((m) => m.peerId),
    };
    const after = applyChange(config, change);
    const addresses = decodeMeta(change.meta);
    for (const m of before) {
      if (!after.voters.includes(m.peerId) && !after.learners.includes(m.peerId)) this.t.remove('members', utf8.encode(m.peerId));
    }
    const write = (peerId: string, role: MemberRecord['role']): void => {
      const old = before.find((m) => m.peerId === peerId);
      const addr = peerId === change.node && addresses !== null ? addresses : { http: old?.http ?? '', p2p: old?.p2p ?? [] };
      if (old !== undefined && old.role === role && old.http === addr.http && sameStrings(old.p2p, addr.p2p)) return;
      this.t.put('members', utf8.encode(peerId), pack({ role, http: addr.http, p2p: addr.p2p }));
    };
    for (const v of after.voters) {
      write(v, 'voter');
      this.t.put('votersEver', utf8.encode(v), EMPTY);
    }
    for (const l of after.learners) write(l, 'learner');
    // Peers removed stay known as removed (the leader refuses to add them back, node.ts);
    // one added back all the same (a log written before this rule) is a member again.
    const id = utf8.encode(change.node);
    const wasMember = before.some((m) => m.peerId === change.node);
    const isNow = after.voters.includes(change.node) || after.learners.includes(change.node);
    if (change.op === 'remove' && wasMember && !isNow) this.t.put('removed', id, u64Key(index));
    else if (isNow) this.t.remove('removed', id);
    return { kind: 'config', index };
  }
}

/** Why a decoded command cannot apply (limits the encoder does not check), or null. */
function checkCommand(cmd: AppCommand): string | null {
  if (!Number.isFinite(cmd.time) || cmd.time < 0 || !Number.isSafeInteger(Math.floor(cmd.time))) return 'bad time';
  const keys: Uint8Array[] = [];
  const op = cmd.op;
  if (op.t === 'archive_settings' || op.t === 'cluster_settings' || op.t === 'cluster_level' || isLeaseOp(op) || isBlockCmd(op) || op.t === 'provider_put' || op.t === 'provider_delete' || isCollectionCmd(op)) return null;
  if (op.t === 'txn') {
    for (const c of op.compare) keys.push(c.key);
    for (const o of [...op.success, ...op.failure]) if (!isRecordTxnOp(o)) keys.push(o.key);
  } else keys.push(op.key);
  if (keys.some((k) => k.byteLength < 1 || k.byteLength > KEY_BYTES_MAX)) return `key must be 1 to ${KEY_BYTES_MAX} bytes`;
  const rid = cmd.requestId;
  if (rid !== undefined) {
    const clientBytes = utf8.encode(rid.client).byteLength;
    if (clientBytes < 1 || clientBytes > CLIENT_ID_BYTES_MAX) return `client id must be 1 to ${CLIENT_ID_BYTES_MAX} bytes`;
  }
  return null;
}

function decodeMeta(meta: Uint8Array | undefined): { http: string; p2p: readonly string[] } | null {
  if (meta === undefined) return null;
  try {
    const v = unpack(meta) as { http?: unknown; p2p?: unknown } | null;
    if (typeof v !== 'object' || v === null) return null;
    const http = typeof v.http === 'string' ? v.http : '';
    const p2p = Array.isArray(v.p2p) ? v.p2p.filter((a): a is string => typeof a === 'string') : [];
    return { http, p2p };
  } catch {
    return null;
  }
}

function readKv(t: StateTables, key: Uint8Array): KeyValue | undefined {
  const v = t.get('kv', key);
  return v === undefined ? undefined : decodeKv(copy(key), v);
}

/** The lease `key` is attached to, if the key exists and has one. */
function readLeaseOf(t: StateTables, key: Uint8Array): number | undefined {
  const v = t.get('kv', key);
  return v === undefined || (v[0]! & LEASED) === 0 ? undefined : readU64(v, REVISION_BYTES);
}

/**
 * A key's stored value: its revision (u64 big-endian), then the value's bytes; a key on a
 * lease sets the revision's top bit (revisions stay below 2^53) and puts the lease id (u64)
 * between them. Keys without leases are stored as before leases existed.
 */
function encodeKv(revision: number, value: Uint8Array, lease: number | undefined): Uint8Array {
  const head = lease === undefined ? REVISION_BYTES : 2 * REVISION_BYTES;
  const stored = new Uint8Array(head + value.byteLength);
  stored.set(u64Key(revision));
  if (lease !== undefined) {
    stored[0]! |= LEASED;
    stored.set(u64Key(lease), REVISION_BYTES);
  }
  stored.set(value, head);
  return stored;
}

function kvHeadBytes(stored: Uint8Array): number {
  return (stored[0]! & LEASED) === 0 ? REVISION_BYTES : 2 * REVISION_BYTES;
}

function decodeKv(key: Uint8Array, stored: Uint8Array): KeyValue {
  if ((stored[0]! & LEASED) === 0) return { key, revision: readU64(stored), value: copy(stored.subarray(REVISION_BYTES)) };
  // Revisions stay below 2^53: the top byte, less the flag, is always 0.
  const revision = readU64(Uint8Array.of(stored[0]! & ~LEASED, ...stored.subarray(1, REVISION_BYTES)));
  return { key, revision, value: copy(stored.subarray(2 * REVISION_BYTES)), lease: readU64(stored, REVISION_BYTES) };
}

/** A lease as `sm.leases` holds it: the record, and the time of its row in
 *  `sm.lease_expiry` (at or before its expiry: expireLeases). */
interface StoredLease extends LeaseRecord {
  readonly row: number;
}

/**
 * From apply level 4 a lease is stored as four u64s, big-endian: TTL, expiry, keys, row (32
 * bytes, first byte 0, as no msgpack map starts). Below it, and in stores raised to 4 for
 * the leases not written since, a msgpack map. A renewal reads and writes its lease, and the
 * map's pack and unpack were a third of the node CPU that 10,000 leases renewed every 3 s
 * cost (bench watch `lease_keepalive_cost`, measured in session 19).
 */
const LEASE_BYTES = 32;

function encodeLease(l: StoredLease): Uint8Array {
  return u64s(l.ttlMs, l.expiresAt, l.keys, l.row);
}

function decodeLease(id: number, stored: Uint8Array): StoredLease {
  if (stored.byteLength === LEASE_BYTES && stored[0] === 0) {
    return { id, ttlMs: readU64(stored, 0), expiresAt: readU64(stored, 8), keys: readU64(stored, 16), row: readU64(stored, 24) };
  }
  const r = unpack(stored) as { ttlMs: number; expiresAt: number; keys: number; row: number };
  return { id, ttlMs: r.ttlMs, expiresAt: r.expiresAt, keys: r.keys, row: r.row };
}

/** Lease `id` if it exists and log time `now` has not reached its expiry. */
function liveLease(t: StateTables, id: number, now: number): StoredLease | undefined {
  const stored = t.get('leases', u64Key(id));
  if (stored === undefined) return undefined;
  const lease = decodeLease(id, stored);
  return lease.expiresAt > now ? lease : undefined;
}

function isBlockCmd(op: AppCommand['op']): op is BlockCmd {
  return op.t === 'block_pend' || op.t === 'block_commit' || op.t === 'block_cancel';
}

function isLeaseOp(op: AppCommand['op']): op is LeaseOp {
  return op.t === 'lease_grant' || op.t === 'lease_keepalive' || op.t === 'lease_revoke' || op.t === 'lease_tick';
}

function readMembers(t: StateTables): MemberRecord[] {
  const out: MemberRecord[] = [];
  for (const { key, value } of t.range('members')) {
    out.push({ peerId: fromUtf8.decode(key as Uint8Array), ...(unpack(value) as MemberValue) });
  }
  return out.sort((a, b) => (a.peerId < b.peerId ? -1 : a.peerId > b.peerId ? 1 : 0));
}

/** A plain `Uint8Array` copy (never a view into a buffer lmdb-js may reuse). */
function copy(b: Uint8Array): Uint8Array {
  return Uint8Array.prototype.slice.call(plain(b));
}

export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  return Buffer.compare(a, b);
}

function compareWith(sign: number, op: Compare['op']): boolean {
  switch (op) {
    case '==':
      return sign === 0;
    case '!=':
      return sign !== 0;
    case '<':
      return sign < 0;
    case '>':
      return sign > 0;
  }
}

function startsWith(key: Uint8Array, prefix: Uint8Array): boolean {
  if (key.byteLength < prefix.byteLength) return false;
  for (let i = 0; i < prefix.byteLength; i++) if (key[i] !== prefix[i]) return false;
  return true;
}


function sameStrings(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((s, i) => s === b[i]);
}
