/**
 * `npm run bench -- watch [--seconds N] [--pairs N] [--leases N] [--only pangea|etcd]
 * [--cold N] [--part watch|leases|cold]`: watch
 * fan-out and lease keep-alive cost on a 3-node Pangea cluster, and the same fan-out on a
 * 3-node etcd 3.4 cluster when `etcd` is on PATH (`apt-get install etcd-server`), both on
 * loopback with fsync on.
 *
 * - Fan-out: W prefix watchers (100, then 1,000), spread over the three nodes, while 64
 *   clients put 100-byte values under the prefix for N seconds. Every value carries the
 *   time it was sent, so each event's delivery latency is measured where it arrives. After
 *   the puts, the watchers get up to 10 s to drain; a put acknowledged and not seen by a
 *   watcher is a missing event. Pangea: `GET /v1/watch?prefix=` (Server-Sent Events); etcd:
 *   its gRPC gateway's `POST /v3/watch` (JSON lines), the only way to watch etcd over HTTP.
 * - Lease cost: put@64 ops/s alone and while 10,000 leases are each renewed every 3 s
 *   (3,333 keep-alives a second, spread over the nodes), sent a request each (as 10,000
 *   clients would) or batched (as one client holding them all), each way in `--pairs` (4) pairs
 *   of its own against put@64 alone, in turn alone first and renewing first, with a 2 s
 *   pause before each run (single runs vary by up to 40% on this machine); the cost is 1
 *   minus the geometric mean of with / alone over the pairs. `--renew` times one way only. `lease_keepalive_cost` is the batched one; `_request_each` the other,
 *   which is mostly the cost of 3,333 HTTP requests a second on these two cores (plain
 *   `GET /healthz` requests at that rate cost put@64 about 30%, measured in this session).
 *
 * - Cold resume: one Pangea node archiving to file:// (default 10,000-index segments, a
 *   snapshot every segment, 1,000 indexes kept hot) takes 100,000 puts at 64 in flight and
 *   prunes its hot log past them; then one watch from index 0 reads all 100,000 changes,
 *   served from the archive's effects objects. `watch_cold_events_per_s` is events over the
 *   time from the request to the last event. etcd cannot: a watch from a compacted revision
 *   is cancelled (`compacted`), so there is no ratio.
 *
 * The load generator is this process, on the same cores as the servers, for both systems.
 * Ends with one JSON line of every figure.
 */
import { cpus } from 'node:os';
import { performance } from 'node:perf_hooks';
import { Agent, request } from 'node:http';
import { readEvents } from '../src/net/sse.js';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { writeNewKeyFile } from '../src/ces/index.js';
import { isReady, killAll, metric, removeDir, startNode, tempDir, waitFor } from '../test/cluster/harness.js';
import { closedLoop, etcdVersion, nodeHttpClient, startEtcd, startPangea, type Cluster, type Req } from './cluster.js';

const CONCURRENCY = 64;
const VALUE_BYTES = 100;
const WATCHERS = [100, 1000] as const;
/** The drain ends once watchers have received nothing new for this long. */
const DRAIN_MS = 10_000;
const RENEW_EVERY_MS = 3_000;
const LEASE_TTL_S = 30;
/** How often the batched renewer sends the keep-alives due. */
const BATCH_EVERY_MS = 100;
/** A pause before each timed pair, so that one phase's leftovers do not land in the next. */
const SETTLE_MS = 2_000;

interface Args {
  seconds: number;
  pairs: number;
  leases: number;
  only: 'pangea' | 'etcd' | null;
  part: 'watch' | 'leases' | 'cold' | null;
  cold: number;
  /** Which ways of renewing the lease cost measures (both by default). */
  renew: readonly RenewMode[];
  cpuProfDir: string | null;
}

function parseArgs(args: string[]): Args {
  const out: Args = { seconds: 5, pairs: 4, leases: 10_000, only: null, part: null, cold: 100_000, renew: ['each', 'batched'], cpuProfDir: null };
  for (let i = 0; i < args.length; i += 2) {
    const [a, v] = [args[i], args[i + 1]];
    if (a === '--seconds' && Number(v) > 0) out.seconds = Number(v);
    else if (a === '--pairs' && Number(v) > 0) out.pairs = Number(v);
    else if (a === '--leases' && Number(v) > 0) out.leases = Number(v);
    else if (a === '--only' && (v === 'pangea' || v === 'etcd')) out.only = v;
    else if (a === '--part' && (v === 'watch' || v === 'leases' || v === 'cold')) out.part = v;
    else if (a === '--cold' && Number(v) > 0) out.cold = Number(v);
    else if (a === '--renew' && (v === 'each' || v === 'batched')) out.renew = [v];
    else if (a === '--cpu-prof' && v) out.cpuProfDir = resolve(v);
    else throw new Error(`usage: npm run bench -- watch [--seconds N] [--pairs N] [--leases N] [--cold N] [--only pangea|etcd] [--part watch|leases|cold] [--renew each|batched] [--cpu-prof DIR] (bad: ${a})`);
  }
  return out;
}

const round = (x: number, digits: number): number => Math.round(x * 10 ** digits) / 10 ** digits;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const b64 = (s: string): string => Buffer.from(s).toString('base64');

function pct(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

/** A value that says when it was sent: `<ms since this process began>` padded to VALUE_BYTES. */
function stamped(): string {
  return performance.now().toFixed(3).padEnd(VALUE_BYTES, '.');
}

interface System {
  readonly name: 'pangea' | 'etcd';
  put(origin: string, key: string, value: string): Promise<boolean>;
  /** Opens a prefix watch on `origin`; `onValue` gets each put's value; resolves once open. */
  watch(origin: string, prefix: string, onValue: (value: string) => void, signal: AbortSignal): Promise<void>;
}

const agent = new Agent({ keepAlive: true, maxSockets: Infinity, maxFreeSockets: 1024 });

function send(origin: string, method: string, path: string, body: string | Buffer, json: boolean): Promise<number> {
  const url = new URL(origin);
  return new Promise<number>((done) => {
    const headers: Record<string, string | number> = { 'content-length': Buffer.byteLength(body) };
    if (json) headers['content-type'] = 'application/json';
    const req = request({ agent, host: url.hostname, port: url.port, method, path, headers }, (res) => {
      res.on('error', () => done(0));
      res.on('end', () => done(res.statusCode ?? 0));
      res.resume();
    });
    req.setTimeout(10_000, () => req.destroy(new Error('timeout')));
    req.on('error', () => done(0));
    req.end(body);
  });
}

const pangea: System = {
  name: 'pangea',
  put: async (origin, key, value) => (await send(origin, 'PUT', `/v1/kv/${encodeURIComponent(key)}`, value, false)) === 200,
  async watch(origin, prefix, onValue, signal) {
    const res = await fetch(`${origin}/v1/watch?prefix=${encodeURIComponent(prefix)}&progress=3600`, { signal });
    if (!res.ok) throw new Error(`watch answered ${res.status}`);
    void (async () => {
      try {
        for await (const ev of readEvents(res.body!)) {
          if (ev.event !== 'change') continue;
          for (const c of (JSON.parse(ev.data) as { changes: { type: string; value?: string }[] }).changes) if (c.type === 'put') onValue(c.value!);
        }
      } catch {
        // aborted at the end
      }
    })();
  },
};

const etcd: System = {
  name: 'etcd',
  put: async (origin, key, value) => (await send(origin, 'POST', '/v3/kv/put', JSON.stringify({ key: b64(key), value: b64(value) }), true)) === 200,
  async watch(origin, prefix, onValue, signal) {
    const end = Buffer.from(prefix);
    end[end.length - 1]!++;
    const res = await fetch(`${origin}/v3/watch`, { method: 'POST', body: JSON.stringify({ create_request: { key: b64(prefix), range_end: end.toString('base64') } }), signal });
    if (!res.ok) throw new Error(`etcd watch answered ${res.status}`);
    const reader = res.body!.getReader();
    let buf = '';
    const decoder = new TextDecoder();
    // The first line confirms the watch was created.
    for (;;) {
      const r = await reader.read();
      if (r.done) throw new Error('etcd watch ended before it was created');
      buf += decoder.decode(r.value, { stream: true });
      if (buf.includes('\n')) break;
    }
    const take = (): void => {
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        const m = JSON.parse(line) as { result?: { events?: { kv?: { value?: string } }[] } };
        for (const e of m.result?.events ?? []) if (e.kv?.value !== undefined) onValue(Buffer.from(e.kv.value, 'base64').toString());
      }
    };
    take();
    void (async () => {
      try {
        for (;;) {
          const r = await reader.read();
          if (r.done) return;
          buf += decoder.decode(r.value, { stream: true });
          take();
        }
      } catch {
        // aborted at the end
      }
    })();
  },
};

/** W watchers on `prefix`, puts at CONCURRENCY for `seconds`, then the drain. */
async function fanOut(system: System, origins: readonly string[], watchers: number, seconds: number, run: number): Promise<Record<string, number>> {
  const prefix = `w${run}/`;
  const stop = new AbortController();
  let received = 0;
  let latencies = new Float64Array(1 << 20);
  let n = 0;
  const onValue = (v: string): void => {
    received++;
    const ms = performance.now() - Number.parseFloat(v);
    if (n === latencies.length) {
      const grown = new Float64Array(n * 2);
      grown.set(latencies);
      latencies = grown;
    }
    latencies[n++] = ms;
  };
  for (let i = 0; i < watchers; i += 50) {
    await Promise.all(Array.from({ length: Math.min(50, watchers - i) }, (_, j) => system.watch(origins[(i + j) % origins.length]!, prefix, onValue, stop.signal)));
  }
  let acked = 0;
  let errors = 0;
  let running = true;
  let seq = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async (_, c) => {
      while (running) {
        const ok = await system.put(origins[c % origins.length]!, `${prefix}${seq++ % 1000}`, stamped());
        if (ok) acked++;
        else errors++;
      }
    }).concat([sleep(seconds * 1000).then(() => void (running = false))]),
  );
  const putS = (performance.now() - t0) / 1000;
  const expected = acked * watchers;
  // Watchers may fall behind the puts (they catch up from the journal): wait while they make
  // progress, until DRAIN_MS pass without any.
  let last = received;
  let lastAt = performance.now();
  while (received < expected && performance.now() - lastAt < DRAIN_MS) {
    await sleep(50);
    if (received !== last) {
      last = received;
      lastAt = performance.now();
    }
  }
  const deliverS = (performance.now() - t0) / 1000;
  stop.abort();
  const sorted = latencies.subarray(0, n).sort();
  return {
    puts_per_s: Math.round(acked / putS),
    put_errors: errors,
    events_per_s: Math.round(received / deliverS),
    missing_events: Math.max(0, expected - received),
    delivery_p50_ms: round(pct(sorted, 50), 1),
    delivery_p99_ms: round(pct(sorted, 99), 1),
  };
}

/** put@64 alone and while `leases` leases are renewed every 3 s, alternated `pairs` times. */
async function leaseCost(cluster: Cluster, leases: number, seconds: number, pairs: number, modes: readonly RenewMode[]): Promise<Record<string, number>> {
  const origins = cluster.origins;
  const ids: string[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: 64 }, async () => {
      while (next < leases) {
        next++;
        const res = await fetch(`${origins[next % origins.length]}/v1/leases`, { method: 'POST', body: JSON.stringify({ ttl: LEASE_TTL_S }), headers: { 'content-type': 'application/json' } });
        if (res.status !== 200) throw new Error(`granting a lease answered ${res.status}: ${await res.text()}`);
        ids.push(((await res.json()) as { id: string }).id);
      }
    }),
  );
  const value = Buffer.from('v'.repeat(VALUE_BYTES));
  const put = (i: number): Req => ({ method: 'PUT', path: `/v1/kv/lc${i}`, body: value, json: false });
  const client = nodeHttpClient();
  const runs: Record<RenewMode, number[]> = { each: [], batched: [] };
  const alone: Record<RenewMode, number[]> = { each: [], batched: [] };
  const counts = { renewed: 0, errors: 0 };
  const errorStatuses = new Map<number, number>();
  // Each way of renewing is timed against put@64 alone in pairs of its own, batched first: a
  // request each leaves the cluster busy for a while after it stops (thousands of keep-alives
  // answered, garbage), and when its runs came between the others, the batched runs after
  // them lost 14% where batched alone against alone lost 5% (measured in session 15).
  for (const mode of [...modes].sort((a) => (a === 'batched' ? -1 : 1))) {
    await sleep(SETTLE_MS);
    // Alone then with, then with then alone (ABBA): put@64 alone drifts down by several
    // percent a run as the cluster's files grow (4,202, 3,832, 3,673 ops/s in one run here),
    // which a fixed order would count as the keep-alives' cost.
    const timeAlone = async (): Promise<void> => void alone[mode].push((await closedLoop(client, origins, put, CONCURRENCY, seconds)).ops);
    const timeWith = async (): Promise<void> => {
      const stop = renew(mode, origins, ids, counts, errorStatuses);
      runs[mode].push((await closedLoop(client, origins, put, CONCURRENCY, seconds)).ops);
      await stop();
    };
    for (let p = 0; p < pairs; p++) {
      for (const time of p % 2 === 0 ? [timeAlone, timeWith] : [timeWith, timeAlone]) {
        await time();
        await sleep(SETTLE_MS);
      }
    }
  }
  client.close();
  if (counts.errors > 0) console.log(`  keep-alives refused, by status: ${JSON.stringify(Object.fromEntries(errorStatuses))}`);
  if (modes.includes('batched')) {
    console.log(`  put@${CONCURRENCY} alone: ${alone.batched.join(', ')} ops/s`);
    console.log(`  with ${leases} leases renewed every ${RENEW_EVERY_MS / 1000} s, batched (POST /v1/leases/keepalive every ${BATCH_EVERY_MS} ms): ${runs.batched.join(', ')} ops/s`);
  }
  if (modes.includes('each')) {
    console.log(`  put@${CONCURRENCY} alone: ${alone.each.join(', ')} ops/s`);
    console.log(`  with ${leases} leases renewed every ${RENEW_EVERY_MS / 1000} s, a request each: ${runs.each.join(', ')} ops/s`);
  }
  // Each pair's ratio, then their geometric mean: put@64 alone falls by a quarter over the
  // runs (4,314 to 3,102 ops/s in one), so medians of the two sets compare runs minutes
  // apart; within a pair the runs are adjacent, and alternating which goes first cancels
  // the drift across pairs.
  const cost = (mode: RenewMode): number => {
    const logs = runs[mode].map((w, i) => Math.log(w / alone[mode][i]!));
    return round(1 - Math.exp(logs.reduce((a, b) => a + b, 0) / logs.length), 3);
  };
  return {
    ...(modes.includes('batched') ? { put_alone_ops: median(alone.batched), put_with_leases_batched_ops: median(runs.batched), lease_keepalive_cost: cost('batched') } : {}),
    ...(modes.includes('each') ? { put_with_leases_each_ops: median(runs.each), lease_keepalive_cost_request_each: cost('each') } : {}),
    keepalives_ok: counts.renewed,
    keepalive_errors: counts.errors,
  };
}

type RenewMode = 'each' | 'batched';

/**
 * Renews every lease every RENEW_EVERY_MS, spread evenly, until the returned stop() is
 * awaited. `each`: one request per keep-alive, as 10,000 clients holding a lease each would
 * (one in flight each at most: a node answers a keep-alive once the next tick's command
 * commits, so thousands wait at any moment). `batched`: the keep-alives due are sent every
 * BATCH_EVERY_MS as one `POST /v1/leases/keepalive` per node, as one client holding them
 * all (PangeaClient.keepAliveLeases) would.
 */
function renew(mode: RenewMode, origins: readonly string[], ids: readonly string[], counts: { renewed: number; errors: number }, errorStatuses: Map<number, number>): () => Promise<void> {
  let renewing = true;
  let inFlight = 0;
  const started = performance.now();
  let sent = 0;
  const done = (s: number, n: number): void => {
    inFlight--;
    if (s === 200) counts.renewed += n;
    else {
      counts.errors += n;
      errorStatuses.set(s, (errorStatuses.get(s) ?? 0) + n);
    }
  };
  const loop = (async () => {
    while (renewing) {
      const due = Math.floor(((performance.now() - started) / RENEW_EVERY_MS) * ids.length);
      if (mode === 'each') {
        while (sent < due && inFlight < ids.length) {
          const id = ids[sent % ids.length]!;
          const origin = origins[sent % origins.length]!;
          sent++;
          inFlight++;
          void send(origin, 'POST', `/v1/leases/${id}/keepalive`, '', false).then((s) => done(s, 1));
        }
        await sleep(5);
      } else {
        const batch: string[] = [];
        while (sent < due) batch.push(ids[sent++ % ids.length]!);
        origins.forEach((origin, o) => {
          const part = batch.filter((_, i) => i % origins.length === o);
          if (part.length === 0) return;
          inFlight++;
          void send(origin, 'POST', '/v1/leases/keepalive', JSON.stringify({ ids: part }), true).then((s) => done(s, part.length));
        });
        await sleep(BATCH_EVERY_MS);
      }
    }
  })();
  return async () => {
    renewing = false;
    await loop;
    while (inFlight > 0) await sleep(10);
  };
}

/**
 * Cold resume: `count` puts on one archiving node, its hot log pruned past them, then one
 * watch from index 0 timed to its last change event.
 */
async function coldResume(root: string, count: number): Promise<Record<string, number>> {
  const keyFile = join(root, 'archive.key');
  await writeNewKeyFile(keyFile);
  const node = await startNode({
    dataDir: join(root, 'cold-node'),
    extra: ['--archive-url', pathToFileURL(join(root, 'cold-archive')).href, '--archive-key-file', keyFile, '--snapshot-segments', '1', '--hot-retention', '1000',
      '--archive-delay-entries', '100', '--archive-delay', '0s', '--archive-interval', '200ms', '--prune-interval', '500ms'],
  });
  await waitFor('the cold-resume node to be ready', () => isReady(node), 30_000);
  const origin = node.info.http;
  let next = 0;
  let last = 0;
  const value = 'v'.repeat(VALUE_BYTES);
  const t0 = performance.now();
  await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
    while (next < count) {
      const i = next++;
      while ((await send(origin, 'PUT', `/v1/kv/cold/${i % 1000}`, value, false)) !== 200) await sleep(10);
    }
  }));
  const writeS = (performance.now() - t0) / 1000;
  last = ((await (await fetch(`${origin}/v1/cluster`)).json()) as { appliedIndex: number }).appliedIndex;
  await waitFor(`the hot log pruned past index ${count}`, async () => {
    await send(origin, 'PUT', '/v1/kv/tick', 'x', false);
    return (await metric(node, 'pangea_hot_first_index')) > count;
  }, 300_000);
  const started = performance.now();
  const res = await fetch(`${origin}/v1/watch?prefix=cold/&after=0&progress=3600`);
  if (!res.ok) throw new Error(`watch answered ${res.status}`);
  let events = 0;
  let lastIndex = 0;
  for await (const e of readEvents(res.body!)) {
    if (e.event === 'error') throw new Error(`cold watch: ${e.data}`);
    if (e.event !== 'change') continue;
    events++;
    lastIndex = Number(e.id);
    if (lastIndex >= last) break;
  }
  const seconds = (performance.now() - started) / 1000;
  await node.kill('SIGTERM');
  return { indexes: last, events, write_s: round(writeS, 1), read_s: round(seconds, 2), events_per_s: Math.round(events / seconds) };
}

export async function run(args: string[]): Promise<void> {
  const opts = parseArgs(args);
  const root = tempDir('pangea-bench-watch-');
  const clusters: Cluster[] = [];
  const cleanup = async (): Promise<void> => {
    await Promise.allSettled(clusters.map((c) => c.stop()));
    await killAll();
    agent.destroy();
    removeDir(root);
  };
  process.once('SIGINT', () => void cleanup().finally(() => process.exit(130)));
  const out: Record<string, unknown> = { bench: 'watch', seconds: opts.seconds, cores: cpus().length, concurrency: CONCURRENCY };
  try {
    const version = opts.only === 'pangea' ? null : etcdVersion();
    out.etcd_version = version;
    if (!version && opts.only !== 'pangea') console.log('etcd not found on PATH (apt-get install etcd-server): Pangea alone, no ratios.');
    const results: Record<string, Record<string, number>> = {};
    const systems = opts.part === 'cold' ? [] : [...(opts.only !== 'etcd' ? [pangea] : []), ...(version && opts.only !== 'pangea' && opts.part !== 'leases' ? [etcd] : [])];
    for (const system of systems) {
      const cluster = system === pangea ? await startPangea(`${root}/pangea`, opts.cpuProfDir) : await startEtcd(`${root}/etcd`);
      clusters.push(cluster);
      for (const [i, w] of opts.part === 'leases' ? [] : WATCHERS.entries()) {
        const f = await fanOut(system, cluster.origins, w, opts.seconds, i);
        results[`${system.name}_${w}`] = f;
        console.log(`${system.name}, ${w} watchers: ${JSON.stringify(f)}`);
        for (const [k, v] of Object.entries(f)) out[`${system.name}_watch${w}_${k}`] = v;
      }
      if (system === pangea && opts.part !== 'watch') {
        console.log(`pangea, lease keep-alive cost (${opts.pairs} alternating pairs of ${opts.seconds} s):`);
        Object.assign(out, await leaseCost(cluster, opts.leases, opts.seconds, opts.pairs, opts.renew));
      }
      await cluster.stop();
    }
    for (const w of WATCHERS) {
      const p = results[`pangea_${w}`];
      const e = results[`etcd_${w}`];
      if (p && e) out[`watch_events_ratio_vs_etcd_${w}`] = round(p.events_per_s! / e.events_per_s!, 2);
    }
    out.watch_missing_events = WATCHERS.reduce((s, w) => s + (results[`pangea_${w}`]?.missing_events ?? 0), 0);
    if ((opts.part === null || opts.part === 'cold') && opts.only !== 'etcd') {
      const c = await coldResume(root, opts.cold);
      console.log(`pangea, cold resume of ${c.indexes} indexes below the hot log: ${JSON.stringify(c)}`);
      for (const [k, v] of Object.entries(c)) out[`pangea_cold_${k}`] = v;
      out.watch_cold_events_per_s = c.events_per_s;
    }
    console.log(JSON.stringify(out));
  } finally {
    await cleanup();
  }
}
