import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createHash } from 'node:crypto';
import { Packr } from 'msgpackr';
import type { Command, ConfigEpoch, Entry } from '../../src/consensus/index.js';
import { openStores } from '../../src/stores.js';
import { Harness, EPOCHS, GENESIS, HOUR, b, tempDir } from './harness.js';
import { chainBytes, encodeAppCommand, type ApplyResult, type Compare, type KvOp, type RequestId, type SettingsOp } from '../../src/state/command.js';
import { LOG_TIME_STEP_MS } from '../../src/state/kv.js';
import { openEnv } from '../../src/storage/env.js';

const put = (key: string, value: string, cond: { ifMatch?: number; ifAbsent?: boolean } = {}): KvOp => ({ t: 'put', key: b(key), value: b(value), ...cond });
const del = (key: string, ifMatch?: number): KvOp => ({ t: 'delete', key: b(key), ...(ifMatch === undefined ? {} : { ifMatch }) });

test('puts and deletes: revisions are indexes; deleting an absent key answers deleted: false', async () => {
  const h = new Harness();
  assert.deepEqual(h.one(put('a', '1')), { kind: 'put', index: 1, revision: 1 });
  assert.deepEqual(h.one(put('a', '2')), { kind: 'put', index: 2, revision: 2 });
  assert.deepEqual(h.state.get(b('a')), { key: b('a'), value: b('2'), revision: 2 });
  assert.deepEqual(h.one(del('a')), { kind: 'delete', index: 3, deleted: true });
  assert.equal(h.state.get(b('a')), undefined);
  assert.deepEqual(h.one(del('a')), { kind: 'delete', index: 4, deleted: false });
  assert.deepEqual(h.one(put('empty', '')), { kind: 'put', index: 5, revision: 5 });
  assert.deepEqual(h.state.get(b('empty'))?.value, new Uint8Array(0));
  await h.stores.close();
});

test('If-Match and If-None-Match: *', async () => {
  const h = new Harness();
  assert.deepEqual(h.one(put('k', 'v', { ifMatch: 1 })), { kind: 'precondition_failed', index: 1, revision: null }, 'If-Match on an absent key fails');
  assert.deepEqual(h.one(put('k', 'v', { ifAbsent: true })), { kind: 'put', index: 2, revision: 2 });
  assert.deepEqual(h.one(put('k', 'w', { ifAbsent: true })), { kind: 'precondition_failed', index: 3, revision: 2 });
  assert.deepEqual(h.one(put('k', 'w', { ifMatch: 1 })), { kind: 'precondition_failed', index: 4, revision: 2 });
  assert.deepEqual(h.one(put('k', 'w', { ifMatch: 2 })), { kind: 'put', index: 5, revision: 5 });
  assert.deepEqual(h.one(del('k', 2)), { kind: 'precondition_failed', index: 6, revision: 5 });
  assert.deepEqual(h.one(del('nope', 2)), { kind: 'precondition_failed', index: 7, revision: null });
  assert.deepEqual(h.one(del('k', 5)), { kind: 'delete', index: 8, deleted: true });
  assert.deepEqual(h.state.get(b('k')), undefined);
  await h.stores.close();
});

test('txn compares: every target and op, absent keys, byte order of values', async () => {
  const h = new Harness();
  h.one(put('x', 'abc')); // revision 1
  const cases: [Compare, boolean][] = [
    [{ key: b('x'), target: 'value', op: '==', value: b('abc') }, true],
    [{ key: b('x'), target: 'value', op: '!=', value: b('abc') }, false],
    [{ key: b('x'), target: 'value', op: '<', value: b('abd') }, true],
    [{ key: b('x'), target: 'value', op: '<', value: b('ab') }, false],
    [{ key: b('x'), target: 'value', op: '>', value: b('ab') }, true],
    [{ key: b('x'), target: 'value', op: '>', value: new Uint8Array([0xff]) }, false],
    [{ key: b('x'), target: 'value', op: '<', value: new Uint8Array([0xff]) }, true],
    [{ key: b('none'), target: 'value', op: '==', value: b('') }, false],
    [{ key: b('none'), target: 'value', op: '!=', value: b('abc') }, false],
    [{ key: b('none'), target: 'value', op: '<', value: b('zzz') }, false],
    [{ key: b('none'), target: 'value', op: '>', value: b('') }, false],
    [{ key: b('x'), target: 'revision', op: '==', value: 1 }, true],
    [{ key: b('x'), target: 'revision', op: '!=', value: 1 }, false],
    [{ key: b('x'), target: 'revision', op: '<', value: 2 }, true],
    [{ key: b('x'), target: 'revision', op: '>', value: 0 }, true],
    [{ key: b('none'), target: 'revision', op: '==', value: 0 }, true],
    [{ key: b('none'), target: 'revision', op: '<', value: 1 }, true],
    [{ key: b('none'), target: 'revision', op: '>', value: 0 }, false],
    [{ key: b('x'), target: 'exists', op: '==', value: true }, true],
    [{ key: b('x'), target: 'exists', op: '!=', value: true }, false],
    [{ key: b('none'), target: 'exists', op: '==', value: false }, true],
    [{ key: b('none'), target: 'exists', op: '!=', value: false }, false],
  ];
  for (const [compare, expected] of cases) {
    const r = h.one({ t: 'txn', compare: [compare], success: [], failure: [] });
    assert.equal(r.kind === 'txn' && r.succeeded, expected, `${JSON.stringify({ ...compare, key: new TextDecoder().decode(compare.key) })}`);
  }
  // No compares means success; all compares must hold.
  const none = h.one({ t: 'txn', compare: [], success: [{ op: 'get', key: b('x') }], failure: [] });
  assert.deepEqual(none, { kind: 'txn', index: none.index, succeeded: true, results: [{ value: b('abc'), revision: 1 }] });
  const mixed = h.one({ t: 'txn', compare: [cases[0]![0], cases[1]![0]], success: [], failure: [{ op: 'get', key: b('none') }] });
  assert.deepEqual(mixed, { kind: 'txn', index: mixed.index, succeeded: false, results: [{ value: null, revision: null }] });
  await h.stores.close();
});

test('txn branch ops apply in order at the txn index; a get sees an earlier put', async () => {
  const h = new Harness();
  h.one(put('a', 'old'));
  h.one(put('gone', 'x'));
  const r = h.one({
    t: 'txn',
    compare: [{ key: b('a'), target: 'value', op: '==', value: b('old') }],
    success: [
      { op: 'get', key: b('a') },
      { op: 'put', key: b('a'), value: b('new') },
      { op: 'get', key: b('a') },
      { op: 'put', key: b('b'), value: b('bee') },
      { op: 'delete', key: b('gone') },
      { op: 'delete', key: b('gone') },
      { op: 'get', key: b('gone') },
    ],
    failure: [],
  });
  assert.deepEqual(r, {
    kind: 'txn',
    index: 3,
    succeeded: true,
    results: [
      { value: b('old'), revision: 1 },
      { revision: 3 },
      { value: b('new'), revision: 3 },
      { revision: 3 },
      { deleted: true },
      { deleted: false },
      { value: null, revision: null },
    ],
  });
  assert.deepEqual(h.state.get(b('b')), { key: b('b'), value: b('bee'), revision: 3 });
  await h.stores.close();
});

test('one batch: later commands see earlier ones, even within one slot', async () => {
  const h = new Harness();
  const results = h.state.apply([
    h.entry([h.cmd(put('k', '1')), h.cmd(put('k', '2', { ifMatch: 1 }))]),
    h.entry([]), // a no-op slot takes no index
    h.entry([h.cmd({ t: 'txn', compare: [{ key: b('k'), target: 'revision', op: '==', value: 2 }], success: [{ op: 'delete', key: b('k') }], failure: [] })]),
    h.entry([h.cmd(put('k', '3', { ifAbsent: true }))]),
  ]);
  assert.deepEqual(results, [
    { kind: 'put', index: 1, revision: 1 },
    { kind: 'put', index: 2, revision: 2 },
    { kind: 'txn', index: 3, succeeded: true, results: [{ deleted: true }] },
    { kind: 'put', index: 4, revision: 4 },
  ]);
  assert.deepEqual(h.state.applied().point, { slot: 4, index: 4, epochs: EPOCHS });
  await h.stores.close();
});

test('request ids: a retry gets the first answer, a different request conflicts, a lower sequence is stale', async () => {
  const h = new Harness();
  const rid = (seq: number, digest: string): RequestId => ({ client: 'c1', seq, digest: b(digest) });
  const first = h.one(put('k', 'v1'), rid(5, 'd5'));
  assert.deepEqual(first, { kind: 'put', index: 1, revision: 1 });
  h.one(put('k', 'other')); // index 2
  assert.deepEqual(h.one(put('k', 'v1'), rid(5, 'd5')), first, 'the retry answers the original index');
  assert.equal(h.state.get(b('k'))?.revision, 2, 'the retry was not applied again');
  assert.deepEqual(h.one(put('k', 'v9'), rid(5, 'dX')), { kind: 'request_id_conflict', index: 4 });
  assert.deepEqual(h.one(put('k', 'v9'), rid(4, 'd4')), { kind: 'request_id_stale', index: 5 });
  assert.deepEqual(h.one(put('k', 'v7'), rid(7, 'd7')), { kind: 'put', index: 6, revision: 6 }, 'gaps are fine');
  assert.deepEqual(h.one(put('k', 'v1'), rid(5, 'd5')), { kind: 'request_id_stale', index: 7 });
  // Failed conditions and txn answers (with bytes) are remembered as given.
  const failed = h.one(put('k', 'x', { ifAbsent: true }), rid(8, 'd8'));
  assert.deepEqual(h.one(put('k', 'x', { ifAbsent: true }), rid(8, 'd8')), failed);
  const txn: KvOp = { t: 'txn', compare: [], success: [{ op: 'get', key: b('k') }], failure: [] };
  const answer = h.one(txn, rid(9, 'd9'));
  h.one(put('k', 'changed'));
  assert.deepEqual(h.one(txn, rid(9, 'd9')), answer);
  // Another client's sequence is its own.
  assert.deepEqual(h.one(put('z', '1'), { client: 'c2', seq: 1, digest: b('z') }).kind, 'put');
  await h.stores.close();
});

const ttl = (sessionTtlMs: number): SettingsOp => ({ t: 'cluster_settings', settings: { sessionTtlMs } });

test('request ids survive a reopen, and expire after the cluster’s session TTL of log time', async () => {
  const dir = tempDir();
  let h = new Harness(dir);
  h.time = 0;
  assert.equal(h.one(ttl(3 * LOG_TIME_STEP_MS)).kind, 'settings');
  const rid: RequestId = { client: 'c1', seq: 1, digest: b('d') };
  const first = h.one(put('k', 'v'), rid);
  await h.stores.close();

  h = new Harness(dir);
  h.time = 0;
  assert.deepEqual(h.one(put('k', 'v'), rid), first, 'remembered across a reopen');
  for (let i = 0; i < 3; i++) {
    h.time += LOG_TIME_STEP_MS;
    h.one(put('other', 'x'));
  }
  assert.deepEqual(h.one(put('k', 'v'), rid), first, 'idle for exactly the TTL (the TTL itself came back from disk): kept');
  let c2: ApplyResult | undefined;
  for (let i = 0; i < 4; i++) {
    h.time += LOG_TIME_STEP_MS;
    c2 = h.one(put('other', 'y'), { client: 'c2', seq: 1, digest: b('e') });
  }
  const again = h.one(put('k', 'v'), rid);
  assert.deepEqual(again.kind, 'put', 'expired: the same sequence applies anew');
  assert.notEqual(again.index, first.index);
  // A command with an older time does not move the log clock back.
  h.time -= 3 * LOG_TIME_STEP_MS;
  assert.deepEqual(h.one(put('other', 'y'), { client: 'c2', seq: 1, digest: b('e') }), c2, 'an old time expires nothing');
  await h.stores.close();
});

test('a proposer whose clock jumps an hour ahead moves log time a step a command: no session is mass-expired (issue 10, bug 4)', async () => {
  const h = new Harness();
  const rid: RequestId = { client: 'c', seq: 1, digest: b('d') };
  const first = h.one(put('k', 'v'), rid);
  const before = h.state.logTime();
  h.time += 10 * HOUR;
  for (let i = 0; i < 5; i++) h.one(put('x', String(i)));
  assert.equal(h.state.logTime(), before + 5 * LOG_TIME_STEP_MS);
  assert.deepEqual(h.one(put('k', 'v'), rid), first, 'the retry is answered from its session, not applied again');
  await h.stores.close();
});

test('the session TTL is decided by the log and applies within one batch (issue 10, bug 6)', async () => {
  const h = new Harness(tempDir());
  const rid: RequestId = { client: 'c', seq: 3, digest: b('d') };
  const t0 = h.time;
  const results = h.state.apply([
    h.entry([h.cmd(ttl(1000)), h.cmd(put('k', '1'), rid, t0), h.cmd(put('k', '2'), rid, t0 + 1000)]),
    h.entry([h.cmd(put('x', '1'), undefined, t0 + 2000), h.cmd(put('k', '3'), rid, t0 + 3000)]),
  ]);
  assert.deepEqual(
    results.map((r) => r.index),
    [1, 2, 2, 4, 5],
  );
  // A shorter TTL expires at once what is older than it.
  h.time = t0 + 4000;
  h.one(put('k', 'again'), { client: 'old', seq: 1, digest: b('o') });
  h.time += 100;
  h.one(ttl(50));
  assert.equal(h.one(put('k', 'again'), { client: 'old', seq: 1, digest: b('o') }).kind, 'put');
  await h.stores.close();
});

test('invalid command bytes answer invalid and still take their index', async () => {
  const h = new Harness();
  const results = h.state.apply([
    h.entry([
      { kind: 'app', data: new Uint8Array([0xc1, 0x00, 0xff]) },
      { kind: 'app', data: new Packr().pack({ op: { t: 'put' }, time: 1, proposal: 'x' }) },
      h.cmd({ t: 'put', key: new Uint8Array(0), value: b('v') }),
      h.cmd({ t: 'put', key: new Uint8Array(1025), value: b('v') }),
      h.cmd(put('k', 'v'), { client: 'x'.repeat(65), seq: 1, digest: b('d') }),
      h.cmd(put('ok', 'v')),
    ]),
  ]);
  assert.deepEqual(
    results.map((r) => r.kind),
    ['invalid', 'invalid', 'invalid', 'invalid', 'invalid', 'put'],
  );
  assert.deepEqual(results[5], { kind: 'put', index: 6, revision: 6 });
  assert.deepEqual(h.state.applied().point.index, 6);
  await h.stores.close();
});

test('membership changes maintain the member table like applyChange', async () => {
  const h = new Harness();
  const meta = (http: string, p2p: string[]) => new Packr({ useRecords: false }).pack({ http, p2p });
  const change = (op: 'add_voter' | 'add_learner' | 'promote' | 'remove', node: string, m?: Uint8Array): Command => ({
    kind: 'config',
    change: { op, node, ...(m ? { meta: m } : {}) },
  });
  assert.deepEqual(h.state.members(), [{ peerId: 'a', role: 'voter', http: '', p2p: [] }], 'genesis members without addresses');
  const results = h.state.apply([
    h.entry([change('add_voter', 'a', meta('http://a', ['/ip4/1.1.1.1/tcp/1']))]),
    h.entry([change('add_learner', 'c', meta('http://c', ['/c'])), change('add_learner', 'b')]),
    h.entry([change('promote', 'c'), change('promote', 'zz'), change('add_learner', 'a')]),
    h.entry([change('remove', 'b'), change('remove', 'nobody')]),
  ]);
  assert.deepEqual(
    results.map((r) => [r.kind, r.index]),
    [
      ['config', 1],
      ['config', 2],
      ['config', 3],
      ['config', 4],
      ['config', 5],
      ['config', 6],
      ['config', 7],
      ['config', 8],
    ],
  );
  assert.deepEqual(h.state.members(), [
    { peerId: 'a', role: 'voter', http: 'http://a', p2p: ['/ip4/1.1.1.1/tcp/1'] },
    { peerId: 'c', role: 'voter', http: 'http://c', p2p: ['/c'] },
  ]);
  h.state.apply([h.entry([change('remove', 'a'), change('remove', 'c')])]);
  assert.deepEqual(
    h.state.members().map((m) => m.peerId),
    ['c'],
    'the last voter is never removed',
  );
  await h.stores.close();
});

test('crash atomicity: a batch and its applied point, chain and state persist together', async () => {
  const dir = tempDir();
  let h = new Harness(dir);
  h.state.apply([h.entry([h.cmd(put('a', '1')), h.cmd(put('b', '2'))]), h.entry([h.cmd(del('a'))])]);
  const applied = h.state.applied();
  const chain3 = h.state.chainAt(3);
  assert.deepEqual(chain3, applied.chain);
  await h.stores.close();

  h = new Harness(dir);
  assert.deepEqual(h.state.applied(), applied);
  assert.deepEqual(h.state.chainAt(3), chain3);
  assert.equal(h.state.get(b('a')), undefined);
  assert.equal(h.state.get(b('b'))?.revision, 2);
  // A batch that throws (an entry out of order) leaves nothing behind.
  const good = h.entry([h.cmd(put('c', '3'))]);
  assert.throws(() => h.state.apply([good, { slot: 99, index: 99, batch: [], epochs: EPOCHS }]), /does not follow/);
  assert.deepEqual(h.state.applied(), applied);
  assert.equal(h.state.get(b('c')), undefined);
  assert.equal(h.state.chainAt(4), undefined);
  await h.stores.close();
});

test('the chain value is sha256(previous chain || u64be(slot) || chainBytes(command)), from 32 zero bytes', async () => {
  const h = new Harness();
  const cmds: Command[] = [h.cmd(put('a', '1')), { kind: 'config', change: { op: 'add_learner', node: 'b' } }, { kind: 'app', data: new Uint8Array([1]) }];
  const slots = [1, 1, 3];
  h.state.apply([h.entry(cmds.slice(0, 2)), h.entry([]), h.entry(cmds.slice(2))]);
  let chain = new Uint8Array(32);
  cmds.forEach((cmd, i) => {
    const slot = Buffer.alloc(8);
    slot.writeBigUInt64BE(BigInt(slots[i]!));
    chain = new Uint8Array(createHash('sha256').update(chain).update(slot).update(chainBytes(cmd)).digest());
    assert.deepEqual(h.state.chainAt(i + 1), chain);
    assert.equal(h.state.slotAt(i + 1), slots[i]);
  });
  assert.deepEqual(h.state.applied(), { point: { slot: 3, index: 3, epochs: EPOCHS }, chain });
  assert.equal(h.state.chainAt(0), undefined);
  assert.equal(h.state.chainAt(4), undefined);
  await h.stores.close();
});

test('determinism: two stores fed the same entries agree on every answer, chain value and key', async () => {
  const a = new Harness();
  const c = new Harness();
  let seed = 7;
  const rand = (n: number) => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) % n;
  };
  const entries: Entry[] = [];
  for (let i = 0; i < 60; i++) {
    const batch: Command[] = [];
    for (let j = rand(4); j > 0; j--) {
      const key = `k${rand(8)}`;
      const kind = rand(5);
      const op: KvOp =
        kind === 0
          ? del(key)
          : kind === 1
            ? put(key, `v${i}`, { ifMatch: rand(20) })
            : kind === 2
              ? { t: 'txn', compare: [{ key: b(key), target: 'revision', op: '>', value: rand(20) }], success: [{ op: 'put', key: b(`t${key}`), value: b('x') }], failure: [{ op: 'get', key: b(key) }] }
              : put(key, `v${i}`);
      batch.push(a.cmd(op, rand(2) === 0 ? { client: `c${rand(3)}`, seq: rand(10) + 1, digest: b(`${rand(2)}`) } : undefined, 1_000_000 + i * 100_000));
    }
    entries.push(a.entry(batch));
    c.entry(batch);
  }
  const ra = [...a.state.apply(entries.slice(0, 30)), ...a.state.apply(entries.slice(30))];
  const rc = entries.flatMap((e) => c.state.apply([e])); // other batching, same answers
  assert.deepEqual(ra, rc);
  assert.deepEqual(a.state.applied(), c.state.applied());
  const all = (h: Harness) => h.state.range(new Uint8Array(0), null, 10_000, 1 << 30);
  assert.deepEqual(all(a), all(c));
  for (let i = 1; i <= a.state.applied().point.index; i++) assert.deepEqual(a.state.chainAt(i), c.state.chainAt(i));
  assert.notDeepEqual(a.state.applied().chain, new Uint8Array(32));
  await a.stores.close();
  await c.stores.close();
});

test('range: prefix, exclusive after, limit, bytes, and more only when more keys match', async () => {
  const h = new Harness();
  const keys = ['a', 'b/1', 'b/2', 'b/3', 'b/4', 'b0', 'c'];
  h.state.apply([h.entry(keys.map((k) => h.cmd(put(k, `value of ${k}`))))]);
  h.state.apply([h.entry([h.cmd(put('\u00ff', 'ff')), { kind: 'app', data: encodeAppCommand({ op: { t: 'put', key: new Uint8Array([0xff, 0xff]), value: b('') }, time: 1, proposal: 'p' }) }])]);
  const names = (r: { items: { key: Uint8Array }[] }) => r.items.map((i) => Buffer.from(i.key).toString('latin1'));
  let r = h.state.range(b('b/'), null, 2, 1 << 20);
  assert.deepEqual([names(r), r.more], [['b/1', 'b/2'], true]);
  r = h.state.range(b('b/'), r.items[1]!.key, 2, 1 << 20);
  assert.deepEqual([names(r), r.more], [['b/3', 'b/4'], false], 'no more when the page ends exactly at the last match');
  r = h.state.range(b('b/'), b('b/'), 10, 1 << 20);
  assert.deepEqual(names(r), ['b/1', 'b/2', 'b/3', 'b/4'], 'after equal to the prefix skips nothing');
  r = h.state.range(b('b/'), b('a'), 10, 1 << 20);
  assert.deepEqual(names(r), ['b/1', 'b/2', 'b/3', 'b/4'], 'after before the prefix');
  r = h.state.range(b('b/'), b('b/9'), 10, 1 << 20);
  assert.deepEqual([names(r), r.more], [[], false]);
  r = h.state.range(new Uint8Array(0), null, 100, 1 << 20);
  assert.deepEqual(names(r), ['a', 'b/1', 'b/2', 'b/3', 'b/4', 'b0', 'c', '\u00c3\u00bf', '\u00ff\u00ff']);
  r = h.state.range(new Uint8Array([0xff]), null, 100, 1 << 20);
  assert.deepEqual(names(r), ['\u00ff\u00ff'], 'a prefix of 0xff bytes has no end key');
  const vb = b('value of b/1').byteLength;
  r = h.state.range(b('b'), null, 100, 2 * vb);
  assert.deepEqual([names(r), r.more], [['b/1', 'b/2'], true], 'bytesMax bounds a page');
  r = h.state.range(b('b'), null, 100, 1);
  assert.deepEqual([names(r), r.more], [['b/1'], true], 'a page carries at least one item');
  assert.deepEqual(r.items[0], { key: b('b/1'), value: b('value of b/1'), revision: 2 });
  assert.equal(r.items[0]!.value.constructor, Uint8Array);
  await h.stores.close();
});

test('applied() before any bootstrap is empty; bootstrap runs once', async () => {
  const dir = tempDir();
  const stores = openStores(dir);
  assert.equal(stores.state.bootstrapped(), false);
  assert.deepEqual(stores.state.applied().point, { slot: 0, index: 0, epochs: [] });
  stores.state.bootstrap(GENESIS, [{ peerId: 'a', role: 'voter', http: 'http://a', p2p: ['/x'] }]);
  assert.throws(() => stores.state.bootstrap(GENESIS), /already/);
  assert.deepEqual(stores.state.members(), [{ peerId: 'a', role: 'voter', http: 'http://a', p2p: ['/x'] }]);
  await stores.close();
  const again = openStores(dir, { genesis: { ...GENESIS, epochs: [{ fromSlot: 1, config: { voters: ['zzz'], learners: [] } }] } });
  assert.deepEqual(again.state.applied().point, GENESIS, 'genesis is ignored on an existing dir');
  await again.close();
});

test('the configurations applied are recorded (bootstrap, apply, restore), replaced by a forced one, and a rebase starts afresh', async () => {
  const h = new Harness();
  assert.deepEqual(h.state.configsAfter(0, 10), [{ fromSlot: 1, voters: ['a'] }], 'the genesis');
  const two: ConfigEpoch[] = [...EPOCHS, { fromSlot: 9, config: { voters: ['a', 'b'], learners: [] } }];
  h.state.apply([h.entry([], EPOCHS), h.entry([], two), h.entry([], two)]);
  assert.deepEqual(h.state.configsAfter(0, 10), [{ fromSlot: 1, voters: ['a'] }, { fromSlot: 9, voters: ['a', 'b'] }]);
  assert.deepEqual(h.state.configsAfter(1, 10), [{ fromSlot: 9, voters: ['a', 'b'] }], 'after a slot');
  assert.deepEqual(h.state.configsAfter(0, 1), [{ fromSlot: 1, voters: ['a'] }], 'at most limit');
  // A snapshot carries them to a new store.
  const other = openStores(tempDir(), {});
  await other.state.restore(h.state.snapshot());
  assert.deepEqual(other.state.configsAfter(0, 10), h.state.configsAfter(0, 10));
  await other.close();
  // --force-new-cluster: the forced configuration governs from the next slot (4); the change
  // not yet in effect (slot 9) never will be. (It runs at start, once applies are committed.)
  await h.state.committed();
  h.state.forceConfig({ voters: ['b'], learners: [] });
  assert.deepEqual(h.state.configsAfter(0, 10), [{ fromSlot: 1, voters: ['a'] }, { fromSlot: 4, voters: ['b'] }]);
  // --restore-from: a new cluster, whose history is its own.
  h.state.rebase({ voters: ['c'], learners: [] });
  assert.deepEqual(h.state.configsAfter(0, 10), [{ fromSlot: 4, voters: ['c'] }]);
  await h.stores.close();
});

test('a store from before the configurations were recorded records its newest one when opened', async () => {
  const h = new Harness();
  await h.stores.close();
  const env = openEnv(h.dir);
  env.root.transactionSync(() => {
    for (const key of env.configs.getKeys({})) env.configs.removeSync(key);
  });
  await env.root.close();
  const again = openStores(h.dir, {});
  assert.deepEqual(again.state.configsAfter(0, 10), [{ fromSlot: 1, voters: ['a'] }]);
  await again.close();
});

test('the effects journal: what each index changed, in order; nothing for no-ops, failed conditions or retries; its floor follows pruning and reopening', async () => {
  const h = new Harness();
  const rid: RequestId = { client: 'c1', seq: 1, digest: b('d1') };
  h.one(put('a', '1')); // 1
  h.one(del('absent')); // 2: deleted nothing
  h.one(put('a', 'x', { ifAbsent: true })); // 3: failed condition
  h.one({ t: 'txn', compare: [], success: [{ op: 'put', key: b('b'), value: b('2') }, { op: 'get', key: b('a') }, { op: 'delete', key: b('a') }, { op: 'delete', key: b('nope') }], failure: [] }); // 4
  h.one(put('c', '3'), rid); // 5
  h.one(put('c', '3'), rid); // 6: a retry, answered from its session
  h.one(del('b')); // 7
  const rows = (after: number, through = 100, limit = 100) =>
    h.state.effects(after, through, limit).map((e) => [e.index, e.changes.map((c) => (c.type === 'put' ? `put ${Buffer.from(c.key)}=${Buffer.from(c.value)}` : c.type === 'delete' ? `delete ${Buffer.from(c.key)} (${c.cause})` : c.type))]);
  assert.deepEqual(rows(0), [
    [1, ['put a=1']],
    [4, ['put b=2', 'delete a (txn)']],
    [5, ['put c=3']],
    [7, ['delete b (delete)']],
  ]);
  assert.deepEqual(rows(1, 5), [[4, ['put b=2', 'delete a (txn)']], [5, ['put c=3']]], '(after, through]');
  assert.deepEqual(rows(0, 100, 2).map((r) => r[0]), [1, 4], 'limit');
  assert.equal(h.state.journalFloor(), 0, 'from genesis');
  h.state.pruneChain(5); // the hot log is pruned below index 5
  assert.equal(h.state.journalFloor(), 4);
  assert.deepEqual(rows(0).map((r) => r[0]), [5, 7]);
  await h.stores.close();
  const again = openStores(h.dir);
  assert.equal(again.state.journalFloor(), 4, 'the floor is stored');
  assert.deepEqual(again.state.effects(4, 100, 100).map((e) => e.index), [5, 7]);
  await again.close();
});
