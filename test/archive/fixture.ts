/**
 * Real parts for archive fault tests: a node's stores (real LMDB in a temp dir) fed a
 * deterministic log, an ArchiveHost over them that a test drives by hand (no timers), real
 * ed25519 identities, a CES key, and an object store wrapper that injects failures.
 *
 * The log is a function of slot numbers only, so two nodes fed the same number of slots hold
 * the same log, the same segment boundaries and the same state: what two leaders of one
 * cluster see.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import type { PrivateKey } from '@libp2p/interface';
import { Archiver, type ArchiveHost, type ArchiverOptions } from '../../src/archive/archiver.js';
import type { ObjectInfo, ObjectStore } from '../../src/archive/store.js';
import { ObjectStoreError } from '../../src/archive/store.js';
import { cesKey, generateKeyBytes, paramsDefault, type CesKey } from '../../src/ces/index.js';
import { epochsAfter, type Ballot, type Command, type ConfigChange, type ConfigEpoch, type Entry, type LogPoint } from '../../src/consensus/index.js';
import { openStores, type Stores } from '../../src/stores.js';
import { silentLogger } from '../../src/logger.js';
import { encodeAppCommand, type ArchiveSettings } from '../../src/state/command.js';
import type { SegmentBound } from '../../src/state/segments.js';

export const CLUSTER = 'faults-cluster';
/** Small segments, a snapshot at every boundary, several stripes per segment. */
export const SEGMENT_ENTRIES = 20;

export interface Identity {
  readonly privateKey: PrivateKey;
  readonly peerId: string;
}

export async function newIdentity(): Promise<Identity> {
  const privateKey = await generateKeyPair('Ed25519');
  return { privateKey, peerId: peerIdFromPrivateKey(privateKey).toString() };
}

export function newCesKey(): CesKey {
  return cesKey(generateKeyBytes());
}

/** Temp dirs made through `tempDir`, removed by `removeTempDirs` (call it in `after`). */
const temps: string[] = [];
export function tempDir(prefix = 'pangea-faults-'): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  temps.push(d);
  return d;
}
export function removeTempDirs(): void {
  for (const d of temps.splice(0)) rmSync(d, { recursive: true, force: true });
}

export function settingsFor(url: string): ArchiveSettings {
  return { url, segmentEntries: SEGMENT_ENTRIES, snapshotSegments: 1, ces: { ...paramsDefault, stripeBytes: 4096 } };
}

/** ~300 incompressible bytes, a function of `n`. */
function valueOf(n: number): Uint8Array {
  const out = new Uint8Array(320);
  let h = createHash('sha256').update(`value ${n}`).digest();
  for (let i = 0; i < out.length; i += 32) {
    out.set(h.subarray(0, Math.min(32, out.length - i)), i);
    h = createHash('sha256').update(h).digest();
  }
  return out;
}

/**
 * The batch of slot `slot` (>= 2; slot 1 holds the settings): every 7th slot a no-op, every
 * 5th two puts, else one put. Times and proposals depend on the slot alone.
 */
function batchOf(slot: number): Command[] {
  if (slot % 7 === 0) return [];
  const n = slot % 5 === 0 ? 2 : 1;
  return Array.from({ length: n }, (_, i) => ({
    kind: 'app' as const,
    data: encodeAppCommand({
      op: { t: 'put', key: new TextEncoder().encode(`k${(slot * 3 + i) % 37}`), value: valueOf(slot * 10 + i) },
      time: 1_700_000_000_000 + slot,
      proposal: `p:${slot}:${i}`,
    }),
  }));
}

export interface NodeOptions {
  readonly identity: Identity;
  /** Genesis voters (peer ids): the same for every node of a cluster. */
  readonly voters: readonly string[];
  /** The archive settings the log's first command sets. */
  readonly settings: ArchiveSettings;
  readonly ballot?: Ballot | null;
  readonly dir?: string;
  /** Whether `compact` writes the compact op to the log (default true). */
  readonly writeCompact?: boolean;
  /** Whether the archiver sees the effects journal (and archives effects objects). */
  readonly effects?: boolean;
}

/**
 * One node: real stores, the log written to the real LMDB log as chosen slots and applied
 * to the real state machine, and the ArchiveHost the archiver sees.
 */
export class TestNode {
  readonly dir: string;
  readonly stores: Stores;
  readonly identity: Identity;
  /** The configurations after the last fed slot. */
  epochs: readonly ConfigEpoch[];
  private override: Command[] | null = null;
  /** The ballot `leaderBallot()` answers (null: a follower). Tests change it. */
  ballot: Ballot | null;
  /** Every `compact` call, in order. */
  readonly compactCalls: LogPoint[] = [];
  compacted: LogPoint;
  /** Log writes of `compact`, awaited by `settle`. */
  private readonly writes: Promise<void>[] = [];
  private readonly segmentListeners: ((b: SegmentBound) => void)[] = [];
  private readonly archivers: Archiver[] = [];
  readonly boundsSeen: SegmentBound[] = [];
  private readonly settings: ArchiveSettings;
  private slot = 0;
  private index = 0;
  readonly host: ArchiveHost;

  constructor(opts: NodeOptions) {
    this.dir = opts.dir ?? tempDir();
    this.identity = opts.identity;
    this.epochs = [{ fromSlot: 1, config: { voters: [...opts.voters], learners: [] } }];
    this.compacted = { slot: 0, index: 0, epochs: this.epochs };
    this.stores = openStores(this.dir, { genesis: { slot: 0, index: 0, epochs: this.epochs } });
    this.ballot = opts.ballot ?? null;
    this.settings = opts.settings;
    const point = this.stores.state.applied().point;
    this.slot = point.slot;
    this.index = point.index;
    const { state, log } = this.stores;
    this.host = {
      cluster: CLUSTER,
      peerId: opts.identity.peerId,
      privateKey: opts.identity.privateKey,
      leaderBallot: () => this.ballot,
      commitIndex: () => state.applied().point.index,
      appliedIndex: () => state.applied().point.index,
      members: () => [...new Set([...state.votersEver(), ...state.members().map((m) => m.peerId)])],
      voters: () => [...opts.voters],
      settings: () => state.archiveSettings(),
      segments: (after, limit) => state.segments(after, limit),
      readSlots: (from, to) => log.readSlots(from, to),
      compactedPoint: () => this.compacted,
      compact: (point) => {
        this.compactCalls.push(point);
        if (point.slot > this.compacted.slot) this.compacted = point;
        if (opts.writeCompact !== false) this.writes.push(log.write([{ kind: 'compact', through: point }]));
      },
      chainAt: (index) => state.chainAt(index),
      snapshot: () => state.snapshot(),
      ...(opts.effects === true ? { journal: (after: number, through: number) => (state.journalFloor() <= after ? state.effectRows(after, through) : null) } : {}),
    };
  }

  get appliedSlot(): number {
    return this.slot;
  }

  /** An archiver of this node (no timers: the test calls archiveOnce / pruneOnce). */
  archiver(store: ObjectStore, key: CesKey, opts: Partial<ArchiverOptions> = {}): Archiver {
    const a = new Archiver(
      this.host,
      store,
      key,
      { delayEntries: 0, delayMs: 0, intervalMs: 1000, pruneIntervalMs: 1000, hotRetention: 10, stagingDir: join(this.dir, 'staging'), ...opts },
      silentLogger,
    );
    this.segmentListeners.push((b) => a.onSegment(b));
    this.archivers.push(a);
    return a;
  }

  /**
   * Chooses and applies the next `slots` slots (slot 1 sets the archive settings): written to
   * the log as chosen with a commit marker, then applied one slot at a time, the archivers
   * told of each segment boundary right after it is committed, as the node does.
   */
  async feed(slots: number): Promise<void> {
    const entries: Entry[] = [];
    for (let i = 0; i < slots; i++) {
      const slot = ++this.slot;
      const batch: Command[] =
        slot === 1
          ? [{ kind: 'app', data: encodeAppCommand({ op: { t: 'archive_settings', settings: this.settings }, time: 1_700_000_000_000, proposal: 'p:1:0' }) }]
          : (this.override ?? batchOf(slot));
      this.override = null;
      const changes = batch.flatMap((c) => (c.kind === 'config' ? [c.change] : []));
      this.epochs = epochsAfter(this.epochs, slot, changes, 1);
      entries.push({ slot, index: this.index + 1, batch, epochs: this.epochs });
      this.index += batch.length;
    }
    const ballot = { round: 1, leader: 'genesis' };
    await this.stores.log.write([
      ...entries.map((e) => ({ kind: 'slot' as const, slot: { slot: e.slot, ballot, batch: e.batch, chosen: true } })),
      { kind: 'commit', slot: this.slot },
    ]);
    this.stores.state.apply(entries, (bound) => {
      this.boundsSeen.push(bound);
      for (const l of this.segmentListeners) l(bound);
    });
  }

  /** Feeds one slot holding a membership change (feed every node of a cluster the same). */
  async feedConfig(change: ConfigChange): Promise<void> {
    this.override = [{ kind: 'config', change }];
    await this.feed(1);
  }

  /** Feeds exactly the slots that end `n` more segments (in one log write). */
  async feedSegments(n: number): Promise<void> {
    const target = this.boundsSeen.length + n;
    let slot = this.slot;
    let index = this.index;
    let first = (this.boundsSeen.at(-1)?.last.index ?? 0) + 1;
    for (let ended = this.boundsSeen.length; ended < target; ) {
      slot++;
      index += slot === 1 ? 1 : batchOf(slot).length;
      if (index >= Math.ceil(first / SEGMENT_ENTRIES) * SEGMENT_ENTRIES) {
        ended++;
        first = index + 1;
      }
    }
    await this.feed(slot - this.slot);
    if (this.boundsSeen.length !== target) throw new Error(`fed to slot ${slot}: ${this.boundsSeen.length} segments, expected ${target}`);
  }

  /** Waits for the log writes `compact` started. */
  async settle(): Promise<void> {
    await Promise.all(this.writes.splice(0));
  }

  async close(): Promise<void> {
    for (const a of this.archivers) await a.stop();
    await this.settle().catch(() => undefined);
    await this.stores.close();
  }
}

export type StoreOp = 'put' | 'get' | 'head' | 'list' | 'delete';

/**
 * An object store that fails on demand, around a real one:
 * - `down`: every operation throws ObjectStoreError('unavailable');
 * - `failPutAt(n)`: the n-th putIfAbsent from now throws (nothing written);
 * - `lostAck(pattern)`: puts of matching keys are written, then reported failed (a reply
 *   lost on the way back).
 * `puts` records every completed put and its answer.
 */
export class FaultyStore implements ObjectStore {
  down = false;
  readonly puts: { key: string; result: 'created' | 'exists' }[] = [];
  readonly failures: { op: StoreOp; key: string }[] = [];
  private putsLeft: number | null = null;
  private lostAckPattern: RegExp | null = null;

  constructor(readonly inner: ObjectStore) {}

  get url(): string {
    return this.inner.url;
  }

  failPutAt(n: number): void {
    this.putsLeft = n;
  }

  lostAck(pattern: RegExp | null): void {
    this.lostAckPattern = pattern;
  }

  heal(): void {
    this.down = false;
    this.putsLeft = null;
    this.lostAckPattern = null;
  }

  private check(op: StoreOp, key: string): void {
    if (this.down) this.fail(op, key, 'the store is down (injected)');
  }

  private fail(op: StoreOp, key: string, why: string): never {
    this.failures.push({ op, key });
    throw new ObjectStoreError('unavailable', `${op} "${key}" in ${this.url} failed: ${why}`);
  }

  async putIfAbsent(key: string, body: Uint8Array): Promise<'created' | 'exists'> {
    this.check('put', key);
    if (this.putsLeft !== null && --this.putsLeft === 0) {
      this.putsLeft = null;
      this.fail('put', key, 'connection reset (injected)');
    }
    const result = await this.inner.putIfAbsent(key, body);
    if (this.lostAckPattern?.test(key)) this.fail('put', key, 'reply lost (injected)');
    this.puts.push({ key, result });
    return result;
  }

  async get(key: string): Promise<Uint8Array> {
    this.check('get', key);
    return this.inner.get(key);
  }

  async head(key: string): Promise<{ size: number } | null> {
    this.check('head', key);
    return this.inner.head(key);
  }

  async list(prefix: string): Promise<ObjectInfo[]> {
    this.check('list', prefix);
    return this.inner.list(prefix);
  }

  async delete(key: string): Promise<void> {
    this.check('delete', key);
    return this.inner.delete(key);
  }

  async close(): Promise<void> {
    await this.inner.close();
  }
}
