import '../../src/polyfill.js';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { createLibp2p, type Libp2p } from 'libp2p';
import { tcp } from '@libp2p/tcp';
import { noise } from '@chainsafe/libp2p-noise';
import { yamux } from '@chainsafe/libp2p-yamux';
import { multiaddr } from '@multiformats/multiaddr';
import type { Envelope } from '../../src/consensus/index.js';
import { validateEnvelope } from '../../src/consensus/validate.js';
import { encodeFrames } from '../../src/codec/frames.js';
import { CONSENSUS_PROTOCOL, Libp2pTransport, type Libp2pTransportOptions } from '../../src/net/p2p.js';

const CLUSTER = 'test-cluster';
const QUIC = '/ip4/127.0.0.1/udp/0/quic-v1';
const TCP = '/ip4/127.0.0.1/tcp/0';

async function transport(listen: string[], extra: Partial<Libp2pTransportOptions> = {}): Promise<Libp2pTransport> {
  const t = new Libp2pTransport({ privateKey: await generateKeyPair('Ed25519'), listen, clusterId: CLUSTER, ...extra });
  await t.start();
  return t;
}

function heartbeat(from: string, to: string, seq: number, cluster = CLUSTER): Envelope {
  return { cluster, from, to, msg: { type: 'heartbeat', ballot: { round: 1, leader: from }, commit: 0, seq } };
}

function accept(from: string, to: string, slot: number, dataBytes: number): Envelope {
  const data = new Uint8Array(dataBytes).fill(slot & 0xff);
  return { cluster: CLUSTER, from, to, msg: { type: 'accept', ballot: { round: 1, leader: from }, commit: 0, values: [{ slot, batch: [{ kind: 'app', data }] }] } };
}

async function until(what: string, cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Collects what a transport receives. */
function inbox(t: Libp2pTransport): unknown[] {
  const got: unknown[] = [];
  t.onMessage((raw) => got.push(raw));
  return got;
}

const seqs = (got: unknown[]): number[] => got.map((raw) => (validateEnvelope(raw)!.msg as { seq: number }).seq);

describe('Libp2pTransport over QUIC', () => {
  let a: Libp2pTransport;
  let b: Libp2pTransport;
  before(async () => {
    a = await transport([QUIC]);
    b = await transport([QUIC]);
  });
  after(async () => {
    await a?.stop();
    await b?.stop();
  });

  test('addresses carry the peer id', () => {
    for (const addr of a.addresses()) assert.ok(addr.endsWith(`/p2p/${a.peerId}`), addr);
    assert.ok(a.addresses().some((x) => x.includes('/quic-v1/')));
  });

  test('envelopes travel both ways, in order, valid, with bytes intact', async () => {
    const gotA = inbox(a);
    const gotB = inbox(b);
    a.setPeerAddresses(b.peerId, b.addresses());
    b.setPeerAddresses(a.peerId, a.addresses());
    a.send([heartbeat(a.peerId, b.peerId, 1), accept(a.peerId, b.peerId, 5, 100)]);
    b.send([heartbeat(b.peerId, a.peerId, 9)]);
    await until('both delivered', () => gotB.length === 2 && gotA.length === 1);
    const env = validateEnvelope(gotB[1]);
    assert.ok(env && env.msg.type === 'accept');
    const cmd = env.msg.values[0]!.batch[0]!;
    assert.ok(cmd.kind === 'app' && cmd.data instanceof Uint8Array && cmd.data.length === 100 && cmd.data[99] === 5);
    assert.deepEqual(seqs(gotA), [9]);
    const conns = a.libp2p!.getConnections(b.libp2p!.peerId);
    assert.ok(conns.length > 0 && conns.every((c) => c.remoteAddr.toString().includes('/quic-v1')));
  });

  test('many envelopes sent in one turn arrive in order, coalesced', async () => {
    const got = inbox(b);
    const writesBefore = a.stats.writes;
    const n = 2000;
    a.send(Array.from({ length: n }, (_, i) => heartbeat(a.peerId, b.peerId, i)));
    await until('all delivered', () => got.length === n);
    assert.deepEqual(seqs(got), Array.from({ length: n }, (_, i) => i));
    assert.equal(a.stats.writes - writesBefore, 1, 'one write for one turn');
  });

  test('a forged sender, a foreign cluster and a misaddressed envelope are dropped and counted', async () => {
    const got = inbox(b);
    const forged = b.stats.envelopesDroppedForged;
    const foreign = b.stats.envelopesDroppedWrongCluster;
    const misaddressed = b.stats.envelopesDroppedMisaddressed;
    const c = await generateKeyPair('Ed25519');
    const { peerIdFromPrivateKey } = await import('@libp2p/peer-id');
    const someoneElse = peerIdFromPrivateKey(c).toString();
    // The transport routes by `to`, so all of these reach b over a's stream.
    a.send([heartbeat(someoneElse, b.peerId, 1), heartbeat(a.peerId, b.peerId, 2, 'other-cluster'), heartbeat(a.peerId, b.peerId, 3)]);
    await until('forged and foreign counted', () => b.stats.envelopesDroppedForged === forged + 1 && b.stats.envelopesDroppedWrongCluster === foreign + 1);
    await until('the good one delivered', () => got.length === 1);
    assert.deepEqual(seqs(got), [3]);
    assert.equal(b.stats.envelopesDroppedMisaddressed, misaddressed);
  });
});

describe('Libp2pTransport over TCP', () => {
  let a: Libp2pTransport;
  let b: Libp2pTransport;
  before(async () => {
    a = await transport([QUIC, TCP]);
    b = await transport([TCP]); // no QUIC: a must fall back to TCP to reach b
  });
  after(async () => {
    await a?.stop();
    await b?.stop();
  });

  test('a peer listening only on TCP is reached over TCP, both ways', async () => {
    assert.ok(b.addresses().every((x) => x.includes('/tcp/')));
    const gotA = inbox(a);
    const gotB = inbox(b);
    a.setPeerAddresses(b.peerId, b.addresses());
    b.setPeerAddresses(a.peerId, a.addresses());
    const n = 500;
    a.send(Array.from({ length: n }, (_, i) => heartbeat(a.peerId, b.peerId, i)));
    await until('a to b', () => gotB.length === n);
    b.send([heartbeat(b.peerId, a.peerId, 7)]);
    await until('b to a', () => gotA.length === 1);
    assert.deepEqual(seqs(gotB), Array.from({ length: n }, (_, i) => i));
    const conns = a.libp2p!.getConnections(b.libp2p!.peerId);
    assert.ok(conns.length > 0 && conns.every((c) => c.remoteAddr.toString().includes('/tcp/')));
  });

  test('a stream that breaks is reopened on the next send', async () => {
    const got = inbox(b);
    const opened = a.stats.streamsOpened;
    for (const c of a.libp2p!.getConnections(b.libp2p!.peerId)) await c.close();
    await new Promise((r) => setTimeout(r, 250)); // past the first backoff
    a.send([heartbeat(a.peerId, b.peerId, 1)]);
    await until('delivered after reopen', () => got.length === 1);
    assert.equal(a.stats.streamsOpened, opened + 1);
  });
});

describe('Libp2pTransport against a hostile peer', () => {
  let t: Libp2pTransport;
  let raw: Libp2p;
  const logged: string[] = [];
  before(async () => {
    t = await transport([TCP], { frameBytesMax: 64 * 1024, logger: { info: () => undefined, warn: (msg) => logged.push(msg) } });
    raw = await createLibp2p({
      addresses: { listen: [TCP] },
      transports: [tcp()],
      connectionEncrypters: [noise()],
      streamMuxers: [yamux()],
    });
  });
  after(async () => {
    await raw?.stop();
    await t?.stop();
  });

  /** Opens a consensus stream from the raw node, writes `bytes`, and waits for t to react. */
  async function write(bytes: Uint8Array): Promise<{ closed: Promise<void> }> {
    const stream = await raw.dialProtocol(multiaddr(t.addresses()[0]!), CONSENSUS_PROTOCOL);
    const closed = new Promise<void>((resolve) => stream.addEventListener('close', () => resolve(), { once: true }));
    stream.send(bytes);
    return { closed };
  }

  /** t still works: a well-formed envelope from the raw node is delivered. */
  async function stillWorks(seq: number): Promise<void> {
    const got = inbox(t);
    await write(encodeFrames([heartbeat(raw.peerId.toString(), t.peerId, seq)]));
    await until('a good envelope after the bad stream', () => got.length === 1);
    assert.deepEqual(seqs(got), [seq]);
  }

  test('garbage on the stream: aborted, counted, logged; the transport keeps working', async () => {
    const { closed } = await write(new TextEncoder().encode('\x00\x00\x00\x05GET / HTTP/1.1\r\n'));
    await until('rejected', () => t.stats.framesRejectedMalformed === 1);
    await closed;
    assert.equal(t.stats.framesRejected, 1);
    assert.ok(logged.some((m) => m.includes('bad frame')));
    await stillWorks(1);
  });

  test('an oversized length prefix: aborted and counted before any body', async () => {
    const { closed } = await write(new Uint8Array([0x7f, 0xff, 0xff, 0xff]));
    await until('rejected', () => t.stats.framesRejectedOversized === 1);
    await closed;
    assert.equal(t.stats.framesRejected, 2);
    await stillWorks(2);
  });

  test('forged and misaddressed envelopes from a connected peer are dropped', async () => {
    const got = inbox(t);
    const other = (await transport([TCP])) as Libp2pTransport;
    try {
      await write(
        encodeFrames([
          heartbeat(other.peerId, t.peerId, 1), // claims to be someone else
          heartbeat(raw.peerId.toString(), other.peerId, 2), // not for t
          heartbeat(raw.peerId.toString(), t.peerId, 3),
        ]),
      );
      await until('the good one', () => got.length === 1);
      assert.deepEqual(seqs(got), [3]);
      assert.equal(t.stats.envelopesDroppedForged, 1);
      assert.equal(t.stats.envelopesDroppedMisaddressed, 1);
    } finally {
      await other.stop();
    }
  });
});

describe('Libp2pTransport bounds', () => {
  let a: Libp2pTransport;
  before(async () => {
    a = await transport([TCP], { queueFramesMax: 10, dialTimeoutMs: 1000 });
  });
  after(async () => {
    await a?.stop();
  });

  test('frames for an unreachable peer are dropped and counted; the queue is bounded', async () => {
    const key = await generateKeyPair('Ed25519');
    const { peerIdFromPrivateKey } = await import('@libp2p/peer-id');
    const ghost = peerIdFromPrivateKey(key).toString();
    a.setPeerAddresses(ghost, ['/ip4/127.0.0.1/tcp/1']); // nothing listens on port 1
    a.send(Array.from({ length: 15 }, (_, i) => heartbeat(a.peerId, ghost, i)));
    assert.equal(a.stats.framesDroppedQueueFull, 5);
    await until('dial failed', () => a.stats.dialFailures === 1);
    assert.equal(a.stats.framesDroppedUnreachable, 10);
    a.send([heartbeat(a.peerId, ghost, 99)]); // within the backoff: dropped at once
    assert.equal(a.stats.framesDroppedUnreachable, 11);
    a.send([heartbeat(a.peerId, 'not a peer id', 1)]);
    assert.equal(a.stats.framesDroppedOther, 1);
  });

  test('envelopes to itself are delivered locally', async () => {
    const got = inbox(a);
    a.send([heartbeat(a.peerId, a.peerId, 4)]);
    await until('local delivery', () => got.length === 1);
  });

  test('a handler that throws is counted, not fatal', async () => {
    a.onMessage(() => {
      throw new Error('boom');
    });
    a.send([heartbeat(a.peerId, a.peerId, 5)]);
    await until('counted', () => a.stats.handlerErrors === 1);
  });
});

describe('Libp2pTransport finds a peer through the DHT', () => {
  const ts: Libp2pTransport[] = [];
  after(async () => {
    await Promise.all(ts.map((t) => t.stop()));
  });

  test('a sends to b knowing only c, which knows both', async () => {
    for (let i = 0; i < 3; i++) ts.push(await transport([TCP]));
    const [a, b, c] = ts as [Libp2pTransport, Libp2pTransport, Libp2pTransport];
    const gotC = inbox(c);
    const gotB = inbox(b);
    a.setPeerAddresses(c.peerId, c.addresses());
    b.setPeerAddresses(c.peerId, c.addresses());
    a.send([heartbeat(a.peerId, c.peerId, 1)]);
    b.send([heartbeat(b.peerId, c.peerId, 2)]);
    await until('a and b connected to c', () => gotC.length === 2);
    type WithDht = { services: { dht: { routingTable: { size: number } } } };
    const tableSize = (t: Libp2pTransport): number => (t.libp2p as unknown as WithDht).services.dht.routingTable.size;
    await until('c knows both in its DHT, a knows c', () => tableSize(c) >= 2 && tableSize(a) >= 1);
    // Right after start the DHT holds queries until its first self-query ends, so a lookup
    // may outlast one dial timeout; like consensus, resend until it lands.
    const deadline = Date.now() + 40_000;
    while (gotB.length === 0 && Date.now() < deadline) {
      a.send([heartbeat(a.peerId, b.peerId, 3)]);
      await new Promise((r) => setTimeout(r, 250));
    }
    assert.deepEqual(seqs(gotB.slice(0, 1)), [3]);
  });
});
