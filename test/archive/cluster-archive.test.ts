/**
 * The archive end to end, with real processes: a 3-node cluster archives to s3rver while
 * puts, deletes and transactions flow, every node prunes its hot log past an archived
 * snapshot, and a 4th node with an empty data dir restores from the archive, catches up and
 * ends with the same state and chain; then a single node archives to file:// and a new
 * cluster restored from it at a past index holds exactly that index's state.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { writeNewKeyFile } from '../../src/ces/index.js';
import { clusterView, killAll, metric, removeDir, startNode, tempDir, waitFor, type TestNode } from '../cluster/harness.js';
import { startS3, type TestS3 } from './s3rver.js';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { Libp2pTransport } from '../../src/net/p2p.js';
import { BLOCKSYNC_PROTOCOL } from '../../src/sync/blocksync.js';

const dirs: string[] = [];
let s3: TestS3 | null = null;
after(async () => {
  await killAll();
  await s3?.close();
  for (const d of dirs) removeDir(d);
});

/** Fast archiving: tiny segments, no delay, short intervals. */
const FAST = ['--archive-delay-entries', '5', '--archive-delay', '0s', '--archive-interval', '100ms', '--prune-interval', '300ms', '--hot-retention', '20'];

async function ready(node: TestNode): Promise<boolean> {
  try {
    return (await fetch(`${node.info.http}/readyz`, { signal: AbortSignal.timeout(1000) })).status === 200;
  } catch {
    return false;
  }
}

type Op = { t: 'put'; key: string; value: string } | { t: 'delete'; key: string } | { t: 'txn'; key: string; value: string; other: string };

/** One operation through `http`; resolves with its log index, or null when not acknowledged. */
async function send(http: string, op: Op): Promise<number | null> {
  try {
    let res: Response;
    if (op.t === 'put') res = await fetch(`${http}/v1/kv/${op.key}`, { method: 'PUT', body: op.value, signal: AbortSignal.timeout(5000) });
    else if (op.t === 'delete') res = await fetch(`${http}/v1/kv/${op.key}`, { method: 'DELETE', signal: AbortSignal.timeout(5000) });
    else {
      const body = { compare: [{ key: op.key, target: 'exists', op: '==', value: true }], success: [{ op: 'put', key: op.other, value: op.value }], failure: [{ op: 'put', key: op.key, value: op.value }] };
      res = await fetch(`${http}/v1/txn`, { method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json' }, signal: AbortSignal.timeout(5000) });
    }
    const json = (await res.json()) as { index?: number };
    return res.ok && typeof json.index === 'number' ? json.index : null;
  } catch {
    return null;
  }
}

function randomOp(i: number): Op {
  const key = `k${i % 23}`;
  if (i % 7 === 3) return { t: 'delete', key };
  if (i % 5 === 1) return { t: 'txn', key, value: `t${i}`, other: `o${i % 11}` };
  return { t: 'put', key, value: `v${i}` };
}

/** Every key and value, read locally (stale), paging through. */
async function dump(node: TestNode): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  let after = '';
  for (;;) {
    const res = await fetch(`${node.info.http}/v1/kv?prefix=&limit=1000&consistency=stale${after ? `&after=${after}` : ''}`, { signal: AbortSignal.timeout(5000) });
    const page = (await res.json()) as { items: { key: string; value: string }[]; more: boolean };
    for (const it of page.items) out[it.key] = it.value;
    if (!page.more) return out;
    after = encodeURIComponent(page.items.at(-1)!.key);
  }
}

test('a 3-node cluster archives to S3 and prunes; a 4th node restores from the archive and catches up to the same state', { timeout: 240_000 }, async () => {
  const root = tempDir();
  dirs.push(root);
  s3 = await startS3(join(root, 's3'));
  const keyFile = join(root, 'archive.key');
  await writeNewKeyFile(keyFile);
  const common = ['--archive-key-file', keyFile, ...FAST];
  const n1 = await startNode({ dataDir: join(root, 'n1'), extra: [...common, '--archive-url', s3.url('cluster-a'), '--segment-entries', '40', '--snapshot-segments', '1'] });
  await waitFor('node 1 ready', () => ready(n1));
  const n2 = await startNode({ dataDir: join(root, 'n2'), join: n1.info.http, extra: common });
  const n3 = await startNode({ dataDir: join(root, 'n3'), join: n1.info.http, extra: common });
  const nodes = [n1, n2, n3];
  await waitFor('three ready voters', async () => {
    for (const n of nodes) if (!(await ready(n))) return false;
    const view = await clusterView(n1.info.http);
    return view.members.filter((m) => m.role === 'voter').length === 3;
  }, 60_000);

  // Records of a collection too (issue 15): in the snapshot node 4 restores.
  const json = { 'content-type': 'application/json' };
  assert.equal((await fetch(`${n1.info.http}/v1/collections/things`, { method: 'PUT', headers: json, body: JSON.stringify({ primaryKey: { field: 'id', type: 'integer' }, indexes: [{ name: 'by_tag', field: 'tag', type: 'string' }] }) })).status, 200);
  for (let r = 0; r < 20; r++) assert.equal((await fetch(`${nodes[r % 3]!.info.http}/v1/collections/things/records/${r}`, { method: 'PUT', headers: json, body: JSON.stringify({ id: r, tag: `t${r % 4}` }) })).status, 200);

  // Writers through every node while archiving and pruning go on.
  let i = 0;
  const writer = async (): Promise<void> => {
    while (i < 400) {
      const n = i++;
      await send(nodes[n % 3]!.info.http, randomOp(n));
    }
  };
  await Promise.all([writer(), writer(), writer(), writer()]);

  // Every node prunes its hot log past an archived snapshot (writes still trickle in: a
  // snapshot must be old enough for the retention).
  await waitFor('every node to prune past an archived snapshot', async () => {
    await send(nodes[i % 3]!.info.http, randomOp(i++));
    for (const n of nodes) if (!((await metric(n, 'pangea_hot_first_index')) > 200)) return false;
    return true;
  }, 60_000).catch(async (err: unknown) => {
    const texts = await Promise.all(nodes.map(async (n) => (await (await fetch(`${n.info.http}/metrics`)).text()).split('\n').filter((l) => /^pangea_(archive|prune|hot|commit)/.test(l)).join('\n')));
    throw new Error(`${String(err)}\n${texts.join('\n---\n')}\n${nodes.map((n) => n.output()).join('\n---\n')}`);
  });

  // The 4th node cannot catch up from slot 1 (pruned everywhere): it must restore.
  const n4 = await startNode({ dataDir: join(root, 'n4'), join: n1.info.http, extra: common });
  await waitFor('node 4 ready', () => ready(n4), 60_000);
  for (let k = 0; k < 30; k++) await send(nodes[k % 3]!.info.http, randomOp(1000 + k));
  const all = [...nodes, n4];
  const views = await waitFor('all four to apply the same index', async () => {
    const vs = await Promise.all(all.map((n) => clusterView(n.info.http)));
    return vs.every((v) => v.appliedIndex === vs[0]!.appliedIndex && v.appliedIndex === v.commitIndex) ? vs : null;
  }, 60_000);
  for (const v of views) assert.equal(v.chain, views[0]!.chain, 'hash chains differ at the same index');
  const states = await Promise.all(all.map(dump));
  for (const s of states.slice(1)) assert.deepEqual(s, states[0]);
  assert.ok(Object.keys(states[0]!).length > 10);
  assert.ok((await metric(n4, 'pangea_hot_first_index')) > 200, 'node 4 holds no log before its restored snapshot');
  const things = (await (await fetch(`${n4.info.http}/v1/collections/things/records?index=by_tag&eq=t1&consistency=stale`)).json()) as { items: { pk: number }[] };
  assert.deepEqual(things.items.map((r) => r.pk), [1, 5, 9, 13, 17], 'node 4 restored the records and their index');
  for (const n of all) assert.equal(await metric(n, 'pangea_archive_errors_total'), 0, `archive errors on ${n.dataDir}:\n${n.output()}`);

  // A 5th node without the archive key cannot restore by itself: peers have pruned, so it
  // catches up from slot 1 through block sync, which its peers serve from the archive.
  const n5 = await startNode({ dataDir: join(root, 'n5'), join: n4.info.http, extra: FAST });
  await waitFor('node 5 to catch up through block sync', async () => {
    const [v5, v1] = await Promise.all([clusterView(n5.info.http), clusterView(n1.info.http)]);
    return v5.appliedIndex === v1.appliedIndex && v5.chain === v1.chain;
  }, 90_000);
  assert.deepEqual(await dump(n5), states[0]);
  assert.ok((await metric(n5, 'pangea_blocksync_ranges_received_total')) > 0);
  const coldServed = await Promise.all(all.map(async (n) => {
    const text = await (await fetch(`${n.info.http}/metrics`)).text();
    return Number(/^pangea_blocksync_served_total\{source="cold"\} (\d+)$/m.exec(text)?.[1] ?? 0);
  }));
  assert.ok(coldServed.reduce((a, b) => a + b, 0) > 0, `no cold ranges served: ${coldServed.join(', ')}`);

  // The restored node serves ranges before its restored snapshot from the archive (cold),
  // counted in its metrics: asked directly over the block sync protocol.
  const probe = new Libp2pTransport({ privateKey: await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.1/tcp/0'], clusterId: views[0]!.clusterId });
  await probe.start();
  try {
    probe.setPeerAddresses(n4.info.peerId, n4.info.p2p);
    const answer = (await probe.request(n4.info.peerId, BLOCKSYNC_PROTOCOL, { v: 1, cluster: views[0]!.clusterId, from: 1, fromIndex: 1, to: 30 }, 10_000)) as {
      status: string;
      source?: string;
      values?: unknown[];
    };
    assert.equal(answer.status, 'ok', JSON.stringify(answer));
    assert.equal(answer.source, 'cold');
    assert.ok((answer.values?.length ?? 0) > 0);
  } finally {
    await probe.stop();
  }
  const n4Metrics = await (await fetch(`${n4.info.http}/metrics`)).text();
  assert.ok(Number(/^pangea_blocksync_served_total\{source="cold"\} (\d+)$/m.exec(n4Metrics)?.[1] ?? 0) > 0, 'node 4 counts no cold range served');
});

test('a 3-node cluster archives to file://; a new cluster restored from it at a past index holds exactly that index\'s state', { timeout: 120_000 }, async () => {
  const root = tempDir();
  dirs.push(root);
  const archiveUrl = pathToFileURL(join(root, 'archive')).href;
  const keyFile = join(root, 'n1', 'archive.key');
  const n1 = await startNode({ dataDir: join(root, 'n1'), extra: [...FAST, '--archive-url', archiveUrl, '--segment-entries', '30', '--snapshot-segments', '1'] });
  await waitFor('node ready', () => ready(n1));
  for (const name of ['n2', 'n3']) await startNode({ dataDir: join(root, name), join: n1.info.http, extra: [...FAST, '--archive-key-file', keyFile] });
  await waitFor('three voters', async () => (await clusterView(n1.info.http)).members.filter((m) => m.role === 'voter').length === 3, 60_000);

  // One writer, so the log's order is the order of the answers (the leader may change: the
  // answer's index says where each write went).
  const byIndex = new Map<number, Op>();
  // A block changed every tenth write too (blocks are state like keys: issue 15).
  const blockAt = new Map<number, number>();
  let blockRev = 0;
  // And records of a collection with an index (issue 15).
  const defined = await fetch(`${n1.info.http}/v1/collections/notes`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ primaryKey: { field: 'id', type: 'string' }, indexes: [{ name: 'by_k', field: 'k', type: 'integer' }] }) });
  assert.equal(defined.status, 200);
  const recordAt = new Map<number, { id: string; k: number }>();
  for (let k = 0; k < 200; k++) {
    const op = randomOp(k);
    const index = await send(n1.info.http, op);
    assert.ok(index !== null, `write ${k} not acknowledged`);
    byIndex.set(index, op);
    if (k % 10 === 5) {
      const transform = blockRev === 0 ? { inserts: { doc: { n: k } } } : { updates: { doc: [{ op: 'set', field: 'n', value: k }] } };
      const res = await fetch(`${n1.info.http}/v1/blocks/commit`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ actionId: `a${k}`, reads: blockRev === 0 ? [] : [{ id: 'doc', revision: blockRev }], transform }) });
      assert.equal(res.status, 200);
      blockRev = ((await res.json()) as { index: number }).index;
      blockAt.set(blockRev, k);
    }
    if (k % 10 === 7) {
      const rec = { id: `r${k % 3}`, k };
      const res = await fetch(`${n1.info.http}/v1/collections/notes/records/${rec.id}`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify(rec) });
      assert.equal(res.status, 200);
      recordAt.set(((await res.json()) as { index: number }).index, rec);
    }
  }
  const target = [...byIndex.keys()].sort((a, b) => a - b)[130]!;
  const blockN = [...blockAt].filter(([i]) => i <= target).sort((a, b) => a[0] - b[0]).at(-1)![1];
  const records = new Map<string, number>();
  for (const [, r] of [...recordAt].filter(([i]) => i <= target).sort((a, b) => a[0] - b[0])) records.set(r.id, r.k);
  await waitFor('the archive to pass the target index', async () => (await metric(n1, 'pangea_archive_last_index')) >= target + 40, 60_000);

  // The state at `target`, by the model.
  const expected: Record<string, string> = {};
  for (const [index, op] of [...byIndex].sort((a, b) => a[0] - b[0])) {
    if (index > target) break;
    if (op.t === 'put') expected[op.key] = op.value;
    else if (op.t === 'delete') delete expected[op.key];
    else if (op.key in expected) expected[op.other] = op.value;
    else expected[op.key] = op.value;
  }

  // A --checkpoint the archive contradicts stops the restore with a clear error.
  await assert.rejects(
    startNode({
      dataDir: join(root, 'bad'),
      extra: ['--restore-from', archiveUrl, '--restore-index', String(target), '--archive-key-file', keyFile, '--checkpoint', `${target}:${'ab'.repeat(32)}`],
    }),
    /differs from --checkpoint/,
  );

  const restored = await startNode({
    dataDir: join(root, 'r1'),
    extra: ['--restore-from', archiveUrl, '--restore-index', String(target), '--archive-key-file', keyFile],
  });
  await waitFor('restored node ready', () => ready(restored), 60_000);
  const view = await clusterView(restored.info.http);
  const original = await clusterView(n1.info.http);
  assert.notEqual(view.clusterId, original.clusterId, 'a restored cluster is a new cluster');
  assert.equal(view.members.length, 1);
  assert.deepEqual(await dump(restored), expected);
  const doc = (await (await fetch(`${restored.info.http}/v1/blocks/doc`)).json()) as { body: unknown };
  assert.deepEqual(doc.body, { n: blockN }, 'the block as it was at the index');
  const notes = (await (await fetch(`${restored.info.http}/v1/collections/notes/records?index=by_k&gte=0&lt=1000`)).json()) as { items: { pk: string; record: { k: number } }[] };
  assert.deepEqual(notes.items.map((r) => [r.pk, r.record.k]), [...records].sort((a, b) => a[1] - b[1]), 'the records and their index as they were at the index');
  // It takes writes, and archives them to a store of its own.
  assert.ok((await send(restored.info.http, { t: 'put', key: 'after', value: 'restore' })) !== null);
});
