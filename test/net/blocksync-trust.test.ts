/**
 * Block sync takes chosen values only on trust it can check (issue 10, bug 5). A rogue peer,
 * a real libp2p node, serves a forged range whose hash chain is consistent with itself (anyone
 * can compute one): a lagging node must not hand it to its consensus core, whether the rogue
 * is a stranger or a member with a diverged log, and must still catch up from an honest one.
 */
import '../../src/polyfill.js';
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { Packr } from 'msgpackr';
import type { SlotValue } from '../../src/consensus/index.js';
import { BLOCKSYNC_PROTOCOL, Blocksync, type BlocksyncHost, type RangeAnswer } from '../../src/sync/blocksync.js';
import { Libp2pTransport } from '../../src/net/p2p.js';
import type { PeerServices } from '../../src/net/transport.js';
import { nextChain } from '../../src/state/command.js';

const CLUSTER = 'trust-test';
const SLOTS = 300;
const enc = new TextEncoder();
const packr = new Packr({ useRecords: false, mapsAsObjects: true });

/** A log of one command a slot, and its chain value after each index. */
function makeLog(prefix: string): { values: SlotValue[]; chain: Uint8Array[] } {
  const values: SlotValue[] = [];
  const chain: Uint8Array[] = [new Uint8Array(32)];
  for (let slot = 1; slot <= SLOTS; slot++) {
    const cmd = { kind: 'app' as const, data: enc.encode(`${prefix}${slot}`) };
    values.push({ slot, batch: [cmd] });
    chain.push(nextChain(chain[slot - 1]!, slot, cmd));
  }
  return { values, chain };
}

const TRUE_LOG = makeLog('v');
const FORGED = makeLog('forged');

const started: { stop(): unknown }[] = [];
after(async () => {
  for (const s of started.reverse()) await s.stop();
});

async function transport(): Promise<Libp2pTransport> {
  const t = new Libp2pTransport({ privateKey: await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.1/tcp/0'], clusterId: CLUSTER });
  await t.start();
  started.push(t);
  return t;
}

/** A host whose log is complete (it serves ranges and vouches for chain values). */
function fullHost(peerId: string, members: () => { voters: string[]; learners: string[] }, leader: () => string | null): BlocksyncHost {
  return {
    cluster: CLUSTER,
    peerId,
    commit: () => ({ slot: SLOTS, index: SLOTS }),
    applied: () => ({ slot: SLOTS, index: SLOTS, chain: TRUE_LOG.chain[SLOTS]! }),
    hotFirstSlot: () => 1,
    readHot: (from, to) => TRUE_LOG.values.slice(from - 1, to),
    chainAt: (index) => TRUE_LOG.chain[index],
    slotAt: (index) => (index >= 1 && index <= SLOTS ? index : undefined),
    cold: () => null,
    learnChosen: () => undefined,
    checkpoints: new Map(),
    members: () => ({ fromSlot: 1, config: members() }),
    configsAfter: () => [],
    leader,
    liveLeader: leader,
    sponsor: () => null,
  };
}

/** The lagging node: it applies what it learns at once, and remembers it. */
function laggingHost(peerId: string, members: () => { voters: string[]; learners: string[] }, leader: () => string | null) {
  const learned: SlotValue[] = [];
  let applied: { slot: number; index: number; chain: Uint8Array } = { slot: 0, index: 0, chain: new Uint8Array(32) };
  const host: BlocksyncHost = {
    cluster: CLUSTER,
    peerId,
    commit: () => ({ slot: applied.slot, index: applied.index }),
    applied: () => applied,
    hotFirstSlot: () => 1,
    readHot: () => [],
    chainAt: () => undefined,
    slotAt: () => undefined,
    cold: () => null,
    learnChosen: (values) => {
      for (const v of values) {
        if (v.slot !== applied.slot + 1) continue;
        learned.push(v);
        applied = { slot: v.slot, index: v.slot, chain: nextChain(applied.chain, v.slot, v.batch[0]!) };
      }
    },
    checkpoints: new Map(),
    members: () => ({ fromSlot: 1, config: members() }),
    configsAfter: () => [],
    leader,
    liveLeader: leader,
    sponsor: () => null,
  };
  return { host, learned };
}

/** The lagging node's peer services: real requests; announcements injected by the test. */
function withInjectedAnnouncements(t: Libp2pTransport): { net: PeerServices; announce(from: string, commitSlot: number): void } {
  let handler: (from: string, data: Uint8Array) => void = () => undefined;
  const net: PeerServices = {
    announce: () => undefined,
    onAnnouncement: (h) => {
      handler = h;
    },
    request: (peer, protocol, body, timeoutMs) => t.request(peer, protocol, body, timeoutMs),
    handle: (protocol, h) => t.handle(protocol, h),
    peersConnected: () => t.peersConnected(),
  };
  return { net, announce: (from, commitSlot) => handler(from, packr.pack({ commitSlot, commitIndex: commitSlot, hotFirstSlot: 1, cold: false })) };
}

async function until(what: string, cond: () => boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const text = (v: SlotValue) => new TextDecoder().decode((v.batch[0] as { data: Uint8Array }).data);

test('a lagging node refuses a forged range with a matching chain, from a stranger or from a diverged member, and catches up from the leader', async () => {
  const [lag, honest, rogue] = [await transport(), await transport(), await transport()];
  lag.setPeerAddresses(honest.peerId, honest.addresses());
  lag.setPeerAddresses(rogue.peerId, rogue.addresses());
  // The rogue serves the forged log, and vouches for its own chain values.
  let rogueRanges = 0;
  await rogue.handle(BLOCKSYNC_PROTOCOL, async (_from, body) => {
    const req = body as { from?: number; to?: number; chainAt?: number };
    if (typeof req.chainAt === 'number') return { status: 'chain', index: req.chainAt, chain: FORGED.chain[req.chainAt] ?? null };
    rogueRanges++;
    const to = Math.min(req.to!, SLOTS);
    return { status: 'ok', source: 'hot', values: FORGED.values.slice(req.from! - 1, to), lastIndex: to, chainAfter: FORGED.chain[to]! } satisfies RangeAnswer;
  });

  let members = { voters: [lag.peerId, honest.peerId], learners: [] as string[] };
  const leader = () => honest.peerId;
  const honestSync = new Blocksync(fullHost(honest.peerId, () => members, leader), honest, { coldReadsMax: 1, coldQueueMax: 1, timeoutMs: 5000 });
  await honestSync.start();
  started.push(honestSync);
  const { host, learned } = laggingHost(lag.peerId, () => members, leader);
  const { net, announce } = withInjectedAnnouncements(lag);
  const sync = new Blocksync(host, net, { coldReadsMax: 1, coldQueueMax: 1, timeoutMs: 5000 });
  await sync.start();
  started.push(sync);

  // 1. The rogue is no member: its announcement is ignored, it is never asked for a range.
  for (let i = 0; i < 10; i++) {
    announce(rogue.peerId, SLOTS);
    await sleep(100);
  }
  assert.equal(rogueRanges, 0, 'a stranger is never asked for a range');
  assert.equal(learned.length, 0);
  assert.ok(sync.stats.strangerAnnouncements >= 10);

  // 2. The rogue is a voter with a diverged log, and the only peer ahead: its range hashes to
  //    the chain value it states, but the leader vouches for another one. Refused.
  members = { voters: [lag.peerId, honest.peerId, rogue.peerId], learners: [] };
  await until('a forged range to arrive', () => {
    announce(rogue.peerId, SLOTS);
    return rogueRanges >= 2;
  });
  await until('the forged ranges to be judged', () => sync.stats.chainUnvouched >= 2);
  assert.equal(learned.length, 0, 'nothing forged reaches the core');
  assert.equal(sync.stats.chainMismatches, 0, 'the forged chain is consistent with itself: only trust tells it apart');

  // 3. The leader announces too: the node catches up from it, the true values only.
  await until('catching up from the leader', () => {
    announce(rogue.peerId, SLOTS);
    announce(honest.peerId, SLOTS);
    return learned.length === SLOTS;
  });
  assert.deepEqual(learned.map(text), TRUE_LOG.values.map(text));
});
