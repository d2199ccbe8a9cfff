/**
 * The state machine's staged writes (src/state/staged.ts) on a real LMDB file: reads see
 * what is staged before lmdb-js commits it, in key order merged with what is committed; a
 * rollback forgets an apply's writes; a frozen stage plus a read transaction is one moment.
 * Checked against a model (a sorted map) over random operations, commits and waits.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { openEnv, type StoreEnv } from '../../src/storage/env.js';
import { SEALED_WRITES_MAX, StagedState } from '../../src/state/staged.js';
import { Rng } from '../sim/rng.js';

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function env(): StoreEnv {
  const d = mkdtempSync(join(tmpdir(), 'pangea-staged-'));
  dirs.push(d);
  return openEnv(d);
}

const hex = (b: Uint8Array | string): string => (typeof b === 'string' ? b : Buffer.from(b).toString('hex'));
const key = (n: number): Uint8Array => new Uint8Array([n >> 8, n & 0xff]);

function modelRange(model: Map<string, string>, lo: string | null, hi: string | null, limit: number): [string, string][] {
  return [...model.entries()]
    .filter(([k]) => (lo === null || k >= lo) && (hi === null || k < hi))
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
    .slice(0, limit);
}

test('reads see staged writes, merged in key order over committed ones, before and after each commit', async () => {
  for (let seed = 1; seed <= 4; seed++) {
    const e = env();
    const s = new StagedState(e);
    const model = new Map<string, string>(); // hex key -> hex value
    const rand = new Rng(seed);
    const r = (): number => rand.float(); // the same operations on every run
    for (let step = 0; step < 600; step++) {
      const k = key(Math.floor(r() * 40));
      const roll = r();
      if (roll < 0.45) {
        const v = new Uint8Array([step & 0xff, (step >> 8) & 0xff]);
        s.put('kv', k, v);
        model.set(hex(k), hex(v));
      } else if (roll < 0.65) {
        s.remove('kv', k);
        model.delete(hex(k));
      } else if (roll < 0.8) {
        s.commit();
      } else if (roll < 0.85) {
        s.commit();
        await s.committed();
        assert.ok(s.idle());
      } else if (roll < 0.9) {
        await new Promise((res) => setImmediate(res)); // let lmdb-js commit some
      }
      // Every few steps: a point read and a bounded range agree with the model.
      if (step % 7 === 0) {
        const got = s.get('kv', k);
        assert.equal(got === undefined ? undefined : hex(got), model.get(hex(k)), `seed ${seed} step ${step}: get`);
        const a = Math.floor(r() * 40);
        const z = a + Math.floor(r() * 20);
        const limit = 1 + Math.floor(r() * 12);
        const got2 = [...s.range('kv', { start: key(a), end: key(z), limit })].map(({ key: kk, value }) => [hex(kk), hex(value)]);
        assert.deepEqual(got2, modelRange(model, hex(key(a)), hex(key(z)), limit), `seed ${seed} step ${step}: range`);
      }
    }
    s.commit();
    await s.committed();
    // Everything reached LMDB: a fresh look straight at the table agrees.
    const direct = [...e.kv.getRange({})].map(({ key: kk, value }) => [hex(kk), hex(value)]);
    assert.deepEqual(direct, modelRange(model, null, null, Infinity));
    await e.root.close();
  }
});

test('a rollback forgets what was staged since the last commit, and only that', async () => {
  const e = env();
  const s = new StagedState(e);
  s.put('kv', key(1), new Uint8Array([1]));
  s.commit();
  s.put('kv', key(1), new Uint8Array([2]));
  s.put('kv', key(2), new Uint8Array([2]));
  s.remove('kv', key(1));
  s.rollback();
  assert.deepEqual(s.get('kv', key(1)), new Uint8Array([1]));
  assert.equal(s.get('kv', key(2)), undefined);
  await s.committed();
  assert.deepEqual([...s.range('kv')].map((x) => hex(x.key)), [hex(key(1))]);
  s.commit(); // nothing staged: nothing to do
  assert.ok(s.idle());
  await e.root.close();
});

test('a frozen stage read over a read transaction taken with it is the state of that moment', async () => {
  const e = env();
  const s = new StagedState(e);
  for (let i = 0; i < 10; i++) s.put('kv', key(i), new Uint8Array([i]));
  s.commit();
  await s.committed();
  s.put('kv', key(3), new Uint8Array([33]));
  s.remove('kv', key(4));
  s.put('kv', key(20), new Uint8Array([20]));
  s.commit();
  const txn = e.root.useReadTransaction();
  const frozen = s.freeze();
  // Writes after the moment, committed or not, are not part of it.
  s.put('kv', key(5), new Uint8Array([55]));
  s.commit();
  await s.committed();
  s.put('kv', key(6), new Uint8Array([66]));
  const seen = [...frozen.over('kv', e.kv.getRange({ transaction: txn }))].map(({ key: k, value }) => `${hex(k)}=${hex(value)}`);
  txn.done();
  const want = [0, 1, 2, 3, 5, 6, 7, 8, 9, 20].map((i) => `${hex(key(i))}=${hex(new Uint8Array([i === 3 ? 33 : i]))}`);
  assert.deepEqual(seen, want);
  s.commit();
  await s.committed();
  await e.root.close();
});

test('sealed writes wait for handOver() (the next log write), unless too many wait or committed() asks', async () => {
  const e = env();
  const s = new StagedState(e);
  let committed = 0;
  s.put('kv', key(1), new Uint8Array([1]));
  s.commit(() => committed++);
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(committed, 0, 'held back');
  assert.equal(e.kv.get(key(1)), undefined, 'not in LMDB yet');
  assert.deepEqual(s.get('kv', key(1)), new Uint8Array([1]), 'yet visible to reads');
  s.handOver();
  await s.committed();
  assert.equal(committed, 1);
  assert.deepEqual(new Uint8Array(e.kv.get(key(1))!), new Uint8Array([1]));
  // Past SEALED_WRITES_MAX the sealed writes go on their own.
  for (let i = 0; i < SEALED_WRITES_MAX; i++) s.put('kv', key(2 + (i % 1000)), new Uint8Array([i & 0xff]));
  s.commit(() => committed++);
  assert.equal(s.idle(), false);
  await waitUntil(() => committed === 2);
  // committed() sends what is held back.
  s.put('kv', key(3000), new Uint8Array([3]));
  s.commit(() => committed++);
  await s.committed();
  assert.equal(committed, 3);
  assert.equal(s.idle(), true);
  await e.root.close();
});

async function waitUntil(ok: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !ok(); i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(ok(), 'timed out');
}

test('a commit refused at hand-over (a closed environment) is reported once and refuses every later write', async () => {
  const e = env();
  const s = new StagedState(e);
  const failures: unknown[] = [];
  s.onFailure = (err) => failures.push(err);
  s.put('kv', key(1), new Uint8Array([1]));
  await e.root.close(); // the environment is gone: the commit cannot happen
  s.commit();
  assert.equal(failures.length, 0, 'sealed, held back for the next log write');
  s.handOver();
  assert.equal(failures.length, 1);
  assert.throws(() => s.put('kv', key(2), new Uint8Array([2])));
  await assert.rejects(s.committed());
  assert.equal(failures.length, 1);
});

/**
 * Review finding: lmdb-js's writer goes on to the next queued transaction after one fails,
 * and a full disk may still take a small one. An apply handed over beside a failed one
 * would then reach the disk without it: `applied` past writes that are missing. With one
 * transaction on its way at a time, and none after a failure, the disk keeps a whole
 * applied point. A child process with a file size limit (`ulimit -f`) plays the full disk.
 */
test('a failed commit takes no later apply to disk with it (one transaction on its way at a time)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'pangea-staged-full-'));
  dirs.push(dir);
  const staged = new URL('../../src/state/staged.js', import.meta.url).href;
  const envJs = new URL('../../src/storage/env.js', import.meta.url).href;
  const init = openEnv(dir);
  const s0 = new StagedState(init);
  s0.put('smMeta', 'applied', new Uint8Array([10]));
  s0.commit();
  await s0.committed();
  await init.root.close();
  const child = `
    import { openEnv } from '${envJs}';
    import { StagedState } from '${staged}';
    process.on('SIGXFSZ', () => {});
    // lmdb-js also rejects a promise of its own that no one holds (a node stops either way).
    process.on('unhandledRejection', () => {});
    const env = openEnv(${JSON.stringify(dir)});
    const s = new StagedState(env);
    let failures = 0;
    s.onFailure = (err) => { failures++; console.error('commit failed:', err.message); };
    const big = new Uint8Array(64 * 1024).fill(7);
    for (let i = 11; i < 75; i++) s.put('kv', new TextEncoder().encode('k' + i), big);
    s.put('smMeta', 'applied', new Uint8Array([74]));
    s.commit();
    s.handOver();
    // A later apply, handed over while the first is on its way (the next log write).
    s.put('kv', new TextEncoder().encode('k75'), new Uint8Array([1]));
    s.put('smMeta', 'applied', new Uint8Array([75]));
    s.commit();
    s.handOver();
    await new Promise((r) => setTimeout(r, 500));
    console.log(JSON.stringify({ failures }));
    process.exit(0);
  `;
  const { spawnSync } = await import('node:child_process');
  const run = spawnSync('bash', ['-c', `ulimit -f 600; exec "${process.execPath}" --input-type=module -e "$0"`, child], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(run.status, 0, run.stderr);
  assert.deepEqual(JSON.parse(run.stdout.trim().split('\n').at(-1)!), { failures: 1 }, 'the first apply failed to commit');
  const env = openEnv(dir);
  const applied = env.smMeta.get('applied');
  const has = (k: string): boolean => env.kv.get(new TextEncoder().encode(k)) !== undefined;
  assert.deepEqual({ applied: applied?.[0], k11: has('k11'), k75: has('k75') }, { applied: 10, k11: false, k75: false });
  await env.root.close();
});
