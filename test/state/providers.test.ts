/**
 * Provider records at apply (src/state/providers.ts): on a lease, at most 20 a key, listed
 * both ways, gone with their lease (expiry in the budget of lease deletes, revoke), moved
 * between leases, in the journal, and bad input refused.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LEASE_GRACE_MS, PROVIDERS_PER_KEY_MAX } from '../../src/state/command.js';
import type { ProviderChange } from '../../src/state/effects.js';
import { Harness, b } from './harness.js';

function level2(): Harness {
  const h = new Harness();
  assert.equal(h.one({ t: 'cluster_level', level: 2, members: ['a'] }).kind, 'level');
  h.time = h.state.logTime();
  return h;
}

function grant(h: Harness, ttlMs = 5_000): number {
  const r = h.one({ t: 'lease_grant', ttlMs });
  assert.equal(r.kind, 'lease_granted');
  return (r as { id: number }).id;
}

test('provider records: put, list both ways, the 21st refused, delete, in the journal', () => {
  const h = level2();
  const lease = grant(h);
  for (let i = 0; i < PROVIDERS_PER_KEY_MAX; i++) assert.equal(h.one({ t: 'provider_put', key: b('cid/1'), provider: `peer${i}`, addrs: ['/ip4/127.0.0.1/tcp/1'], lease }).kind, 'provider_put');
  const over = h.one({ t: 'provider_put', key: b('cid/1'), provider: 'peer20', addrs: [], lease });
  assert.equal(over.kind, 'limit_reached');
  // Rewriting one of the 20 is no 21st.
  const again = h.one({ t: 'provider_put', key: b('cid/1'), provider: 'peer3', addrs: ['/ip4/10.0.0.1/tcp/2'], lease });
  assert.equal(again.kind, 'provider_put');
  assert.equal(h.state.providers(b('cid/1')).length, PROVIDERS_PER_KEY_MAX);
  assert.deepEqual(h.state.providers(b('cid/1')).find((p) => p.provider === 'peer3')?.addrs, ['/ip4/10.0.0.1/tcp/2']);
  h.one({ t: 'provider_put', key: b('cid/2'), provider: 'peer3', addrs: [], lease });
  assert.deepEqual(h.state.provided('peer3', null, 10).items.map((r) => Buffer.from(r.key).toString()), ['cid/1', 'cid/2']);
  assert.deepEqual(h.state.provided('peer3', b('cid/1'), 10).items.map((r) => Buffer.from(r.key).toString()), ['cid/2']);
  assert.equal(h.state.lease(lease)!.keys, PROVIDERS_PER_KEY_MAX + 1, 'records count on their lease');
  const del = h.one({ t: 'provider_delete', key: b('cid/2'), provider: 'peer3' });
  assert.deepEqual(del, { kind: 'provider_deleted', index: del.index, deleted: true });
  assert.deepEqual(h.state.effects(del.index - 1, del.index, 1)[0]!.changes, [{ type: 'provider', key: b('cid/2'), provider: 'peer3', cause: 'delete' }]);
  assert.equal(h.one({ t: 'provider_delete', key: b('cid/2'), provider: 'peer3' }).kind, 'provider_deleted');
  assert.deepEqual(h.state.provided('peer3', null, 10).items.map((r) => Buffer.from(r.key).toString()), ['cid/1']);
  assert.equal(h.state.lease(lease)!.keys, PROVIDERS_PER_KEY_MAX);
});

test('provider records go with their lease: expiry (cause lease) and revoke; a record moved to another lease stays', () => {
  const h = level2();
  const short = grant(h, 2_000);
  const long = grant(h, 60_000);
  h.one({ t: 'provider_put', key: b('k'), provider: 'a', addrs: [], lease: short });
  h.one({ t: 'provider_put', key: b('k'), provider: 'b', addrs: [], lease: short });
  h.one({ t: 'provider_put', key: b('k'), provider: 'b', addrs: [], lease: long }); // moved
  assert.equal(h.state.lease(short)!.keys, 1);
  const from = h.state.applied().point.index;
  h.time += 2_000 + LEASE_GRACE_MS + 5_000;
  for (let i = 0; i < 8; i++) h.one({ t: 'lease_tick' });
  assert.equal(h.state.lease(short), undefined);
  assert.deepEqual(h.state.providers(b('k')).map((p) => p.provider), ['b']);
  const gone = h.state.effects(from, h.state.applied().point.index, 100).flatMap((e) => e.changes) as ProviderChange[];
  assert.deepEqual(gone, [{ type: 'provider', key: b('k'), provider: 'a', cause: 'lease' }]);
  h.one({ t: 'lease_revoke', id: long });
  assert.deepEqual(h.state.providers(b('k')), []);
  assert.deepEqual(h.state.provided('b', null, 10).items, []);
});

test('provider records: an unknown lease, bad names, and level 1 are refused and change nothing', () => {
  const h1 = new Harness();
  assert.equal(h1.one({ t: 'provider_put', key: b('k'), provider: 'a', addrs: [], lease: 1 }).kind, 'invalid');
  const h = level2();
  assert.equal(h.one({ t: 'provider_put', key: b('k'), provider: 'a', addrs: [], lease: 999 }).kind, 'lease_not_found');
  const lease = grant(h);
  for (const provider of ['', 'a/b', 'x'.repeat(257)]) assert.equal(h.one({ t: 'provider_put', key: b('k'), provider, addrs: [], lease }).kind, 'invalid', provider.slice(0, 10));
  assert.equal(h.one({ t: 'provider_put', key: new Uint8Array(0), provider: 'a', addrs: [], lease }).kind, 'invalid');
  assert.deepEqual(h.state.providers(b('k')), []);
});

test('a provider named with a leading U+FEFF is its own record: its lease takes it, not another lease\'s "p" (helper-48)', () => {
  const h = level2();
  const long = grant(h, 60_000);
  const short = grant(h, 2_000);
  h.one({ t: 'provider_put', key: b('k'), provider: 'p', addrs: [], lease: long });
  h.one({ t: 'provider_put', key: b('k'), provider: '\uFEFFp', addrs: [], lease: short });
  assert.deepEqual(h.state.providers(b('k')).map((p) => p.provider).sort(), ['p', '\uFEFFp'].sort());
  h.time += 2_000 + LEASE_GRACE_MS + 5_000;
  for (let i = 0; i < 8; i++) h.one({ t: 'lease_tick' });
  assert.equal(h.state.lease(short), undefined);
  assert.deepEqual(h.state.providers(b('k')).map((p) => [p.provider, p.lease]), [['p', long]]);
  assert.equal(h.state.lease(long)!.keys, 1);
  assert.deepEqual(h.state.provided('\uFEFFp', null, 10).items, []);
});
