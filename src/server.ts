/**
 * `pangea serve`: opens the data dir, joins or bootstraps a cluster, and wires the node's
 * parts together (the composition root's outer shell; src/node.ts is its inner one).
 */
import './polyfill.js';
import { sleep } from './sleep.js';
import { mkdir, readFile } from 'node:fs/promises';
import { writeFileDurable } from './durable-file.js';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Config } from './consensus/index.js';
import type { PrivateKey } from '@libp2p/interface';
import { createLogger, type Logger } from './logger.js';
import { PangeaNode, genesisPoint, newClusterId } from './node.js';
import { loadOrCreateIdentity } from './net/identity.js';
import { Libp2pTransport } from './net/p2p.js';
import { HttpApi } from './net/http.js';
import { openStores, type Stores } from './stores.js';
import { Metrics } from './metrics.js';
import { ARCHIVE_KEY_FILE, CLUSTER_FILE, DATA_FORMAT, NODE_FILE, REMOVED_FILE, checkDataFormat, lockDataDir } from './data-dir.js';
import { ENV_FILE } from './storage/env.js';
import { BUILD_INFO, BUILD_PROTOCOL, PANGEA_VERSION, parseBuildInfo, type BuildInfo } from './version.js';
import { storageFailureCause, watchDataDir } from './fail-stop.js';
import { APPLY_LEVEL_DEFAULT, APPLY_LEVEL_MAX, APPLY_LEVEL_MIN, type ArchiveSettings } from './state/command.js';
import { ApplyHalt, SESSION_TTL_MS_DEFAULT } from './state/kv.js';
import type { CesKey } from './ces/index.js';
import { NodeArchive, STAGING_DIR, archiveOffReason, bootstrapSettings, loadArchiveKey } from './archive/node-archive.js';
import { openObjectStore, redactUrl } from './archive/open-store.js';
import { bestManifest, restoreFromArchive, restoreSnapshotInto, snapshotAtOrBelow } from './archive/restore.js';
import { checkSnapshotFile, looksLikeSnapshotFile, snapshotFileFrames, type SnapshotFileInfo } from './state/snapshot-file.js';
import { publishBaseSnapshot, type ArchiveHost } from './archive/archiver.js';
import { Blocksync, registerBlocksyncMetrics } from './sync/blocksync.js';
import { DEFAULTS } from './consensus/index.js';
import { resolveParams } from './ces/index.js';

export type { ServeOptions } from './config.js';
import type { ServeOptions } from './config.js';
import { isUrl } from './config.js';

/** How long `pangea cluster upgrade` waits for each member to say which build it runs. */
const BUILD_PROBE_TIMEOUT_MS = 5_000;

/**
 * What the data dir records about its cluster, durably, before the LMDB environment holds
 * anything: a data dir with this file is a node of that cluster, and restarts never need
 * another node to find out which. `joining` is kept until the node is a voter, so a joiner
 * cut off midway finishes joining after a restart (through the URL it was given, or any
 * --join given then). `sponsor` is the peer id behind that URL: until the node is a voter,
 * block sync takes its word for chosen values as it takes the leader's (the configuration the
 * joiner starts from, genesis, may name only voters long gone).
 */
interface ClusterFile {
  /** DATA_FORMAT when written (data-dir.ts: what this build can read). */
  readonly format?: number;
  readonly clusterId: string;
  readonly genesis: Config;
  readonly joining?: { readonly url: string; readonly archive: ArchiveSettings | null; readonly sponsor?: string | null } | undefined;
}


export interface RunningServer {
  readonly node: PangeaNode;
  readonly logger: Logger;
  banner(): string;
  stop(): Promise<void>;
}

export interface ServerHooks {
  /**
   * A write to the log or the state failed (`cause` names why: "disk full at <path>", "data
   * dir vanished: ..."); the node has stopped serving. The process must end: `pangea serve`
   * exits non-zero. Default: log only.
   */
  readonly onFatal?: (cause: string) => void;
  /**
   * The cluster removed this node and no longer needs it (`why` says so); REMOVED_FILE is
   * written. The node should stop: `pangea serve` stops it and exits non-zero. Default: log only.
   */
  readonly onRemoved?: (why: string) => void;
}

export async function startServer(opts: ServeOptions, hooks: ServerHooks = {}): Promise<RunningServer> {
  await mkdir(opts.dataDir, { recursive: true });
  // Held while the node runs: a second `serve` or a `prune-hot` on this data dir refuses.
  const lock = await lockDataDir(opts.dataDir);
  const parts = new Started();
  parts.add(() => lock.release());
  try {
    return await assemble(opts, hooks, parts);
  } catch (err) {
    // Start-up failed midway (a port in use, a bad --join): nothing is left running or locked.
    await parts.stopAll(() => {});
    throw err;
  }
}

/**
 * What has started, stopped in the reverse order: by `RunningServer.stop`, and when start-up
 * fails midway.
 */
class Started {
  private readonly stops: (() => unknown)[] = [];

  add(stop: () => unknown): void {
    this.stops.push(stop);
  }

  /** Stops everything, last started first; a part that fails to stop does not stop the rest. */
  async stopAll(onError: (err: unknown) => void): Promise<void> {
    while (this.stops.length > 0) {
      try {
        await this.stops.pop()!();
      } catch (err) {
        onError(err);
      }
    }
  }
}

/** Opens the data dir's stores, joins or bootstraps, and starts the node's parts. */
async function assemble(opts: ServeOptions, hooks: ServerHooks, parts: Started): Promise<RunningServer> {
  const clusterPath = join(opts.dataDir, CLUSTER_FILE);
  // --restore-from names an archive, or a snapshot file: checked whole before anything is
  // written, so a damaged one leaves the data dir as it was.
  const snapshotFile =
    opts.archive.restoreFrom !== undefined && opts.join === undefined && !existsSync(clusterPath) ? await restoreSnapshotFile(opts.archive.restoreFrom, opts.archive.restoreIndex) : null;
  const identity = await loadOrCreateIdentity(opts.dataDir);
  const logger = createLogger(opts.logLevel, { node: identity.peerId.slice(-8) });
  const adminToken = opts.adminTokenFile ? (await readFile(opts.adminTokenFile, 'utf8')).trim() : null;
  if (adminToken === null && !isLoopback(opts.httpListen.host)) {
    logger.warn('the HTTP API listens beyond loopback without --admin-token-file: anyone who reaches it can change membership');
  }

  // Which cluster: the data dir's own, or a new one, or the one we are asked to join.
  let cluster: ClusterFile;
  let joining: JoinView | null = null;
  let formerMembers: string[] = [];
  const resuming = existsSync(clusterPath);
  if (resuming) {
    cluster = await readClusterFile(clusterPath);
    if (cluster.joining && opts.join !== undefined && opts.join !== cluster.joining.url) {
      // A joiner resumed through another member (the first may be gone): that member now
      // vouches for what it catches up on.
      const view = await fetchCluster(opts.join);
      if (view.clusterId !== cluster.clusterId) throw new Error(`--join ${opts.join} is a member of cluster ${view.clusterId}, but this data dir joins cluster ${cluster.clusterId}`);
      cluster = { ...cluster, joining: { ...cluster.joining, url: opts.join, sponsor: view.sponsor } };
      await writeFileDurable(clusterPath, JSON.stringify(cluster, null, 2));
    }
    if (opts.archive.restoreFrom !== undefined) {
      throw new Error(`--restore-from needs an empty data dir: ${opts.dataDir} holds a node of cluster ${cluster.clusterId} (move it away, or drop --restore-from to resume it)`);
    }
    if (cluster.joining) joining = { clusterId: cluster.clusterId, genesis: cluster.genesis, archive: cluster.joining.archive, sponsor: cluster.joining.sponsor ?? null };
    else if (opts.join) await checkJoinResumed(opts.join, cluster.clusterId, opts.dataDir, logger);
  } else if (opts.join) {
    joining = await fetchCluster(opts.join);
    cluster = { clusterId: joining.clusterId, genesis: joining.genesis, joining: { url: opts.join, archive: joining.archive, sponsor: joining.sponsor } };
  } else {
    cluster = { clusterId: newClusterId(), genesis: { voters: [identity.peerId], learners: [] } };
  }
  const bootstrapping = !resuming && joining === null;
  const fromArchive = opts.archive.restoreFrom !== undefined && snapshotFile === null;
  const keyPath = opts.archive.keyFile ?? join(opts.dataDir, ARCHIVE_KEY_FILE);
  const archiveKey = await loadArchiveKey(keyPath, bootstrapping && opts.archive.keyFile === undefined && !fromArchive, logger);

  const genesis = { ...genesisPoint(identity.peerId), epochs: [{ fromSlot: 1, config: cluster.genesis }] };
  const stores = openStores(opts.dataDir);
  parts.add(() => stores.close());
  if (!resuming && stores.state.bootstrapped()) {
    throw new Error(`${opts.dataDir} holds a node's ${ENV_FILE} but no ${CLUSTER_FILE}: it was removed, or written by a version that could lose it in a crash; restore ${CLUSTER_FILE} from a backup, or move ${ENV_FILE} away to start afresh`);
  }
  if (resuming && (cluster.format ?? 1) < DATA_FORMAT) {
    // Migrated (data-dir.ts): only the format changes, so that an older build refuses the dir.
    logger.info('raising the data dir format', { from: cluster.format ?? 1, to: DATA_FORMAT });
    cluster = { ...cluster, format: DATA_FORMAT };
    await writeFileDurable(clusterPath, JSON.stringify(cluster, null, 2));
  }
  // The key first, then the cluster file, then the log: each is durable before the next
  // names it, so a power cut anywhere leaves a data dir that restarts. A cluster restored
  // from an archive is recorded once restored (a cut midway redoes the restore).
  const writeClusterFile = (): Promise<void> => writeFileDurable(clusterPath, JSON.stringify({ format: DATA_FORMAT, ...cluster }, null, 2));
  if (!resuming && opts.archive.restoreFrom === undefined) await writeClusterFile();
  if (joining !== null && !stores.state.bootstrapped() && archiveKey !== null && joining.archive !== null) {
    await restoreForJoin(joining, archiveKey, stores, opts.archive.checkpoints, logger);
  }
  if (bootstrapping && opts.archive.restoreFrom !== undefined) {
    if (archiveKey === null) throw new Error('--restore-from needs the archive key of that archive (--archive-key-file)');
    await restoreNewCluster(opts, snapshotFile, cluster.clusterId, identity, archiveKey, stores, logger);
  }
  if (!resuming && opts.archive.restoreFrom !== undefined) await writeClusterFile();
  if (!stores.state.bootstrapped()) stores.state.bootstrap(genesis);
  // A node that left the cluster that removed it does not come back on its old data dir: the
  // cluster no longer knows it. (One removed while it was away, or that stopped before the
  // voters let it go, starts: it learns of its removal and leaves as a running one does.)
  const removedPath = join(opts.dataDir, REMOVED_FILE);
  if (existsSync(removedPath)) {
    const record = (await readFile(removedPath, 'utf8').catch(() => '')).trim().replace(/\s+/g, ' ');
    throw new Error(
      `this node was removed from cluster ${cluster.clusterId} and left it (${REMOVED_FILE}: ${record}): it does not start again on this data dir` +
        (opts.forceNewCluster ? ' (--force-new-cluster would fork the cluster it left: same cluster id, another log)' : '') +
        `; to serve again, move ${opts.dataDir} away and join the cluster with a fresh --data-dir`,
    );
  }
  if (opts.forceNewCluster) {
    if (!resuming) throw new Error('--force-new-cluster needs the data dir of a node of an existing cluster');
    const before = stores.state.applied().point;
    stores.state.forceConfig({ voters: [identity.peerId], learners: [] });
    const last = before.epochs[before.epochs.length - 1]?.config;
    formerMembers = [...(last?.voters ?? []), ...(last?.learners ?? [])].filter((id) => id !== identity.peerId);
    logger.warn('--force-new-cluster: this node now forms its cluster alone, keeping every write it has', {
      appliedIndex: before.index,
      formerVoters: before.epochs[before.epochs.length - 1]?.config.voters,
    });
  }
  const transport = new Libp2pTransport({
    privateKey: identity.privateKey,
    listen: [...opts.p2pListen],
    announce: opts.advertiseP2p ? [...opts.advertiseP2p] : [],
    clusterId: cluster.clusterId,
    logger,
  });
  await listening('--p2p-listen', opts.p2pListen.join(' '), transport.start());
  parts.add(() => transport.stop());
  await transport.handle(BUILD_PROTOCOL, () => Promise.resolve(BUILD_INFO));
  const probeBuild = async (peer: string): Promise<BuildInfo | null> => parseBuildInfo(await transport.request(peer, BUILD_PROTOCOL, {}, BUILD_PROBE_TIMEOUT_MS));

  const metrics = new Metrics();
  // The HTTP API needs the node, and the node needs the API's address: bind first.
  let serving: PangeaNode | null = null;
  const api = new HttpApi(
    () => {
      if (serving === null) throw new Error('not started');
      return serving;
    },
    { maxValueBytes: opts.maxValueBytes, maxRequestBytes: opts.maxRequestBytes, maxTxnOps: opts.maxTxnOps, watchesMax: opts.maxWatches, adminToken, logger, observe: metrics.httpObserver() },
  );
  const bound = await listening('--http-listen', `${opts.httpListen.host}:${opts.httpListen.port}`, api.listen(opts.httpListen.host, opts.httpListen.port));
  parts.add(() => api.close());
  metrics.gauge('pangea_http_requests_inflight', 'HTTP requests being served (at most requestsInFlightMax; more are answered 503).', () => api.requestsInFlight.requests);
  metrics.gauge('pangea_http_write_inflight_bytes', 'Bytes of write bodies held by requests being served (bounded; more are answered 503).', () => api.requestsInFlight.bytes);
  metrics.gauge('pangea_watch_streams', 'Watch streams open on this node (at most --max-watches).', () => api.watchStats.open);
  metrics.counter('pangea_watch_events_sent_total', 'Watch events (change and progress) sent to watchers.', () => api.watchStats.eventsSent);
  metrics.gauge('pangea_watch_cold_streams', 'Watch streams reading history below the hot journal from the archive now.', () => api.watchStats.cold);
  metrics.counter('pangea_watch_cold_pages_total', 'Pages of archived effects read by watch streams.', () => api.watchStats.coldPages);
  metrics.counter('pangea_watch_refused_total', 'Watch requests answered 503 because --max-watches streams were open.', () => api.watchStats.refused);
  metrics.counter('pangea_http_refused_busy_total', 'HTTP requests answered 503 because too many requests or write bytes were in flight.', () => api.refusedBusy);
  const http = opts.advertiseHttp ?? `http://${formatHost(bound.host)}:${bound.port}`;
  // While joining, the member this node joined through vouches for ranges (ClusterFile).
  let sponsor: string | null = joining?.sponsor ?? null;
  const envPath = join(opts.dataDir, ENV_FILE);
  const onFatal = (err: unknown): void => {
    // A log this build cannot apply is no storage failure: its message says what to run.
    const cause = err instanceof ApplyHalt ? err.message : storageFailureCause(err, opts.dataDir, envPath);
    logger.error(`stopping: ${cause}`);
    hooks.onFatal?.(cause);
  };
  const onDeparted = (fromSlot: number): void => {
    const index = stores.state.applied().point.index;
    const record = { clusterId: cluster.clusterId, peerId: identity.peerId, fromSlot, appliedIndex: index, at: new Date().toISOString() };
    void writeFileDurable(removedPath, JSON.stringify(record, null, 2)).then(
      () => hooks.onRemoved?.(`removed from cluster ${cluster.clusterId}: the voters left no longer need this node, so it stops; it will not start again on ${opts.dataDir} (${REMOVED_FILE})`),
      (err: unknown) => onFatal(err),
    );
  };
  const node = new PangeaNode({ clusterId: cluster.clusterId, peerId: identity.peerId, http, log: stores.log, state: stores.state, transport, logger, genesis: cluster.genesis, metrics, onFatal, onDeparted, wasMember: !cluster.joining, leaseTickMs: opts.leaseTickMs, probeBuild });
  serving = node;
  stores.state.onCommitFailure((err) => node.fail(err, 'committing applied state'));
  const archive = new NodeArchive(stores, archiveHost(node, stores, identity.privateKey), archiveKey, opts.archive, join(opts.dataDir, STAGING_DIR), logger);
  node.onSegment((b) => archive.onSegment(b));
  node.setAdmission(() => archive.admission());
  node.setReadyInfo(() => ({ archive: archive.status() }));
  archive.registerMetrics(metrics);
  const blocksync = new Blocksync(
    {
      cluster: cluster.clusterId,
      peerId: identity.peerId,
      commit: () => node.commitPoint,
      applied: () => ({ ...stores.state.applied().point, chain: stores.state.applied().chain }),
      hotFirstSlot: () => node.compactedPoint.slot + 1,
      readHot: (from, to) => stores.log.readSlots(from, to, stores.state.applied().point.slot),
      chainAt: (index) => stores.state.chainAt(index),
      slotAt: (index) => stores.state.slotAt(index),
      cold: () => archive.cold(),
      learnChosen: (values) => node.learnChosen(values),
      checkpoints: opts.archive.checkpoints,
      members: () => node.latestEpoch,
      configsAfter: (slot, limit) => stores.state.configsAfter(slot, limit),
      leader: () => node.leader,
      liveLeader: () => node.liveLeader,
      sponsor: () => sponsor,
    },
    transport,
    { coldReadsMax: opts.archive.coldReadsMax, coldQueueMax: opts.archive.coldQueueMax, timeoutMs: opts.archive.blocksyncTimeoutMs },
    logger,
  );
  node.onSnapshotNeeded(() => blocksync.want());
  node.setWatchCold(async (after, limit) => {
    const cold = archive.cold();
    if (cold === null) return { missing: 'this node cannot read the archive (no archive, or no archive key): watch through a node that can' };
    return blocksync.coldTurn(() => cold.effects(after, limit));
  });
  registerBlocksyncMetrics(metrics, blocksync, () => transport.peersConnected(), () => ({ first: archive.cold() ? 1 : node.compactedPoint.index + 1, last: stores.state.applied().point.index }));
  await blocksync.start();
  parts.add(() => blocksync.stop());
  if (opts.metricsListen) {
    const metricsServer = await listening('--metrics-listen', `${opts.metricsListen.host}:${opts.metricsListen.port}`, api.listenMetrics(opts.metricsListen.host, opts.metricsListen.port));
    parts.add(() => metricsServer.close());
  }
  node.start();
  parts.add(() => node.stop());
  archive.start();
  parts.add(() => archive.stop());
  parts.add(watchDataDir(envPath, (why) => node.fail(new Error(why), 'checking the data dir')));
  metrics.info('pangea_build_info', 'The Pangea build and the Node.js runtime this node runs.', { version: PANGEA_VERSION, node: process.version, apply_levels: `${BUILD_INFO.levels[0]}-${BUILD_INFO.levels[1]}` });
  metrics.gauge('pangea_db_bytes', 'Size of the LMDB file on disk, free pages included (`pangea compact` gives those back on a stopped node).', () => {
    try {
      return statSync(envPath).size;
    } catch {
      return 0;
    }
  });

  await writeFileDurable(join(opts.dataDir, NODE_FILE), JSON.stringify({ pid: process.pid, peerId: identity.peerId, http, p2p: transport.addresses() }, null, 2));

  const background = new AbortController();
  parts.add(() => background.abort());
  if (joining !== null) {
    const url = opts.join ?? cluster.joining!.url;
    void joinCluster(url, node, adminToken, logger, background.signal).then(
      async (joined) => {
        if (!joined) return;
        sponsor = null;
        await writeFileDurable(clusterPath, JSON.stringify({ format: cluster.format ?? DATA_FORMAT, clusterId: cluster.clusterId, genesis: cluster.genesis }, null, 2));
      },
      (err: unknown) => {
        logger.error('joining failed', { err });
        hooks.onFatal?.((err as Error).message);
      },
    );
  } else {
    const settings = bootstrapping ? bootstrapSettings(opts.archive, opts.dataDir, identity.peerId) : null;
    void keepRegistered(node, adminToken, logger, background.signal)
      .then(() => (settings ? proposeSettings(node, settings, logger, background.signal) : undefined))
      .then(() => (bootstrapping ? proposeClusterSettings(node, opts.maxLeases, logger, background.signal) : undefined))
      .then(() => (bootstrapping ? proposeLevel(node, logger, background.signal) : undefined))
      .then(() => removeFormer(node, formerMembers, logger, background.signal));
  }

  let stopping: Promise<void> | null = null;
  return {
    node,
    logger,
    banner: () =>
      [
        `pangea node ${identity.peerId}`,
        `  cluster  ${cluster.clusterId}`,
        `  http     ${http}`,
        ...transport.addresses().map((a) => `  p2p      ${a}`),
        `  role     ${joining !== null ? 'joining as a learner' : node.config.voters.includes(identity.peerId) ? 'voter' : 'learner'}`,
        `  data     ${opts.dataDir}`,
        `  archive  ${archiveLine(stores.state.archiveSettings() ?? (bootstrapping ? bootstrapSettings(opts.archive, opts.dataDir, identity.peerId) : null), identity.peerId)}`,
      ].join('\n'),
    stop() {
      // Clients first (no write is taken while the rest stops), then every part in reverse;
      // a second call waits for the first.
      stopping ??= api.close().then(() => parts.stopAll((err) => logger.warn('stopping a part of the node failed', { err })));
      return stopping;
    },
  };
}

/** The banner's archive line: where, and whether it is the one-node default. */
function archiveLine(s: ArchiveSettings | null, self: string): string {
  if (s === null) return 'not recorded yet (the cluster records its settings when it starts)';
  const where = `${redactUrl(s.url)}, segments of ${s.segmentEntries} entries`;
  if (s.local === undefined) return where;
  const whose = s.local === self ? 'this data dir' : `node ${s.local}'s data dir`;
  return `${where} (the default, in ${whose}: for a one-node cluster only; a cluster of several nodes needs --archive-url of a store they share)`;
}

/** A listener that cannot start names the setting and the address (a port in use). */
async function listening<T>(flag: string, address: string, start: Promise<T>): Promise<T> {
  try {
    return await start;
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const why = e.code === 'EADDRINUSE' || /EADDRINUSE|address already in use/i.test(e.message) ? 'the address is in use' : e.code === 'EADDRNOTAVAIL' ? 'no interface has that address' : (e.message.split('\n')[0] ?? String(err));
    throw new Error(`${flag} ${address}: ${why}`, { cause: err });
  }
}

/** The node as the archiver sees it. */
function archiveHost(node: PangeaNode, stores: Stores, privateKey: PrivateKey): ArchiveHost {
  const { state, log } = stores;
  const off = (): string | null => archiveOffReason(state.archiveSettings(), node.cluster().members.map((m) => m.peerId));
  return {
    cluster: node.clusterId,
    peerId: node.peerId,
    privateKey,
    leaderBallot: () => node.leaderBallot,
    commitIndex: () => node.commitIndex,
    // What the pruner may compact through: applied and committed (Driver.compact checks it).
    appliedIndex: () => state.committedPoint().index,
    members: () => [...new Set([...state.votersEver(), ...node.cluster().members.map((m) => m.peerId)])],
    voters: () => node.config.voters,
    settings: () => {
      const s = state.archiveSettings();
      return s !== null && off() === null ? s : null;
    },
    archiveOff: () => off(),
    segments: (after, limit) => state.segments(after, limit),
    readSlots: (from, to) => log.readSlots(from, to, state.applied().point.slot),
    compactedPoint: () => node.compactedPoint,
    compact: (point) => node.compact(point),
    chainAt: (index) => state.chainAt(index),
    journal: (after, through) => (state.journalFloor() <= after ? state.effectRows(after, through) : null),
    snapshot: () => state.snapshot(),
  };
}

/** The bootstrap node (and any restarted voter) records its own addresses in the log. */
async function keepRegistered(node: PangeaNode, token: string | null, logger: Logger, signal: AbortSignal): Promise<void> {
  while (!signal.aborted) {
    try {
      if (await node.registerSelf()) return;
      // A follower (restarted on other ports, say) asks the leader, as a joiner does.
      const view = node.cluster();
      const leader = view.members.find((m) => m.peerId === view.leader);
      const self = view.members.find((m) => m.peerId === node.peerId);
      if (leader !== undefined && leader.http !== '' && self !== undefined) {
        await postMember(leader.http, { peerId: node.peerId, http: node.http, p2p: view.self.p2p, role: self.role }, token);
        // Listed once the change applies here; the loop checks again, not too often.
        await sleep(1_000, signal);
      }
    } catch (err) {
      if (err instanceof JoinRefused) {
        logger.warn(`the leader refused to record this node’s new addresses: ${err.message}`);
        return;
      }
      logger.debug('registering this node’s addresses failed; retrying', { err });
    }
    await sleep(200, signal);
  }
}

/**
 * After --force-new-cluster the former members are removed through the log as well: the
 * forced configuration is not in the log, so a node that joins later and replays it must
 * see them go to reach the same configuration.
 */
async function removeFormer(node: PangeaNode, former: readonly string[], logger: Logger, signal: AbortSignal): Promise<void> {
  for (const peerId of former) {
    // Unchecked: the forced configuration already leaves it out here; the log entry is for
    // the nodes that replay the log (found by review).
    await retry(async () => void (await node.removeMember(peerId, true)), `removing former member ${peerId}`, logger, signal);
  }
}

/** Adds this node as a learner, waits until it has caught up, then asks to be a voter. */
async function joinCluster(url: string, node: PangeaNode, token: string | null, logger: Logger, signal: AbortSignal): Promise<boolean> {
  const view = node.cluster();
  const body = { peerId: node.peerId, http: node.http, p2p: view.self.p2p, role: 'learner' };
  await retry(() => postMember(url, body, token), 'join', logger, signal);
  logger.info('added to the cluster as a learner; catching up', { via: url });
  while (!signal.aborted && !(node.isReady() && node.cluster().members.some((m) => m.peerId === node.peerId))) await sleep(200, signal);
  if (signal.aborted) return false;
  await retry(() => postMember(url, { ...body, role: 'voter' }, token), 'promotion', logger, signal);
  if (signal.aborted) return false;
  logger.info('caught up and promoted to voter');
  return true;
}

async function readClusterFile(path: string): Promise<ClusterFile> {
  let file: Partial<ClusterFile>;
  try {
    file = JSON.parse(await readFile(path, 'utf8')) as Partial<ClusterFile>;
  } catch (err) {
    throw new Error(`cannot read ${path}: ${(err as Error).message}; copy it from another node of this cluster (every node's is the same but for "joining")`);
  }
  if (typeof file.clusterId !== 'string' || typeof file.genesis !== 'object' || file.genesis === null) throw new Error(`${path} names no clusterId and genesis`);
  checkDataFormat(file, path);
  return file as ClusterFile;
}

async function postMember(url: string, body: object, token: string | null): Promise<void> {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(new URL('/v1/cluster/members', url), { method: 'POST', headers, body: JSON.stringify(body), signal: AbortSignal.timeout(15_000) });
  if (res.status === 410) {
    // Removed from the cluster (a joiner removed before it finished, restarted): for good.
    throw new JoinRefused(`--join ${url} refused this node (410): this peer was removed from the cluster and does not come back; move its data dir away and join with a fresh --data-dir`);
  }
  if (res.status === 401 || res.status === 403) {
    throw new JoinRefused(`--join ${url} refused this node (${res.status}): ${token ? 'the token in --admin-token-file is not the cluster\'s admin token' : 'the cluster needs its admin token: give it with --admin-token-file'}`);
  }
  if (!res.ok) throw new Error(`${url} answered ${res.status}: ${await res.text()}`);
}

/** A join the cluster refuses for good (a missing or wrong admin token, a removed peer):
 *  retrying cannot help. */
class JoinRefused extends Error {}

/**
 * A data dir that holds a member resumes it; a `--join` given too must name a member of the
 * same cluster (a script pointed at the wrong cluster, or a data dir of another, is an error).
 * When that member cannot be reached the node resumes: its cluster may be down.
 */
async function checkJoinResumed(url: string, clusterId: string, dataDir: string, logger: Logger): Promise<void> {
  let view: JoinView;
  try {
    view = await fetchCluster(url);
  } catch (err) {
    logger.warn('existing data dir: resuming; --join could not be checked', { join: url, err });
    return;
  }
  if (view.clusterId !== clusterId) {
    throw new Error(`--join ${url} is a member of cluster ${view.clusterId}, but ${dataDir} holds a node of cluster ${clusterId}: give a member of that cluster, or another data dir to join ${view.clusterId}`);
  }
  logger.info('existing data dir: resuming (already a member; --join is not needed)', { join: url });
}

/** What a joining node learns from the member it joins through. */
interface JoinView extends ClusterFile {
  readonly archive: ArchiveSettings | null;
  /** That member's peer id. */
  readonly sponsor: string | null;
}

async function fetchCluster(url: string): Promise<JoinView> {
  const res = await fetch(new URL('/v1/cluster', url), { signal: AbortSignal.timeout(10_000) });
  if (!res.ok) throw new Error(`cannot join through ${url}: GET /v1/cluster answered ${res.status}`);
  const view = (await res.json()) as { clusterId?: unknown; genesis?: unknown; archive?: unknown; self?: { peerId?: unknown }; applyLevel?: unknown };
  if (typeof view.clusterId !== 'string' || typeof view.genesis !== 'object' || view.genesis === null) {
    throw new Error(`cannot join through ${url}: its /v1/cluster has no clusterId and genesis`);
  }
  // A build that cannot apply the cluster's log would halt at the first entry past its level
  // (state/kv.ts ApplyHalt): say so before joining.
  const level = typeof view.applyLevel === 'number' ? view.applyLevel : APPLY_LEVEL_DEFAULT;
  if (level > APPLY_LEVEL_MAX || level < APPLY_LEVEL_MIN) {
    throw new Error(`cannot join through ${url}: cluster ${view.clusterId} is at apply level ${level}, and this build (pangea ${PANGEA_VERSION}) applies levels ${APPLY_LEVEL_MIN} to ${APPLY_LEVEL_MAX}: run the cluster's build`);
  }
  const sponsor = typeof view.self?.peerId === 'string' ? view.self.peerId : null;
  return { clusterId: view.clusterId, genesis: view.genesis as Config, archive: (view.archive ?? null) as ArchiveSettings | null, sponsor };
}

/**
 * A new member restores the cluster's latest archived snapshot before it starts, so it
 * catches up from peers only what came after (their hot logs never end before it).
 */
async function restoreForJoin(view: JoinView, key: CesKey, stores: Stores, checkpoints: ReadonlyMap<number, Uint8Array>, logger: Logger): Promise<void> {
  const store = await openObjectStore(view.archive!.url);
  try {
    // Any valid signature counts here: this node does not know the cluster's past voters
    // yet, and the archive key authenticates every object it restores.
    const manifest = await bestManifest({ store, key, cluster: view.clusterId });
    const snap = manifest === null ? null : snapshotAtOrBelow(manifest);
    if (snap === null) {
      logger.info('the archive has no snapshot yet: catching up from peers alone', { url: store.url });
      return;
    }
    logger.info('restoring the latest archived snapshot', { url: store.url, index: snap.point.index });
    const started = Date.now();
    const point = await restoreSnapshotInto({ store, key, cluster: view.clusterId, checkpoints }, snap, stores);
    logger.info('restored from the archive; catching up the rest from peers', { index: point.index, ms: Date.now() - started });
  } finally {
    await store.close();
  }
}

/**
 * A new cluster from another's archive: its state at the archive's last index (or the one
 * asked for), governed by this node alone, archiving to its own store from a base snapshot
 * of that state.
 */
async function restoreNewCluster(
  opts: ServeOptions,
  snapshotFile: SnapshotFileInfo & { path: string } | null,
  clusterId: string,
  identity: { peerId: string; privateKey: PrivateKey },
  key: CesKey,
  stores: Stores,
  logger: Logger,
): Promise<void> {
  if (snapshotFile !== null) {
    logger.info('restoring a snapshot file', { path: snapshotFile.path, index: snapshotFile.applied.point.index, sha256: snapshotFile.sha256 });
    const header = await stores.state.restore(await snapshotFileFrames(snapshotFile.path));
    if (Buffer.compare(header.applied.chain, snapshotFile.applied.chain) !== 0) throw new Error(`${snapshotFile.path} changed while it was restored`);
  } else {
    const from = await openObjectStore(opts.archive.restoreFrom!);
    try {
      await restoreFromArchive({ store: from, key, cluster: null, checkpoints: opts.archive.checkpoints }, stores, DEFAULTS.alpha, opts.archive.restoreIndex, logger);
    } finally {
      await from.close();
    }
  }
  stores.state.rebase({ voters: [identity.peerId], learners: [] });
  const point = stores.state.applied().point;
  await stores.log.startAfter(point);
  const settings = bootstrapSettings(opts.archive, opts.dataDir, identity.peerId);
  if (snapshotFile === null && settings.url === opts.archive.restoreFrom) throw new Error('a restored cluster archives to a store of its own: give --archive-url another URL');
  const to = await openObjectStore(settings.url);
  try {
    await publishBaseSnapshot(to, key, clusterId, identity.privateKey, identity.peerId, resolveParams(settings.ces), stores.state.snapshot(), join(opts.dataDir, STAGING_DIR));
  } finally {
    await to.close();
  }
  logger.info('this node now forms a new cluster from the restored state', { clusterId, index: point.index });
}

/**
 * The snapshot file `--restore-from` names, checked whole, or null when it names an archive
 * (an s3:// URL, or a file:// URL of a directory). Throws, naming the flag, for a path that is
 * not a whole snapshot file, or with --restore-index (a file holds the state at one index).
 */
async function restoreSnapshotFile(from: string, restoreIndex: number | undefined): Promise<(SnapshotFileInfo & { path: string }) | null> {
  let path = from;
  if (isUrl(from)) {
    if (!from.toLowerCase().startsWith('file:')) return null;
    path = fileURLToPath(from);
    if (!(await looksLikeSnapshotFile(path))) return null;
  }
  let info: SnapshotFileInfo;
  try {
    info = await checkSnapshotFile(path);
  } catch (err) {
    throw new Error(`--restore-from: ${(err as Error).message}`);
  }
  if (restoreIndex !== undefined && restoreIndex !== info.applied.point.index) {
    throw new Error(`--restore-index ${restoreIndex}: ${path} holds the state at index ${info.applied.point.index} only (--restore-index picks a point in an archive)`);
  }
  return { ...info, path };
}

/** The node that bootstraps a cluster records its archive settings in the log. */
async function proposeSettings(node: PangeaNode, settings: ArchiveSettings, logger: Logger, signal: AbortSignal): Promise<void> {
  await retry(async () => {
    if (node.cluster().archive !== null) return;
    await node.proposeSettings(settings);
  }, 'recording the archive settings', logger, signal);
}

/** The node that bootstraps a cluster records the limits apply checks (`--max-leases`). */
async function proposeClusterSettings(node: PangeaNode, maxLeases: number, logger: Logger, signal: AbortSignal): Promise<void> {
  await retry(async () => {
    await node.proposeClusterSettings({ sessionTtlMs: SESSION_TTL_MS_DEFAULT, maxLeases });
  }, 'recording the cluster settings', logger, signal);
}

/** The node that bootstraps a cluster starts it at its build's newest apply level (a log
 *  that never sets one is at APPLY_LEVEL_DEFAULT). */
async function proposeLevel(node: PangeaNode, logger: Logger, signal: AbortSignal): Promise<void> {
  if ((APPLY_LEVEL_MAX as number) === APPLY_LEVEL_DEFAULT) return;
  await retry(async () => {
    await node.raiseLevel(APPLY_LEVEL_MAX);
  }, 'recording the apply level', logger, signal);
}

async function retry(fn: () => Promise<void>, what: string, logger: Logger, signal: AbortSignal): Promise<void> {
  for (let attempt = 1; !signal.aborted; attempt++) {
    try {
      await fn();
      return;
    } catch (err) {
      if (err instanceof JoinRefused) throw err;
      logger.warn(`${what} failed; retrying`, { attempt, err });
      await sleep(Math.min(2000, 100 * attempt), signal);
    }
  }
}


function isLoopback(host: string): boolean {
  return host === 'localhost' || host.startsWith('127.') || host === '::1';
}

function formatHost(host: string): string {
  return host.includes(':') ? `[${host}]` : host;
}
