/**
 * `pangea prune-hot`: prunes a STOPPED node's hot log behind what the archive holds and
 * what was verified just now, as the running archiver does (archiver.ts, `prune`), but
 * offline and once. The caller holds the data dir's lock (data-dir.ts `lockDataDir`).
 *
 * Steps: open the node's stores; read the cluster's archive settings from its state; read
 * the best manifest of the node's cluster signed by one of its members; choose the latest
 * archived snapshot at least `hotRetention` indexes behind the applied index and above what
 * is pruned (`pruneTarget`); check the archive's segments cover every slot from the pruned
 * point through it; verify each of those segments and the snapshot in full, with the node's
 * own chain values; and only then write the log's compaction through the snapshot's point.
 * Anything that does not hold refuses the prune and leaves the data dir as it was. The
 * archive itself is only read: missing shards are reported, never rebuilt here (that is
 * `pangea archive verify --repair`).
 */
import { join } from 'node:path';
import { KeyRing, readKeyFile, type CesKey } from '../ces/index.js';
import type { LogPoint } from '../consensus/index.js';
import { ARCHIVE_KEY_FILE, readClusterId } from '../data-dir.js';
import type { LmdbLogStore } from '../log/lmdb.js';
import { openStores } from '../stores.js';
import { coveringSegments, pruneTarget } from './archiver.js';
import { readBestManifest } from './manifest.js';
import { openObjectStore } from './open-store.js';
import { verifyArchive, type ObjectReport } from './verify.js';

/**
 * Why nothing was pruned although there may be something to prune: `usage` (the key file or
 * data dir is not usable) or `refused` (the archive or log does not allow it; `bad` names
 * the objects that failed verification, if that was why).
 */
export class PruneRefused extends Error {
  override readonly name = 'PruneRefused';
  constructor(
    readonly code: 'usage' | 'refused',
    message: string,
    readonly bad: readonly ObjectReport[] = [],
  ) {
    super(message);
  }
}

export interface PruneHotOptions {
  readonly dataDir: string;
  /** Log indexes the hot log keeps behind the applied index whatever the archive holds. */
  readonly hotRetention: number;
  /** Default `<dataDir>/archive.key`. */
  readonly keyFile?: string;
  /** Do everything but the write. */
  readonly dryRun: boolean;
  /** Told once the objects to verify are counted (done = 0) and after each one. */
  readonly onProgress?: (done: number, total: number) => void;
}

export type PruneHotResult =
  | { readonly outcome: 'nothing'; readonly reason: string }
  | {
      /** `pruned`, or `dry-run` when it would have been. */
      readonly outcome: 'pruned' | 'dry-run';
      /** First slot and index removed from the hot log. */
      readonly from: { readonly slot: number; readonly index: number };
      /** The last ones: the archived snapshot's point. */
      readonly through: { readonly slot: number; readonly index: number };
      readonly snapshot: string;
      /** Objects verified before pruning (segments and the snapshot). */
      readonly verified: number;
      readonly hotBytesBefore: number;
      /** After the write (unchanged on a dry run). */
      readonly hotBytesAfter: number;
    };

/**
 * Prunes the hot log of the stopped node in `dataDir` (see above). Resolves with what was
 * pruned, or why there was nothing to; throws PruneRefused when it will not prune. The
 * caller must hold the data dir's lock and have checked that no node runs on it.
 */
export async function pruneHot(o: PruneHotOptions): Promise<PruneHotResult> {
  const cluster = await readClusterId(o.dataDir);
  const stores = openStores(o.dataDir);
  try {
    if (!stores.state.bootstrapped()) throw new PruneRefused('usage', `${o.dataDir} holds no node state`);
    const settings = stores.state.archiveSettings();
    if (settings === null) return { outcome: 'nothing', reason: 'this cluster has no archive settings yet, nothing to prune' };
    const key = await loadKey(o.keyFile ?? join(o.dataDir, ARCHIVE_KEY_FILE), o.keyFile === undefined);

    const store = await openObjectStore(settings.url);
    try {
      const members = new Set(stores.state.members().map((m) => m.peerId));
      const scan = await readBestManifest(store, cluster, (s) => members.has(s));
      if (scan.best === null) {
        if (scan.names.length === 0) return { outcome: 'nothing', reason: `the archive ${store.url} holds no manifest yet, nothing to prune` };
        throw new PruneRefused('refused', `the archive ${store.url} holds no valid manifest of cluster ${cluster} signed by a member: ${scan.rejected.map((r) => r.reason).join('; ')}`);
      }
      const manifest = scan.best.body;
      if (manifest.keyId !== key.idHex) {
        throw new PruneRefused('usage', `the archive is encrypted under key ${manifest.keyId}; the key file holds key ${key.idHex}`);
      }

      // `load` reads the hot log's slots too; only its markers are wanted here.
      const { compacted: compactedOrNull, commit } = stores.log.load();
      const compacted = compactedOrNull ?? { slot: 0, index: 0 };
      const applied = stores.state.applied().point;
      const target = pruneTarget(manifest, compacted.slot, applied.index, o.hotRetention);
      if (target === null) {
        return {
          outcome: 'nothing',
          reason: `no archived snapshot is after the pruned point (index ${compacted.index}) and at least ${o.hotRetention} indexes behind the applied index ${applied.index}, nothing to prune`,
        };
      }
      if (target.point.slot > commit || target.point.slot > applied.slot) {
        throw new PruneRefused('refused', `the snapshot at slot ${target.point.slot} is past this log's commit marker (slot ${commit}) or applied slot (${applied.slot})`);
      }
      const { segments, gapFrom } = coveringSegments(manifest, compacted.slot, target.point.slot);
      if (gapFrom !== null) {
        throw new PruneRefused('refused', `the archive's segments do not cover slots ${gapFrom}..${target.point.slot}: pruning them would lose log the archive does not hold`);
      }
      o.onProgress?.(0, segments.length + 1);

      const report = await verifyArchive(
        { store, keys: new KeyRing([key]), cluster, ces: manifest.ces, ownChain: (i) => stores.state.chainAt(i) },
        { ...manifest, segments, snapshots: [target] },
        {},
        (done, total) => o.onProgress?.(done, total),
      );
      if (!report.ok) {
        const bad = report.objects.filter((r) => !r.ok);
        throw new PruneRefused('refused', `${bad.length} archived object(s) failed verification, nothing pruned: ${bad.map((r) => r.prefix).join(', ')}`, bad);
      }

      const hotBytesBefore = stores.log.hotBytes();
      if (!o.dryRun) await compactThrough(stores.log, target.point);
      return {
        outcome: o.dryRun ? 'dry-run' : 'pruned',
        from: { slot: compacted.slot + 1, index: compacted.index + 1 },
        through: { slot: target.point.slot, index: target.point.index },
        snapshot: target.prefix,
        verified: report.objects.length,
        hotBytesBefore,
        hotBytesAfter: stores.log.hotBytes(),
      };
    } finally {
      await store.close();
    }
  } finally {
    await stores.close();
  }
}

/**
 * The compaction: one log batch that records the new pruned point and removes the slots at
 * or below it. Its operations are queued in one event-loop turn, so lmdb-js commits them in
 * ONE LMDB transaction: a crash leaves either the old log or the pruned one, and the data
 * dir usable either way. (Even a torn batch would be harmless: the pruned point is written
 * first, and the log ignores every slot at or below it.) Resolves once flushed to disk.
 */
async function compactThrough(log: LmdbLogStore, point: LogPoint): Promise<void> {
  await log.write([{ kind: 'compact', through: point }]);
}

async function loadKey(path: string, isDefault: boolean): Promise<CesKey> {
  try {
    return await readKeyFile(path);
  } catch (err) {
    throw new PruneRefused('usage', `cannot read the archive key ${path}: ${(err as Error).message}${isDefault ? ' (give --key-file)' : ''}`);
  }
}
