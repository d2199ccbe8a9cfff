/**
 * What an archive holds, read from its manifests alone (`pangea archive inspect`): no key is
 * needed and no segment or snapshot is read. Every manifest version listed is opened and
 * its signature checked (manifest.ts `openManifest`); the best one (readBestManifest, any
 * valid signer) is summarised: cluster, key id, CES parameters, segments, snapshots, bytes,
 * and any gap between consecutive segments.
 */
import type { CesParams } from '../ces/index.js';
import { MANIFEST_PREFIX, ManifestError, compareManifestKeys, openManifest, parseManifestKey, readBestManifest, type EncodedObject,
  type ManifestBody } from './manifest.js';
import type { ObjectStore } from './store.js';

export interface ManifestVersionInfo {
  readonly name: string;
  readonly version: number;
  readonly round: number;
  readonly signer: string;
  /** Signing time (ISO 8601) as the manifest states it; null when it is not valid. */
  readonly created: string | null;
  readonly valid: boolean;
  /** Why it is not valid. */
  readonly reason?: string;
  readonly best: boolean;
}

export interface SegmentInfo {
  readonly prefix: string;
  readonly first: { readonly slot: number; readonly index: number };
  readonly last: { readonly slot: number; readonly index: number };
  readonly rawBytes: number;
  readonly shardBytes: number;
}

export interface SnapshotInfo {
  readonly prefix: string;
  readonly index: number;
  readonly slot: number;
  readonly rawBytes: number;
  readonly shardBytes: number;
}

/** Slots (and indexes) missing between two consecutive segments. */
export interface GapInfo {
  readonly afterSegment: string;
  readonly beforeSegment: string;
  readonly missingSlots: { readonly from: number; readonly to: number };
  readonly missingIndexes: { readonly from: number; readonly to: number };
}

export interface BestManifestInfo {
  readonly name: string;
  readonly cluster: string;
  readonly version: number;
  readonly ballot: { readonly round: number; readonly leader: string };
  readonly created: string;
  readonly keyId: string;
  readonly ces: CesParams;
  readonly voters: readonly string[];
  readonly segments: {
    readonly count: number;
    /** Null when there is no segment. */
    readonly firstIndex: number | null;
    readonly lastIndex: number | null;
    readonly firstSlot: number | null;
    readonly lastSlot: number | null;
    readonly shardBytes: number;
    readonly list: readonly SegmentInfo[];
  };
  readonly snapshots: readonly SnapshotInfo[];
  /** Shard bytes of every listed segment and snapshot. */
  readonly shardBytes: number;
  readonly gaps: readonly GapInfo[];
}

export interface InspectReport {
  readonly url: string;
  /** Manifest objects in the store (valid or not). */
  readonly manifestCount: number;
  /** The newest `versionsMax` of them, newest first. */
  readonly versions: readonly ManifestVersionInfo[];
  /** Null when no manifest is valid. */
  readonly best: BestManifestInfo | null;
}

/**
 * Reads the manifests of `store`: the newest `versionsMax` are opened one by one (0: all of
 * them; each holds the whole listing, so old archives have large ones), and the best is
 * summarised. Store errors propagate.
 */
export async function inspectArchive(store: ObjectStore, versionsMax: number): Promise<InspectReport> {
  const scan = await readBestManifest(store, null);
  const names = (await store.list(MANIFEST_PREFIX)).map((o) => o.key).filter((k) => parseManifestKey(k) !== null);
  const newest = names.sort(compareManifestKeys).reverse();
  const shown = versionsMax > 0 ? newest.slice(0, versionsMax) : newest;
  const versions: ManifestVersionInfo[] = [];
  for (const name of shown) {
    const { round, signer, version } = parseManifestKey(name)!;
    const base = { name, version, round, signer, best: name === scan.best?.key };
    try {
      const body = openManifest(name, await store.get(name), null);
      versions.push({ ...base, created: iso(body.created), valid: true });
    } catch (err) {
      if (!(err instanceof ManifestError)) throw err;
      versions.push({ ...base, created: null, valid: false, reason: err.message });
    }
  }
  return {
    url: store.url,
    manifestCount: names.length,
    versions,
    best: scan.best === null ? null : summarise(scan.best.key, scan.best.body),
  };
}

function summarise(name: string, m: ManifestBody): BestManifestInfo {
  const segments = m.segments.map((s): SegmentInfo => ({ prefix: s.prefix, first: s.first, last: s.last, rawBytes: s.rawBytes, shardBytes: shardBytes(s) }));
  const snapshots = m.snapshots.map((s): SnapshotInfo => ({ prefix: s.prefix, index: s.point.index, slot: s.point.slot, rawBytes: s.rawBytes, shardBytes: shardBytes(s) }));
  const gaps: GapInfo[] = [];
  for (let i = 1; i < segments.length; i++) {
    const a = segments[i - 1]!;
    const b = segments[i]!;
    if (b.first.slot !== a.last.slot + 1 || b.first.index !== a.last.index + 1) {
      gaps.push({
        afterSegment: a.prefix,
        beforeSegment: b.prefix,
        missingSlots: { from: a.last.slot + 1, to: b.first.slot - 1 },
        missingIndexes: { from: a.last.index + 1, to: b.first.index - 1 },
      });
    }
  }
  const segmentBytes = segments.reduce((n, s) => n + s.shardBytes, 0);
  return {
    name,
    cluster: m.cluster,
    version: m.version,
    ballot: { round: m.ballot.round, leader: m.ballot.leader },
    created: iso(m.created),
    keyId: m.keyId,
    ces: m.ces,
    voters: m.voters,
    segments: {
      count: segments.length,
      firstIndex: segments[0]?.first.index ?? null,
      lastIndex: segments.at(-1)?.last.index ?? null,
      firstSlot: segments[0]?.first.slot ?? null,
      lastSlot: segments.at(-1)?.last.slot ?? null,
      shardBytes: segmentBytes,
      list: segments,
    },
    snapshots,
    shardBytes: segmentBytes + snapshots.reduce((n, s) => n + s.shardBytes, 0),
    gaps,
  };
}

function shardBytes(o: EncodedObject): number {
  return o.shards.reduce((n, s) => n + s.size, 0);
}

function iso(ms: number): string {
  return Number.isFinite(ms) ? new Date(ms).toISOString() : String(ms);
}

/** The report as text for a terminal: a table of versions, then the best manifest. */
export function formatInspect(r: InspectReport): string {
  const lines: string[] = [`archive ${r.url}: ${r.manifestCount} manifest version(s)${r.versions.length < r.manifestCount ? `, newest ${r.versions.length} shown` : ''}`];
  if (r.versions.length > 0) {
    const rows = r.versions.map((v) => [
      `${v.best ? '*' : ' '} ${v.version}`,
      String(v.round),
      shortId(v.signer),
      v.created ?? '-',
      v.valid ? 'valid' : `INVALID: ${v.reason ?? ''}`,
    ]);
    lines.push('', ...table(['  version', 'round', 'signer', 'created', 'status'], rows));
  }
  const b = r.best;
  if (b === null) {
    lines.push('', 'no valid manifest: the archive lists nothing');
    return lines.join('\n');
  }
  const s = b.segments;
  lines.push(
    '',
    `best manifest (*) ${b.name}`,
    `  cluster     ${b.cluster}`,
    `  key id      ${b.keyId}`,
    `  ces         k=${b.ces.dataShards} m=${b.ces.parityShards} stripe=${b.ces.stripeBytes} level=${b.ces.level}`,
    `  signed      ${b.created} by ${b.ballot.leader} (round ${b.ballot.round})`,
    `  voters      ${b.voters.join(', ')}`,
    `  segments    ${s.count}${s.count > 0 ? `: indexes ${s.firstIndex}..${s.lastIndex}, slots ${s.firstSlot}..${s.lastSlot}, ${formatBytes(s.shardBytes)}` : ''}`,
    `  snapshots   ${b.snapshots.length}`,
    `  shard bytes ${formatBytes(b.shardBytes)} in all`,
  );
  if (b.snapshots.length > 0) {
    lines.push('', ...table(['  index', 'slot', 'bytes', 'object'], b.snapshots.map((x) => [`  ${x.index}`, String(x.slot), formatBytes(x.shardBytes), x.prefix])));
  }
  lines.push('', b.gaps.length === 0 ? 'gaps: none' : `GAPS: ${b.gaps.length}`);
  for (const g of b.gaps) {
    lines.push(`  indexes ${g.missingIndexes.from}..${g.missingIndexes.to} (slots ${g.missingSlots.from}..${g.missingSlots.to}) between ${g.afterSegment} and ${g.beforeSegment}`);
  }
  return lines.join('\n');
}

/** Left-aligned columns separated by two spaces. */
function table(head: readonly string[], rows: readonly (readonly string[])[]): string[] {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: readonly string[]): string => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('  ');
  return [line(head), ...rows.map(line)];
}

/** A peer id shortened for tables: its last 12 characters. */
function shortId(id: string): string {
  const SHOWN = 12;
  return id.length > SHOWN ? `…${id.slice(-SHOWN)}` : id;
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${n} B` : `${v.toFixed(1)} ${units[u]} (${n} B)`;
}
