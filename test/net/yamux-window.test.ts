import '../../src/polyfill.js';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { YamuxStream } from '@chainsafe/libp2p-yamux/stream';
import type { Envelope } from '../../src/consensus/index.js';
import { Libp2pTransport } from '../../src/net/p2p.js';
import { yamuxWindowStats } from '../../src/net/yamux-window.js';

const CLUSTER = 'test-cluster';
let a: Libp2pTransport;
let b: Libp2pTransport;
before(async () => {
  a = new Libp2pTransport({ privateKey: await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.1/tcp/0'], clusterId: CLUSTER });
  b = new Libp2pTransport({ privateKey: await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.1/tcp/0'], clusterId: CLUSTER });
  await a.start();
  await b.start();
  a.setPeerAddresses(b.peerId, b.addresses());
});
after(async () => {
  await a?.stop();
  await b?.stop();
});

const accept = (slot: number, dataBytes: number): Envelope => ({
  cluster: CLUSTER, from: a.peerId, to: b.peerId,
  msg: { type: 'accept', ballot: { round: 1, leader: a.peerId }, commit: 0, values: [{ slot, batch: [{ kind: 'app', data: new Uint8Array(dataBytes) }] }] },
});

async function until(what: string, cond: () => boolean): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setImmediate(r));
  }
}

test('yamux sends a window update once half the window is used, not after every frame, and nothing stalls', async () => {
  let got = 0;
  b.onMessage(() => got++);
  // Small frames, one event-loop turn each (each its own yamux data frame).
  const small = 2_000;
  const before = { ...yamuxWindowStats };
  for (let i = 0; i < small; i++) {
    a.send([accept(i, 100)]);
    await until(`frame ${i}`, () => got === i + 1);
  }
  const held = yamuxWindowStats.heldBack - before.heldBack;
  const sent = yamuxWindowStats.sent - before.sent;
  assert.ok(held >= small - 50, `held back ${held} of ${small} updates`);
  // About 300 KB crossed (two or three updates), and other protocols open streams (SYN/ACK).
  assert.ok(sent <= 50, `sent ${sent} window updates for ${small} small frames`);
  // Then well past the window (256 KiB to start): credit keeps coming, everything arrives.
  const big = 64;
  for (let i = 0; i < big; i++) a.send([accept(small + i, 256 * 1024)]);
  await until('the big frames', () => got === small + big);
  assert.ok(yamuxWindowStats.sent - before.sent >= 2, 'window updates were sent for 16 MiB');
  // The fields the rule reads are the library's own.
  const streams = [...a.libp2p!.getConnections(b.libp2p!.peerId), ...b.libp2p!.getConnections(a.libp2p!.peerId)].flatMap((c) => c.streams);
  const yamuxStreams = streams.filter((s) => s instanceof YamuxStream) as unknown as { recvWindow: unknown; recvWindowCapacity: unknown }[];
  assert.ok(yamuxStreams.length > 0, 'the consensus link runs over yamux streams');
  for (const s of yamuxStreams) {
    assert.equal(typeof s.recvWindow, 'number');
    assert.equal(typeof s.recvWindowCapacity, 'number');
  }
});
