import assert from 'node:assert/strict';
import { test } from 'node:test';
import { openStores } from '../../src/stores.js';
import { ApplyRules } from '../../src/state/kv.js';
import { u64Key } from '../../src/storage/env.js';
import { LEASE_GRACE_MS, LEASE_KEYS_MAX, type AppCommand, type ApplyResult, type KvOp, type LeaseOp, type TxnOp } from '../../src/state/command.js';
import type { KeyChange } from '../../src/state/effects.js';
import { Harness, b, tempDir } from './harness.js';
import { Rng } from '../sim/rng.js';

const grant = (ttlMs: number): LeaseOp => ({ t: 'lease_grant', ttlMs });
const tick: LeaseOp = { t: 'lease_tick' };
const put = (key: string, value: string, lease?: number): KvOp => ({ t: 'put', key: b(key), value: b(value), ...(lease === undefined ? {} : { lease }) });

/** A harness whose commands carry log time as it is (0 in a new store): `advance` moves it. */
function clockAtZero(): Harness {
  const h = new Harness();
  h.time = 0;
  return h;
}

/** Moves log time by `ms` with ticks, a second each (the most one command moves it). */
function advance(h: Harness, ms: number): void {
  for (let left = ms; left > 0; left -= 1000) {
    h.time += Math.min(1000, left);
    h.one(tick);
  }
}

test('a lease: granted at its index, keys attach and detach, expiry deletes them at apply in log time', async () => {
  const h = clockAtZero();
  h.one(tick);
  const g = h.one(grant(5_000));
  assert.deepEqual(g, { kind: 'lease_granted', index: 2, id: 2, ttlMs: 5_000, at: 0 });
  assert.deepEqual(h.one(put('a', '1', 2)), { kind: 'put', index: 3, revision: 3 });
  assert.deepEqual(h.one(put('b', '1', 2)), { kind: 'put', index: 4, revision: 4 });
  assert.deepEqual(h.state.get(b('a')), { key: b('a'), value: b('1'), revision: 3, lease: 2 });
  assert.equal(h.state.lease(2)?.keys, 2);
  // A put without the lease detaches the key, as in etcd.
  h.one(put('b', '2'));
  assert.deepEqual(h.state.get(b('b')), { key: b('b'), value: b('2'), revision: 5 });
  assert.equal(h.state.lease(2)?.keys, 1);
  assert.deepEqual(h.one(put('c', '1', 99)), { kind: 'lease_not_found', index: 6, id: 99 });
  assert.equal(h.state.get(b('c')), undefined, 'a refused put changes nothing');

  advance(h, 4_000);
  assert.ok(h.state.get(b('a')), 'still there a second before its TTL');
  assert.equal(h.state.lease(2)?.expiresAt, 5_000 + LEASE_GRACE_MS);
  advance(h, 1_000);
  assert.ok(h.state.get(b('a')), 'and through its grace');
  assert.equal(h.state.lease(2)?.ttlMs, 5_000);
  advance(h, LEASE_GRACE_MS);
  assert.equal(h.state.get(b('a')), undefined);
  assert.equal(h.state.lease(2), undefined);
  assert.ok(h.state.get(b('b')), 'the detached key stays');
  assert.equal(h.state.leaseCount(), 0);
  const last = h.state.applied().point.index;
  const [effects] = h.state.effects(last - 1, last, 10);
  assert.deepEqual(effects?.changes, [{ type: 'delete', key: b('a'), cause: 'lease' }]);
  assert.deepEqual(h.one({ t: 'lease_keepalive', ids: [2] }), { kind: 'lease_kept', index: last + 1, ttls: [null], at: h.state.logTime() });
  await h.stores.close();
});

test('a renewed lease expires a TTL and its grace after its last renewal, not before (its expiry row moves late)', async () => {
  const h = clockAtZero();
  const id = (h.one(grant(3_000)) as { id: number }).id;
  h.one(put('k', 'v', id));
  for (let i = 0; i < 4; i++) {
    advance(h, 2_000);
    h.one({ t: 'lease_keepalive', ids: [id] });
  }
  const renewedAt = h.state.logTime();
  advance(h, 2_000);
  assert.ok(h.state.get(b('k')), 'a second before its TTL');
  assert.equal(h.state.lease(id)?.expiresAt, renewedAt + 3_000 + LEASE_GRACE_MS);
  advance(h, 1_000);
  assert.ok(h.state.get(b('k')), 'at its TTL, in its grace');
  advance(h, LEASE_GRACE_MS);
  assert.equal(h.state.get(b('k')), undefined, 'gone at its expiry');
  assert.equal(h.state.leaseCount(), 0);
  await h.stores.close();
});

test('keep-alives renew to the full TTL; revoke deletes the keys in one command', async () => {
  const h = clockAtZero();
  const id = (h.one(grant(3_000)) as { id: number }).id;
  const other = (h.one(grant(3_000)) as { id: number }).id;
  h.one(put('k', 'v', id));
  h.one(put('o', 'v', other));
  for (let i = 0; i < 5; i++) {
    advance(h, 2_000);
    const r = h.one({ t: 'lease_keepalive', ids: [id, 12345] });
    assert.deepEqual(r.kind === 'lease_kept' && r.ttls, [3_000, null]);
  }
  assert.ok(h.state.get(b('k')), 'kept alive for 10 s on a 3 s TTL');
  assert.equal(h.state.get(b('o')), undefined, 'the other one expired');
  assert.equal(h.state.lease(id)?.expiresAt, h.state.logTime() + 3_000 + LEASE_GRACE_MS, 'renewed to the full TTL');
  const r = h.one({ t: 'lease_revoke', id });
  assert.deepEqual(r, { kind: 'lease_revoked', index: r.index, revoked: true });
  assert.equal(h.state.get(b('k')), undefined);
  assert.deepEqual(h.state.effects(r.index - 1, r.index, 1)[0]?.changes, [{ type: 'delete', key: b('k'), cause: 'lease' }]);
  assert.equal(h.one({ t: 'lease_revoke', id }).kind === 'lease_revoked' && (h.state.lease(id) === undefined), true);
  await h.stores.close();
});

test('TTL bounds, the cluster’s lease limit, and a lease’s key limit (counted through a txn, exactly)', async () => {
  const h = clockAtZero();
  assert.equal(h.one(grant(1_999)).kind, 'invalid');
  assert.equal(h.one(grant(30 * 24 * 3600 * 1000 + 1)).kind, 'invalid');
  h.one({ t: 'cluster_settings', settings: { sessionTtlMs: 3600_000, maxLeases: 2 } });
  const a = (h.one(grant(60_000)) as { id: number }).id;
  const c = (h.one(grant(60_000)) as { id: number }).id;
  assert.equal(h.one(grant(60_000)).kind, 'limit_reached');
  const puts = (n: number, lease: number, from = 0): TxnOp[] => Array.from({ length: n }, (_, i) => ({ op: 'put', key: b(`k${from + i}`), value: b('x'), lease }));
  const txn = (success: TxnOp[]): KvOp => ({ t: 'txn', compare: [], success, failure: [] });
  assert.equal(h.one(txn(puts(LEASE_KEYS_MAX, a))).kind, 'txn');
  assert.equal(h.state.lease(a)?.keys, LEASE_KEYS_MAX);
  const over = h.one(put('one-more', 'x', a));
  assert.equal(over.kind, 'limit_reached');
  assert.equal(h.state.get(b('one-more')), undefined);
  // Moving a key to another lease and adding one in the same txn stays within the limit.
  assert.equal(h.one(txn([{ op: 'put', key: b('k0'), value: b('y'), lease: c }, { op: 'put', key: b('new'), value: b('y'), lease: a }])).kind, 'txn');
  assert.equal(h.state.lease(a)?.keys, LEASE_KEYS_MAX);
  assert.equal(h.state.lease(c)?.keys, 1);
  // A txn that would break the limit applies none of its ops.
  const before = h.state.applied().point.index;
  assert.equal(h.one(txn([{ op: 'delete', key: b('k1') }, { op: 'put', key: b('x1'), value: b('y'), lease: a }, { op: 'put', key: b('x2'), value: b('y'), lease: a }])).kind, 'limit_reached');
  assert.ok(h.state.get(b('k1')), 'the delete in the refused txn did not apply');
  assert.deepEqual(h.state.effects(before, before + 1, 1), []);
  await h.stores.close();
});

test('expiry deletes at most 10,000 keys a command, in (expiresAt, id) order, and goes on with the next commands', async () => {
  const h = clockAtZero();
  const first = (h.one(grant(2_000)) as { id: number }).id;
  const second = (h.one(grant(2_000)) as { id: number }).id;
  h.one({ t: 'txn', compare: [], success: Array.from({ length: LEASE_KEYS_MAX }, (_, i): TxnOp => ({ op: 'put', key: b(`a${i}`), value: b('x'), lease: first })), failure: [] });
  h.one({ t: 'txn', compare: [], success: Array.from({ length: 5 }, (_, i): TxnOp => ({ op: 'put', key: b(`b${i}`), value: b('x'), lease: second })), failure: [] });
  advance(h, 2_000 + LEASE_GRACE_MS);
  const at = h.state.applied().point.index;
  h.one(tick);
  const perIndex = h.state.effects(at - 2, at + 1, 10).map((e) => [e.index, e.changes.length, new TextDecoder().decode((e.changes[0] as KeyChange).key).slice(0, 1)]);
  assert.deepEqual(perIndex.slice(-2), [[at, LEASE_KEYS_MAX, 'a'], [at + 1, 5, 'b']]);
  assert.equal(h.state.leaseCount(), 0);
  assert.deepEqual(h.state.range(b(''), null, 10, 1 << 20).items, []);
  await h.stores.close();
});

test('a snapshot carries leases, attached keys and log time; the restored store expires them alike', async () => {
  const h = clockAtZero();
  const id = (h.one(grant(4_000)) as { id: number }).id;
  h.one(put('k', 'v', id));
  const snap = h.state.snapshot();
  const other = openStores(tempDir(), {});
  await other.state.restore(snap);
  assert.deepEqual(other.state.lease(id), h.state.lease(id));
  assert.deepEqual(other.state.get(b('k')), h.state.get(b('k')));
  assert.deepEqual(other.state.leases(0, 10), { items: [h.state.lease(id)], more: false });
  await other.close();
  await h.stores.close();
});

test('a txn that moves a key off an expired lease still being reaped cannot attach keys to it (review)', async () => {
  for (const extra of [1, 2]) {
    const h = clockAtZero();
    const big = (h.one(grant(2_000)) as { id: number }).id;
    const small = (h.one(grant(2_000)) as { id: number }).id;
    h.one({ t: 'txn', compare: [], success: Array.from({ length: LEASE_KEYS_MAX }, (_, i): TxnOp => ({ op: 'put', key: b(`a${i}`), value: b('x'), lease: big })), failure: [] });
    h.one(put('k1', 'x', small));
    advance(h, 1_000 + LEASE_GRACE_MS);
    // The txn comes at the expiry: its own expiry step deletes the first lease's 10,000 keys
    // and leaves the second expired with its key still on it.
    h.time += 1_000;
    const r = h.one({
      t: 'txn',
      compare: [],
      success: [{ op: 'put', key: b('k1'), value: b('off') }, ...Array.from({ length: extra }, (_, i): TxnOp => ({ op: 'put', key: b(`x${i}`), value: b('on'), lease: small }))],
      failure: [],
    });
    assert.equal(r.kind, 'lease_not_found', `${extra} keys onto it, one off`);
    assert.equal(h.state.get(b('x0')), undefined);
    await h.stores.close();
  }
});

test('apply level 4 stores a lease in 32 bytes; one written below it reads, renews and expires alike after the raise', async () => {
  const h = clockAtZero();
  h.one(tick);
  const raw = (id: number): Uint8Array => h.state.tables.get('leases', u64Key(id))!;
  const old = (h.one(grant(5_000)) as { id: number }).id;
  h.one(put('a', '1', old));
  assert.notEqual(raw(old)[0], 0, 'below level 4: a msgpack map');
  const before = h.state.lease(old);
  assert.deepEqual(h.one({ t: 'cluster_level', level: 4, members: ['a'] }), { kind: 'level', index: 4, level: 4 });
  assert.deepEqual(h.state.lease(old), before, 'read alike after the raise');
  const fresh = (h.one(grant(3_000)) as { id: number }).id;
  assert.equal(raw(fresh).byteLength, 32);
  assert.deepEqual(h.state.lease(fresh), { id: fresh, ttlMs: 3_000, expiresAt: 3_000 + LEASE_GRACE_MS, keys: 0, row: 3_000 + LEASE_GRACE_MS });
  h.one(put('b', '1', fresh));
  assert.equal(h.state.lease(fresh)?.keys, 1);
  advance(h, 2_000);
  assert.deepEqual(h.one({ t: 'lease_keepalive', ids: [old, fresh] }), { kind: 'lease_kept', index: h.state.applied().point.index, ttls: [5_000, 3_000], at: 2_000 });
  assert.equal(raw(old).byteLength, 32, 'renewed at level 4: rewritten in 32 bytes');
  assert.deepEqual(h.state.lease(old), { id: old, ttlMs: 5_000, expiresAt: 7_000 + LEASE_GRACE_MS, keys: 1, row: 5_000 + LEASE_GRACE_MS });
  // Both expire a TTL and its grace after their renewal, with their keys.
  advance(h, 3_000 + LEASE_GRACE_MS);
  assert.equal(h.state.lease(fresh), undefined);
  assert.equal(h.state.get(b('b')), undefined);
  assert.ok(h.state.get(b('a')));
  advance(h, 2_000);
  assert.equal(h.state.lease(old), undefined);
  assert.equal(h.state.get(b('a')), undefined);
  assert.equal(h.state.leaseCount(), 0);
  await h.stores.close();
});

test('level 4 reaps every lease when level 3 does (no later, when reaping spreads over commands), with rows moved ahead of time, and a replica restarted often writes the same bytes (a log of grants, renewals, revokes and puts)', async () => {
  // A budget of 2 keys a command as well (as in the simulator), so that expiry spreads.
  for (const [seed, budget] of [[1, 10_000], [2, 10_000], [3, 10_000], [4, 2], [5, 2], [6, 2]] as const) {
    const r = new Rng(seed);
    const rules = new ApplyRules(budget);
    const start = (dir?: string): Harness => Object.assign(new Harness(dir, { rules }), { time: 0 });
    const at3 = start();
    const at4 = start();
    // Reopened every few commands: its cache of the next expiry starts at 0 each time.
    let restarted = start();
    for (const [h, level] of [[at3, 3], [at4, 4], [restarted, 4]] as const) assert.equal(h.one({ t: 'cluster_level', level, members: ['a'] }).kind, 'level');
    const table = (h: Harness, t: 'leaseExpiry' | 'leases'): string => [...h.state.tables.range(t, {})].map((e) => `${Buffer.from(e.key as Uint8Array).toString('hex')}=${Buffer.from(e.value).toString('hex')}`).join();
    const ids: number[] = [];
    let moved = 0;
    for (let step = 0; step < 1_500; step++) {
      const time = at3.time + r.int(0, 3) * r.int(0, 300);
      const op: AppCommand['op'] =
        ids.length === 0 || r.chance(0.08) ? grant(r.int(2, 5) * 1000)
        : r.chance(0.5) ? { t: 'lease_keepalive', ids: Array.from({ length: r.int(1, 4) }, () => ids[r.int(0, ids.length - 1)]!) }
        : r.chance(0.5) ? put(`k${r.int(0, 30)}`, 'v', r.chance(0.8) ? ids[r.int(0, ids.length - 1)] : undefined)
        : r.chance(0.05) ? { t: 'lease_revoke', id: ids[r.int(0, ids.length - 1)]! }
        : tick;
      if (step % 7 === 0) {
        await restarted.stores.close();
        restarted = Object.assign(start(restarted.dir), { time: restarted.time });
      }
      const results = [at3, at4, restarted].map((h): ApplyResult => {
        h.time = time;
        return h.one(op);
      });
      assert.deepEqual(results[1], results[0], `seed ${seed} step ${step}: ${op.t}`);
      assert.deepEqual(results[2], results[1], `seed ${seed} step ${step}: ${op.t}, restarted`);
      for (const t of ['leaseExpiry', 'leases'] as const) assert.equal(table(restarted, t), table(at4, t), `seed ${seed} step ${step}: ${t} of the restarted replica`);
      if (results[0]!.kind === 'lease_granted') ids.push((results[0] as { id: number }).id);
      const rows = (h: Harness): string[] => [...h.state.tables.keys('leaseExpiry', {})].map((k) => Buffer.from(k as Uint8Array).toString('hex'));
      if (rows(at3).join() !== rows(at4).join()) moved++;
    }
    // Past every lease's expiry: the same keys and leases left.
    for (const h of [at3, at4]) advance(h, 10_000);
    const last = at3.state.applied().point.index;
    const effects = at3.state.effects(0, last, 100_000);
    const effects4 = at4.state.effects(0, last, 100_000);
    assert.ok(effects.some((e) => e.changes.some((c) => c.type === 'delete' && c.cause === 'lease')), `seed ${seed}: some lease expired with keys`);
    if (budget === 10_000) assert.deepEqual(effects4, effects, `seed ${seed}: the same changes at the same indexes`);
    else {
      // Spread over commands, a key is reaped at level 4 no later than at level 3: a row moved
      // early is out of the way of the rows due after it, and moves ahead of time spend only
      // the budget the rows due left.
      const hex = (k: Uint8Array): string => Buffer.from(k).toString('hex');
      const reaped4 = new Map<string, number[]>();
      for (const e of effects4) for (const c of e.changes) if (c.type === 'delete' && c.cause === 'lease') reaped4.set(hex(c.key), [...(reaped4.get(hex(c.key)) ?? []), e.index]);
      const putAt = new Map<string, number>();
      for (const e of effects) {
        for (const c of e.changes) {
          if (c.type === 'put') putAt.set(hex(c.key), e.index);
          if (c.type !== 'delete' || c.cause !== 'lease') continue;
          const k = hex(c.key);
          assert.ok(reaped4.get(k)?.some((i) => i > (putAt.get(k) ?? 0) && i <= e.index), `seed ${seed}: ${k} reaped at ${e.index} at level 3, not by then at level 4`);
        }
      }
    }
    const view = (h: Harness) => ({ kv: h.state.range(new Uint8Array(0), null, Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER).items, leases: h.state.leases(0, 10_000).items.map(({ id, ttlMs, expiresAt, keys }) => ({ id, ttlMs, expiresAt, keys })) });
    assert.deepEqual(view(at4), view(at3), `seed ${seed}: the same keys and leases`);
    assert.ok(moved > 0, `seed ${seed}: level 4 moved some row ahead of level 3`);
    await at3.stores.close();
    await at4.stores.close();
    await restarted.stores.close();
  }
});

test('level 4 reaps a due lease on time when leases that expire within the lookahead have older rows (review: with a budget of 2 they hid it)', async () => {
  const rules = new ApplyRules(2);
  const [at3, at4] = [3, 4].map((level) => {
    const h = Object.assign(new Harness(undefined, { rules }), { time: 0 });
    assert.equal(h.one({ t: 'cluster_level', level, members: ['a'] }).kind, 'level');
    return h;
  });
  const both = (op: AppCommand['op'], time: number): ApplyResult[] => [at3!, at4!].map((h) => Object.assign(h, { time }).one(op));
  const s1 = (both(grant(2_000), 0)[0] as { id: number }).id;
  const s2 = (both(grant(2_000), 0)[0] as { id: number }).id;
  const d = (both(grant(2_500), 0)[0] as { id: number }).id;
  both(put('d', 'v', d), 0);
  both({ t: 'lease_keepalive', ids: [s1, s2] }, 1_000); // their rows stay before d's
  for (const time of [2_000, 3_000, 3_000 + LEASE_GRACE_MS / 2]) both(tick, time);
  assert.equal(at4!.state.get(b('d')), undefined, 'reaped at its expiry, as at level 3');
  assert.equal(at3!.state.get(b('d')), undefined);
  const last = at3!.state.applied().point.index;
  assert.deepEqual(at4!.state.effects(0, last, 100), at3!.state.effects(0, last, 100));
  await at3!.stores.close();
  await at4!.stores.close();
});
