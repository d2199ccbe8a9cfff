/**
 * `pangea snapshot save`: a running node's state (GET /v1/cluster/snapshot) into a file,
 * durably and checked. The bytes go to `FILE.part`, which is fsynced, read back through
 * (digest, frames, record count: state/snapshot-file.ts), and only then renamed to FILE and
 * the directory fsynced; a failed save leaves no FILE behind (an older FILE stays as it was).
 */
import { open, rename, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { Readable } from 'node:stream';
import { syncDir } from '../durable-file.js';
import { checkSnapshotFile, type SnapshotFileInfo } from '../state/snapshot-file.js';
import { failure } from './endpoints.js';

export interface SavedSnapshot extends SnapshotFileInfo {
  readonly endpoint: string;
  readonly path: string;
}

export class SnapshotSaveError extends Error {
  override readonly name = 'SnapshotSaveError';
}

/**
 * Asks each endpoint in turn until one streams a snapshot (an unreachable or unavailable one
 * is skipped; any other refusal ends the save). `headersMs` bounds the wait for each answer
 * to begin; the transfer itself takes as long as the state's size needs.
 */
export async function saveSnapshot(endpoints: readonly string[], path: string, o: { adminToken?: string; headersMs: number }): Promise<SavedSnapshot> {
  const reasons: string[] = [];
  for (const ep of endpoints) {
    const url = `${ep.replace(/\/+$/, '')}/v1/cluster/snapshot`;
    const c = new AbortController();
    const timer = setTimeout(() => c.abort(new Error(`no answer within ${o.headersMs} ms`)), o.headersMs);
    let res: Response;
    try {
      res = await fetch(url, { signal: c.signal, headers: o.adminToken === undefined ? {} : { authorization: `Bearer ${o.adminToken}` } });
    } catch (err) {
      reasons.push(`${ep}: ${failure(err)}`);
      continue;
    } finally {
      clearTimeout(timer);
    }
    if (res.status !== 200) {
      const text = await res.text();
      let why = `HTTP ${res.status}`;
      try {
        const e = (JSON.parse(text) as { error?: { code?: string; message?: string } }).error;
        if (e?.message !== undefined) why = `${e.code ?? res.status}: ${e.message}`;
      } catch {
        // not JSON: the status says enough
      }
      if (res.status === 503 || res.status === 504) {
        reasons.push(`${ep}: ${why}`);
        continue;
      }
      throw new SnapshotSaveError(`${ep}: ${why}`);
    }
    const info = await writeChecked(res, path);
    return { ...info, endpoint: ep, path };
  }
  throw new SnapshotSaveError(`no member could stream a snapshot: ${reasons.join('; ')}`);
}

async function writeChecked(res: Response, path: string): Promise<SnapshotFileInfo> {
  const part = `${path}.part`;
  let placed = false;
  try {
    const fh = await open(part, 'w', 0o600);
    try {
      for await (const chunk of Readable.fromWeb(res.body! as import('node:stream/web').ReadableStream<Uint8Array>)) await fh.write(chunk as Buffer);
      await fh.sync();
    } finally {
      await fh.close();
    }
    let info: SnapshotFileInfo;
    try {
      info = await checkSnapshotFile(part);
    } catch (err) {
      throw new SnapshotSaveError(`the snapshot received does not check out (cut transfer?): ${(err as Error).message}`);
    }
    await rename(part, path);
    placed = true;
    await syncDir(dirname(path));
    return info;
  } catch (err) {
    if (err instanceof SnapshotSaveError) throw err;
    throw new SnapshotSaveError(`${path}: ${failure(err)}`);
  } finally {
    if (!placed) await unlink(part).catch(() => undefined);
  }
}
