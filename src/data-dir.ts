/**
 * A node's data dir as offline operator tools (`pangea prune-hot`, `pangea archive verify
 * --data-dir`) see it: which cluster it belongs to, whether a node runs on it, and an
 * exclusive lock for tools that write to it.
 *
 * Files (written by `pangea serve`, src/server.ts): `cluster.json` ({ format, clusterId, genesis }),
 * `node.json` ({ pid, peerId, http, p2p } of the last `serve` started on it), and the LMDB
 * environment `pangea.mdb` (src/storage/env.ts). `serve` holds `prune.lock` while it runs, and
 * tools that write take it, so neither starts while the other works.
 *
 * ```ts
 * const lock = await lockDataDir(dir);            // throws DataDirError if held or a node runs
 * try { ... } finally { await lock.release(); }
 * ```
 */
import { constants as fsConstants, existsSync, readFileSync, unlinkSync } from 'node:fs';
import { link, open, readFile, rename, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { syncDir } from './durable-file.js';
import { ENV_FILE } from './storage/env.js';

export const CLUSTER_FILE = 'cluster.json';
export const NODE_FILE = 'node.json';
export const LOCK_FILE = 'prune.lock';
/** Written when the node leaves the cluster that removed it: it refuses to start again. */
export const REMOVED_FILE = 'removed.json';
/** The archive key generated at bootstrap (unless --archive-key-file names another). */
export const ARCHIVE_KEY_FILE = 'archive.key';

/**
 * The data-format version a node records in `cluster.json` (`format`; absent means 1). The
 * rule: a build reads every format up to its own and refuses a newer one, which a later build
 * wrote (there is no downgrade: run that build, or restore the dir from a backup or the
 * archive). A build that changes what it keeps on disk raises DATA_FORMAT and migrates older
 * dirs at start, durably, before it serves.
 */
export const DATA_FORMAT = 2;
/*
 * Format 2: apply levels (state/command.ts). Nothing on disk moved, and a format-1 dir is
 * raised to 2 when this build first opens it; the format only keeps builds from before apply
 * levels out of a dir a later build has served (they would apply its log their own way and
 * never know it: review of the apply levels).
 */

/** The format `cluster.json`'s parsed contents record; throws what to do if this build cannot
 *  read it. */
export function checkDataFormat(file: { readonly format?: unknown }, where: string): number {
  const format = file.format ?? 1;
  if (typeof format !== 'number' || !Number.isInteger(format) || format < 1) throw new DataDirError('not_a_node', `${where}: "format" must be a whole number from 1, not ${JSON.stringify(format)}`);
  if (format > DATA_FORMAT) {
    throw new DataDirError('not_a_node', `${where}: data format ${format} was written by a newer Pangea; this build reads formats up to ${DATA_FORMAT}: run that newer build (there is no downgrade), or restore the data dir from a backup or the archive`);
  }
  return format;
}

/** Why a data dir cannot be used: `not_a_node` (usage) or `busy` (a node or tool holds it). */
export class DataDirError extends Error {
  override readonly name = 'DataDirError';
  constructor(
    readonly code: 'not_a_node' | 'busy',
    message: string,
  ) {
    super(message);
  }
}

/** Throws DataDirError('not_a_node') unless `dir` holds a node's cluster file and LMDB environment. */
export function checkNodeDir(dir: string): void {
  for (const f of [CLUSTER_FILE, ENV_FILE]) {
    if (!existsSync(join(dir, f))) throw new DataDirError('not_a_node', `${dir} is not a node's data dir: it has no ${f}`);
  }
  const path = join(dir, CLUSTER_FILE);
  let file: unknown;
  try {
    file = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new DataDirError('not_a_node', `cannot read ${path}: ${(err as Error).message}`);
  }
  if (typeof file !== 'object' || file === null) throw new DataDirError('not_a_node', `${path} is not a JSON object`);
  checkDataFormat(file, path);
}

/** The cluster id recorded in `dir/cluster.json`. */
export async function readClusterId(dir: string): Promise<string> {
  const path = join(dir, CLUSTER_FILE);
  let id: unknown;
  try {
    id = (JSON.parse(await readFile(path, 'utf8')) as { clusterId?: unknown }).clusterId;
  } catch (err) {
    throw new DataDirError('not_a_node', `cannot read ${path}: ${(err as Error).message}`);
  }
  if (typeof id !== 'string' || id === '') throw new DataDirError('not_a_node', `${path} names no clusterId`);
  return id;
}

/** True when a process with this pid exists (EPERM: it does, owned by another user). */
export function pidAlive(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The pid `node.json` names when that process is alive (a node runs on `dir`), else null. */
export async function runningNodePid(dir: string): Promise<number | null> {
  const pid = await readPid(join(dir, NODE_FILE), (text) => (JSON.parse(text) as { pid?: unknown }).pid);
  return pid !== null && pid !== process.pid && pidAlive(pid) ? pid : null;
}

export interface DataDirLock {
  /** Removes the lock file (once). */
  release(): Promise<void>;
}

/**
 * Takes `dir/prune.lock` (created exclusively, holding this process's pid), then checks that
 * no node runs on `dir`. A lock whose pid is dead is stale and taken over. Throws
 * DataDirError('busy') while another live process holds the lock or a node runs; then
 * nothing is left behind. The lock file is also removed if the process exits without
 * `release` (not on SIGKILL: that leaves a stale lock, which the next taker takes over).
 */
export async function lockDataDir(dir: string): Promise<DataDirLock> {
  const path = join(dir, LOCK_FILE);
  if (!(await createLock(path))) {
    const holder = await readPid(path, Number);
    if (holder !== null && pidAlive(holder)) {
      // `serve` holds the lock while it runs, and names itself in node.json.
      if (holder === (await runningNodePid(dir))) throw new DataDirError('busy', `a node is running on ${dir} (pid ${holder}): stop it first`);
      throw new DataDirError('busy', `${path} is held by process ${holder}: another tool works on this data dir`);
    }
    await takeOverStale(path, holder);
    if (!(await createLock(path))) throw new DataDirError('busy', `${path} was taken by another process meanwhile`);
  }
  let held = true;
  const onExit = (): void => {
    if (!held) return;
    try {
      unlinkSync(path);
    } catch {
      // removed already: nothing to release
    }
  };
  process.once('exit', onExit);
  const lock: DataDirLock = {
    async release() {
      if (!held) return;
      held = false;
      process.off('exit', onExit);
      await unlink(path).catch(() => undefined);
    },
  };
  const pid = await runningNodePid(dir);
  if (pid !== null) {
    await lock.release();
    throw new DataDirError('busy', `a node is running on ${dir} (pid ${pid}, from ${NODE_FILE}): stop it first`);
  }
  return lock;
}

/**
 * Creates the lock file holding our pid; false when it exists. The pid is written to a file
 * of our own first and hard-linked into place (link() refuses an existing name, like
 * O_EXCL), so a lock file is never seen empty.
 */
async function createLock(path: string): Promise<boolean> {
  const dir = dirname(path);
  const temp = `${path}.${process.pid}`;
  const fh = await open(temp, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_TRUNC, 0o644);
  try {
    await fh.writeFile(`${process.pid}\n`);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await link(temp, path);
    await syncDir(dir);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  } finally {
    await unlink(temp).catch(() => undefined);
  }
}

/**
 * Removes a stale lock that named `holder` (dead). It is first renamed aside, which only one
 * of several racing takers can do to a given file; should the file renamed be a fresh lock
 * another taker created meanwhile, it is put back and this taker gives up.
 */
async function takeOverStale(path: string, holder: number | null): Promise<void> {
  const aside = `${path}.stale-${process.pid}`;
  try {
    await rename(path, aside);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return; // released meanwhile
    throw err;
  }
  const moved = await readPid(aside, Number);
  if (moved !== holder && moved !== null && pidAlive(moved)) {
    // Put it back unless yet another lock is there by now (link refuses to replace it).
    await link(aside, path).catch(() => undefined);
    await unlink(aside);
    throw new DataDirError('busy', `${path} was taken by process ${moved} meanwhile`);
  }
  await unlink(aside);
}

/** A pid read from `path` by `parse`; null when the file is absent or holds none. */
async function readPid(path: string, parse: (text: string) => unknown): Promise<number | null> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  try {
    const pid = parse(text.trim());
    return typeof pid === 'number' && Number.isSafeInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}
