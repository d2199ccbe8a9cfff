/**
 * Apply levels (state/command.ts): an older and a newer build apply one log alike below the
 * level the newer one adds; where the log raises the level past what a build knows, that
 * build halts there (ApplyHalt), changes nothing, and halts again on every restart until a
 * build that knows the level opens the same store; a level is never lowered; a state or a
 * snapshot at a level a build does not know is refused before anything is written.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ApplyHalt, ApplyRules } from '../../src/state/kv.js';
import { Harness, b, tempDir } from './harness.js';
import { openStores } from '../../src/stores.js';
import { Packr } from 'msgpackr';
import { LEASE_EXPIRY_DELETES_MAX } from '../../src/state/command.js';

const older = new ApplyRules(LEASE_EXPIRY_DELETES_MAX, 1, 1);
const newer = new ApplyRules(LEASE_EXPIRY_DELETES_MAX, 1, 2);

test('a build halts at the index that raises the level past it, changing nothing, until a build that knows the level opens the store', async () => {
  const dir = tempDir();
  const old = new Harness(dir, { rules: older });
  assert.equal(old.one({ t: 'put', key: b('a'), value: b('1') }).kind, 'put');
  assert.equal(old.state.applyLevel(), 1);
  const before = old.state.applied();
  // One slot: a put, the raise, a put. None of it applies.
  const entry = old.entry([old.cmd({ t: 'put', key: b('b'), value: b('2') }), old.cmd({ t: 'cluster_level', level: 2, members: ['a'] }), old.cmd({ t: 'put', key: b('c'), value: b('3') })]);
  assert.throws(() => old.state.apply([entry]), (e: unknown) => e instanceof ApplyHalt && /index 3 raises the cluster to apply level 2; this build applies levels 1 to 1/.test(e.message));
  assert.deepEqual(old.state.applied().point, before.point);
  assert.equal(old.state.get(b('b')), undefined);
  await old.stores.close();

  // A restart of the old build halts at the same entry again.
  const again = new Harness(dir, { rules: older });
  assert.throws(() => again.state.apply([again.entry(entry.batch)]), ApplyHalt);
  await again.stores.close();

  // The new build applies it, and the same answers as ever below the level.
  const upgraded = new Harness(dir, { rules: newer });
  const results = upgraded.state.apply([upgraded.entry(entry.batch)]);
  assert.deepEqual(results.map((r) => r.kind), ['put', 'level', 'put']);
  assert.equal(upgraded.state.applyLevel(), 2);
  // Lowering is refused; raising to where it is, a no-op.
  assert.equal(upgraded.one({ t: 'cluster_level', level: 1, members: ['a'] }).kind, 'invalid');
  assert.deepEqual(upgraded.one({ t: 'cluster_level', level: 2, members: ['a'] }), { kind: 'level', index: 6, level: 2 });
  await upgraded.stores.close();

  // Back to the old build: the store is past it, refused at open.
  assert.throws(() => new Harness(dir, { rules: older }), /this state is at apply level 2; this build applies levels 1 to 1/);
});

test('the same log applies alike on both builds below the new level', () => {
  const a = new Harness(tempDir(), { rules: older });
  const c = new Harness(tempDir(), { rules: newer });
  const ops = [
    { t: 'put', key: b('x'), value: b('1') },
    { t: 'txn', compare: [{ key: b('x'), target: 'value', op: '==', value: b('1') }], success: [{ op: 'put', key: b('y'), value: b('2') }], failure: [] },
    { t: 'cluster_level', level: 1, members: ['a'] },
    { t: 'delete', key: b('x') },
  ] as const;
  for (const op of ops) assert.deepEqual(a.one(op as never), c.one(op as never));
  assert.deepEqual(a.state.applied().chain, c.state.applied().chain);
});

test('a snapshot at a level the build does not know is refused, and the store stays empty', async () => {
  const src = new Harness(tempDir(), { rules: newer });
  src.one({ t: 'put', key: b('k'), value: b('v') });
  src.one({ t: 'cluster_level', level: 2, members: ['a'] });
  await src.state.committed();
  const frames: Uint8Array[] = [];
  const snap = src.state.snapshot();
  for (const f of snap.frames()) frames.push(f);
  const dir = tempDir();
  const dst = openStores(dir, { rules: older });
  await assert.rejects(dst.state.restore((async function* () { yield* frames; })()), /this snapshot is at apply level 2/);
  assert.equal(dst.state.bootstrapped(), false);
  assert.equal(dst.state.get(b('k')), undefined, 'no record of the refused snapshot was written');
  await dst.close();
  const ok = openStores(dir, { rules: newer });
  await ok.state.restore((async function* () { yield* frames; })());
  assert.equal(ok.state.applyLevel(), 2);
  await ok.close();
});

test('an op with a field this build does not know is undecodable, and a raise names the members it was checked on', () => {
  const h = new Harness(tempDir(), { rules: newer });
  // A field a later level might add to put: refused whole, nothing applied.
  const data = new Packr({ useRecords: false, mapsAsObjects: true }).pack({ op: { t: 'put', key: b('k'), value: b('v'), prevKv: true }, time: h.time, proposal: 'a:1' });
  assert.deepEqual(h.state.apply([h.entry([{ kind: 'app', data }])]).map((r) => r.kind), ['invalid']);
  assert.equal(h.state.get(b('k')), undefined);
  // Checked on members a and x, landing where a alone is a member: refused.
  const r = h.one({ t: 'cluster_level', level: 2, members: ['a', 'x'] });
  assert.equal(r.kind, 'invalid');
  assert.match((r as { message: string }).message, /the members changed since their builds were checked \(now a\)/);
  assert.equal(h.state.applyLevel(), 1);
});
