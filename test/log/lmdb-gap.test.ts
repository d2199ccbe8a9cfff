/**
 * Review finding (session 12): lmdb-js's writer goes on to the next queued transaction after
 * one fails, and a full disk may still take a small one. A log batch that rewrote slot 5 at
 * a new ballot, lost with its (big) transaction, followed by a small batch whose commit
 * marker covers slot 5, left slot 5's OLD value looking chosen after a restart. Each batch is
 * now a conditional block on the sequence record the batch before it sets (src/log/lmdb.ts),
 * so the writer thread skips the second batch (or it fails with the first). A child
 * process with a file size limit (`ulimit -f`) plays the full disk, on a real LMDB file.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import type { StoredSlot } from '../../src/consensus/index.js';
import { LmdbLogStore } from '../../src/log/lmdb.js';
import { openEnv } from '../../src/storage/env.js';

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const enc = new TextEncoder();
const slot = (n: number, round: number, v: string): StoredSlot => ({ slot: n, ballot: { round, leader: 'x' }, batch: [{ kind: 'app', data: enc.encode(v) }], chosen: false }) as unknown as StoredSlot;

/** The second batch is written this long after the first (lmdb-js closes the first
 *  transaction at some point; its failure is known some milliseconds later): 0 is the next
 *  turn. Before the fix, 5 to 15 ms let the second batch commit on its own. */
const DELAYS_MS = [0, 3, 6, 10, 15];

for (const delayMs of DELAYS_MS) test(`a failed log transaction takes no later batch to disk with it (a commit marker never covers a lost slot), second batch after ${delayMs} ms`, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'pangea-log-gap-'));
  dirs.push(dir);
  {
    const env = openEnv(dir);
    const log = new LmdbLogStore(env);
    await log.write([{ kind: 'slot', slot: slot(5, 1, 'v_old') }, { kind: 'commit', slot: 4 }]);
    await env.root.close();
  }
  const url = (p: string): string => new URL(p, import.meta.url).href;
  const child = `
    import { openEnv } from '${url('../../src/storage/env.js')}';
    import { LmdbLogStore } from '${url('../../src/log/lmdb.js')}';
    import { StagedState } from '${url('../../src/state/staged.js')}';
    process.on('SIGXFSZ', () => {});
    process.on('unhandledRejection', () => {}); // lmdb-js rejects a promise no one holds
    const enc = new TextEncoder();
    const slot = (n, round, v) => ({ slot: n, ballot: { round, leader: 'y' }, batch: [{ kind: 'app', data: enc.encode(v) }], chosen: false });
    const env = openEnv(${JSON.stringify(dir)});
    const log = new LmdbLogStore(env);
    const state = new StagedState(env);
    state.onFailure = () => {};
    log.beforeHandOver = () => state.handOver(); // as src/stores.ts
    // Applies held back for the next log write: more than the disk takes.
    const big = new Uint8Array(64 * 1024).fill(7);
    for (let i = 0; i < 64; i++) state.put('kv', enc.encode('k' + i), big);
    state.commit();
    const out = {};
    // Slot 5 = w at ballot 2, with the state (queued in the same turn: one transaction),
    // which fails.
    state.handOver();
    log.write([{ kind: 'slot', slot: slot(5, 2, 'w') }]).then(() => (out.first = 'ok'), () => (out.first = 'failed'));
    // The next turn, before that failure is known: slot 6 and the marker through 5.
    (${delayMs} === 0 ? setImmediate : (f) => setTimeout(f, ${delayMs}))(() => log.write([{ kind: 'slot', slot: slot(6, 2, 'z') }, { kind: 'commit', slot: 5 }]).then(() => (out.second = 'ok'), () => (out.second = 'failed')));
    setTimeout(() => { console.log(JSON.stringify(out)); process.exit(0); }, 1000);
  `;
  const run = spawnSync('bash', ['-c', `ulimit -f 600; exec "${process.execPath}" --input-type=module -e "$0"`, child], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(run.status, 0, run.stderr);
  assert.deepEqual(JSON.parse(run.stdout.trim().split('\n').at(-1)!), { first: 'failed', second: 'failed' });
  const env = openEnv(dir);
  const log = new LmdbLogStore(env);
  const loaded = log.load();
  const five = loaded.slots.find((s) => s.slot === 5)!;
  const value = new TextDecoder().decode((five.batch[0] as { data: Uint8Array }).data);
  assert.ok(loaded.commit < 5 || value === 'w', `the marker covers slot 5 (commit ${loaded.commit}) while it holds ${value}`);
  assert.deepEqual(log.readSlots(5, 6), [], 'nothing reads as chosen');
  await env.root.close();
});
