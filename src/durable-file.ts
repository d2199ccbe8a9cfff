/**
 * Files that survive a power cut. A file is durable only once its bytes and the directory
 * entry naming it are both on disk: a write, even a rename, that was not fsynced may vanish or
 * come back empty after a crash. Every file the node writes beside its LMDB environment
 * (identity, archive key, cluster and node records, locks, `file://` archive objects) goes
 * through here.
 *
 * ```ts
 * await writeFileDurable(join(dir, 'cluster.json'), text);                 // replaces atomically
 * await writeFileDurable(join(dir, 'archive.key'), text, { exclusive: true }); // EEXIST if present
 * ```
 */
import { randomBytes } from 'node:crypto';
import { link, open, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

export interface DurableWriteOptions {
  /** File mode of a new file (default 0o600: the node's files are its own). */
  readonly mode?: number;
  /** Refuse (EEXIST) when `path` exists, instead of replacing it. */
  readonly exclusive?: boolean;
}

/**
 * Writes `data` to a temporary file beside `path`, fsyncs it, moves it into place (rename, or
 * link when exclusive, which refuses an existing name) and fsyncs the directory. Readers see
 * the old file or the whole new one, never a torn one, before and after a crash.
 */
export async function writeFileDurable(path: string, data: string | Uint8Array, options: DurableWriteOptions = {}): Promise<void> {
  const temp = join(dirname(path), `.${basename(path)}.${process.pid}-${randomBytes(6).toString('hex')}.tmp`);
  let placed = false;
  try {
    const fh = await open(temp, 'wx', options.mode ?? 0o600);
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    if (options.exclusive) {
      await link(temp, path);
      await unlink(temp);
    } else await rename(temp, path);
    placed = true;
    await syncDir(dirname(path));
  } finally {
    if (!placed) await unlink(temp).catch(() => undefined);
  }
}

/** Flushes a directory's entries (a new, renamed or removed name) to disk. */
export async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
