/**
 * Full verification of an archive for operators (`pangea archive verify`): the best manifest
 * is read, optionally narrowed to an index range, and every object it lists there is
 * verified by verify.ts (shard checksums, a CES decode under the key, segment chains and
 * snapshot points, this node's own chain values when known); with `repair`, damaged shards
 * are moved aside and they and missing ones (up to `m` an object) are rebuilt. The report names every object that failed.
 */
import { KeyRing, type CesKey } from '../ces/index.js';
import { readBestManifest, type ManifestBody } from './manifest.js';
import { verifyArchive, type ObjectReport } from './verify.js';
import type { ObjectStore } from './store.js';

/** Why an archive could not be verified at all: no manifest to go by, or the wrong key. */
export class AuditError extends Error {
  override readonly name = 'AuditError';
  constructor(
    readonly code: 'no_manifest' | 'wrong_key',
    message: string,
  ) {
    super(message);
  }
}

export interface AuditOptions {
  readonly store: ObjectStore;
  readonly key: CesKey;
  /** Only this cluster's manifests count; null: the best valid one, whoever's. */
  readonly cluster: string | null;
  /** Signers whose manifests count (default: any valid signature). */
  readonly trusted?: (signer: string) => boolean;
  /** Index range to verify (inclusive; default everything): segments holding any index in
   *  it, snapshots at an index in it. */
  readonly fromIndex?: number;
  readonly toIndex?: number;
  readonly repair: boolean;
  /** The chain value after `index` in a node's own log, when checking against one. */
  readonly ownChain?: (index: number) => Uint8Array | undefined;
  /** Told once the objects are counted (done = 0) and after each object. */
  readonly onProgress?: (done: number, total: number) => void;
}

export interface AuditReport {
  readonly url: string;
  /** The manifest verified against. */
  readonly manifest: string;
  readonly cluster: string;
  readonly keyId: string;
  readonly fromIndex: number | null;
  readonly toIndex: number | null;
  readonly ok: boolean;
  readonly segments: number;
  readonly snapshots: number;
  readonly rebuiltShards: number;
  /** Every object verified, in manifest order (segments, then snapshots). */
  readonly objects: readonly ObjectReport[];
}

/** Verifies the archive; throws AuditError when there is no manifest or the key is not the archive's. */
export async function auditArchive(o: AuditOptions): Promise<AuditReport> {
  const scan = await readBestManifest(o.store, o.cluster, o.trusted);
  if (scan.best === null) {
    const why = scan.rejected.length > 0 ? `; skipped: ${scan.rejected.map((r) => r.reason).join('; ')}` : '';
    throw new AuditError('no_manifest', `${o.store.url} holds no valid manifest${o.cluster === null ? '' : ` of cluster ${o.cluster}`}${why}`);
  }
  const manifest = scan.best.body;
  if (manifest.keyId !== o.key.idHex) {
    throw new AuditError('wrong_key', `the archive is encrypted under key ${manifest.keyId}; the key file holds key ${o.key.idHex}`);
  }
  const selected = inIndexRange(manifest, o.fromIndex ?? 0, o.toIndex ?? Number.MAX_SAFE_INTEGER);
  o.onProgress?.(0, selected.segments.length + selected.snapshots.length);
  const ctx = { store: o.store, keys: new KeyRing([o.key]), key: o.key, cluster: manifest.cluster, ces: manifest.ces, repair: o.repair, moveDamaged: o.repair, ownChain: o.ownChain };
  const result = await verifyArchive(ctx, selected, {}, (done, total) => o.onProgress?.(done, total));
  return {
    url: o.store.url,
    manifest: scan.best.key,
    cluster: manifest.cluster,
    keyId: manifest.keyId,
    fromIndex: o.fromIndex ?? null,
    toIndex: o.toIndex ?? null,
    ok: result.ok,
    segments: selected.segments.length,
    snapshots: selected.snapshots.length,
    rebuiltShards: result.objects.reduce((n, r) => n + r.rebuiltShards, 0),
    objects: result.objects,
  };
}

/** The manifest narrowed to segments holding an index in from..to and snapshots at one. */
function inIndexRange(m: ManifestBody, from: number, to: number): ManifestBody {
  return {
    ...m,
    segments: m.segments.filter((s) => s.last.index >= from && s.first.index <= to),
    snapshots: m.snapshots.filter((s) => s.point.index >= from && s.point.index <= to),
  };
}

/** The report as text: one block per failed or repaired object, then a summary line. */
export function formatAudit(r: AuditReport): string {
  const range = r.fromIndex === null && r.toIndex === null ? 'all indexes' : `indexes ${r.fromIndex ?? 'start'}..${r.toIndex ?? 'end'}`;
  const lines = [`archive ${r.url}, manifest ${r.manifest} (cluster ${r.cluster}, key id ${r.keyId}), ${range}`];
  for (const o of r.objects) {
    if (o.ok && o.rebuiltShards === 0) continue;
    lines.push(`${o.ok ? 'REPAIRED' : 'BAD'} ${o.kind} ${o.prefix}`, ...o.problems.map((p) => `  ${p}`));
  }
  const bad = r.objects.filter((o) => !o.ok);
  lines.push(
    `checked ${r.objects.length} object(s) (${r.segments} segment(s), ${r.snapshots} snapshot(s)): ${r.objects.length - bad.length} good, ${bad.length} bad` +
      (r.rebuiltShards > 0 ? `, ${r.rebuiltShards} shard(s) rebuilt` : ''),
  );
  return lines.join('\n');
}
