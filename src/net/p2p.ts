/**
 * The production Transport: libp2p 3 with QUIC and TCP (noise + yamux), identify, ping and a
 * private kad-dht (to find members' addresses). Consensus frames travel on their own protocol,
 * `/pangea/consensus/1.0.0`, as length-prefixed msgpack frames (codec.ts).
 *
 * Rules:
 * - One long-lived outbound stream per peer carries everything we send it; the peer's own
 *   outbound stream carries what it sends us. A stream that fails is reopened on the next send
 *   after a backoff.
 * - `send` never blocks and never throws. Frames for a peer queued in one event-loop turn
 *   leave as one buffer in one `stream.send` (about 40 µs each, so per-frame writes would cap
 *   throughput). The per-peer queue is bounded; what does not fit, or is for a peer we cannot
 *   reach, is dropped and counted: consensus retransmits what matters.
 * - Inbound frames must name our cluster and, as `from`, the authenticated remote peer of the
 *   connection; others are dropped and counted. A stream carrying bytes that are not frames
 *   (bad msgpack, oversized length) is aborted, counted and logged. Nothing a peer sends can
 *   crash the process.
 *
 * ```ts
 * const { privateKey } = await loadOrCreateIdentity(dataDir);
 * const t = new Libp2pTransport({ privateKey, clusterId, listen: ['/ip4/0.0.0.0/udp/7001/quic-v1', '/ip4/0.0.0.0/tcp/7001'] });
 * t.onMessage((raw) => { const env = validateEnvelope(raw); if (env) replica.step(env); });
 * await t.start();
 * t.setPeerAddresses(otherPeerId, ['/ip4/10.0.0.2/udp/7001/quic-v1']);
 * t.send(ready.send);
 * ```
 */
import '../polyfill.js';
import { createLibp2p, type Libp2p } from 'libp2p';
import { quic } from '@chainsafe/libp2p-quic';
import { tcp } from '@libp2p/tcp';
import { noise } from '@chainsafe/libp2p-noise';
import { yamux } from '@chainsafe/libp2p-yamux';
import { identify } from '@libp2p/identify';
import { ping } from '@libp2p/ping';
import { kadDHT } from '@libp2p/kad-dht';
import { gossipsub, type GossipSub } from '@libp2p/gossipsub';
import { peerIdFromPrivateKey, peerIdFromString } from '@libp2p/peer-id';
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr';
import type { Connection, PeerId, PrivateKey, Stream, StreamMessageEvent } from '@libp2p/interface';
import type { PeerServices, Transport, WireEnvelope } from './transport.js';
import { RequestNotSent } from '../sync/peer-services.js';
import { deadlineSignal } from '../abort.js';
import { FRAME_BYTES_MAX_DEFAULT, FrameDecoder, FrameError, encodeBody, encodeMessage, joinFrames } from '../codec/frames.js';

export const CONSENSUS_PROTOCOL = '/pangea/consensus/1.0.0';
/** Our DHT is private: its own protocol id keeps it apart from the public IPFS DHT. */
export const DHT_PROTOCOL = '/pangea/kad/1.0.0';

/** Frames waiting for one peer. At 16 MiB frames, a few; at heartbeat size, plenty. */
export const QUEUE_FRAMES_MAX_DEFAULT = 8192;
export const QUEUE_BYTES_MAX_DEFAULT = 64 * 1024 * 1024;
/** Distinct peers we keep links to (cluster members; anything beyond is a bug or an attack). */
export const PEERS_MAX = 1024;
/** Inbound consensus streams one connection may hold open (one is normal; a reopen overlaps). */
export const INBOUND_STREAMS_MAX = 4;
export const DIAL_TIMEOUT_MS = 5_000;
/** After a failed dial or a lost stream: wait, doubling up to the max, before dialing again. */
export const BACKOFF_MS_MIN = 100;
export const BACKOFF_MS_MAX = 5_000;
/** Warnings about misbehaving peers, at most this many a second (the rest are counted). */
export const WARNINGS_PER_S_MAX = 10;
/** Inbound request streams one connection may hold open at once, per protocol. */
export const REQUEST_STREAMS_MAX = 16;
/** A peer lookup in the DHT, after a failed dial, at most this often per peer. */
export const LOOKUP_INTERVAL_MS = 10_000;

export interface P2pLogger {
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
}

export interface Libp2pTransportOptions {
  readonly privateKey: PrivateKey;
  /** Multiaddrs to listen on, e.g. /ip4/0.0.0.0/udp/7001/quic-v1 and /ip4/0.0.0.0/tcp/7001. */
  readonly listen: readonly string[];
  /** Addresses to advertise instead of the listening ones (behind NAT, in containers). */
  readonly announce?: readonly string[];
  readonly clusterId: string;
  /** Largest frame body sent or accepted (default 64 MiB). */
  readonly frameBytesMax?: number;
  readonly queueFramesMax?: number;
  readonly queueBytesMax?: number;
  readonly dialTimeoutMs?: number;
  readonly logger?: P2pLogger;
}

/** Counters, monotonic from start. A plain object: export it as metrics as it is. */
export interface P2pStats {
  /** Envelopes written to streams, and the writes (buffers) that carried them. */
  framesSent: number;
  writes: number;
  bytesSent: number;
  framesReceived: number;
  bytesReceived: number;
  /** Dropped on send: the peer's queue was full. */
  framesDroppedQueueFull: number;
  /** Dropped on send: no stream to the peer could be opened (or it broke under the write). */
  framesDroppedUnreachable: number;
  /** Dropped on send: could not be encoded. */
  framesDroppedInvalid: number;
  /** Dropped on send: larger than frameBytesMax. The core bounds every message it builds
   *  well under the limit, so this is a bug (logged as an error; tests require 0). */
  framesDroppedOversized: number;
  /** Dropped on send: the transport is stopped, or `to` is not a peer id. */
  framesDroppedOther: number;
  /** Inbound streams aborted because they carried bytes that are not frames. */
  framesRejected: number;
  framesRejectedOversized: number;
  framesRejectedMalformed: number;
  /** Inbound envelopes dropped: not an object, wrong cluster, forged `from`, not for us. */
  envelopesDroppedWrongCluster: number;
  envelopesDroppedForged: number;
  envelopesDroppedMisaddressed: number;
  /** The onMessage handler threw (a bug in the caller: logged, never fatal). */
  handlerErrors: number;
  streamsOpened: number;
  streamsClosed: number;
  dialFailures: number;
  inboundStreams: number;
  warningsSuppressed: number;
}

function newStats(): P2pStats {
  return {
    framesSent: 0,
    writes: 0,
    bytesSent: 0,
    framesReceived: 0,
    bytesReceived: 0,
    framesDroppedQueueFull: 0,
    framesDroppedUnreachable: 0,
    framesDroppedInvalid: 0,
    framesDroppedOversized: 0,
    framesDroppedOther: 0,
    framesRejected: 0,
    framesRejectedOversized: 0,
    framesRejectedMalformed: 0,
    envelopesDroppedWrongCluster: 0,
    envelopesDroppedForged: 0,
    envelopesDroppedMisaddressed: 0,
    handlerErrors: 0,
    streamsOpened: 0,
    streamsClosed: 0,
    dialFailures: 0,
    inboundStreams: 0,
    warningsSuppressed: 0,
  };
}

const silent: P2pLogger = { info: () => undefined, warn: () => undefined };

/** Everything we hold for one remote peer. */
interface Link {
  readonly id: string;
  readonly peer: PeerId;
  /** Encoded bodies waiting for the next flush, and their total size. */
  queue: Uint8Array[];
  queueBytes: number;
  stream: Stream | null;
  opening: boolean;
  /** The stream said to wait for 'drain'; a flush is scheduled on it. */
  draining: boolean;
  /** No dial before this time (ms, Date.now()); sends meanwhile are dropped. */
  retryAt: number;
  backoffMs: number;
  /** The last peer store update from setPeerAddresses; dials wait for it. */
  addressesSet: Promise<void>;
  /** The addresses last given (without /p2p), to tell a DHT answer that brings news. */
  addrs: readonly string[];
}

export class Libp2pTransport implements Transport, PeerServices {
  readonly peerId: string;
  readonly stats: P2pStats = newStats();
  private readonly opts: Libp2pTransportOptions;
  private readonly frameBytesMax: number;
  private readonly queueFramesMax: number;
  private readonly queueBytesMax: number;
  private readonly dialTimeoutMs: number;
  private readonly log: P2pLogger;
  private node: Libp2p | null = null;
  private handler: (envelope: unknown) => void = () => undefined;
  private readonly links = new Map<string, Link>();
  /** Links with queued frames, flushed together at the end of the turn. */
  private readonly dirty = new Set<Link>();
  /** Envelopes to ourselves, delivered at the end of the turn. */
  private local: WireEnvelope[] = [];
  private flushTimer: NodeJS.Immediate | null = null;
  private readonly inbound = new Set<Stream>();
  private running = false;
  private abort = new AbortController();
  private warnWindowS = 0;
  private warnCount = 0;
  private announcementHandler: (from: string, data: Uint8Array) => void = () => undefined;
  private readonly lookups = new Map<string, number>();

  constructor(opts: Libp2pTransportOptions) {
    this.opts = opts;
    this.frameBytesMax = opts.frameBytesMax ?? FRAME_BYTES_MAX_DEFAULT;
    this.queueFramesMax = opts.queueFramesMax ?? QUEUE_FRAMES_MAX_DEFAULT;
    this.queueBytesMax = opts.queueBytesMax ?? QUEUE_BYTES_MAX_DEFAULT;
    this.dialTimeoutMs = opts.dialTimeoutMs ?? DIAL_TIMEOUT_MS;
    this.log = opts.logger ?? silent;
    this.peerId = peerIdFromPrivateKey(opts.privateKey).toString();
  }

  /** The underlying libp2p node (null until started). For diagnostics and tests. */
  get libp2p(): Libp2p | null {
    return this.node;
  }

  addresses(): string[] {
    if (this.node === null) return [];
    const self = `/p2p/${this.peerId}`;
    return this.node.getMultiaddrs().map((ma) => {
      const s = ma.toString();
      return s.endsWith(self) ? s : `${s}${self}`;
    });
  }

  async start(): Promise<void> {
    if (this.running) return;
    this.abort = new AbortController();
    const node = await createLibp2p({
      privateKey: this.opts.privateKey,
      addresses: { listen: [...this.opts.listen], announce: this.opts.announce ? [...this.opts.announce] : [] },
      transports: [quic(), tcp()],
      connectionEncrypters: [noise()],
      streamMuxers: [yamux()],
      services: {
        identify: identify(),
        ping: ping(),
        dht: kadDHT({ protocol: DHT_PROTOCOL, clientMode: false, peerInfoMapper: (p) => p }),
        pubsub: gossipsub({ allowPublishToZeroTopicPeers: true, emitSelf: false }),
      },
      start: false,
    });
    await node.handle(CONSENSUS_PROTOCOL, (stream, connection) => this.accept(stream, connection), {
      maxInboundStreams: INBOUND_STREAMS_MAX,
    });
    await node.start();
    const pubsub = node.services.pubsub as GossipSub;
    pubsub.addEventListener('message', (evt) => {
      const msg = evt.detail;
      // Signed messages only (gossipsub's default policy): `from` is authenticated.
      if (msg.topic !== this.topic() || msg.type !== 'signed') return;
      try {
        this.announcementHandler(msg.from.toString(), msg.data);
      } catch (err) {
        this.stats.handlerErrors += 1;
        this.warn('announcement handler threw', { error: (err as Error).stack ?? String(err) });
      }
    });
    pubsub.subscribe(this.topic());
    this.node = node;
    this.running = true;
    this.log.info('p2p started', { peerId: this.peerId, addresses: this.addresses() });
  }

  async stop(): Promise<void> {
    if (!this.running || this.node === null) return;
    this.running = false;
    this.abort.abort(new Error('transport stopped'));
    if (this.flushTimer !== null) clearImmediate(this.flushTimer);
    this.flushTimer = null;
    this.dirty.clear();
    this.local = [];
    const closing = new Error('transport stopped');
    for (const link of this.links.values()) {
      link.stream?.abort(closing);
      link.stream = null;
      link.queue = [];
      link.queueBytes = 0;
    }
    for (const s of this.inbound) s.abort(closing);
    this.inbound.clear();
    const node = this.node;
    this.node = null;
    await node.stop();
  }

  onMessage(handler: (envelope: unknown) => void): void {
    this.handler = handler;
  }

  setPeerAddresses(peerId: string, multiaddrs: readonly string[]): void {
    const link = this.link(peerId);
    if (link === null) return;
    const addrs: Multiaddr[] = [];
    for (const s of multiaddrs) {
      try {
        const ma = multiaddr(s);
        const p2p = ma.getComponents().find((c) => c.name === 'p2p');
        if (p2p === undefined) addrs.push(ma);
        else if (p2p.value === peerId) addrs.push(ma.decapsulateCode(p2p.code));
        else throw new Error(`names another peer, ${p2p.value}`);
      } catch (err) {
        this.warn('ignoring a bad peer address', { peerId, address: s, error: (err as Error).message });
      }
    }
    link.addrs = addrs.map((a) => a.toString()).sort();
    // New addresses are worth a dial at once.
    link.retryAt = 0;
    link.backoffMs = 0;
    const node = this.node;
    if (node === null) return;
    const previous = link.addressesSet;
    link.addressesSet = previous
      .then(() => node.peerStore.patch(link.peer, { multiaddrs: addrs }))
      .then(
        () => undefined,
        (err: unknown) => this.warn('could not store peer addresses', { peerId, error: (err as Error).message }),
      );
  }

  send(envelopes: readonly WireEnvelope[]): void {
    for (const env of envelopes) {
      if (!this.running) {
        this.stats.framesDroppedOther += 1;
        continue;
      }
      if (env.to === this.peerId) {
        this.local.push(env);
        this.scheduleFlush();
        continue;
      }
      const link = this.link(env.to);
      if (link === null) {
        this.stats.framesDroppedOther += 1;
        continue;
      }
      if (link.stream === null && !link.opening && Date.now() < link.retryAt) {
        this.stats.framesDroppedUnreachable += 1;
        continue;
      }
      let body: Uint8Array;
      try {
        body = encodeBody(env);
      } catch (err) {
        this.stats.framesDroppedInvalid += 1;
        this.warn('cannot encode an envelope', { to: env.to, error: (err as Error).message });
        continue;
      }
      if (body.length > this.frameBytesMax) {
        this.stats.framesDroppedOversized += 1;
        this.warn('bug: a message exceeds frameBytesMax and is dropped', { to: env.to, bytes: body.length, type: env.msg.type });
        continue;
      }
      if (link.queue.length >= this.queueFramesMax || link.queueBytes + body.length > this.queueBytesMax) {
        this.stats.framesDroppedQueueFull += 1;
        continue;
      }
      link.queue.push(body);
      link.queueBytes += body.length;
      this.dirty.add(link);
      this.scheduleFlush();
    }
  }

  // -------------------------------------------------------------------------------------
  // Announcements and requests (PeerServices)

  private topic(): string {
    return `/pangea/${this.opts.clusterId}/announce/1`;
  }

  announce(data: Uint8Array): void {
    const node = this.node;
    if (node === null || !this.running) return;
    (node.services.pubsub as GossipSub).publish(this.topic(), data).catch((err: unknown) => {
      this.warn('cannot publish an announcement', { error: (err as Error).message });
    });
  }

  onAnnouncement(handler: (from: string, data: Uint8Array) => void): void {
    this.announcementHandler = handler;
  }

  peersConnected(): number {
    return this.node?.getPeers().length ?? 0;
  }

  async request(peerId: string, protocol: string, body: unknown, timeoutMs: number): Promise<unknown> {
    const node = this.node;
    const link = this.link(peerId);
    if (node === null || !this.running || link === null) throw new RequestNotSent('transport stopped or bad peer id');
    const deadline = deadlineSignal(this.abort.signal, timeoutMs);
    const signal = deadline.signal;
    try {
      await link.addressesSet;
      let stream: Stream;
      try {
        stream = await node.dialProtocol(link.peer, protocol, { signal });
      } catch (err) {
        throw new RequestNotSent(`cannot open a ${protocol} stream to ${peerId}: ${(err as Error).message}`, { cause: err });
      }
      try {
        // Listen before sending: the answer may arrive before anything after `send` runs.
        const answer = readOneFrame(stream, this.frameBytesMax, signal);
        try {
          stream.send(joinFrames([encodeMessage(body)]));
        } catch (err) {
          answer.catch(() => undefined);
          throw new RequestNotSent(`the ${protocol} stream to ${peerId} closed before the request was written: ${(err as Error).message}`, { cause: err });
        }
        stream.close({ signal }).catch(() => undefined);
        return await answer;
      } finally {
        if (stream.status === 'open') stream.abort(new Error('request done'));
      }
    } finally {
      deadline.done();
    }
  }

  async handle(protocol: string, handler: (from: string, body: unknown) => Promise<unknown>, opts: { readonly streamsMax?: number } = {}): Promise<void> {
    const node = this.node;
    if (node === null) throw new Error('start the transport before handling requests');
    await node.handle(protocol, (stream, connection) => {
      const remote = connection.remotePeer.toString();
      const deadline = deadlineSignal(this.abort.signal, this.dialTimeoutMs * 6);
      const signal = deadline.signal;
      readOneFrame(stream, this.frameBytesMax, signal)
        .then(async (request) => {
          const answer = await handler(remote, request);
          stream.send(joinFrames([encodeMessage(answer)]));
          await stream.close({ signal });
        })
        .catch((err: unknown) => {
          this.warn('request failed', { protocol, peerId: remote, error: (err as Error).message });
          stream.abort(err instanceof Error ? err : new Error(String(err)));
        })
        .finally(() => deadline.done());
    }, { maxInboundStreams: opts.streamsMax ?? REQUEST_STREAMS_MAX });
  }

  /** After a failed dial: ask the DHT where the peer is now (members move). */
  private lookUp(link: Link): void {
    const node = this.node;
    const last = this.lookups.get(link.id) ?? 0;
    if (node === null || Date.now() - last < LOOKUP_INTERVAL_MS) return;
    this.lookups.set(link.id, Date.now());
    const signal = AbortSignal.any([this.abort.signal, AbortSignal.timeout(this.dialTimeoutMs)]);
    node.peerRouting.findPeer(link.peer, { signal }).then(
      (info) => {
        const found = info.multiaddrs.map((a) => a.toString()).sort();
        const news = found.length > 0 && (found.length !== link.addrs.length || found.some((a, i) => a !== link.addrs[i]));
        if (news) this.setPeerAddresses(link.id, found);
      },
      () => undefined, // not found: keep the addresses we have
    );
  }

  // -------------------------------------------------------------------------------------
  // Sending

  private link(peerId: string): Link | null {
    let link = this.links.get(peerId);
    if (link !== undefined) return link;
    if (this.links.size >= PEERS_MAX) return null;
    let peer: PeerId;
    try {
      peer = peerIdFromString(peerId);
    } catch {
      return null;
    }
    link = {
      id: peerId,
      peer,
      queue: [],
      queueBytes: 0,
      stream: null,
      opening: false,
      draining: false,
      retryAt: 0,
      backoffMs: 0,
      addressesSet: Promise.resolve(),
      addrs: [],
    };
    this.links.set(peerId, link);
    return link;
  }

  private scheduleFlush(): void {
    if (this.flushTimer === null && this.running) this.flushTimer = setImmediate(() => this.flush());
  }

  private flush(): void {
    this.flushTimer = null;
    if (this.local.length > 0) {
      const local = this.local;
      this.local = [];
      for (const env of local) this.deliver(env);
    }
    const links = [...this.dirty];
    this.dirty.clear();
    for (const link of links) this.flushLink(link);
  }

  private flushLink(link: Link): void {
    if (!this.running || link.queue.length === 0) return;
    const stream = link.stream;
    if (stream === null || stream.writeStatus !== 'writable') {
      if (stream !== null) this.dropStream(link, stream);
      if (!link.opening) void this.open(link);
      return;
    }
    if (link.draining) return; // flushed again on 'drain'
    const frames = link.queue.length;
    const buf = joinFrames(link.queue);
    link.queue = [];
    link.queueBytes = 0;
    try {
      const more = stream.send(buf);
      this.stats.framesSent += frames;
      this.stats.writes += 1;
      this.stats.bytesSent += buf.length;
      if (!more) {
        link.draining = true;
        stream.onDrain({ signal: this.abort.signal }).then(
          () => {
            link.draining = false;
            if (link.queue.length > 0) {
              this.dirty.add(link);
              this.scheduleFlush();
            }
          },
          () => {
            link.draining = false;
          },
        );
      }
    } catch (err) {
      // The stream broke under us: those frames are lost; the next send reopens.
      this.stats.framesDroppedUnreachable += frames;
      this.warn('consensus stream write failed', { peerId: link.id, error: (err as Error).message });
      this.dropStream(link, stream);
    }
  }

  private async open(link: Link): Promise<void> {
    link.opening = true;
    try {
      await link.addressesSet;
      const node = this.node;
      if (node === null || !this.running) return;
      const signal = AbortSignal.any([this.abort.signal, AbortSignal.timeout(this.dialTimeoutMs)]);
      const stream = await node.dialProtocol(link.peer, CONSENSUS_PROTOCOL, { signal });
      if (!this.running) {
        stream.abort(new Error('transport stopped'));
        return;
      }
      this.stats.streamsOpened += 1;
      link.stream = stream;
      link.backoffMs = 0;
      link.retryAt = 0;
      stream.addEventListener('close', () => {
        this.stats.streamsClosed += 1;
        if (link.stream === stream) {
          link.stream = null;
          link.draining = false;
          this.backoff(link);
        }
      });
    } catch (err) {
      if (!this.running) return;
      this.stats.dialFailures += 1;
      this.stats.framesDroppedUnreachable += link.queue.length;
      link.queue = [];
      link.queueBytes = 0;
      this.backoff(link);
      this.lookUp(link);
      this.warn('cannot open a consensus stream', { peerId: link.id, error: (err as Error).message, retryInMs: link.backoffMs });
    } finally {
      link.opening = false;
      if (link.queue.length > 0 && this.running) {
        this.dirty.add(link);
        this.scheduleFlush();
      }
    }
  }

  private backoff(link: Link): void {
    link.backoffMs = Math.min(BACKOFF_MS_MAX, Math.max(BACKOFF_MS_MIN, link.backoffMs * 2));
    link.retryAt = Date.now() + link.backoffMs;
  }

  private dropStream(link: Link, stream: Stream): void {
    if (link.stream === stream) link.stream = null;
    link.draining = false;
    if (stream.status === 'open') stream.abort(new Error('consensus stream dropped'));
  }

  // -------------------------------------------------------------------------------------
  // Receiving

  private accept(stream: Stream, connection: Connection): void {
    if (!this.running) {
      stream.abort(new Error('transport stopped'));
      return;
    }
    const remote = connection.remotePeer.toString();
    const decoder = new FrameDecoder(this.frameBytesMax);
    this.stats.inboundStreams += 1;
    this.inbound.add(stream);
    stream.addEventListener('close', () => this.inbound.delete(stream));
    stream.addEventListener('message', (evt: StreamMessageEvent) => {
      this.stats.bytesReceived += evt.data.byteLength;
      try {
        for (const raw of decoder.push(evt.data)) {
          this.stats.framesReceived += 1;
          this.receive(raw, remote);
        }
      } catch (err) {
        // Only FrameError is expected here; anything else is treated the same way rather
        // than escaping an event listener (which would crash the process).
        const code = err instanceof FrameError ? err.code : 'frame_malformed';
        this.stats.framesRejected += 1;
        if (code === 'frame_too_large') this.stats.framesRejectedOversized += 1;
        else this.stats.framesRejectedMalformed += 1;
        this.warn('closing a consensus stream that carried a bad frame', {
          peerId: remote,
          remoteAddr: connection.remoteAddr.toString(),
          code,
          error: (err as Error).message,
        });
        stream.abort(err instanceof Error ? err : new Error(String(err)));
      }
    });
    // We never write on an inbound stream: half-close our side at once.
    stream.close().catch(() => undefined);
  }

  private receive(raw: unknown, remote: string): void {
    if (typeof raw !== 'object' || raw === null || (raw as { cluster?: unknown }).cluster !== this.opts.clusterId) {
      this.stats.envelopesDroppedWrongCluster += 1;
      return;
    }
    const env = raw as { from?: unknown; to?: unknown };
    if (env.from !== remote) {
      this.stats.envelopesDroppedForged += 1;
      this.warn('dropping an envelope whose sender is not the connection peer', { peerId: remote, from: String(env.from).slice(0, 64) });
      return;
    }
    if (env.to !== this.peerId) {
      this.stats.envelopesDroppedMisaddressed += 1;
      return;
    }
    this.deliver(raw);
  }

  private deliver(raw: unknown): void {
    try {
      this.handler(raw);
    } catch (err) {
      this.stats.handlerErrors += 1;
      this.warn('onMessage handler threw', { error: (err as Error).stack ?? String(err) });
    }
  }

  private warn(msg: string, fields: Record<string, unknown>): void {
    const nowS = Math.floor(Date.now() / 1000);
    if (nowS !== this.warnWindowS) {
      this.warnWindowS = nowS;
      this.warnCount = 0;
    }
    if (this.warnCount >= WARNINGS_PER_S_MAX) {
      this.stats.warningsSuppressed += 1;
      return;
    }
    this.warnCount += 1;
    this.log.warn(msg, fields);
  }
}

/** Reads exactly one frame from `stream` (a request or its answer). */
function readOneFrame(stream: Stream, frameBytesMax: number, signal: AbortSignal): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const decoder = new FrameDecoder(frameBytesMax);
    let done = false;
    const finish = (err: Error | null, value?: unknown): void => {
      if (done) return;
      done = true;
      signal.removeEventListener('abort', onAbort);
      if (err) reject(err);
      else resolve(value);
    };
    const onAbort = (): void => finish(new Error('timed out'));
    signal.addEventListener('abort', onAbort, { once: true });
    stream.addEventListener('message', (evt: StreamMessageEvent) => {
      try {
        for (const value of decoder.push(evt.data)) return finish(null, value);
      } catch (err) {
        finish(err as Error);
      }
    });
    stream.addEventListener('close', () => finish(new Error('stream closed before a whole frame arrived')));
  });
}
