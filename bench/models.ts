/**
 * `npm run bench -- models [--seconds N] [--only pangea]`: the data models (issue 15) on a
 * 3-node Pangea cluster, each against what it competes with, in the same run:
 *
 * - a one-shot block commit (one read, one `set`) at 64 clients on blocks of their own,
 *   against etcd 3.4's compare-and-put (a txn on the key's mod_revision) at 64, when `etcd` is
 *   on PATH: `block_commit_ratio_vs_etcd_cas`;
 * - 64 clients on 8 hot blocks, each rebasing on its conflicts until its action commits:
 *   `block_contended_goodput` (commits/s) and the longest any action took (`..._max_action_ms`,
 *   which should stay under 30 s);
 * - a record put into a collection with 2 indexes at 64 clients, against Pangea's own KV put
 *   at 64 (same cluster, same value size): `record_put_ratio_vs_kv`;
 * - a linearizable get through a unique index (`?index=&eq=`) at 64, against Pangea's own KV
 *   get at 64: `index_get_ratio_vs_kv`.
 *
 * Ends with one JSON line of every figure.
 */
import { etcdVersion, closedLoop, nodeHttpClient, startEtcd, startPangea, type Req } from './cluster.js';
import { etcdCommit, pangeaCommit, phase } from './blocks.js';
import { removeDir, tempDir } from '../test/cluster/harness.js';

const CONCURRENCY = 64;
const HOT_BLOCKS = 8;
const KEYS = 10_000;
const json = (v: unknown): Buffer => Buffer.from(JSON.stringify(v));

export async function run(args: string[]): Promise<void> {
  let seconds = 5;
  let withEtcd = true;
  for (let i = 0; i < args.length; i += 2) {
    if (args[i] === '--seconds' && Number(args[i + 1]) > 0) seconds = Number(args[i + 1]);
    else if (args[i] === '--only' && args[i + 1] === 'pangea') withEtcd = false;
    else throw new Error(`usage: npm run bench -- models [--seconds N] [--only pangea] (bad: ${args[i]})`);
  }
  const out: Record<string, number> = {};
  const client = nodeHttpClient();
  const root = tempDir('bench-models-pangea-');
  const cluster = await startPangea(root, null);
  try {
    const [origin] = cluster.origins as [string];
    // Blocks: disjoint one-shot commits, then 8 hot blocks under rebasing.
    const disjoint = await phase(cluster, pangeaCommit, 'pangea', false, seconds);
    console.log(`pangea block commit @${CONCURRENCY}: ${disjoint.commitsPerS.toFixed(0)}/s, p99 ${disjoint.p99Ms.toFixed(1)} ms`);
    out.pangea_block_commit_per_s = Math.round(disjoint.commitsPerS);
    out.pangea_block_commit_p99_ms = Number(disjoint.p99Ms.toFixed(1));
    const hot = await phase(cluster, pangeaCommit, 'pangea', true, seconds, HOT_BLOCKS);
    console.log(`pangea ${HOT_BLOCKS} hot blocks @${CONCURRENCY}: ${hot.commitsPerS.toFixed(0)} commits/s, ${(100 * hot.refusedShare).toFixed(0)}% of attempts refused, longest action ${hot.maxActionMs.toFixed(0)} ms`);
    out.block_contended_goodput = Math.round(hot.commitsPerS);
    out.block_contended_max_action_ms = Math.round(hot.maxActionMs);

    // Records against keys, on the same cluster.
    const define = await fetch(`${origin}/v1/collections/bench`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ primaryKey: { field: 'id', type: 'string' }, indexes: [{ name: 'by_email', field: 'email', type: 'string', unique: true }, { name: 'by_n', field: 'n', type: 'integer' }] }),
    });
    if (define.status !== 200) throw new Error(`defining the collection: ${define.status} ${await define.text()}`);
    const pad = 'x'.repeat(40);
    const recordPut = (i: number): Req => ({ method: 'PUT', path: `/v1/collections/bench/records/r${i}`, body: json({ id: `r${i}`, email: `u${i}@example.org`, n: i % 100, pad }), json: true });
    const kvPut = (i: number): Req => ({ method: 'PUT', path: `/v1/kv/k${i}`, body: Buffer.from(JSON.stringify({ id: `r${i}`, email: `u${i}@example.org`, n: i % 100, pad })), json: false });
    const kv = await closedLoop(client, cluster.origins, kvPut, CONCURRENCY, seconds);
    const rec = await closedLoop(client, cluster.origins, recordPut, CONCURRENCY, seconds);
    console.log(`pangea kv put @${CONCURRENCY}: ${kv.ops}/s, p99 ${kv.p99_ms} ms; record put (2 indexes): ${rec.ops}/s, p99 ${rec.p99_ms} ms`);
    out.pangea_kv_put_per_s = kv.ops;
    out.pangea_record_put_per_s = rec.ops;
    out.record_put_ratio_vs_kv = Number((rec.ops / Math.max(1, kv.ops)).toFixed(2));
    // Every record and key written once before the gets (the puts above chose at random).
    for (let i = 0; i < KEYS; i += 500) {
      const batch = Array.from({ length: 500 }, (_, j) => i + j);
      await Promise.all(batch.map((k) => client.send(origin, recordPut(k))));
      await Promise.all(batch.map((k) => client.send(origin, kvPut(k))));
    }
    const kvGet = (i: number): Req => ({ method: 'GET', path: `/v1/kv/k${i}`, body: null, json: false });
    const indexGet = (i: number): Req => ({ method: 'GET', path: `/v1/collections/bench/records?index=by_email&eq=u${i}%40example.org`, body: null, json: false });
    const kg = await closedLoop(client, cluster.origins, kvGet, CONCURRENCY, seconds);
    const ig = await closedLoop(client, cluster.origins, indexGet, CONCURRENCY, seconds);
    console.log(`pangea kv get @${CONCURRENCY}: ${kg.ops}/s, p99 ${kg.p99_ms} ms; unique-index get: ${ig.ops}/s, p99 ${ig.p99_ms} ms`);
    out.pangea_kv_get_per_s = kg.ops;
    out.pangea_index_get_per_s = ig.ops;
    out.index_get_ratio_vs_kv = Number((ig.ops / Math.max(1, kg.ops)).toFixed(2));
  } finally {
    await cluster.stop();
    removeDir(root);
  }
  if (withEtcd && etcdVersion() !== null) {
    const eroot = tempDir('bench-models-etcd-');
    const etcd = await startEtcd(eroot);
    try {
      const cas = await phase(etcd, etcdCommit, 'etcd', false, seconds);
      console.log(`etcd compare-and-put @${CONCURRENCY}: ${cas.commitsPerS.toFixed(0)}/s, p99 ${cas.p99Ms.toFixed(1)} ms`);
      out.etcd_cas_per_s = Math.round(cas.commitsPerS);
      out.block_commit_ratio_vs_etcd_cas = Number((out.pangea_block_commit_per_s! / Math.max(1, cas.commitsPerS)).toFixed(2));
      console.log(`block commit / etcd compare-and-put = ${out.block_commit_ratio_vs_etcd_cas}`);
    } finally {
      await etcd.stop();
      removeDir(eroot);
    }
  } else if (withEtcd) console.log('etcd is not on PATH (apt-get install etcd-server): no block_commit_ratio_vs_etcd_cas');
  console.log(JSON.stringify(out));
  client.close();
}
