/**
 * `npm run bench -- p2p [seconds]`: envelopes/s one way between two Libp2pTransports in this
 * process on loopback, over TCP (noise + yamux) and over QUIC. Each envelope is an `accept`
 * carrying one 100-byte app command; the sender sends bursts of 100 envelopes per event-loop
 * turn and keeps at most WINDOW_MAX in flight (so nothing is dropped). Both ends share one
 * CPU core's event loop, so these are lower bounds for two processes.
 */
import '../src/polyfill.js';
import { generateKeyPair } from '@libp2p/crypto/keys';
import type { Envelope } from '../src/consensus/index.js';
import { Libp2pTransport } from '../src/net/p2p.js';

const BURST = 100;
const PAYLOAD_BYTES = 100;
const WINDOW_MAX = 1_000;

interface Figures {
  envelopesPerS: number;
  mbPerS: number;
  writesPerS: number;
  dropped: number;
}

async function measure(listen: string, seconds: number): Promise<Figures> {
  const make = async () =>
    new Libp2pTransport({ privateKey: await generateKeyPair('Ed25519'), listen: [listen], clusterId: 'bench' });
  const a = await make();
  const b = await make();
  try {
    await a.start();
    await b.start();
    a.setPeerAddresses(b.peerId, b.addresses());
    let received = 0;
    b.onMessage(() => {
      received += 1;
    });
    const data = new Uint8Array(PAYLOAD_BYTES).fill(7);
    const burst: Envelope[] = Array.from({ length: BURST }, (_, i) => ({
      cluster: 'bench',
      from: a.peerId,
      to: b.peerId,
      msg: { type: 'accept', ballot: { round: 1, leader: a.peerId }, commit: i, values: [{ slot: i + 1, batch: [{ kind: 'app', data }] }] },
    }));
    // Warm up: connect and open the stream.
    a.send(burst.slice(0, 1));
    while (received < 1) await new Promise((r) => setTimeout(r, 5));
    let sent = 1;
    let running = true;
    const pump = (): void => {
      if (!running) return;
      if (sent - received < WINDOW_MAX) {
        a.send(burst);
        sent += BURST;
      }
      setImmediate(pump);
    };
    const r0 = received;
    const w0 = a.stats.writes;
    const b0 = a.stats.bytesSent;
    const t0 = process.hrtime.bigint();
    pump();
    await new Promise((r) => setTimeout(r, seconds * 1000));
    const s = Number(process.hrtime.bigint() - t0) / 1e9;
    running = false;
    const st = a.stats;
    return {
      envelopesPerS: Math.round((received - r0) / s),
      mbPerS: Math.round(((st.bytesSent - b0) / s / 1e6) * 10) / 10,
      writesPerS: Math.round((st.writes - w0) / s),
      dropped: st.framesDroppedQueueFull + st.framesDroppedUnreachable,
    };
  } finally {
    await a.stop();
    await b.stop();
  }
}

export async function run(args: string[]): Promise<void> {
  const seconds = Number(args[0] ?? 3);
  const out: Record<string, Figures> = {};
  for (const [name, listen] of [
    ['tcp', '/ip4/127.0.0.1/tcp/0'],
    ['quic', '/ip4/127.0.0.1/udp/0/quic-v1'],
  ] as const) {
    const f = await measure(listen, seconds);
    out[name] = f;
    console.log(
      `${name.padEnd(4)}  ${f.envelopesPerS.toLocaleString('en')} envelopes/s  ${f.mbPerS} MB/s sent  ${f.writesPerS} writes/s  dropped ${f.dropped}`,
    );
  }
  console.log(JSON.stringify({ bench: 'p2p', burst: BURST, payloadBytes: PAYLOAD_BYTES, seconds, ...out }));
}
