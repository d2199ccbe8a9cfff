/**
 * The collections judge (src/state/collections.ts): definitions, schema validation through
 * Ajv 2020-12 with RE2 for patterns, primary keys, index values and their ordered keys.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { CollectionError, checkRecord, indexValue, orderedKey, parseDefinition, pkOf } from '../../src/state/collections.js';

const users = {
  kind: 'table',
  schema: { type: 'object', properties: { id: { type: 'string' }, age: { type: 'integer', minimum: 0 }, email: { type: 'string', format: 'email' }, tag: { type: 'string', pattern: '^[a-z]+$' } }, required: ['id'] },
  primaryKey: { field: 'id', type: 'string' },
  indexes: [{ name: 'by_age', field: 'age', type: 'integer' }, { name: 'by_email', field: 'email', type: 'string', unique: true }],
};

function code(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    if (e instanceof CollectionError) return e.code;
    throw e;
  }
  return 'ok';
}

test('a definition is checked whole: kind, schema (compiled), primary key, up to 8 indexes', () => {
  const def = parseDefinition(users);
  assert.deepEqual(def.indexes.map((i) => [i.name, i.unique]), [['by_age', false], ['by_email', true]]);
  for (const bad of [
    { ...users, kind: 'heap' },
    { ...users, schema: { $ref: 'https://example.com/s.json' } },
    { ...users, schema: { type: 'object', properties: { a: { $ref: 'http://x/y' } } } },
    { ...users, schema: { type: 'strng' } },
    { ...users, schema: { type: 'string', pattern: '(a)\\1' } }, // a backreference: RE2 has none
    { ...users, schema: { type: 'string', pattern: '(?=a)' } }, // lookahead
    { ...users, primaryKey: { field: 'id', type: 'number' } },
    { ...users, primaryKey: { field: '__proto__', type: 'string' } },
    { ...users, indexes: Array.from({ length: 9 }, (_, i) => ({ name: `i${i}`, field: 'age', type: 'integer' })) },
    { ...users, indexes: [{ name: 'a', field: 'age', type: 'integer' }, { name: 'a', field: 'id', type: 'string' }] },
    { ...users, extra: 1 },
    { ...users, kind: 'diary', primaryKey: { field: 'id', type: 'string' } },
    { ...users, schema: { type: 'object', description: 'x'.repeat(70_000) } },
  ]) assert.equal(code(() => parseDefinition(bad)), 'bad_request', JSON.stringify(bad).slice(0, 120));
});

test('records: valid ones pass; a refusal names the first error the schema finds (judging stops there); a catastrophic pattern cannot stall', () => {
  const def = parseDefinition(users);
  assert.equal(pkOf(def, checkRecord(def, { id: 'u1', age: 30, email: 'a@b.example', tag: 'abc' })), 'u1');
  try {
    checkRecord(def, { id: 'u2', age: -1, email: 'nope', tag: 'ABC' });
    assert.fail('refused');
  } catch (e) {
    assert.ok(e instanceof CollectionError && e.code === 'schema_violation');
    assert.equal(e.errors.length, 1);
    assert.ok(['/age minimum', '/email format', '/tag pattern'].includes(`${e.errors[0]!.path} ${e.errors[0]!.keyword}`), JSON.stringify(e.errors));
  }
  const many = parseDefinition({ kind: 'table', schema: { type: 'object', additionalProperties: { type: 'integer' } }, primaryKey: { field: 'id', type: 'integer' } });
  try {
    checkRecord(many, Object.fromEntries(Array.from({ length: 30 }, (_, i) => [`f${i}`, 'x'])));
    assert.fail('refused');
  } catch (e) {
    assert.equal((e as CollectionError).errors.length, 1);
  }
  const evil = parseDefinition({ kind: 'table', schema: { type: 'object', properties: { s: { type: 'string', pattern: '^(a+)+$' } } }, primaryKey: { field: 'id', type: 'integer' } });
  const started = performance.now();
  assert.equal(code(() => checkRecord(evil, { id: 1, s: `${'a'.repeat(50_000)}!` })), 'schema_violation');
  assert.ok(performance.now() - started < 2_000, `the pattern took ${performance.now() - started} ms on 50 KB`);
  for (const bad of [null, [], 'x', { id: 1, __proto__x: 1, constructor: 2 }]) assert.notEqual(code(() => checkRecord(many, bad)), 'ok');
});

test('index values: missing or null is not indexed; a wrong type is invalid_operation; ordered keys sort as the values', () => {
  const def = parseDefinition(users);
  const [byAge, byEmail] = def.indexes as [typeof def.indexes[0], typeof def.indexes[0]];
  assert.equal(indexValue(byAge, { id: 'a' }), null);
  assert.equal(indexValue(byAge, { id: 'a', age: null }), null);
  assert.equal(indexValue(byAge, { id: 'a', age: 5 }), 5);
  assert.equal(code(() => indexValue(byAge, { id: 'a', age: 5.5 })), 'invalid_operation');
  assert.equal(code(() => indexValue(byEmail, { id: 'a', email: 3 })), 'invalid_operation');
  const cmp = (a: Uint8Array, b: Uint8Array): number => Buffer.compare(a, b);
  fc.assert(fc.property(fc.double({ noNaN: true, noDefaultInfinity: false }), fc.double({ noNaN: true }), (a, b) => Math.sign(cmp(orderedKey(a), orderedKey(b))) === Math.sign(a === b || (a === 0 && b === 0) ? 0 : a < b ? -1 : 1)), { numRuns: 2_000 });
  fc.assert(fc.property(fc.string({ unit: 'binary' }), fc.string({ unit: 'binary' }), (a, b) => Math.sign(cmp(orderedKey(a), orderedKey(b))) === Math.sign(Buffer.compare(Buffer.from(a), Buffer.from(b)))), { numRuns: 2_000 });
  assert.ok(cmp(orderedKey(false), orderedKey(true)) < 0 && cmp(orderedKey(true), orderedKey(-1e300)) < 0 && cmp(orderedKey(1e300), orderedKey('')) < 0);
});

test('schemas whose judging of a record is unbounded are refused at define (helper-49); bounded ones, wide or recursive, are not', () => {
  const def = (schema: unknown): unknown => ({ schema, primaryKey: { field: 'id', type: 'integer' } });
  const refused = (schema: unknown, why: RegExp): void => {
    const started = performance.now();
    assert.throws(() => parseDefinition(def(schema)), (e: unknown) => e instanceof CollectionError && e.code === 'bad_request' && why.test(e.message));
    assert.ok(performance.now() - started < 2_000, `refusing took ${performance.now() - started} ms`);
  };
  // Twice itself through items: the work doubled with each level of a record.
  refused({ $defs: { n: { allOf: [{ items: { $ref: '#/$defs/n' } }, { items: { $ref: '#/$defs/n' } }] } }, properties: { a: { $ref: '#/$defs/n' } } }, /more than 64 schemas/);
  // An allOf chain of 28 doubling definitions.
  const chain: Record<string, unknown> = { d28: {} };
  for (let i = 27; i >= 0; i--) chain[`d${i}`] = { allOf: [{ $ref: `#/$defs/d${i + 1}` }, { $ref: `#/$defs/d${i + 1}` }] };
  refused({ $defs: chain, $ref: '#/$defs/d0' }, /more than 64 schemas|nest more than 32/);
  const flat: Record<string, unknown> = { d8: {} };
  for (let i = 7; i >= 0; i--) flat[`d${i}`] = { allOf: [{ $ref: `#/$defs/d${i + 1}` }, { $ref: `#/$defs/d${i + 1}` }] };
  refused({ $defs: flat, $ref: '#/$defs/d0' }, /more than 64 schemas/);
  // A chain of 150 $refs at one place (the stack at apply).
  const refs: Record<string, unknown> = { d150: { items: { $ref: '#/$defs/d0' } } };
  for (let i = 149; i >= 0; i--) refs[`d${i}`] = { minItems: 0, $ref: `#/$defs/d${i + 1}` };
  refused({ $defs: refs, $ref: '#/$defs/d0' }, /nest more than 32/);
  refused({ $ref: '#' }, /nest more than 32/);
  refused({ properties: { a: { uniqueItems: true } } }, /uniqueItems needs "maxItems"/);
  refused({ $defs: { x: { $anchor: 'x' } } }, /"\$anchor" is not supported/);
  // The legacy dependencies keyword recursed in place past the bound (helper-50).
  refused({ properties: { x: { dependencies: { a: { $ref: '#/properties/x' } } } } }, /"dependencies" is not supported/);
  refused({ properties: { s: { type: 'string', pattern: '[a-z]{1000}[0-9]' } } }, /counted repeat over 64/);
  refused({ properties: { s: { type: 'string', pattern: 'a'.repeat(300) } } }, /at most 256/);
  refused({ items: { allOf: Array.from({ length: 31 }, () => ({ $ref: '#/$defs/e' })) }, $defs: { e: { enum: Array.from({ length: 12_000 }, (_, i) => i) } } }, /weigh more than 4096/);
  refused({ properties: { t: { type: 'string', format: 'date-time', formatMinimum: '2024-01-01T12:00:00' } } }, /formatMinimum|strict/);
  refused({ $ref: '#/$defs/none' }, /points at nothing/);
  // Bounded: a recursive tree that descends, a wide schema of 120 properties over one
  // definition of 120 properties (inlined, 300 x 300 compiled for 39 s in 2.7 GB),
  // uniqueItems with maxItems.
  const tree = parseDefinition(def({ $defs: { node: { type: 'object', properties: { name: { type: 'string' }, children: { type: 'array', items: { $ref: '#/$defs/node' } } } } }, $ref: '#/$defs/node' }));
  assert.equal(code(() => checkRecord(tree, { id: 1, name: 'a', children: [{ name: 'b', children: [{ name: 'c', children: [] }] }] })), 'ok');
  assert.equal(code(() => checkRecord(tree, { id: 1, name: 'a', children: [{ name: 2 }] })), 'schema_violation');
  const big = Object.fromEntries(Array.from({ length: 120 }, (_, i) => [`q${i}`, { type: 'integer' }]));
  const started = performance.now();
  const wide = parseDefinition(def({ $defs: { big: { type: 'object', properties: big } }, properties: Object.fromEntries(Array.from({ length: 120 }, (_, i) => [`p${i}`, { $ref: '#/$defs/big' }])) }));
  assert.ok(performance.now() - started < 10_000, `a wide schema took ${performance.now() - started} ms to define`);
  assert.equal(code(() => checkRecord(wide, { id: 1, p7: { q3: 'x' } })), 'schema_violation');
  assert.equal(code(() => checkRecord(parseDefinition(def({ properties: { a: { uniqueItems: true, maxItems: 100 } } })), { id: 1, a: [1, 2, 1] })), 'schema_violation');
  assert.equal(code(() => checkRecord(parseDefinition(def({ properties: { a: { uniqueItems: true, maxItems: 100 } } })), { id: 1, a: [{ x: 1, y: [2] }, { y: [2], x: 1.0 }] })), 'schema_violation');
  assert.equal(code(() => checkRecord(parseDefinition(def({ properties: { a: { uniqueItems: true, maxItems: 100 } } })), { id: 1, a: [{ x: 1 }, { x: '1' }, 1, '1', [1]] })), 'ok');
  // Formats that compiled each string (regex: hours a record) or stay quadratic (url), and a
  // schema too wide to compile within the stack (1,700 properties overflowed it, at define
  // or at the first record: helper-52), are refused; so are patterns past RE2's instruction
  // bounds (nested counted repeats), one or in all.
  refused({ properties: { r: { type: 'string', format: 'regex' } } }, /format "regex" is not supported/);
  refused({ properties: { r: { type: 'string', format: 'url' } } }, /format "url" is not supported \(use "uri"\)/);
  refused({ properties: Object.fromEntries(Array.from({ length: 1_700 }, (_, i) => [i.toString(36), { const: 1 }])) }, /keywords and entries .* at most 512/);
  const unit = '(?:[a-c]{64}){15}'; // about 960 instructions
  refused({ properties: { s: { type: 'string', pattern: unit.repeat(5) } } }, /RE2 instructions; at most 4096/);
  refused({ properties: Object.fromEntries(Array.from({ length: 10 }, (_, i) => [`p${i}`, { type: 'string', pattern: `${unit.repeat(4)}${i}` }])) }, /more than 32768 RE2 instructions in all/);
  // Ajv's lint of pattern properties against named ones ran V8's RegExp (exponential here,
  // and V8 versions parse apart), and it wrote a dependentRequired list as one expression
  // nested once a name (1,000 names compiled in 3.3 s; 2,000 overflowed the stack): neither
  // now (helper-53).
  const defining = performance.now();
  parseDefinition(def({ patternProperties: { '^(a|a)*$': { type: 'string' } }, properties: { [`${'a'.repeat(40)}b`]: {} } }));
  parseDefinition(def({ patternProperties: { '(?i:a)': { type: 'string' } }, properties: { x: {} } }));
  const names = Array.from({ length: 3_000 }, (_, i) => `n${i}`);
  const lists = parseDefinition(def({ properties: { c: { dependentRequired: { x: names } } } }));
  assert.ok(performance.now() - defining < 1_000, `defining took ${performance.now() - defining} ms`);
  assert.equal(code(() => checkRecord(lists, { id: 1, c: { x: 1 } })), 'schema_violation');
  assert.equal(code(() => checkRecord(lists, { id: 1, c: { y: 1 } })), 'ok');
  assert.equal(code(() => checkRecord(lists, { id: 1, c: Object.fromEntries(['x', ...names].map((n) => [n, 1])) })), 'ok');
  assert.equal(code(() => checkRecord(lists, { id: 1, c: { x: 1, ...Object.fromEntries(names.slice(1).map((n) => [n, 1])) } })), 'schema_violation');
  refused({ dependentRequired: { x: 5 } }, /must be array|dependentRequired/);
  // minProperties and maxProperties count an object's keys each time: weighed as such.
  refused({ properties: { o: { allOf: Array.from({ length: 63 }, () => ({ minProperties: 1, maxProperties: 1e9 })) } } }, /weigh more than 4096/);
  // Inherited properties are not the record's (Ajv's ownProperties).
  assert.equal(code(() => checkRecord(parseDefinition(def({ required: ['toString', 'valueOf'] })), { id: 1 })), 'schema_violation');
  assert.equal(code(() => checkRecord(parseDefinition(def({ properties: { toString: { type: 'string' } } })), { id: 1 })), 'ok');
});

test('what a record costs to judge is metered alike on every replica: patterns by their work, formats by the string\'s length (helper-50)', () => {
  const def = (schema: unknown) => parseDefinition({ schema, primaryKey: { field: 'id', type: 'integer' } });
  const pat = def({ properties: { s: { items: { type: 'string', pattern: '[a-z]{64}[0-9]' } } } });
  let started = performance.now();
  assert.equal(code(() => checkRecord(pat, { id: 1, s: Array.from({ length: 20 }, () => 'a'.repeat(50_000)) })), 'schema_violation');
  assert.ok(performance.now() - started < 5_000, `the meter let it run ${performance.now() - started} ms`);
  assert.equal(code(() => checkRecord(pat, { id: 1, s: ['a'.repeat(64) + '1'] })), 'ok');
  const uri = def({ properties: { s: { type: 'string', format: 'uri' } } });
  started = performance.now();
  assert.equal(code(() => checkRecord(uri, { id: 1, s: `http://${'a:'.repeat(100_000)} ` })), 'schema_violation');
  assert.ok(performance.now() - started < 1_000);
  assert.equal(code(() => checkRecord(uri, { id: 1, s: 'https://example.org/a' })), 'ok');
  // Formats are metered by the characters they judge: 62 uri formats at one place over 255
  // strings of 4 KB (about 16 s unmetered, helper-52).
  const uris = def({ properties: { a: { items: { anyOf: [...Array.from({ length: 62 }, () => ({ format: 'uri' })), {}] } } } });
  started = performance.now();
  assert.equal(code(() => checkRecord(uris, { id: 1, a: Array.from({ length: 255 }, () => `http://${':'.repeat(4_000)}`) })), 'schema_violation');
  assert.ok(performance.now() - started < 2_000, `62 formats over 255 strings took ${performance.now() - started} ms`);
  // Patterns cost each call's setup, even over "" (6.8 s unmetered, helper-52).
  const empties = def({ properties: { a: { items: { allOf: Array.from({ length: 63 }, (_, i) => ({ pattern: `[ab]x${i}|^$` })) } } } });
  started = performance.now();
  assert.equal(code(() => checkRecord(empties, { id: 1, a: Array.from({ length: 340_000 }, () => '') })), 'schema_violation');
  assert.ok(performance.now() - started < 2_000, `63 patterns over 340,000 empty strings took ${performance.now() - started} ms`);
  // uniqueItems is linear and metered: 1,000 objects of 100 fields, 4 times at one place.
  const uniqs = def({ properties: { a: { allOf: Array.from({ length: 4 }, () => ({ uniqueItems: true, maxItems: 1000 })) } } });
  const items = Array.from({ length: 1000 }, (_, i) => Object.fromEntries(Array.from({ length: 100 }, (_, j) => [`k${String(j).padStart(3, '0')}`, j === 0 ? i : 0])));
  started = performance.now();
  code(() => checkRecord(uniqs, { id: 1, a: items }));
  assert.ok(performance.now() - started < 2_000, `uniqueItems took ${performance.now() - started} ms`);
  // Values times the heaviest place: an enum of 4,000 over 500,000 values (3.8 s, helper-52).
  const heavy = def({ properties: { a: { items: { enum: [...Array.from({ length: 4_000 }, (_, i) => i + 2), 1] } } } });
  started = performance.now();
  assert.equal(code(() => checkRecord(heavy, { id: 1, a: Array.from({ length: 500_000 }, () => 1) })), 'schema_violation');
  assert.ok(performance.now() - started < 1_000, `the heavy enum took ${performance.now() - started} ms`);
  assert.equal(code(() => checkRecord(heavy, { id: 1, a: [1, 2, 3] })), 'ok');
  const uniq = def({ properties: { a: { maxItems: 1000, uniqueItems: true } } });
  started = performance.now();
  assert.equal(code(() => checkRecord(uniq, { id: 1, a: Array.from({ length: 150_000 }, (_, i) => i) })), 'schema_violation');
  assert.ok(performance.now() - started < 1_000, 'uniqueItems after a failed maxItems');
});
