/**
 * Blocks at apply (src/state/block-apply.ts) on a real LMDB store: pend, commit, cancel,
 * conflicts with what a rebase needs, holds that expire on log time, history at any index
 * from the floor on (across pruning and a restore), and bad input that changes nothing.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import canonicalize from 'canonicalize';
import fc from 'fast-check';
import { openStores } from '../../src/stores.js';
import type { ApplyResult } from '../../src/state/command.js';
import { applyTransform, decodeBody, parseTransform, type Body } from '../../src/state/blocks.js';
import { HISTORY_FULL_EVERY } from '../../src/state/block-apply.js';
import { Harness, tempDir } from './harness.js';

function level2(): Harness {
  const h = new Harness();
  const r = h.one({ t: 'cluster_level', level: 2, members: ['a'] });
  assert.equal(r.kind, 'level');
  return h;
}

const tf = (t: unknown): string => canonicalize(t) as string;

function commit(h: Harness, actionId: string, reads: { id: string; revision: number }[], transform: unknown): ApplyResult {
  return h.one({ t: 'block_commit', actionId, reads, transform: tf(transform) });
}

function body(h: Harness, id: string): Body | null | undefined {
  return h.state.block(id)?.body;
}

test('blocks need apply level 2: below it a block command is invalid and changes nothing', () => {
  const h = new Harness();
  const r = commit(h, 'a1', [], { inserts: { x: { v: 1 } } });
  assert.equal(r.kind, 'invalid');
  assert.equal(h.state.block('x'), undefined);
});

test('a one-shot commit inserts; two commits on one read: one wins, the other conflicts with what it missed, and its rebase commits', () => {
  const h = level2();
  const ins = commit(h, 'a1', [], { inserts: { doc: { n: 0, items: [] } } });
  assert.equal(ins.kind, 'block_committed');
  const rev = (ins as { revisions: Record<string, number> }).revisions.doc!;
  assert.deepEqual(h.state.block('doc'), { revision: rev, body: { n: 0, items: [] } });

  const win = commit(h, 'a2', [{ id: 'doc', revision: rev }], { updates: { doc: [{ op: 'splice', field: 'items', index: 0, deleteCount: 0, insert: ['w'] }] } });
  assert.equal(win.kind, 'block_committed');
  const lose = commit(h, 'a3', [{ id: 'doc', revision: rev }], { updates: { doc: [{ op: 'set', field: 'n', value: 1 }] } });
  assert.equal(lose.kind, 'block_conflict');
  const conflict = lose.kind === 'block_conflict' ? lose.conflicts : [];
  assert.deepEqual(conflict, [{ id: 'doc', expected: rev, current: win.index }]);
  const missing = h.state.blockMissing('doc', rev, win.index);
  assert.deepEqual(missing.items.map((m) => [m.revision, m.actionId, JSON.parse(m.transform)]), [[win.index, 'a2', { updates: { doc: [{ op: 'splice', field: 'items', index: 0, deleteCount: 0, insert: ['w'] }] } }]]);
  assert.equal(missing.more, false);
  // The rebase: the same change on the winner's revision.
  const rebased = commit(h, 'a3', [{ id: 'doc', revision: win.index }], { updates: { doc: [{ op: 'set', field: 'n', value: 1 }] } });
  assert.equal(rebased.kind, 'block_committed');
  assert.deepEqual(body(h, 'doc'), { n: 1, items: ['w'] });
  // An action id commits once.
  const again = commit(h, 'a3', [{ id: 'doc', revision: rebased.index }], { updates: { doc: [{ op: 'set', field: 'n', value: 2 }] } });
  assert.deepEqual(again, { kind: 'action_reused', index: again.index, actionId: 'a3', committed: rebased.index });
  const effects = h.state.effects(rebased.index - 1, rebased.index, 1)[0]!;
  assert.deepEqual(effects.changes, [{ type: 'block', id: 'doc', transform: tf({ updates: { doc: [{ op: 'set', field: 'n', value: 1 }] } }) }]);
});

test('a write-skew pair: exactly one commits, one-shot or pended', () => {
  for (const pended of [false, true]) {
    const h = level2();
    const setup = commit(h, 's', [], { inserts: { x: { on: true }, y: { on: true } } });
    const r0 = setup.index;
    const reads = [{ id: 'x', revision: r0 }, { id: 'y', revision: r0 }];
    const offX = { updates: { x: [{ op: 'set', field: 'on', value: false }] } };
    const offY = { updates: { y: [{ op: 'set', field: 'on', value: false }] } };
    let results: ApplyResult[];
    if (pended) {
      const p1 = h.one({ t: 'block_pend', actionId: 'p1', reads, transform: tf(offX), ttlMs: 30_000 });
      const p2 = h.one({ t: 'block_pend', actionId: 'p2', reads, transform: tf(offY), ttlMs: 30_000 });
      assert.equal(p1.kind, 'block_pended');
      assert.equal(p2.kind, 'block_pending', 'a pend holds what it read, not only what it changes');
      results = [h.one({ t: 'block_commit', actionId: 'p1' }), h.one({ t: 'block_commit', actionId: 'p2' })];
      assert.equal(results[1]!.kind, 'action_not_found');
    } else {
      results = [commit(h, 'c1', reads, offX), commit(h, 'c2', reads, offY)];
      assert.equal(results[1]!.kind, 'block_conflict');
    }
    assert.equal(results[0]!.kind, 'block_committed');
    assert.deepEqual([body(h, 'x'), body(h, 'y')], [{ on: false }, { on: true }]);
  }
});

test('a pend holds its blocks until its TTL of log time passes; then a competing pend goes through; cancel releases', () => {
  const h = level2();
  const r0 = commit(h, 's', [], { inserts: { k: { v: 0 } } }).index;
  h.time = h.state.logTime(); // log time stands still until the test moves it
  const t = { updates: { k: [{ op: 'set', field: 'v', value: 1 }] } };
  const first = h.one({ t: 'block_pend', actionId: 'first', reads: [{ id: 'k', revision: r0 }], transform: tf(t), ttlMs: 2_000 });
  assert.equal(first.kind, 'block_pended');
  const expiresAt = (first as { expiresAt: number }).expiresAt;
  const second = (): ApplyResult => h.one({ t: 'block_pend', actionId: 'second', reads: [{ id: 'k', revision: r0 }], transform: tf(t), ttlMs: 2_000 });
  assert.deepEqual(second(), { kind: 'block_pending', index: h.state.applied().point.index, pending: [{ id: 'k', actionId: 'first', expiresAt }] });
  // A one-shot commit on a held block is refused too.
  assert.equal(commit(h, 'oneshot', [{ id: 'k', revision: r0 }], t).kind, 'block_pending');
  for (let i = 0; i < 20; i++) assert.equal(second().kind, 'block_pending', 'while log time stands still, the hold stays');
  // Log time moves a step a command at most: 3 s of TTL and grace take at least 3 commands.
  h.time += 60_000;
  let tries = 0;
  let r = second();
  while (r.kind === 'block_pending') {
    tries++;
    r = second();
  }
  assert.equal(r.kind, 'block_pended');
  assert.equal(tries, 2, 'the hold went once log time passed its TTL and grace, three steps on');
  assert.ok(h.state.logTime() >= expiresAt);
  assert.equal(h.one({ t: 'block_commit', actionId: 'first' }).kind, 'action_not_found', 'an expired pend is gone');
  assert.deepEqual(h.one({ t: 'block_cancel', actionId: 'second' }), { kind: 'block_cancelled', index: h.state.applied().point.index, cancelled: true });
  assert.equal(h.one({ t: 'block_cancel', actionId: 'second' }).kind, 'action_not_found');
  const done = commit(h, 'third', [{ id: 'k', revision: r0 }], t);
  assert.equal(done.kind, 'block_committed', 'cancel let go of the block');
});

test('bad input is refused at apply and changes nothing', () => {
  const h = level2();
  const r0 = commit(h, 's', [], { inserts: { k: { list: [1, 2, 3] } } }).index;
  const before = h.state.block('k');
  const read = [{ id: 'k', revision: r0 }];
  const splice = (index: number, deleteCount: number): unknown => ({ updates: { k: [{ op: 'set', field: 'x', value: 1 }, { op: 'splice', field: 'list', index, deleteCount, insert: [] }] } });
  for (const [t, kind] of [
    [splice(2, 2), 'invalid_operation'],
    [splice(-1, 1), 'invalid_operation'],
    [splice(0.5, 1), 'invalid_operation'],
    [{ updates: { k: [{ op: 'splice', field: 'x', index: 0, deleteCount: 0 }] } }, 'invalid_operation'],
    [{ inserts: { k: { a: 1 } } }, 'invalid_operation'],
    [{ deletes: ['nope'] }, 'invalid'], // not among the reads
    [{ updates: { k: [{ op: 'push', field: 'list' }] } }, 'invalid'],
  ] as const) {
    const r = commit(h, `bad${Math.random()}`.slice(0, 20), read, t);
    assert.equal(r.kind, kind, JSON.stringify(t));
  }
  for (const transform of ['{"inserts":{"k2":{"__proto__":{"x":1}}}}', '{"inserts":{"k2":{"a":{"constructor":1}}}}', '{"inserts":{"k2":[]}}', '{"inserts":{"bad id":{}}}', 'not json', `{"inserts":{"k2":${'['.repeat(70)}${']'.repeat(70)}}}`]) {
    const r = h.one({ t: 'block_commit', actionId: 'x1', reads: [], transform });
    assert.equal(r.kind, 'invalid', transform.slice(0, 60));
  }
  assert.equal(h.one({ t: 'block_commit', actionId: 'bad id!', reads: [], transform: '{}' }).kind, 'invalid');
  assert.deepEqual(h.state.block('k'), before);
  assert.equal(h.state.block('k2'), undefined);
});

/** Random transforms on a few blocks, with a model of every revision. */
test('?at= over many revisions equals a model, after pruning from the floor on, and after a restore', async () => {
  const h = level2();
  const ids = ['a', 'b', 'c'];
  const model = new Map<string, { revision: number; body: Body | null }[]>(ids.map((id) => [id, []]));
  const current = (id: string): { revision: number; body: Body | null } => model.get(id)!.at(-1) ?? { revision: 0, body: null };
  const rng = fc.sample(fc.array(fc.tuple(fc.constantFrom(...ids), fc.nat(5), fc.integer({ min: -1, max: 4 })), { minLength: 150, maxLength: 150 }), { seed: 7, numRuns: 1 })[0]!;
  let n = 0;
  for (const [id, kind, x] of rng) {
    const cur = current(id);
    let t: unknown;
    if (cur.body === null) t = { inserts: { [id]: { n: x, list: [] } } };
    else if (kind === 0) t = { deletes: [id] };
    else if (kind === 1) t = { updates: { [id]: [{ op: 'splice', field: 'list', index: x === -1 ? -1 : 0, deleteCount: 0, insert: [x, { at: n }] }] } };
    else t = { updates: { [id]: [{ op: 'set', field: 'n', value: x * 10 + n }] } };
    const r = commit(h, `m${n++}`, cur.revision === 0 ? [] : [{ id, revision: cur.revision }], t);
    if (x === -1 && cur.body !== null && kind === 1) {
      assert.equal(r.kind, 'invalid_operation', 'a negative splice');
      continue;
    }
    const expected = applyTransform((y) => (y === id && cur.body !== null ? cur.body : undefined), parseTransform(t)).get(id);
    assert.equal(r.kind, 'block_committed', JSON.stringify([t, r]));
    model.get(id)!.push({ revision: r.index, body: expected === null || expected === undefined ? null : decodeBody(expected) });
  }
  const last = h.state.applied().point.index;
  const stateAt = (id: string, at: number): { revision: number; body: Body | null } => [...model.get(id)!].reverse().find((s) => s.revision <= at) ?? { revision: 0, body: null };
  const check = (from: number, what: string): void => {
    for (let at = from; at <= last; at++) for (const id of ids) assert.deepEqual(h.state.blockAt(id, at), stateAt(id, at), `${what}: ${id} at ${at}`);
  };
  assert.ok(model.get('a')!.length > HISTORY_FULL_EVERY, 'more revisions than a full copy spans');
  check(0, 'whole history');
  // Pruned through an index in the middle: every index from the floor on still answers.
  const floor = Math.floor(last / 2);
  h.state.pruneChain(floor + 1);
  await h.state.committed();
  check(floor, 'pruned');
  for (const id of ids) {
    const below = h.state.blockAt(id, floor - 5);
    const cur = current(id);
    if (cur.revision <= floor - 5) assert.deepEqual(below, cur, 'below the floor, the current state is still an answer');
    else assert.equal(below, 'unavailable');
  }
  // The revisions listed are the model's from the floor on.
  for (const id of ids) {
    const listed = h.state.blockRevisions(id, floor, 10_000).items.map((r) => r.revision);
    assert.deepEqual(listed, model.get(id)!.filter((s) => s.revision > floor).map((s) => s.revision));
  }

  // A node restored from a snapshot has no history: from its point on, every index answers
  // once more revisions come (the previous body is kept before the next revision).
  const snap = h.state.snapshot();
  const dir = tempDir();
  const restored = openStores(dir);
  await restored.state.restore(snap);
  await restored.close();
  await h.stores.close();
  const h2 = new Harness(dir);
  const point = h2.state.applied().point.index;
  for (let i = 0; i < 40; i++) {
    const id = ids[i % 3]!;
    const cur = current(id);
    const t = cur.body === null ? { inserts: { [id]: { n: i, list: [] } } } : { updates: { [id]: [{ op: 'set', field: 'n', value: i }] } };
    const r = commit(h2, `r${i}`, cur.revision === 0 ? [] : [{ id, revision: cur.revision }], t);
    assert.equal(r.kind, 'block_committed');
    model.get(id)!.push({ revision: r.index, body: cur.body === null ? { n: i, list: [] } : { ...cur.body, n: i } });
  }
  const end = h2.state.applied().point.index;
  for (let at = point; at <= end; at++) for (const id of ids) assert.deepEqual(h2.state.blockAt(id, at), stateAt(id, at), `restored: ${id} at ${at}`);
  await h2.stores.close();
});

test('review of the blocks apply: crafted commands apply as invalid, never throw out of apply', () => {
  const h = level2();
  const deep = (n: number): string => `{"deletes":[${'['.repeat(n)}${']'.repeat(n)}]}`;
  for (const transform of [
    deep(100_000),
    `{"updates":{"k":[{"op":${'['.repeat(100_000)}${']'.repeat(100_000)},"field":"a"}]}}`,
    '{"inserts":{"a":{"x":"\\ud800"}}}',
    '{"inserts":{"a":{"\\udc00":1}}}',
    `{"updates":{"k":[${Array.from({ length: 1_001 }, () => '{"op":"set","field":"a","value":1}').join(',')}]}}`,
  ]) {
    const r = h.one({ t: 'block_commit', actionId: 'c', reads: [{ id: 'k', revision: 0 }], transform });
    assert.equal(r.kind, 'invalid', transform.slice(0, 40));
  }
  // A fractional time (proposers stamp whole milliseconds) would key no expiry row.
  const results = h.state.apply([h.entry([h.cmd({ t: 'block_pend', actionId: 'p', reads: [], transform: tf({ inserts: { z: {} } }), ttlMs: 2_000 }, undefined, h.time + 0.5)])]);
  assert.equal(results[0]!.kind, 'invalid');
});

test('review of the blocks apply: splices bounded in work; a block named __proto__; an expired pend not yet reaped is gone; a pend retried is answered again', () => {
  const h = level2();
  const big = Array.from({ length: 400_000 }, () => 0);
  const r0 = commit(h, 'big', [], { inserts: { big: { list: big } } });
  assert.equal(r0.kind, 'block_committed');
  const splices = Array.from({ length: 20 }, () => ({ op: 'splice', field: 'list', index: 0, deleteCount: 1, insert: [1] }));
  const started = performance.now();
  const r = commit(h, 'many', [{ id: 'big', revision: r0.index }], { updates: { big: splices } });
  assert.equal(r.kind, 'invalid_operation', 'over the splice work bound');
  assert.ok(performance.now() - started < 5_000);
  assert.equal(h.state.block('big')!.revision, r0.index);

  const proto = h.one({ t: 'block_commit', actionId: 'proto', reads: [], transform: '{"inserts":{"__proto__":{"a":1},"b":{"a":2}}}' });
  assert.deepEqual(Object.keys((proto as { revisions: object }).revisions).sort(), ['__proto__', 'b']);
  assert.deepEqual(h.state.block('__proto__')?.body, { a: 1 });

  // 1,005 pends that expire at the same log time: the reaper lets 1,000 go a command; the
  // rest are gone all the same.
  h.time = h.state.logTime();
  const rev = h.state.block('b')!.revision;
  for (let i = 0; i < 1_005; i++) assert.equal(h.one({ t: 'block_pend', actionId: `p${i}`, reads: [], transform: tf({ inserts: { [`n${i}`]: {} } }), ttlMs: 2_000 }).kind, 'block_pended');
  const again = h.one({ t: 'block_pend', actionId: 'p3', reads: [], transform: tf({ inserts: { n3: {} } }), ttlMs: 2_000 });
  assert.equal(again.kind, 'block_pended', 'the same pend again: its first answer');
  h.time += 10_000;
  for (let i = 0; i < 4; i++) h.one({ t: 'block_cancel', actionId: 'none' });
  assert.equal(h.one({ t: 'block_commit', actionId: 'p1004' }).kind, 'action_not_found');
  assert.equal(commit(h, 'after', [{ id: 'b', revision: rev }], { inserts: { n1003: {} } }).kind, 'block_committed', 'its hold went with it');
});

test('review of the blocks apply: a conflict below the history floor says its missing list is not whole', async () => {
  const h = level2();
  const r1 = commit(h, 'i', [], { inserts: { x: { n: 0 } } }).index;
  let rev = r1;
  for (let i = 1; i <= 3; i++) rev = commit(h, `u${i}`, [{ id: 'x', revision: rev }], { updates: { x: [{ op: 'set', field: `f${i}`, value: i }] } }).index;
  h.state.pruneChain(rev); // floor: rev - 1
  await h.state.committed();
  const missing = h.state.blockMissing('x', r1, rev);
  assert.equal(missing.more, true, 'a rebase on them would lose the pruned ones');
  assert.deepEqual(h.state.blockMissing('x', rev - 1, rev).items.map((m) => m.revision), [rev]);
  assert.equal(h.state.blockMissing('x', rev - 1, rev).more, false);
  assert.equal(h.state.blockRevisions('x', 0, 100).complete, false);
});

test('second review of the blocks apply: an action changing more than 8 MiB of bodies is refused before any is decoded; a fractional log time from level 1 is rounded at level 2', () => {
  const h = level2();
  const big = { s: 'x'.repeat(1_000_000) };
  const ids = Array.from({ length: 9 }, (_, i) => `big${i}`);
  const revs: { id: string; revision: number }[] = [];
  for (const id of ids) revs.push({ id, revision: commit(h, `i-${id}`, [], { inserts: { [id]: big } }).index });
  const r = commit(h, 'all', revs, { updates: Object.fromEntries(ids.map((id) => [id, [{ op: 'set', field: 'n', value: 1 }]])) });
  assert.equal(r.kind, 'invalid_operation');
  assert.match((r as { message: string }).message, /at most 8388608/);
  assert.equal(commit(h, 'some', revs.slice(0, 7), { updates: Object.fromEntries(ids.slice(0, 7).map((id) => [id, [{ op: 'set', field: 'n', value: 1 }]])) }).kind, 'block_committed');

  const h1 = new Harness();
  h1.time = 1_000;
  h1.one({ t: 'put', key: new TextEncoder().encode('a'), value: new Uint8Array(0) });
  h1.state.apply([h1.entry([h1.cmd({ t: 'put', key: new TextEncoder().encode('a'), value: new Uint8Array(0) }, undefined, 1_000.5)])]);
  assert.equal(h1.one({ t: 'cluster_level', level: 2, members: ['a'] }).kind, 'level');
  const pend = h1.one({ t: 'block_pend', actionId: 'p', reads: [], transform: tf({ inserts: { z: {} } }), ttlMs: 2_000 });
  assert.equal(pend.kind, 'block_pended');
  assert.ok(Number.isSafeInteger((pend as { expiresAt: number }).expiresAt));
});

test('history pages stop at 1 MiB of transforms (an insert holds its whole body), past their first item', () => {
  const h = level2();
  const r1 = commit(h, 'i', [], { inserts: { big: { s: 'x'.repeat(500_000) } } }).index;
  const r2 = commit(h, 'u', [{ id: 'big', revision: r1 }], { updates: { big: [{ op: 'set', field: 's', value: 'y'.repeat(600_000) }] } }).index;
  const r3 = commit(h, 'v', [{ id: 'big', revision: r2 }], { updates: { big: [{ op: 'set', field: 'n', value: 1 }] } }).index;
  const first = h.state.blockRevisions('big', 0, 100);
  assert.deepEqual([first.items.map((i) => i.revision), first.more], [[r1], true]);
  const second = h.state.blockRevisions('big', r1, 100);
  assert.deepEqual([second.items.map((i) => i.revision), second.more], [[r2, r3], false]);
  const missing = h.state.blockMissing('big', 0, r3);
  assert.equal(missing.more, true, 'a rebase re-reads');
});
