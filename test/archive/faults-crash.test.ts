/**
 * A prune killed midway. Pruning ends in one log write: the `compact` op, which records the
 * compacted point and removes the slots at or below it in one LMDB batch. A child process
 * opens a copy of a node's data dir, hands that write over and is SIGKILLed at a chosen
 * moment (at once, on the next turn, after a few milliseconds, once committed, once
 * durable). Reopened, the log must load and either hold the new compacted point with the
 * slots after it all present, or be unchanged: never slots gone without the point.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { cpSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import type { LogPoint } from '../../src/consensus/index.js';
import { openStores } from '../../src/stores.js';
import { FaultyStore, TestNode, newCesKey, newIdentity, removeTempDirs, settingsFor, tempDir } from './fixture.js';
import { FileObjectStore } from '../../src/archive/file-store.js';

after(() => removeTempDirs());

const LMDB_MODULE = new URL('../../src/stores.js', import.meta.url).href;

const CHILD = `
import { openStores } from ${JSON.stringify(LMDB_MODULE)};
const [dir, through, mode] = process.argv.slice(1);
const stores = openStores(dir);
const kill = () => process.kill(process.pid, 'SIGKILL');
const done = stores.log.write([{ kind: 'compact', through: JSON.parse(through) }]);
if (mode === 'sync') kill();
else if (mode === 'turn') setImmediate(kill);
else if (mode === 'committed') stores.log.committed().then(kill);
else if (mode === 'durable') done.then(kill);
else setTimeout(kill, Number(mode));
setTimeout(() => process.exit(3), 10000);
`;

function runChild(dir: string, through: LogPoint, mode: string): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', CHILD, dir, JSON.stringify(through), mode], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('exit', (code, signal) => resolve({ code, signal, stderr }));
  });
}

test('a compact write killed at any moment leaves the point moved with its slots removed, or nothing changed', { timeout: 60_000 }, async (t) => {
  // A node that archived and verified: the prune target is known, the write not made.
  const w = join(tempDir(), 'archive');
  const [a, b] = await Promise.all([newIdentity(), newIdentity()]);
  const node = new TestNode({ identity: a, voters: [a.peerId, b.peerId], settings: settingsFor(new FileObjectStore(w).url), ballot: { round: 1, leader: a.peerId }, writeCompact: false });
  const store = new FaultyStore(new FileObjectStore(w));
  const arch = node.archiver(store, newCesKey());
  for (let i = 0; i < 4; i++) {
    await node.feedSegments(1);
    await arch.archiveOnce();
  }
  await node.feed(15);
  await arch.pruneOnce();
  assert.equal(arch.stats.pruneErrors, 0, arch.stats.pruneLastError);
  assert.equal(node.compactCalls.length, 1);
  const through = node.compactCalls[0]!;
  const lastSlot = node.appliedSlot;
  const applied = node.stores.state.applied();
  assert.ok(through.slot > 1 && through.slot < lastSlot - 5);
  await node.close();

  const modes = ['sync', 'turn', '0', '1', '2', '5', '20', 'committed', 'durable', 'sync', 'turn', '1'];
  const outcomes: string[] = [];
  for (const [i, mode] of modes.entries()) {
    const dir = join(tempDir(), `trial-${i}`);
    cpSync(node.dir, dir, { recursive: true });
    const r = await runChild(dir, through, mode);
    assert.equal(r.signal, 'SIGKILL', `child (${mode}) exited ${String(r.code)}: ${r.stderr}`);

    const stores = openStores(dir);
    try {
      const loaded = stores.log.load();
      const slots = loaded.slots.map((s) => s.slot);
      assert.equal(loaded.commit, lastSlot);
      assert.deepEqual(stores.state.applied().point, applied.point, 'the state is untouched');
      if (loaded.compacted === null) {
        outcomes.push(`${mode}: unchanged`);
        assert.deepEqual(slots, Array.from({ length: lastSlot }, (_, k) => k + 1), `${mode}: no point, so every slot must be there`);
      } else {
        outcomes.push(`${mode}: compacted`);
        assert.deepEqual(loaded.compacted, through);
        assert.deepEqual(slots, Array.from({ length: lastSlot - through.slot }, (_, k) => through.slot + 1 + k), `${mode}: every slot after the point`);
        assert.deepEqual(stores.log.readSlots(1, lastSlot).map((s) => s.slot), slots);
      }
      if (mode === 'committed' || mode === 'durable') assert.ok(loaded.compacted !== null, `${mode}: a committed compaction survives SIGKILL`);
    } finally {
      await stores.close();
    }
  }
  t.diagnostic(outcomes.join(', '));
});
