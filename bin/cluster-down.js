#!/usr/bin/env node
// Stops exactly the nodes `bin/cluster-up.js DIR` started: SIGTERM, then SIGKILL after 10 s.
import { readFileSync, rmSync, existsSync } from 'node:fs';
import { join, resolve } from 'node:path';

const dir = process.argv[2];
if (!dir) {
  console.error('usage: bin/cluster-down.js DIR');
  process.exit(2);
}
const pidsFile = join(resolve(dir), 'cluster.pids');
if (!existsSync(pidsFile)) {
  console.error(`no cluster started under ${dir} (no cluster.pids)`);
  process.exit(1);
}
const pids = readFileSync(pidsFile, 'utf8').split('\n').filter(Boolean).map(Number);
const alive = (pid) => { try { process.kill(pid, 0); return true; } catch { return false; } };
for (const pid of pids) if (alive(pid)) process.kill(pid, 'SIGTERM');
const deadline = Date.now() + 10_000;
while (pids.some(alive) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
for (const pid of pids) if (alive(pid)) process.kill(pid, 'SIGKILL');
rmSync(pidsFile);
console.log(`stopped ${pids.length} node(s)`);
