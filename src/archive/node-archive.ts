/**
 * The archive's part of a running node: its key, the cluster's settings (proposed at
 * bootstrap, read from the log), the object store they name, the archiver, and the metrics.
 * The server (src/server.ts) creates one per node; nothing here runs before the log has set
 * the cluster's archive settings.
 */
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { PrivateKey } from '@libp2p/interface';
import { paramsDefault, readKeyFile, writeNewKeyFile, type CesKey } from '../ces/index.js';
import type { Logger } from '../logger.js';
import type { Stores } from '../log/lmdb.js';
import type { PangeaNode } from '../node.js';
import type { ArchiveSettings } from '../state/command.js';
import { SEGMENT_ENTRIES_DEFAULT, SNAPSHOT_SEGMENTS_DEFAULT, type NodeArchiveOptions } from './options.js';
import { Archiver, clearStaging, type ArchiveHost, type ArchiveStats } from './archiver.js';
import { openObjectStore } from './open-store.js';
import type { ObjectStore } from './store.js';

export const ARCHIVE_KEY_FILE = 'archive.key';
export const STAGING_DIR = 'archive-staging';

/** The settings a node that bootstraps a cluster proposes. */
export function bootstrapSettings(opts: NodeArchiveOptions, dataDir: string): ArchiveSettings {
  return {
    url: opts.url ?? pathToFileURL(resolve(dataDir, 'archive')).href,
    segmentEntries: opts.segmentEntries ?? SEGMENT_ENTRIES_DEFAULT,
    snapshotSegments: opts.snapshotSegments ?? SNAPSHOT_SEGMENTS_DEFAULT,
    ces: { ...paramsDefault },
  };
}

/**
 * The archive key: `path` when it exists; a new one written there when `create` (a node
 * that bootstraps a cluster with the default path); otherwise null (the node runs, but
 * neither archives, prunes nor restores).
 */
export async function loadArchiveKey(path: string, create: boolean, logger: Logger): Promise<CesKey | null> {
  if (existsSync(path)) return readKeyFile(path);
  if (create) {
    logger.info('generated an archive key: every node of this cluster needs a copy (--archive-key-file)', { path });
    return writeNewKeyFile(path);
  }
  logger.warn('no archive key: this node will not archive, prune or restore (give it --archive-key-file)', { path });
  return null;
}

/** The node as the archiver sees it. */
export function archiveHost(node: PangeaNode, stores: Stores, privateKey: PrivateKey): ArchiveHost {
  const { state, log } = stores;
  return {
    cluster: node.clusterId,
    peerId: node.peerId,
    privateKey,
    leaderBallot: () => node.leaderBallot,
    commitIndex: () => node.commitIndex,
    appliedIndex: () => state.applied().point.index,
    members: () => node.cluster().members.map((m) => m.peerId),
    voters: () => node.config.voters,
    settings: () => state.archiveSettings(),
    segments: (after, limit) => state.segments(after, limit),
    readSlots: (from, to) => log.readSlots(from, to),
    compactedPoint: () => node.compactedPoint,
    compact: (point) => node.compact(point),
    chainAt: (index) => state.chainAt(index),
    snapshot: () => state.snapshot(),
  };
}

/** Starts archiving once the log has the cluster's settings; owns the store it opens. */
export class NodeArchive {
  private archiver: Archiver | null = null;
  private store: ObjectStore | null = null;
  private readonly abort = new AbortController();
  private waiting: Promise<void> = Promise.resolve();

  constructor(
    private readonly node: PangeaNode,
    private readonly stores: Stores,
    private readonly host: ArchiveHost,
    private readonly key: CesKey | null,
    private readonly opts: NodeArchiveOptions,
    private readonly stagingDir: string,
    private readonly logger: Logger,
  ) {}

  start(): void {
    if (this.key === null) return;
    const key = this.key;
    this.waiting = (async () => {
      await clearStaging(this.stagingDir);
      let settings = this.stores.state.archiveSettings();
      while (settings === null && !this.abort.signal.aborted) {
        await sleep(200, this.abort.signal);
        settings = this.stores.state.archiveSettings();
      }
      if (settings === null) return;
      this.store = await openObjectStore(settings.url);
      if (this.abort.signal.aborted) return;
      this.archiver = new Archiver(this.host, this.store, key, { ...this.opts, stagingDir: this.stagingDir }, this.logger);
      this.node.onSegment((bound) => this.archiver?.onSegment(bound));
      this.archiver.start();
      this.logger.info('archiving to the cluster’s store', { url: this.store.url });
    })().catch((err: unknown) => this.logger.error('cannot start archiving', { err }));
  }

  async stop(): Promise<void> {
    this.abort.abort();
    await this.waiting;
    await this.archiver?.stop();
    await this.store?.close();
  }

  /** Prometheus text: archive, prune and hot-log figures. */
  metricsText(): string {
    const s: ArchiveStats | null = this.archiver?.stats ?? null;
    const compacted = this.node.compactedPoint;
    const lines: string[] = [];
    const metric = (type: 'gauge' | 'counter', name: string, help: string, value: number, labels = ''): void => {
      lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, `${name}${labels} ${value}`);
    };
    metric('gauge', 'pangea_archive_first_index', 'First index the archive holds (0: none).', s?.archivedFirstIndex ?? 0);
    metric('gauge', 'pangea_archive_last_index', 'Last index the archive holds (0: none).', s?.archivedLastIndex ?? 0);
    metric('counter', 'pangea_archive_runs_total', 'Archiving runs.', s?.archiveRuns ?? 0);
    metric('counter', 'pangea_archive_errors_total', 'Archiving runs that failed.', s?.archiveErrors ?? 0);
    metric('counter', 'pangea_archive_segments_total', 'Segments this node archived.', s?.segmentsArchived ?? 0);
    metric('counter', 'pangea_archive_snapshots_total', 'Snapshots this node archived.', s?.snapshotsArchived ?? 0);
    metric('counter', 'pangea_archive_bytes_total', 'Shard bytes this node uploaded.', s?.archivedBytes ?? 0);
    metric('gauge', 'pangea_archive_last_attempt_seconds', 'Unix time of the last archiving run.', (s?.archiveLastAttempt ?? 0) / 1000);
    metric('gauge', 'pangea_archive_last_success_seconds', 'Unix time of the last successful archiving run.', (s?.archiveLastSuccess ?? 0) / 1000);
    if (s?.archiveLastError) metric('gauge', 'pangea_archive_last_error_info', 'The last archiving error.', 1, `{error="${escapeLabel(s.archiveLastError)}"}`);
    metric('counter', 'pangea_prune_runs_total', 'Prune runs.', s?.pruneRuns ?? 0);
    metric('counter', 'pangea_prune_errors_total', 'Prune runs that failed.', s?.pruneErrors ?? 0);
    metric('gauge', 'pangea_prune_last_attempt_seconds', 'Unix time of the last prune run.', (s?.pruneLastAttempt ?? 0) / 1000);
    metric('gauge', 'pangea_prune_last_success_seconds', 'Unix time of the last successful prune run.', (s?.pruneLastSuccess ?? 0) / 1000);
    if (s?.pruneLastError) metric('gauge', 'pangea_prune_last_error_info', 'The last prune error.', 1, `{error="${escapeLabel(s.pruneLastError)}"}`);
    metric('gauge', 'pangea_hot_first_index', 'First index the hot log holds.', compacted.index + 1);
    metric('gauge', 'pangea_hot_last_index', 'Last chosen index known here.', this.node.commitIndex);
    metric('gauge', 'pangea_hot_log_bytes', 'Bytes of the hot log in LMDB (pages).', this.stores.log.hotBytes());
    return lines.join('\n') + '\n';
  }
}

function escapeLabel(text: string): string {
  return text.slice(0, 200).replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, ' ');
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => {
      clearTimeout(t);
      resolve();
    }, { once: true });
  });
}
