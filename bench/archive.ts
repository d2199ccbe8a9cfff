/**
 * `npm run bench -- archive [--entries N] [--seconds N] [--rounds N] [--batch N]
 *  [--snapshot-segments N] [--only archive|restore|cluster]`: the archive's three figures.
 *
 * 1. archive: archive throughput at module level. A real LMDB log and state of `--entries`
 *    puts (default 200,000; ~100-byte pseudo-random alphanumeric values over KEYS_COUNT keys,
 *    `--batch` commands a slot, default 50) is built as a node builds it: the cluster's
 *    archive settings first (segment-entries SEGMENT_ENTRIES, one snapshot only, at the first
 *    boundary), each slot written to the log store and applied through
 *    `LmdbStateStore.apply`. Then an Archiver over those stores (delay 0, every segment in
 *    one run) moves every finished segment into a file:// store in a temp dir: entries/s and
 *    MB/s of raw log bytes (the segments' plaintext). Then the same against s3rver, run in a
 *    child process (as a remote S3 is not on the archiving host's CPU).
 * 2. restore: `restoreFromArchive` from the file:// archive of step 1 into empty stores: the
 *    snapshot at the first boundary, then every later segment replayed. Reports entries/s of
 *    the segment replay (target RESTORE_TARGET) and the whole restore's time; the restored
 *    chain value is checked against the source's.
 * 3. cluster: a real 3-node cluster (`bin/run.js serve`, as bench/cluster.ts) started afresh
 *    for each run, archiving off (`--archive-interval 0 --prune-interval 0`) and on (ARCHIVE_ON),
 *    alternating off, on, off, on (`--rounds`, default 2), each under the same closed-loop
 *    put load (CONCURRENCY clients on KEYS_COUNT pre-populated keys, `--seconds` measured,
 *    default 10, after a warm-up that takes the log past WARMUP_INDEX so archiving is under
 *    way). Reports ops/s, the on/off ratio of the means (target RATIO_TARGET), the nodes'
 *    CPU per acknowledged put (/proc: a figure that shared cores disturb less than ops/s),
 *    and how far the leader's archived index (`pangea_archive_last_index`) trails its
 *    commit index (`pangea_commit_index`), read every SAMPLE_MS during the window.
 *
 * Ends with one JSON line. Every process started here is killed, every store closed and the
 * temp dirs removed, on success, failure, SIGINT or SIGTERM.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import { cesKey, paramsDefault, writeNewKeyFile, type CesKey } from '../src/ces/index.js';
import { DEFAULTS, type Entry, type PersistOp, type StoredSlot } from '../src/consensus/index.js';
import { openStores, type Stores } from '../src/stores.js';
import { silentLogger, type Logger } from '../src/logger.js';
import { encodeAppCommand, type ArchiveSettings } from '../src/state/command.js';
import type { SegmentBound } from '../src/state/segments.js';
import { Archiver, type ArchiveHost } from '../src/archive/archiver.js';
import { openObjectStore } from '../src/archive/open-store.js';
import { bestManifest, restoreFromArchive } from '../src/archive/restore.js';
import type { ObjectStore } from '../src/archive/store.js';
import { clusterView, isReady, killAll, removeDir, startNode, tempDir, waitFor, type TestNode } from '../test/cluster/harness.js';

const ENTRIES_DEFAULT = 200_000;
const SEGMENT_ENTRIES = 10_000;
const SLOT_BATCH_DEFAULT = 50;
const KEYS_COUNT = 10_000;
const VALUE_BYTES = 100;
/** Slots written and applied per call while building the log. */
const BUILD_SLOTS_PER_APPLY = 20;
const RESTORE_TARGET = 50_000;
const RATIO_TARGET = 0.85;

const CONCURRENCY = 64;
const WARMUP_S = 2;
const PREPOPULATE_BATCH = 100;
const WARMUP_MAX_S = 120;
/** The leader's /metrics is read this often during the window (the same in both modes). */
const SAMPLE_MS = 500;
const SECONDS_DEFAULT = 10;
const ROUNDS_DEFAULT = 3;
const REQUEST_TIMEOUT_MS = 10_000;
const DRAIN_MS_MAX = REQUEST_TIMEOUT_MS + 2_000;
const STOP_MS_MAX = 10_000;
/** USER_HZ of /proc/<pid>/stat (100 on Linux). */
const CLOCK_TICKS = 100;
/** Archiving on: the node-local settings under test (segment-entries is the cluster's). */
const ON = { segmentEntries: 2000, delayEntries: 500, delayS: 1, intervalMs: 500, pruneS: 5, hotRetention: 5000 };
const ARCHIVE_ON = [
  '--archive-delay-entries', String(ON.delayEntries), '--archive-delay', `${ON.delayS}s`, '--archive-interval', `${ON.intervalMs}ms`,
  '--prune-interval', `${ON.pruneS}s`, '--hot-retention', String(ON.hotRetention),
];
/** The commit index warm-up reaches: two segments and the delay. */
const WARMUP_INDEX = 2 * ON.segmentEntries + ON.delayEntries;
const ARCHIVE_OFF = ['--archive-interval', '0', '--prune-interval', '0'];

const round = (x: number, digits: number): number => Math.round(x * 10 ** digits) / 10 ** digits;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const mb = (bytes: number): number => bytes / 1e6;

// ---- arguments ----------------------------------------------------------------------------

type Part = 'archive' | 'restore' | 'cluster';

interface Args {
  entries: number;
  seconds: number;
  rounds: number;
  batch: number;
  only: Part | null;
  /** Cluster runs: node 1's --snapshot-segments (null: the serve default). */
  snapshotSegments: number | null;
}

const USAGE = 'usage: npm run bench -- archive [--entries N] [--seconds N] [--rounds N] [--batch N] [--snapshot-segments N] [--only archive|restore|cluster]';

function parseArgs(args: string[]): Args {
  const out: Args = { entries: ENTRIES_DEFAULT, seconds: SECONDS_DEFAULT, rounds: ROUNDS_DEFAULT, batch: SLOT_BATCH_DEFAULT, only: null, snapshotSegments: null };
  const int = (v: string | undefined, min: number): number | null => (v !== undefined && Number.isSafeInteger(Number(v)) && Number(v) >= min ? Number(v) : null);
  for (let i = 0; i < args.length; i += 2) {
    const a = args[i];
    const v = args[i + 1];
    if (a === '--entries' && int(v, SEGMENT_ENTRIES * 2) !== null) out.entries = Number(v);
    else if (a === '--seconds' && v && Number(v) > 0) out.seconds = Number(v);
    else if (a === '--rounds' && int(v, 1) !== null) out.rounds = Number(v);
    else if (a === '--batch' && int(v, 1) !== null) out.batch = Number(v);
    else if (a === '--only' && (v === 'archive' || v === 'restore' || v === 'cluster')) out.only = v;
    else if (a === '--snapshot-segments' && int(v, 1) !== null) out.snapshotSegments = Number(v);
    else throw new Error(`${USAGE} (bad: ${a} ${v ?? ''}; --entries is at least ${SEGMENT_ENTRIES * 2})`);
  }
  return out;
}

// ---- cleanup: everything started here ------------------------------------------------------

const children = new Set<ChildProcess>();
process.on('exit', () => {
  for (const p of children) p.kill('SIGKILL');
});

async function stopChild(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return;
  const exited = new Promise((r) => p.once('exit', r));
  p.kill('SIGTERM');
  await Promise.race([exited, sleep(STOP_MS_MAX).then(() => p.kill('SIGKILL'))]);
  await exited;
}

/** Closers run (in reverse order) at the end, whatever happened. */
class Resources {
  private readonly closers: (() => Promise<void> | void)[] = [];
  add(close: () => Promise<void> | void): void {
    this.closers.push(close);
  }
  async closeAll(): Promise<void> {
    while (this.closers.length > 0) {
      try {
        await this.closers.pop()!();
      } catch (err) {
        console.error(`cleanup: ${(err as Error).message}`);
      }
    }
  }
}

// ---- part 1: a real log, and the archiver over it -------------------------------------------

/** A store that sums the wall time of its calls (concurrent gets overlap: a sum, not a span). */
class TimedStore implements ObjectStore {
  readonly ms = { put: 0, get: 0, other: 0 };
  readonly count = { put: 0, get: 0 };
  constructor(private readonly inner: ObjectStore) {}
  get url(): string {
    return this.inner.url;
  }
  private async time<T>(kind: 'put' | 'get' | 'other', f: () => Promise<T>): Promise<T> {
    const t0 = performance.now();
    try {
      return await f();
    } finally {
      this.ms[kind] += performance.now() - t0;
      if (kind !== 'other') this.count[kind]++;
    }
  }
  putIfAbsent(key: string, body: Uint8Array): Promise<'created' | 'exists'> {
    return this.time('put', () => this.inner.putIfAbsent(key, body));
  }
  get(key: string): Promise<Uint8Array> {
    return this.time('get', () => this.inner.get(key));
  }
  head(key: string): Promise<{ size: number } | null> {
    return this.time('other', () => this.inner.head(key));
  }
  list(prefix: string): Promise<{ key: string; size: number }[]> {
    return this.time('other', () => this.inner.list(prefix));
  }
  delete(key: string): Promise<void> {
    return this.inner.delete(key);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

/** xorshift32: the same values every run. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return x >>> 0;
  };
}

const ALNUM = Buffer.from('ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789');

interface Source {
  readonly stores: Stores;
  readonly host: ArchiveHost & { readSlotsMs: number; setCommit(index: number): void };
  readonly key: CesKey;
  /** Every finished segment, in order. */
  readonly bounds: SegmentBound[];
  lastIndex: number;
  /** Bytes of the commands written to the log. */
  logBytes: number;
  applyMs: number;
}

/** Empty stores of a one-voter cluster this process leads, and the archive's view of them. */
async function openSource(dir: string): Promise<Source> {
  const privateKey = await generateKeyPair('Ed25519');
  const peerId = peerIdFromPrivateKey(privateKey).toString();
  const epochs = [{ fromSlot: 1, config: { voters: [peerId], learners: [] } }];
  const stores = openStores(join(dir, 'data'), { genesis: { slot: 0, index: 0, epochs } });
  const ballot = { round: 1, leader: peerId };
  let commit = 0;
  const host: Source['host'] = {
    cluster: `bench-${process.pid}-${Date.now().toString(36)}`,
    peerId,
    privateKey,
    readSlotsMs: 0,
    setCommit: (index) => void (commit = index),
    leaderBallot: () => ballot,
    commitIndex: () => commit,
    appliedIndex: () => stores.state.applied().point.index,
    members: () => [peerId],
    voters: () => [peerId],
    settings: () => stores.state.archiveSettings(),
    segments: (after, limit) => stores.state.segments(after, limit),
    readSlots(from, to) {
      const t0 = performance.now();
      const out = stores.log.readSlots(from, to);
      this.readSlotsMs += performance.now() - t0;
      return out;
    },
    compactedPoint: () => ({ slot: 0, index: 0, epochs }),
    compact: () => undefined,
    chainAt: (index) => stores.state.chainAt(index),
    snapshot: () => stores.state.snapshot(),
  };
  return { stores, host, key: cesKey(randomBytes(32)), bounds: [], lastIndex: 0, logBytes: 0, applyMs: 0 };
}

/**
 * Fills the stores as the leader would: the cluster's archive settings at slot 1, then
 * slots of `batch` puts, each written to the log and then applied; `onSegment` at each
 * boundary, as the node calls the archiver.
 */
async function fillSource(src: Source, archiveUrl: string, entries: number, batch: number, onSegment: (b: SegmentBound) => void): Promise<void> {
  const { stores, host } = src;
  const ballot = host.leaderBallot()!;
  const epochs = stores.state.applied().point.epochs;
  const settings: ArchiveSettings = {
    url: archiveUrl,
    segmentEntries: SEGMENT_ENTRIES,
    // One snapshot, at the first boundary: the restore replays the rest from segments.
    snapshotSegments: 1_000_000,
    ces: { ...paramsDefault },
  };
  let time = 1_700_000_000_000;
  let seq = 0;
  const next = rng(0x9e3779b9);
  const value = Buffer.alloc(VALUE_BYTES);
  const put = (i: number): Uint8Array => {
    for (let j = 0; j < VALUE_BYTES; j++) value[j] = ALNUM[next() % ALNUM.length]!;
    const key = Buffer.from(`k${String(i % KEYS_COUNT).padStart(5, '0')}`);
    return encodeAppCommand({ op: { t: 'put', key, value: Buffer.from(value) }, time: time++, proposal: `${host.peerId}:${++seq}` });
  };
  const onBound = (b: SegmentBound): void => {
    src.bounds.push(b);
    onSegment(b);
  };
  let slot = 0;
  let index = 0;
  let made = 0;
  while (made < entries) {
    const ops: PersistOp[] = [];
    const applied: Entry[] = [];
    for (let s = 0; s < BUILD_SLOTS_PER_APPLY && made < entries; s++) {
      const cmds =
        slot === 0
          ? [encodeAppCommand({ op: { t: 'archive_settings', settings }, time: time++, proposal: `${host.peerId}:${++seq}` })]
          : Array.from({ length: Math.min(batch, entries - made) }, () => put(made++));
      const stored: StoredSlot = { slot: ++slot, ballot, batch: cmds.map((data) => ({ kind: 'app', data })), chosen: true };
      for (const c of cmds) src.logBytes += c.byteLength;
      ops.push({ kind: 'slot', slot: stored });
      applied.push({ slot, index: index + 1, batch: stored.batch, epochs });
      index += cmds.length;
    }
    ops.push({ kind: 'commit', slot });
    await stores.log.write(ops);
    host.setCommit(index);
    const t0 = performance.now();
    stores.state.apply(applied, onBound);
    src.applyMs += performance.now() - t0;
  }
  src.lastIndex = index;
}

interface ArchiveFigures {
  entries: number;
  segments: number;
  rawBytes: number;
  shardBytes: number;
  ms: number;
  cpuMs: number;
  store: TimedStore;
  readSlotsMs: number;
}

/** Archives every finished segment (and the snapshot staged with the first, if any). */
async function archiveAll(archiver: Archiver, store: TimedStore, src: Source): Promise<ArchiveFigures> {
  const last = src.bounds.at(-1)!.last.index;
  src.host.readSlotsMs = 0;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  while (archiver.stats.archivedLastIndex < last) {
    const before = archiver.stats.archivedLastIndex;
    const errors = archiver.stats.archiveErrors;
    await archiver.archiveOnce();
    if (archiver.stats.archiveErrors > errors) throw new Error(`archiving failed: ${archiver.stats.archiveLastError}`);
    if (archiver.stats.archivedLastIndex === before) throw new Error(`archiving made no progress at index ${before}`);
  }
  const ms = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  const m = archiver.currentManifest!;
  return {
    entries: m.segments.at(-1)!.last.index - m.segments[0]!.first.index + 1,
    segments: m.segments.length,
    rawBytes: m.segments.reduce((n, s) => n + s.rawBytes, 0),
    shardBytes: archiver.stats.archivedBytes,
    ms,
    cpuMs: (cpu.user + cpu.system) / 1000,
    store,
    readSlotsMs: src.host.readSlotsMs,
  };
}

function printArchive(name: string, f: ArchiveFigures): { eps: number; mbps: number } {
  const s = f.ms / 1000;
  const eps = Math.round(f.entries / s);
  const mbps = round(mb(f.rawBytes) / s, 1);
  console.log(
    `archive to ${name}: ${f.entries} entries in ${f.segments} segments, ${round(mb(f.rawBytes), 1)} MB raw -> ${round(mb(f.shardBytes), 1)} MB of shards, ` +
      `${round(s, 2)} s: ${eps} entries/s, ${mbps} MB/s (raw); CPU of this process ${Math.round((100 * f.cpuMs) / f.ms)}% of the wall time`,
  );
  console.log(
    `  per segment: ${round(f.ms / f.segments, 1)} ms; store puts ${f.store.count.put} (${round(f.store.ms.put / f.segments, 1)} ms/segment), ` +
      `gets ${f.store.count.get} (${round(f.store.ms.get / f.segments, 1)} ms/segment, summed over concurrent gets), ` +
      `log reads ${round(f.readSlotsMs / f.segments, 1)} ms/segment`,
  );
  return { eps, mbps };
}

/** s3rver in a child process; resolves with its s3:// URL for `prefix`. */
async function startS3Child(dir: string, prefix: string, resources: Resources): Promise<string> {
  const module = pathToFileURL(fileURLToPath(new URL('../test/archive/s3rver.js', import.meta.url))).href;
  const src =
    `const { startS3 } = await import(${JSON.stringify(module)});` +
    `const s3 = await startS3(${JSON.stringify(dir)});` +
    `process.stdout.write(JSON.stringify({ url: s3.url(${JSON.stringify(prefix)}) }) + '\\n');` +
    `process.on('SIGTERM', () => s3.close().finally(() => process.exit(0)));`;
  const p = spawn(process.execPath, ['--input-type=module', '-e', src], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(p);
  p.once('exit', () => children.delete(p));
  resources.add(() => stopChild(p));
  let out = '';
  let err = '';
  p.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  p.stderr!.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-4000)));
  const line = await waitFor('s3rver to start', () => {
    if (p.exitCode !== null) throw new Error(`node exited: s3rver exited with ${p.exitCode}: ${err}`);
    return out.includes('\n') ? out.split('\n')[0]! : null;
  }, 30_000);
  // The AWS SDK in this process finds s3rver's credentials in the environment.
  process.env.AWS_ACCESS_KEY_ID = 'S3RVER';
  process.env.AWS_SECRET_ACCESS_KEY = 'S3RVER';
  delete process.env.AWS_SESSION_TOKEN;
  return (JSON.parse(line) as { url: string }).url;
}

function newArchiver(src: Source, store: ObjectStore, stagingDir: string, logger: Logger): Archiver {
  return new Archiver(src.host, store, src.key, { delayEntries: 0, delayMs: 0, intervalMs: 1, pruneIntervalMs: 0, hotRetention: 0, stagingDir, segmentsPerRun: 1_000_000 }, logger);
}

/** Warnings of the archive, printed when something fails. */
function recordingLogger(lines: string[]): Logger {
  const rec = (level: string) => (msg: string, fields?: Record<string, unknown>) => {
    lines.push(`${level} ${msg} ${JSON.stringify(fields ?? {}, (_k, v: unknown) => (v instanceof Error ? v.message : v))}`);
  };
  return { ...silentLogger, warn: rec('warn'), error: rec('error') };
}

function dirBytes(path: string): number {
  let n = 0;
  for (const e of readdirSync(path, { withFileTypes: true })) {
    const p = join(path, e.name);
    n += e.isDirectory() ? dirBytes(p) : statSync(p).size;
  }
  return n;
}

// ---- part 2: restore -------------------------------------------------------------------------

interface RestoreFigures {
  replayedEntries: number;
  replayMs: number;
  snapshotIndex: number;
  snapshotMs: number;
  totalMs: number;
  eps: number;
}

async function restoreBench(src: Source, archiveUrl: string, dir: string, resources: Resources): Promise<RestoreFigures> {
  const store = await openObjectStore(archiveUrl);
  resources.add(() => store.close());
  const manifest = await bestManifest({ store, key: src.key, cluster: null });
  const snapIndex = manifest?.snapshots[0]?.point.index ?? 0;
  const stores = openStores(join(dir, 'restored'));
  resources.add(() => stores.close());
  let snapshotStart = 0;
  let replayMs = 0;
  const logger: Logger = {
    ...silentLogger,
    info(msg, fields) {
      if (msg === 'restoring a snapshot from the archive') snapshotStart = performance.now();
      if (msg === 'restored from the archive') replayMs = Number((fields as { ms: number }).ms);
    },
  };
  const t0 = performance.now();
  const point = await restoreFromArchive({ store, key: src.key, cluster: null }, stores, DEFAULTS.alpha, undefined, logger);
  const totalMs = performance.now() - t0;
  // The restored state is the source's at that index: the same hash chain.
  const want = src.stores.state.chainAt(point.index);
  const got = stores.state.applied().chain;
  if (want === undefined || Buffer.compare(want, got) !== 0) throw new Error(`restored chain at index ${point.index} differs from the source's`);
  const replayedEntries = point.index - snapIndex;
  // The logger's `ms` is whole milliseconds (Date.now); below ~100 ms, use the span instead.
  if (replayMs < 100) replayMs = performance.now() - t0 - (snapshotStart - t0);
  const snapshotMs = totalMs - replayMs - (snapshotStart - t0);
  return { replayedEntries, replayMs, snapshotIndex: snapIndex, snapshotMs, totalMs, eps: Math.round(replayedEntries / (replayMs / 1000)) };
}

// ---- part 3: the cluster ------------------------------------------------------------------

interface Client {
  send(origin: string, method: 'PUT' | 'POST', path: string, body: Buffer): Promise<number>;
  close(): void;
}

function httpClient(): Client {
  const agent = new Agent({ keepAlive: true, maxSockets: Infinity, maxFreeSockets: 1024 });
  return {
    send(origin, method, path, body) {
      const url = new URL(origin);
      return new Promise<number>((done) => {
        const req = request({ agent, host: url.hostname, port: url.port, method, path, headers: { 'content-length': body.length, ...(method === 'POST' ? { 'content-type': 'application/json' } : {}) } }, (res) => {
          const status = res.statusCode ?? 0;
          res.on('error', () => done(0));
          res.on('end', () => done(status));
          res.resume();
        });
        req.setTimeout(REQUEST_TIMEOUT_MS, () => req.destroy(new Error('timeout')));
        req.on('error', () => done(0));
        req.end(body);
      });
    },
    close: () => agent.destroy(),
  };
}

const keyName = (i: number): string => `k${String(i).padStart(5, '0')}`;
const keyPath = (i: number): string => `/v1/kv/${keyName(i)}`;
const PUT_VALUE = Buffer.from('v'.repeat(VALUE_BYTES));

interface Sample {
  t: number;
  commit: number;
  archived: number;
}

interface ClusterRun {
  mode: 'off' | 'on';
  ops: number;
  /** CPU µs per acknowledged put: all three nodes (user + system, every thread), their
   *  system part, the leader, the leader's main thread. */
  cpuUsPerOp: number;
  sysUsPerOp: number;
  leaderCpuUsPerOp: number;
  leaderMainUsPerOp: number;
  cpuPct: number;
  errors: number;
  samples: Sample[];
  archiveErrors: number;
  segmentsArchived: number;
  hotFirstIndex: number;
  leaderChanges: number;
  startS: number;
  prepopulateS: number;
  warmupS: number;
}

interface Cpu {
  user: number;
  sys: number;
  /** The main (JavaScript) thread's user + system. */
  main: number;
}

/** CPU seconds of a process so far (Linux /proc); NaN where unreadable. */
function cpuOf(pid: number): Cpu {
  const read = (path: string): [number, number] => {
    try {
      const stat = readFileSync(path, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      return [Number(f[11]) / CLOCK_TICKS, Number(f[12]) / CLOCK_TICKS];
    } catch {
      return [NaN, NaN];
    }
  };
  const [user, sys] = read(`/proc/${pid}/stat`);
  const [mu, ms] = read(`/proc/${pid}/task/${pid}/stat`);
  return { user, sys, main: mu + ms };
}

const cpuDiff = (a: Cpu, b: Cpu): Cpu => ({ user: b.user - a.user, sys: b.sys - a.sys, main: b.main - a.main });

async function metrics(origin: string): Promise<Record<string, number>> {
  const text = await (await fetch(`${origin}/metrics`, { signal: AbortSignal.timeout(3000) })).text();
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/^(pangea_[a-z_]+)(?:\{[^}]*\})? (\S+)$/gm)) out[m[1]!] ??= Number(m[2]);
  return out;
}

async function startCluster(root: string, keyFile: string, mode: 'off' | 'on', snapshotSegments: number | null): Promise<TestNode[]> {
  const local = ['--archive-key-file', keyFile, ...(mode === 'on' ? ARCHIVE_ON : ARCHIVE_OFF)];
  const first = [...local, '--archive-url', pathToFileURL(join(root, 'archive')).href, '--segment-entries', String(ON.segmentEntries),
    ...(snapshotSegments === null ? [] : ['--snapshot-segments', String(snapshotSegments)])];
  const nodes: TestNode[] = [];
  const start = (i: number, extra: string[], join?: string) =>
    startNode({ dataDir: `${root}/n${i}`, p2pListen: ['/ip4/127.0.0.1/tcp/0'], extra, ...(join ? { join } : {}) });
  const n1 = await start(1, first);
  nodes.push(n1);
  await waitFor('node 1 to be ready', () => isReady(n1), 30_000);
  nodes.push(await start(2, local, n1.info.http), await start(3, local, n1.info.http));
  await waitFor('three ready voters', async () => {
    for (const n of nodes) if (!(await isReady(n))) return false;
    const view = await clusterView(n1.info.http);
    if (!nodes.every((n) => view.members.some((m) => m.peerId === n.info.peerId && m.role === 'voter'))) return false;
    // The cluster's archive settings are in the log (proposed by node 1 at bootstrap).
    const raw = (await (await fetch(`${n1.info.http}/v1/cluster`, { signal: AbortSignal.timeout(2000) })).json()) as { archive?: unknown };
    return raw.archive !== null && raw.archive !== undefined;
  }, 60_000);
  return nodes;
}

async function leaderOf(nodes: TestNode[]): Promise<TestNode> {
  return waitFor('a leader', async () => {
    const view = await clusterView(nodes[0]!.info.http);
    return nodes.find((n) => n.info.peerId === view.leader) ?? null;
  }, 20_000);
}

/** One cluster, one closed-loop put run; the cluster is stopped before this returns. */
async function clusterRun(root: string, keyFile: string, mode: 'off' | 'on', seconds: number, snapshotSegments: number | null): Promise<ClusterRun> {
  mkdirSync(root, { recursive: true });
  const ts = performance.now();
  const nodes = await startCluster(root, keyFile, mode, snapshotSegments);
  const startS = (performance.now() - ts) / 1000;
  const client = httpClient();
  let running = true;
  try {
    const origins = nodes.map((n) => n.info.http);
    // Every key once (transactions of PREPOPULATE_BATCH puts), so the state, and each
    // snapshot, is its full size from the start.
    const tp = performance.now();
    for (let start = 0; start < KEYS_COUNT; start += PREPOPULATE_BATCH) {
      const success = Array.from({ length: Math.min(PREPOPULATE_BATCH, KEYS_COUNT - start) }, (_, j) => ({ op: 'put', key: keyName(start + j), value: PUT_VALUE.toString() }));
      const body = Buffer.from(JSON.stringify({ success }));
      let status = 0;
      for (let attempt = 0; attempt < 5 && status !== 200; attempt++) {
        if (attempt > 0) await sleep(200);
        status = await client.send(origins[0]!, 'POST', '/v1/txn', body);
      }
      if (status !== 200) throw new Error(`pre-populating: POST /v1/txn answered ${status}`);
    }
    const prepopulateS = (performance.now() - tp) / 1000;
    let leader = await leaderOf(nodes);
    let recording = false;
    let count = 0;
    let errors = 0;
    const loop = async (c: number): Promise<void> => {
      const next = rng(0x9e3779b9 ^ (c + 1));
      for (let n = c; running; n++) {
        const status = await client.send(origins[n % origins.length]!, 'PUT', keyPath(next() % KEYS_COUNT), PUT_VALUE);
        if (!running || !recording) continue;
        if (status === 200) count++;
        else {
          errors++;
          if (status === 0) await sleep(10);
        }
      }
    };
    const loops = Array.from({ length: CONCURRENCY }, (_, c) => loop(c));
    // Warm-up: at least WARMUP_S, and until the log is past WARMUP_INDEX in both modes, so
    // that archiving (when on) is under way, its first segments archived, when measuring.
    const tw = performance.now();
    await sleep(WARMUP_S * 1000);
    for (;;) {
      const commit = await metrics(leader.info.http).then((m) => m.pangea_commit_index ?? 0, () => 0);
      if (commit >= WARMUP_INDEX) break;
      if (performance.now() - tw > WARMUP_MAX_S * 1000) throw new Error(`warm-up: the commit index is ${commit} after ${WARMUP_MAX_S} s`);
      await sleep(500);
    }
    const warmupS = (performance.now() - tw) / 1000;
    const samples: Sample[] = [];
    let leaderChanges = 0;
    const sample = async (): Promise<void> => {
      try {
        const m = await metrics(leader.info.http);
        samples.push({ t: performance.now(), commit: m.pangea_commit_index ?? NaN, archived: m.pangea_archive_last_index ?? NaN });
      } catch {
        // a slow answer under load: skip this sample
      }
    };
    const pids = nodes.map((n) => n.info.pid);
    const cpu0 = pids.map(cpuOf);
    recording = true;
    const t0 = performance.now();
    await sample();
    while (performance.now() - t0 < seconds * 1000) {
      await sleep(Math.min(SAMPLE_MS, seconds * 1000 - (performance.now() - t0)));
      if (performance.now() - t0 < seconds * 1000 - 50) await sample();
    }
    const elapsedS = (performance.now() - t0) / 1000;
    const finalCount = count;
    const finalErrors = errors;
    const cpu = pids.map((pid, i) => cpuDiff(cpu0[i]!, cpuOf(pid)));
    const leaderAt = nodes.indexOf(leader);
    const perOp = (seconds: number): number => Math.round((seconds * 1e6) / Math.max(1, finalCount));
    // The end-of-window sample is taken while the load still runs.
    await sample();
    running = false;
    await Promise.race([Promise.all(loops), sleep(DRAIN_MS_MAX)]);
    const now = await leaderOf(nodes);
    if (now !== leader) {
      leaderChanges++;
      leader = now;
    }
    const m = await metrics(leader.info.http);
    return {
      mode,
      ops: Math.round(finalCount / elapsedS),
      // CPU per acknowledged put, all three nodes and the leader alone (µs).
      cpuUsPerOp: perOp(cpu.reduce((a, c) => a + c.user + c.sys, 0)),
      sysUsPerOp: perOp(cpu.reduce((a, c) => a + c.sys, 0)),
      leaderCpuUsPerOp: perOp(cpu[leaderAt]!.user + cpu[leaderAt]!.sys),
      leaderMainUsPerOp: perOp(cpu[leaderAt]!.main),
      cpuPct: Math.round((100 * cpu.reduce((a, c) => a + c.user + c.sys, 0)) / elapsedS),
      errors: finalErrors,
      samples,
      archiveErrors: m.pangea_archive_errors_total ?? 0,
      segmentsArchived: m.pangea_archive_segments_total ?? 0,
      hotFirstIndex: m.pangea_hot_first_index ?? 0,
      leaderChanges,
      startS,
      prepopulateS,
      warmupS,
    };
  } finally {
    running = false;
    client.close();
    await Promise.all(nodes.map((n) => Promise.race([n.kill('SIGTERM'), sleep(STOP_MS_MAX).then(() => n.kill('SIGKILL'))])));
    removeDir(root);
  }
}

/** How far the archive trailed the commit index over an archiving-on run's window. */
function lagOf(r: ClusterRun): { end: number; min: number; max: number; bound: number; boundWithDelay: number; archivedPerS: number; committedPerS: number } {
  const ok = r.samples.filter((s) => Number.isFinite(s.commit) && Number.isFinite(s.archived));
  const first = ok[0];
  const last = ok.at(-1);
  if (first === undefined || last === undefined) return { end: NaN, min: NaN, max: NaN, bound: NaN, boundWithDelay: NaN, archivedPerS: NaN, committedPerS: NaN };
  const spanS = Math.max(1e-3, (last.t - first.t) / 1000);
  const committedPerS = (last.commit - first.commit) / spanS;
  return {
    end: last.commit - last.archived,
    min: Math.min(...ok.map((s) => s.commit - s.archived)),
    max: Math.max(...ok.map((s) => s.commit - s.archived)),
    bound: Math.round(ON.segmentEntries + ON.delayEntries + (committedPerS * ON.intervalMs) / 1000),
    // The segment's entries, then whichever delay is longer, then up to one interval.
    boundWithDelay: Math.round(ON.segmentEntries + Math.max(ON.delayEntries, committedPerS * ON.delayS) + (committedPerS * ON.intervalMs) / 1000),
    archivedPerS: Math.round((last.archived - first.archived) / spanS),
    committedPerS: Math.round(committedPerS),
  };
}

// ---- the run --------------------------------------------------------------------------------

export async function run(args: string[]): Promise<void> {
  const opts = parseArgs(args);
  const root = tempDir('pangea-bench-archive-');
  const resources = new Resources();
  resources.add(() => removeDir(root));
  resources.add(async () => {
    await killAll();
    for (const p of [...children]) await stopChild(p);
  });
  let cleaned: Promise<void> | null = null;
  const cleanup = (): Promise<void> => (cleaned ??= resources.closeAll());
  const onSignal = (sig: NodeJS.Signals): void => {
    console.error(`\n${sig}: stopping`);
    void cleanup().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  const out: Record<string, unknown> = { bench: 'archive', cores: cpus().length, entries: opts.entries, slot_batch: opts.batch, seconds: opts.seconds, snapshot_segments: opts.snapshotSegments ?? 1 };
  const figures = {
    archive_entries_per_s: null as number | null,
    archive_mb_per_s: null as number | null,
    archive_s3_entries_per_s: null as number | null,
    restore_entries_per_s: null as number | null,
    throughput_ratio_archiving_on_off: null as number | null,
    ops_per_s_archiving_off: null as number | null,
    ops_per_s_archiving_on: null as number | null,
    archive_lag_indexes: null as number | null,
  };
  const warnings: string[] = [];
  try {
    console.log(`machine: ${cpus().length} cores, shared by this process, its children and whatever else runs here.`);
    const wantArchive = opts.only === null || opts.only === 'archive';
    const wantRestore = opts.only === null || opts.only === 'restore';
    if (wantArchive || wantRestore) {
      // ---- 1. archive: the log built, then moved to file:// and to s3rver -------------------
      const dir = join(root, 'module');
      mkdirSync(dir, { recursive: true });
      const archiveUrl = pathToFileURL(join(dir, 'archive')).href;
      const logger = recordingLogger(warnings);
      const src = await openSource(dir);
      resources.add(() => src.stores.close());
      const fileStore = new TimedStore(await openObjectStore(archiveUrl));
      resources.add(() => fileStore.close());
      const archiver = newArchiver(src, fileStore, join(dir, 'staging'), logger);
      resources.add(() => archiver.stop());
      const tb = performance.now();
      // The archiver stages the snapshot at the first boundary, from a read transaction,
      // while the rest of the log is built (long done before archiving starts).
      await fillSource(src, archiveUrl, opts.entries, opts.batch, (b) => archiver.onSegment(b));
      out.build_s = round((performance.now() - tb) / 1000, 1);
      out.apply_entries_per_s = Math.round(src.lastIndex / (src.applyMs / 1000));
      out.log_mb = round(mb(src.logBytes), 1);
      out.segments = src.bounds.length;
      console.log(
        `built: ${src.lastIndex} entries (${opts.batch} a slot) in ${src.bounds.length} finished segments of ~${SEGMENT_ENTRIES}, ` +
          `${round(mb(src.logBytes), 1)} MB of commands, ${round(mb(dirBytes(join(dir, 'data'))), 1)} MB of LMDB; ` +
          `apply ${out.apply_entries_per_s} entries/s; ${out.build_s} s in all`,
      );

      const f = await archiveAll(archiver, fileStore, src);
      const file = printArchive('file://', f);
      figures.archive_entries_per_s = file.eps;
      figures.archive_mb_per_s = file.mbps;
      out.archive_shard_mb = round(mb(f.shardBytes), 1);
      out.archive_cpu_pct = Math.round((100 * f.cpuMs) / f.ms);
      out.archive_snapshots = archiver.stats.snapshotsArchived;

      if (wantArchive) {
        const s3Url = await startS3Child(join(root, 's3'), 'bench', resources);
        const s3Store = new TimedStore(await openObjectStore(s3Url));
        resources.add(() => s3Store.close());
        const s3Archiver = newArchiver(src, s3Store, join(dir, 'staging-s3'), logger);
        resources.add(() => s3Archiver.stop());
        const g = await archiveAll(s3Archiver, s3Store, src);
        const s3 = printArchive('s3rver (child process, segments only)', g);
        figures.archive_s3_entries_per_s = s3.eps;
        out.archive_s3_mb_per_s = s3.mbps;
        out.archive_s3_cpu_pct = Math.round((100 * g.cpuMs) / g.ms);
      }

      if (wantRestore) {
        // ---- 2. restore: the file:// archive into empty stores ------------------------------
        const r = await restoreBench(src, archiveUrl, dir, resources);
        figures.restore_entries_per_s = r.eps;
        out.restore_snapshot_index = r.snapshotIndex;
        out.restore_snapshot_ms = Math.round(r.snapshotMs);
        out.restore_replayed_entries = r.replayedEntries;
        out.restore_total_s = round(r.totalMs / 1000, 2);
        console.log(
          `restore: snapshot at index ${r.snapshotIndex} in ${Math.round(r.snapshotMs)} ms, then ${r.replayedEntries} entries replayed from segments ` +
            `in ${round(r.replayMs / 1000, 2)} s: ${r.eps} entries/s (target >= ${RESTORE_TARGET}: ${r.eps >= RESTORE_TARGET ? 'met' : 'MISSED'}); ` +
            `restoreFromArchive ${round(r.totalMs / 1000, 2)} s in all; chain checked`,
        );
      }
    }

    if (opts.only === null || opts.only === 'cluster') {
      // ---- 3. cluster throughput, archiving off and on, alternating ------------------------
      const keyFile = join(root, 'archive.key');
      await writeNewKeyFile(keyFile);
      const runs: ClusterRun[] = [];
      for (let r = 0; r < opts.rounds; r++) {
        for (const mode of ['off', 'on'] as const) {
          const res = await clusterRun(join(root, `cluster-${r}-${mode}`), keyFile, mode, opts.seconds, opts.snapshotSegments);
          runs.push(res);
          let extra = '';
          if (mode === 'on') {
            const lag = lagOf(res);
            extra =
              `; leader's archive lag at the end ${lag.end} indexes (over the window ${lag.min} to ${lag.max}), archived ${lag.archivedPerS}/s vs committed ${lag.committedPerS}/s, ` +
              `${res.segmentsArchived} segments archived, hot log from index ${res.hotFirstIndex}, archive errors ${res.archiveErrors}`;
          }
          console.log(
            `cluster round ${r + 1} archiving ${mode.padEnd(3)}: ${res.ops} put ops/s (c=${CONCURRENCY})${res.errors ? `, ${res.errors} non-200` : ''}; nodes' CPU ${res.cpuPct}% of a core, ` +
              `${res.cpuUsPerOp} µs a put (system ${res.sysUsPerOp}; leader ${res.leaderCpuUsPerOp}, its main thread ${res.leaderMainUsPerOp})${extra}` +
              ` [started in ${round(res.startS, 1)} s, pre-populated in ${round(res.prepopulateS, 1)} s, warmed up in ${round(res.warmupS, 1)} s${res.leaderChanges ? ', the leader changed' : ''}]`,
          );
        }
      }
      const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;
      const off = runs.filter((x) => x.mode === 'off');
      const on = runs.filter((x) => x.mode === 'on');
      const offOps = Math.round(mean(off.map((x) => x.ops)));
      const onOps = Math.round(mean(on.map((x) => x.ops)));
      const ratio = round(onOps / offOps, 3);
      const perRound = on.map((x, i) => round(x.ops / off[i]!.ops, 3));
      figures.ops_per_s_archiving_off = offOps;
      figures.ops_per_s_archiving_on = onOps;
      figures.throughput_ratio_archiving_on_off = ratio;
      out.ops_per_s_off_runs = off.map((x) => x.ops);
      out.ops_per_s_on_runs = on.map((x) => x.ops);
      out.ratio_per_round = perRound;
      console.log(
        `cluster: archiving off ${offOps} ops/s, on ${onOps} ops/s (means of ${opts.rounds} rounds, order off,on,...): ratio ${ratio} ` +
          `(per round ${perRound.join(', ')}; target >= ${RATIO_TARGET}: ${ratio >= RATIO_TARGET ? 'met' : 'MISSED'})`,
      );
      const offCpu = Math.round(mean(off.map((x) => x.cpuUsPerOp)));
      const onCpu = Math.round(mean(on.map((x) => x.cpuUsPerOp)));
      out.cpu_us_per_op_off = offCpu;
      out.cpu_us_per_op_on = onCpu;
      out.leader_cpu_us_per_op_off = Math.round(mean(off.map((x) => x.leaderCpuUsPerOp)));
      out.leader_cpu_us_per_op_on = Math.round(mean(on.map((x) => x.leaderCpuUsPerOp)));
      out.sys_us_per_op_off = Math.round(mean(off.map((x) => x.sysUsPerOp)));
      out.sys_us_per_op_on = Math.round(mean(on.map((x) => x.sysUsPerOp)));
      out.leader_main_us_per_op_off = Math.round(mean(off.map((x) => x.leaderMainUsPerOp)));
      out.leader_main_us_per_op_on = Math.round(mean(on.map((x) => x.leaderMainUsPerOp)));
      out.cpu_ratio_estimate = round(offCpu / onCpu, 3);
      console.log(
        `cluster CPU (the three nodes, per acknowledged put): off ${offCpu} µs, on ${onCpu} µs (system ${out.sys_us_per_op_off} -> ${out.sys_us_per_op_on}; ` +
          `leader ${out.leader_cpu_us_per_op_off} -> ${out.leader_cpu_us_per_op_on}, its main thread ${out.leader_main_us_per_op_off} -> ${out.leader_main_us_per_op_on}): ` +
          `on a CPU-bound machine, archiving costs a throughput ratio of about ${out.cpu_ratio_estimate} (less noisy than ops/s when the cores are shared)`,
      );
      const lags = on.map(lagOf);
      const worst = lags.reduce((a, b) => (b.end > a.end ? b : a));
      figures.archive_lag_indexes = worst.end;
      out.archive_lag_max_indexes = Math.max(...lags.map((l) => l.max));
      out.archive_lag_min_indexes = Math.min(...lags.map((l) => l.min));
      out.archive_lag_bound = worst.bound;
      out.archive_lag_bound_with_delay = worst.boundWithDelay;
      out.archive_errors = on.reduce((n, x) => n + x.archiveErrors, 0);
      console.log(
        `archive lag (commit - archived index on the leader, end of window, worst run): ${worst.end} indexes; bound segment-entries + delay-entries + ` +
          `one interval's commits = ${worst.bound}${worst.end <= worst.bound ? ': keeping up' : ': NOT within it'}; counting the ${ON.delayS} s archive-delay ` +
          `(segment-entries + max(delay-entries, commits in ${ON.delayS} s) + one interval's commits) ${worst.boundWithDelay}` +
          `${worst.end <= worst.boundWithDelay ? ': keeping up' : ': NOT within it'}`,
      );
    }

    const failed = [
      figures.restore_entries_per_s !== null && figures.restore_entries_per_s < RESTORE_TARGET ? 'restore speed' : null,
      figures.throughput_ratio_archiving_on_off !== null && figures.throughput_ratio_archiving_on_off < RATIO_TARGET ? 'throughput ratio' : null,
    ].filter((x) => x !== null);
    console.log(failed.length > 0 ? `targets missed: ${failed.join(', ')}` : 'targets: every one measured was met');
    console.log(JSON.stringify({ ...figures, ...out }));
  } catch (err) {
    if (warnings.length > 0) console.error(warnings.slice(-20).join('\n'));
    throw err;
  } finally {
    await cleanup();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
