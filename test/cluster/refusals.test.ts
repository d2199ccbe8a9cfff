/**
 * `pangea serve` refuses what would surprise an operator, at once, saying what to fix: a data
 * dir of one cluster with `--join` of another, `--restore-from` on a data dir that holds a
 * node, a named key file that is not there, and a join the cluster refuses (admin token).
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { checkNodeDir, DATA_FORMAT } from '../../src/data-dir.js';
import { killAll, removeDir, startNode, tempDir, waitFor, isReady, type TestNode } from './harness.js';

const root = tempDir();
after(async () => {
  await killAll();
  removeDir(root);
});

async function exitOf(node: TestNode): Promise<number | null> {
  return waitFor('the node to exit', () => (node.proc.exitCode !== null ? node.proc.exitCode : null), 30_000);
}

test('serve refuses a data dir of another cluster, --restore-from on a node, a missing key file, and a refused join', { timeout: 120_000 }, async () => {
  const a = await startNode({ dataDir: join(root, 'a') });
  const b = await startNode({ dataDir: join(root, 'b') });
  await waitFor('both ready', async () => (await isReady(a)) && (await isReady(b)));
  await a.kill('SIGTERM');

  await assert.rejects(startNode({ dataDir: join(root, 'a'), join: b.info.http }), /--join .* is a member of cluster .*, but .* holds a node of cluster/);
  await assert.rejects(startNode({ dataDir: join(root, 'a'), extra: ['--restore-from', `file://${join(root, 'b', 'archive')}`] }), /--restore-from needs an empty data dir/);
  await assert.rejects(startNode({ dataDir: join(root, 'c'), extra: ['--archive-key-file', join(root, 'no-such.key')] }), /--archive-key-file: .*ENOENT/);

  // A cluster with an admin token; a node that joins without it stops at once, saying so.
  const tokenFile = join(root, 'token');
  writeFileSync(tokenFile, 'the-token\n', { mode: 0o600 });
  const d = await startNode({ dataDir: join(root, 'd'), extra: ['--admin-token-file', tokenFile] });
  await waitFor('d ready', () => isReady(d));
  // It may exit before or after the harness sees its node.json: either way, exit 1 saying so.
  const refused = /refused this node \(401\): the cluster needs its admin token: give it with --admin-token-file/;
  let e: TestNode | null = null;
  try {
    e = await startNode({ dataDir: join(root, 'e'), join: d.info.http });
  } catch (err) {
    assert.match((err as Error).message, /node exited with 1/);
    assert.match((err as Error).message, refused);
  }
  if (e !== null) {
    assert.equal(await exitOf(e), 1);
    assert.match(e.output(), refused);
  }
});

test('serve and the offline tools refuse a data dir of a newer data format, naming what to do', { timeout: 120_000 }, async () => {
  const dir = join(root, 'future');
  const f = await startNode({ dataDir: dir });
  await waitFor('f ready', () => isReady(f));
  await f.kill('SIGTERM');
  const file = join(dir, 'cluster.json');
  const cluster = JSON.parse(readFileSync(file, 'utf8')) as { format?: number };
  assert.equal(cluster.format, DATA_FORMAT, 'a new data dir records its format');
  writeFileSync(file, JSON.stringify({ ...cluster, format: DATA_FORMAT + 1 }));
  await assert.rejects(startNode({ dataDir: dir }), new RegExp(`data format ${DATA_FORMAT + 1} was written by a newer Pangea; this build reads formats up to ${DATA_FORMAT}`));
  assert.throws(() => checkNodeDir(dir), /data format .* was written by a newer Pangea/);
});

