/**
 * The collections endpoints (API contract, "Collections"): definitions, records by primary
 * key, queries by pk or index, each write one log command (state/records.ts, apply level 3).
 * Definitions and records are judged here as apply judges them (collections.ts), so a
 * malformed one is `400` before anything is proposed; the schema is applied at apply, where
 * the definition in force at that index is known.
 *
 * - `GET /v1/collections[?after=&limit=]`, `GET|PUT|DELETE /v1/collections/{c}`;
 * - `GET /v1/collections/{c}/records?after=PK | index=I&(eq=V | gte=V&lt=W)`, `limit`,
 *   `cursor` -> `{"items":[{"pk","record","revision"}],"more","cursor","index"}`;
 * - `POST /v1/collections/{c}/records` (a diary's append) -> `{"index","pk"}`;
 * - `GET|PUT|DELETE /v1/collections/{c}/records/{pk}` (GET answers the record itself, its
 *   revision in `ETag`, its lease in `Pangea-Lease`).
 */
import canonicalize from 'canonicalize';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ApplyResult, CollectionCmd } from '../state/command.js';
import { CollectionError, checkCollectionName, checkPk, parseDefinition, type CollectionDef, type IndexType, type Pk } from '../state/collections.js';
import { collectionInfo, definitionOf, getRecord, indexKeyPart, readMeta, listCollections, recordsByIndex, recordsByPk, type CollectionMeta, type IndexMeta, type StoredRecord } from '../state/records.js';
import type { StateTables } from '../state/staged.js';
import { HttpError, badRequest, parseConsistency, parseIfMatch, parseLeaseId, parseIfNoneMatch, parseQuery, percentDecode, utf8Text } from './http-parse.js';
import type { ModelHttpDeps } from './http-models.js';

const LIMIT_DEFAULT = 100;
const LIMIT_MAX = 10_000;
/** Characters of records one page holds at most past its first (a record is up to 1 MiB). */
export const PAGE_BYTES_MAX = 4 * 1024 * 1024;

export interface CollectionHttpDeps<C> extends ModelHttpDeps<C> {
  /** The state's tables, read as records.ts reads them. */
  readonly tables: () => StateTables;
  readonly write: (op: CollectionCmd) => Promise<ApplyResult>;
}

const notAllowed = (method: string, allow: string): HttpError => new HttpError(405, 'method_not_allowed', `${method} is not allowed here`, {}, { allow });
const notFound = (name: string): HttpError => new HttpError(404, 'collection_not_found', `no collection ${name}`);

function judged<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof CollectionError) throw e.code === 'schema_violation' ? new HttpError(422, 'schema_violation', e.message, { errors: e.errors }) : e.code === 'invalid_operation' ? new HttpError(422, 'invalid_operation', e.message) : badRequest(e.message);
    throw e;
  }
}

/** A query parameter's text (parseQuery leaves values percent-encoded). */
function param(q: Map<string, string>, name: string): string | undefined {
  const raw = q.get(name);
  return raw === undefined ? undefined : utf8Text(percentDecode(raw, name), name);
}

const b64 = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('base64url');

export class CollectionHttp<C extends { readonly req: IncomingMessage; readonly res: ServerResponse }> {
  constructor(private readonly d: CollectionHttpDeps<C>) {}

  /** `/v1/collections` (rest null) or `/v1/collections/<rest>`. */
  route(ctx: C, method: string, rest: string | null, query: string): Promise<void> {
    if (rest === null) {
      if (method !== 'GET') throw notAllowed(method, 'GET');
      return this.list(ctx, query);
    }
    const parts = rest.split('/');
    const name = judged(() => checkCollectionName(parts[0]));
    if (parts.length === 1) {
      if (method === 'GET') return this.get(ctx, name, query);
      if (method === 'PUT') return this.define(ctx, name);
      if (method === 'DELETE') return this.drop(ctx, name);
      throw notAllowed(method, 'GET, PUT, DELETE');
    }
    if (parts[1] !== 'records' || parts.length > 3) throw new HttpError(404, 'not_found', 'no such path: /v1/collections/{c}, /v1/collections/{c}/records[/{pk}]');
    if (parts.length === 2) {
      if (method === 'GET') return this.query(ctx, name, query);
      if (method === 'POST') return this.append(ctx, name);
      throw notAllowed(method, 'GET, POST');
    }
    const rawPk = utf8Text(percentDecode(parts[2]!, 'pk'), 'pk');
    if (method === 'GET') return this.getRecord(ctx, name, rawPk, query);
    if (method === 'PUT') return this.putRecord(ctx, name, rawPk, query);
    if (method === 'DELETE') return this.deleteRecord(ctx, name, rawPk);
    throw notAllowed(method, 'GET, PUT, DELETE');
  }

  /** The collection as this node has applied it; for a write, one this node has not seen
   *  yet is looked for again after a linearizable read (a lagging follower). */
  private async meta(name: string, write: boolean): Promise<{ meta: CollectionMeta; def: CollectionDef }> {
    let meta = readMeta(this.d.tables(), name);
    if (meta === undefined && write) {
      await this.d.read('linearizable');
      meta = readMeta(this.d.tables(), name);
    }
    if (meta === undefined) throw notFound(name);
    return { meta, def: judged(() => definitionOf(this.d.tables(), meta!)) };
  }

  private async list(ctx: C, query: string): Promise<void> {
    const q = parseQuery(query);
    const after = param(q, 'after');
    if (after !== undefined && after !== '') judged(() => checkCollectionName(after));
    const limit = parseLimit(q.get('limit'));
    await this.d.read(parseConsistency(q.get('consistency')));
    const index = this.d.applied();
    const { items, more } = listCollections(this.d.tables(), after === undefined || after === '' ? null : after, limit);
    const t = this.d.tables();
    this.d.send(ctx.res, 200, { items: items.map((m) => describe(m, collectionInfo(t, m.name)!.definition)), more, index }, { 'pangea-index': String(index) });
  }

  private async get(ctx: C, name: string, query: string): Promise<void> {
    await this.d.read(parseConsistency(parseQuery(query).get('consistency')));
    const index = this.d.applied();
    const info = collectionInfo(this.d.tables(), name);
    if (info === undefined) throw notFound(name);
    this.d.send(ctx.res, 200, { ...describe(info.meta, info.definition), index }, { etag: `"${info.meta.version}"`, 'pangea-index': String(index) });
  }

  private async define(ctx: C, name: string): Promise<void> {
    if (name.startsWith('_')) throw badRequest('collection names starting with _ are reserved');
    const ifVersion = parseIfMatch(header(ctx.req, 'if-match'));
    const ifAbsent = parseIfNoneMatch(header(ctx.req, 'if-none-match'));
    if (ifVersion !== undefined && ifAbsent) throw badRequest('give If-Match or If-None-Match, not both');
    const body = await this.d.readJson(ctx);
    judged(() => parseDefinition(body));
    const r = await this.d.write({ t: 'collection_define', name, definition: canonicalize(body) as string, ...(ifVersion !== undefined ? { ifVersion } : {}), ...(ifAbsent ? { ifAbsent } : {}) });
    if (r.kind !== 'collection_defined') return this.refused(ctx, r);
    this.d.send(ctx.res, 200, { index: r.index, version: r.version }, { etag: `"${r.version}"`, 'pangea-index': String(r.index) });
  }

  private async drop(ctx: C, name: string): Promise<void> {
    await this.d.readNothing(ctx);
    const r = await this.d.write({ t: 'collection_drop', name });
    if (r.kind !== 'collection_dropped') return this.refused(ctx, r);
    this.d.send(ctx.res, 200, { index: r.index, dropped: r.dropped }, { 'pangea-index': String(r.index) });
  }

  private async getRecord(ctx: C, name: string, rawPk: string, query: string): Promise<void> {
    await this.d.read(parseConsistency(parseQuery(query).get('consistency')));
    const index = this.d.applied();
    const { meta, def } = await this.meta(name, false);
    const pk = parsePk(def, rawPk);
    const r = getRecord(this.d.tables(), meta, pk);
    if (r === undefined) throw new HttpError(404, 'not_found', `no record ${JSON.stringify(String(pk).slice(0, 80))} in ${name}`, { index });
    // The record itself (API contract); its revision in the ETag, its lease in Pangea-Lease.
    this.d.sendJsonText(ctx.res, 200, r.record, { etag: `"${r.revision}"`, 'pangea-index': String(index), ...(r.lease === undefined ? {} : { 'pangea-lease': String(r.lease) }) });
  }

  private async putRecord(ctx: C, name: string, rawPk: string, query: string): Promise<void> {
    const leaseRaw = parseQuery(query).get('lease');
    const lease = leaseRaw === undefined ? undefined : parseLeaseId(leaseRaw, 'lease');
    const ifMatch = parseIfMatch(header(ctx.req, 'if-match'));
    const ifAbsent = parseIfNoneMatch(header(ctx.req, 'if-none-match'));
    if (ifMatch !== undefined && ifAbsent) throw badRequest('give If-Match or If-None-Match, not both');
    const body = await this.d.readJson(ctx);
    const { def } = await this.meta(name, true);
    if (def.kind === 'diary') throw new HttpError(422, 'invalid_operation', `${name} is a diary: POST /v1/collections/${name}/records appends`);
    const pk = parsePk(def, rawPk);
    if (!Object.hasOwn(body, def.primaryKey.field)) throw badRequest(`the record has no ${def.primaryKey.field} (its primary key)`);
    if (body[def.primaryKey.field] !== pk) throw badRequest(`the record's ${def.primaryKey.field} is not the path's primary key`);
    const r = await this.d.write({ t: 'record_put', collection: name, pk, record: canonicalize(body) as string, ...(ifMatch !== undefined ? { ifMatch } : {}), ...(ifAbsent ? { ifAbsent } : {}), ...(lease !== undefined ? { lease } : {}) });
    if (r.kind !== 'record_put') return this.refused(ctx, r);
    this.d.send(ctx.res, 200, { index: r.index, revision: r.revision }, { etag: `"${r.revision}"`, 'pangea-index': String(r.index) });
  }

  private async append(ctx: C, name: string): Promise<void> {
    const body = await this.d.readJson(ctx);
    const r = await this.d.write({ t: 'record_append', collection: name, record: canonicalize(body) as string });
    if (r.kind !== 'record_appended') return this.refused(ctx, r);
    this.d.send(ctx.res, 200, { index: r.index, pk: r.pk }, { 'pangea-index': String(r.index) });
  }

  private async deleteRecord(ctx: C, name: string, rawPk: string): Promise<void> {
    const ifMatch = parseIfMatch(header(ctx.req, 'if-match'));
    if (header(ctx.req, 'if-none-match') !== undefined) throw badRequest('If-None-Match does not apply to DELETE');
    await this.d.readNothing(ctx);
    const { def } = await this.meta(name, true);
    const pk = parsePk(def, rawPk);
    const r = await this.d.write({ t: 'record_delete', collection: name, pk, ...(ifMatch !== undefined ? { ifMatch } : {}) });
    if (r.kind !== 'record_deleted') return this.refused(ctx, r);
    this.d.send(ctx.res, 200, { index: r.index, deleted: r.deleted }, { 'pangea-index': String(r.index) });
  }

  private async query(ctx: C, name: string, query: string): Promise<void> {
    const q = parseQuery(query);
    const limit = parseLimit(q.get('limit'));
    const cursorRaw = q.get('cursor');
    let cursor: Uint8Array | undefined;
    if (cursorRaw !== undefined && cursorRaw !== '') {
      if (!/^[A-Za-z0-9_-]{1,2600}$/.test(cursorRaw)) throw badRequest('cursor: the cursor a page returned');
      cursor = new Uint8Array(Buffer.from(cursorRaw, 'base64url'));
    }
    await this.d.read(parseConsistency(q.get('consistency')));
    const index = this.d.applied();
    const { meta, def } = await this.meta(name, false);
    const t = this.d.tables();
    const indexName = param(q, 'index');
    let page: { items: StoredRecord[]; more: boolean; cursor: string | null };
    if (indexName === undefined) {
      for (const k of ['eq', 'gte', 'lt']) if (q.has(k)) throw badRequest(`${k} needs index=`);
      const afterRaw = param(q, 'after');
      if (afterRaw !== undefined && cursor !== undefined) throw badRequest('give after or cursor, not both');
      const after = cursor !== undefined ? parsePk(def, Buffer.from(cursor).toString('utf8'), 'cursor') : afterRaw === undefined || afterRaw === '' ? null : parsePk(def, afterRaw, 'after');
      const r = recordsByPk(t, meta, after, limit, PAGE_BYTES_MAX);
      const last = r.items[r.items.length - 1];
      page = { items: r.items, more: r.more, cursor: r.more && last !== undefined ? b64(Buffer.from(String(last.pk))) : null };
    } else {
      if (q.has('after')) throw badRequest('after pages by primary key: with index=, use cursor');
      const x = meta.indexes.find((y) => y.def.name === indexName);
      if (x === undefined) throw badRequest(`${name} has no index ${JSON.stringify(indexName.slice(0, 64))}`);
      if (x.state !== 'ready') throw new HttpError(409, 'index_not_ready', `index ${x.def.name} is ${x.state}${x.why ? `: ${x.why}` : ''}${x.clash ? ` (${JSON.stringify(x.clash[0])} and ${JSON.stringify(x.clash[1])})` : ''}`, { state: x.state });
      const eq = param(q, 'eq');
      const gte = param(q, 'gte');
      const lt = param(q, 'lt');
      if (eq !== undefined && (gte !== undefined || lt !== undefined)) throw badRequest('give eq, or gte and lt, not both');
      const r = recordsByIndex(t, meta, x, {
        ...(eq !== undefined ? { eq: parseValue(x, eq, 'eq') } : {}),
        ...(gte !== undefined ? { gte: parseValue(x, gte, 'gte') } : {}),
        ...(lt !== undefined ? { lt: parseValue(x, lt, 'lt') } : {}),
        ...(cursor !== undefined ? { cursor } : {}),
        limit,
        bytesMax: PAGE_BYTES_MAX,
      });
      page = { items: r.items, more: r.more, cursor: r.cursor === null ? null : b64(r.cursor) };
    }
    // Records are stored as canonical JSON: spliced in as they are.
    const items = page.items.map((r) => `{"pk":${JSON.stringify(r.pk)},"record":${r.record},"revision":${r.revision}${r.lease === undefined ? '' : `,"lease":"${r.lease}"`}}`);
    this.d.sendJsonText(ctx.res, 200, `{"items":[${items.join(',')}],"more":${page.more},"cursor":${JSON.stringify(page.cursor)},"index":${index}}`, { 'pangea-index': String(index) });
  }

  /** The contract's error (http.ts sendApplyError maps the collections' refusals too). */
  private refused(ctx: C, r: ApplyResult): never {
    return this.d.refused(ctx, r);
  }
}

function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

function parseLimit(raw: string | undefined): number {
  if (raw === undefined) return LIMIT_DEFAULT;
  if (!/^[1-9][0-9]{0,4}$/.test(raw) || Number(raw) > LIMIT_MAX) throw badRequest(`limit must be 1 to ${LIMIT_MAX}`);
  return Number(raw);
}

/** A pk from the path or a query: an integer pk in decimal. */
function parsePk(def: CollectionDef, raw: string, what = 'the primary key'): Pk {
  if (def.primaryKey.type === 'integer') {
    if (!/^-?(0|[1-9][0-9]{0,15})$/.test(raw) || !Number.isSafeInteger(Number(raw))) throw badRequest(`${what}: a safe integer, in decimal`);
    return judged(() => checkPk(def, Number(raw)));
  }
  return judged(() => checkPk(def, raw));
}

/** An index value from a query, as the index's type reads it. */
function parseValue(x: IndexMeta, raw: string, what: string): boolean | number | string {
  const type: IndexType = x.def.type;
  // No stored value is longer (and a longer one made the range read throw: helper-49).
  if (type === 'string') {
    if (Buffer.byteLength(raw) > 1024 || indexKeyPart(raw).byteLength > 1900) throw badRequest(`${what}: at most 1024 bytes (index ${x.def.name} holds none longer)`);
    return raw;
  }
  if (type === 'boolean') {
    if (raw !== 'true' && raw !== 'false') throw badRequest(`${what}: true or false (index ${x.def.name} is boolean)`);
    return raw === 'true';
  }
  const n = raw.trim() === '' ? NaN : Number(raw);
  if (type === 'integer' ? !Number.isSafeInteger(n) : !Number.isFinite(n)) throw badRequest(`${what}: a${type === 'integer' ? ' safe integer' : ' finite number'} (index ${x.def.name})`);
  return n;
}

function describe(m: CollectionMeta, definition: string): Record<string, unknown> {
  const def = JSON.parse(definition) as { kind: string; schema: unknown; primaryKey: unknown };
  return {
    name: m.name,
    kind: def.kind,
    schema: def.schema,
    primaryKey: def.primaryKey,
    indexes: m.indexes.map((x) => ({ ...x.def, state: x.state, ...(x.clash ? { clash: x.clash } : {}), ...(x.why ? { why: x.why } : {}) })),
    version: m.version,
    count: m.count,
  };
}
