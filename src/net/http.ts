/**
 * The client HTTP API of a node (docs: API.md), on plain `node:http`.
 *
 * A request's path: parse and validate (http-parse.ts: every malformed input is a 4xx before
 * the service sees it), call the `KvService` with a deadline, map its answer or error to the
 * contract. A write the local node cannot lead is forwarded to the leader (http-forward.ts).
 *
 * Example:
 * ```ts
 * const api = createHttpApi(service, { adminToken: null });
 * const { url } = await api.listen('127.0.0.1:7070');
 * ```
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { isUtf8 } from 'node:buffer';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { ApplyResult, BlockCmd, KvOp, LeaseOp, ProviderCmd, CollectionCmd, RequestId } from '../state/command.js';
import { BlockHttp } from './http-blocks.js';
import { ProviderHttp } from './http-providers.js';
import { CollectionHttp } from './http-collections.js';
import type { ModelHttpDeps } from './http-models.js';
import type { LeaseRecord } from '../state/state-store.js';
import { snapshotFileBytes } from '../state/snapshot-file.js';
import { MembershipError, ServiceError, type Consistency, type KvService } from './service.js';
import { Forwarder, forwardedHeader } from './http-forward.js';
import { WatchScheduler, WatchStream } from './watch.js';
import {
  badRequest, encodeValue, HttpError, isJsonContentType, opDigest, parseIfMatch, parseIfNoneMatch, parseJsonObject, parseLeaseGrant, parseLeaseId, parseLeaseIds,
  parseLeaseListQuery, parseMember, parseConsistency, parsePathKey, parsePutQuery, parseQuery, parseRangeQuery, parseRequestIdHeader, parseTxn, parseWatchQuery,
  percentDecode, tooLarge, utf8Text,
} from './http-parse.js';

/** What the HTTP layer logs: a subset of `Logger` (src/logger.ts). */
export interface HttpLogger {
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

export interface HttpApiOptions {
  /** Largest value of a PUT or a txn put (API.md: `--max-value-bytes`). */
  readonly maxValueBytes?: number;
  /** Largest request body of any kind (`--max-request-bytes`). */
  readonly maxRequestBytes?: number;
  /** Most compares plus operations in one txn (`--max-txn-ops`). */
  readonly maxTxnOps?: number;
  /** Most bytes of values in one range page. */
  readonly rangeBytesMax?: number;
  /** Deadline for receiving a whole request, and for the service to answer one: a write
   *  that misses it is `504 outcome_unknown`, a read `503`. */
  readonly requestTimeoutMs?: number;
  /** Forward writes to the leader when this node does not lead (default true). */
  readonly forward?: boolean;
  /** When set, membership changes need `Authorization: Bearer <token>`. */
  readonly adminToken?: string | null;
  readonly logger?: HttpLogger;
  /** Called once per answered request, for metrics. */
  readonly observe?: (route: string, method: string, status: number, seconds: number) => void;
  /** Client requests being served at once; past it `503` with Retry-After. */
  readonly requestsInFlightMax?: number;
  /** Bytes of write bodies being received or waiting for their outcome at once (each counted
   *  at its Content-Length, or at `maxRequestBytes` when chunked); past it `503`. */
  readonly bodyBytesInFlightMax?: number;
  /** Watch streams open at once (`--max-watches`); past it `503`. */
  readonly watchesMax?: number;
}

export const maxValueBytesDefault = 1024 * 1024;
export const maxRequestBytesDefault = 2 * 1024 * 1024;
export const maxTxnOpsDefault = 128;
export const requestsInFlightMaxDefault = 4096;
export const bodyBytesInFlightMaxDefault = 256 * 1024 * 1024;
export const rangeBytesMaxDefault = 4 * 1024 * 1024;
export const watchesMaxDefault = 10_000;
export const requestTimeoutMsDefault = 10_000;
/** After a 413 or an early error, how much of the unread body is read and dropped (so the
 *  client sees the answer rather than a reset) before the connection is cut. */
const drainBytesMax = 8 * 1024 * 1024;
const drainMsMax = 2_000;
/** The largest request header block (node's `maxHeaderSize`); over it is `431`. */
const headerBytesMax = 16 * 1024;

const jsonType = 'application/json';
const metricsType = 'text/plain; version=0.0.4; charset=utf-8';

type Mode = 'client' | 'metrics';

/** The parts of one request the error path needs. */
interface Ctx {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  /** The body once read: a forward re-sends it. */
  body: Buffer | null;
  readonly isWrite: boolean;
  /** Gives back the request's admission (a watch stream, counted by `watchesMax` instead). */
  release: () => void;
}

/** Where a server bound. */
export interface Bound {
  readonly host: string;
  readonly port: number;
  /** `host:port`, IPv6 hosts in brackets. */
  readonly address: string;
  readonly url: string;
}

/**
 * The HTTP API of a node. `handler` serves the client API on a server of one's own;
 * `listen` binds one, `listenMetrics` a second one with only `/healthz`, `/readyz` and
 * `/metrics` (`--metrics-listen`); `close` closes both.
 */
export class HttpApi {
  readonly handler: (req: IncomingMessage, res: ServerResponse) => void;
  readonly metricsHandler: (req: IncomingMessage, res: ServerResponse) => void;
  private readonly servers = new Set<Server>();
  private readonly maxValueBytes: number;
  private readonly maxRequestBytes: number;
  private readonly maxTxnOps: number;
  private readonly rangeBytesMax: number;
  private readonly timeoutMs: number;
  private readonly adminTokenDigest: Buffer | null;
  private readonly forwarder: Forwarder | null;
  private readonly logger: HttpLogger | undefined;
  private readonly serviceOf: () => KvService;
  private readonly observe: HttpApiOptions['observe'];
  private readonly requestsInFlightMax: number;
  private readonly bodyBytesInFlightMax: number;
  /** Client requests and write-body bytes being served now (bounded above). */
  private readonly inFlight = { requests: 0, bytes: 0 };
  /** Requests refused because too many were in flight (requests or write bytes). */
  refusedBusy = 0;
  private readonly watchesMax: number;
  private readonly watches = new Set<WatchStream>();
  private readonly watchScheduler = new WatchScheduler();
  /** Watch events sent by streams now closed (`watchEventsSent` adds the open ones). */
  private watchEventsClosed = 0;
  private watchColdPagesClosed = 0;
  /** Watches refused because `watchesMax` were open. */
  watchesRefused = 0;
  /** What the data models' endpoints (http-models.ts) share of this API. */
  private readonly modelDeps: ModelHttpDeps<Ctx> = {
    applied: () => this.service.watchSource().applied(),
    readJson: async (ctx: Ctx) => {
      requireJson(ctx.req);
      return parseJsonObject(await this.readBody(ctx, this.maxRequestBytes, `request over ${this.maxRequestBytes} bytes`));
    },
    readNothing: async (ctx) => void (await this.readBody(ctx, this.maxRequestBytes, `request over ${this.maxRequestBytes} bytes`)),
    read: (consistency: Consistency) => this.read(consistency),
    send: sendJson,
    sendJsonText,
    refused: (ctx, r) => this.sendApplyError(ctx, r) as never,
  };
  private readonly blockHttp = new BlockHttp<Ctx>({ ...this.modelDeps, blocks: () => served(this.service.blocks?.(), 'blocks'), write: (op) => this.write(op, undefined) });
  private readonly providerHttp = new ProviderHttp<Ctx>({ ...this.modelDeps, providers: () => served(this.service.providers?.(), 'provider records'), write: (op) => this.write(op, undefined) });
  private readonly collectionHttp = new CollectionHttp<Ctx>({ ...this.modelDeps, tables: () => served(this.service.collections?.(), 'collections'), write: (op) => this.write(op, undefined) });

  /** `service` may be a getter, for a node built after its API is bound (its address is the node's). */
  constructor(service: KvService | (() => KvService), opts: HttpApiOptions = {}) {
    this.serviceOf = typeof service === 'function' ? service : () => service;
    this.maxValueBytes = opts.maxValueBytes ?? maxValueBytesDefault;
    this.maxRequestBytes = opts.maxRequestBytes ?? maxRequestBytesDefault;
    this.maxTxnOps = opts.maxTxnOps ?? maxTxnOpsDefault;
    this.rangeBytesMax = opts.rangeBytesMax ?? rangeBytesMaxDefault;
    this.timeoutMs = opts.requestTimeoutMs ?? requestTimeoutMsDefault;
    this.adminTokenDigest = opts.adminToken ? sha256(opts.adminToken) : null;
    // The leader answers within its own deadline; give it a second more before giving up.
    this.forwarder = opts.forward === false ? null : new Forwarder(this.timeoutMs + 1_000);
    this.logger = opts.logger;
    this.observe = opts.observe;
    this.requestsInFlightMax = opts.requestsInFlightMax ?? requestsInFlightMaxDefault;
    this.bodyBytesInFlightMax = opts.bodyBytesInFlightMax ?? bodyBytesInFlightMaxDefault;
    this.watchesMax = opts.watchesMax ?? watchesMaxDefault;
    this.handler = (req, res) => this.handle(req, res, 'client');
    this.metricsHandler = (req, res) => this.handle(req, res, 'metrics');
  }

  /**
   * Counts a client request in, or refuses it (503, Retry-After) when the node already
   * serves as many requests, or holds as many bytes of write bodies, as it may: memory stays
   * bounded however many clients push. Counted out when the response ends or the
   * connection closes.
   */
  private admit(ctx: Ctx): void {
    const declared = Number(header(ctx.req, 'content-length') ?? NaN);
    const bytes = !ctx.isWrite ? 0 : Number.isSafeInteger(declared) && declared >= 0 ? Math.min(declared, this.maxRequestBytes) : this.maxRequestBytes;
    const f = this.inFlight;
    if (f.requests >= this.requestsInFlightMax) {
      this.refusedBusy++;
      throw unavailable(`the node serves ${f.requests} requests already; retry shortly`);
    }
    if (bytes > 0 && f.bytes > 0 && f.bytes + bytes > this.bodyBytesInFlightMax) {
      this.refusedBusy++;
      throw unavailable(`the node holds ${f.bytes} bytes of writes in flight already; retry shortly`);
    }
    f.requests++;
    f.bytes += bytes;
    let held = true;
    ctx.release = () => {
      if (!held) return;
      held = false;
      f.requests--;
      f.bytes -= bytes;
    };
    ctx.res.once('close', ctx.release);
  }

  /** Watch streams open now, and the events they and the closed ones sent. */
  get watchStats(): { readonly open: number; readonly eventsSent: number; readonly refused: number; readonly cold: number; readonly coldPages: number } {
    let sent = this.watchEventsClosed;
    let cold = 0;
    let coldPages = this.watchColdPagesClosed;
    for (const w of this.watches) {
      sent += w.events;
      coldPages += w.coldPages;
      if (w.cold) cold++;
    }
    return { open: this.watches.size, eventsSent: sent, refused: this.watchesRefused, cold, coldPages };
  }

  /** Requests being served now, and the bytes of write bodies they hold. */
  get requestsInFlight(): { readonly requests: number; readonly bytes: number } {
    return this.inFlight;
  }

  private get service(): KvService {
    return this.serviceOf();
  }

  /** Serves the client API on `host:port`, or `(host, port)`; port 0 picks one. */
  listen(hostOrHostPort: string, port?: number): Promise<Bound> {
    return this.bind(this.handler, hostOrHostPort, port);
  }

  /** Serves only `/healthz`, `/readyz` and `/metrics`. `close()` of the answer closes just this listener. */
  async listenMetrics(hostOrHostPort: string, port?: number): Promise<Bound & { close(): Promise<void> }> {
    const server = createServer({ requestTimeout: this.timeoutMs, headersTimeout: this.timeoutMs, maxHeaderSize: headerBytesMax }, this.metricsHandler);
    const bound = await this.bindServer(server, hostOrHostPort, port);
    return { ...bound, close: () => this.closeServer(server) };
  }

  /** Stops listening and cuts open connections. */
  async close(): Promise<void> {
    this.forwarder?.close();
    await Promise.all([...this.servers].map((s) => this.closeServer(s)));
  }

  private bind(handler: (req: IncomingMessage, res: ServerResponse) => void, hostOrHostPort: string, port?: number): Promise<Bound> {
    const server = createServer({
      requestTimeout: this.timeoutMs,
      headersTimeout: this.timeoutMs,
      maxHeaderSize: headerBytesMax,
      // How often node checks for the two timeouts above (its default is 30 s).
      connectionsCheckingInterval: Math.max(50, Math.min(1_000, Math.floor(this.timeoutMs / 4))),
    } as Parameters<typeof createServer>[0], handler);
    return this.bindServer(server, hostOrHostPort, port);
  }

  private bindServer(server: Server, hostOrHostPort: string, port?: number): Promise<Bound> {
    let host = hostOrHostPort;
    if (port === undefined) {
      const i = hostOrHostPort.lastIndexOf(':');
      port = Number(hostOrHostPort.slice(i + 1));
      host = hostOrHostPort.slice(0, Math.max(0, i));
      if (i < 0 || hostOrHostPort.slice(i + 1) === '') port = NaN;
    }
    host = host.replace(/^\[(.*)\]$/, '$1');
    if (!Number.isInteger(port) || port < 0 || port > 65535) return Promise.reject(new Error(`bad listen address ${hostOrHostPort}: want HOST:PORT`));
    server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => this.onClientError(err, socket));
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        this.servers.add(server);
        const a = server.address() as AddressInfo;
        const h = a.family === 'IPv6' ? `[${a.address}]` : a.address;
        resolve({ host: a.address, port: a.port, address: `${h}:${a.port}`, url: `http://${h}:${a.port}` });
      });
    });
  }

  private closeServer(server: Server): Promise<void> {
    if (!this.servers.delete(server)) return Promise.resolve();
    return new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  }

  /** Errors node finds before a request reaches the handler: the contract's JSON where the
   *  socket still allows an answer, then the connection is closed. */
  private onClientError(err: NodeJS.ErrnoException, socket: Socket): void {
    let status = 400;
    let code = 'bad_request';
    let message = `malformed request: ${err.code ?? err.message}`;
    if (err.code === 'HPE_HEADER_OVERFLOW') {
      status = 431;
      code = 'headers_too_large';
      message = `request headers over ${headerBytesMax} bytes`;
    } else if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') {
      status = 408;
      code = 'request_timeout';
      message = `request not received within ${this.timeoutMs} ms`;
    } else if (err.code === 'HPE_INVALID_EOF_STATE') {
      message = 'request body ended before its declared length';
    }
    // A response already under way on this socket cannot be interrupted by another one.
    const inFlight = (socket as Socket & { _httpMessage?: ServerResponse | null })._httpMessage;
    if (socket.writable && err.code !== 'ECONNRESET' && (!inFlight || !inFlight.headersSent)) {
      const body = JSON.stringify({ error: { code, message } });
      socket.end(`HTTP/1.1 ${status} ${reason(status)}\r\ncontent-type: ${jsonType}\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
      setTimeout(() => socket.destroy(), drainMsMax).unref();
    } else {
      socket.destroy();
    }
  }

  private handle(req: IncomingMessage, res: ServerResponse, mode: Mode): void {
    const method = req.method === 'HEAD' ? 'GET' : (req.method ?? '');
    const observe = this.observe;
    if (observe !== undefined) {
      const started = process.hrtime.bigint();
      res.once('finish', () => observe(routeOf(req.url ?? '/'), method, res.statusCode, Number(process.hrtime.bigint() - started) / 1e9));
    }
    const ctx: Ctx = { req, res, body: null, isWrite: method !== 'GET', release: () => {} };
    let p: Promise<void>;
    try {
      if (mode === 'client') this.admit(ctx);
      p = this.route(ctx, method, mode);
    } catch (e) {
      p = Promise.reject(e);
    }
    p.catch((e: unknown) => this.fail(ctx, e)).catch((e: unknown) => {
      this.logger?.error('http: answering failed', { err: e });
      res.destroy();
    });
  }

  private route(ctx: Ctx, method: string, mode: Mode): Promise<void> {
    const url = ctx.req.url ?? '/';
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    const query = q < 0 ? '' : url.slice(q + 1);
    if (mode === 'client') {
      if (path.startsWith('/v1/blocks/')) return this.blockHttp.route(ctx, method, path.slice('/v1/blocks/'.length), query);
      if (path === '/v1/providers') return this.providerHttp.route(ctx, method, null, query);
      if (path.startsWith('/v1/providers/')) return this.providerHttp.route(ctx, method, path.slice('/v1/providers/'.length), query);
      if (path === '/v1/collections') return this.collectionHttp.route(ctx, method, null, query);
      if (path.startsWith('/v1/collections/')) return this.collectionHttp.route(ctx, method, path.slice('/v1/collections/'.length), query);
      if (path.startsWith('/v1/kv/')) {
        allow(method, ['GET', 'PUT', 'DELETE']);
        const key = parsePathKey(path.slice('/v1/kv/'.length));
        if (method === 'GET') return this.getKey(ctx, key, query);
        if (method === 'PUT') return this.putKey(ctx, key, query);
        return this.deleteKey(ctx, key);
      }
      switch (path) {
        case '/v1/kv':
          allow(method, ['GET']);
          return this.range(ctx, query);
        case '/v1/watch':
          allow(method, ['GET']);
          return this.watch(ctx, query);
        case '/v1/txn':
          allow(method, ['POST']);
          return this.txn(ctx);
        case '/v1/cluster':
          allow(method, ['GET']);
          return this.clusterView(ctx);
        case '/v1/cluster/members':
          allow(method, ['GET', 'POST']);
          return method === 'GET' ? this.listMembers(ctx) : this.addMember(ctx);
        case '/v1/cluster/snapshot':
          allow(method, ['GET']);
          return this.snapshot(ctx);
        case '/v1/cluster/leader':
          allow(method, ['POST']);
          return this.transferLeader(ctx);
        case '/v1/cluster/level':
          allow(method, ['POST']);
          return this.raiseLevel(ctx);
        case '/v1/leases':
          allow(method, ['GET', 'POST']);
          return method === 'GET' ? this.listLeases(ctx, query) : this.grantLease(ctx);
      }
      if (path === '/v1/leases/keepalive') {
        allow(method, ['POST']);
        return this.keepAliveMany(ctx);
      }
      if (path.startsWith('/v1/leases/')) {
        const rest = path.slice('/v1/leases/'.length);
        if (rest.endsWith('/keepalive')) {
          allow(method, ['POST']);
          return this.keepAlive(ctx, parseLeaseId(rest.slice(0, -'/keepalive'.length), 'lease id'));
        }
        allow(method, ['GET', 'DELETE']);
        const id = parseLeaseId(rest, 'lease id');
        return method === 'GET' ? this.getLease(ctx, id, query) : this.revokeLease(ctx, id);
      }
      if (path.startsWith('/v1/cluster/members/')) {
        allow(method, ['DELETE']);
        return this.removeMember(ctx, path.slice('/v1/cluster/members/'.length));
      }
    }
    switch (path) {
      case '/healthz':
        allow(method, ['GET']);
        sendJson(ctx.res, 200, { status: 'ok' });
        return Promise.resolve();
      case '/readyz':
        allow(method, ['GET']);
        {
          const why = this.service.notReady();
          const info = this.service.readyInfo?.() ?? {};
          if (why !== null) {
            const e = unavailable(`not ready: ${why}`);
            throw new HttpError(e.status, e.code, e.message, info, e.headers);
          }
          sendJson(ctx.res, 200, { status: 'ready', ...info });
        }
        return Promise.resolve();
      case '/metrics':
        allow(method, ['GET']);
        return this.metrics(ctx);
    }
    throw new HttpError(404, 'not_found', `no such path: ${path}`);
  }

  private async getKey(ctx: Ctx, key: Uint8Array, query: string): Promise<void> {
    const consistency = parseConsistencyQuery(query);
    const index = await this.read(consistency);
    const kv = this.service.get(key);
    if (kv === undefined) throw new HttpError(404, 'not_found', 'no such key', {}, { 'pangea-index': String(index) });
    const res = ctx.res;
    res.writeHead(200, {
      'content-type': 'application/octet-stream',
      'content-length': kv.value.byteLength,
      etag: `"${kv.revision}"`,
      'pangea-index': String(index),
      ...(kv.lease === undefined ? {} : { 'pangea-lease': String(kv.lease) }),
    });
    res.end(kv.value);
  }

  private async putKey(ctx: Ctx, key: Uint8Array, query: string): Promise<void> {
    const { lease } = parsePutQuery(query);
    const ifMatch = parseIfMatch(header(ctx.req, 'if-match'));
    const ifAbsent = parseIfNoneMatch(header(ctx.req, 'if-none-match'));
    if (ifMatch !== undefined && ifAbsent) throw badRequest('give If-Match or If-None-Match, not both');
    const rid = parseRequestIdHeader(header(ctx.req, 'pangea-request-id'));
    const limit = Math.min(this.maxValueBytes, this.maxRequestBytes);
    const value = await this.readBody(ctx, limit, `value over ${limit} bytes`);
    const op: KvOp = { t: 'put', key, value, ...(ifMatch !== undefined ? { ifMatch } : {}), ...(ifAbsent ? { ifAbsent } : {}), ...(lease !== undefined ? { lease } : {}) };
    const r = await this.write(op, rid);
    if (r.kind !== 'put') return this.sendApplyError(ctx, r);
    sendJson(ctx.res, 200, { index: r.index, revision: r.revision }, { etag: `"${r.revision}"`, 'pangea-index': String(r.index) });
  }

  private async deleteKey(ctx: Ctx, key: Uint8Array): Promise<void> {
    const ifMatch = parseIfMatch(header(ctx.req, 'if-match'));
    if (header(ctx.req, 'if-none-match') !== undefined) throw badRequest('If-None-Match does not apply to DELETE');
    const rid = parseRequestIdHeader(header(ctx.req, 'pangea-request-id'));
    // A DELETE has no body; any sent is read (bounded) so a forward can carry it unchanged.
    await this.readBody(ctx, this.maxRequestBytes, `request over ${this.maxRequestBytes} bytes`);
    const op: KvOp = { t: 'delete', key, ...(ifMatch !== undefined ? { ifMatch } : {}) };
    const r = await this.write(op, rid);
    if (r.kind !== 'delete') return this.sendApplyError(ctx, r);
    sendJson(ctx.res, 200, { index: r.index, deleted: r.deleted }, { 'pangea-index': String(r.index) });
  }

  private async range(ctx: Ctx, query: string): Promise<void> {
    const q = parseRangeQuery(query);
    const index = await this.read(q.consistency);
    const { items, more } = this.service.range(q.prefix, q.after, q.limit, this.rangeBytesMax);
    const out = items.map((kv) => {
      if (q.encoding === 'utf8' && !isUtf8(kv.value)) throw badRequest(`the value of ${JSON.stringify(Buffer.from(kv.key).toString('utf8'))} is not UTF-8: ask with encoding=base64`);
      const item = { key: Buffer.from(kv.key.buffer, kv.key.byteOffset, kv.key.byteLength).toString('utf8'), value: encodeValue(kv.value, q.encoding), revision: kv.revision };
      return kv.lease === undefined ? item : { ...item, lease: String(kv.lease) };
    });
    sendJson(ctx.res, 200, { items: out, more, index }, { 'pangea-index': String(index) });
  }

  /**
   * `GET /v1/watch` (watch.ts). With no start given, from a linearizable read index; a start
   * past this node's applied index waits for a linearizable read, which answers once this
   * node has applied up to the read index: a start past that is not the cluster's yet (400).
   */
  private async watch(ctx: Ctx, query: string): Promise<void> {
    const q = parseWatchQuery(query, header(ctx.req, 'last-event-id'));
    const source = this.service.watchSource();
    if (this.watches.size >= this.watchesMax) {
      this.watchesRefused++;
      throw unavailable(`this node serves ${this.watches.size} watches already (--max-watches); watch through another node or retry later`);
    }
    let after = q.after;
    if (after === null) after = await this.read('linearizable');
    else if (after > source.applied()) {
      const index = await this.read('linearizable');
      if (index < after) throw badRequest(`after ${after} is past the cluster's last index, ${index}`);
    }
    if (ctx.res.destroyed) return;
    if (this.watches.size >= this.watchesMax) {
      this.watchesRefused++;
      throw unavailable(`this node serves ${this.watches.size} watches already (--max-watches); watch through another node or retry later`);
    }
    const stream = new WatchStream(source, { ...q, after }, ctx.res, (s) => {
      this.watches.delete(s);
      this.watchEventsClosed += s.events;
      this.watchColdPagesClosed += s.coldPages;
    }, this.watchScheduler);
    this.watches.add(stream);
    ctx.release(); // bounded by watchesMax, not by the requests in flight
    stream.start();
  }

  private async txn(ctx: Ctx): Promise<void> {
    requireJson(ctx.req);
    const rid = parseRequestIdHeader(header(ctx.req, 'pangea-request-id'));
    const body = await this.readBody(ctx, this.maxRequestBytes, `request over ${this.maxRequestBytes} bytes`);
    const { op, encoding } = parseTxn(parseJsonObject(body), { maxTxnOps: this.maxTxnOps, maxValueBytes: this.maxValueBytes });
    const r = await this.write(op, rid);
    if (r.kind !== 'txn') return this.sendApplyError(ctx, r);
    const results = r.results.map((x) => {
      if ('value' in x) return { value: x.value === null ? null : encodeValue(x.value, encoding), revision: x.revision };
      if ('record' in x) return { record: x.record === null ? null : (JSON.parse(x.record) as unknown), revision: x.revision };
      if ('deleted' in x) return { deleted: x.deleted };
      return { revision: x.revision };
    });
    sendJson(ctx.res, 200, { succeeded: r.succeeded, index: r.index, results }, { 'pangea-index': String(r.index) });
  }

  // --- leases (API contract, "Leases") -------------------------------------------------

  private async grantLease(ctx: Ctx): Promise<void> {
    requireJson(ctx.req);
    const body = await this.readBody(ctx, this.maxRequestBytes, `request over ${this.maxRequestBytes} bytes`);
    const { ttlMs } = parseLeaseGrant(parseJsonObject(body));
    const r = await this.write({ t: 'lease_grant', ttlMs }, undefined);
    if (r.kind !== 'lease_granted') return this.sendApplyError(ctx, r);
    sendJson(ctx.res, 200, { id: String(r.id), ttl: r.ttlMs / 1000, index: r.index }, { 'pangea-index': String(r.index) });
  }

  private async keepAlive(ctx: Ctx, id: number): Promise<void> {
    await this.readBody(ctx, this.maxRequestBytes, `request over ${this.maxRequestBytes} bytes`);
    const k = (await this.deadline(this.service.keepAlive([id]), true))[0]!;
    if (k.ttlMs === null) throw new HttpError(404, 'lease_not_found', `no lease ${id}: unknown, revoked or expired`, { index: k.index });
    sendJson(ctx.res, 200, { id: String(id), ttl: k.ttlMs / 1000, index: k.index }, { 'pangea-index': String(k.index) });
  }

  /** `POST /v1/leases/keepalive` `{"ids": [...]}` (an extension): many leases renewed in
   *  one request, for a client that holds many; each answered as the single keep-alive is. */
  private async keepAliveMany(ctx: Ctx): Promise<void> {
    requireJson(ctx.req);
    const body = await this.readBody(ctx, this.maxRequestBytes, `request over ${this.maxRequestBytes} bytes`);
    const ids = parseLeaseIds(parseJsonObject(body));
    const kept = await this.deadline(this.service.keepAlive(ids), true);
    const index = kept[0]?.index ?? 0;
    const items = ids.map((id, i) => {
      const ttlMs = kept[i]?.ttlMs ?? null;
      return ttlMs === null ? { id: String(id), error: 'lease_not_found' } : { id: String(id), ttl: ttlMs / 1000 };
    });
    sendJson(ctx.res, 200, { index, items }, { 'pangea-index': String(index) });
  }

  private async getLease(ctx: Ctx, id: number, query: string): Promise<void> {
    const index = await this.read(parseConsistencyQuery(query));
    const lease = this.service.lease(id);
    if (lease === undefined) throw new HttpError(404, 'lease_not_found', `no lease ${id}: unknown, revoked or expired`, { index }, { 'pangea-index': String(index) });
    sendJson(ctx.res, 200, { ...this.leaseJson(lease), index }, { 'pangea-index': String(index) });
  }

  private async listLeases(ctx: Ctx, query: string): Promise<void> {
    const q = parseLeaseListQuery(query);
    const index = await this.read(parseConsistencyQuery(query));
    const { items, more } = this.service.leases(q.after, q.limit);
    sendJson(ctx.res, 200, { items: items.map((l) => this.leaseJson(l)), more, index }, { 'pangea-index': String(index) });
  }

  /** `remainingMs` counts to the lease's end (its grace too: LEASE_GRACE_MS), never above
   *  its TTL: a fresh lease shows its TTL, as in etcd. */
  private leaseJson(l: LeaseRecord): Record<string, unknown> {
    return { id: String(l.id), ttl: l.ttlMs / 1000, remainingMs: Math.max(0, Math.min(l.ttlMs, l.expiresAt - this.service.logTime())), keys: l.keys };
  }

  private async revokeLease(ctx: Ctx, id: number): Promise<void> {
    await this.readBody(ctx, this.maxRequestBytes, `request over ${this.maxRequestBytes} bytes`);
    const r = await this.write({ t: 'lease_revoke', id }, undefined);
    if (r.kind !== 'lease_revoked') return this.sendApplyError(ctx, r);
    sendJson(ctx.res, 200, { index: r.index, revoked: r.revoked }, { 'pangea-index': String(r.index) });
  }

  private clusterView(ctx: Ctx): Promise<void> {
    const c = this.service.cluster();
    sendJson(ctx.res, 200, {
      clusterId: c.clusterId,
      self: { peerId: c.self.peerId, http: c.self.http, p2p: c.self.p2p },
      leader: c.leader,
      commitIndex: c.commitIndex,
      appliedIndex: c.appliedIndex,
      members: c.members.map(member),
      genesis: c.genesis,
      chain: c.chain,
      archive: c.archive,
      applyLevel: c.applyLevel,
      build: c.build,
    });
    return Promise.resolve();
  }

  private listMembers(ctx: Ctx): Promise<void> {
    sendJson(ctx.res, 200, { members: this.service.cluster().members.map(member) });
    return Promise.resolve();
  }

  private async addMember(ctx: Ctx): Promise<void> {
    this.authorize(ctx.req);
    requireJson(ctx.req);
    const body = await this.readBody(ctx, this.maxRequestBytes, `request over ${this.maxRequestBytes} bytes`);
    const m = parseMember(parseJsonObject(body));
    const { index } = await this.deadline(this.service.addMember(m), true);
    sendJson(ctx.res, 200, { index });
  }

  private async removeMember(ctx: Ctx, raw: string): Promise<void> {
    this.authorize(ctx.req);
    const peerId = utf8Text(percentDecode(raw, 'peerId'), 'peerId');
    if (peerId === '' || peerId.includes('/')) throw badRequest('peerId must be one non-empty path segment');
    await this.readBody(ctx, this.maxRequestBytes, `request over ${this.maxRequestBytes} bytes`);
    const { index } = await this.deadline(this.service.removeMember(peerId), true);
    sendJson(ctx.res, 200, { index });
  }

  /** Hands leadership to the voter named (admin): 200 `{"leader"}` once it leads. */
  private async transferLeader(ctx: Ctx): Promise<void> {
    this.authorize(ctx.req);
    requireJson(ctx.req);
    const body = parseJsonObject(await this.readBody(ctx, this.maxRequestBytes, `request over ${this.maxRequestBytes} bytes`));
    const peerId = body.peerId;
    if (typeof peerId !== 'string' || peerId === '' || peerId.length > 128) throw badRequest('"peerId" must be a voter\'s peer id');
    if (this.service.transferLeader === undefined) throw new HttpError(501, 'not_implemented', 'this service cannot hand leadership over');
    const r = await this.deadline(this.service.transferLeader(peerId), true);
    sendJson(ctx.res, 200, { leader: r.leader });
  }

  /** Raises the cluster's apply level (admin; `pangea cluster upgrade`): 200 `{"index",
   *  "level"}`; 409 naming the members whose builds do not apply it. */
  private async raiseLevel(ctx: Ctx): Promise<void> {
    this.authorize(ctx.req);
    requireJson(ctx.req);
    const body = parseJsonObject(await this.readBody(ctx, this.maxRequestBytes, `request over ${this.maxRequestBytes} bytes`));
    const level = body.level;
    if (Object.keys(body).some((k) => k !== 'level')) throw badRequest('level: only "level" is allowed');
    if (typeof level !== 'number' || !Number.isSafeInteger(level) || level < 1) throw badRequest('"level" must be an integer, 1 or more');
    if (this.service.raiseLevel === undefined) throw new HttpError(501, 'not_implemented', 'this service has no apply level');
    const r = await this.deadline(this.service.raiseLevel(level), true);
    sendJson(ctx.res, 200, r);
  }

  /**
   * The whole state as a snapshot file (state/snapshot-file.ts), streamed from one read
   * transaction taken after a linearizable read barrier, so it holds every write acknowledged
   * before the request. Admin only: it is every key. A failure midway cuts the connection,
   * which the file's digest and end frame both reveal.
   */
  private async snapshot(ctx: Ctx): Promise<void> {
    this.authorize(ctx.req);
    const index = await this.read('linearizable');
    const snap = this.service.snapshot();
    const { res } = ctx;
    res.once('close', () => snap.close());
    res.writeHead(200, {
      'content-type': 'application/octet-stream',
      'pangea-index': String(snap.header.applied.point.index),
      'pangea-read-index': String(index),
      'content-disposition': `attachment; filename="pangea-${snap.header.applied.point.index}.snapshot"`,
    });
    if (ctx.req.method === 'HEAD') {
      snap.close();
      res.end();
      return;
    }
    for await (const chunk of snapshotFileBytes(snap)) {
      if (res.destroyed) return;
      if (!res.write(chunk)) await new Promise<void>((resolve) => {
        const go = (): void => {
          res.off('drain', go);
          res.off('close', go);
          resolve();
        };
        res.on('drain', go);
        res.on('close', go);
      });
    }
    res.end();
  }

  private async metrics(ctx: Ctx): Promise<void> {
    const text = await this.service.metrics();
    ctx.res.writeHead(200, { 'content-type': metricsType, 'content-length': Buffer.byteLength(text) });
    ctx.res.end(text);
  }

  /** 401 without `Authorization: Bearer <token>`, 403 with a wrong one (compared in constant time). */
  private authorize(req: IncomingMessage): void {
    if (this.adminTokenDigest === null) return;
    const m = /^Bearer\s+(\S+)\s*$/i.exec(header(req, 'authorization') ?? '');
    if (!m) throw new HttpError(401, 'unauthorized', 'membership changes, leader transfers and snapshots need Authorization: Bearer <admin token>', {}, { 'www-authenticate': 'Bearer' });
    if (!timingSafeEqual(sha256(m[1]!), this.adminTokenDigest)) throw new HttpError(403, 'forbidden', 'wrong admin token');
  }

  private read(consistency: Consistency): Promise<number> {
    return this.deadline(this.service.readBarrier(consistency), false);
  }

  private write(op: KvOp | LeaseOp | BlockCmd | ProviderCmd | CollectionCmd, rid: { client: string; seq: number } | undefined): Promise<ApplyResult> {
    const requestId: RequestId | undefined = rid === undefined || !isKvOp(op) ? undefined : { client: rid.client, seq: rid.seq, digest: opDigest(op) };
    return this.deadline(this.service.write(op, requestId), true);
  }

  /** Races a service call against the request deadline. A late write is `504`: it was handed over. */
  private deadline<T>(p: Promise<T>, isWrite: boolean): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(isWrite
        ? new HttpError(504, 'outcome_unknown', `no outcome within ${this.timeoutMs} ms; the write may still be applied`)
        : unavailable(`read not served within ${this.timeoutMs} ms`)), this.timeoutMs);
    });
    p.catch(() => {}); // a rejection after the deadline is nobody's to handle
    return Promise.race([p, late]).finally(() => clearTimeout(timer));
  }

  /**
   * Reads the whole body, at most `limit` bytes. Over the limit (declared or streamed) is
   * `413` at once, without reading the rest; the error path drops what still arrives.
   */
  private readBody(ctx: Ctx, limit: number, tooLargeMessage: string): Promise<Buffer> {
    const req = ctx.req;
    const declared = header(req, 'content-length');
    if (declared !== undefined && Number(declared) > limit) return Promise.reject(tooLarge(tooLargeMessage));
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let n = 0;
      const cleanup = (): void => {
        req.off('data', onData);
        req.off('end', onEnd);
        req.off('close', onClose);
        req.off('error', onClose);
      };
      const onData = (c: Buffer): void => {
        n += c.byteLength;
        if (n > limit) {
          cleanup();
          req.pause();
          reject(tooLarge(tooLargeMessage));
          return;
        }
        chunks.push(c);
      };
      const onEnd = (): void => {
        cleanup();
        ctx.body = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, n);
        resolve(ctx.body);
      };
      const onClose = (): void => {
        cleanup();
        reject(badRequest('request body ended before its declared length'));
      };
      req.on('data', onData);
      req.on('end', onEnd);
      req.on('close', onClose);
      req.on('error', onClose);
    });
  }

  private sendApplyError(ctx: Ctx, r: ApplyResult): void {
    switch (r.kind) {
      case 'precondition_failed':
        throw new HttpError(412, 'precondition_failed', 'the condition was not met', { revision: r.revision, index: r.index });
      case 'request_id_conflict':
        throw new HttpError(409, 'request_id_conflict', 'this Pangea-Request-Id was used for a different request');
      case 'request_id_stale':
        throw badRequest('this Pangea-Request-Id sequence is below one already applied for the client');
      case 'invalid':
        throw badRequest(r.message);
      case 'lease_not_found':
        throw new HttpError(404, 'lease_not_found', `no lease ${r.id}: unknown, revoked or expired`, { index: r.index });
      case 'limit_reached':
        throw new HttpError(409, 'limit_reached', r.message, { index: r.index });
      // Collections' refusals (a txn's record ops, and http-collections.ts).
      case 'collection_not_found':
        throw new HttpError(404, 'collection_not_found', `no collection ${r.name}`, { index: r.index });
      case 'unique_violation':
        throw new HttpError(409, 'unique_violation', `index ${r.indexName}: record ${JSON.stringify(r.pk)} holds this value`, { pk: r.pk, index: r.index });
      case 'schema_violation':
        throw new HttpError(422, 'schema_violation', r.message, { errors: r.errors, index: r.index });
      case 'invalid_operation':
        throw new HttpError(422, 'invalid_operation', r.message, { index: r.index });
      default:
        throw new Error(`the service answered ${r.kind} to ${ctx.req.method} ${ctx.req.url}`);
    }
  }

  private async fail(ctx: Ctx, e: unknown): Promise<void> {
    const { req, res } = ctx;
    if (e instanceof ServiceError && e.code === 'not_leader') {
      if (this.forwarder === null || header(req, forwardedHeader) !== undefined || e.leaderHttp === null) {
        const why = e.leaderHttp === null ? 'no leader known' : header(req, forwardedHeader) !== undefined ? 'forwarded to a node that does not lead' : 'this node does not lead';
        return this.fail(ctx, unavailable(`${why}: ${e.message}`, e.retryAfterS));
      }
      if (!req.complete) await this.readBody(ctx, this.maxRequestBytes, `request over ${this.maxRequestBytes} bytes`);
      try {
        await this.forwarder.forward(req, res, ctx.body, e.leaderHttp, ctx.isWrite);
      } catch (fe) {
        return this.fail(ctx, fe);
      }
      return;
    }
    let err: HttpError;
    if (e instanceof HttpError) err = e;
    else if (e instanceof MembershipError) err = new HttpError(e.code === 'not_found' ? 404 : e.code === 'removed' ? 410 : 409, e.code, e.message);
    else if (e instanceof ServiceError) {
      err = e.code === 'outcome_unknown' ? new HttpError(504, 'outcome_unknown', e.message) : unavailable(e.message, e.retryAfterS);
    } else {
      this.logger?.error('http: internal error', { method: req.method, url: req.url, err: e });
      err = new HttpError(500, 'internal', 'internal error');
    }
    if (res.headersSent || res.destroyed) {
      res.destroy();
      return;
    }
    sendJson(res, err.status, { error: { code: err.code, message: err.message }, ...err.extra }, err.headers);
    if (!req.complete) discardRest(req);
  }
}

/** The client API (every endpoint of API.md). */
export function createHttpApi(service: KvService | (() => KvService), opts: HttpApiOptions = {}): HttpApi {
  return new HttpApi(service, opts);
}

/** What a service serves, or 404 when it serves none of it (a service without a state
 *  machine of its own: tests' fakes). */
function served<T>(x: T | undefined, what: string): T {
  if (x === undefined) throw new HttpError(404, 'not_found', `this node serves no ${what}`);
  return x;
}

function isKvOp(op: KvOp | LeaseOp | BlockCmd | ProviderCmd | CollectionCmd): op is KvOp {
  return op.t === 'put' || op.t === 'delete' || op.t === 'txn';
}

function sha256(s: string): Buffer {
  return createHash('sha256').update(s, 'utf8').digest();
}

function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v.join(', ') : v;
}

function allow(method: string, methods: readonly string[]): void {
  if (!methods.includes(method)) {
    throw new HttpError(405, 'method_not_allowed', `${method} is not allowed here; use ${methods.join(' or ')}`, {}, { allow: methods.join(', ') });
  }
}

function requireJson(req: IncomingMessage): void {
  if (!isJsonContentType(header(req, 'content-type'))) throw new HttpError(415, 'unsupported_media_type', 'the body must be Content-Type: application/json');
}

/** `?consistency=` of a single-key GET; other parameters are ignored. */
function parseConsistencyQuery(query: string): Consistency {
  return query === '' ? 'linearizable' : parseConsistency(parseQuery(query).get('consistency'));
}

function unavailable(message: string, retryAfterS = 1): HttpError {
  return new HttpError(503, 'unavailable', message, {}, { 'retry-after': String(Math.max(1, Math.ceil(retryAfterS))) });
}

function member(m: { peerId: string; http: string; p2p: readonly string[]; role: 'voter' | 'learner' }): Record<string, unknown> {
  return { peerId: m.peerId, p2p: m.p2p, http: m.http, role: m.role };
}

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  sendJsonText(res, status, JSON.stringify(body), headers);
}

function sendJsonText(res: ServerResponse, status: number, text: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, { ...headers, 'content-type': jsonType, 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** Reads and drops what is left of a body we answered early, up to a bound, then cuts the
 *  connection if the body is still coming: the client reads our answer instead of a reset. */
function discardRest(req: IncomingMessage): void {
  let n = 0;
  const cut = (): void => {
    clearTimeout(timer);
    req.socket.destroy();
  };
  const timer = setTimeout(cut, drainMsMax);
  timer.unref();
  req.removeAllListeners('data');
  req.on('data', (c: Buffer) => {
    n += c.byteLength;
    if (n > drainBytesMax) cut();
  });
  req.on('end', () => clearTimeout(timer));
  req.on('close', () => clearTimeout(timer));
  req.on('error', () => {});
  req.resume();
}

function reason(status: number): string {
  return ({ 400: 'Bad Request', 408: 'Request Timeout', 431: 'Request Header Fields Too Large' } as Record<number, string>)[status] ?? 'Error';
}

/** A low-cardinality label for a request path. */
function routeOf(url: string): string {
  if (url.startsWith('/v1/kv/')) return '/v1/kv/{key}';
  const path = url.split('?', 1)[0]!;
  if (path.startsWith('/v1/cluster/members/')) return '/v1/cluster/members/{peerId}';
  if (path === '/v1/leases/keepalive') return path;
  if (path.startsWith('/v1/leases/')) return path.endsWith('/keepalive') ? '/v1/leases/{id}/keepalive' : '/v1/leases/{id}';
  if (path.startsWith('/v1/providers/')) return '/v1/providers/{key}';
  if (path.startsWith('/v1/collections/')) return path.includes('/records') ? (path.split('/').length > 5 ? '/v1/collections/{c}/records/{pk}' : '/v1/collections/{c}/records') : '/v1/collections/{c}';
  if (path.startsWith('/v1/blocks/')) {
    const rest = path.slice('/v1/blocks/'.length);
    return ['get', 'pend', 'commit', 'cancel'].includes(rest) ? path : rest.endsWith('/revisions') ? '/v1/blocks/{id}/revisions' : '/v1/blocks/{id}';
  }
  return ['/v1/kv', '/v1/txn', '/v1/watch', '/v1/cluster', '/v1/cluster/members', '/v1/cluster/snapshot', '/v1/cluster/leader', '/v1/cluster/level', '/v1/leases', '/v1/providers', '/v1/collections', '/healthz', '/readyz', '/metrics'].includes(path) ? path : 'other';
}
