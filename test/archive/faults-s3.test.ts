/**
 * Archive faults over the S3 path: the archiver against a real S3-speaking server (s3rver in
 * this process) through the real S3 store. An upload failing midway and resumed; shards
 * deleted and rebuilt (and too many deleted); the server unreachable (its port closed: a TCP
 * relay in front of s3rver is taken down) and back.
 */
import assert from 'node:assert/strict';
import { createServer, connect, type AddressInfo, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { openObjectStore } from '../../src/archive/open-store.js';
import { readBestManifest, type ManifestBody } from '../../src/archive/manifest.js';
import { shardKey, sha256Hex } from '../../src/archive/objects.js';
import type { ObjectStore } from '../../src/archive/store.js';
import { KeyRing, type CesKey } from '../../src/ces/index.js';
import { verifySegment } from '../../src/archive/verify.js';
import { CLUSTER, FaultyStore, TestNode, newCesKey, newIdentity, removeTempDirs, settingsFor, tempDir, type Identity } from './fixture.js';
import { S3_REGION, startS3, type TestS3 } from './s3rver.js';

let s3: TestS3 | null = null;
const nodes: TestNode[] = [];
const stores: ObjectStore[] = [];
const relays: Relay[] = [];
before(async () => {
  s3 = await startS3(join(tempDir(), 's3'));
});
after(async () => {
  for (const n of nodes) await n.close().catch(() => undefined);
  for (const s of stores) await s.close().catch(() => undefined);
  for (const r of relays) await r.down();
  await s3?.close();
  removeTempDirs();
});

/** A TCP relay to s3rver that can be taken down (its port then refuses connections) and back up on the same port. */
class Relay {
  private server: Server | null = null;
  private readonly sockets = new Set<Socket>();
  port = 0;

  constructor(private readonly target: number) {}

  async up(): Promise<void> {
    const server = createServer((client) => {
      const upstream = connect(this.target, '127.0.0.1');
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on('close', () => this.sockets.delete(s));
        s.on('error', () => {
          client.destroy();
          upstream.destroy();
        });
      }
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', resolve);
    });
    this.port = (server.address() as AddressInfo).port;
    this.server = server;
  }

  async down(): Promise<void> {
    const server = this.server;
    this.server = null;
    for (const s of this.sockets) s.destroy();
    if (server) await new Promise((resolve) => server.close(resolve));
  }
}

interface World {
  readonly store: FaultyStore;
  readonly key: CesKey;
  readonly a: Identity;
  readonly b: Identity;
  node(id: Identity, leader: boolean): TestNode;
}

let prefixes = 0;
async function world(url?: string): Promise<World> {
  const inner = await openObjectStore(url ?? s3!.url(`faults-${++prefixes}`));
  stores.push(inner);
  const store = new FaultyStore(inner);
  const [a, b] = await Promise.all([newIdentity(), newIdentity()]);
  const settings = settingsFor(store.url);
  return {
    store,
    key: newCesKey(),
    a,
    b,
    node: (id, leader) => {
      const n = new TestNode({ identity: id, voters: [a.peerId, b.peerId], settings, ballot: leader ? { round: 1, leader: id.peerId } : null });
      nodes.push(n);
      return n;
    },
  };
}

async function best(store: ObjectStore): Promise<ManifestBody> {
  const scan = await readBestManifest(store, CLUSTER);
  assert.ok(scan.best, `no valid manifest: ${JSON.stringify(scan.rejected)}`);
  return scan.best.body;
}

async function assertStoreMatches(store: ObjectStore, m: ManifestBody): Promise<void> {
  for (const o of [...m.segments, ...m.snapshots]) {
    for (const [i, rec] of o.shards.entries()) {
      const bytes = await store.get(shardKey(o.prefix, i));
      assert.equal(bytes.byteLength, rec.size);
      assert.equal(sha256Hex(bytes), rec.sha256, `${o.prefix} shard ${i}`);
    }
  }
}

test('S3: an upload failing midway is counted, publishes nothing, and is finished by the next run reusing the uploaded shards', async () => {
  const w = await world();
  const n = w.node(w.a, true);
  const arch = n.archiver(w.store, w.key);
  await n.feedSegments(1);
  w.store.failPutAt(4);
  await arch.archiveOnce();
  assert.equal(arch.stats.archiveErrors, 1);
  assert.match(arch.stats.archiveLastError, /shard-3.*connection reset/);
  assert.deepEqual(await w.store.inner.list('manifests/'), []);

  w.store.heal();
  w.store.puts.length = 0;
  await arch.archiveOnce();
  assert.equal(arch.stats.archiveErrors, 1, arch.stats.archiveLastError);
  const segPuts = w.store.puts.filter((p) => p.key.startsWith('segments/'));
  assert.deepEqual(segPuts.map((p) => p.result), ['exists', 'exists', 'exists', 'created', 'created', 'created']);
  const m = await best(w.store.inner);
  assert.equal(m.segments.length, 1);
  assert.equal(m.snapshots.length, 1);
  await assertStoreMatches(w.store.inner, m);
});

test('S3: up to m deleted shards are rebuilt byte for byte and pruning goes ahead; more than m is an error naming them', async () => {
  const w = await world();
  const leader = w.node(w.a, true);
  const follower = w.node(w.b, false);
  const arch = leader.archiver(w.store, w.key);
  for (let i = 0; i < 3; i++) {
    for (const n of [leader, follower]) await n.feedSegments(1);
    await arch.archiveOnce();
  }
  assert.equal(arch.stats.archiveErrors, 0, arch.stats.archiveLastError);
  await follower.feed(12);
  const m = await best(w.store.inner);
  assert.equal(m.segments.length, 3);

  // More than m gone from segment 3: a pruner names them and prunes nothing.
  const seg3 = m.segments[2]!;
  const saved3 = await Promise.all([0, 1, 3].map((i) => w.store.inner.get(shardKey(seg3.prefix, i))));
  for (const i of [0, 1, 3]) await w.store.inner.delete(shardKey(seg3.prefix, i));
  const p1 = follower.archiver(w.store, w.key);
  await p1.pruneOnce();
  assert.equal(p1.stats.pruneErrors, 1);
  for (const i of [0, 1, 3]) assert.ok(p1.stats.pruneLastError.includes(`${seg3.prefix}/shard-${i}: missing`), p1.stats.pruneLastError);
  assert.deepEqual(follower.compactCalls, []);
  for (const i of [0, 1, 3]) assert.equal(await w.store.inner.head(shardKey(seg3.prefix, i)), null);
  // Put back (as an operator restoring from elsewhere would).
  for (const [k, i] of [0, 1, 3].entries()) await w.store.inner.putIfAbsent(shardKey(seg3.prefix, i), saved3[k]!);

  // m gone from segment 2 and from the snapshot: rebuilt, then pruned.
  const seg2 = m.segments[1]!;
  const snap = m.snapshots.at(-1)!;
  const victims: [string, number][] = [[seg2.prefix, 1], [seg2.prefix, 4], [snap.prefix, 0], [snap.prefix, 5]];
  const originals = await Promise.all(victims.map(([p, i]) => w.store.inner.get(shardKey(p, i))));
  for (const [p, i] of victims) await w.store.inner.delete(shardKey(p, i));
  const p2 = follower.archiver(w.store, w.key);
  await p2.pruneOnce();
  assert.equal(p2.stats.pruneErrors, 0, p2.stats.pruneLastError);
  for (const [k, [p, i]] of victims.entries()) assert.deepEqual(Buffer.from(await w.store.inner.get(shardKey(p, i))), Buffer.from(originals[k]!), `${p} shard ${i}`);
  assert.deepEqual(follower.compactCalls, [snap.point]);
  await assertStoreMatches(w.store.inner, m);
  const r = await verifySegment({ store: w.store.inner, keys: new KeyRing([w.key]), cluster: CLUSTER, ces: m.ces }, seg2);
  assert.ok(r.ok, r.problems.join('; '));
});

test('S3 unreachable (a closed port): runs never throw and say why; when it is back, archiving catches up', async () => {
  const relay = new Relay(Number(new URL(s3!.endpoint).port));
  relays.push(relay);
  await relay.up();
  const endpoint = `http://127.0.0.1:${relay.port}`;
  const url = `s3://${s3!.bucket}/faults-relay?region=${S3_REGION}&endpoint=${encodeURIComponent(endpoint)}&path_style=true`;
  const w = await world(url);
  const n = w.node(w.a, true);
  const arch = n.archiver(w.store, w.key);
  await n.feedSegments(1);
  await arch.archiveOnce();
  assert.equal(arch.stats.archiveErrors, 0, arch.stats.archiveLastError);

  await relay.down();
  for (let i = 0; i < 2; i++) {
    await n.feedSegments(1);
    await arch.archiveOnce();
  }
  // Followers read the manifest to prune: unreachable too.
  const follower = w.node(w.b, false);
  await follower.feedSegments(3);
  const p = follower.archiver(w.store, w.key);
  await p.pruneOnce();
  assert.equal(arch.stats.archiveErrors, 2);
  assert.match(arch.stats.archiveLastError, /faults-relay.*failed.*(ECONNREFUSED|connect)/i);
  assert.equal(p.stats.pruneErrors, 1);
  assert.match(p.stats.pruneLastError, /manifests\/.*failed.*(ECONNREFUSED|connect)/i);
  assert.deepEqual(follower.compactCalls, []);

  await relay.up();
  await arch.archiveOnce();
  assert.equal(arch.stats.archiveErrors, 2, arch.stats.archiveLastError);
  const m = await best(w.store.inner);
  assert.equal(m.segments.length, 3);
  await assertStoreMatches(w.store.inner, m);
  await follower.feed(12);
  await p.pruneOnce();
  assert.equal(p.stats.pruneErrors, 1, p.stats.pruneLastError);
  assert.deepEqual(follower.compactCalls, [m.snapshots.at(-1)!.point]);
});
