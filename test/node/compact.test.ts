/**
 * `pangea compact`: a data dir whose hot log was pruned gets its space back, with every record
 * kept; a data dir a node runs on is refused.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { LogPoint, StoredSlot } from '../../src/consensus/index.js';
import { ENV_FILE } from '../../src/storage/env.js';
import { openStores } from '../../src/stores.js';
import { killAll, removeDir, startNode, tempDir, waitFor, isReady } from '../cluster/harness.js';

const RUN = fileURLToPath(new URL('../../../bin/run.js', import.meta.url));
const root = tempDir('pangea-compact-');
after(async () => {
  await killAll();
  removeDir(root);
});

function pangea(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [RUN, ...args], { timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1;
      if (code === -1) return reject(err);
      resolve({ code, stdout, stderr });
    });
  });
}

const SLOTS = 2_000;
const VALUE = new Uint8Array(8_192).fill(7);
const genesis: LogPoint = { slot: 0, index: 0, epochs: [{ fromSlot: 1, config: { voters: ['a'], learners: [] } }] };
const slot = (n: number): StoredSlot => ({ slot: n, ballot: { round: 1, leader: 'a' }, chosen: true, batch: [{ kind: 'app', data: VALUE }] });

test('compact shrinks a data dir whose hot log was pruned, and keeps every record', { timeout: 120_000 }, async () => {
  const dir = join(root, 'pruned');
  let stores = openStores(dir, { genesis });
  for (let from = 1; from <= SLOTS; from += 100) {
    await stores.log.write(Array.from({ length: 100 }, (_, i) => ({ kind: 'slot' as const, slot: slot(from + i) })));
  }
  await stores.log.write([{ kind: 'commit', slot: SLOTS }]);
  // The hot log pruned through all but the last 10 slots, as the pruner does behind the archive.
  const through: LogPoint = { slot: SLOTS - 10, index: SLOTS - 10, epochs: genesis.epochs };
  await stores.log.write([{ kind: 'compact', through }]);
  const before = stores.log.load();
  const applied = stores.state.applied();
  await stores.close();
  writeFileSync(join(dir, 'cluster.json'), '{}');
  const sizeBefore = statSync(join(dir, ENV_FILE)).size;

  const r = await pangea(['compact', '--data-dir', dir]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^compacted .*: .* -> .*$/m);
  const sizeAfter = statSync(join(dir, ENV_FILE)).size;
  assert.ok(sizeAfter < sizeBefore / 4, `the file shrank: ${sizeBefore} -> ${sizeAfter} bytes`);

  stores = openStores(dir);
  assert.deepEqual(stores.log.load(), before);
  assert.deepEqual(stores.state.applied(), applied);
  assert.equal(stores.log.load().slots.length, 10);
  await stores.close();
});

test('compact refuses the data dir of a running node, and one that is not a node\'s', { timeout: 120_000 }, async () => {
  const node = await startNode({ dataDir: join(root, 'running') });
  await waitFor('the node to be ready', () => isReady(node));
  const busy = await pangea(['compact', '--data-dir', node.dataDir]);
  assert.equal(busy.code, 1);
  assert.match(busy.stderr, /a node is running on .* stop it first/);
  await node.kill('SIGTERM');
  const empty = await pangea(['compact', '--data-dir', join(root, 'nothing')]);
  assert.equal(empty.code, 2);
  assert.match(empty.stderr, /is not a node's data dir/);
});
