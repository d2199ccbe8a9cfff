import assert from 'node:assert/strict';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const srcDir = join(fileURLToPath(new URL('.', import.meta.url)), '..', '..', 'src');

/** Every module under src and the modules it imports (relative imports, types included). */
function importGraph(): Map<string, string[]> {
  const files: string[] = [];
  const walk = (dir: string): void => {
    for (const name of readdirSync(dir)) {
      const path = join(dir, name);
      if (statSync(path).isDirectory()) walk(path);
      else if (name.endsWith('.ts')) files.push(path);
    }
  };
  walk(srcDir);
  const graph = new Map<string, string[]>();
  for (const f of files) {
    const code = readFileSync(f, 'utf8');
    const deps = [...code.matchAll(/^(?:import|export)[^'"]*?from\s+'(\.[^']+)'/gm)].map((m) => resolve(dirname(f), m[1]!.replace(/\.js$/, '.ts')));
    graph.set(f, deps);
  }
  return graph;
}

test('no import cycles under src (layers only point down; eslint.config.js enforces which)', () => {
  const graph = importGraph();
  assert.ok(graph.size > 50, `expected the sources in ${srcDir}`);
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const cycles: string[] = [];
  const visit = (u: string): void => {
    state.set(u, 'open');
    stack.push(u);
    for (const v of graph.get(u) ?? []) {
      if (!graph.has(v)) continue;
      if (state.get(v) === 'open') cycles.push(stack.slice(stack.indexOf(v)).concat(v).map((p) => relative(srcDir, p)).join(' -> '));
      else if (state.get(v) === undefined) visit(v);
    }
    stack.pop();
    state.set(u, 'done');
  };
  for (const f of graph.keys()) if (state.get(f) === undefined) visit(f);
  assert.deepEqual(cycles, []);
});
