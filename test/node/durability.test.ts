/**
 * Durability ordering: with the log's flush held back, no promise, acceptance or client
 * acknowledgement leaves the node. (A SIGKILL keeps the page cache, so kill tests alone
 * cannot show this.) Real LMDB files; the transport is an in-memory twin.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { bootstrapState, type Config, type Envelope } from '../../src/consensus/index.js';
import { openStores } from '../../src/stores.js';
import { silentLogger } from '../../src/logger.js';
import type { Transport } from '../../src/net/transport.js';
import { PangeaNode } from '../../src/node.js';
import { encodeAppCommand } from '../../src/state/command.js';

const dirs: string[] = [];
const closers: (() => Promise<void>)[] = [];
after(async () => {
  for (const c of closers) await c();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

class MemoryTransport implements Transport {
  readonly sent: Envelope[] = [];
  private handler: (env: unknown) => void = () => {};
  constructor(readonly peerId: string) {}
  addresses(): string[] {
    return [];
  }
  async start(): Promise<void> {}
  async stop(): Promise<void> {}
  send(envelopes: readonly Envelope[]): void {
    this.sent.push(...envelopes);
  }
  onMessage(handler: (env: unknown) => void): void {
    this.handler = handler;
  }
  setPeerAddresses(): void {}
  deliver(env: Envelope): void {
    this.handler(env);
  }
}

/** A flush gate: while held, no log write completes. */
function gate(): { hold(): void; release(): void; fn: () => Promise<void> } {
  let held: { promise: Promise<void>; resolve: () => void } | null = null;
  return {
    hold: () => {
      let resolve!: () => void;
      const promise = new Promise<void>((r) => (resolve = r));
      held = { promise, resolve };
    },
    release: () => {
      held?.resolve();
      held = null;
    },
    fn: () => held?.promise ?? Promise.resolve(),
  };
}

function startNode(self: string, config: Config, g: ReturnType<typeof gate>): { node: PangeaNode; transport: MemoryTransport } {
  const dir = mkdtempSync(join(tmpdir(), 'pangea-durability-'));
  dirs.push(dir);
  const genesis = bootstrapState(config).base;
  const stores = openStores(dir, { genesis, flushGate: g.fn });
  const transport = new MemoryTransport(self);
  const node = new PangeaNode({
    clusterId: 'c',
    peerId: self,
    http: 'http://127.0.0.1:1',
    log: stores.log,
    state: stores.state,
    transport,
    logger: silentLogger,
    genesis: config,
    timing: { tickMs: 5 },
  });
  node.start();
  closers.push(async () => {
    await node.stop();
    await stores.close();
  });
  return { node, transport };
}

const turns = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('an acceptor sends no promise and no acceptance before its log is flushed', async () => {
  const g = gate();
  const { transport } = startNode('a', { voters: ['a', 'b', 'c'], learners: [] }, g);
  g.hold();
  const ballot = { round: 7, leader: 'b' };
  transport.deliver({ cluster: 'c', from: 'b', to: 'a', msg: { type: 'prepare', ballot, commit: 0 } });
  await turns(100);
  assert.ok(!transport.sent.some((e) => e.msg.type === 'promise'), 'a promise left before the flush');
  g.release();
  await turns(50);
  assert.ok(transport.sent.some((e) => e.msg.type === 'promise' && e.to === 'b'), 'the promise leaves once durable');

  g.hold();
  const data = encodeAppCommand({ op: { t: 'put', key: new Uint8Array([1]), value: new Uint8Array([2]) }, time: 0, proposal: 'b:1' });
  transport.deliver({ cluster: 'c', from: 'b', to: 'a', msg: { type: 'accept', ballot, commit: 0, values: [{ slot: 1, batch: [{ kind: 'app', data }] }] } });
  await turns(100);
  assert.ok(!transport.sent.some((e) => e.msg.type === 'accepted'), 'an acceptance left before the flush');
  g.release();
  await turns(50);
  assert.ok(transport.sent.some((e) => e.msg.type === 'accepted' && e.to === 'b'), 'the acceptance leaves once durable');
});

test('a leader acknowledges no write before its own acceptance is flushed', async () => {
  const g = gate();
  const { node } = startNode('solo', { voters: ['solo'], learners: [] }, g);
  for (let i = 0; i < 200 && node.role !== 'leader'; i++) await turns(10);
  assert.equal(node.role, 'leader');
  await node.write({ t: 'put', key: new Uint8Array([1]), value: new Uint8Array([1]) }); // its own ballot is committed
  g.hold();
  let answered = false;
  const write = node.write({ t: 'put', key: new Uint8Array([2]), value: new Uint8Array([2]) }).then((r) => {
    answered = true;
    return r;
  });
  await turns(150);
  assert.equal(answered, false, 'the write was acknowledged before the flush');
  g.release();
  const result = await write;
  assert.equal(result.kind, 'put');
});
