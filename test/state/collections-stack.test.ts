/**
 * The widest schemas a definition may have (SCHEMA_CODE_UNITS_MAX) compile and judge within
 * half of Node's default stack, judged from a deep stack: Ajv nests the code it generates
 * once per property (and keyword, and entry), so a wide enough schema overflowed the stack at
 * define or at its first record, depending on the JIT (helper-52). A RangeError is no
 * judgment, and apply must never meet one.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { SCHEMA_CODE_UNITS_MAX } from '../../src/state/collections.js';

const MODULE = fileURLToPath(new URL('../../src/state/collections.js', import.meta.url));

test('the widest schemas the bound lets through define and judge within 500 KB of stack, from 300 frames deep', () => {
  const L = SCHEMA_CODE_UNITS_MAX;
  const child = `
    import { parseDefinition, judgeRecord } from ${JSON.stringify(MODULE)};
    const L = ${L};
    const names = (n) => Array.from({ length: n }, (_, i) => 'p' + i.toString(36));
    const shapes = {
      properties: { properties: Object.fromEntries(names(L / 2 - 1).map((k) => [k, { const: 1 }])) },
      dependentRequired: { dependentRequired: Object.fromEntries(names(L - 2).map((k) => [k, ['id']])) },
      keywords: { properties: Object.fromEntries(names(Math.floor(L / 4) - 1).map((k) => [k, { type: 'string', maxLength: 5, minLength: 1 }])) },
      nested: (() => { let s = { const: 1 }; const per = Math.floor(L / 30) - 3; for (let d = 0; d < 30; d++) { const p = { a: s }; for (let i = 0; i < per / 2 - 1; i++) p['x' + i] = { const: i }; s = { properties: p }; } return s; })(),
      longList: { properties: { c: { dependentRequired: { x: names(3000) } } } },
      allOf: { allOf: Array.from({ length: 60 }, (_, i) => ({ properties: Object.fromEntries(names(3).map((k) => [k + i, { const: 1 }])) })) },
    };
    const out = {};
    for (const [name, schema] of Object.entries(shapes)) {
      const deep = (d, f) => (d === 0 ? f() : deep(d - 1, f));
      try {
        const def = deep(300, () => parseDefinition({ primaryKey: { field: 'id', type: 'integer' }, schema }));
        for (const record of [{ id: 1 }, { id: 1, p0: 2, p1: 'x', a: { a: 2 } }]) {
          try { deep(300, () => judgeRecord(def, record)); } catch (e) { if (e.name !== 'CollectionError' || e.code !== 'schema_violation') throw e; }
        }
        out[name] = 'ok';
      } catch (e) {
        out[name] = e.name + ': ' + e.message.slice(0, 100);
      }
    }
    console.log(JSON.stringify(out));
  `;
  const run = spawnSync(process.execPath, ['--stack-size=500', '--input-type=module', '-e', child], { encoding: 'utf8', timeout: 120_000 });
  assert.equal(run.status, 0, run.stderr);
  const out = JSON.parse(run.stdout.trim().split('\n').at(-1)!) as Record<string, string>;
  assert.deepEqual(out, { properties: 'ok', dependentRequired: 'ok', keywords: 'ok', nested: 'ok', longList: 'ok', allOf: 'ok' });
});
