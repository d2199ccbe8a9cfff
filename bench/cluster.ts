/**
 * `npm run bench -- cluster [--seconds N] [--only pangea|etcd] [--cpu-prof DIR]`: a 3-node
 * Pangea cluster against a 3-node etcd cluster (when the `etcd` binary is on PATH:
 * `apt-get install etcd-server`), both on loopback with temp data dirs and fsync on, driven in
 * turn by the same closed-loop HTTP clients in this process.
 *
 * Each client sends one request at a time, round-robin over the three nodes, on keep-alive
 * connections; only `200` answers count. Workloads, on KEYS_COUNT keys pre-populated first,
 * values VALUE_BYTES long: `put`; linearizable `get` (etcd: `/v3/kv/range` with
 * `serializable: false`); `txn`, one compare on the key's revision (etcd: mod_revision) then a
 * put; and `put_followers`, puts sent only to the two nodes that do not lead. Each runs at
 * every concurrency in CONCURRENCIES for `--seconds` (default 5) after
 * WARMUP_S of warm-up. Reports ops/s, p50/p99/max latency, the Pangea/etcd ratio of each,
 * and each node's peak RSS (VmHWM). Ends with one JSON line of every figure.
 *
 * The HTTP client (node:http Agent with keepAlive, or undici's Agent behind global `fetch`)
 * is chosen by a short calibration against Pangea, and the winner drives both systems.
 * `--cpu-prof DIR` profiles the Pangea nodes (the inspector's sampling profiler, as
 * `node --cpu-prof`) and stops them with SIGTERM, so each writes DIR/<pid>.cpuprofile, then
 * prints where the leader's CPU went (whole run, and put at the highest concurrency) and a
 * follower's, by stage and by function (profile-summary.ts).
 *
 * Every process started here is killed, and the temp dirs removed, on success, failure,
 * SIGINT or SIGTERM.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { createServer } from 'node:net';
import { cpus } from 'node:os';
import { resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { formatSummary, readProfile, summarize } from './profile-summary.js';
import { clusterView, isReady, killAll, removeDir, startNode, tempDir, waitFor, type TestNode } from '../test/cluster/harness.js';

const KEYS_COUNT = 10_000;
const VALUE_BYTES = 100;
const CONCURRENCIES = [1, 64, 256] as const;
const OPS = ['put', 'get', 'txn'] as const;
/** Every workload: the ops through all three nodes, then puts sent only to the two followers
 *  (which hand them to the leader: Pangea on its peer link, etcd as MsgProp). */
const RUNS = [...OPS, 'put_followers'] as const;
const WARMUP_S = 1;
/** Puts per txn when pre-populating (both systems allow 128 ops per txn by default). */
const PREPOPULATE_BATCH = 100;
const PREPOPULATE_CONCURRENCY = 8;
const CALIBRATE_S = 2;
const CALIBRATE_CONCURRENCY = 64;
/** A request still unanswered this long is an error (the client gives up on it). */
const REQUEST_TIMEOUT_MS = 10_000;
/** After a run ends, how long to wait for requests still in flight before moving on. */
const DRAIN_MS_MAX = REQUEST_TIMEOUT_MS + 2_000;
const STOP_MS_MAX = 10_000;
const CPU_PROF_INTERVAL_US = 1000;

type Op = (typeof OPS)[number];
type System = 'pangea' | 'etcd';

export interface Req {
  method: 'GET' | 'PUT' | 'POST';
  /** Path on the node, starting with `/`. */
  path: string;
  body: Buffer | null;
  json: boolean;
}

/** One HTTP client: sends a request and drains the answer; resolves to the status, 0 on a
 *  transport error or timeout. */
export interface Client {
  readonly name: 'node:http' | 'fetch';
  send(origin: string, req: Req): Promise<number>;
  close(): void;
}

export function nodeHttpClient(): Client {
  const agent = new Agent({ keepAlive: true, maxSockets: Infinity, maxFreeSockets: 1024 });
  return {
    name: 'node:http',
    send(origin, r) {
      const url = new URL(origin);
      return new Promise<number>((done) => {
        const headers: Record<string, string | number> = { 'content-length': r.body?.length ?? 0 };
        if (r.json) headers['content-type'] = 'application/json';
        const req = request({ agent, host: url.hostname, port: url.port, method: r.method, path: r.path, headers }, (res) => {
          const status = res.statusCode ?? 0;
          res.on('error', () => done(0));
          res.on('end', () => done(status));
          res.resume();
        });
        req.setTimeout(REQUEST_TIMEOUT_MS, () => req.destroy(new Error('timeout')));
        req.on('error', () => done(0));
        req.end(r.body ?? undefined);
      });
    },
    close: () => agent.destroy(),
  };
}

function fetchClient(): Client {
  return {
    name: 'fetch',
    async send(origin, r) {
      try {
        const res = await fetch(origin + r.path, {
          method: r.method,
          body: r.body,
          headers: r.json ? { 'content-type': 'application/json' } : {},
          signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
        });
        await res.arrayBuffer();
        return res.status;
      } catch {
        return 0;
      }
    },
    close: () => undefined,
  };
}

// ---- workloads: every request body is built once, before any run -------------------------

const keyOf = (i: number): string => `k${String(i).padStart(5, '0')}`;
const b64 = (s: string): string => Buffer.from(s).toString('base64');
const VALUE = 'v'.repeat(VALUE_BYTES);
const jsonBody = (o: unknown): Buffer => Buffer.from(JSON.stringify(o));

/** Requests for key i of each op, per system. */
type Workload = Record<Op, (i: number) => Req>;

function pangeaWorkload(): Workload {
  const value = Buffer.from(VALUE);
  const txn = Array.from({ length: KEYS_COUNT }, (_, i) =>
    jsonBody({
      compare: [{ key: keyOf(i), target: 'revision', op: '>', value: 0 }],
      success: [{ op: 'put', key: keyOf(i), value: VALUE }],
    }),
  );
  return {
    put: (i) => ({ method: 'PUT', path: `/v1/kv/${keyOf(i)}`, body: value, json: false }),
    get: (i) => ({ method: 'GET', path: `/v1/kv/${keyOf(i)}`, body: null, json: false }),
    txn: (i) => ({ method: 'POST', path: '/v1/txn', body: txn[i]!, json: true }),
  };
}

function etcdWorkload(): Workload {
  const value = b64(VALUE);
  const put = Array.from({ length: KEYS_COUNT }, (_, i) => jsonBody({ key: b64(keyOf(i)), value }));
  const get = Array.from({ length: KEYS_COUNT }, (_, i) => jsonBody({ key: b64(keyOf(i)), serializable: false }));
  const txn = Array.from({ length: KEYS_COUNT }, (_, i) =>
    jsonBody({
      compare: [{ key: b64(keyOf(i)), target: 'MOD', result: 'GREATER', mod_revision: '0' }],
      success: [{ request_put: { key: b64(keyOf(i)), value } }],
    }),
  );
  return {
    put: (i) => ({ method: 'POST', path: '/v3/kv/put', body: put[i]!, json: true }),
    get: (i) => ({ method: 'POST', path: '/v3/kv/range', body: get[i]!, json: true }),
    txn: (i) => ({ method: 'POST', path: '/v3/kv/txn', body: txn[i]!, json: true }),
  };
}

function prepopulateReqs(system: System): Req[] {
  const reqs: Req[] = [];
  for (let start = 0; start < KEYS_COUNT; start += PREPOPULATE_BATCH) {
    const keys = Array.from({ length: Math.min(PREPOPULATE_BATCH, KEYS_COUNT - start) }, (_, j) => keyOf(start + j));
    const body =
      system === 'pangea'
        ? { success: keys.map((key) => ({ op: 'put', key, value: VALUE })) }
        : { success: keys.map((key) => ({ request_put: { key: b64(key), value: b64(VALUE) } })) };
    reqs.push({ method: 'POST', path: system === 'pangea' ? '/v1/txn' : '/v3/kv/txn', body: jsonBody(body), json: true });
  }
  return reqs;
}

// ---- the closed loop ------------------------------------------------------------------------

interface Figures {
  ops: number;
  p50_ms: number;
  p99_ms: number;
  max_ms: number;
  errors: number;
}

const round = (x: number, digits: number): number => Math.round(x * 10 ** digits) / 10 ** digits;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Nearest-rank percentile of sorted latencies. */
function pct(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

export async function closedLoop(client: Client, origins: string[], make: (i: number) => Req, concurrency: number, seconds: number): Promise<Figures> {
  let recording = false;
  let running = true;
  let latencies = new Float64Array(1 << 16);
  let count = 0;
  let errors = 0;
  let seed = 0x9e3779b9 ^ concurrency;
  const random = (): number => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) / 4294967296;
  };
  const loop = async (c: number): Promise<void> => {
    for (let n = c; running; n++) {
      const req = make(Math.floor(random() * KEYS_COUNT));
      const t0 = performance.now();
      const status = await client.send(origins[n % origins.length]!, req);
      const ms = performance.now() - t0;
      if (!running || !recording) continue;
      if (status !== 200) {
        errors++;
        if (status === 0) await sleep(10); // refused or reset: do not spin
        continue;
      }
      if (count === latencies.length) {
        const grown = new Float64Array(latencies.length * 2);
        grown.set(latencies);
        latencies = grown;
      }
      latencies[count++] = ms;
    }
  };
  const loops = Array.from({ length: concurrency }, (_, c) => loop(c));
  await sleep(WARMUP_S * 1000);
  recording = true;
  const t0 = performance.now();
  await sleep(seconds * 1000);
  running = false;
  const elapsedS = (performance.now() - t0) / 1000;
  await Promise.race([Promise.all(loops), sleep(DRAIN_MS_MAX)]);
  const sorted = latencies.subarray(0, count).sort();
  return {
    ops: Math.round(count / elapsedS),
    p50_ms: round(pct(sorted, 50), 2),
    p99_ms: round(pct(sorted, 99), 2),
    max_ms: round(sorted[count - 1] ?? 0, 2),
    errors,
  };
}

async function sendAll(client: Client, origins: string[], reqs: Req[], concurrency: number): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < reqs.length) {
      const i = next++;
      let status = 0;
      for (let attempt = 0; attempt < 5 && status !== 200; attempt++) {
        if (attempt > 0) await sleep(200);
        status = await client.send(origins[i % origins.length]!, reqs[i]!);
      }
      if (status !== 200) throw new Error(`pre-populating: ${reqs[i]!.path} answered ${status}`);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
}

/** One request of each op on key 0, checked for the expected answer: a wrongly shaped
 *  request would otherwise show up only as a low figure. */
async function sanityCheck(system: System, origin: string, w: Workload): Promise<void> {
  for (const op of OPS) {
    const r = w[op](0);
    const res = await fetch(origin + r.path, { method: r.method, body: r.body, headers: r.json ? { 'content-type': 'application/json' } : {} });
    const text = await res.text();
    const ok =
      res.status === 200 &&
      (op === 'get' ? (system === 'pangea' ? text === VALUE : text.includes(b64(VALUE))) : op === 'txn' ? /"succeeded":\s*true/.test(text) : true);
    if (!ok) throw new Error(`${system} ${op} check failed: ${res.status} ${text.slice(0, 300)}`);
  }
}

/** The nodes that do not lead now (two of three). */
async function followerOrigins(system: System, origins: string[]): Promise<string[]> {
  const out: string[] = [];
  for (const o of origins) {
    if (system === 'pangea') {
      const view = (await (await fetch(`${o}/v1/cluster`)).json()) as { self: { peerId: string }; leader: string | null };
      if (view.leader !== null && view.self.peerId !== view.leader) out.push(o);
    } else {
      const res = await fetch(`${o}/v3/maintenance/status`, { method: 'POST', body: '{}', headers: { 'content-type': 'application/json' } });
      const st = (await res.json()) as { header?: { member_id?: string }; leader?: string };
      if (st.leader !== undefined && st.header?.member_id !== st.leader) out.push(o);
    }
  }
  if (out.length !== origins.length - 1) throw new Error(`${system}: expected ${origins.length - 1} followers, found ${out.length}`);
  return out;
}

// ---- processes --------------------------------------------------------------------------------

/** Processes this file started itself (the harness tracks the Pangea nodes). */
const children = new Set<ChildProcess>();
process.on('exit', () => {
  for (const p of children) p.kill('SIGKILL');
});

async function stopChild(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return;
  const exited = new Promise((r) => p.once('exit', r));
  p.kill('SIGKILL');
  await exited;
}

async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from({ length: n }, () => new Promise<ReturnType<typeof createServer>>((ok, fail) => {
      const s = createServer();
      s.once('error', fail);
      s.listen(0, '127.0.0.1', () => ok(s));
    })),
  );
  const ports = servers.map((s) => (s.address() as { port: number }).port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

/** VmHWM of a process in MB, or null if it cannot be read. */
function peakRssMb(pid: number): number | null {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? round(Number(m[1]) / 1024, 1) : null;
  } catch {
    return null;
  }
}

export interface Cluster {
  origins: string[];
  pids: number[];
  stop(): Promise<void>;
}

/** A module for `--import` (Node 20 refuses `--cpu-prof` in NODE_OPTIONS, and the harness
 *  takes no node flags) that samples the CPU every CPU_PROF_INTERVAL_US through the inspector
 *  and writes DIR/<pid>.cpuprofile when the process exits. */
function cpuProfilePreload(dir: string): string {
  const src =
    `import{Session}from'node:inspector';import{writeFileSync}from'node:fs';` +
    `const s=new Session();s.connect();s.post('Profiler.enable');` +
    `s.post('Profiler.setSamplingInterval',{interval:${CPU_PROF_INTERVAL_US}});s.post('Profiler.start');` +
    `process.on('exit',()=>s.post('Profiler.stop',(e,r)=>{if(!e)writeFileSync(${JSON.stringify(dir)}+'/'+process.pid+'.cpuprofile',JSON.stringify(r.profile))}));`;
  return `data:text/javascript,${encodeURIComponent(src)}`;
}

export async function startPangea(root: string, cpuProfDir: string | null): Promise<Cluster> {
  const saved = process.env.NODE_OPTIONS;
  if (cpuProfDir) process.env.NODE_OPTIONS = `${saved ?? ''} --import ${cpuProfilePreload(cpuProfDir)}`.trim();
  const nodes: TestNode[] = [];
  try {
    const start = (i: number, join?: string) =>
      startNode({ dataDir: `${root}/n${i}`, p2pListen: ['/ip4/127.0.0.1/tcp/0'], ...(join ? { join } : {}) });
    const n1 = await start(1);
    nodes.push(n1);
    await waitFor('Pangea node 1 to be ready', () => isReady(n1), 30_000);
    nodes.push(await start(2, n1.info.http), await start(3, n1.info.http));
  } finally {
    if (cpuProfDir) {
      if (saved === undefined) delete process.env.NODE_OPTIONS;
      else process.env.NODE_OPTIONS = saved;
    }
  }
  await waitFor('three ready Pangea voters', async () => {
    for (const n of nodes) if (!(await isReady(n))) return false;
    const view = await clusterView(nodes[0]!.info.http);
    return nodes.every((n) => view.members.some((m) => m.peerId === n.info.peerId && m.role === 'voter'));
  }, 60_000);
  return {
    origins: nodes.map((n) => n.info.http),
    pids: nodes.map((n) => n.info.pid),
    async stop() {
      // SIGTERM: a clean exit, so --cpu-prof writes its profile; SIGKILL if it hangs.
      await Promise.all(nodes.map((n) => Promise.race([n.kill('SIGTERM'), sleep(STOP_MS_MAX).then(() => n.kill('SIGKILL'))])));
    },
  };
}

export function etcdVersion(): string | null {
  const r = spawnSync('etcd', ['--version'], { encoding: 'utf8' });
  if (r.error || r.status !== 0) return null;
  return /etcd Version:\s*(\S+)/.exec(r.stdout)?.[1] ?? 'unknown';
}

export async function startEtcd(root: string): Promise<Cluster> {
  const ports = await freePorts(6);
  const names = ['e1', 'e2', 'e3'];
  const clientUrl = (i: number) => `http://127.0.0.1:${ports[i]}`;
  const peerUrl = (i: number) => `http://127.0.0.1:${ports[i + 3]}`;
  const initial = names.map((n, i) => `${n}=${peerUrl(i)}`).join(',');
  const procs = names.map((name, i) => {
    const dir = `${root}/${name}`;
    mkdirSync(dir, { recursive: true });
    const p = spawn('etcd', [
      '--name', name, '--data-dir', dir,
      '--listen-client-urls', clientUrl(i), '--advertise-client-urls', clientUrl(i),
      '--listen-peer-urls', peerUrl(i), '--initial-advertise-peer-urls', peerUrl(i),
      '--initial-cluster', initial, '--initial-cluster-token', 'pangea-bench', '--initial-cluster-state', 'new',
      '--logger', 'zap', '--log-level', 'warn',
    ], { stdio: ['ignore', 'ignore', 'pipe'] });
    children.add(p);
    let err = '';
    p.stderr!.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-4000)));
    p.once('exit', (code) => {
      children.delete(p);
      if (code !== null && code !== 0) console.error(`etcd ${name} exited with ${code}:\n${err}`);
    });
    return p;
  });
  const origins = names.map((_, i) => clientUrl(i));
  await waitFor('three healthy etcd members', async () => {
    for (const o of origins) {
      const res = await fetch(`${o}/health`, { signal: AbortSignal.timeout(1000) });
      if (!((await res.json()) as { health?: string }).health?.startsWith('true')) return false;
    }
    return true;
  }, 30_000);
  return { origins, pids: procs.map((p) => p.pid!), stop: async () => void (await Promise.all(procs.map(stopChild))) };
}

// ---- the run ---------------------------------------------------------------------------------

interface Args {
  seconds: number;
  only: System | null;
  cpuProfDir: string | null;
}

function parseArgs(args: string[]): Args {
  const out: Args = { seconds: 5, only: null, cpuProfDir: null };
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    const v = args[i + 1];
    if (a === '--seconds' && v && Number(v) > 0) out.seconds = Number(v);
    else if (a === '--only' && (v === 'pangea' || v === 'etcd')) out.only = v;
    else if (a === '--cpu-prof' && v) out.cpuProfDir = resolve(v);
    else throw new Error(`usage: npm run bench -- cluster [--seconds N] [--only pangea|etcd] [--cpu-prof DIR] (bad: ${a})`);
    i++;
  }
  return out;
}

/**
 * The issue's profile mode: where the leader's CPU went over the whole run and during the
 * heaviest write phase (put c=256), and a follower's in that phase.
 */
function printProfiles(dir: string, cluster: Cluster, followers: readonly string[], phases: readonly Phase[]): void {
  const leaderAt = cluster.origins.findIndex((o) => !followers.includes(o));
  const followerAt = cluster.origins.findIndex((o) => followers.includes(o));
  const load = (i: number) => {
    try {
      return readProfile(`${dir}/${cluster.pids[i]}.cpuprofile`);
    } catch (e) {
      console.log(`no CPU profile for node ${i + 1} (pid ${cluster.pids[i]}): ${(e as Error).message}`);
      return null;
    }
  };
  const heavy = phases.find((p) => p.name === `put c=${CONCURRENCIES[CONCURRENCIES.length - 1]}`);
  const leader = leaderAt >= 0 ? load(leaderAt) : null;
  if (leader !== null) {
    console.log(formatSummary(`\nleader (node ${leaderAt + 1}), whole run`, summarize(leader)).join('\n'));
    if (heavy) console.log(formatSummary(`leader, ${heavy.name}`, summarize(leader, heavy)).join('\n'));
  }
  const follower = followerAt >= 0 ? load(followerAt) : null;
  if (follower !== null && heavy) console.log(formatSummary(`follower (node ${followerAt + 1}), ${heavy.name}`, summarize(follower, heavy)).join('\n'));
}

/** CLOCK_MONOTONIC in µs: the clock of a .cpuprofile's startTime and timeDeltas. */
const monotonicUs = (): number => Number(process.hrtime.bigint() / 1000n);

/** A measured run of the bench, in CLOCK_MONOTONIC µs (warm-up excluded). */
interface Phase {
  readonly name: string;
  readonly fromUs: number;
  readonly toUs: number;
}

async function benchSystem(system: System, cluster: Cluster, client: Client, seconds: number, out: Record<string, unknown>, phases: Phase[] | null): Promise<void> {
  const w = system === 'pangea' ? pangeaWorkload() : etcdWorkload();
  const t0 = performance.now();
  await sendAll(client, cluster.origins, prepopulateReqs(system), PREPOPULATE_CONCURRENCY);
  console.log(`${system}: pre-populated ${KEYS_COUNT} keys in ${round((performance.now() - t0) / 1000, 1)} s`);
  await sanityCheck(system, cluster.origins[0]!, w);
  for (const op of RUNS) {
    const origins = op === 'put_followers' ? await followerOrigins(system, cluster.origins) : cluster.origins;
    for (const c of CONCURRENCIES) {
      const startUs = monotonicUs();
      const f = await closedLoop(client, origins, w[op === 'put_followers' ? 'put' : op], c, seconds);
      phases?.push({ name: `${op} c=${c}`, fromUs: startUs + WARMUP_S * 1e6, toUs: monotonicUs() });
      for (const [k, v] of Object.entries(f)) out[`${system}_${op}_c${c}_${k}`] = v;
      console.log(
        `${system.padEnd(6)} ${op} c=${String(c).padEnd(3)} ${String(f.ops).padStart(6)} ops/s  p50 ${f.p50_ms} ms  p99 ${f.p99_ms} ms  max ${f.max_ms} ms` +
          (f.errors ? `  (${f.errors} non-200)` : ''),
      );
    }
  }
  const rss = cluster.pids.map(peakRssMb);
  rss.forEach((mb, i) => (out[`${system}_rss_mb_n${i + 1}`] = mb));
  out[`${system}_rss_mb_max`] = Math.max(...rss.map((x) => x ?? 0));
  console.log(`${system}: peak RSS per node (VmHWM) ${rss.map((x) => `${x} MB`).join(', ')}`);
}

export async function run(args: string[]): Promise<void> {
  const opts = parseArgs(args);
  const root = tempDir('pangea-bench-cluster-');
  const clusters: Cluster[] = [];
  let cleaned: Promise<void> | null = null;
  const cleanup = (): Promise<void> =>
    (cleaned ??= (async () => {
      await Promise.allSettled(clusters.map((c) => c.stop()));
      await killAll();
      for (const p of [...children]) await stopChild(p);
      removeDir(root);
    })());
  const onSignal = (sig: NodeJS.Signals): void => {
    console.error(`\n${sig}: stopping the clusters`);
    void cleanup().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  const out: Record<string, unknown> = { bench: 'cluster', seconds: opts.seconds, cores: cpus().length, keys: KEYS_COUNT, value_bytes: VALUE_BYTES };
  try {
    const version = opts.only === 'pangea' ? null : etcdVersion();
    out.etcd_version = version;
    if (!version && opts.only !== 'pangea') console.log('etcd not found on PATH (apt-get install etcd-server): benchmarking Pangea alone, no ratios.');
    console.log(`load generator: this process, sharing the machine's ${cpus().length} cores with the servers.`);
    if (opts.cpuProfDir) {
      rmSync(opts.cpuProfDir, { recursive: true, force: true });
      mkdirSync(opts.cpuProfDir, { recursive: true });
    }

    let client: Client = nodeHttpClient();
    if (opts.only !== 'etcd') {
      const pangea = await startPangea(`${root}/pangea`, opts.cpuProfDir);
      clusters.push(pangea);
      // Calibrate the client on Pangea: linearizable gets of pre-populated keys.
      await sendAll(client, pangea.origins, prepopulateReqs('pangea'), PREPOPULATE_CONCURRENCY);
      const candidates = [nodeHttpClient(), fetchClient()];
      const scores: number[] = [];
      for (const c of candidates) {
        const f = await closedLoop(c, pangea.origins, pangeaWorkload().get, CALIBRATE_CONCURRENCY, CALIBRATE_S);
        out[`client_${c.name === 'fetch' ? 'fetch' : 'node_http'}_get_c${CALIBRATE_CONCURRENCY}_ops`] = f.ops;
        scores.push(f.ops);
      }
      client.close();
      client = scores[1]! > scores[0]! ? candidates[1]! : candidates[0]!;
      for (const c of candidates) if (c !== client) c.close();
      console.log(
        `client: ${client.name} (get c=${CALIBRATE_CONCURRENCY} on Pangea: node:http ${scores[0]} ops/s, fetch/undici ${scores[1]} ops/s)`,
      );
      const phases: Phase[] | null = opts.cpuProfDir !== null ? [] : null;
      await benchSystem('pangea', pangea, client, opts.seconds, out, phases);
      const followers = opts.cpuProfDir !== null ? await followerOrigins('pangea', pangea.origins) : [];
      await pangea.stop();
      if (opts.cpuProfDir !== null && phases !== null) printProfiles(opts.cpuProfDir, pangea, followers, phases);
    }
    out.client = client.name;
    if (version && opts.only !== 'pangea') {
      const etcd = await startEtcd(`${root}/etcd`);
      clusters.push(etcd);
      await benchSystem('etcd', etcd, client, opts.seconds, out, null);
      await etcd.stop();
    }
    client.close();

    if (out.etcd_rss_mb_max !== undefined && out.pangea_rss_mb_max !== undefined) {
      console.log('\nratio Pangea/etcd (ops: higher is better; latency and RSS: lower is better)');
      for (const op of RUNS) {
        for (const c of CONCURRENCIES) {
          const line: string[] = [];
          for (const k of ['ops', 'p50_ms', 'p99_ms', 'max_ms']) {
            const p = out[`pangea_${op}_c${c}_${k}`] as number;
            const e = out[`etcd_${op}_c${c}_${k}`] as number;
            const r = e > 0 ? round(p / e, 2) : null;
            out[`ratio_${op}_c${c}_${k}`] = r;
            line.push(`${k} ${r}`);
          }
          console.log(`  ${op} c=${String(c).padEnd(3)} ${line.join('  ')}`);
        }
      }
      out.ratio_rss_mb_max = round((out.pangea_rss_mb_max as number) / (out.etcd_rss_mb_max as number), 2);
      console.log(`  peak RSS per node (max) ${out.ratio_rss_mb_max}`);
    }
    if (opts.cpuProfDir) console.log(`CPU profiles of the Pangea nodes: ${opts.cpuProfDir}`);
    console.log(JSON.stringify(out));
  } finally {
    await cleanup();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
