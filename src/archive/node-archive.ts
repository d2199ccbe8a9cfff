/**
 * The archive's part of a running node: its key, the cluster's settings (proposed at
 * bootstrap, read from the log), the object store they name, the archiver, and the metrics.
 * The server (src/server.ts) creates one per node; nothing here runs before the log has set
 * the cluster's archive settings.
 */
import { sleep } from '../sleep.js';
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { paramsDefault, readKeyFile, writeNewKeyFile, type CesKey } from '../ces/index.js';
import type { Logger } from '../logger.js';
import type { LmdbLogStore } from '../log/lmdb.js';
import type { LmdbStateStore } from '../state/kv.js';
import type { ArchiveSettings } from '../state/command.js';
import type { SegmentBound } from '../state/segments.js';
import { SEGMENT_ENTRIES_DEFAULT, SNAPSHOT_SEGMENTS_DEFAULT, type NodeArchiveOptions } from './options.js';
import { Archiver, clearStaging, type ArchiveHost, type ArchiveStats } from './archiver.js';
import { openObjectStore } from './open-store.js';
import { ArchiveColdSource } from './cold.js';
import type { Metrics } from '../metrics.js';
import type { ObjectStore } from './store.js';

export const STAGING_DIR = 'archive-staging';

/** The settings a node that bootstraps a cluster proposes: without `--archive-url`, the
 *  default archive in its own data dir, marked as this node's (`local`). */
export function bootstrapSettings(opts: NodeArchiveOptions, dataDir: string, peerId: string): ArchiveSettings {
  return {
    url: opts.url ?? pathToFileURL(resolve(dataDir, 'archive')).href,
    segmentEntries: opts.segmentEntries ?? SEGMENT_ENTRIES_DEFAULT,
    snapshotSegments: opts.snapshotSegments ?? SNAPSHOT_SEGMENTS_DEFAULT,
    ces: { ...paramsDefault },
    ...(opts.url === undefined ? { local: peerId } : {}),
  };
}

/**
 * Why the cluster does not archive or prune now, or null when it does. The default archive
 * (a cluster bootstrapped without `--archive-url`) lives in its node's data dir: on that
 * node's disk, unreachable from other hosts, gone with that dir. It serves while that node is
 * the cluster's only member; with more, archiving and pruning stop on every node (the hot
 * log keeps everything) and /readyz and `pangea_archive_enabled` say why.
 */
export function archiveOffReason(settings: ArchiveSettings | null, members: readonly string[]): string | null {
  if (settings === null) return 'the cluster has not recorded its archive settings yet';
  if (settings.local === undefined) return null;
  if (members.length === 1 && members[0] === settings.local) return null;
  return (
    `the archive is the default one in node ${settings.local}'s data dir (${settings.url}), which serves a one-node cluster only, ` +
    `and this cluster has ${members.length} members: archiving and pruning are off, and the hot log keeps every entry. ` +
    'A cluster of several nodes needs a store they share: bootstrap it with --archive-url'
  );
}

/** What /readyz and the metrics tell of the archive. */
export interface ArchiveStatus {
  readonly state: 'on' | 'off';
  readonly reason?: string;
  /** The last index the archive holds (0: none yet). */
  readonly archivedThroughIndex: number;
  /** Indexes committed and not archived yet. */
  readonly behindIndexes: number;
  /** True when that is more than two segments and the archiving delay: archiving stalls. */
  readonly behind: boolean;
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

/** Starts archiving once the log has the cluster's settings; owns the store it opens. */
/** How often the hot log's size is measured for the quota. */
const QUOTA_CHECK_MS = 250;
/** How often archiving's state is checked for the log lines that report a change. */
const STATUS_CHECK_MS = 1_000;

export class NodeArchive {
  private archiver: Archiver | null = null;
  private store: ObjectStore | null = null;
  private coldSource: ArchiveColdSource | null = null;
  private hotBytesSeen = 0;
  private hotBytesAt = 0;
  private readonly abort = new AbortController();
  private waiting: Promise<void> = Promise.resolve();
  private watch: NodeJS.Timeout | null = null;
  private lastStatus: ArchiveStatus | null = null;
  private alarmLogged = false;

  constructor(
    private readonly stores: { readonly log: LmdbLogStore; readonly state: LmdbStateStore },
    private readonly host: ArchiveHost,
    private readonly key: CesKey | null,
    private readonly opts: NodeArchiveOptions,
    private readonly stagingDir: string,
    private readonly logger: Logger,
  ) {}

  start(): void {
    // Says when archiving turns off or on, when it falls behind (an archive stall), and when
    // the hot-log quota starts or stops refusing writes.
    this.watch = setInterval(() => this.noteStatus(), STATUS_CHECK_MS);
    this.watch.unref();
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
      this.coldSource = new ArchiveColdSource(this.store, key, this.host.cluster, (s) => this.host.members().includes(s));
      // While the hot log is at its quota, archiving and pruning hurry (archiver.ts).
      const host: ArchiveHost = { ...this.host, underPressure: () => this.quotaAlarm() };
      this.archiver = new Archiver(host, this.store, key, { ...this.opts, stagingDir: this.stagingDir }, this.logger);
      this.archiver.start();
      this.logger.info('archiving to the cluster’s store', { url: this.store.url });
    })().catch((err: unknown) => this.logger.error('cannot start archiving', { err }));
  }

  async stop(): Promise<void> {
    if (this.watch !== null) clearInterval(this.watch);
    this.abort.abort();
    await this.waiting;
    await this.archiver?.stop();
    await this.store?.close();
  }

  /** A segment was finished at apply: archived once the archiver runs (it also finds the
   *  segments it missed in the state store). */
  onSegment(bound: SegmentBound): void {
    this.archiver?.onSegment(bound);
  }

  /** Where block sync reads cold ranges (null until the store is open, or without a key). */
  cold(): ArchiveColdSource | null {
    return this.coldSource;
  }

  /** Archiving's state, for /readyz and the metrics. */
  status(): ArchiveStatus {
    const off = this.key === null ? 'this node has no archive key: it neither archives nor prunes (give it --archive-key-file)' : (this.host.archiveOff?.() ?? null);
    const archived = this.archiver?.stats.archivedLastIndex ?? 0;
    const behindIndexes = Math.max(0, this.host.commitIndex() - archived);
    if (off !== null) return { state: 'off', reason: off, archivedThroughIndex: archived, behindIndexes, behind: false };
    const segment = this.stores.state.archiveSettings()?.segmentEntries ?? SEGMENT_ENTRIES_DEFAULT;
    return { state: 'on', archivedThroughIndex: archived, behindIndexes, behind: behindIndexes > 2 * segment + this.opts.delayEntries };
  }

  private noteStatus(): void {
    const alarm = this.quotaAlarm();
    if (alarm !== this.alarmLogged) {
      this.alarmLogged = alarm;
      if (alarm) this.logger.warn(`client writes refused: ${this.admission() ?? 'the hot log is at its quota'}`, { hotBytes: this.hotBytesSeen, quotaBytes: this.opts.hotQuotaBytes });
      else this.logger.info('the hot log is below its quota again: client writes are taken', { hotBytes: this.hotBytesSeen });
    }
    const now = this.status();
    const was = this.lastStatus;
    this.lastStatus = now;
    if (now.state === 'off' && (was === null || was.state !== 'off' || was.reason !== now.reason)) this.logger.warn(`archiving is off: ${now.reason}`);
    else if (now.state === 'on' && was?.state === 'off') this.logger.info('archiving is on');
    if (now.behind && was?.behind !== true) {
      this.logger.warn('the archive is falling behind: more than two segments are committed and not archived', { behindIndexes: now.behindIndexes, lastError: this.archiver?.stats.archiveLastError || undefined });
    } else if (!now.behind && was?.behind === true) this.logger.info('the archive has caught up', { behindIndexes: now.behindIndexes });
  }

  /** Bytes of the hot log, measured at most every QUOTA_CHECK_MS. */
  hotBytes(): number {
    const now = Date.now();
    if (now - this.hotBytesAt >= QUOTA_CHECK_MS) {
      this.hotBytesAt = now;
      this.hotBytesSeen = this.stores.log.hotBytes();
    }
    return this.hotBytesSeen;
  }

  /** True while the hot log is at or over `--hot-quota-bytes`. */
  quotaAlarm(): boolean {
    return this.opts.hotQuotaBytes > 0 && this.hotBytes() >= this.opts.hotQuotaBytes;
  }

  /** Why client writes are refused now, or null: the node's admission check. */
  admission(): string | null {
    if (!this.quotaAlarm()) return null;
    const why = this.archiver?.stats.archiveLastError || this.archiver?.stats.pruneLastError || 'archiving has not caught up';
    return `the hot log is at its quota of ${this.opts.hotQuotaBytes} bytes until the archive catches up and it is pruned (last archive error: ${why}); reads are still served`;
  }

  /** Archive, prune and hot-log figures, read when scraped. */
  registerMetrics(m: Metrics): void {
    const s = (): ArchiveStats | null => this.archiver?.stats ?? null;
    m.gauge('pangea_archive_enabled', '1 while the cluster archives and prunes; 0 while it does not (/readyz says why).', () => (this.status().state === 'on' ? 1 : 0));
    m.gauge('pangea_archive_behind_indexes', 'Indexes committed and not archived yet.', () => this.status().behindIndexes);
    m.gauge('pangea_archive_first_index', 'First index the archive holds (0: none).', () => s()?.archivedFirstIndex ?? 0);
    m.gauge('pangea_archive_last_index', 'Last index the archive holds (0: none).', () => s()?.archivedLastIndex ?? 0);
    m.counter('pangea_archive_runs_total', 'Archiving runs.', () => s()?.archiveRuns ?? 0);
    m.counter('pangea_archive_errors_total', 'Archiving runs that failed.', () => s()?.archiveErrors ?? 0);
    m.counter('pangea_archive_segments_total', 'Segments this node archived.', () => s()?.segmentsArchived ?? 0);
    m.counter('pangea_archive_snapshots_total', 'Snapshots this node archived.', () => s()?.snapshotsArchived ?? 0);
    m.counter('pangea_archive_bytes_total', 'Shard bytes this node uploaded.', () => s()?.archivedBytes ?? 0);
    m.gauge('pangea_archive_last_attempt_seconds', 'Unix time of the last archiving run.', () => (s()?.archiveLastAttempt ?? 0) / 1000);
    m.gauge('pangea_archive_last_success_seconds', 'Unix time of the last successful archiving run.', () => (s()?.archiveLastSuccess ?? 0) / 1000);
    m.counter('pangea_prune_runs_total', 'Prune runs.', () => s()?.pruneRuns ?? 0);
    m.counter('pangea_prune_errors_total', 'Prune runs that failed.', () => s()?.pruneErrors ?? 0);
    m.gauge('pangea_prune_last_attempt_seconds', 'Unix time of the last prune run.', () => (s()?.pruneLastAttempt ?? 0) / 1000);
    m.gauge('pangea_prune_last_success_seconds', 'Unix time of the last successful prune run.', () => (s()?.pruneLastSuccess ?? 0) / 1000);
    m.gauge('pangea_hot_first_index', 'First index the hot log holds.', () => this.host.compactedPoint().index + 1);
    m.gauge('pangea_hot_last_index', 'Last chosen index known here.', () => this.host.commitIndex());
    m.gauge('pangea_hot_log_bytes', 'Bytes of the hot log in LMDB (pages).', () => this.hotBytes());
    m.gauge('pangea_hot_quota_bytes', 'The hot-log quota (0: none).', () => this.opts.hotQuotaBytes);
    m.gauge('pangea_hot_quota_alarm', '1 while the hot log is at its quota and client writes are refused.', () => (this.quotaAlarm() ? 1 : 0));
    m.lastError('pangea_archive_last_error_info', 'The last archiving error.', () => s()?.archiveLastError);
    m.lastError('pangea_prune_last_error_info', 'The last prune error.', () => s()?.pruneLastError);
  }
}
