import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Command, ConfigEpoch, SlotValue } from '../../src/consensus/index.js';
import type { ConfigRecord } from '../../src/state/state-store.js';
import { nextChain } from '../../src/state/command.js';
import { chainAnswer, chainAnswerFrom, checkRange, laterVoters, leaderNamedByMajority, votersWhoVouch, vouched, vouchersFor, type ChainAnswer, type ChainSource } from '../../src/sync/range-check.js';

const enc = new TextEncoder();
const cmd = (s: string): Command => ({ kind: 'app', data: enc.encode(s) });
const ZERO = new Uint8Array(32);
/** A configuration as a lagging node holds it (governing from slot 1). */
const cfg = (...voters: string[]): ConfigRecord => ({ fromSlot: 1, voters });
const epoch = (voters: string[], learners: string[]): ConfigEpoch => ({ fromSlot: 1, config: { voters, learners } });
/** An answer at index 3 that holds no chain value there: only whom it follows (and, from
 *  `says`, the configurations it reports, checked as off the wire). */
const follows = (leader: string | null): ChainAnswer => ({ status: 'chain', index: 3, chain: null, ends: null, leader });
const says = (leader: string | null, configs: ConfigRecord[]): ChainAnswer => chainAnswerFrom({ ...follows(leader), configs })!;

/** Chain values of a log, by index, and the slot of each index. */
function chains(values: readonly SlotValue[]): { chain: Uint8Array[]; slot: number[] } {
  const chain: Uint8Array[] = [ZERO];
  const slot = [0];
  for (const v of values) {
    for (const c of v.batch) {
      chain.push(nextChain(chain[chain.length - 1]!, v.slot, c));
      slot.push(v.slot);
    }
  }
  return { chain, slot };
}

/** The cluster's log: slot 3 is a no-op (a new leader's), slot 6 a no-op at the end. */
const TRUE: SlotValue[] = [
  { slot: 1, batch: [cmd('a')] },
  { slot: 2, batch: [cmd('b'), cmd('c')] },
  { slot: 3, batch: [] },
  { slot: 4, batch: [cmd('d')] },
  { slot: 5, batch: [cmd('e')] },
  { slot: 6, batch: [] },
];
const T = chains(TRUE);

/** A voter that applied the true log through `slot`. */
function voter(slot: number): ChainSource {
  const values = TRUE.filter((v) => v.slot <= slot);
  const index = values.reduce((n, v) => n + v.batch.length, 0);
  return { applied: () => ({ slot, index, chain: T.chain[index]! }), chainAt: (i) => (i >= 1 && i <= index ? T.chain[i] : undefined), slotAt: (i) => (i >= 1 && i <= index ? T.slot[i] : undefined) };
}

/** A lagging node at slot 1 (index 1) is served `values` by `source` (a voter, not the
 *  leader); voters v2 and v3 answer from the true log through slot 6. Is the range taken? */
function taken(values: SlotValue[], source = 'v1'): boolean {
  const applied = { index: 1, chain: T.chain[1]! };
  const lastIndex = 1 + values.reduce((n, v) => n + v.batch.length, 0);
  const own = chains([...TRUE.slice(0, 1), ...values]);
  const range = checkRange(2, applied, values, lastIndex, own.chain[lastIndex], new Map());
  assert.ok(range.ok, 'each range here is consistent with itself');
  const answers = new Map<string, ChainAnswer | null>([
    ['v2', chainAnswer(voter(6), range.lastIndex, range.through)],
    ['v3', chainAnswer(voter(6), range.lastIndex, range.through)],
  ]);
  // Four voters: the source and two more make a majority; the leader (v4) did not answer.
  return vouched(range, source, ['v4'], cfg('v1', 'v2', 'v3', 'v4'), answers);
}

test('an honest range from a voter, vouched for by a majority, is taken (trailing no-ops included)', () => {
  assert.equal(taken(TRUE.slice(1)), true);
  assert.equal(taken(TRUE.slice(1, 4)), true, 'a range that stops after a command');
  assert.equal(taken(TRUE.slice(1, 2)), true);
});

test('a command moved into a no-op\'s slot, the order and the chain of commands kept, is refused', () => {
  const moved = [TRUE[1]!, { slot: 3, batch: [cmd('d')] }, { slot: 4, batch: [] }, TRUE[4]!, TRUE[5]!];
  assert.equal(taken(moved), false);
  const split = [{ slot: 2, batch: [cmd('b')] }, { slot: 3, batch: [cmd('c')] }, ...TRUE.slice(3)];
  assert.equal(taken(split), false);
});

test('a range that ends in no-ops where the cluster chose commands is refused', () => {
  // Slots 2..5 with slot 4 and 5 claimed empty: the chain end (after c) is true, but the
  // voters hold a command (d) after it at slot 4.
  assert.equal(taken([TRUE[1]!, TRUE[2]!, { slot: 4, batch: [] }, { slot: 5, batch: [] }]), false);
  // All empty: nothing but no-ops in place of b, c.
  assert.equal(taken([{ slot: 2, batch: [] }]), false);
});

test('a forged command with a chain consistent with itself is refused', () => {
  assert.equal(taken([TRUE[1]!, TRUE[2]!, { slot: 4, batch: [cmd('forged')] }]), false);
});

test('voters that have not applied that far, or pruned it, do not vouch', () => {
  const behind = voter(2);
  assert.deepEqual(chainAnswer(behind, 4, 5), { status: 'chain', index: 4, chain: null, ends: null });
  assert.equal(chainAnswer(behind, 3, 5).ends, null, 'applied through slot 2 only: it cannot tell whether slots 3..5 are empty');
  assert.equal(chainAnswer(voter(6), 5, 6).ends, true);
  assert.equal(chainAnswer(voter(6), 3, 3).ends, true, 'the command after index 3 (d) is at slot 4');
  assert.equal(chainAnswer(voter(6), 3, 4).ends, false);
  const pruned: ChainSource = { ...voter(6), chainAt: () => undefined, slotAt: () => undefined };
  assert.equal(chainAnswer(pruned, 3, 4).chain, null);
});

test('a checkpoint on the way that does not match refuses the range', () => {
  const values = TRUE.slice(1);
  const bad = new Map([[3, new Uint8Array(32).fill(7)]]);
  assert.deepEqual(checkRange(2, { index: 1, chain: T.chain[1]! }, values, 5, T.chain[5], bad), { ok: false, why: 'checkpoint' });
  assert.deepEqual(checkRange(2, { index: 1, chain: T.chain[1]! }, values, 5, T.chain[4], new Map()), { ok: false, why: 'chain' });
  assert.deepEqual(checkRange(3, { index: 1, chain: T.chain[1]! }, values, 5, T.chain[5], new Map()), { ok: false, why: 'malformed' });
});

test('a checkpoint lets in the slots before its command\'s slot, not that slot (its batch may be cut short) nor any after it', () => {
  const applied = { index: 1, chain: T.chain[1]! };
  const all = new Map(T.chain.map((c, i) => [i, c] as [number, Uint8Array]));
  const pinned = (values: SlotValue[], checkpoints = all): number[] => {
    const lastIndex = 1 + values.reduce((n, v) => n + v.batch.length, 0);
    const range = checkRange(2, applied, values, lastIndex, chains([...TRUE.slice(0, 1), ...values]).chain[lastIndex], checkpoints);
    assert.ok(range.ok);
    return values.slice(0, range.pinned).map((v) => v.slot);
  };
  assert.deepEqual(pinned(TRUE.slice(1)), [2, 3, 4], 'slot 5 (the last command\'s) and the true trailing no-op wait for a voucher');
  // Slots 4 and 5 forged empty: the end (after c) is a true chain value, yet commands were
  // chosen there.
  assert.deepEqual(pinned([TRUE[1]!, TRUE[2]!, { slot: 4, batch: [] }, { slot: 5, batch: [] }]), []);
  // Slot 2 cut short after b: the end (after b) is a true chain value, yet c was chosen there.
  assert.deepEqual(pinned([{ slot: 2, batch: [cmd('b')] }]), []);
  assert.deepEqual(pinned([{ slot: 2, batch: [] }, { slot: 3, batch: [] }]), [], 'no command: the checkpoint pins nothing');
  assert.deepEqual(pinned(TRUE.slice(1), new Map([[3, T.chain[3]!]])), [], 'index 3 (c) is in slot 2, the first');
  assert.deepEqual(pinned(TRUE.slice(1), new Map([[4, T.chain[4]!]])), [2, 3], 'a checkpoint on the way (d, slot 4) pins the slots before its own');
  assert.deepEqual(pinned(TRUE.slice(1), new Map()), [], 'no checkpoint');
});

test('a configuration that does not name the node yet (a joiner\'s genesis) has no majority that vouches', () => {
  assert.deepEqual(votersWhoVouch('j', epoch(['f'], [])).voters, []);
  assert.deepEqual(votersWhoVouch('j', epoch(['f'], ['j'])).voters, ['f']);
  assert.deepEqual(votersWhoVouch('j', epoch(['f', 'j'], [])).voters, ['f', 'j']);
  const range = checkRange(2, { index: 1, chain: T.chain[1]! }, TRUE.slice(1, 2), 3, T.chain[3], new Map());
  assert.ok(range.ok);
  assert.equal(vouched(range, 'f', [], cfg(), new Map()), false, 'no voters, no majority');
});

test('a trusted node that answers otherwise vetoes a majority', () => {
  // A node whose configuration names a sole voter f is served a range by f, whose log
  // diverged after it was removed: slots 2..3 with a forged command. The sponsor s knows.
  const applied = { index: 1, chain: T.chain[1]! };
  const forged = [{ slot: 2, batch: [cmd('forged')] }, TRUE[2]!];
  const own = chains([TRUE[0]!, ...forged]);
  const range = checkRange(2, applied, forged, 2, own.chain[2], new Map());
  assert.ok(range.ok);
  const fromSponsor = new Map([['s', chainAnswer(voter(6), 2, 3)]]);
  assert.equal(vouched(range, 'f', ['s'], cfg('f'), fromSponsor), false);
  assert.equal(vouched(range, 'f', ['s'], cfg('f'), new Map([['s', null]])), true, 'a sponsor that does not answer vetoes nothing');
  // Trailing no-ops where the sponsor holds a command: the chain end agrees, `ends` does not.
  const tail = [TRUE[1]!, TRUE[2]!, { slot: 4, batch: [] }];
  const t = checkRange(2, applied, tail, 3, T.chain[3], new Map());
  assert.ok(t.ok);
  assert.equal(vouched(t, 'f', ['s'], cfg('f'), new Map([['s', chainAnswer(voter(6), 3, 4)]])), false);
  assert.equal(vouched(t, 'f', ['s'], cfg('f'), new Map([['s', chainAnswer(voter(2), 3, 4)]])), true, 'a sponsor that cannot tell vetoes nothing');
});

test('the leader a majority of the voters follow is named; a minority names no one (seed 550: voters that pruned every chain value a node needs still know whom they follow)', () => {
  const voters = cfg('a', 'b', 'c', 'd', 'e');
  const answers = new Map<string, ChainAnswer | null>([
    ['a', follows('l')],
    ['b', follows('l')],
    ['c', follows('l')],
    ['d', follows('x')],
    ['e', null],
  ]);
  assert.equal(leaderNamedByMajority(voters, answers), 'l');
  answers.set('c', follows(null));
  assert.equal(leaderNamedByMajority(voters, answers), null, 'two of five');
  answers.set('z', follows('l'));
  assert.equal(leaderNamedByMajority(voters, answers), null, 'a non-voter\'s word does not count');
  assert.equal(chainAnswer({ ...voter(6), liveLeader: () => 'l' }, 3, 4).leader, 'l');
});

test('a range from the leader a majority follows is taken when no answering voter contradicts it (found by review: not when one does)', () => {
  // A lagging node whose five voters pruned the chain values it needs: they name leader l.
  const applied = { index: 1, chain: T.chain[1]! };
  const range = checkRange(2, applied, TRUE.slice(1, 2), 3, T.chain[3], new Map());
  assert.ok(range.ok);
  const voters = cfg('a', 'b', 'c', 'd', 'e');
  const answers = new Map<string, ChainAnswer | null>([
    ['a', follows('l')],
    ['b', follows('l')],
    ['c', follows('l')],
  ]);
  assert.equal(vouched(range, 'l', [], voters, answers), true);
  assert.equal(vouched(range, 'm', [], voters, answers), false, 'another source is not the named leader');
  // A forged range from l: a voter that still holds the true chain value contradicts it.
  const forged = checkRange(2, applied, [{ slot: 2, batch: [cmd('forged')] }], 2, chains([TRUE[0]!, { slot: 2, batch: [cmd('forged')] }]).chain[2], new Map());
  assert.ok(forged.ok);
  answers.set('d', { ...chainAnswer(voter(6), 2, 2), leader: 'l' });
  assert.equal(vouched(forged, 'l', [], voters, answers), false);
});

test('a leader named by a majority of a later configuration that a majority reports is named (seed 88095: voters removed while the node was down)', () => {
  // The node's configuration is {n0..n4}. Since then n0 was removed (from slot 12), n1 (from
  // slot 27), and n5 added (slot 40). n0 is gone; n1 runs but follows no one; n2 and n4
  // follow n5: two of five.
  const own = cfg('n0', 'n1', 'n2', 'n3', 'n4');
  const c1 = { fromSlot: 12, voters: ['n1', 'n2', 'n3', 'n4'] };
  const c2 = { fromSlot: 27, voters: ['n2', 'n3', 'n4'] };
  const c4 = { fromSlot: 40, voters: ['n2', 'n3', 'n4', 'n5'] };
  const answers = new Map<string, ChainAnswer | null>([
    ['n0', null],
    ['n1', says(null, [c1, c2])],
    ['n2', says('n5', [c1, c2, c4])],
    ['n4', says('n5', [c1, c2, c4])],
  ]);
  // c2 is reported by three of the five: real. Two of c2's three voters follow n5.
  assert.equal(leaderNamedByMajority(own, answers), 'n5');
  assert.equal(leaderNamedByMajority(own, new Map([...answers, ['n1', says(null, [c1])]])), null, 'without n1 reporting c2, two of five report it');
  // Two liars of the five (n2, n4) make up a configuration of their own (with a rogue that
  // they follow): two of five report it, so it is not taken.
  const liars = new Map<string, ChainAnswer | null>([
    ['n0', says(null, [c1])],
    ['n1', says(null, [c1])],
    ['n2', says('rogue', [{ fromSlot: 13, voters: ['n2', 'n4', 'rogue'] }])],
    ['n4', says('rogue', [{ fromSlot: 13, voters: ['n2', 'n4', 'rogue'] }])],
  ]);
  assert.equal(leaderNamedByMajority(own, liars), null, 'a configuration two of five report is not taken');
  // Answers come off the wire through chainAnswerFrom: malformed reports make no answer.
  for (const configs of [[{ fromSlot: 'x', voters: ['a'] }], [null], 'nope', [{ fromSlot: 2, voters: [] }], [{ fromSlot: 2, voters: ['a', ''] }], [{ fromSlot: 2, voters: ['x'.repeat(129)] }], [{ fromSlot: 1.5, voters: ['a'] }]]) {
    assert.equal(chainAnswerFrom({ ...says(null, []), configs }), null, JSON.stringify(configs));
  }
  assert.equal(chainAnswerFrom({ ...says(null, []), configs: Array.from({ length: 65 }, (_, i) => ({ fromSlot: i + 2, voters: ['a'] })) }), null, 'too many');
  assert.deepEqual(chainAnswerFrom(says('l', [{ fromSlot: 3, voters: ['b', 'a', 'b'] }]))?.configs, [{ fromSlot: 3, voters: ['a', 'b'] }], 'voters sorted, once each');
  assert.equal(chainAnswerFrom({ status: 'chain', index: 3, chain: 'x', ends: null }), null);
  // An answer reports what the store recorded after the asker's configuration.
  const src: ChainSource = { ...voter(6), configsAfter: (slot) => [c1, c2, c4].filter((c) => c.fromSlot > slot) };
  assert.deepEqual(chainAnswer(src, 3, 4, 12).configs, [c2, c4]);
  assert.equal(chainAnswer(src, 3, 4).configs, undefined, 'not asked');
});

test('a made-up configuration cannot pass for a real one by its voters joined into one id (found by review)', () => {
  // Voters a1, a2 lie: they report the real configuration's slot with voters [a1, a2, 'b1 b2 b3'].
  const own = cfg('a1', 'a2', 'b1', 'b2', 'b3');
  const real = { fromSlot: 40, voters: ['a1', 'a2', 'b1', 'b2', 'b3'] };
  const fake = { fromSlot: 40, voters: ['a1', 'a2', 'b1 b2 b3'] };
  const answers = new Map<string, ChainAnswer | null>([
    ['a1', says('R', [fake])],
    ['a2', says('R', [fake])],
    ['b1', says('b1', [real])],
    ['b2', says('b1', [real])],
  ]);
  assert.equal(leaderNamedByMajority(own, answers), null);
});

test('voters added since the asker\'s configuration are asked in a further round (found by review)', () => {
  // Own {n0..n4}; since then n5 and n6 were added and n0, n1 removed (each applied its own
  // removal, then heard no more); n5 leads. Only n2 and n3 of the newest five were asked.
  const own = cfg('n0', 'n1', 'n2', 'n3', 'n4');
  const history = [
    { fromSlot: 10, voters: ['n0', 'n1', 'n2', 'n3', 'n4', 'n5'] },
    { fromSlot: 20, voters: ['n0', 'n1', 'n2', 'n3', 'n4', 'n5', 'n6'] },
    { fromSlot: 30, voters: ['n1', 'n2', 'n3', 'n4', 'n5', 'n6'] },
    { fromSlot: 40, voters: ['n2', 'n3', 'n4', 'n5', 'n6'] },
  ];
  const answers = new Map<string, ChainAnswer | null>([
    ['n0', says(null, history.slice(0, 3))],
    ['n1', says(null, history)],
    ['n2', says('n5', history)],
    ['n3', says('n5', history)],
    ['n4', null],
  ]);
  assert.equal(leaderNamedByMajority(own, answers), null, 'two of five');
  assert.deepEqual(laterVoters(own, answers).sort(), ['n5', 'n6']);
  answers.set('n6', says('n5', history));
  assert.equal(leaderNamedByMajority(own, answers), 'n5');
});

test('the source is asked too: whom it follows counts as any voter\'s word (found by review: two liars of five could keep the leader from being named)', () => {
  assert.deepEqual(vouchersFor('s', 'me', [], ['a', 's', 'me']), ['a', 's']);
  assert.deepEqual(vouchersFor('s', 'me', ['s'], ['a']), [], 'a trusted source needs no one');
  const own = cfg('n2', 'n3', 'n4', 'n5', 'n6');
  const answers = new Map<string, ChainAnswer | null>([
    ['n2', follows('n5')],
    ['n3', follows('rogue')],
    ['n4', follows('rogue')],
    ['n6', follows('n5')],
  ]);
  assert.equal(leaderNamedByMajority(own, answers), null);
  answers.set('n5', follows('n5'));
  assert.equal(leaderNamedByMajority(own, answers), 'n5');
});

test('of two voters, the other\'s word names the leader and reports later configurations; from three on, a majority is still needed; a learner asker gets no such relief (seed 1001)', () => {
  const pair = votersWhoVouch('self', epoch(['self', 'x'], []));
  assert.equal(leaderNamedByMajority(pair, new Map([['x', follows('l')]])), 'l', 'the other of two voters');
  assert.equal(leaderNamedByMajority({ fromSlot: 1, voters: ['self', 'x'] }, new Map([['x', follows('l')]])), null, 'without knowing the asker: a majority');
  // x reports a configuration that adds l, which l's word then leads (the hop).
  const later = { fromSlot: 9, voters: ['l', 'self', 'x'] };
  assert.equal(leaderNamedByMajority(pair, new Map([['x', says('l', [later])], ['l', says('l', [])]])), 'l');
  const three = votersWhoVouch('self', epoch(['self', 'x', 'y'], []));
  assert.equal(leaderNamedByMajority(three, new Map([['x', follows('l')], ['y', follows(null)]])), null, 'one of three');
  assert.equal(leaderNamedByMajority(three, new Map([['x', follows('l')], ['y', follows('l')]])), 'l');
  const learner = votersWhoVouch('self', epoch(['x', 'y'], ['self']));
  assert.equal(leaderNamedByMajority(learner, new Map([['x', follows('l')]])), null, 'a learner is no voter: one of two is no majority');
});
