/**
 * The archive's operator commands against a real node's archive (file://): `archive inspect`
 * lists what the manifests hold; `archive verify` passes a healthy archive, names a
 * corrupted shard's object, reports missing shards and rebuilds them byte for byte with
 * --repair (a corrupted one is first moved aside under quarantine/), and names an object with more than m shards gone as not decodable; `prune-hot`
 * refuses while the node runs and when a segment in its range is bad (leaving the hot log
 * as it was), and otherwise prunes, after which the node restarts on the pruned log and
 * still reads every key back.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { BestManifestInfo, InspectReport } from '../../src/archive/inspect.js';
import type { AuditReport } from '../../src/archive/audit.js';
import { LOCK_FILE } from '../../src/data-dir.js';
import { openStores } from '../../src/stores.js';
import { clusterView, isReady, killAll, metric, removeDir, startNode, tempDir, type TestNode, waitFor } from '../cluster/harness.js';

const RUN = fileURLToPath(new URL('../../../bin/run.js', import.meta.url));
const KEYS = 200;
/** Archived through at least this index before the commands run. */
const ARCHIVED_MIN = 150;
const PARITY_SHARDS = 2;

const root = tempDir('pangea-commands-');
const dataDir = join(root, 'n1');
const archiveDir = join(root, 'archive');
const archiveUrl = pathToFileURL(archiveDir).href;
const keyFile = join(dataDir, 'archive.key');
/** Fast archiving, no pruning by the node itself. */
const FLAGS = ['--archive-url', archiveUrl, '--segment-entries', '30', '--snapshot-segments', '1', '--archive-delay-entries', '5', '--archive-delay', '0s', '--archive-interval', '100ms',
  '--prune-interval', '0', '--hot-retention', '20'];

let node: TestNode | null = null;
let clusterId = '';
/** The best manifest once the node is stopped (the archive does not change after). */
let best: BestManifestInfo | null = null;

interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

function cli(...args: string[]): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [RUN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.once('error', reject);
    p.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

function show(r: CliResult): string {
  return `exit ${r.code}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`;
}

async function put(n: TestNode, key: string, value: string): Promise<void> {
  const res = await fetch(`${n.info.http}/v1/kv/${key}`, { method: 'PUT', body: value, signal: AbortSignal.timeout(5000) });
  assert.equal(res.status, 200, `PUT ${key}: ${await res.text()}`);
}

/** The stopped node's log markers and how many slots its hot log holds. */
async function hotLog(): Promise<{ compacted: unknown; slots: number; commit: number }> {
  const stores = openStores(dataDir);
  try {
    const loaded = stores.log.load();
    return { compacted: loaded.compacted, slots: loaded.slots.length, commit: loaded.commit };
  } finally {
    await stores.close();
  }
}

function shardPath(prefix: string, i: number): string {
  return join(archiveDir, ...prefix.split('/'), `shard-${i}`);
}

/** Copies of an object's shards `which`, to put back (or compare) later. */
function saveShards(prefix: string, which: readonly number[]): Map<number, Buffer> {
  return new Map(which.map((i) => [i, readFileSync(shardPath(prefix, i))]));
}

function restoreShards(prefix: string, saved: Map<number, Buffer>): void {
  for (const [i, bytes] of saved) writeFileSync(shardPath(prefix, i), bytes);
}

before(async () => {
  node = await startNode({ dataDir, extra: FLAGS });
  await waitFor('node ready', () => isReady(node!), 30_000);
  clusterId = (await clusterView(node.info.http)).clusterId;
  for (let i = 0; i < KEYS; i++) await put(node, `k${i}`, `v${i}`);
  await waitFor(`the archive to pass index ${ARCHIVED_MIN}`, async () => (await metric(node!, 'pangea_archive_last_index')) >= ARCHIVED_MIN, 60_000);
});

after(async () => {
  await killAll();
  removeDir(root);
});

test('archive inspect lists the manifests, segments and snapshots', async () => {
  const r = await cli('archive', 'inspect', '--url', archiveUrl, '--json');
  assert.equal(r.code, 0, show(r));
  const report = JSON.parse(r.stdout) as InspectReport;
  assert.ok(report.manifestCount >= 1);
  assert.ok(report.versions.every((v) => v.valid), show(r));
  assert.equal(report.versions.filter((v) => v.best).length, 1);
  const b = report.best!;
  assert.equal(b.cluster, clusterId);
  assert.match(b.keyId, /^[0-9a-f]{16}$/);
  assert.equal(b.ces.parityShards, PARITY_SHARDS);
  assert.ok(b.segments.count >= 5, `${b.segments.count} segments`);
  assert.equal(b.segments.list.length, b.segments.count);
  assert.equal(b.segments.firstIndex, 1);
  assert.ok(b.segments.lastIndex! >= ARCHIVED_MIN);
  assert.ok(b.snapshots.length >= 1);
  for (const s of b.snapshots) assert.ok(s.shardBytes > 0 && s.index > 0 && s.slot >= s.index);
  assert.deepEqual(b.gaps, []);
  assert.equal(b.shardBytes, b.segments.shardBytes + b.snapshots.reduce((n, s) => n + s.shardBytes, 0));

  const text = await cli('archive', 'inspect', '--url', archiveUrl);
  assert.equal(text.code, 0, show(text));
  assert.match(text.stdout, new RegExp(`cluster +${clusterId}`));
  assert.match(text.stdout, /gaps: none/);
});

test('archive verify passes a healthy archive', async () => {
  const r = await cli('archive', 'verify', '--url', archiveUrl, '--key-file', keyFile, '--json');
  assert.equal(r.code, 0, show(r));
  const report = JSON.parse(r.stdout) as AuditReport;
  assert.equal(report.ok, true);
  assert.ok(report.segments >= 5 && report.snapshots >= 1);
  assert.ok(report.objects.every((o) => o.ok));
  // Trusting only the node's members, with its own chain values: the same.
  const own = await cli('archive', 'verify', '--data-dir', dataDir);
  assert.equal(own.code, 0, show(own));
  assert.match(own.stdout, / 0 bad/);
  const usage = await cli('archive', 'verify', '--url', archiveUrl);
  assert.equal(usage.code, 2, show(usage));
});

test('prune-hot refuses while the node runs', async () => {
  const r = await cli('prune-hot', '--data-dir', dataDir, '--hot-retention', '20');
  assert.equal(r.code, 1, show(r));
  assert.match(r.stderr, /a node is running/);
  // The running node holds the lock; it lets go when it stops.
  assert.ok(existsSync(join(dataDir, LOCK_FILE)));
  await node!.kill('SIGTERM');
  assert.ok(!existsSync(join(dataDir, LOCK_FILE)), 'the stopped node left its lock behind');
  const inspect = await cli('archive', 'inspect', '--url', archiveUrl, '--json');
  best = (JSON.parse(inspect.stdout) as InspectReport).best;
  assert.ok(best !== null);
});

test('a corrupted shard fails verify and stops prune-hot, leaving the hot log as it was', async () => {
  const target = best!.segments.list[0]!.prefix;
  const saved = saveShards(target, [1]);
  const bytes = Buffer.from(saved.get(1)!);
  for (let i = bytes.length / 2 - 4; i < bytes.length / 2 + 4; i++) bytes[i]! ^= 0xff;
  writeFileSync(shardPath(target, 1), bytes);
  try {
    const r = await cli('archive', 'verify', '--url', archiveUrl, '--key-file', keyFile);
    assert.equal(r.code, 1, show(r));
    assert.match(r.stdout, new RegExp(`BAD segment ${target}\\n +${target}/shard-1: checksum mismatch`));
    assert.match(r.stderr, new RegExp(`1 bad object\\(s\\): ${target}`));
    // A range without it passes.
    const rest = await cli('archive', 'verify', '--url', archiveUrl, '--key-file', keyFile, '--from-index', String(best!.segments.list[1]!.first.index));
    assert.equal(rest.code, 0, show(rest));

    const before = await hotLog();
    assert.ok(before.slots > 100, `${before.slots} slots in the hot log`);
    const prune = await cli('prune-hot', '--data-dir', dataDir, '--hot-retention', '20');
    assert.equal(prune.code, 1, show(prune));
    assert.match(prune.stdout, new RegExp(`BAD segment ${target}`));
    assert.match(prune.stderr, /nothing pruned/);
    assert.deepEqual(await hotLog(), before);
    assert.ok(!existsSync(join(dataDir, LOCK_FILE)));
  } finally {
    restoreShards(target, saved);
  }
});

test('--repair moves a corrupted shard aside under quarantine/ and rebuilds it byte for byte', async () => {
  const target = best!.segments.list[0]!.prefix;
  const saved = saveShards(target, [2]);
  const bytes = Buffer.from(saved.get(2)!);
  bytes[7]! ^= 0x5a;
  writeFileSync(shardPath(target, 2), bytes);
  try {
    const repair = await cli('archive', 'verify', '--url', archiveUrl, '--key-file', keyFile, '--repair');
    assert.equal(repair.code, 0, show(repair));
    assert.match(repair.stdout, new RegExp(`REPAIRED segment ${target}\n +${target}/shard-2: checksum mismatch\n +moved 1 damaged shard\\(s\\) aside: quarantine/${target}/shard-2\\.[0-9a-f]{16}`));
    assert.ok(readFileSync(shardPath(target, 2)).equals(saved.get(2)!), 'the shard was rebuilt differently');
    const aside = readdirSync(join(archiveDir, 'quarantine', ...target.split('/'))).filter((f) => f.startsWith('shard-2.'));
    assert.equal(aside.length, 1, `quarantine holds ${aside.join(', ')}`);
    assert.ok(readFileSync(join(archiveDir, 'quarantine', ...target.split('/'), aside[0]!)).equals(bytes), 'the damaged bytes were kept');
    const again = await cli('archive', 'verify', '--url', archiveUrl, '--key-file', keyFile);
    assert.equal(again.code, 0, show(again));
  } finally {
    restoreShards(target, saved);
  }
});

test('missing shards (up to m) are reported, and rebuilt byte for byte with --repair', async () => {
  const target = best!.snapshots[0]!.prefix;
  const gone = [0, 4];
  assert.equal(gone.length, PARITY_SHARDS);
  const saved = saveShards(target, gone);
  for (const i of gone) rmSync(shardPath(target, i));

  const r = await cli('archive', 'verify', '--url', archiveUrl, '--key-file', keyFile);
  assert.equal(r.code, 1, show(r));
  for (const i of gone) assert.match(r.stdout, new RegExp(`${target}/shard-${i}: missing`));
  assert.match(r.stderr, new RegExp(`1 bad object\\(s\\): ${target}`));

  const repair = await cli('archive', 'verify', '--url', archiveUrl, '--key-file', keyFile, '--repair');
  assert.equal(repair.code, 0, show(repair));
  assert.match(repair.stdout, new RegExp(`REPAIRED snapshot ${target}`));
  assert.match(repair.stdout, /2 shard\(s\) rebuilt/);
  for (const [i, bytes] of saved) assert.ok(readFileSync(shardPath(target, i)).equals(bytes), `shard ${i} rebuilt differently`);

  const again = await cli('archive', 'verify', '--url', archiveUrl, '--key-file', keyFile);
  assert.equal(again.code, 0, show(again));
});

test('an object with more than m shards gone is named as not decodable', async () => {
  const target = best!.segments.list[2]!.prefix;
  const gone = [0, 1, 2];
  const saved = saveShards(target, gone);
  for (const i of gone) rmSync(shardPath(target, i));
  try {
    for (const repair of [[], ['--repair']]) {
      const r = await cli('archive', 'verify', '--url', archiveUrl, '--key-file', keyFile, ...repair);
      assert.equal(r.code, 1, show(r));
      assert.match(r.stdout, new RegExp(`BAD segment ${target}\\n(?: +.*\\n)* +does not decode`));
      assert.match(r.stderr, new RegExp(`1 bad object\\(s\\): ${target}`));
    }
  } finally {
    restoreShards(target, saved);
  }
});

test('prune-hot prunes the stopped node behind the verified archive; it restarts and reads every key back', async () => {
  const dry = await cli('prune-hot', '--data-dir', dataDir, '--hot-retention', '20', '--dry-run');
  assert.equal(dry.code, 0, show(dry));
  assert.match(dry.stdout, /dry run: would prune/);
  const before = await hotLog();

  const r = await cli('prune-hot', '--data-dir', dataDir, '--hot-retention', '20');
  assert.equal(r.code, 0, show(r));
  const m = /^pruned the hot log of .*: indexes 1\.\.(\d+) \(slots 1\.\.(\d+)\)$/m.exec(r.stdout);
  assert.ok(m, show(r));
  const through = Number(m[1]);
  assert.ok(through >= ARCHIVED_MIN - 30, `pruned only through ${through}`);
  assert.ok(best!.snapshots.some((s) => s.index === through && s.slot === Number(m[2])), 'pruned through a listed snapshot');
  assert.match(r.stdout, /hot log .* -> /);
  assert.match(r.stdout, /to give the space back to the disk: pangea compact --data-dir /);
  assert.ok(!existsSync(join(dataDir, LOCK_FILE)));
  const afterPrune = await hotLog();
  assert.equal((afterPrune.compacted as { index: number }).index, through);
  assert.ok(afterPrune.slots < before.slots);
  assert.equal(afterPrune.commit, before.commit);

  // Nothing is left to prune at the same retention.
  const again = await cli('prune-hot', '--data-dir', dataDir, '--hot-retention', '20');
  assert.equal(again.code, 0, show(again));
  assert.match(again.stdout, /nothing to prune/);

  node = await startNode({ dataDir, extra: FLAGS });
  await waitFor('restarted node ready', () => isReady(node!), 30_000);
  assert.equal(await metric(node, 'pangea_hot_first_index'), through + 1);
  for (let i = 0; i < KEYS; i++) {
    const res = await fetch(`${node.info.http}/v1/kv/k${i}`, { signal: AbortSignal.timeout(5000) });
    assert.equal(res.status, 200, `k${i}`);
    assert.equal(await res.text(), `v${i}`);
  }
  await put(node, 'after-prune', 'ok');
});

test('a stale prune lock (its process gone) is taken over; a held one refuses', async () => {
  await node!.kill('SIGTERM');
  const lockPath = join(dataDir, LOCK_FILE);
  // A pid that is not running: a child that has exited.
  const dead = await new Promise<number>((resolve) => {
    const p = spawn(process.execPath, ['-e', '']);
    p.once('exit', () => resolve(p.pid!));
  });
  writeFileSync(lockPath, `${dead}\n`);
  const stale = await cli('prune-hot', '--data-dir', dataDir, '--hot-retention', '20', '--dry-run');
  assert.equal(stale.code, 0, show(stale));
  assert.ok(!existsSync(lockPath));

  writeFileSync(lockPath, `${process.pid}\n`);
  try {
    const held = await cli('prune-hot', '--data-dir', dataDir, '--dry-run');
    assert.equal(held.code, 1, show(held));
    assert.match(held.stderr, new RegExp(`held by process ${process.pid}`));
  } finally {
    rmSync(lockPath, { force: true });
  }
  const usage = await cli('prune-hot', '--data-dir', join(root, 'nowhere'));
  assert.equal(usage.code, 2, show(usage));
});
