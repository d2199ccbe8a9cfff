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
import { wellFormed } from '../text.js';
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import formatsModule from 'ajv-formats/dist/formats.js';
import { RE2JS } from 're2js';
import canonicalize from 'canonicalize';
import { BlockError, checkJson, checkJsonNodes, type Json } from './blocks.js';

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

/** A pattern's RE2 program has at most this many instructions, and one schema's patterns
 *  this many in all: counted repeats nest (`(?:[a-c]{64}){15}` is 1,000 instructions), and a
 *  schema of 240 such patterns held 237 MB of programs (helper-52). */
export const PATTERN_INSTS_MAX = 4_096;
export const SCHEMA_INSTS_MAX = 32_768;
/** What a pattern's call costs beyond its characters, and each character beyond the
 *  program's size, in meter steps (a 4-instruction case-insensitive class ran at 50 ns a
 *  character: helper-53). */
const PATTERN_CALL_STEPS = 32;
const PATTERN_CHAR_STEPS = 8;
/** The instructions of the schema being compiled so far (compileSchema resets it). */
let compileInsts = 0;

/** RE2 in the shape Ajv's `code.regExp` takes (called as Ajv compiles a schema): `test`
 *  searches, as RegExp's does. A pattern RE2 cannot run (backreferences, lookaround) fails to
 *  compile, as does one past the instruction bounds: the schema is refused. */
function re2(pattern: string, flags: string): { test(s: string): boolean; toString(): string } {
  const re = RE2JS.compile(pattern, flags.includes('i') ? RE2JS.CASE_INSENSITIVE : 0);
  const size = (re as unknown as { re2Input: { prog: { inst: unknown[] } } }).re2Input.prog.inst.length;
  if (size > PATTERN_INSTS_MAX) throw bad(`the pattern ${JSON.stringify(pattern.slice(0, 60))} compiles to ${size} RE2 instructions; at most ${PATTERN_INSTS_MAX}`);
  compileInsts += size;
  if (compileInsts > SCHEMA_INSTS_MAX) throw bad(`the schema's patterns compile to more than ${SCHEMA_INSTS_MAX} RE2 instructions in all`);
  return {
    test: (s: string) => {
      // Each call costs its setup, about 0.6 us, even over "" (helper-52: 340,000 empty
      // strings, 63 patterns each, took 6.8 s uncharged).
      meter((s.length + 1) * (size + PATTERN_CHAR_STEPS) + PATTERN_CALL_STEPS);
      return re.matcher(s).find();
    },
    toString: () => `/${pattern}/${flags}`,
  };
}
re2.code = 're2';

/**
 * What a record's patterns, formats and uniqueItems may cost to judge, in steps of about
 * 20 ns: the characters each pattern runs over (plus one: a call's setup) times the size of
 * its program (RE2's time); FORMAT_STEPS_PER_CHAR for each character a format judges; the
 * canonical JSON of each array uniqueItems judges. Summed over the record; past it the
 * record is refused, alike on every replica (the count is of the record and the schema,
 * never of time): a pattern over a megabyte, or 63 of them over the same string, took
 * minutes (helper-50); 62 `uri` formats over 255 strings of 4 KB, or uniqueItems over 1,000
 * objects of 100 fields, seconds (helper-52). Reset before each record (judgeRecord).
 */
export const JUDGE_WORK_MAX = 32 * 1024 * 1024;
let judgeWork = 0;

function meter(n: number): void {
  judgeWork += n;
  if (judgeWork > JUDGE_WORK_MAX) throw new CollectionError('schema_violation', `judging the record by its schema's patterns, formats and uniqueItems would take over ${JUDGE_WORK_MAX} steps: shorter strings, or fewer or smaller patterns and formats`, [{ path: '', keyword: 'pattern', message: 'too costly to judge' }]);
}

/** Formats judge strings of at most this many characters (longer ones fail them): some of
 *  ajv-formats' checks are V8 regexps, quadratic on crafted input (`url` over 200 KB took
 *  23 s: helper-50). */
export const FORMAT_CHARS_MAX = 4096;
/** What a format costs a character, in meter steps (`uri` judges about 4 characters a
 *  microsecond here, the others faster). */
const FORMAT_STEPS_PER_CHAR = 16;
/** Formats a schema may not name: `regex` compiled each string (an RE2 program of up to
 *  36,000 instructions a string: hours for a record, helper-52; V8's RegExp would judge apart
 *  across Node versions); `url` (not a JSON Schema format: `uri` is) stays quadratic within
 *  4,096 characters (20 ms a string, helper-52). */
const FORMATS_REFUSED = new Set(['regex', 'url']);

type FormatCheck = RegExp | ((s: string) => boolean) | boolean | { readonly type?: string; readonly validate: RegExp | ((x: never) => boolean) };

/** ajv-formats' full formats, each behind the length bound, without their comparison
 *  keywords (formatMinimum and formatMaximum compare through `new Date`, which reads a bound
 *  with no zone in the local timezone: helper-49). */
function addBoundedFormats(ajv: Ajv2020): void {
  const { fullFormats, formatNames } = formatsModule as unknown as { fullFormats: Record<string, FormatCheck>; formatNames: string[] };
  const bounded = (test: (s: string) => boolean) => (s: string): boolean => {
    if (s.length > FORMAT_CHARS_MAX) return false;
    meter((s.length + 1) * FORMAT_STEPS_PER_CHAR);
    return test(s);
  };
  for (const name of formatNames) {
    const f = fullFormats[name]!;
    if (FORMATS_REFUSED.has(name)) continue; // boundSchema refuses them by name
    if (typeof f === 'boolean') ajv.addFormat(name, f as never);
    else if (f instanceof RegExp) ajv.addFormat(name, bounded((s) => f.test(s)));
    else if (typeof f === 'function') ajv.addFormat(name, bounded(f));
    else if (f.type === 'number') ajv.addFormat(name, { type: 'number', validate: f.validate as (n: number) => boolean });
    else {
      const v = f.validate;
      ajv.addFormat(name, bounded((s) => (v instanceof RegExp ? v.test(s) : (v as (s: string) => boolean)(s))));
    }
  }
}

/** uniqueItems in linear time: each item's canonical JSON (RFC 8785: key order and number
 *  spelling do not matter, as JSON Schema's equality says) into a set, metered. Ajv's own
 *  compares every pair deeply: 2.7 s for 1,000 objects of 100 fields (helper-52). */
function uniqueItems(schema: boolean, data: readonly unknown[]): boolean {
  if (!schema) return true;
  const seen = new Set<string>();
  for (const item of data) {
    const key = canonicalize(item) as string;
    meter(key.length + 1);
    if (seen.has(key)) return false;
    seen.add(key);
  }
  return true;
}

/** dependentRequired: when a field is present, so are the fields it names (own fields). */
function dependentRequired(schema: Record<string, readonly string[]>, data: Record<string, unknown>): boolean {
  for (const field of Object.keys(schema)) {
    if (!Object.hasOwn(data, field)) continue;
    for (const name of schema[field]!) if (!Object.hasOwn(data, name)) return false;
  }
  return true;
}

/** Ajv as every replica configures it. One instance per compile: a schema's `$id` must not
 *  leak into another's (and no schema is fetched: `loadSchema` is not set). */
function newAjv(): Ajv2020 {
  // Strict about keywords (an unknown one, a typo, is refused rather than ignored), not about
  // what JSON Schema allows: `required` naming a field `properties` does not, `properties`
  // without `type: "object"` (Ajv's strictRequired and strictTypes refused both).
  // inlineRefs off: inlining every $ref to a ref-free definition made a 20 KiB schema
  // compile for 39 s in 2.7 GB (helper-49). allErrors off: Ajv stops at a record's first
  // error; with it on, it gathered every error without bound (a 1 MB record ran the heap
  // out), merged them quadratically through refs, and ran uniqueItems past a failed maxItems
  // (helper-50). A refusal names that one error.
  // ownProperties: a field is present only as the record's own (`required: ["toString"]`
  // held for every record: helper-52). allowMatchingProperties: Ajv's lint of a pattern
  // property matching a named one ran V8's RegExp over the names (`^(a|a)*$` doubled its time
  // with each letter, and V8 versions parse patterns apart: helper-53).
  const ajv = new Ajv2020({ strict: true, strictRequired: false, strictTypes: false, strictTuples: false, allowMatchingProperties: true, inlineRefs: false, allErrors: false, ownProperties: true, code: { regExp: re2 as never }, $data: false, unicodeRegExp: true, validateSchema: true, addUsedSchema: false });
  addBoundedFormats(ajv);
  ajv.removeKeyword('uniqueItems');
  ajv.addKeyword({ keyword: 'uniqueItems', type: 'array', schemaType: 'boolean', errors: false, validate: uniqueItems as never });
  // Ajv writes each dependentRequired list as one expression nested once a name: compiling a
  // list of 1,000 took 3.3 s, and 2,000 overflowed the stack (helper-53). Checked here, in a
  // loop (the meta-schema still checks its shape).
  ajv.removeKeyword('dependentRequired');
  ajv.addKeyword({ keyword: 'dependentRequired', type: 'object', schemaType: 'object', errors: false, validate: dependentRequired as never });
  return ajv;
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

/** Schemas one record node may be judged by at most (in-place applicators and `$ref`s
 *  counted with their multiplicity), in-place nesting at most, and steps the bound may take. */
export const APPLICATIONS_PER_NODE_MAX = 64;
const IN_PLACE_DEPTH_MAX = 32;
const BOUND_STEPS_MAX = 20_000;
/** Records nest at most this deep (blocks.ts checkJson). */
const RECORD_DEPTH_MAX = 64;
/** `uniqueItems` compares every pair: it needs a `maxItems` of at most this beside it. */
export const UNIQUE_ITEMS_MAX = 1_000;

const IN_PLACE_ONE = ['not', 'if', 'then', 'else'] as const;
const IN_PLACE_MANY = ['allOf', 'anyOf', 'oneOf'] as const;
/** The keywords a schema may use: what boundSchema models, the validation keywords whose
 *  cost is bounded here, and annotations. Any other (the legacy `dependencies`, which let a
 *  schema recurse in place past the bound: helper-50; `$id`, anchors, dynamic refs) is
 *  refused, so that no keyword Ajv knows slips past the bound. */
const KEYWORDS = new Set([
  // applicators (boundSchema follows each)
  'allOf', 'anyOf', 'oneOf', 'not', 'if', 'then', 'else', 'dependentSchemas', '$ref', 'properties', 'patternProperties', 'additionalProperties',
  'propertyNames', 'items', 'prefixItems', 'contains', 'unevaluatedItems', 'unevaluatedProperties', '$defs',
  // validation
  'type', 'enum', 'const', 'multipleOf', 'maximum', 'exclusiveMaximum', 'minimum', 'exclusiveMinimum', 'maxLength', 'minLength', 'pattern', 'maxItems',
  'minItems', 'uniqueItems', 'maxContains', 'minContains', 'maxProperties', 'minProperties', 'required', 'dependentRequired', 'format',
  // annotations and the dialect
  '$schema', '$comment', 'title', 'description', 'default', 'examples', 'deprecated', 'readOnly', 'writeOnly', 'contentMediaType', 'contentEncoding',
]);
/** A schema's weight at one place: 1, plus what its keywords do beyond a constant. The
 *  weights applied at one place of a record are bounded (WEIGHT_PER_PLACE_MAX) as their
 *  count is (helper-50: 31 refs to an enum of 12,000 values took 17 s on a 120 KB record). */
const WEIGHT_PER_PLACE_MAX = 4_096;
/** What minProperties or maxProperties weighs (in units of about 2 ns a value). */
const PROPERTY_COUNT_WEIGHT = 128;
/** $refs a record's judging may be inside at once, along any path (the stack at apply). */
const REF_CALLS_MAX = 128;
/** Keywords, and the entries of properties, patternProperties, dependentSchemas,
 *  dependentRequired, allOf, anyOf, oneOf and prefixItems, in the whole schema: Ajv nests one
 *  block of generated code in the next for each (it stops at the first error), and the stack
 *  that compiling it and V8's parsing of it take grows with them: 1,700 properties overflowed
 *  Node's default stack (984 KB), at define or at the first record depending on the JIT
 *  (helper-52). Measured under `--stack-size=300`: about 450 properties, or dependentRequired
 *  entries, overflowed it, whatever keywords each had; so this leaves ~3x of the default
 *  stack (test/state/collections-stack.test.ts runs the worst shapes under 500 KB). */
export const SCHEMA_CODE_UNITS_MAX = 512;
/** What judging a record may weigh in all: its values times the heaviest place of its
 *  schema (about 2 ns a unit: 500,000 values at a place weighing 4,096 took 3.8 s, helper-52;
 *  an enum of long strings 4.3 ns, helper-53: about 0.5 s at most). */
export const RECORD_WEIGHT_MAX = 120_000_000;
/** Patterns: their source, and a counted repeat's bound, at most (RE2's program grows with
 *  both: `[a-z]{1000}[0-9]` took 19 s over 1 MB). */
export const PATTERN_CHARS_MAX = 256;
const PATTERN_REPEAT_MAX = 64;

/**
 * Refuses a schema whose judging of one record could take unbounded time or stack (review
 * of the collections apply, helper-49: an `allOf` of two `$ref`s to itself through `items`
 * doubled the work with each level of a 67-byte record; a chain of 150 `$ref`s overflowed
 * the stack at apply; `uniqueItems` over a 1 MB array took 18 s). Bounds, statically: the
 * schemas that apply at one place of a record (in-place applicators and `$ref`s, with their
 * multiplicity) are at most APPLICATIONS_PER_NODE_MAX, following them nests at most
 * IN_PLACE_DEPTH_MAX deep (a `$ref` cycle that does not descend into the data never ends),
 * at every place a record of RECORD_DEPTH_MAX levels can reach; `uniqueItems` needs a
 * `maxItems` of at most UNIQUE_ITEMS_MAX beside it. Conservative: every pattern property is
 * taken to match, every branch to apply. With the record's size bound this bounds the work
 * of judging it; refs resolve only as JSON pointers into the schema (no `$id`, anchors or
 * dynamic refs).
 */
function boundSchema(root: unknown): number {
  const resolve = (ref: string): unknown => {
    if (ref === '#') return root;
    if (!ref.startsWith('#/')) throw bad(`schema: $ref ${JSON.stringify(ref.slice(0, 80))} must be a JSON pointer into the schema (#/...)`);
    let node: unknown = root;
    for (const raw of ref.slice(2).split('/')) {
      let seg: string;
      try {
        seg = decodeURIComponent(raw).replaceAll('~1', '/').replaceAll('~0', '~');
      } catch {
        throw bad(`schema: $ref ${JSON.stringify(ref.slice(0, 80))} is not a JSON pointer`);
      }
      if (Array.isArray(node) && /^(0|[1-9][0-9]*)$/.test(seg)) node = node[Number(seg)];
      else if (isObj(node) && Object.hasOwn(node, seg)) node = node[seg];
      else throw bad(`schema: $ref ${JSON.stringify(ref.slice(0, 80))} points at nothing`);
    }
    return node;
  };
  // Every schema object (not the data in enum, const, default, examples): its keywords,
  // patterns, uniqueItems, its weight.
  const weights = new Map<unknown, number>();
  const walk: unknown[] = [root];
  let units = 0;
  while (walk.length > 0) {
    const v = walk.pop();
    if (!isObj(v) || weights.has(v)) continue;
    let w = 1;
    for (const [k, x] of Object.entries(v)) {
      if (!KEYWORDS.has(k)) throw bad(`schema: the keyword ${JSON.stringify(k.slice(0, 40))} is not supported`);
      units += 1 + (Array.isArray(x) && k !== 'enum' && k !== 'required' && k !== 'examples' ? x.length : 0);
      if (isObj(x) && (k === 'properties' || k === 'patternProperties' || k === 'dependentSchemas' || k === 'dependentRequired')) units += Object.keys(x).length;
      if (k === 'format' && typeof x === 'string' && FORMATS_REFUSED.has(x)) throw bad(`schema: the format ${JSON.stringify(x)} is not supported${x === 'url' ? ' (use "uri")' : ''}`);
      if (k === 'properties' || k === 'patternProperties' || k === '$defs' || k === 'dependentSchemas') {
        if (isObj(x)) walk.push(...Object.values(x));
        if (k !== '$defs') w += isObj(x) ? Object.keys(x).length : 0;
      } else if (k === 'allOf' || k === 'anyOf' || k === 'oneOf' || k === 'prefixItems') {
        if (Array.isArray(x)) walk.push(...x);
      } else if (['not', 'if', 'then', 'else', 'additionalProperties', 'propertyNames', 'items', 'contains', 'unevaluatedItems', 'unevaluatedProperties'].includes(k)) {
        walk.push(x);
      } else if (k === 'enum' && Array.isArray(x)) w += x.reduce((n: number, e) => n + jsonWeight(e), 0);
      else if (k === 'const') w += jsonWeight(x);
      else if (k === 'required' && Array.isArray(x)) w += x.length;
      // Ajv counts an object's keys afresh for each (Object.keys: 200 ns a key, helper-53).
      else if (k === 'minProperties' || k === 'maxProperties') w += PROPERTY_COUNT_WEIGHT;
      else if (k === 'dependentRequired' && isObj(x)) w += Object.values(x).reduce((n: number, e) => n + 1 + (Array.isArray(e) ? e.length : 0), 0);
      else if (k === 'pattern' && typeof x === 'string') w += checkPattern(x);
    }
    if (isObj(v.patternProperties)) for (const p of Object.keys(v.patternProperties)) w += checkPattern(p);
    if (v.uniqueItems === true && !(typeof v.maxItems === 'number' && v.maxItems <= UNIQUE_ITEMS_MAX)) {
      throw bad(`schema: uniqueItems needs "maxItems" of at most ${UNIQUE_ITEMS_MAX} beside it (it compares every pair of items)`);
    }
    weights.set(v, w);
  }
  if (units > SCHEMA_CODE_UNITS_MAX) throw bad(`schema: ${units} keywords and entries (of properties, allOf, ...) in all; at most ${SCHEMA_CODE_UNITS_MAX}`);
  let heaviest = 1;
  const inPlace = (s: unknown): unknown[] => {
    if (!isObj(s)) return [];
    const out: unknown[] = [];
    for (const k of IN_PLACE_MANY) if (Array.isArray(s[k])) out.push(...(s[k] as unknown[]));
    for (const k of IN_PLACE_ONE) if (s[k] !== undefined) out.push(s[k]);
    if (isObj(s.dependentSchemas)) out.push(...Object.values(s.dependentSchemas));
    if (typeof s.$ref === 'string') out.push(resolve(s.$ref));
    return out;
  };
  // Schema objects get ids (identity), so multisets of them can be compared.
  const ids = new Map<unknown, number>();
  const idOf = (s: unknown): number => {
    let id = ids.get(s);
    if (id === undefined) ids.set(s, (id = ids.size));
    return id;
  };
  let steps = 0;
  const step = (): void => {
    if (++steps > BOUND_STEPS_MAX) throw bad('schema: too complex to bound the cost of judging a record by it');
  };
  /** Every schema applied where `start` apply, with multiplicity, and the most $refs
   *  followed in place on the way to one. */
  const closure = (start: readonly unknown[]): { all: unknown[]; refs: number } => {
    const out: unknown[] = [];
    let weight = 0;
    let refs = 0;
    const visit = (s: unknown, depth: number, refsHere: number): void => {
      step();
      if (depth > IN_PLACE_DEPTH_MAX) throw bad(`schema: applicators and $refs nest more than ${IN_PLACE_DEPTH_MAX} deep at one place of a record (or a $ref cycle does not descend into the data)`);
      out.push(s);
      if (out.length > APPLICATIONS_PER_NODE_MAX) throw bad(`schema: more than ${APPLICATIONS_PER_NODE_MAX} schemas would judge one place of a record (allOf, anyOf, oneOf, $ref, ... multiply)`);
      weight += weights.get(s) ?? 1;
      heaviest = Math.max(heaviest, weight);
      if (weight > WEIGHT_PER_PLACE_MAX) throw bad(`schema: the schemas that would judge one place of a record weigh more than ${WEIGHT_PER_PLACE_MAX} (enum and const values, properties, required names, patterns: multiplied by allOf, $ref, ...)`);
      refs = Math.max(refs, refsHere);
      for (const c of inPlace(s)) visit(c, depth + 1, refsHere + (isObj(s) && typeof s.$ref === 'string' && c === resolve(s.$ref) ? 1 : 0));
    };
    for (const s of start) visit(s, 0, 0);
    return { all: out, refs };
  };
  const seen = new Map<string, number>();
  const explore = (start: readonly unknown[], depth: number, calls: number): void => {
    if (start.length === 0 || depth > RECORD_DEPTH_MAX) return;
    const key = `${depth}:${start.map(idOf).sort((a, b) => a - b).join(',')}`;
    // Explored again only with more $refs around it: the stack is what that bounds.
    if ((seen.get(key) ?? -1) >= calls) return;
    seen.set(key, calls);
    step();
    const { all, refs } = closure(start);
    const here = all.filter(isObj);
    calls += refs + 1;
    if (calls > REF_CALLS_MAX) throw bad(`schema: judging a record would go through more than ${REF_CALLS_MAX} $refs and levels at once (the stack)`);
    // Array items: every item schema (conservatively all of prefixItems too).
    const items: unknown[] = [];
    const common: unknown[] = [];
    const names = new Set<string>();
    const keys: unknown[] = [];
    for (const s of here) {
      if (Array.isArray(s.prefixItems)) items.push(...(s.prefixItems as unknown[]));
      for (const k of ['items', 'contains', 'unevaluatedItems'] as const) if (s[k] !== undefined) items.push(s[k]);
      if (isObj(s.patternProperties)) common.push(...Object.values(s.patternProperties));
      if (s.unevaluatedProperties !== undefined) common.push(s.unevaluatedProperties);
      if (s.propertyNames !== undefined) keys.push(s.propertyNames);
      if (isObj(s.properties)) for (const n of Object.keys(s.properties)) names.add(n);
    }
    explore(items, depth + 1, calls);
    explore(keys, depth + 1, calls);
    // A property's value: its own schemas (or additionalProperties where it has none).
    const child = (name: string | null): unknown[] => {
      const out = [...common];
      for (const s of here) {
        const own = name !== null && isObj(s.properties) && Object.hasOwn(s.properties, name) ? s.properties[name] : undefined;
        if (own !== undefined) out.push(own);
        else if (s.additionalProperties !== undefined) out.push(s.additionalProperties);
      }
      return out;
    };
    for (const n of names) explore(child(n), depth + 1, calls);
    explore(child(null), depth + 1, calls);
  };
  explore([root], 0, 0);
  return heaviest;
}

/** What a JSON value weighs in an enum or const (comparing a record's value to it). */
function jsonWeight(v: unknown): number {
  return typeof v === 'object' && v !== null ? Math.ceil((canonicalize(v) as string).length / 64) + 1 : 1;
}

/** A pattern's weight, or a refusal: at most PATTERN_CHARS_MAX characters, counted repeats
 *  of at most PATTERN_REPEAT_MAX. RE2 runs it in time linear in the string, times the size
 *  of its program, which this bounds; records meter what their patterns cost (re2 below). */
function checkPattern(p: string): number {
  if (p.length > PATTERN_CHARS_MAX) throw bad(`schema: a pattern of ${p.length} characters; at most ${PATTERN_CHARS_MAX}`);
  for (const m of p.matchAll(/\{(\d+)(?:,(\d*))?\}/g)) {
    if (Number(m[1]) > PATTERN_REPEAT_MAX || (m[2] !== undefined && m[2] !== '' && Number(m[2]) > PATTERN_REPEAT_MAX)) throw bad(`schema: a counted repeat over ${PATTERN_REPEAT_MAX} in a pattern`);
  }
  return Math.ceil(p.length / 8);
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

/** A schema compiled: its judge, the weight of its heaviest place (boundSchema), the RE2
 *  instructions its patterns hold. */
interface Compiled {
  readonly validate: ValidateFunction;
  readonly heaviest: number;
  readonly insts: number;
}

/** Compiled schemas by their canonical form (replicas compile the same schema to the same
 *  judge; the cache only saves time), least recently used first. Bounded in count and in
 *  the RE2 programs they hold; nothing else keeps a judge alive (definitions map to their
 *  canonical form only), so these bounds are the judges' memory. */
const compiled = new Map<string, Compiled>();
const COMPILED_MAX = 64;
const COMPILED_INSTS_MAX = 256 * 1024;
let compiledInsts = 0;

/** The canonical form of each definition's schema (definitions are cached by their users,
 *  records.ts): none to compute per record. */
const keys = new WeakMap<CollectionDef, string>();

function compile(def: CollectionDef): Compiled {
  let key = keys.get(def);
  if (key === undefined) keys.set(def, (key = canonicalize(def.schema) as string));
  const known = compiled.get(key);
  if (known !== undefined) {
    compiled.delete(key);
    compiled.set(key, known);
    return known;
  }
  const fresh = compileSchema(key);
  compiled.set(key, fresh);
  compiledInsts += fresh.insts;
  for (const [k, c] of compiled) {
    if (compiled.size <= COMPILED_MAX && compiledInsts <= COMPILED_INSTS_MAX) break;
    if (c === fresh) break;
    compiled.delete(k);
    compiledInsts -= c.insts;
  }
  return fresh;
}

/** Bounds and compiles a schema from its canonical form, whatever order the caller's object
 *  had: the judge (and the order of its errors) is then the same on a replica that compiled
 *  it from the log and one that compiled it from its stored definition (helper-49). */
function compileSchema(key: string): Compiled {
  const schema = JSON.parse(key) as object;
  const heaviest = boundSchema(schema);
  compileInsts = 0;
  let validate: ValidateFunction;
  try {
    validate = newAjv().compile(schema);
  } catch (e) {
    // Only Ajv's refusals of the schema: anything else (the stack, the heap) is no judgment
    // of the schema, and must not become one that replicas could make apart (helper-49).
    if (e instanceof RangeError || !(e instanceof Error)) throw e;
    throw bad(e instanceof CollectionError ? `schema: ${e.message}` : `schema: ${e.message.slice(0, 300)}`);
  }
  return { validate, heaviest, insts: compileInsts };
}

/** Checks `record` (untrusted JSON) against `def`: a JSON object within the bounds, valid by
 *  the schema; returns it. Throws CollectionError (`schema_violation` with up to
 *  SCHEMA_ERRORS_MAX errors). */
export function checkRecord(def: CollectionDef, record: unknown): Record<string, Json> {
  return judgeRecord(def, record).record;
}

/** checkRecord, with the record's canonical JSON (computed once). */
export function judgeRecord(def: CollectionDef, record: unknown): { record: Record<string, Json>; json: string } {
  if (!isObj(record)) throw bad('a record is a JSON object');
  const nodes = judgedJson(() => checkJsonNodes(record, 'record'));
  const json = canonicalize(record) as string;
  const bytes = Buffer.byteLength(json);
  if (bytes > RECORD_BYTES_MAX) throw bad(`record: ${bytes} bytes; at most ${RECORD_BYTES_MAX}`);
  const { validate, heaviest } = compile(def);
  if (nodes * heaviest > RECORD_WEIGHT_MAX) {
    throw new CollectionError('schema_violation', `judging the record would weigh ${nodes} values times ${heaviest} (its schema's heaviest place), over ${RECORD_WEIGHT_MAX}: fewer values, or a lighter schema`, [{ path: '', keyword: 'schema', message: 'too costly to judge' }]);
  }
  judgeWork = 0;
  if (!validate(record)) {
    const errors = (validate.errors ?? []).slice(0, SCHEMA_ERRORS_MAX).map((e) => ({ path: e.instancePath, keyword: e.keyword, message: e.message ?? e.keyword }));
    throw new CollectionError('schema_violation', `the record does not match the schema of its collection (${errors.length} error${errors.length === 1 ? '' : 's'} shown)`, errors);
  }
  return { record: record as Record<string, Json>, json };
}

/** A primary key value: a string of 1 to 1024 bytes, or a safe integer. */
export type Pk = string | number;

export function checkPk(def: CollectionDef, v: unknown): Pk {
  if (def.primaryKey.type === 'integer') {
    if (typeof v !== 'number' || !Number.isSafeInteger(v)) throw bad('the primary key is a safe integer');
    return v;
  }
  if (typeof v !== 'string' || v === '' || Buffer.byteLength(v) > 1024 || !wellFormed(v)) throw bad('the primary key is a string of 1 to 1024 bytes');
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
