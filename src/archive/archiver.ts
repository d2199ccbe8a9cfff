/**
 * The archiver: moves finished log segments and state snapshots into the object store, and
 * prunes the hot log behind verified archive coverage. One per node; only the leader
 * archives and publishes manifests, every node prunes.
 *
 * Archiving, each `intervalMs` on the leader:
 *  1. read the best manifest once per ballot (manifest.ts) and continue after its last segment;
 *  2. take the next finished segment the state machine recorded (state/segments.ts) once it
 *     is `delayEntries` behind the commit index and `delayMs` old;
 *  3. encode it from the hot log (segment.ts, CES), upload create-if-absent, read back,
 *     fully verify (verify.ts), and likewise the snapshot staged at its boundary, if any;
 *  4. sign and write the next manifest version, which lists them.
 *
 * Snapshots: when the leader applies a segment boundary at which one is due, the state is
 * read from one LMDB read transaction into CES-encoded staging files at once (apply goes
 * on meanwhile), and uploaded with its segment.
 *
 * Pruning, each `pruneIntervalMs` on every node: the target is the latest listed snapshot at
 * least `hotRetention` indexes behind the commit index and above what is already pruned;
 * the segments between the current pruned point and it, and the snapshot, are verified in
 * full (each object once per process), with this node's own chain values, and only then is
 * the hot log compacted through the consensus core (`compact`), never around it.
 */
import { mkdir, rm } from 'node:fs/promises';
import type { PrivateKey } from '@libp2p/interface';
import type { Ballot, LogPoint, SlotValue } from '../consensus/index.js';
import { KeyRing, resolveParams, type CesKey, type CesParams } from '../ces/index.js';
import type { Logger } from '../logger.js';
import type { ArchiveSettings } from '../state/command.js';
import type { SegmentBound } from '../state/segments.js';
import type { StateSnapshot } from '../state/snapshot.js';
import { digestOf, encodeEffects, type EffectsRow } from './effects-object.js';
import { encodeSegment } from './segment.js';
import { discardStaged, stageEncoded, uploadStaged, type StagedObject } from './objects.js';
import { MANIFEST_VERSION, manifestKey, readBestManifest, signManifest, type EffectsRecord, type ManifestBody, type SegmentRecord, type SnapshotRecord } from './manifest.js';
import { verifyEffects, verifySegment, verifySnapshot, type ObjectReport, type VerifyContext } from './verify.js';
import type { ObjectStore } from './store.js';

/** What the archiver needs of its node. */
export interface ArchiveHost {
  readonly cluster: string;
  readonly peerId: string;
  readonly privateKey: PrivateKey;
  /** The ballot this node leads under, or null when it does not lead. */
  leaderBallot(): Ballot | null;
  commitIndex(): number;
  /** The state machine's applied index: nothing above it is ever pruned. */
  appliedIndex(): number;
  /** The signers whose manifests this node trusts: every peer that was ever a voter of the
   *  cluster (a departed leader's manifests stay valid) and the members now. */
  members(): readonly string[];
  voters(): readonly string[];
  /** The cluster's settings while this node archives and prunes; null while it does not
   *  (none recorded yet, or `archiveOff` says why). */
  settings(): ArchiveSettings | null;
  /** Why the cluster does not archive now (node-archive.ts `archiveOffReason`), or null. */
  archiveOff?(): string | null;
  /** Finished segments after `afterSlot`. */
  segments(afterSlot: number, limit: number): SegmentBound[];
  /** Chosen slots `from..to` from the hot log (fewer if some were pruned). */
  readSlots(from: number, to: number): SlotValue[];
  /** The hot log is pruned through this point. */
  compactedPoint(): LogPoint;
  /** Prunes the hot log through `point` (through the consensus core). */
  compact(point: LogPoint): void;
  chainAt(index: number): Uint8Array | undefined;
  /** The effects journal's rows for indexes in (`after`, `through`], or null when the
   *  journal does not reach back to `after` (its floor is above: pruned, or restored). */
  journal?(after: number, through: number): EffectsRow[] | null;
  snapshot(): StateSnapshot;
  /** The hot log is at its quota: prune as far as the archive allows, whatever the retention. */
  underPressure?(): boolean;
}

export interface ArchiverOptions {
  readonly delayEntries: number;
  readonly delayMs: number;
  readonly intervalMs: number;
  readonly pruneIntervalMs: number;
  readonly hotRetention: number;
  readonly stagingDir: string;
  /** Segments archived per run at most, so one run never holds the loop for long. */
  readonly segmentsPerRun?: number;
}

/** Counters and times for /metrics and `pangea soak`. */
export interface ArchiveStats {
  archivedFirstIndex: number;
  archivedLastIndex: number;
  archiveRuns: number;
  archiveErrors: number;
  archiveLastError: string;
  archiveLastAttempt: number;
  archiveLastSuccess: number;
  segmentsArchived: number;
  snapshotsArchived: number;
  archivedBytes: number;
  pruneRuns: number;
  pruneErrors: number;
  pruneLastError: string;
  pruneLastAttempt: number;
  pruneLastSuccess: number;
  prunedThroughIndex: number;
}

const SEGMENTS_PER_RUN_DEFAULT = 16;
/** Each staged snapshot is a copy of the whole state on local disk. */
const STAGED_SNAPSHOTS_MAX = 2;

interface StagedSnapshot {
  readonly bound: SegmentBound;
  readonly object: Promise<StagedObject | null>;
  readonly header: StateSnapshot['header'];
}

export class Archiver {
  readonly stats: ArchiveStats = {
    archivedFirstIndex: 0,
    archivedLastIndex: 0,
    archiveRuns: 0,
    archiveErrors: 0,
    archiveLastError: '',
    archiveLastAttempt: 0,
    archiveLastSuccess: 0,
    segmentsArchived: 0,
    snapshotsArchived: 0,
    archivedBytes: 0,
    pruneRuns: 0,
    pruneErrors: 0,
    pruneLastError: '',
    pruneLastAttempt: 0,
    pruneLastSuccess: 0,
    prunedThroughIndex: 0,
  };
  private readonly keys: KeyRing;
  private manifest: ManifestBody | null = null;
  /** The ballot `manifest` was read (or written) under. */
  private manifestBallot: Ballot | null = null;
  /** When this node saw each finished segment (by last slot): the time half of the delay. */
  private readonly seen = new Map<number, number>();
  /** Snapshots taken at boundaries, staged until their segments are archived, oldest first:
   *  at most STAGED_SNAPSHOTS_MAX (see onSegment). */
  private staged: StagedSnapshot[] = [];
  /** The next manifest version is at least this: raised past a name found taken. */
  private versionFloor = 0;
  /** Objects this process verified in full (prefixes). */
  private readonly verified = new Set<string>();
  private timers: NodeJS.Timeout[] = [];
  private running: Promise<void> = Promise.resolve();
  private stopped = false;

  constructor(
    private readonly host: ArchiveHost,
    private readonly store: ObjectStore,
    private readonly key: CesKey,
    private readonly opts: ArchiverOptions,
    private readonly logger: Logger,
    private readonly now: () => number = Date.now,
  ) {
    this.keys = new KeyRing([key]);
  }

  start(): void {
    const every = (ms: number, fn: () => Promise<void>): void => {
      if (ms <= 0) return;
      const t = setInterval(() => {
        // Runs never overlap: a slow upload delays the next run instead of racing it.
        this.running = this.running.then(fn).catch(() => undefined);
      }, ms);
      t.unref?.();
      this.timers.push(t);
    };
    every(this.opts.intervalMs, () => this.archiveOnce());
    every(this.opts.pruneIntervalMs, () => this.pruneOnce());
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    await this.running;
    const staged = this.staged;
    this.staged = [];
    for (const s of staged) await discard(s);
  }

  /** The latest manifest this node read or wrote (null before the first read). */
  get currentManifest(): ManifestBody | null {
    return this.manifest;
  }

  private ces(): CesParams {
    return resolveParams(this.host.settings()?.ces ?? {});
  }

  /**
   * Called by the node right after the state at a segment boundary is applied (and before
   * the next entry is). On the leader, when a snapshot is due, reads the state now and
   * stages it.
   */
  onSegment(bound: SegmentBound): void {
    this.seen.set(bound.last.slot, this.now());
    const settings = this.host.settings();
    if (this.stopped || settings === null || this.opts.intervalMs <= 0 || this.host.leaderBallot() === null) return;
    if (!this.snapshotDue(bound, settings)) return;
    const snapshot = this.host.snapshot();
    const object = stageEncoded(snapshotPrefix(bound.last), snapshotLabel(this.host.cluster, bound.last), snapshot, this.key, this.ces(), this.opts.stagingDir).catch(
      (err: unknown) => {
        this.logger.warn('staging a snapshot failed', { slot: bound.last.slot, err });
        return null;
      },
    );
    // Keep the oldest staged snapshot (it is archived next, so snapshots keep coming under
    // load) and the newest (so that after an outage, pruning can reach the end of the log
    // even if no boundary is applied any more: writes may be refused by the quota).
    if (this.staged.length >= STAGED_SNAPSHOTS_MAX) void discard(this.staged.pop()!);
    this.staged.push({ bound, object, header: snapshot.header });
  }

  /** Due when the latest archived or staged snapshot is `snapshotSegments` segments back. */
  private snapshotDue(bound: SegmentBound, settings: ArchiveSettings): boolean {
    const lastSnap = Math.max(this.manifest?.snapshots.at(-1)?.point.slot ?? 0, this.staged.at(-1)?.bound.last.slot ?? 0);
    if (lastSnap === 0) return true;
    const since = this.host.segments(lastSnap, settings.snapshotSegments).filter((b) => b.last.slot <= bound.last.slot).length;
    return since >= settings.snapshotSegments;
  }

  /** Drops staged snapshots whose segments are archived already (by another leader). */
  private async dropStaleSnapshots(): Promise<void> {
    const through = archivedThrough(this.manifest);
    const stale = this.staged.filter((s) => s.bound.last.slot <= through);
    if (stale.length === 0) return;
    this.staged = this.staged.filter((s) => s.bound.last.slot > through);
    for (const s of stale) await discard(s);
  }

  // ------------------------------------------------------------------------------------
  // Archiving.

  /** One archiving run; never throws (errors are counted and logged). */
  async archiveOnce(): Promise<void> {
    const ballot = this.host.leaderBallot();
    const settings = this.host.settings();
    if (this.stopped || ballot === null || settings === null) return;
    this.stats.archiveRuns++;
    this.stats.archiveLastAttempt = this.now();
    try {
      await this.archive(ballot, settings);
      this.stats.archiveLastSuccess = this.now();
    } catch (err) {
      this.stats.archiveErrors++;
      this.stats.archiveLastError = (err as Error).message;
      this.logger.warn('archiving failed; will retry', { err });
    }
  }

  private async archive(ballot: Ballot, settings: ArchiveSettings): Promise<void> {
    await mkdir(this.opts.stagingDir, { recursive: true });
    if (!sameBallot(this.manifestBallot, ballot)) {
      await this.loadManifest();
      this.manifestBallot = ballot;
    }
    const perRun = this.opts.segmentsPerRun ?? SEGMENTS_PER_RUN_DEFAULT;
    for (let done = 0; done < perRun && !this.stopped; done++) {
      if (!sameBallot(this.host.leaderBallot(), ballot)) return; // deposed: the next leader goes on
      await this.dropStaleSnapshots();
      const lastSlot = archivedThrough(this.manifest);
      const bound = this.host.segments(lastSlot, 1)[0];
      if (bound === undefined) return;
      if (bound.first.slot !== lastSlot + 1) {
        throw new Error(`the archive ends at slot ${lastSlot} but this node's next segment starts at slot ${bound.first.slot}`);
      }
      const seenAt = this.seen.get(bound.last.slot) ?? this.now();
      this.seen.set(bound.last.slot, seenAt);
      // Under quota pressure the delay is waived: committed entries are final, and the hot
      // log must shrink.
      const waived = this.host.underPressure?.() === true;
      if (!waived && (this.host.commitIndex() - bound.last.index < this.opts.delayEntries || this.now() - seenAt < this.opts.delayMs)) return;
      await this.archiveSegment(ballot, settings, bound);
      this.seen.delete(bound.last.slot);
    }
  }

  private async loadManifest(): Promise<void> {
    const members = new Set(this.host.members());
    const scan = await readBestManifest(this.store, this.host.cluster, (s) => members.has(s) || s === this.host.peerId);
    for (const r of scan.rejected) this.logger.warn('ignoring a manifest', r);
    const best = scan.best?.body ?? null;
    if (best !== null && best.keyId !== this.key.idHex) {
      throw new Error(`the archive at ${this.store.url} is encrypted under key ${best.keyId}, this node has ${this.key.idHex}`);
    }
    this.manifest = best;
    this.updateRange();
  }

  private async archiveSegment(ballot: Ballot, settings: ArchiveSettings, bound: SegmentBound): Promise<void> {
    const ces = this.ces();
    const slots = this.host.readSlots(bound.first.slot, bound.last.slot);
    const prefix = segmentPrefix(bound);
    const label = segmentLabel(this.host.cluster, bound);
    const staged = await stageEncoded(prefix, label, encodeSegment(this.host.cluster, bound, slots), this.key, ces, this.opts.stagingDir, bound.bytes);
    let segment: SegmentRecord;
    try {
      const object = await uploadStaged(this.store, staged);
      segment = {
        ...object,
        first: bound.first,
        last: bound.last,
        chainBefore: Buffer.from(bound.chainBefore).toString('hex'),
        chainAfter: Buffer.from(bound.chainAfter).toString('hex'),
      };
    } finally {
      await discardStaged(staged);
    }
    await this.mustVerify(verifySegment(this.verifyContext(ces), segment), 'after upload');
    const effects = await this.archiveEffects(bound, ces);
    if (effects !== null) segment = { ...segment, effects };

    // The snapshot staged at this boundary goes with its segment. It stays staged until the
    // manifest lists it, so a failed upload is retried with the segment next run.
    let snapshot: SnapshotRecord | null = null;
    const pending = this.staged.find((s) => s.bound.last.slot === bound.last.slot) ?? null;
    const stagedSnap = pending === null ? null : await pending.object;
    if (pending !== null && stagedSnap !== null) {
      const object = await uploadStaged(this.store, stagedSnap);
      const { point, chain } = pending.header.applied;
      snapshot = { ...object, point, chain: Buffer.from(chain).toString('hex') };
      await this.mustVerify(verifySnapshot(this.verifyContext(ces), snapshot), 'after upload');
    }
    await this.publish(ballot, settings, segment, snapshot);
    if (pending !== null && this.staged.includes(pending)) {
      this.staged = this.staged.filter((s) => s !== pending);
      if (stagedSnap !== null) await discardStaged(stagedSnap);
    }
    this.stats.segmentsArchived++;
    this.stats.archivedBytes += segment.shards.reduce((n, s) => n + s.size, 0);
    if (snapshot) this.stats.snapshotsArchived++;
    this.logger.info('archived a segment', { first: bound.first.index, last: bound.last.index, snapshot: snapshot !== null });
  }

  /**
   * The segment's effects (effects-object.ts), from this node's journal, uploaded and
   * verified; null when the journal does not reach back to the segment's start (the
   * archive then cannot serve watches there: `history_unavailable`).
   */
  private async archiveEffects(bound: SegmentBound, ces: CesParams): Promise<EffectsRecord | null> {
    const rows = this.host.journal?.(bound.first.index - 1, bound.last.index) ?? null;
    if (rows === null) {
      this.logger.warn('this leader\'s effects journal does not reach back to the segment: archived without its effects (watch cannot resume there)', { first: bound.first.index });
      return null;
    }
    const prefix = `${segmentPrefix(bound)}/effects`;
    const bytes = rows.reduce((n, r) => n + r.bytes.byteLength + 16, 0);
    const staged = await stageEncoded(prefix, `${this.host.cluster}/effects/${bound.first.slot}-${bound.last.slot}`, encodeEffects(this.host.cluster, bound.first.index, bound.last.index, rows), this.key, ces, this.opts.stagingDir, bytes);
    let record: EffectsRecord;
    try {
      record = { ...(await uploadStaged(this.store, staged)), digest: digestOf(rows) };
    } finally {
      await discardStaged(staged);
    }
    await this.mustVerify(verifyEffects(this.verifyContext(ces), { first: bound.first, last: bound.last, effects: record }), 'after upload');
    return record;
  }

  private async mustVerify(report: Promise<ObjectReport>, when: string): Promise<void> {
    const r = await report;
    if (!r.ok) throw new Error(`${r.prefix} failed verification ${when}: ${r.problems.join('; ')}`);
    this.verified.add(r.prefix);
  }

  private async publish(ballot: Ballot, settings: ArchiveSettings, segment: SegmentRecord, snapshot: SnapshotRecord | null): Promise<void> {
    const prev = this.manifest;
    const body: ManifestBody = {
      v: MANIFEST_VERSION,
      cluster: this.host.cluster,
      version: Math.max((prev?.version ?? 0) + 1, this.versionFloor),
      ballot,
      created: this.now(),
      keyId: this.key.idHex,
      ces: resolveParams(settings.ces),
      segments: [...(prev?.segments ?? []), segment],
      snapshots: [...(prev?.snapshots ?? []), ...(snapshot ? [snapshot] : [])],
      voters: [...this.host.voters()],
    };
    const key = manifestKey(ballot, body.version);
    if ((await this.store.putIfAbsent(key, signManifest(body, this.host.privateKey))) === 'exists') {
      // Only this leader writes under its ballot: the name holds an earlier attempt of ours
      // (a lost answer) or a damaged object. Read the archive again, and never reuse the name.
      this.manifestBallot = null;
      this.versionFloor = body.version + 1;
      throw new Error(`manifest ${key} already exists; rereading the archive and moving to the next version`);
    }
    this.manifest = body;
    this.updateRange();
  }

  private updateRange(): void {
    const segs = this.manifest?.segments ?? [];
    this.stats.archivedFirstIndex = segs[0]?.first.index ?? 0;
    this.stats.archivedLastIndex = segs.at(-1)?.last.index ?? 0;
  }

  private verifyContext(ces: CesParams): VerifyContext {
    return {
      store: this.store,
      keys: this.keys,
      key: this.key,
      cluster: this.host.cluster,
      ces,
      ownChain: (i) => this.host.chainAt(i),
      ownEffects: (after, through) => this.host.journal?.(after, through) ?? null,
      repair: true,
    };
  }

  // ------------------------------------------------------------------------------------
  // Pruning.

  /** One prune run; never throws (errors are counted and logged). */
  async pruneOnce(): Promise<void> {
    if (this.stopped || this.host.settings() === null) return;
    this.stats.pruneRuns++;
    this.stats.pruneLastAttempt = this.now();
    try {
      await this.prune();
      this.stats.pruneLastSuccess = this.now();
    } catch (err) {
      this.stats.pruneErrors++;
      this.stats.pruneLastError = (err as Error).message;
      this.logger.warn('pruning failed; will retry', { err });
    }
  }

  private async prune(): Promise<void> {
    // Followers (and a leader between runs) read the latest manifest each time.
    if (this.host.leaderBallot() === null || this.manifest === null) await this.loadManifest();
    const manifest = this.manifest;
    if (manifest === null) return;
    const compacted = this.host.compactedPoint();
    const retention = this.host.underPressure?.() === true ? 0 : this.opts.hotRetention;
    const target = pruneTarget(manifest, compacted.slot, this.host.appliedIndex(), retention);
    if (target === null) return;
    const ctx = this.verifyContext(manifest.ces);
    // The segments must cover every slot from the pruned point through the target.
    const { segments, gapFrom } = coveringSegments(manifest, compacted.slot, target.point.slot);
    if (gapFrom !== null) throw new Error(`the archive does not cover slots ${gapFrom} to ${target.point.slot}; not pruning`);
    for (const s of segments) {
      if (!this.verified.has(s.prefix)) await this.mustVerify(verifySegment(ctx, s), 'before pruning');
      // Its effects too, against this node's own journal: the hot journal goes with the log.
      if (s.effects !== undefined && !this.verified.has(s.effects.prefix)) await this.mustVerify(verifyEffects(ctx, s as Required<Pick<SegmentRecord, 'first' | 'last' | 'effects'>>), 'before pruning');
    }
    if (!this.verified.has(target.prefix)) await this.mustVerify(verifySnapshot(ctx, target), 'before pruning');
    if (this.stopped) return;
    this.host.compact(target.point);
    this.stats.prunedThroughIndex = target.point.index;
    this.logger.info('pruned the hot log behind the verified archive', { throughIndex: target.point.index, slot: target.point.slot });
  }
}

/**
 * The snapshot to prune the hot log through: the latest one listed that is above what is
 * pruned and at least `retention` indexes behind the applied index; null when none is.
 */
export function pruneTarget(manifest: ManifestBody, compactedSlot: number, appliedIndex: number, retention: number): SnapshotRecord | null {
  let best: SnapshotRecord | null = null;
  for (const s of manifest.snapshots) {
    if (s.point.slot > compactedSlot && s.point.index <= appliedIndex - retention) best = s;
  }
  return best;
}

/** The slot the archive covers through: its last segment, or a restored cluster's base
 *  snapshot (a cluster restored from another's archive starts its own there). */
export function archivedThrough(m: ManifestBody | null): number {
  return m?.segments.at(-1)?.last.slot ?? m?.snapshots[0]?.point.slot ?? 0;
}

/**
 * The manifest's segments holding slots after `afterSlot` through `throughSlot`, and the
 * first of those slots they leave uncovered (null when they cover every one, no gap).
 */
export function coveringSegments(manifest: ManifestBody, afterSlot: number, throughSlot: number): { segments: SegmentRecord[]; gapFrom: number | null } {
  const segments = manifest.segments.filter((s) => s.last.slot > afterSlot && s.first.slot <= throughSlot);
  let next = afterSlot + 1;
  for (const s of segments) {
    if (s.first.slot > next) break;
    next = Math.max(next, s.last.slot + 1);
  }
  return { segments, gapFrom: next <= throughSlot ? next : null };
}

function sameBallot(a: Ballot | null, b: Ballot | null): boolean {
  return a !== null && b !== null && a.round === b.round && a.leader === b.leader;
}

const pad = (n: number): string => String(n).padStart(12, '0');

export function segmentPrefix(b: SegmentBound): string {
  return `segments/${pad(b.first.index)}-${pad(b.last.index)}`;
}

export function snapshotPrefix(at: { slot: number; index: number }): string {
  return `snapshots/${pad(at.index)}-s${pad(at.slot)}`;
}

/** CES labels bind each object to its cluster and place. */
export function segmentLabel(cluster: string, b: SegmentBound): string {
  return `${cluster}/segment/${b.first.slot}-${b.last.slot}`;
}

export function snapshotLabel(cluster: string, at: { slot: number }): string {
  return `${cluster}/snapshot/${at.slot}`;
}

/** Removes staging leftovers of an earlier process. */
export async function clearStaging(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}

/**
 * Starts a new archive with a snapshot of the state as it is now: for a cluster restored
 * from another's archive (`serve --restore-from`), whose log begins at the restored point.
 * Signed under ballot (0, this node), below any ballot a leader will hold.
 */
export async function publishBaseSnapshot(
  store: ObjectStore,
  key: CesKey,
  cluster: string,
  privateKey: PrivateKey,
  signer: string,
  ces: CesParams,
  snapshot: StateSnapshot,
  stagingDir: string,
): Promise<ManifestBody> {
  const { point, chain } = snapshot.header.applied;
  await mkdir(stagingDir, { recursive: true });
  const staged = await stageEncoded(snapshotPrefix(point), snapshotLabel(cluster, point), snapshot, key, ces, stagingDir);
  let record: SnapshotRecord;
  try {
    record = { ...(await uploadStaged(store, staged)), point, chain: Buffer.from(chain).toString('hex') };
  } finally {
    await discardStaged(staged);
  }
  const report = await verifySnapshot({ store, keys: new KeyRing([key]), cluster, ces }, record);
  if (!report.ok) throw new Error(`the base snapshot failed verification: ${report.problems.join('; ')}`);
  const ballot = { round: 0, leader: signer };
  const body: ManifestBody = {
    v: MANIFEST_VERSION, cluster, version: 1, ballot, created: Date.now(), keyId: key.idHex, ces, segments: [], snapshots: [record], voters: [signer],
  };
  await store.putIfAbsent(manifestKey(ballot, 1), signManifest(body, privateKey));
  return body;
}

async function discard(s: StagedSnapshot): Promise<void> {
  const object = await s.object.catch(() => null);
  if (object !== null) await discardStaged(object);
}
