/**
 * `npm run bench -- blocks [--seconds N] [--only pangea|etcd] [--cpu-prof DIR]`: optimistic commits on a
 * 3-node Pangea cluster, against the same pattern on a 3-node etcd 3.4 cluster (a txn that
 * compares the key's mod_revision and puts) when `etcd` is on PATH; both on loopback with
 * fsync on, 64 clients spread over the nodes, this process the load generator.
 *
 * - disjoint: each client commits to a block (key) of its own, based on the revision its last
 *   commit answered: no conflicts; commits/s and latency.
 * - hot: the 64 clients commit to 4 blocks; a conflict answers the current revision (Pangea's
 *   409 `conflicts[].current`; etcd's failed txn, which reads the key back in its failure
 *   branch) and the client tries again on it; commits/s and the share of attempts refused.
 *
 * Ends with one JSON line of every figure.
 */
import { Agent, request } from 'node:http';
import { resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { etcdVersion, startEtcd, startPangea, type Cluster } from './cluster.js';
import { removeDir, tempDir } from '../test/cluster/harness.js';

const CONCURRENCY = 64;
const HOT_BLOCKS = 4;
const agent = new Agent({ keepAlive: true, maxSockets: 256 });

function post(origin: string, path: string, body: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const data = Buffer.from(JSON.stringify(body));
  const url = new URL(path, origin);
  return new Promise((resolve) => {
    const req = request({ host: url.hostname, port: url.port, path: url.pathname, method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': data.byteLength } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        let json: Record<string, unknown> = {};
        try {
          json = JSON.parse(Buffer.concat(chunks).toString()) as Record<string, unknown>;
        } catch {
          // not JSON
        }
        resolve({ status: res.statusCode ?? 0, json });
      });
      res.on('error', () => resolve({ status: 0, json: {} }));
    });
    req.on('error', () => resolve({ status: 0, json: {} }));
    req.end(data);
  });
}

/** One optimistic commit of `id` based on `revision`: the new revision, or the current one
 *  when refused (`ok` false), or null on an error. */
export type Commit = (origin: string, id: string, revision: number, n: number) => Promise<{ ok: boolean; revision: number } | null>;

export const pangeaCommit: Commit = async (origin, id, revision, n) => {
  const transform = revision === 0 ? { inserts: { [id]: { n } } } : { updates: { [id]: [{ op: 'set', field: 'n', value: n }] } };
  const r = await post(origin, '/v1/blocks/commit', { actionId: `a${process.pid}-${id}-${n}-${Math.random().toString(36).slice(2)}`, reads: revision === 0 ? [] : [{ id, revision }], transform });
  if (r.status === 200) return { ok: true, revision: (r.json.revisions as Record<string, number>)[id]! };
  if (r.status === 409) return { ok: false, revision: ((r.json.conflicts as { current: number }[] | undefined)?.[0]?.current) ?? revision };
  if (r.status === 422 && revision === 0) return { ok: false, revision: -1 }; // inserted by another: read it
  return null;
};

const b64 = (s: string): string => Buffer.from(s).toString('base64');
export const etcdCommit: Commit = async (origin, id, revision, n) => {
  const key = b64(`blocks/${id}`);
  const r = await post(origin, '/v3/kv/txn', {
    compare: [{ key, target: 'MOD', result: 'EQUAL', mod_revision: String(revision) }],
    success: [{ request_put: { key, value: b64(JSON.stringify({ n })) } }],
    failure: [{ request_range: { key } }],
  });
  if (r.status !== 200) return null;
  const header = r.json.header as { revision: string };
  if (r.json.succeeded === true) return { ok: true, revision: Number(header.revision) };
  const kvs = ((r.json.responses as { response_range?: { kvs?: { mod_revision: string }[] } }[])[0]?.response_range?.kvs) ?? [];
  return { ok: false, revision: Number(kvs[0]?.mod_revision ?? 0) };
};

/** Pangea's "read it" after an insert lost: the block's revision now. */
async function pangeaRevision(origin: string, id: string): Promise<number> {
  const r = await post(origin, '/v1/blocks/get', { ids: [id] });
  return ((r.json.items as { revision: number }[] | undefined)?.[0]?.revision) ?? 0;
}

export interface Figures {
  commitsPerS: number;
  p50Ms: number;
  p99Ms: number;
  refusedShare: number;
  errors: number;
  /** The longest an action took from its first attempt to its commit (rebases included). */
  maxActionMs: number;
}

export async function phase(cluster: Cluster, commit: Commit, system: 'pangea' | 'etcd', hot: boolean, seconds: number, hotBlocks = HOT_BLOCKS): Promise<Figures> {
  const latencies: number[] = [];
  let maxActionMs = 0;
  let refused = 0;
  let errors = 0;
  let running = true;
  let recording = false;
  const tag = `${hot ? 'h' : 'd'}${Date.now() % 1e6}`;
  const loop = async (c: number): Promise<void> => {
    const origin = cluster.origins[c % cluster.origins.length]!;
    const id = hot ? `${tag}-${c % hotBlocks}` : `${tag}-${c}`;
    let revision = 0;
    let actionStart = performance.now();
    for (let n = 0; running; n++) {
      const t0 = performance.now();
      const r = await commit(origin, id, revision, n);
      const ms = performance.now() - t0;
      if (r?.ok === true) {
        if (recording) maxActionMs = Math.max(maxActionMs, performance.now() - actionStart);
        actionStart = performance.now();
      }
      if (r === null) {
        if (recording) errors++;
        await new Promise((res) => setTimeout(res, 10));
        continue;
      }
      revision = r.revision === -1 && system === 'pangea' ? await pangeaRevision(origin, id) : r.revision;
      if (!recording) continue;
      if (r.ok) latencies.push(ms);
      else refused++;
    }
  };
  const loops = Array.from({ length: CONCURRENCY }, (_, c) => loop(c));
  await new Promise((res) => setTimeout(res, 1000));
  recording = true;
  const t0 = performance.now();
  await new Promise((res) => setTimeout(res, seconds * 1000));
  recording = false;
  const elapsed = (performance.now() - t0) / 1000;
  running = false;
  await Promise.all(loops);
  latencies.sort((a, b) => a - b);
  const q = (p: number): number => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] ?? NaN;
  return { commitsPerS: latencies.length / elapsed, p50Ms: q(0.5), p99Ms: q(0.99), refusedShare: refused / Math.max(1, refused + latencies.length), errors, maxActionMs };
}

export async function run(args: string[]): Promise<void> {
  let seconds = 5;
  let only: 'pangea' | 'etcd' | null = null;
  let cpuProf: string | null = null;
  for (let i = 0; i < args.length; i += 2) {
    if (args[i] === '--seconds' && Number(args[i + 1]) > 0) seconds = Number(args[i + 1]);
    else if (args[i] === '--cpu-prof' && args[i + 1]) cpuProf = resolve(args[i + 1]!);
    else if (args[i] === '--only' && (args[i + 1] === 'pangea' || args[i + 1] === 'etcd')) only = args[i + 1] as 'pangea' | 'etcd';
    else throw new Error(`usage: npm run bench -- blocks [--seconds N] [--only pangea|etcd] [--cpu-prof DIR] (bad: ${args[i]})`);
  }
  const out: Record<string, number> = {};
  const systems: ('pangea' | 'etcd')[] = [];
  if (only !== 'etcd') systems.push('pangea');
  if (only !== 'pangea') {
    if (etcdVersion() === null) console.log('etcd is not on PATH (apt-get install etcd-server): Pangea alone, no ratio');
    else systems.push('etcd');
  }
  for (const system of systems) {
    const root = tempDir(`bench-blocks-${system}-`);
    const cluster = system === 'pangea' ? await startPangea(root, cpuProf) : await startEtcd(root);
    try {
      for (const hot of [false, true]) {
        const f = await phase(cluster, system === 'pangea' ? pangeaCommit : etcdCommit, system, hot, seconds);
        const name = `${system}_${hot ? 'hot' : 'disjoint'}`;
        console.log(`${name}: ${f.commitsPerS.toFixed(0)} commits/s, p50 ${f.p50Ms.toFixed(1)} ms, p99 ${f.p99Ms.toFixed(1)} ms, ${(100 * f.refusedShare).toFixed(0)}% of attempts refused, ${f.errors} errors`);
        out[`${name}_commits_per_s`] = Math.round(f.commitsPerS);
        out[`${name}_p99_ms`] = Number(f.p99Ms.toFixed(1));
        out[`${name}_refused_share`] = Number(f.refusedShare.toFixed(3));
      }
    } finally {
      await cluster.stop();
      removeDir(root);
    }
  }
  for (const kind of ['disjoint', 'hot']) {
    if (out[`pangea_${kind}_commits_per_s`] !== undefined && out[`etcd_${kind}_commits_per_s`]) {
      out[`ratio_${kind}`] = Number((out[`pangea_${kind}_commits_per_s`]! / out[`etcd_${kind}_commits_per_s`]!).toFixed(2));
      console.log(`${kind}: Pangea/etcd = ${out[`ratio_${kind}`]}`);
    }
  }
  console.log(JSON.stringify(out));
  agent.destroy();
}
