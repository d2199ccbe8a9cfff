/**
 * The blocks judge (src/state/blocks.ts): transforms apply in order (inserts, updates,
 * deletes), splices are never clamped, a failing step changes nothing, bodies are stored in
 * one canonical form whatever their key order, and bad input is refused with the contract's
 * code, against a model over random actions.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { BlockError, DEPTH_MAX, applyTransform, canonicalBody, checkBlockId, decodeBody, parseReads, parseTransform, type Body } from '../../src/state/blocks.js';

const code = (fn: () => unknown): string | null => {
  try {
    fn();
    return null;
  } catch (e) {
    if (e instanceof BlockError) return e.code;
    throw e;
  }
};

test('a transform applies inserts, then updates, then deletes; splices are exact', () => {
  const blocks = new Map<string, Body>([['a', { list: [1, 2, 3], n: 1 }]]);
  const t = parseTransform({
    inserts: { b: { z: 1, a: [true] } },
    updates: { a: [{ op: 'splice', field: 'list', index: 1, deleteCount: 1, insert: ['x', 'y'] }, { op: 'set', field: 'n', value: { deep: [null] } }], b: [{ op: 'set', field: 'k', value: 2 }] },
    deletes: [],
  });
  const out = applyTransform((id) => blocks.get(id), t);
  assert.deepEqual([...out.keys()], ['a', 'b']);
  assert.equal(Buffer.from(out.get('a')!).toString(), '{"list":[1,"x","y",3],"n":{"deep":[null]}}');
  assert.equal(Buffer.from(out.get('b')!).toString(), '{"a":[true],"k":2,"z":1}');
  assert.deepEqual(blocks.get('a'), { list: [1, 2, 3], n: 1 }, 'the caller\'s body is untouched');
  // Deleted after its update: only the delete is left.
  const d = applyTransform((id) => blocks.get(id), parseTransform({ updates: { a: [{ op: 'set', field: 'n', value: 2 }] }, deletes: ['a'] }));
  assert.deepEqual([...d], [['a', null]]);
});

test('what cannot apply is invalid_operation and changes nothing; malformed input is bad_request', () => {
  const blocks = new Map<string, Body>([['a', { list: [1, 2, 3], s: 'x' }]]);
  const apply = (t: unknown) => code(() => applyTransform((id) => blocks.get(id), parseTransform(t)));
  const splice = (index: unknown, deleteCount: unknown, field = 'list') => ({ updates: { a: [{ op: 'splice', field, index, deleteCount, insert: [] }] } });
  assert.equal(apply(splice(3, 0)), null, 'at the end');
  assert.equal(apply(splice(2, 2)), 'invalid_operation', 'past the end: not clamped');
  assert.equal(apply(splice(4, 0)), 'invalid_operation');
  assert.equal(apply(splice(-1, 0)), 'invalid_operation', 'negative');
  assert.equal(apply(splice(0.5, 0)), 'invalid_operation', 'fractional');
  assert.equal(apply(splice(0, 1, 's')), 'invalid_operation', 'not an array');
  assert.equal(apply(splice(0, 0, 'missing')), 'invalid_operation');
  assert.equal(apply({ inserts: { a: {} } }), 'invalid_operation', 'insert over a block');
  assert.equal(apply({ updates: { b: [] } }), 'invalid_operation', 'update of no block');
  assert.equal(apply({ deletes: ['b'] }), 'invalid_operation', 'delete of no block');
  // A later step failing undoes nothing visible: the caller's state was never changed.
  assert.equal(apply({ inserts: { c: { v: 1 } }, updates: { a: [{ op: 'set', field: 'v', value: 1 }, { op: 'splice', field: 'list', index: 9, deleteCount: 0, insert: [] }] } }), 'invalid_operation');
  assert.deepEqual([...blocks.keys()], ['a']);
  assert.deepEqual(blocks.get('a'), { list: [1, 2, 3], s: 'x' });

  for (const t of [
    null, [], 'x', { inserts: { a: [] } }, { inserts: { a: 'body' } }, { inserts: { 'bad id!': {} } }, { inserts: { ['x'.repeat(257)]: {} } },
    { updates: { a: [{ op: 'move', field: 'list' }] } }, { updates: { a: [{ op: 'set', field: '__proto__', value: 1 }] } },
    { updates: { a: [{ op: 'set', field: 'constructor', value: 1 }] } }, { inserts: { c: JSON.parse('{"x":{"__proto__":{"polluted":1}}}') as unknown } },
    { inserts: { c: { prototype: 1 } } }, { updates: { a: [{ op: 'set', field: 'v' }] } }, { deletes: ['a', 'a'] }, { extra: 1 },
    { inserts: { c: { n: Number.NaN } } },
  ]) {
    assert.equal(apply(t), 'bad_request', JSON.stringify(t));
  }
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
});

test('nesting deeper than 64 is refused, and so is a body over 1 MiB', () => {
  let deep: unknown = 1;
  for (let i = 0; i < DEPTH_MAX + 1; i++) deep = { d: deep };
  assert.equal(code(() => parseTransform({ inserts: { a: deep } })), 'bad_request');
  let ok: unknown = 1;
  for (let i = 0; i < DEPTH_MAX; i++) ok = { d: ok };
  assert.equal(code(() => parseTransform({ inserts: { a: ok } })), null);
  // A set that nests an ok body one level deeper than allowed.
  const blocks = new Map<string, Body>([['a', ok as Body]]);
  assert.equal(code(() => applyTransform((id) => blocks.get(id), parseTransform({ updates: { a: [{ op: 'set', field: 'more', value: ok }] } }))), 'bad_request');
  // 100,000 levels: refused without overflowing the stack.
  let huge: unknown = 1;
  for (let i = 0; i < 100_000; i++) huge = [huge];
  assert.equal(code(() => parseTransform({ inserts: { a: { huge } } })), 'bad_request');
  const big = { s: 'x'.repeat(1024 * 1024) };
  assert.equal(code(() => applyTransform(() => undefined, parseTransform({ inserts: { a: big } }))), 'invalid_operation');
});

test('reads must name every block updated or deleted', () => {
  const t = parseTransform({ updates: { a: [] }, deletes: ['b'], inserts: { c: {} } });
  assert.equal(code(() => parseReads([{ id: 'a', revision: 3 }], t)), 'bad_request');
  assert.equal(code(() => parseReads([{ id: 'a', revision: 3 }, { id: 'b', revision: 0 }], t)), null);
  assert.equal(code(() => parseReads([{ id: 'a', revision: -1 }, { id: 'b', revision: 0 }], t)), 'bad_request');
  assert.equal(code(() => parseReads([{ id: 'a', revision: 1 }, { id: 'a', revision: 1 }, { id: 'b', revision: 0 }], t)), 'bad_request');
  assert.equal(code(() => checkBlockId('ok.id~-_9')), null);
});

/** Random JSON without forbidden fields, shallow. */
const json = fc.letrec((tie) => ({
  value: fc.oneof({ depthSize: 'small' }, fc.constantFrom(null, true, false), fc.integer(), fc.double({ noNaN: true, noDefaultInfinity: true }), fc.string(), fc.array(tie('value'), { maxLength: 4 }), tie('object')),
  object: fc.dictionary(fc.string().filter((k) => !['__proto__', 'constructor', 'prototype'].includes(k)), tie('value'), { maxKeys: 4 }),
})).object;

test('canonical bodies: one form whatever the key order, and stable through a round trip', () => {
  fc.assert(
    fc.property(json, (body) => {
      const bytes = canonicalBody(body as Body);
      const reversed = Object.fromEntries(Object.entries(body).reverse());
      assert.deepEqual(canonicalBody(reversed as Body), bytes);
      assert.deepEqual(canonicalBody(decodeBody(bytes)), bytes);
    }),
    { numRuns: 500 },
  );
});

test('random transforms against a model: equal bodies, or both refuse and nothing changes', () => {
  const ids = ['a', 'b', 'c'];
  const op = fc.oneof(
    fc.record({ op: fc.constant('set'), field: fc.constantFrom('x', 'list'), value: fc.oneof(fc.integer(), fc.array(fc.integer(), { maxLength: 3 })) }),
    fc.record({ op: fc.constant('splice'), field: fc.constantFrom('x', 'list'), index: fc.integer({ min: 0, max: 5 }), deleteCount: fc.integer({ min: 0, max: 5 }), insert: fc.array(fc.integer(), { maxLength: 3 }) }),
  );
  const transform = fc.record({
    inserts: fc.dictionary(fc.constantFrom(...ids), fc.record({ list: fc.array(fc.integer(), { maxLength: 4 }) }), { maxKeys: 2 }),
    updates: fc.dictionary(fc.constantFrom(...ids), fc.array(op, { maxLength: 3 }), { maxKeys: 2 }),
    deletes: fc.uniqueArray(fc.constantFrom(...ids), { maxLength: 2 }),
  });
  fc.assert(
    fc.property(fc.array(transform, { maxLength: 12 }), (actions) => {
      const store = new Map<string, Uint8Array>();
      const model = new Map<string, Record<string, unknown>>();
      for (const raw of actions) {
        const t = parseTransform(raw);
        let got: Map<string, Uint8Array | null> | 'refused';
        try {
          got = applyTransform((id) => (store.has(id) ? decodeBody(store.get(id)!) : undefined), t);
        } catch (e) {
          assert.ok(e instanceof BlockError && e.code === 'invalid_operation', String(e));
          got = 'refused';
        }
        const next = modelApply(model, raw);
        if (next === 'refused' || got === 'refused') {
          assert.equal(got, next);
          continue;
        }
        for (const [id, bytes] of got) if (bytes === null) store.delete(id); else store.set(id, bytes);
        model.clear();
        for (const [k, v] of next) model.set(k, v);
        assert.deepEqual([...store.keys()].sort(), [...model.keys()].sort());
        for (const [id, body] of model) assert.deepEqual(decodeBody(store.get(id)!), body);
      }
    }),
    { numRuns: 300 },
  );
});

/** The contract's rules, written plainly. */
function modelApply(blocks: Map<string, Record<string, unknown>>, t: { inserts: Record<string, unknown>; updates: Record<string, { op: string; field: string; value?: unknown; index?: number; deleteCount?: number; insert?: unknown[] }[]>; deletes: string[] }): Map<string, Record<string, unknown>> | 'refused' {
  const next = new Map([...blocks].map(([k, v]) => [k, JSON.parse(JSON.stringify(v)) as Record<string, unknown>]));
  for (const [id, body] of Object.entries(t.inserts)) {
    if (next.has(id)) return 'refused';
    next.set(id, JSON.parse(JSON.stringify(body)) as Record<string, unknown>);
  }
  for (const [id, ops] of Object.entries(t.updates)) {
    const body = next.get(id);
    if (body === undefined) return 'refused';
    for (const o of ops) {
      if (o.op === 'set') body[o.field] = JSON.parse(JSON.stringify(o.value)) as unknown;
      else {
        const arr = body[o.field];
        if (!Array.isArray(arr) || o.index! + o.deleteCount! > arr.length) return 'refused';
        const copy: unknown[] = [];
        for (let i = 0; i < o.index!; i++) copy.push(arr[i]);
        for (const x of o.insert!) copy.push(x);
        for (let i = o.index! + o.deleteCount!; i < arr.length; i++) copy.push(arr[i]);
        body[o.field] = copy;
      }
    }
  }
  for (const id of t.deletes) {
    if (!next.delete(id)) return 'refused';
  }
  return next;
}
