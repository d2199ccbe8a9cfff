/**
 * Real multi-process clusters for tests: each node is `bin/run.js serve` in its own process,
 * on free loopback ports. Every process started here is killed when the test file ends,
 * whether it passed or not.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const RUN = fileURLToPath(new URL('../../../bin/run.js', import.meta.url));
const live = new Set<ChildProcess>();

process.on('exit', () => {
  for (const p of live) p.kill('SIGKILL');
});

export interface NodeInfo {
  pid: number;
  peerId: string;
  http: string;
  p2p: string[];
}

export interface TestNode {
  readonly dataDir: string;
  readonly proc: ChildProcess;
  info: NodeInfo;
  output(): string;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

export function tempDir(prefix = 'pangea-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

export interface StartOptions {
  dataDir: string;
  join?: string;
  /** Reuse these addresses (a restart); default: free ports. */
  httpListen?: string;
  p2pListen?: string[];
  extra?: string[];
}

export async function startNode(opts: StartOptions): Promise<TestNode> {
  // Quiet by default; a test that reads the info lines passes its own --log-level.
  const args = [RUN, 'serve', '--data-dir', opts.dataDir, '--http-listen', opts.httpListen ?? '127.0.0.1:0', ...(opts.extra?.includes('--log-level') ? [] : ['--log-level', 'warn'])];
  for (const a of opts.p2pListen ?? ['/ip4/127.0.0.1/udp/0/quic-v1', '/ip4/127.0.0.1/tcp/0']) args.push('--p2p-listen', a);
  if (opts.join) args.push('--join', opts.join);
  args.push(...(opts.extra ?? []));
  const nodeFile = join(opts.dataDir, 'node.json');
  rmSync(nodeFile, { force: true });
  // Node flags for every node, e.g. PANGEA_NODE_FLAGS='--cpu-prof --cpu-prof-dir=/tmp/prof'.
  const nodeFlags = (process.env.PANGEA_NODE_FLAGS ?? '').split(' ').filter((f) => f !== '');
  const proc = spawn(process.execPath, [...nodeFlags, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(proc);
  let out = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<void>((resolve) => proc.once('exit', () => {
    live.delete(proc);
    resolve();
  }));
  const info = await waitFor(`node in ${opts.dataDir} to start:\n${out}`, () => {
    if (proc.exitCode !== null) throw new Error(`node exited with ${proc.exitCode}:\n${out}`);
    if (!existsSync(nodeFile)) return null;
    const i = JSON.parse(readFileSync(nodeFile, 'utf8')) as NodeInfo;
    return i.pid === proc.pid ? i : null;
  }, 30_000);
  return {
    dataDir: opts.dataDir,
    proc,
    info,
    output: () => out,
    async kill(signal: NodeJS.Signals = 'SIGKILL') {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      await exited;
    },
  };
}

/** Polls `fn` until it returns a value other than null/undefined/false, or throws on timeout. */
export async function waitFor<T>(what: string, fn: () => T | null | undefined | false | Promise<T | null | undefined | false>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown = null;
  for (;;) {
    try {
      const v = await fn();
      if (v !== null && v !== undefined && v !== false) return v;
    } catch (err) {
      if (err instanceof Error && err.message.startsWith('node exited')) throw err;
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? ` (last error: ${String(last)})` : ''}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export async function killAll(): Promise<void> {
  const all = [...live];
  for (const p of all) p.kill('SIGKILL');
  await Promise.all(all.map((p) => new Promise((r) => (p.exitCode !== null || p.signalCode !== null ? r(null) : p.once('exit', r)))));
}

export async function clusterView(http: string): Promise<{ clusterId: string; leader: string | null; members: { peerId: string; role: string; http: string }[]; commitIndex: number; appliedIndex: number; chain: string; applyLevel: number }> {
  const res = await fetch(`${http}/v1/cluster`, { signal: AbortSignal.timeout(2000) });
  if (!res.ok) throw new Error(`GET /v1/cluster: ${res.status}`);
  return (await res.json()) as never;
}

/** GET /readyz answered 200 (any failure counts as not ready). */
export async function isReady(node: TestNode): Promise<boolean> {
  try {
    return (await fetch(`${node.info.http}/readyz`, { signal: AbortSignal.timeout(1000) })).status === 200;
  } catch {
    return false;
  }
}

/** One sample of a metric from a node's /metrics (the first series; NaN when absent). */
export async function metric(node: TestNode, name: string): Promise<number> {
  const text = await (await fetch(`${node.info.http}/metrics`, { signal: AbortSignal.timeout(2000) })).text();
  const m = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : NaN;
}

/** Every node answers /readyz and is a voter in node 1's view. */
export async function allVoters(nodes: readonly TestNode[]): Promise<boolean> {
  for (const n of nodes) if (!(await isReady(n))) return false;
  const view = await clusterView(nodes[0]!.info.http);
  return nodes.every((n) => view.members.some((m) => m.peerId === n.info.peerId && m.role === 'voter'));
}

/** A cluster of `count` nodes under `root` (n1 bootstraps, the others join it), once every
 *  node is a ready voter. `extra` flags go to every node. */
export async function startCluster(root: string, count = 3, extra: string[] = []): Promise<TestNode[]> {
  const first = await startNode({ dataDir: join(root, 'n1'), extra });
  await waitFor('node 1 to be ready', () => isReady(first));
  const nodes = [first];
  for (let i = 2; i <= count; i++) nodes.push(await startNode({ dataDir: join(root, `n${i}`), join: first.info.http, extra }));
  await waitFor(`${count} ready voters`, () => allVoters(nodes), 60_000);
  return nodes;
}

/** The node that leads, as its peers see it. */
export async function leaderOf(nodes: readonly TestNode[]): Promise<TestNode> {
  return waitFor('a leader', async () => {
    const view = await clusterView(nodes[0]!.info.http);
    return nodes.find((n) => n.info.peerId === view.leader) ?? null;
  });
}

/** A process's resident set, its peak so far, and the anonymous (heap) and file-backed
 *  (LMDB's map) parts of it now, in bytes (Linux /proc). */
export function memoryOf(pid: number): { rss: number; peak: number; anon: number; file: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (name: string): number => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * 1024;
  return { rss: kb('VmRSS'), peak: kb('VmHWM'), anon: kb('RssAnon'), file: kb('RssFile') };
}

export interface Ran {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** `pangea ARGS` with the cluster's endpoints; never throws for a non-zero exit. */
export function pangea(endpoints: string, args: string[], input?: string): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const child = execFile(process.execPath, [RUN, ...args], { timeout: 60_000, env: { ...process.env, PANGEA_ENDPOINTS: endpoints } }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1;
      if (code === -1) return reject(err);
      resolve({ code, stdout, stderr });
    });
    if (input !== undefined) child.stdin!.end(input);
  });
}
