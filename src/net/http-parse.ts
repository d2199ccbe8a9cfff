/**
 * Parsing and validation of client requests (API.md), kept free of I/O: keys from paths,
 * query parameters, conditional headers, request ids, transaction JSON, and the canonical
 * digest a request id is checked against. Everything malformed throws `HttpError`.
 */
import { wellFormed } from '../text.js';
import { peerIdFromString } from '@libp2p/peer-id';
import { multiaddr } from '@multiformats/multiaddr';
import { createHash } from 'node:crypto';
import { KEY_BYTES_MAX, LEASE_KEEPALIVE_IDS_MAX, LEASE_TTL_MS_MAX, LEASE_TTL_MS_MIN, isRecordTxnOp, type Compare, type KvOp, type RecordCompare, type TxnOp } from '../state/command.js';
import canonicalize from 'canonicalize';
import { BLOCK_ID } from '../state/blocks.js';

/** The longest key, in bytes of UTF-8 (API.md): the state machine's own limit. */
/** The largest `limit` of a range request, and its default. */
export const rangeLimitMax = 10_000;
export const rangeLimitDefault = 100;

/** An answer that is an error of the contract: `{"error": {"code", "message"}}` with `status`. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    /** Extra top-level fields of the body (412 carries `revision`). */
    readonly extra: Record<string, unknown> = {},
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

export const badRequest = (message: string): HttpError => new HttpError(400, 'bad_request', message);
export const tooLarge = (message: string): HttpError => new HttpError(413, 'payload_too_large', message);

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const encoder = new TextEncoder();

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  return -1;
}

/**
 * Percent-decodes a raw path segment or query value into bytes. `+` stays a plus; a `%` not
 * followed by two hex digits is an error. Node hands raw non-ASCII bytes of the request line
 * over as latin1 characters, so each character below 256 is one byte.
 */
export function percentDecode(raw: string, what: string): Uint8Array {
  if (!raw.includes('%')) {
    let ascii = true;
    for (let i = 0; i < raw.length; i++) if (raw.charCodeAt(i) > 0x7f) { ascii = false; break; }
    if (ascii) return Buffer.from(raw, 'latin1');
  }
  const out = Buffer.allocUnsafe(raw.length);
  let n = 0;
  for (let i = 0; i < raw.length; i++) {
    const c = raw.charCodeAt(i);
    if (c === 0x25) {
      const ok = i + 2 < raw.length;
      const hi = ok ? hexValue(raw.charCodeAt(i + 1)) : -1;
      const lo = ok ? hexValue(raw.charCodeAt(i + 2)) : -1;
      if (hi < 0 || lo < 0) throw badRequest(`${what}: bad percent-escape at offset ${i}`);
      out[n++] = hi * 16 + lo;
      i += 2;
    } else if (c > 0xff) {
      throw badRequest(`${what}: not a byte string`);
    } else {
      out[n++] = c;
    }
  }
  return out.subarray(0, n);
}

/** Checks that `bytes` are UTF-8 and returns them as a string. */
export function utf8Text(bytes: Uint8Array, what: string): string {
  try {
    return utf8.decode(bytes);
  } catch {
    throw badRequest(`${what}: not valid UTF-8`);
  }
}

export function checkKeyBytes(bytes: Uint8Array, what: string): Uint8Array {
  if (bytes.byteLength === 0) throw badRequest(`${what}: empty key`);
  if (bytes.byteLength > KEY_BYTES_MAX) throw badRequest(`${what}: key of ${bytes.byteLength} bytes, over ${KEY_BYTES_MAX}`);
  utf8Text(bytes, what);
  return bytes;
}

/** The key of `/v1/kv/{key}`: percent-decoded, 1 to 1024 bytes of UTF-8. */
export function parsePathKey(raw: string): Uint8Array {
  return checkKeyBytes(percentDecode(raw, 'key'), 'key');
}

/** A key given as a JSON string (transactions). */
export function jsonKey(v: unknown, what: string): Uint8Array {
  if (typeof v !== 'string') throw badRequest(`${what}: key must be a string`);
  return checkKeyBytes(encoder.encode(v), what);
}

/**
 * The query string as a map of raw (still percent-encoded) values. A repeated parameter is
 * an error: which one wins would otherwise be a guess.
 */
export function parseQuery(query: string): Map<string, string> {
  const out = new Map<string, string>();
  if (query === '') return out;
  for (const part of query.split('&')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    const name = eq < 0 ? part : part.slice(0, eq);
    const value = eq < 0 ? '' : part.slice(eq + 1);
    if (out.has(name)) throw badRequest(`query: parameter ${name} given twice`);
    out.set(name, value);
  }
  return out;
}

export type Encoding = 'utf8' | 'base64';

export function parseConsistency(raw: string | undefined): 'linearizable' | 'stale' {
  if (raw === undefined || raw === 'linearizable') return 'linearizable';
  if (raw === 'stale') return 'stale';
  throw badRequest('consistency must be linearizable or stale');
}

export function parseEncoding(raw: unknown): Encoding {
  if (raw === undefined || raw === 'utf8') return 'utf8';
  if (raw === 'base64') return 'base64';
  throw badRequest('encoding must be utf8 or base64');
}

export interface RangeQuery {
  readonly prefix: Uint8Array;
  readonly after: Uint8Array | null;
  readonly limit: number;
  readonly encoding: Encoding;
  readonly consistency: 'linearizable' | 'stale';
}

/** `GET /v1/kv?prefix=P&after=K&limit=L&encoding=E&consistency=C`; unknown parameters are ignored. */
export function parseRangeQuery(query: string): RangeQuery {
  const q = parseQuery(query);
  const prefix = percentDecode(q.get('prefix') ?? '', 'prefix');
  if (prefix.byteLength > KEY_BYTES_MAX) throw badRequest(`prefix over ${KEY_BYTES_MAX} bytes`);
  utf8Text(prefix, 'prefix');
  const afterRaw = q.get('after');
  const after = afterRaw === undefined || afterRaw === '' ? null : checkKeyBytes(percentDecode(afterRaw, 'after'), 'after');
  return { prefix, after, limit: parseLimit(q.get('limit')), encoding: parseEncoding(q.get('encoding')), consistency: parseConsistency(q.get('consistency')) };
}

/** A page's `limit`: 1 to rangeLimitMax, rangeLimitDefault when absent. */
function parseLimit(raw: string | undefined): number {
  if (raw === undefined) return rangeLimitDefault;
  if (!/^[1-9][0-9]{0,5}$/.test(raw) || Number(raw) > rangeLimitMax) throw badRequest(`limit must be an integer from 1 to ${rangeLimitMax}`);
  return Number(raw);
}

export interface WatchQuery {
  /** Exactly one of the three. */
  readonly key: Uint8Array | null;
  readonly prefix: Uint8Array | null;
  /** Block ids (API contract, "Blocks"), up to WATCH_BLOCKS_MAX. */
  readonly blocks: readonly string[] | null;
  /** A key whose provider records the stream follows (API contract, "Providers"). */
  readonly providers: Uint8Array | null;
  /** A collection whose records the stream follows (API contract, "Collections"). */
  readonly collection: string | null;
  /** Exclusive start; null: from a linearizable read index. */
  readonly after: number | null;
  readonly values: boolean;
  readonly encoding: Encoding;
  readonly progressMs: number;
}

/** Block ids one watch may name (API contract). */
export const WATCH_BLOCKS_MAX = 100;

/** Most seconds between progress events a watcher may ask for. */
export const watchProgressSecondsMax = 3600;

/** `GET /v1/watch?key=K|prefix=P&after=N&values=&encoding=&progress=S`, with `Last-Event-ID`
 *  (overriding `after`) from the header. */
export function parseWatchQuery(query: string, lastEventId: string | undefined): WatchQuery {
  const q = parseQuery(query);
  const keyRaw = q.get('key');
  const prefixRaw = q.get('prefix');
  const blocksRaw = q.get('blocks');
  const providersRaw = q.get('providers');
  const collectionRaw = q.get('collection');
  if ([keyRaw, prefixRaw, blocksRaw, providersRaw, collectionRaw].filter((x) => x !== undefined).length !== 1) throw badRequest('a watch takes exactly one of key, prefix, blocks, providers and collection');
  if (collectionRaw !== undefined && !/^[a-z0-9_-]{1,64}$/.test(collectionRaw)) throw badRequest('collection: a collection name is 1 to 64 of [a-z0-9_-]');
  const collection = collectionRaw ?? null;
  const providers = providersRaw === undefined ? null : checkKeyBytes(percentDecode(providersRaw, 'providers'), 'providers');
  let blocks: string[] | null = null;
  if (blocksRaw !== undefined) {
    blocks = [...new Set(blocksRaw.split(','))];
    if (blocks.length > WATCH_BLOCKS_MAX) throw badRequest(`blocks: at most ${WATCH_BLOCKS_MAX} ids`);
    for (const id of blocks) if (!BLOCK_ID.test(id)) throw badRequest(`blocks: ${JSON.stringify(id.slice(0, 80))} is not a block id (1 to 256 of [A-Za-z0-9._~-])`);
  }
  const key = keyRaw === undefined ? null : checkKeyBytes(percentDecode(keyRaw, 'key'), 'key');
  let prefix: Uint8Array | null = null;
  if (prefixRaw !== undefined) {
    prefix = percentDecode(prefixRaw, 'prefix');
    if (prefix.byteLength > KEY_BYTES_MAX) throw badRequest(`prefix over ${KEY_BYTES_MAX} bytes`);
    utf8Text(prefix, 'prefix');
  }
  const index = (raw: string, what: string): number => {
    if (!/^(0|[1-9][0-9]{0,15})$/.test(raw.trim()) || !Number.isSafeInteger(Number(raw))) throw badRequest(`${what} must be a log index (a non-negative integer)`);
    return Number(raw);
  };
  const afterRaw = q.get('after');
  let after = afterRaw === undefined || afterRaw === '' ? null : index(afterRaw, 'after');
  if (lastEventId !== undefined && lastEventId.trim() !== '') after = index(lastEventId, 'Last-Event-ID');
  const valuesRaw = q.get('values');
  if (valuesRaw !== undefined && valuesRaw !== 'true' && valuesRaw !== 'false') throw badRequest('values must be true or false');
  let progressMs = 5_000;
  const progressRaw = q.get('progress');
  if (progressRaw !== undefined) {
    if (!/^[1-9][0-9]{0,3}$/.test(progressRaw) || Number(progressRaw) > watchProgressSecondsMax) throw badRequest(`progress must be whole seconds from 1 to ${watchProgressSecondsMax}`);
    progressMs = Number(progressRaw) * 1000;
  }
  return { key, prefix, blocks, providers, collection, after, values: valuesRaw !== 'false', encoding: parseEncoding(q.get('encoding')), progressMs };
}

/** A lease id: its grant's index, in decimal (a string in JSON, as etcd's gateway sends). */
export function parseLeaseId(raw: unknown, what: string): number {
  if (typeof raw !== 'string' || !/^[1-9][0-9]{0,15}$/.test(raw) || !Number.isSafeInteger(Number(raw))) throw badRequest(`${what} must be a lease id (a positive decimal integer)`);
  return Number(raw);
}

/** `POST /v1/leases/keepalive`: `{"ids": ["<id>", ...]}`, 1 to LEASE_KEEPALIVE_IDS_MAX. */
export function parseLeaseIds(body: Record<string, unknown>): number[] {
  fields(body, ['ids'], 'keepalive');
  const ids = body.ids;
  if (!Array.isArray(ids) || ids.length < 1 || ids.length > LEASE_KEEPALIVE_IDS_MAX) throw badRequest(`ids must be a list of 1 to ${LEASE_KEEPALIVE_IDS_MAX} lease ids`);
  return ids.map((id, i) => parseLeaseId(id, `ids[${i}]`));
}

/** `PUT /v1/kv/{key}?lease=ID`; unknown parameters are ignored. */
export function parsePutQuery(query: string): { lease?: number } {
  const raw = parseQuery(query).get('lease');
  return raw === undefined ? {} : { lease: parseLeaseId(raw, 'lease') };
}

/** `POST /v1/leases`: `{"ttl": seconds}`, whole seconds from 2 to 2,592,000 (30 days). */
export function parseLeaseGrant(body: Record<string, unknown>): { ttlMs: number } {
  fields(body, ['ttl'], 'lease');
  const ttl = body.ttl;
  if (typeof ttl !== 'number' || !Number.isSafeInteger(ttl) || ttl * 1000 < LEASE_TTL_MS_MIN || ttl * 1000 > LEASE_TTL_MS_MAX) {
    throw badRequest(`ttl must be whole seconds from ${LEASE_TTL_MS_MIN / 1000} to ${LEASE_TTL_MS_MAX / 1000}`);
  }
  return { ttlMs: ttl * 1000 };
}

/** `GET /v1/leases?after=ID&limit=L` (limit as in range). */
export function parseLeaseListQuery(query: string): { after: number; limit: number } {
  const q = parseQuery(query);
  const afterRaw = q.get('after');
  const after = afterRaw === undefined || afterRaw === '' ? 0 : parseLeaseId(afterRaw, 'after');
  return { after, limit: parseLimit(q.get('limit')) };
}

/** `If-Match: "<revision>"`: exactly one quoted decimal. */
export function parseIfMatch(header: string | undefined): number | undefined {
  if (header === undefined) return undefined;
  const m = /^\s*"(0|[1-9][0-9]{0,15})"\s*$/.exec(header);
  if (!m || !Number.isSafeInteger(Number(m[1]))) throw badRequest('If-Match must be one quoted decimal revision, like "42"');
  return Number(m[1]);
}

/** `If-None-Match: *` (only if absent); anything else is malformed. */
export function parseIfNoneMatch(header: string | undefined): boolean {
  if (header === undefined) return false;
  if (header.trim() === '*') return true;
  throw badRequest('If-None-Match supports only *');
}

/** `Pangea-Request-Id: client:seq`, before its digest is known. */
export function parseRequestIdHeader(header: string | undefined): { client: string; seq: number } | undefined {
  if (header === undefined) return undefined;
  const m = /^([A-Za-z0-9_-]{1,64}):([1-9][0-9]{0,15})$/.exec(header.trim());
  if (!m || !Number.isSafeInteger(Number(m[2]))) throw badRequest('Pangea-Request-Id must be <client>:<sequence>: client 1 to 64 of [A-Za-z0-9_-], sequence a positive integer');
  return { client: m[1]!, seq: Number(m[2]) };
}

/**
 * SHA-256 over a canonical form of a write: its kind, keys, values and conditions, each
 * length-prefixed, so two requests digest alike exactly when they would do the same thing.
 * Computed from the parsed op, so a retry's header order or JSON spacing does not matter.
 */
export function opDigest(op: KvOp): Uint8Array {
  const h = createHash('sha256');
  const u32 = Buffer.alloc(4);
  const bytes = (b: Uint8Array): void => {
    u32.writeUInt32BE(b.byteLength);
    h.update(u32);
    h.update(b);
  };
  const str = (s: string): void => bytes(Buffer.from(s, 'utf8'));
  const num = (n: number | undefined): void => str(n === undefined ? '-' : String(n));
  // A lease is digested only when given, so requests without one digest as they always did.
  const txnOp = (o: TxnOp): void => {
    str(o.op);
    if (isRecordTxnOp(o)) {
      str(o.collection);
      str(`${typeof o.pk}:${o.pk}`);
      if (o.op === 'putRecord') str(o.record);
      return;
    }
    bytes(o.key);
    if (o.op === 'put') bytes(o.value);
    if (o.op === 'put' && o.lease !== undefined) {
      str('lease');
      num(o.lease);
    }
  };
  const compare = (c: Compare): void => {
    bytes(c.key);
    str(c.target);
    str(c.op);
    if (c.value instanceof Uint8Array) bytes(c.value);
    else str(String(c.value));
  };
  str('pangea-request-v1');
  str(op.t);
  switch (op.t) {
    case 'put':
      bytes(op.key);
      bytes(op.value);
      num(op.ifMatch);
      str(op.ifAbsent ? 'absent' : '-');
      if (op.lease !== undefined) num(op.lease);
      break;
    case 'delete':
      bytes(op.key);
      num(op.ifMatch);
      break;
    case 'txn':
      num(op.compare.length);
      op.compare.forEach(compare);
      num(op.success.length);
      op.success.forEach(txnOp);
      num(op.failure.length);
      op.failure.forEach(txnOp);
      // Only when present, so that a txn without them digests as it always did.
      if (op.recordCompare !== undefined) {
        str('records');
        num(op.recordCompare.length);
        for (const c of op.recordCompare) {
          str(c.collection);
          str(`${typeof c.pk}:${c.pk}`);
          str(c.target);
          str(c.op);
          str(String(c.value));
        }
      }
      break;
  }
  return new Uint8Array(h.digest());
}

/** `application/json`, with parameters such as `charset` allowed. */
export function isJsonContentType(header: string | undefined): boolean {
  if (header === undefined) return false;
  const semi = header.indexOf(';');
  return (semi < 0 ? header : header.slice(0, semi)).trim().toLowerCase() === 'application/json';
}

/** Parses a JSON body that must be an object. */
export function parseJsonObject(body: Uint8Array): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(utf8Text(body, 'body'));
  } catch (e) {
    if (e instanceof HttpError) throw e;
    throw badRequest(`body is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw badRequest('body must be a JSON object');
  return v as Record<string, unknown>;
}

const base64Re = /^[A-Za-z0-9+/]*={0,2}$/;

/** Decodes a value string per `encoding`; base64 must be standard (padding optional). */
export function decodeValue(v: unknown, encoding: Encoding, what: string): Uint8Array {
  if (typeof v !== 'string') throw badRequest(`${what}: value must be a string`);
  if (encoding === 'utf8') return encoder.encode(v);
  const padded = v.endsWith('=');
  if (!base64Re.test(v) || (padded && v.length % 4 !== 0) || v.length % 4 === 1) throw badRequest(`${what}: invalid base64`);
  return new Uint8Array(Buffer.from(v, 'base64'));
}

/** Encodes a value for a JSON answer. Under `utf8` a value that is not UTF-8 is shown with
 *  replacement characters; callers that can still refuse do so before (see `isUtf8`). */
export function encodeValue(v: Uint8Array, encoding: Encoding): string {
  return encoding === 'base64' ? Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('base64') : Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('utf8');
}

function fields(o: Record<string, unknown>, allowed: readonly string[], what: string): void {
  for (const k of Object.keys(o)) if (!allowed.includes(k)) throw badRequest(`${what}: unknown field ${JSON.stringify(k)}`);
}

function asObject(v: unknown, what: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw badRequest(`${what} must be an object`);
  return v as Record<string, unknown>;
}

function asArray(v: unknown, what: string): unknown[] {
  if (v === undefined) return [];
  if (!Array.isArray(v)) throw badRequest(`${what} must be an array`);
  return v;
}

export interface TxnLimits {
  readonly maxTxnOps: number;
  readonly maxValueBytes: number;
}

/** A parsed `POST /v1/txn` body: the op to propose and the encoding of the answer. */
export interface ParsedTxn {
  readonly op: Extract<KvOp, { t: 'txn' }>;
  readonly encoding: Encoding;
}

const compareOps = ['==', '!=', '<', '>'] as const;

/** Validates a transaction body (API.md, Transactions). Too many ops or a value over the limit is 413. */
export function parseTxn(body: Record<string, unknown>, limits: TxnLimits): ParsedTxn {
  fields(body, ['encoding', 'compare', 'success', 'failure'], 'txn');
  const encoding = parseEncoding(body.encoding);
  const compareIn = asArray(body.compare, 'compare');
  const successIn = asArray(body.success, 'success');
  const failureIn = asArray(body.failure, 'failure');
  const count = compareIn.length + successIn.length + failureIn.length;
  if (count > limits.maxTxnOps) throw tooLarge(`txn has ${count} compares and operations, over ${limits.maxTxnOps}`);
  const value = (v: unknown, what: string): Uint8Array => {
    const bytes = decodeValue(v, encoding, what);
    if (bytes.byteLength > limits.maxValueBytes) throw tooLarge(`${what}: value of ${bytes.byteLength} bytes, over ${limits.maxValueBytes}`);
    return bytes;
  };
  const recordCompare: RecordCompare[] = [];
  const compare = compareIn.flatMap((raw, i): Compare[] => {
    const what = `compare[${i}]`;
    const c = asObject(raw, what);
    if (c.collection !== undefined) {
      fields(c, ['collection', 'pk', 'target', 'op', 'value'], what);
      const target = c.target;
      if (!compareOps.includes(c.op as never)) throw badRequest(`${what}: op must be one of == != < >`);
      if (target === 'revision') {
        if (typeof c.value !== 'number' || !Number.isSafeInteger(c.value) || c.value < 0) throw badRequest(`${what}: a revision compare takes a non-negative integer`);
      } else if (target === 'exists') {
        if (typeof c.value !== 'boolean' || (c.op !== '==' && c.op !== '!=')) throw badRequest(`${what}: an exists compare takes a boolean, with == or !=`);
      } else throw badRequest(`${what}: a record compare's target is revision or exists`);
      recordCompare.push({ collection: collectionName(c.collection, what), pk: recordPk(c.pk, what), target, op: c.op as RecordCompare['op'], value: c.value as number | boolean });
      return [];
    }
    fields(c, ['key', 'target', 'op', 'value'], what);
    const key = jsonKey(c.key, what);
    const op = c.op;
    if (!compareOps.includes(op as never)) throw badRequest(`${what}: op must be one of == != < >`);
    const o = op as Compare['op'];
    switch (c.target) {
      case 'value':
        return [{ key, target: 'value', op: o, value: value(c.value, what) }];
      case 'revision':
        if (typeof c.value !== 'number' || !Number.isSafeInteger(c.value) || c.value < 0) throw badRequest(`${what}: a revision compare takes a non-negative integer`);
        return [{ key, target: 'revision', op: o, value: c.value }];
      case 'exists':
        if (typeof c.value !== 'boolean') throw badRequest(`${what}: an exists compare takes a boolean`);
        if (o !== '==' && o !== '!=') throw badRequest(`${what}: an exists compare takes only == or !=`);
        return [{ key, target: 'exists', op: o, value: c.value }];
      default:
        throw badRequest(`${what}: target must be value, revision or exists`);
    }
  });
  const ops = (list: unknown[], branch: string): TxnOp[] =>
    list.map((raw, i): TxnOp => {
      const what = `${branch}[${i}]`;
      const o = asObject(raw, what);
      switch (o.op) {
        case 'put': {
          fields(o, ['op', 'key', 'value', 'lease'], what);
          const lease = o.lease === undefined ? undefined : parseLeaseId(typeof o.lease === 'number' ? String(o.lease) : o.lease, `${what}: lease`);
          return { op: 'put', key: jsonKey(o.key, what), value: value(o.value, what), ...(lease === undefined ? {} : { lease }) };
        }
        case 'delete':
          fields(o, ['op', 'key'], what);
          return { op: 'delete', key: jsonKey(o.key, what) };
        case 'get':
          fields(o, ['op', 'key'], what);
          return { op: 'get', key: jsonKey(o.key, what) };
        case 'putRecord': {
          fields(o, ['op', 'collection', 'pk', 'record'], what);
          if (typeof o.record !== 'object' || o.record === null || Array.isArray(o.record)) throw badRequest(`${what}: record is a JSON object`);
          const record = canonicalize(o.record) as string;
          if (Buffer.byteLength(record) > limits.maxValueBytes) throw tooLarge(`${what}: a record of ${Buffer.byteLength(record)} bytes, over ${limits.maxValueBytes}`);
          return { op: 'putRecord', collection: collectionName(o.collection, what), pk: recordPk(o.pk, what), record };
        }
        case 'deleteRecord':
        case 'getRecord':
          fields(o, ['op', 'collection', 'pk'], what);
          return { op: o.op, collection: collectionName(o.collection, what), pk: recordPk(o.pk, what) };
        default:
          throw badRequest(`${what}: op must be put, delete, get, putRecord, deleteRecord or getRecord`);
      }
    });
  const success = ops(successIn, 'success');
  const failure = ops(failureIn, 'failure');
  return { op: { t: 'txn', compare, success, failure, ...(recordCompare.length > 0 ? { recordCompare } : {}) }, encoding };
}

function collectionName(v: unknown, what: string): string {
  if (typeof v !== 'string' || !/^[a-z0-9_-]{1,64}$/.test(v)) throw badRequest(`${what}: collection is a name of 1 to 64 of [a-z0-9_-]`);
  return v;
}

/** A record's pk in a txn: a string of 1 to 1024 bytes, or a safe integer (the collection's
 *  type is judged at apply). */
function recordPk(v: unknown, what: string): string | number {
  if (typeof v === 'number' && Number.isSafeInteger(v)) return v;
  if (typeof v === 'string' && v !== '' && Buffer.byteLength(v) <= 1024 && wellFormed(v)) return v;
  throw badRequest(`${what}: pk is a string of 1 to 1024 bytes or a safe integer`);
}

export interface MemberRequest {
  readonly peerId: string;
  readonly http: string;
  readonly p2p: readonly string[];
  readonly role: 'voter' | 'learner';
}

/** `POST /v1/cluster/members`: `{"peerId", "p2p": [multiaddr], "http", "role"}` (role defaults to voter). */
function isPeerId(s: string): boolean {
  try {
    peerIdFromString(s);
    return true;
  } catch {
    return false;
  }
}

function isMultiaddr(s: string): boolean {
  try {
    multiaddr(s);
    return s.startsWith('/');
  } catch {
    return false;
  }
}

export function parseMember(body: Record<string, unknown>): MemberRequest {
  fields(body, ['peerId', 'p2p', 'http', 'role'], 'member');
  const { peerId, http, p2p, role } = body;
  if (typeof peerId !== 'string' || peerId === '' || peerId.length > 256) throw badRequest('member: peerId must be a non-empty string');
  if (!isPeerId(peerId)) throw badRequest(`member: peerId ${JSON.stringify(peerId.slice(0, 80))} is not a libp2p peer id (the node's banner and GET /v1/cluster show it)`);
  if (typeof http !== 'string' || !/^https?:\/\/[^\s]+$/.test(http)) throw badRequest('member: http must be an http(s) URL');
  if (!Array.isArray(p2p) || p2p.length > 16 || !p2p.every((a) => typeof a === 'string' && isMultiaddr(a))) throw badRequest('member: p2p must be an array of at most 16 multiaddrs');
  if (role !== undefined && role !== 'voter' && role !== 'learner') throw badRequest('member: role must be voter or learner');
  return { peerId, http, p2p: p2p as string[], role: role ?? 'voter' };
}
