/**
 * Restoring a node's state from the archive: the latest listed snapshot (at or below an
 * index, for point-in-time restores) into an empty data dir, and the segments after it.
 */
import { KeyRing, type CesKey } from '../ces/index.js';
import { epochsAfter, type Entry, type LogPoint, type SlotValue } from '../consensus/index.js';
import type { LmdbLogStore } from '../log/lmdb.js';
import type { LmdbStateStore } from '../state/kv.js';
import { readBestManifest, type ManifestBody, type SnapshotRecord } from './manifest.js';
import { readEncoded } from './objects.js';
import { digestOf } from './effects-object.js';
import { decodeSegment } from './segment.js';
import type { SegmentBound } from '../state/segments.js';
import { nextChain } from '../state/command.js';
import type { ObjectStore } from './store.js';
import { every, PROGRESS_LOG_INTERVAL_MS } from '../progress.js';

export interface RestoreTarget {
  readonly store: ObjectStore;
  readonly key: CesKey;
  /** The cluster whose manifests count; null: the archive's own (restore into a new cluster). */
  readonly cluster: string | null;
  /** Signers to trust; default any valid signature (the archive key authenticates content). */
  readonly trusted?: (signer: string) => boolean;
  /** Trusted chain values by index (`--checkpoint`): a restore that passes one must match it. */
  readonly checkpoints?: ReadonlyMap<number, Uint8Array>;
}

function checkCheckpoint(t: RestoreTarget, index: number, chain: Uint8Array): void {
  const pinned = t.checkpoints?.get(index);
  if (pinned !== undefined && Buffer.compare(pinned, chain) !== 0) {
    throw new Error(`the archive's chain value at index ${index} differs from --checkpoint ${index}:${Buffer.from(pinned).toString('hex')}`);
  }
}

/** The best manifest, or an error saying why there is none. */
export async function bestManifest(t: RestoreTarget): Promise<ManifestBody | null> {
  const scan = await readBestManifest(t.store, t.cluster, t.trusted);
  return scan.best?.body ?? null;
}

/** The latest snapshot at or below `maxIndex`. */
export function snapshotAtOrBelow(manifest: ManifestBody, maxIndex = Number.MAX_SAFE_INTEGER): SnapshotRecord | null {
  let best: SnapshotRecord | null = null;
  for (const s of manifest.snapshots) if (s.point.index <= maxIndex && (best === null || s.point.index > best.point.index)) best = s;
  return best;
}

/**
 * Loads `snap` into empty stores: the state from the snapshot, and a log that begins after
 * it. Throws (leaving the state store empty) if the snapshot does not decode or check.
 */
export async function restoreSnapshotInto(
  t: RestoreTarget,
  snap: SnapshotRecord,
  stores: { state: LmdbStateStore; log: LmdbLogStore },
): Promise<LogPoint> {
  const header = await stores.state.restore(readEncoded(t.store, snap, new KeyRing([t.key])));
  const point = header.applied.point;
  if (point.slot !== snap.point.slot || Buffer.from(header.applied.chain).toString('hex') !== snap.chain) {
    throw new Error(`snapshot ${snap.prefix} holds another point or chain value than the manifest lists`);
  }
  checkCheckpoint(t, point.index, header.applied.chain);
  await stores.log.startAfter(point);
  return point;
}

/**
 * Applies the archived segments after the state's applied point, up to `maxIndex`, straight
 * to the state machine: for a node that is not running yet (a new cluster restored from an
 * archive). Each segment's hash chain is checked before anything of it is applied; a
 * segment is cut at `maxIndex`, so the state is exactly that index's. Returns the point.
 */
export async function replaySegments(
  t: RestoreTarget,
  manifest: ManifestBody,
  state: LmdbStateStore,
  alpha: number,
  maxIndex = Number.MAX_SAFE_INTEGER,
  onProgress?: (index: number) => void,
): Promise<LogPoint> {
  const keys = new KeyRing([t.key]);
  // Decode the whole segment first: its chain is checked only at its end.
  const decode = async (seg: ManifestBody['segments'][number]): Promise<{ bound: SegmentBound; slots: SlotValue[] }> => {
    const bound = { first: seg.first, last: seg.last, chainBefore: Buffer.from(seg.chainBefore, 'hex'), chainAfter: Buffer.from(seg.chainAfter, 'hex'), bytes: 0 };
    const slots: SlotValue[] = [];
    const it = decodeSegment(readEncoded(t.store, seg, keys), { cluster: manifest.cluster, bound });
    for (let r = await it.next(); !r.done; r = await it.next()) slots.push(...r.value);
    return { bound, slots };
  };
  const wanted = manifest.segments.filter((seg) => seg.last.slot > state.applied().point.slot);
  // The next segment is read and decoded while this one applies (its reads and lmdb-js's
  // commits overlap the apply): restore went from 37k to 40-43k entries/s (`npm run bench -- archive --only restore`).
  let next: Promise<{ bound: SegmentBound; slots: SlotValue[] }> | null = wanted.length > 0 ? decode(wanted[0]!) : null;
  next?.catch(() => {}); // awaited below; a failure of a segment never reached is moot
  for (let i = 0; i < wanted.length; i++) {
    const seg = wanted[i]!;
    const applied = state.applied().point;
    if (applied.index >= maxIndex) break;
    if (seg.first.slot !== applied.slot + 1) throw new Error(`the archive has no segment starting at slot ${applied.slot + 1}`);
    const { bound, slots } = await next!;
    next = i + 1 < wanted.length && seg.last.index < maxIndex ? decode(wanted[i + 1]!) : null;
    next?.catch(() => {});
    let epochs = state.applied().point.epochs;
    let index = applied.index + 1;
    let chain: Uint8Array = bound.chainBefore;
    const entries: Entry[] = [];
    for (const s of slots) {
      if (index > maxIndex) break;
      const batch = index + s.batch.length - 1 > maxIndex ? s.batch.slice(0, maxIndex - index + 1) : s.batch;
      if (t.checkpoints !== undefined && t.checkpoints.size > 0) {
        batch.forEach((cmd, i) => {
          chain = nextChain(chain, s.slot, cmd);
          checkCheckpoint(t, index + i, chain);
        });
      }
      epochs = epochsAfter(epochs, s.slot, batch.flatMap((c) => (c.kind === 'config' ? [c.change] : [])), alpha);
      entries.push({ slot: s.slot, index, batch, epochs });
      index += batch.length;
    }
    state.apply(entries);
    // What apply changed must be what the archiving node's apply changed: a build that
    // applies the log differently would otherwise restore another state without a word.
    if (seg.effects !== undefined && index - 1 === seg.last.index) {
      const rebuilt = digestOf(state.effectRows(seg.first.index - 1, seg.last.index));
      if (rebuilt !== seg.effects.digest) {
        throw new Error(`replaying indexes ${seg.first.index}-${seg.last.index} changed other keys than the archive's effects record: this build applies the log differently from the one that archived it (\`pangea version\`); restore with that build`);
      }
    }
    onProgress?.(state.applied().point.index);
  }
  // Applies are committed by lmdb-js's writer after `apply` returns (src/state/staged.ts).
  await state.committed();
  return state.applied().point;
}

/**
 * `serve --restore-from`: fills empty stores with the state of another cluster's archive at
 * `maxIndex` (default: the last archived index): its latest snapshot at or below, then its
 * segments up to exactly that index. Returns the restored point.
 */
export async function restoreFromArchive(
  t: RestoreTarget,
  stores: { state: LmdbStateStore; log: LmdbLogStore },
  alpha: number,
  maxIndex: number | undefined,
  logger: { info(msg: string, fields?: object): void },
): Promise<LogPoint> {
  const manifest = await bestManifest(t);
  if (manifest === null) throw new Error(`${t.store.url} holds no valid manifest`);
  const last = manifest.segments.at(-1)?.last.index ?? manifest.snapshots.at(-1)?.point.index ?? 0;
  const target = maxIndex ?? last;
  if (target > last) throw new Error(`--restore-index ${target} is past the end of the archive (index ${last})`);
  const snap = snapshotAtOrBelow(manifest, target);
  if (snap === null) throw new Error(`${t.store.url} has no snapshot at or below index ${target}`);
  logger.info('restoring a snapshot from the archive', { url: t.store.url, cluster: manifest.cluster, index: snap.point.index, target });
  await restoreSnapshotInto({ ...t, cluster: manifest.cluster }, snap, stores);
  const started = Date.now();
  const due = every(PROGRESS_LOG_INTERVAL_MS);
  const point = await replaySegments({ ...t, cluster: manifest.cluster }, manifest, stores.state, alpha, target, (index) => {
    // Restores of long archives take a while.
    if (!due() && index < target) return;
    logger.info('replaying archived segments', { index, target, percent: Math.floor((100 * index) / Math.max(1, target)) });
  });
  if (point.index !== target) throw new Error(`restored through index ${point.index}, not ${target}: the archive has a gap`);
  logger.info('restored from the archive', { index: point.index, ms: Date.now() - started });
  return point;
}
