import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { removeDir, tempDir } from './harness.js';

const run = promisify(execFile);
const bin = (name: string) => fileURLToPath(new URL(`../../../bin/${name}`, import.meta.url));
const dir = tempDir('pangea-scripts-');
const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

after(() => {
  // Whatever happened, nothing this test started survives it.
  const pids = join(dir, 'cluster.pids');
  if (existsSync(pids)) for (const pid of readFileSync(pids, 'utf8').split('\n').filter(Boolean).map(Number)) if (alive(pid)) process.kill(pid, 'SIGKILL');
  removeDir(dir);
});

test('bin/cluster-up.js starts 3 ready voters; bin/cluster-down.js stops exactly them', { timeout: 120_000 }, async () => {
  const up = await run(process.execPath, [bin('cluster-up.js'), dir, '--nodes', '3'], { timeout: 90_000 });
  const lines = up.stdout.trim().split('\n');
  assert.equal(lines.length, 3, up.stdout + up.stderr);
  const https = lines.map((l) => l.split(' ')[1]!);
  for (const http of https) assert.equal((await fetch(`${http}/readyz`)).status, 200);
  const view = (await (await fetch(`${https[0]}/v1/cluster`)).json()) as { members: { role: string }[] };
  assert.equal(view.members.filter((m) => m.role === 'voter').length, 3);
  assert.equal((await fetch(`${https[2]}/v1/kv/x`, { method: 'PUT', body: 'y' })).status, 200);

  const pids = readFileSync(join(dir, 'cluster.pids'), 'utf8').split('\n').filter(Boolean).map(Number);
  const down = await run(process.execPath, [bin('cluster-down.js'), dir], { timeout: 30_000 });
  assert.match(down.stdout, /stopped 3 node/);
  for (const pid of pids) assert.ok(!alive(pid), `node ${pid} still runs`);
});
