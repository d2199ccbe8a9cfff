/**
 * A client of the Pangea HTTP API (API.md), on the global `fetch`.
 *
 * Any node can serve any request, so the client keeps a list of endpoints and moves to the
 * next one when a node cannot be reached or answers `503`. Writes carry a
 * `Pangea-Request-Id`, the same one on every retry of one call, so a retry after a timeout
 * or a `504` never applies a write twice.
 *
 * Example:
 * ```ts
 * const c = new PangeaClient({ endpoints: ['http://127.0.0.1:7070'] });
 * const { revision } = await c.put('greeting', 'hello');
 * await c.compareAndSet('greeting', revision, 'hello again');
 * ```
 */
import { sleep } from './sleep.js';
import { readEvents } from './net/sse.js';
import { deadlineSignal } from './abort.js';
import { randomBytes } from 'node:crypto';
import { PangeaError } from './client-error.js';
import { Election, Lease, Lock, type CallOptions, type LockOptions } from './recipes.js';
import { newActionId, transact, type BlockBody, type BlockRead, type BlockReadRef, type BlockRevisionInfo, type BlockTransform, type TransactFn, type TransactOptions, type TransactResult } from './client-blocks.js';
export type { BlockBody, BlockRead, BlockReadRef, BlockRevisionInfo, BlockTransform, TransactFn, TransactOptions, TransactResult } from './client-blocks.js';
import { Collection, type CollectionInfo } from './client-collections.js';
export { Collection } from './client-collections.js';
export type { CollectionDefinition, CollectionIndexInfo, CollectionInfo, RecordPk, RecordQuery, StoredRecord } from './client-collections.js';

export interface PangeaClientOptions {
  /** HTTP base URLs of nodes, e.g. `http://127.0.0.1:7070`; at least one. */
  readonly endpoints: readonly string[];
  /** Deadline of one attempt (default 10 s, and never past the call's deadline). */
  readonly timeoutMs?: number;
  /** Deadline of one call, its retries included (default 10 s): a call is retried, backing
   *  off with jitter and honouring `Retry-After`, until it is decided or this passes. */
  readonly deadlineMs?: number;
  /** At most this many attempts after the first (default: as many as the deadline allows). */
  readonly retries?: number;
  /** Learn the other members' addresses from `GET /v1/cluster` after the first answer
   *  (default true), so a client given one node rides out that node's loss. */
  readonly discover?: boolean;
  /** The request-id client name (1 to 58 of `[A-Za-z0-9_-]`); random by default. Concurrent
   *  writes use `<clientId>-<n>` for n = 1, 2, … so each name's sequence stays ordered. */
  readonly clientId?: string;
  /** Sent as `Authorization: Bearer` on membership changes. */
  readonly adminToken?: string;
}

/** An error of the contract (`status`, `code`), or of the transport (`status` 0; codes
 *  `unavailable`, `outcome_unknown`, `aborted`, `closed`). */
export { PangeaError } from './client-error.js';

/** Per call: an `AbortSignal` that gives up on it (a write already sent may still apply).
 *  Defined with the recipes, which take it too. */
export type { CallOptions } from './recipes.js';

export type Key = string | Uint8Array;
export type Value = string | Uint8Array;
export type Consistency = 'linearizable' | 'stale';

export interface GetResult {
  readonly value: Uint8Array;
  readonly revision: number;
  /** The applied index the read reflects. */
  readonly index: number;
  /** The lease the key is attached to, if any. */
  readonly lease?: string;
}

export interface Item {
  readonly key: string;
  readonly value: Uint8Array;
  readonly revision: number;
  readonly lease?: string;
}

export interface ListOptions extends CallOptions {
  readonly prefix?: string;
  readonly after?: string;
  readonly limit?: number;
  readonly consistency?: Consistency;
}

export type TxnCompare =
  | { readonly key: string; readonly target: 'value' | 'revision' | 'exists'; readonly op: '==' | '!=' | '<' | '>'; readonly value: Value | number | boolean }
  /** A record's revision (0: absent) or existence (API contract, "Collections"). */
  | { readonly collection: string; readonly pk: string | number; readonly target: 'revision' | 'exists'; readonly op: '==' | '!=' | '<' | '>'; readonly value: number | boolean };

export type TxnOp =
  | { readonly op: 'put'; readonly key: string; readonly value: Value; readonly lease?: string }
  | { readonly op: 'delete' | 'get'; readonly key: string }
  | { readonly op: 'putRecord'; readonly collection: string; readonly pk: string | number; readonly record: { readonly [k: string]: unknown } }
  | { readonly op: 'deleteRecord' | 'getRecord'; readonly collection: string; readonly pk: string | number };

/** A lease as `GET /v1/leases/{id}` shows it. */
export interface LeaseInfo {
  readonly id: string;
  /** Seconds. */
  readonly ttl: number;
  /** In cluster time (log time), as of the read. */
  readonly remainingMs: number;
  readonly keys: number;
}

export interface TxnRequest {
  readonly compare?: readonly TxnCompare[];
  readonly success?: readonly TxnOp[];
  readonly failure?: readonly TxnOp[];
}

export type TxnResult =
  | { readonly revision: number }
  | { readonly deleted: boolean }
  | { readonly value: Uint8Array | null; readonly revision: number | null }
  /** A getRecord's answer. */
  | { readonly record: unknown; readonly revision: number | null };

export interface WatchOptions {
  /** Exactly one of `key`, `prefix` and `blocks` (block ids, up to 100: their changes come
   *  as `type: 'block'`). */
  readonly key?: string;
  readonly prefix?: string;
  readonly blocks?: readonly string[];
  /** A key whose provider records to follow (`type: 'provider'`). */
  readonly providers?: string;
  /** A collection whose records to follow (`type` put or delete, with `collection`, `pk`). */
  readonly collection?: string;
  /** The last index already seen: changes after it come. Default: a linearizable read index. */
  readonly after?: number;
  /** False: puts come without their values. */
  readonly values?: boolean;
  /** Seconds between progress events while quiet; when set, they are yielded too. */
  readonly progressS?: number;
  readonly signal?: AbortSignal;
}

export interface WatchChange {
  readonly type: 'put' | 'delete' | 'block' | 'provider';
  /** Puts, deletes and providers. */
  readonly key: string;
  /** Providers: put or delete, whose record, and its addresses (puts). */
  readonly op?: 'put' | 'delete';
  readonly provider?: string;
  readonly addrs?: readonly string[];
  /** Blocks: the id and its part of the action's transform (`revision` is the index). */
  readonly id?: string;
  readonly transform?: BlockTransform;
  /** Puts, unless `values: false`. */
  readonly value?: Uint8Array;
  readonly revision?: number;
  /** Puts on a lease. */
  readonly lease?: string;
  /** Deletes: a delete command, a txn branch, or a lease's expiry. */
  readonly cause?: 'delete' | 'txn' | 'lease';
  /** Records (a `collection=` watch): the collection, the pk and (puts) the record. */
  readonly collection?: string;
  readonly pk?: string | number;
  readonly record?: unknown;
}

/** One index's changes (`change`), or the index every change up to has been seen (`progress`). */
export interface WatchEvent {
  readonly kind: 'change' | 'progress';
  readonly index: number;
  readonly changes: readonly WatchChange[];
}

interface WireChange {
  readonly type: 'put' | 'delete' | 'block' | 'provider';
  readonly key?: string;
  readonly op?: 'put' | 'delete';
  readonly provider?: string;
  readonly addrs?: string[];
  readonly id?: string;
  readonly transform?: BlockTransform;
  readonly value?: string;
  readonly revision?: number;
  readonly lease?: string;
  readonly cause?: 'delete' | 'txn' | 'lease';
  readonly collection?: string;
  readonly pk?: string | number;
  readonly record?: unknown;
}

function fromWire(c: WireChange): WatchChange {
  if (c.collection !== undefined) {
    return { type: c.type, key: '', collection: c.collection, pk: c.pk!, ...(c.record !== undefined ? { record: c.record } : {}), ...(c.revision !== undefined ? { revision: c.revision } : {}) };
  }
  if (c.type === 'block') return { type: 'block', key: '', id: c.id!, revision: c.revision!, transform: c.transform! };
  if (c.type === 'provider') {
    return { type: 'provider', key: c.key!, op: c.op!, provider: c.provider!, ...(c.addrs ? { addrs: c.addrs } : {}), ...(c.lease ? { lease: c.lease } : {}), ...(c.revision ? { revision: c.revision } : {}), ...(c.cause ? { cause: c.cause } : {}) };
  }
  return {
    type: c.type,
    key: c.key!,
    ...(c.value !== undefined ? { value: fromBase64(c.value) } : {}),
    ...(c.revision !== undefined ? { revision: c.revision } : {}),
    ...(c.lease !== undefined ? { lease: c.lease } : {}),
    ...(c.cause !== undefined ? { cause: c.cause } : {}),
  };
}

export interface Member {
  readonly peerId: string;
  readonly http: string;
  readonly p2p: readonly string[];
  readonly role: 'voter' | 'learner';
}

export interface ClusterInfo {
  readonly clusterId: string;
  readonly self: { readonly peerId: string; readonly http: string; readonly p2p: readonly string[] };
  readonly leader: string | null;
  readonly commitIndex: number;
  readonly appliedIndex: number;
  readonly members: readonly Member[];
  /** The cluster's apply level, and the build of the node that answered (`pangea cluster upgrade`). */
  readonly applyLevel?: number;
  readonly build?: { readonly version: string; readonly levels: readonly [number, number] };
}

/** How a request may be retried. `idempotent`: any failure may be retried (reads, and writes
 *  with a request id). `onlyUnsent`: only failures that show the request was not applied. */
type RetryKind = 'idempotent' | 'onlyUnsent';

interface Attempt {
  readonly method: string;
  readonly path: string;
  readonly body?: Uint8Array | string;
  readonly headers?: Record<string, string>;
  readonly retry: RetryKind;
  /** Statuses that are answers, not errors (404 for a GET). */
  readonly accept?: readonly number[];
  readonly signal?: AbortSignal | undefined;
}

const encoder = new TextEncoder();
/** Backoff between rounds over the endpoints: full jitter up to 50 ms × 2^round, capped. */
const retryDelayMsMax = 1_000;
const retryDelayMsBase = 50;

export class PangeaClient {
  private readonly endpoints: string[];
  private readonly timeoutMs: number;
  private readonly deadlineMs: number;
  private readonly retries: number;
  private readonly discoverOn: boolean;
  private discovered = false;
  /** Aborted by close(): every call in flight gives up, later ones are refused. */
  private readonly closing = new AbortController();
  private readonly clientId: string;
  private readonly adminToken: string | undefined;
  /** The endpoint tried first: the last one that answered. */
  private current = 0;
  /** Request-id names free for a write, and the last sequence of each. */
  private readonly freeSlots: number[] = [];
  private slotCount = 0;
  private lastSeq = 0;

  constructor(opts: PangeaClientOptions) {
    if (opts.endpoints.length === 0) throw new Error('PangeaClient: no endpoints');
    this.endpoints = opts.endpoints.map((e) => e.replace(/\/+$/, ''));
    this.timeoutMs = opts.timeoutMs ?? 10_000;
    this.deadlineMs = opts.deadlineMs ?? 10_000;
    this.retries = opts.retries ?? Number.MAX_SAFE_INTEGER;
    this.discoverOn = opts.discover ?? true;
    this.clientId = opts.clientId ?? randomBytes(12).toString('base64url');
    if (!/^[A-Za-z0-9_-]{1,58}$/.test(this.clientId)) throw new Error('PangeaClient: clientId must be 1 to 58 of [A-Za-z0-9_-]');
    this.adminToken = opts.adminToken;
  }

  /** The value, revision and read index of `key`, or null when it is absent. */
  async get(key: Key, opts: { consistency?: Consistency } & CallOptions = {}): Promise<GetResult | null> {
    const q = opts.consistency ? `?consistency=${opts.consistency}` : '';
    const r = await this.request({ method: 'GET', path: `/v1/kv/${encodeKey(key)}${q}`, retry: 'idempotent', accept: [404], signal: opts.signal });
    if (r.status === 404) return null;
    const lease = r.headers.get('pangea-lease');
    return { value: r.body, revision: Number(etagRevision(r.headers.get('etag'))), index: Number(r.headers.get('pangea-index')), ...(lease === null ? {} : { lease }) };
  }

  /** Writes `value`; `ifMatch` (a revision) or `ifAbsent` make it conditional (412 otherwise);
   *  `lease` attaches the key to a lease (a put without one detaches it). */
  async put(key: Key, value: Value, opts: { ifMatch?: number; ifAbsent?: boolean; lease?: string } & CallOptions = {}): Promise<{ index: number; revision: number }> {
    const headers: Record<string, string> = { 'content-type': 'application/octet-stream' };
    if (opts.ifMatch !== undefined) headers['if-match'] = `"${opts.ifMatch}"`;
    if (opts.ifAbsent) headers['if-none-match'] = '*';
    const q = opts.lease === undefined ? '' : `?lease=${encodeURIComponent(opts.lease)}`;
    return this.json(await this.write({ method: 'PUT', path: `/v1/kv/${encodeKey(key)}${q}`, body: toBytes(value), headers, retry: 'idempotent', signal: opts.signal }));
  }

  async delete(key: Key, opts: { ifMatch?: number } & CallOptions = {}): Promise<{ index: number; deleted: boolean }> {
    const headers: Record<string, string> = {};
    if (opts.ifMatch !== undefined) headers['if-match'] = `"${opts.ifMatch}"`;
    return this.json(await this.write({ method: 'DELETE', path: `/v1/kv/${encodeKey(key)}`, headers, retry: 'idempotent', signal: opts.signal }));
  }

  /** One page of a range scan; continue with `after` = the last key while `more`. */
  async list(opts: ListOptions = {}): Promise<{ items: Item[]; more: boolean; index: number }> {
    const q = [`encoding=base64`];
    if (opts.prefix) q.push(`prefix=${encodeKey(opts.prefix)}`);
    if (opts.after) q.push(`after=${encodeKey(opts.after)}`);
    if (opts.limit !== undefined) q.push(`limit=${opts.limit}`);
    if (opts.consistency) q.push(`consistency=${opts.consistency}`);
    const r = await this.json<{ items: { key: string; value: string; revision: number; lease?: string }[]; more: boolean; index: number }>(
      await this.request({ method: 'GET', path: `/v1/kv?${q.join('&')}`, retry: 'idempotent', signal: opts.signal }),
    );
    const items = r.items.map((i): Item => ({ key: i.key, value: fromBase64(i.value), revision: i.revision, ...(i.lease === undefined ? {} : { lease: i.lease }) }));
    return { items, more: r.more, index: r.index };
  }

  /** Every item under `prefix`, page by page (each page its own read). */
  async *scan(opts: Omit<ListOptions, 'after'> = {}): AsyncGenerator<Item> {
    let after: string | undefined;
    for (;;) {
      const page = await this.list({ ...opts, ...(after !== undefined ? { after } : {}) });
      yield* page.items;
      if (!page.more || page.items.length === 0) return;
      after = page.items[page.items.length - 1]!.key;
    }
  }

  /** An atomic compare-and-then (API.md, Transactions). Values are sent and answered as bytes. */
  async txn(t: TxnRequest, opts: CallOptions = {}): Promise<{ succeeded: boolean; index: number; results: TxnResult[] }> {
    const op = (o: TxnOp): Record<string, unknown> =>
      o.op === 'put' ? { op: 'put', key: o.key, value: toBase64(o.value), ...(o.lease === undefined ? {} : { lease: o.lease }) } : { ...o };
    const body = JSON.stringify({
      encoding: 'base64',
      compare: (t.compare ?? []).map((c) => ('collection' in c ? { ...c } : { key: c.key, target: c.target, op: c.op, value: c.target === 'value' ? toBase64(c.value as Value) : c.value })),
      success: (t.success ?? []).map(op),
      failure: (t.failure ?? []).map(op),
    });
    const r = await this.json<{ succeeded: boolean; index: number; results: Record<string, unknown>[] }>(
      await this.write({ method: 'POST', path: '/v1/txn', body, headers: { 'content-type': 'application/json' }, retry: 'idempotent', signal: opts.signal }),
    );
    const results = r.results.map((x): TxnResult => {
      if ('value' in x) return { value: x.value === null ? null : fromBase64(x.value as string), revision: x.revision as number | null };
      if ('record' in x) return { record: x.record, revision: x.revision as number | null };
      if ('deleted' in x) return { deleted: x.deleted as boolean };
      return { revision: x.revision as number };
    });
    return { succeeded: r.succeeded, index: r.index, results };
  }

  /**
   * Writes `value` only if `key` is at `expectedRevision` (null: only if absent). Answers
   * `{ ok: false, revision }` with the current revision when it is not.
   */
  async compareAndSet(key: Key, expectedRevision: number | null, value: Value, opts: CallOptions = {}): Promise<{ ok: true; index: number; revision: number } | { ok: false; revision: number | null }> {
    try {
      const r = await this.put(key, value, { ...(expectedRevision === null ? { ifAbsent: true } : { ifMatch: expectedRevision }), ...opts });
      return { ok: true, index: r.index, revision: r.revision };
    } catch (e) {
      if (e instanceof PangeaError && e.code === 'precondition_failed') return { ok: false, revision: e.revision ?? null };
      throw e;
    }
  }

  // --- leases (API contract, "Leases") -------------------------------------------------

  /** Grants a lease of `ttlS` seconds (2 to 2,592,000). Retried only when it surely was not
   *  applied (a retry of one that was would grant a second lease, left to expire). */
  async grantLease(ttlS: number, opts: CallOptions = {}): Promise<{ id: string; ttl: number; index: number }> {
    const body = JSON.stringify({ ttl: ttlS });
    return this.json(await this.request({ method: 'POST', path: '/v1/leases', body, headers: { 'content-type': 'application/json' }, retry: 'onlyUnsent', signal: opts.signal }));
  }

  /** Renews a lease to its full TTL; `404 lease_not_found` once it has expired. Safe to retry. */
  async keepAliveLease(id: string, opts: CallOptions = {}): Promise<{ id: string; ttl: number; index: number }> {
    return this.json(await this.request({ method: 'POST', path: `/v1/leases/${encodeURIComponent(id)}/keepalive`, retry: 'idempotent', signal: opts.signal }));
  }

  /** Renews many leases in one request (`POST /v1/leases/keepalive`, up to 10,000): for a
   *  client holding many. Answers the ids renewed and those unknown or expired. */
  async keepAliveLeases(ids: readonly string[], opts: CallOptions = {}): Promise<{ index: number; renewed: string[]; notFound: string[] }> {
    const r = await this.json<{ index: number; items: { id: string; ttl?: number; error?: string }[] }>(
      await this.request({ method: 'POST', path: '/v1/leases/keepalive', body: JSON.stringify({ ids }), headers: { 'content-type': 'application/json' }, retry: 'idempotent', signal: opts.signal }),
    );
    return { index: r.index, renewed: r.items.filter((i) => i.error === undefined).map((i) => i.id), notFound: r.items.filter((i) => i.error !== undefined).map((i) => i.id) };
  }

  /** Revokes a lease, deleting its keys. Safe to retry. */
  async revokeLease(id: string, opts: CallOptions = {}): Promise<{ index: number; revoked: boolean }> {
    return this.json(await this.request({ method: 'DELETE', path: `/v1/leases/${encodeURIComponent(id)}`, retry: 'idempotent', signal: opts.signal }));
  }

  /** A lease's state, or null once it is unknown or expired. */
  async leaseInfo(id: string, opts: CallOptions = {}): Promise<LeaseInfo | null> {
    const r = await this.request({ method: 'GET', path: `/v1/leases/${encodeURIComponent(id)}`, retry: 'idempotent', accept: [404], signal: opts.signal });
    return r.status === 404 ? null : this.json<LeaseInfo>(r);
  }

  /** One page of the live leases, by id. */
  async leases(opts: { after?: string; limit?: number } & CallOptions = {}): Promise<{ items: LeaseInfo[]; more: boolean; index: number }> {
    const q = [...(opts.after ? [`after=${encodeURIComponent(opts.after)}`] : []), ...(opts.limit !== undefined ? [`limit=${opts.limit}`] : [])];
    return this.json(await this.request({ method: 'GET', path: `/v1/leases${q.length > 0 ? `?${q.join('&')}` : ''}`, retry: 'idempotent', signal: opts.signal }));
  }

  /** A lease that keeps itself alive (recipes.ts) until `revoke()` or `close()`. */
  async lease(ttlS: number, opts: CallOptions = {}): Promise<Lease> {
    return Lease.grant(this, ttlS, opts);
  }

  /** A mutex on `name` with fencing revisions (recipes.ts). */
  async lock(name: string, opts: LockOptions = {}): Promise<Lock> {
    return Lock.acquire(this, name, opts);
  }

  /** Leader election on `name` with observation (recipes.ts). */
  elect(name: string): Election {
    return new Election(this, name);
  }

  // --- providers (API contract, "Providers") ---------------------------------------------

  /** Records that `provider` holds `key`, reachable at `addrs`, for as long as `lease` lives.
   *  At most 20 providers a key (`limit_reached`). */
  async putProvider(key: string, p: { provider: string; addrs?: readonly string[]; lease: string }, opts: CallOptions = {}): Promise<{ index: number }> {
    const body = JSON.stringify({ provider: p.provider, addrs: p.addrs ?? [], lease: p.lease });
    return this.json(await this.request({ method: 'PUT', path: `/v1/providers/${encodeKey(key)}`, body, headers: { 'content-type': 'application/json' }, retry: 'idempotent', signal: opts.signal }));
  }

  /** Who provides `key`. */
  async providers(key: string, opts: { consistency?: Consistency } & CallOptions = {}): Promise<{ items: { provider: string; addrs: string[]; lease: string; revision: number }[]; index: number }> {
    const q = opts.consistency ? `?consistency=${opts.consistency}` : '';
    return this.json(await this.request({ method: 'GET', path: `/v1/providers/${encodeKey(key)}${q}`, retry: 'idempotent', signal: opts.signal }));
  }

  /** What `provider` provides, by key (continue with `after` = the last key while `more`). */
  async provided(provider: string, opts: { after?: string; limit?: number } & CallOptions = {}): Promise<{ items: { key: string; addrs: string[]; lease: string; revision: number }[]; more: boolean; index: number }> {
    const q = [`provider=${encodeURIComponent(provider)}`, ...(opts.after === undefined ? [] : [`after=${encodeKey(opts.after)}`]), ...(opts.limit === undefined ? [] : [`limit=${opts.limit}`])];
    return this.json(await this.request({ method: 'GET', path: `/v1/providers?${q.join('&')}`, retry: 'idempotent', signal: opts.signal }));
  }

  async deleteProvider(key: string, provider: string, opts: CallOptions = {}): Promise<{ index: number; deleted: boolean }> {
    return this.json(await this.request({ method: 'DELETE', path: `/v1/providers/${encodeKey(key)}/${encodeURIComponent(provider)}`, retry: 'idempotent', signal: opts.signal }));
  }

  // --- collections (API contract, "Collections") -----------------------------------------

  /** Typed access to collection `name` (src/client-collections.ts). */
  collection<T extends { [k: string]: unknown } = { [k: string]: unknown }>(name: string): Collection<T> {
    return new Collection<T>(name, (a) => this.request(a));
  }

  /** The collections, by name (continue with `after` = the last name while `more`). */
  async collections(opts: { after?: string; limit?: number } & CallOptions = {}): Promise<{ items: Omit<CollectionInfo, 'index'>[]; more: boolean; index: number }> {
    const q = [...(opts.after === undefined ? [] : [`after=${encodeURIComponent(opts.after)}`]), ...(opts.limit === undefined ? [] : [`limit=${opts.limit}`])];
    return this.json(await this.request({ method: 'GET', path: `/v1/collections${q.length ? `?${q.join('&')}` : ''}`, retry: 'idempotent', signal: opts.signal }));
  }

  // --- blocks (API contract, "Blocks") ---------------------------------------------------

  /** Block `id` now, or as of index `at`; null when absent (`revision`: 0, or a tombstone's). */
  async getBlock(id: string, opts: { at?: number; consistency?: Consistency } & CallOptions = {}): Promise<BlockRead> {
    const q = [...(opts.at === undefined ? [] : [`at=${opts.at}`]), ...(opts.consistency ? [`consistency=${opts.consistency}`] : [])];
    const r = await this.request({ method: 'GET', path: `/v1/blocks/${encodeURIComponent(id)}${q.length ? `?${q.join('&')}` : ''}`, retry: 'idempotent', accept: [404], signal: opts.signal });
    const j = this.json<{ revision: number; body?: BlockBody; index: number }>(r);
    return { id, revision: j.revision, body: r.status === 404 ? null : j.body!, deleted: r.status === 404 && j.revision > 0, index: j.index };
  }

  /** Blocks `ids` (up to 1,000) in one consistent read, now or as of index `at`. */
  async getBlocks(ids: readonly string[], opts: { at?: number; consistency?: Consistency } & CallOptions = {}): Promise<{ index: number; items: BlockRead[] }> {
    const body = JSON.stringify({ ids, ...(opts.at === undefined ? {} : { at: opts.at }), ...(opts.consistency ? { consistency: opts.consistency } : {}) });
    const r = await this.json<{ index: number; items: Omit<BlockRead, 'index'>[] }>(await this.request({ method: 'POST', path: '/v1/blocks/get', body, headers: { 'content-type': 'application/json' }, retry: 'idempotent', signal: opts.signal }));
    return { index: r.index, items: r.items.map((i) => ({ ...i, index: r.index })) };
  }

  /** A block's history after revision `after`: each revision's action and transform. */
  async blockRevisions(id: string, opts: { after?: number; limit?: number } & CallOptions = {}): Promise<{ items: BlockRevisionInfo[]; more: boolean; index: number }> {
    const q = [`after=${opts.after ?? 0}`, ...(opts.limit === undefined ? [] : [`limit=${opts.limit}`])];
    return this.json(await this.request({ method: 'GET', path: `/v1/blocks/${encodeURIComponent(id)}/revisions?${q.join('&')}`, retry: 'idempotent', signal: opts.signal }));
  }

  /** Checks `reads` and holds the blocks for `ttl` seconds of cluster time (default 30). A
   *  stale read is a PangeaError `conflict` (its `details.conflicts` carry what was missed),
   *  a held block `pending`. Retried only when it surely was not applied. */
  async pend(a: { actionId?: string; reads: readonly BlockReadRef[]; transform: BlockTransform; ttl?: number }, opts: CallOptions = {}): Promise<{ index: number; actionId: string; expiresAt: number }> {
    const body = JSON.stringify({ actionId: a.actionId ?? newActionId(), reads: a.reads, transform: a.transform, ...(a.ttl === undefined ? {} : { ttl: a.ttl }) });
    return this.json(await this.request({ method: 'POST', path: '/v1/blocks/pend', body, headers: { 'content-type': 'application/json' }, retry: 'onlyUnsent', signal: opts.signal }));
  }

  /** Commits a pended action (`{actionId}`), or pends and commits in one command (`{actionId,
   *  reads, transform}`). Retried only when it surely was not applied. */
  async commit(a: { actionId: string; reads?: readonly BlockReadRef[]; transform?: BlockTransform }, opts: CallOptions = {}): Promise<{ index: number; revisions: Record<string, number> }> {
    const body = JSON.stringify(a.transform === undefined ? { actionId: a.actionId } : { actionId: a.actionId, reads: a.reads ?? [], transform: a.transform });
    return this.json(await this.request({ method: 'POST', path: '/v1/blocks/commit', body, headers: { 'content-type': 'application/json' }, retry: 'onlyUnsent', signal: opts.signal }));
  }

  async cancel(actionId: string, opts: CallOptions = {}): Promise<{ index: number; cancelled: boolean }> {
    return this.json(await this.request({ method: 'POST', path: '/v1/blocks/cancel', body: JSON.stringify({ actionId }), headers: { 'content-type': 'application/json' }, retry: 'onlyUnsent', signal: opts.signal }));
  }

  /**
   * Reads `ids`, asks `fn` for a transform of them, and commits it in one command; on a
   * conflict it rebases (the missed transforms applied to its copies, or the blocks read
   * again) and asks `fn` again, until it commits or `attempts` (default 16) are spent.
   * `fn` returns null to commit nothing. See src/client-blocks.ts.
   */
  transact(ids: readonly string[], fn: TransactFn, opts: TransactOptions = {}): Promise<TransactResult> {
    return transact(this, ids, fn, opts);
  }

  async cluster(): Promise<ClusterInfo> {
    return this.json(await this.request({ method: 'GET', path: '/v1/cluster', retry: 'idempotent' }));
  }

  async members(): Promise<Member[]> {
    return [...(await this.cluster()).members];
  }

  /** Adds a member through the log. Retried only when it surely was not applied. */
  async addMember(m: { peerId: string; http: string; p2p: readonly string[]; role?: 'voter' | 'learner' }): Promise<{ index: number }> {
    const body = JSON.stringify({ peerId: m.peerId, http: m.http, p2p: m.p2p, role: m.role ?? 'voter' });
    return this.json(await this.request({ method: 'POST', path: '/v1/cluster/members', body, headers: { 'content-type': 'application/json', ...this.adminHeaders() }, retry: 'onlyUnsent' }));
  }

  async removeMember(peerId: string): Promise<{ index: number }> {
    return this.json(await this.request({ method: 'DELETE', path: `/v1/cluster/members/${encodeKey(peerId)}`, headers: this.adminHeaders(), retry: 'onlyUnsent' }));
  }

  /** Hands leadership to voter `peerId`; resolves once it leads. Retried only when it surely
   *  was not acted on. */
  async transferLeader(peerId: string): Promise<{ leader: string }> {
    const body = JSON.stringify({ peerId });
    return this.json(await this.request({ method: 'POST', path: '/v1/cluster/leader', body, headers: { 'content-type': 'application/json', ...this.adminHeaders() }, retry: 'onlyUnsent' }));
  }

  /** Raises the cluster's apply level once every member's build applies it (admin); raising
   *  it to where it is already is a no-op, so a retry is safe. */
  async raiseLevel(level: number): Promise<{ index: number; level: number }> {
    const body = JSON.stringify({ level });
    return this.json(await this.request({ method: 'POST', path: '/v1/cluster/level', body, headers: { 'content-type': 'application/json', ...this.adminHeaders() }, retry: 'idempotent' }));
  }

  private adminHeaders(): Record<string, string> {
    return this.adminToken ? { authorization: `Bearer ${this.adminToken}` } : {};
  }

  /** A write with a request id: one name and sequence for all attempts of this call. */
  private async write(a: Attempt): Promise<Answer> {
    const slot = this.freeSlots.pop() ?? this.slotCount++;
    // Sequences grow with time as well, so a restarted client with a fixed id keeps increasing.
    this.lastSeq = Math.max(this.lastSeq + 1, Date.now() * 1000);
    const name = slot === 0 ? this.clientId : `${this.clientId}-${slot}`;
    try {
      return await this.request({ ...a, headers: { ...a.headers, 'pangea-request-id': `${name}:${this.lastSeq}` } });
    } finally {
      this.freeSlots.push(slot);
    }
  }

  /**
   * The changes of a key or a prefix, as the cluster applies them (`GET /v1/watch`), from
   * `after` (exclusive), else from a linearizable read index. On a broken connection, a
   * `503` or an `error` event the node can recover from, it reconnects (through the next
   * endpoint, backing off) with `Last-Event-ID`, so no change is missed or seen twice.
   * Ends when `signal` aborts, the client closes, or the caller stops iterating; throws on
   * `history_unavailable` and on a request the cluster refuses (400).
   *
   * ```ts
   * for await (const ev of client.watch({ prefix: 'config/' })) {
   *   for (const c of ev.changes) console.log(ev.index, c.type, c.key);
   * }
   * ```
   */
  async *watch(opts: WatchOptions): AsyncGenerator<WatchEvent> {
    if ([opts.key, opts.prefix, opts.blocks, opts.providers, opts.collection].filter((x) => x !== undefined).length !== 1) throw new PangeaError(0, 'bad_request', 'watch: give exactly one of key, prefix, blocks, providers and collection');
    const selector = opts.key !== undefined ? `key=${percentEncode(toBytes(opts.key))}` : opts.prefix !== undefined ? `prefix=${percentEncode(toBytes(opts.prefix))}`
      : opts.blocks !== undefined ? `blocks=${opts.blocks.map(encodeURIComponent).join(',')}` : opts.collection !== undefined ? `collection=${encodeURIComponent(opts.collection)}` : `providers=${percentEncode(toBytes(opts.providers!))}`;
    const query = `${selector}&encoding=base64${opts.values === false ? '&values=false' : ''}${opts.progressS !== undefined ? `&progress=${opts.progressS}` : ''}`;
    let after = opts.after ?? null;
    let failures = 0;
    let i = this.current;
    while (!this.closing.signal.aborted && !opts.signal?.aborted) {
      const endpoint = this.endpoints[i % this.endpoints.length]!;
      const conn = new AbortController();
      const stop = (): void => conn.abort();
      this.closing.signal.addEventListener('abort', stop, { once: true });
      opts.signal?.addEventListener('abort', stop, { once: true });
      try {
        const res = await fetch(`${endpoint}/v1/watch?${query}`, { headers: after === null ? {} : { 'last-event-id': String(after) }, signal: conn.signal });
        if (!res.ok) {
          const err = toError(res.status, new Uint8Array(await res.arrayBuffer()));
          if (res.status !== 503 && res.status !== 504) throw err;
        } else {
          if (after === null) after = Number(res.headers.get('pangea-index'));
          for await (const ev of readEvents(res.body!)) {
            failures = 0;
            const d = JSON.parse(ev.data) as { index: number; changes?: WireChange[]; code?: string; message?: string; resumeAfter?: number };
            if (ev.event === 'error') {
              if (d.code === 'history_unavailable') throw new PangeaError(0, d.code, d.message ?? d.code);
              after = d.resumeAfter ?? after;
              break;
            }
            if (ev.event === 'change') {
              after = d.index;
              yield { kind: 'change', index: d.index, changes: (d.changes ?? []).map(fromWire) };
            } else if (ev.event === 'progress') {
              after = d.index;
              if (opts.progressS !== undefined) yield { kind: 'progress', index: d.index, changes: [] };
            }
          }
        }
      } catch (e) {
        if (e instanceof PangeaError) throw e;
        // A broken connection or a stream cut: reconnect below (unless stopping).
      } finally {
        conn.abort();
        this.closing.signal.removeEventListener('abort', stop);
        opts.signal?.removeEventListener('abort', stop);
      }
      if (this.closing.signal.aborted || opts.signal?.aborted) return;
      i++;
      failures++;
      await sleep(Math.random() * Math.min(retryDelayMsMax, retryDelayMsBase * 2 ** Math.min(failures, 10)), opts.signal ?? this.closing.signal).catch(() => undefined);
    }
  }

  /** Gives up every call in flight (a write already sent may still apply) and refuses later
   *  ones. */
  close(): void {
    this.closing.abort();
  }

  /**
   * Sends `a`, moving to the next endpoint on a connection failure, a 503 or (for a retry-safe
   * request) a 504, until it is decided or the call's deadline passes: after each round over
   * the endpoints it backs off with full jitter, and never sooner than a 503's `Retry-After`.
   * A call any of whose attempts may have been applied ends as `outcome_unknown`.
   */
  private async request(a: Attempt): Promise<Answer> {
    if (this.closing.signal.aborted) throw new PangeaError(0, 'closed', 'the client is closed');
    const deadline = Date.now() + this.deadlineMs;
    // This call's own signal, aborted by close() or the caller's; listeners are removed at the
    // end (AbortSignal.any with the long-lived close signal keeps memory per call on Node 20).
    const stopper = new AbortController();
    const stop = stopper.signal;
    const parents = a.signal === undefined ? [this.closing.signal] : [this.closing.signal, a.signal];
    const onAbort = (): void => stopper.abort();
    for (const p of parents) {
      if (p.aborted) stopper.abort();
      else p.addEventListener('abort', onAbort, { once: true });
    }
    try {
      return await this.attempts(a, stop, deadline);
    } finally {
      for (const p of parents) p.removeEventListener('abort', onAbort);
    }
  }

  private async attempts(a: Attempt, stop: AbortSignal, deadline: number): Promise<Answer> {
    let uncertain = false;
    let last: PangeaError | null = null;
    let retryAfterMs = 0;
    for (let attempt = 0; attempt <= this.retries; attempt++) {
      const round = Math.floor(attempt / this.endpoints.length);
      if (attempt > 0 && attempt % this.endpoints.length === 0) {
        const wait = Math.max(retryAfterMs, Math.random() * Math.min(retryDelayMsMax, retryDelayMsBase * 2 ** round));
        retryAfterMs = 0;
        if (Date.now() + wait >= deadline) break;
        await sleep(wait, stop).catch(() => undefined);
      }
      const left = deadline - Date.now();
      if (stop.aborted || (attempt > 0 && left <= 0)) break;
      const i = (this.current + attempt) % this.endpoints.length;
      const endpoint = this.endpoints[i]!;
      const timeout = deadlineSignal(stop, Math.max(1, Math.min(this.timeoutMs, left)));
      let res: Response;
      let body: Uint8Array;
      try {
        try {
          res = await fetch(endpoint + a.path, {
            method: a.method,
            headers: a.headers ?? {},
            ...(a.body !== undefined ? { body: a.body } : {}),
            signal: timeout.signal,
          });
        } catch (e) {
          const unsent = isUnsent(e);
          if (!unsent) uncertain = true;
          last = new PangeaError(0, unsent ? 'unavailable' : 'outcome_unknown', `${endpoint}: ${errorText(e)}`);
          if (!unsent && a.retry === 'onlyUnsent') break;
          continue;
        }
        try {
          body = new Uint8Array(await res.arrayBuffer());
        } catch (e) {
          uncertain = true;
          last = new PangeaError(0, 'outcome_unknown', `${endpoint}: answer cut: ${errorText(e)}`);
          if (a.retry === 'onlyUnsent') break;
          continue;
        }
      } finally {
        timeout.done();
      }
      if (res.ok || a.accept?.includes(res.status)) {
        this.current = i;
        if (this.discoverOn && !this.discovered) void this.discover(endpoint);
        return { status: res.status, headers: res.headers, body };
      }
      const err = toError(res.status, body);
      if (res.status === 503) {
        last = err;
        retryAfterMs = Math.max(retryAfterMs, Math.min(retryDelayMsMax * 5, 1000 * (Number(res.headers.get('retry-after')) || 0)));
        continue;
      }
      if (res.status === 504 && a.retry === 'idempotent') {
        uncertain = true;
        last = err;
        continue;
      }
      this.current = i;
      throw err;
    }
    if (stop.aborted) {
      const why = this.closing.signal.aborted ? 'the client was closed' : 'the call was aborted';
      throw new PangeaError(0, uncertain ? 'outcome_unknown' : this.closing.signal.aborted ? 'closed' : 'aborted', uncertain ? `${why}; an attempt's outcome is unknown` : why);
    }
    if (uncertain && last !== null && last.code !== 'outcome_unknown') {
      throw new PangeaError(last.status, 'outcome_unknown', `an attempt's outcome is unknown; last: ${last.message}`);
    }
    throw last ?? new PangeaError(0, 'unavailable', 'no attempt made');
  }

  /** Adds the members' HTTP addresses, as `endpoint` lists them, to the endpoints. */
  private async discover(endpoint: string): Promise<void> {
    this.discovered = true;
    const timeout = deadlineSignal(this.closing.signal, this.timeoutMs);
    try {
      const res = await fetch(`${endpoint}/v1/cluster`, { signal: timeout.signal });
      const view = (await res.json()) as { members?: { http?: unknown }[] };
      const protocol = new URL(endpoint).protocol;
      for (const m of view.members ?? []) {
        if (typeof m.http !== 'string') continue;
        let url: URL;
        try {
          url = new URL(m.http);
        } catch {
          continue;
        }
        // The same scheme as the endpoints the caller gave (never https down to http), and a
        // host one can reach (a node on 0.0.0.0 without --advertise-http lists that).
        if (url.protocol !== protocol || ['0.0.0.0', '[::]', '::'].includes(url.hostname)) continue;
        const base = m.http.replace(/\/+$/, '');
        if (!this.endpoints.includes(base)) this.endpoints.push(base);
      }
    } catch {
      this.discovered = false; // another time
    } finally {
      timeout.done();
    }
  }

  private json<T>(r: Answer): T {
    return JSON.parse(new TextDecoder().decode(r.body)) as T;
  }
}

interface Answer {
  readonly status: number;
  readonly headers: Headers;
  readonly body: Uint8Array;
}

function toError(status: number, body: Uint8Array): PangeaError {
  try {
    const j = JSON.parse(new TextDecoder().decode(body)) as { error?: { code?: string; message?: string }; revision?: number | null };
    if (j.error && typeof j.error.code === 'string') {
      const { error: _e, ...details } = j;
      return new PangeaError(status, j.error.code, j.error.message ?? j.error.code, status === 412 ? (j.revision ?? null) : undefined, details);
    }
  } catch {
    // not the contract's JSON: a proxy's page, say
  }
  return new PangeaError(status, status === 503 ? 'unavailable' : `http_${status}`, `HTTP ${status}`);
}

/** Whether a fetch failure shows the request never reached a server: refused, unresolved. */
function isUnsent(e: unknown): boolean {
  const cause = (e as { cause?: { code?: string } }).cause;
  const code = cause?.code;
  return code === 'ECONNREFUSED' || code === 'ENOTFOUND' || code === 'EAI_AGAIN' || code === 'EHOSTUNREACH' || code === 'ENETUNREACH' || code === 'UND_ERR_CONNECT_TIMEOUT';
}

function errorText(e: unknown): string {
  const err = e as { message?: string; cause?: { message?: string } };
  return err.cause?.message ? `${err.message}: ${err.cause.message}` : String(err.message ?? e);
}

/** Percent-encodes every byte outside the unreserved set, so the server decodes the same bytes. */
function encodeKey(key: Key): string {
  const bytes = toBytes(key);
  // URL parsers (fetch's included) resolve `.` and `..` segments, escaped or not.
  if ((bytes.byteLength === 1 || bytes.byteLength === 2) && bytes.every((b) => b === 0x2e)) {
    throw new PangeaError(0, 'bad_request', 'the keys "." and ".." cannot be sent in a URL path; use txn() for them');
  }
  return percentEncode(bytes);
}

function percentEncode(bytes: Uint8Array): string {
  let out = '';
  for (const b of bytes) {
    const c = String.fromCharCode(b);
    out += /[A-Za-z0-9\-._~]/.test(c) ? c : `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

function toBytes(v: Value): Uint8Array {
  return typeof v === 'string' ? encoder.encode(v) : v;
}

function toBase64(v: Value): string {
  const b = toBytes(v);
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('base64');
}

function fromBase64(s: string): Uint8Array {
  return new Uint8Array(Buffer.from(s, 'base64'));
}

function etagRevision(etag: string | null): string {
  return etag?.replace(/"/g, '') ?? 'NaN';
}
