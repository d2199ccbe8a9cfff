#!/usr/bin/env node
// Starts an N-node Pangea cluster on this machine (default 3) with data under DIR, on free
// loopback ports. Prints each node's HTTP address and peer id, and returns once every node
// is a ready voter. `bin/cluster-down.js DIR` stops exactly the nodes this started.
//
//   bin/cluster-up.js DIR [--nodes N] [--admin-token-file FILE] [-- extra serve flags]
import { spawn } from 'node:child_process';
import { mkdirSync, openSync, readFileSync, writeFileSync, existsSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const args = process.argv.slice(2);
const sep = args.indexOf('--');
const extra = sep >= 0 ? args.slice(sep + 1) : [];
const own = sep >= 0 ? args.slice(0, sep) : args;
const dir = own.find((a, i) => !a.startsWith('--') && !own[i - 1]?.startsWith('--'));
if (!dir) {
  console.error('usage: bin/cluster-up.js DIR [--nodes N] [--admin-token-file FILE] [-- serve flags]');
  process.exit(2);
}
const flag = (name) => {
  const i = own.indexOf(`--${name}`);
  return i >= 0 ? own[i + 1] : undefined;
};
const count = Number(flag('nodes') ?? 3);
if (!Number.isInteger(count) || count < 1 || count > 15) {
  console.error('--nodes must be an integer from 1 to 15');
  process.exit(2);
}
const tokenFile = flag('admin-token-file');
const root = resolve(dir);
const run = join(fileURLToPath(new URL('.', import.meta.url)), 'run.js');
const pidsFile = join(root, 'cluster.pids');
const timeoutMs = Number(process.env.PANGEA_CLUSTER_TIMEOUT_MS ?? 60_000);
mkdirSync(root, { recursive: true });

const started = [];
function startNode(i, joinUrl) {
  const dataDir = join(root, `node${i}`);
  mkdirSync(dataDir, { recursive: true });
  rmSync(join(dataDir, 'node.json'), { force: true });
  const serveArgs = [run, 'serve', '--data-dir', dataDir, '--http-listen', '127.0.0.1:0',
    '--p2p-listen', '/ip4/127.0.0.1/udp/0/quic-v1', '--p2p-listen', '/ip4/127.0.0.1/tcp/0', ...extra];
  if (joinUrl) serveArgs.push('--join', joinUrl);
  // Every member needs the archive key node 1 generated when it bootstrapped the cluster.
  if (joinUrl && !extra.includes('--archive-key-file')) serveArgs.push('--archive-key-file', join(root, 'node1', 'archive.key'));
  if (tokenFile) serveArgs.push('--admin-token-file', tokenFile);
  const log = openSync(join(dataDir, 'serve.log'), 'a');
  // Node flags for every node, e.g. PANGEA_NODE_FLAGS="--cpu-prof --cpu-prof-dir=/tmp/prof".
  const nodeFlags = (process.env.PANGEA_NODE_FLAGS ?? '').split(' ').filter((f) => f !== '');
  const child = spawn(process.execPath, [...nodeFlags, ...serveArgs], { detached: true, stdio: ['ignore', log, log] });
  child.unref();
  started.push(child.pid);
  writeFileSync(pidsFile, started.join('\n') + '\n');
  return { dataDir, pid: child.pid };
}

async function waitFor(what, fn) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch { /* not yet */ }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function nodeInfo(n) {
  return waitFor(`node ${n.dataDir} to start (see its serve.log)`, () => {
    if (!existsSync(join(n.dataDir, 'node.json'))) return null;
    const info = JSON.parse(readFileSync(join(n.dataDir, 'node.json'), 'utf8'));
    return info.pid === n.pid ? info : null;
  });
}

try {
  const first = startNode(1, null);
  const infos = [await nodeInfo(first)];
  for (let i = 2; i <= count; i++) infos.push(await nodeInfo(startNode(i, infos[0].http)));
  await waitFor('every node to be a ready voter', async () => {
    for (const info of infos) {
      const ready = await fetch(`${info.http}/readyz`);
      if (ready.status !== 200) return false;
    }
    const view = await (await fetch(`${infos[0].http}/v1/cluster`)).json();
    return infos.every((info) => view.members.some((m) => m.peerId === info.peerId && m.role === 'voter'));
  });
  for (const [i, info] of infos.entries()) console.log(`node${i + 1} ${info.http} ${info.peerId}`);
} catch (err) {
  console.error(`cluster-up failed: ${err.message}; stopping what it started`);
  for (const pid of started) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
  process.exit(1);
}
