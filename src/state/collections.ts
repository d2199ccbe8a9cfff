/**
 * Collections (API contract, "Collections"; issue 15): the judge of definitions, records,
 * primary keys and index values. Pure and deterministic, as apply must be: JSON Schema 2020-12
 * through Ajv (pinned exactly in package.json: every replica must judge alike; a build with
 * another Ajv is another apply level), `pattern` and `patternProperties` through RE2 (re2js,
 * linear time: no schema can stall apply with a catastrophic regex), formats from ajv-formats,
 * no remote `$ref`. Bounded: a schema of at most 64 KiB, a record of at most 1 MiB nested at
 * most 64 deep (blocks.ts checkJson), at most 10 errors reported.
 *
 * Used at apply by state/records.ts (the tables, apply level 3) and before proposing by
 * net/http-collections.ts.
 */
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import { RE2JS } from 're2js';
import canonicalize from 'canonicalize';
import { BlockError, checkJson, type Json } from './blocks.js';

/** A collection's name: `[a-z0-9_-]{1,64}`; names starting with `_` are the cluster's. */
export const COLLECTION_NAME = /^[a-z0-9_-]{1,64}$/;
export const INDEX_NAME = /^[a-z0-9_-]{1,64}$/;
export const SCHEMA_BYTES_MAX = 64 * 1024;
export const INDEXES_MAX = 8;
export const RECORD_BYTES_MAX = 1024 * 1024;
/** Schema errors one refusal reports at most (API contract). */
export const SCHEMA_ERRORS_MAX = 10;
/** The schema dialect; a schema may name it in `$schema`, or nothing. */
const DIALECT = 'https://json-schema.org/draft/2020-12/schema';

export type IndexType = 'string' | 'integer' | 'number' | 'boolean';

export interface IndexDef {
  readonly name: string;
  readonly field: string;
  readonly type: IndexType;
  readonly unique: boolean;
}

export interface CollectionDef {
  readonly kind: 'table' | 'diary';
  readonly schema: { readonly [k: string]: Json } | boolean;
  readonly primaryKey: { readonly field: string; readonly type: 'string' | 'integer' };
  readonly indexes: readonly IndexDef[];
}

export interface SchemaError {
  readonly path: string;
  readonly keyword: string;
  readonly message: string;
}

/** `bad_request` (400): a malformed definition or request; `schema_violation` (422): a
 *  record its collection's schema refuses; `invalid_operation` (422): a record whose index
 *  field has the wrong type. */
export class CollectionError extends Error {
  override readonly name = 'CollectionError';
  constructor(
    readonly code: 'bad_request' | 'schema_violation' | 'invalid_operation',
    message: string,
    readonly errors: readonly SchemaError[] = [],
  ) {
    super(message);
  }
}

const bad = (message: string): CollectionError => new CollectionError('bad_request', message);
const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const FORBIDDEN_FIELDS = new Set(['__proto__', 'constructor', 'prototype']);

/** RE2 in the shape Ajv's `code.regExp` takes: `test` searches, as RegExp's does. A pattern
 *  RE2 cannot run (backreferences, lookaround) fails to compile: the schema is refused. */
function re2(pattern: string, flags: string): { test(s: string): boolean; toString(): string } {
  const re = RE2JS.compile(pattern, flags.includes('i') ? RE2JS.CASE_INSENSITIVE : 0);
  return { test: (s: string) => re.matcher(s).find(), toString: () => `/${pattern}/${flags}` };
}
re2.code = 're2';

const addFormats = addFormatsModule as unknown as (ajv: Ajv2020) => Ajv2020;

/** Ajv as every replica configures it. One instance per compile: a schema's `$id` must not
 *  leak into another's (and no schema is fetched: `loadSchema` is not set). */
function newAjv(): Ajv2020 {
  // Strict about keywords (an unknown one, a typo, is refused rather than ignored), not about
  // what JSON Schema allows: `required` naming a field `properties` does not, `properties`
  // without `type: "object"` (Ajv's strictRequired and strictTypes refused both).
  const ajv = new Ajv2020({ strict: true, strictRequired: false, strictTypes: false, strictTuples: false, allErrors: true, code: { regExp: re2 as never }, $data: false, unicodeRegExp: true, validateSchema: true, addUsedSchema: false });
  return addFormats(ajv);
}

export function checkCollectionName(v: unknown): string {
  if (typeof v !== 'string' || !COLLECTION_NAME.test(v)) throw bad('a collection name is 1 to 64 of [a-z0-9_-]');
  return v;
}

function checkField(v: unknown, where: string): string {
  if (typeof v !== 'string' || v === '' || v.length > 256 || FORBIDDEN_FIELDS.has(v)) throw bad(`${where}: a top-level field name (1 to 256 characters; not __proto__, constructor or prototype)`);
  return v;
}

/** Every `$ref` and `$dynamicRef` in `schema` points into it (`#...`): nothing is fetched. */
function checkRefs(schema: unknown): void {
  const stack: unknown[] = [schema];
  while (stack.length > 0) {
    const v = stack.pop();
    if (Array.isArray(v)) stack.push(...v);
    else if (isObj(v)) {
      for (const [k, x] of Object.entries(v)) {
        if ((k === '$ref' || k === '$dynamicRef') && (typeof x !== 'string' || !x.startsWith('#'))) throw bad(`schema: ${k} must point inside the schema (#...); remote references are refused`);
        if (k === '$schema' && x !== DIALECT) throw bad(`schema: $schema must be ${DIALECT} or absent`);
        stack.push(x);
      }
    }
  }
}

/** A definition from untrusted JSON (`PUT /v1/collections/{c}`), its schema compiled once to
 *  check it; throws CollectionError. */
export function parseDefinition(v: unknown): CollectionDef {
  if (!isObj(v)) throw bad('a collection definition is a JSON object');
  for (const k of Object.keys(v)) if (!['kind', 'schema', 'primaryKey', 'indexes'].includes(k)) throw bad(`definition: unknown field ${JSON.stringify(k.slice(0, 40))}`);
  const kind = v.kind ?? 'table';
  if (kind !== 'table' && kind !== 'diary') throw bad('kind is "table" or "diary"');
  const schema = v.schema ?? true;
  if (typeof schema !== 'boolean' && !isObj(schema)) throw bad('schema: a JSON Schema (an object, or true)');
  judgedJson(() => checkJson(schema, 'schema'));
  const bytes = Buffer.byteLength(canonicalize(schema) as string);
  if (bytes > SCHEMA_BYTES_MAX) throw bad(`schema: ${bytes} bytes; at most ${SCHEMA_BYTES_MAX}`);
  checkRefs(schema);
  if (!isObj(v.primaryKey)) throw bad('primaryKey: {"field", "type": "string" or "integer"}');
  for (const k of Object.keys(v.primaryKey)) if (!['field', 'type'].includes(k)) throw bad(`primaryKey: unknown field ${JSON.stringify(k.slice(0, 40))}`);
  const pkType = v.primaryKey.type;
  if (pkType !== 'string' && pkType !== 'integer') throw bad('primaryKey.type is "string" or "integer"');
  if (kind === 'diary' && pkType !== 'integer') throw bad('a diary\'s primary key is an integer: its records are numbered by their index');
  const primaryKey = { field: checkField(v.primaryKey.field, 'primaryKey.field'), type: pkType } as const;
  const rawIndexes = v.indexes ?? [];
  if (!Array.isArray(rawIndexes) || rawIndexes.length > INDEXES_MAX) throw bad(`indexes: a list of at most ${INDEXES_MAX}`);
  const names = new Set<string>();
  const indexes = rawIndexes.map((x, i): IndexDef => {
    if (!isObj(x)) throw bad(`indexes[${i}]: {"name", "field", "type", "unique"?}`);
    for (const k of Object.keys(x)) if (!['name', 'field', 'type', 'unique'].includes(k)) throw bad(`indexes[${i}]: unknown field ${JSON.stringify(k.slice(0, 40))}`);
    if (typeof x.name !== 'string' || !INDEX_NAME.test(x.name)) throw bad(`indexes[${i}].name: 1 to 64 of [a-z0-9_-]`);
    if (names.has(x.name)) throw bad(`indexes: ${x.name} twice`);
    names.add(x.name);
    if (!['string', 'integer', 'number', 'boolean'].includes(x.type as string)) throw bad(`indexes[${i}].type is string, integer, number or boolean`);
    if (x.unique !== undefined && typeof x.unique !== 'boolean') throw bad(`indexes[${i}].unique is a boolean`);
    return { name: x.name, field: checkField(x.field, `indexes[${i}].field`), type: x.type as IndexType, unique: x.unique === true };
  });
  const def: CollectionDef = { kind, schema: schema as CollectionDef['schema'], primaryKey, indexes };
  compile(def);
  return def;
}

function judgedJson<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof BlockError) throw bad(e.message);
    throw e;
  }
}

/** Compiled schemas by their canonical form (replicas compile the same schema to the same
 *  judge; the cache only saves time). Bounded: a few collections' worth. */
const compiled = new Map<string, ValidateFunction>();
const COMPILED_MAX = 256;

function compile(def: CollectionDef): ValidateFunction {
  const key = canonicalize(def.schema) as string;
  const known = compiled.get(key);
  if (known !== undefined) return known;
  let validate: ValidateFunction;
  try {
    validate = newAjv().compile(def.schema as object | boolean as object);
  } catch (e) {
    throw bad(`schema: ${(e as Error).message.slice(0, 300)}`);
  }
  if (compiled.size >= COMPILED_MAX) compiled.delete(compiled.keys().next().value!);
  compiled.set(key, validate);
  return validate;
}

/** Checks `record` (untrusted JSON) against `def`: a JSON object within the bounds, valid by
 *  the schema; returns it. Throws CollectionError (`schema_violation` with up to
 *  SCHEMA_ERRORS_MAX errors). */
export function checkRecord(def: CollectionDef, record: unknown): Record<string, Json> {
  if (!isObj(record)) throw bad('a record is a JSON object');
  judgedJson(() => checkJson(record, 'record'));
  const bytes = Buffer.byteLength(canonicalize(record) as string);
  if (bytes > RECORD_BYTES_MAX) throw bad(`record: ${bytes} bytes; at most ${RECORD_BYTES_MAX}`);
  const validate = compile(def);
  if (!validate(record)) {
    const errors = (validate.errors ?? []).slice(0, SCHEMA_ERRORS_MAX).map((e) => ({ path: e.instancePath, keyword: e.keyword, message: e.message ?? e.keyword }));
    throw new CollectionError('schema_violation', `the record does not match the schema of its collection (${errors.length} error${errors.length === 1 ? '' : 's'} shown)`, errors);
  }
  return record as Record<string, Json>;
}

/** A primary key value: a string of 1 to 1024 bytes, or a safe integer. */
export type Pk = string | number;

export function checkPk(def: CollectionDef, v: unknown): Pk {
  if (def.primaryKey.type === 'integer') {
    if (typeof v !== 'number' || !Number.isSafeInteger(v)) throw bad('the primary key is a safe integer');
    return v;
  }
  if (typeof v !== 'string' || v === '' || Buffer.byteLength(v) > 1024 || !(v as unknown as { isWellFormed(): boolean }).isWellFormed()) throw bad('the primary key is a string of 1 to 1024 bytes');
  return v;
}

/** The record's primary key (its pk field), checked. */
export function pkOf(def: CollectionDef, record: Record<string, Json>): Pk {
  if (!Object.hasOwn(record, def.primaryKey.field)) throw bad(`the record has no ${def.primaryKey.field} (its primary key)`);
  return checkPk(def, record[def.primaryKey.field]);
}

/**
 * Keys whose byte order is the values' order: for a pk or an index value. A type tag first
 * (false < true < numbers < strings), then:
 * - an integer or number as IEEE 754 float64, big-endian, its sign bit flipped for >= 0 and
 *   every bit flipped for < 0 (-0 is 0; safe integers are exact in float64);
 * - a string as its UTF-8 bytes (byte order is code point order).
 */
export function orderedKey(v: boolean | number | string): Uint8Array {
  if (typeof v === 'boolean') return Uint8Array.of(v ? 0x02 : 0x01);
  if (typeof v === 'number') {
    const out = Buffer.alloc(9);
    out[0] = 0x03;
    out.writeDoubleBE(v === 0 ? 0 : v, 1);
    if ((out[1]! & 0x80) === 0) out[1]! |= 0x80;
    else for (let i = 1; i < 9; i++) out[i] = ~out[i]! & 0xff;
    return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
  }
  const s = Buffer.from(v, 'utf8');
  const out = new Uint8Array(1 + s.byteLength);
  out[0] = 0x04;
  out.set(s, 1);
  return out;
}

/** The value a record gives an index: null when the field is missing or null (not indexed);
 *  throws `invalid_operation` for a value of another type. */
export function indexValue(idx: IndexDef, record: Record<string, Json>): boolean | number | string | null {
  const v = Object.hasOwn(record, idx.field) ? record[idx.field] : undefined;
  if (v === undefined || v === null) return null;
  const ok = idx.type === 'string' ? typeof v === 'string' && Buffer.byteLength(v) <= 1024
    : idx.type === 'integer' ? typeof v === 'number' && Number.isSafeInteger(v)
    : idx.type === 'number' ? typeof v === 'number' && Number.isFinite(v)
    : typeof v === 'boolean';
  if (!ok) throw new CollectionError('invalid_operation', `index ${idx.name}: ${idx.field} must be ${idx.type === 'string' ? 'a string of at most 1024 bytes' : `a${idx.type === 'integer' ? 'n' : ''} ${idx.type}`}, or missing or null`);
  return v as boolean | number | string;
}
