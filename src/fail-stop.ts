/**
 * Fail-stop for storage: when a write to the log or the state fails, the node names the cause
 * in words an operator acts on and the process exits (src/commands/serve.ts). LMDB reports a
 * full disk as EIO ("Input/output error"), so the cause is read off the file system, not the
 * error: the data dir gone, or its file system (nearly) full.
 *
 * A data dir removed under a running node is not an error LMDB ever sees (its file lives on,
 * unlinked, until the process exits), so a watchdog checks that the environment file is still
 * the one the node opened.
 */
import { existsSync, statSync, statfsSync } from 'node:fs';

/** Free space under which a failed write is put down to a full disk. */
const FULL_BELOW_BYTES = 64 * 1024 * 1024;

/** One line naming why a storage write under `dataDir` failed: "disk full at ...", etc.
 *  Synchronous: the process ends right after, before anything else fails in its turn. */
export function storageFailureCause(err: unknown, dataDir: string, envPath: string): string {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  const message = (err as Error | null)?.message ?? String(err);
  if (!existsSync(dataDir) || !existsSync(envPath)) return `data dir vanished: ${envPath} no longer exists (${message})`;
  if (code === 'EDQUOT') return `disk quota exceeded at ${dataDir} (${message})`;
  try {
    const fs = statfsSync(dataDir);
    const free = fs.bavail * fs.bsize;
    if (code === 'ENOSPC' || free < FULL_BELOW_BYTES) return `disk full at ${dataDir}: ${free} bytes free (${message})`;
  } catch {
    // statfs failing says the file system itself is in trouble: the message below stands.
  }
  return `storage failure at ${dataDir}: ${message}`;
}

/**
 * Calls `onGone` (once) when `envPath` disappears or is replaced by another file; checks every
 * `intervalMs`. Returns a function that stops watching.
 */
export function watchDataDir(envPath: string, onGone: (why: string) => void, intervalMs = 1000): () => void {
  const identity = (): string | null => {
    try {
      const s = statSync(envPath);
      return `${s.dev}:${s.ino}`;
    } catch {
      return null;
    }
  };
  const opened = identity();
  const timer = setInterval(() => {
    const now = identity();
    if (now === opened) return;
    clearInterval(timer);
    onGone(now === null ? `data dir vanished: ${envPath} no longer exists` : `data dir replaced: ${envPath} is no longer the file this node opened`);
  }, intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}
