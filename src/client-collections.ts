/**
 * `PangeaClient.collection<T>(name)`: typed records (API contract, "Collections") over the
 * client's requests (its endpoints, retries and deadlines). Writes that are safe to repeat
 * (an unconditional put or define, a delete) are retried when their outcome is unknown;
 * conditional ones and appends are retried only when unsent, so that a retry never answers
 * 412 to a write that went through, or appends twice.
 */
import { PangeaError } from './client-error.js';
import type { CallOptions } from './recipes.js';

type Json = string | number | boolean | null | Json[] | { [k: string]: Json };
export type RecordPk = string | number;

export interface CollectionIndexInfo {
  readonly name: string;
  readonly field: string;
  readonly type: 'string' | 'integer' | 'number' | 'boolean';
  readonly unique: boolean;
  readonly state: 'building' | 'ready' | 'failed';
  /** Failed: two records holding the same value. */
  readonly clash?: readonly [RecordPk, RecordPk];
}

export interface CollectionDefinition {
  readonly kind?: 'table' | 'diary';
  readonly schema?: { readonly [k: string]: Json } | boolean;
  readonly primaryKey: { readonly field: string; readonly type: 'string' | 'integer' };
  readonly indexes?: readonly { readonly name: string; readonly field: string; readonly type: 'string' | 'integer' | 'number' | 'boolean'; readonly unique?: boolean }[];
}

export interface CollectionInfo {
  readonly name: string;
  readonly kind: 'table' | 'diary';
  readonly schema: { readonly [k: string]: Json } | boolean;
  readonly primaryKey: { readonly field: string; readonly type: 'string' | 'integer' };
  readonly indexes: readonly CollectionIndexInfo[];
  readonly version: number;
  readonly count: number;
  readonly index: number;
}

export interface StoredRecord<T> {
  readonly pk: RecordPk;
  readonly record: T;
  readonly revision: number;
  readonly lease?: string;
}

export interface RecordQuery {
  /** Records by primary key after this one (exclusive). */
  readonly after?: RecordPk;
  /** Records by this index: `eq`, or `gte` (inclusive) to `lt` (exclusive). */
  readonly index?: string;
  readonly eq?: string | number | boolean;
  readonly gte?: string | number | boolean;
  readonly lt?: string | number | boolean;
  /** The `cursor` of the page before. */
  readonly cursor?: string;
  readonly limit?: number;
  readonly consistency?: 'linearizable' | 'stale';
}

/** What the collection needs of the client: one request, retried as `retry` says. */
export type CollectionRequest = (a: {
  readonly method: string;
  readonly path: string;
  readonly body?: string;
  readonly headers?: Record<string, string>;
  readonly retry: 'idempotent' | 'onlyUnsent';
  readonly accept?: readonly number[];
  readonly signal?: AbortSignal | undefined;
}) => Promise<{ readonly status: number; readonly headers: Headers; readonly body: Uint8Array }>;

const JSON_TYPE = { 'content-type': 'application/json' };
const decoder = new TextDecoder();

export class Collection<T extends { [k: string]: unknown }> {
  private readonly base: string;

  constructor(
    readonly name: string,
    private readonly request: CollectionRequest,
  ) {
    this.base = `/v1/collections/${encodeURIComponent(name)}`;
  }

  /** Defines the collection or changes its definition (`ifVersion`: only over that version;
   *  `ifAbsent`: only if it does not exist). */
  async define(def: CollectionDefinition, opts: { ifVersion?: number; ifAbsent?: boolean } & CallOptions = {}): Promise<{ index: number; version: number }> {
    const headers = { ...JSON_TYPE, ...conditions(opts.ifVersion, opts.ifAbsent) };
    return this.json(await this.request({ method: 'PUT', path: this.base, body: JSON.stringify(def), headers, retry: conditional(opts.ifVersion, opts.ifAbsent), signal: opts.signal }));
  }

  /** The definition, record count and index states; null when there is no such collection. */
  async info(opts: { consistency?: 'linearizable' | 'stale' } & CallOptions = {}): Promise<CollectionInfo | null> {
    const r = await this.request({ method: 'GET', path: `${this.base}${opts.consistency ? `?consistency=${opts.consistency}` : ''}`, retry: 'idempotent', accept: [404], signal: opts.signal });
    return r.status === 404 ? null : this.json<CollectionInfo>(r);
  }

  async drop(opts: CallOptions = {}): Promise<{ index: number; dropped: boolean }> {
    return this.json(await this.request({ method: 'DELETE', path: this.base, retry: 'idempotent', signal: opts.signal }));
  }

  /** Writes `record` under `pk` (which must be its primary key field's value), on `lease`
   *  if given (it goes when the lease ends; a put without one takes it off its lease). */
  async put(pk: RecordPk, record: T, opts: { ifMatch?: number; ifAbsent?: boolean; lease?: string } & CallOptions = {}): Promise<{ index: number; revision: number }> {
    const headers = { ...JSON_TYPE, ...conditions(opts.ifMatch, opts.ifAbsent) };
    const lease = opts.lease === undefined ? '' : `?lease=${encodeURIComponent(opts.lease)}`;
    return this.json(await this.request({ method: 'PUT', path: `${this.recordPath(pk)}${lease}`, body: JSON.stringify(record), headers, retry: conditional(opts.ifMatch, opts.ifAbsent), signal: opts.signal }));
  }

  /** Appends to a diary: the record's pk is the index it lands at. Never repeated by a
   *  retry whose first attempt may have landed (`outcome_unknown` instead). */
  async append(record: T, opts: CallOptions = {}): Promise<{ index: number; pk: number }> {
    return this.json(await this.request({ method: 'POST', path: `${this.base}/records`, body: JSON.stringify(record), headers: JSON_TYPE, retry: 'onlyUnsent', signal: opts.signal }));
  }

  /** The record under `pk`, or null. */
  async get(pk: RecordPk, opts: { consistency?: 'linearizable' | 'stale' } & CallOptions = {}): Promise<(StoredRecord<T> & { index: number }) | null> {
    const r = await this.request({ method: 'GET', path: `${this.recordPath(pk)}${opts.consistency ? `?consistency=${opts.consistency}` : ''}`, retry: 'idempotent', accept: [404], signal: opts.signal });
    if (r.status !== 404) {
      const lease = r.headers.get('pangea-lease');
      return { pk, record: this.json<T>(r), revision: Number(r.headers.get('etag')?.replaceAll('"', '')), index: Number(r.headers.get('pangea-index')), ...(lease === null ? {} : { lease }) };
    }
    const j = this.json<{ error?: { code?: string; message?: string } }>(r);
    if (j.error?.code === 'collection_not_found') throw new PangeaError(404, 'collection_not_found', j.error.message ?? 'no such collection');
    return null;
  }

  async delete(pk: RecordPk, opts: { ifMatch?: number } & CallOptions = {}): Promise<{ index: number; deleted: boolean }> {
    return this.json(await this.request({ method: 'DELETE', path: this.recordPath(pk), headers: conditions(opts.ifMatch, false), retry: conditional(opts.ifMatch, false), signal: opts.signal }));
  }

  /** One page of records, by pk or by an index (go on with `cursor` while `more`). */
  async query(q: RecordQuery = {}, opts: CallOptions = {}): Promise<{ items: StoredRecord<T>[]; more: boolean; cursor: string | null; index: number }> {
    const params: string[] = [];
    for (const k of ['after', 'index', 'eq', 'gte', 'lt', 'cursor', 'limit', 'consistency'] as const) {
      const v = q[k];
      if (v !== undefined) params.push(`${k}=${encodeURIComponent(String(v))}`);
    }
    return this.json(await this.request({ method: 'GET', path: `${this.base}/records${params.length ? `?${params.join('&')}` : ''}`, retry: 'idempotent', signal: opts.signal }));
  }

  /** Every record the query selects, page by page. */
  async *scan(q: Omit<RecordQuery, 'cursor'> = {}, opts: CallOptions = {}): AsyncGenerator<StoredRecord<T>> {
    let cursor: string | undefined;
    for (;;) {
      const page = await this.query({ ...q, ...(cursor === undefined ? {} : { cursor }) }, opts);
      yield* page.items;
      if (!page.more || page.cursor === null) return;
      cursor = page.cursor;
    }
  }

  private recordPath(pk: RecordPk): string {
    if (pk === '.' || pk === '..') throw new PangeaError(0, 'bad_request', 'the primary keys "." and ".." cannot be sent in a URL path');
    return `${this.base}/records/${encodeURIComponent(String(pk))}`;
  }

  private json<R>(r: { readonly body: Uint8Array }): R {
    return JSON.parse(decoder.decode(r.body)) as R;
  }
}

function conditions(ifMatch: number | undefined, ifAbsent: boolean | undefined): Record<string, string> {
  return { ...(ifMatch !== undefined ? { 'if-match': `"${ifMatch}"` } : {}), ...(ifAbsent ? { 'if-none-match': '*' } : {}) };
}

function conditional(ifMatch: number | undefined, ifAbsent: boolean | undefined): 'idempotent' | 'onlyUnsent' {
  return ifMatch !== undefined || ifAbsent ? 'onlyUnsent' : 'idempotent';
}
