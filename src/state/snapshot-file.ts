/**
 * A snapshot as a file an operator keeps (`pangea snapshot save FILE`, restored by `serve
 * --restore-from FILE`): the snapshot stream of snapshot.ts between a fixed magic and the
 * SHA-256 of everything before it.
 *
 *   "pangea-snapshot\n"   16 bytes, the magic (a file that starts otherwise is not one)
 *   frames               the snapshot stream: header, table records, end (snapshot.ts)
 *   sha256               32 bytes: the digest of the magic and the frames
 *
 * The node writes it as it streams (GET /v1/cluster/snapshot), so a cut transfer, a torn
 * file or a flipped bit is caught before anything is restored from it. The frames hold every
 * key and value in plaintext, as the data dir does: keep the file as you keep the data dir.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { readSnapshot, type SnapshotHeader } from './snapshot.js';

export const SNAPSHOT_FILE_MAGIC = Buffer.from('pangea-snapshot\n', 'latin1');
const DIGEST_BYTES = 32;

/** The file's bytes: the magic, the snapshot's frames as they come, then the digest. */
export async function* snapshotFileBytes(frames: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array, void, undefined> {
  const hash = createHash('sha256');
  hash.update(SNAPSHOT_FILE_MAGIC);
  yield SNAPSHOT_FILE_MAGIC;
  for await (const f of frames) {
    hash.update(f);
    yield f;
  }
  yield hash.digest();
}

export interface SnapshotFileInfo extends SnapshotHeader {
  readonly records: number;
  readonly bytes: number;
  readonly sha256: string;
}

export class SnapshotFileError extends Error {
  override readonly name = 'SnapshotFileError';
}

/** True when `path` is a regular file that starts with the magic (it may still be damaged). */
export async function looksLikeSnapshotFile(path: string): Promise<boolean> {
  try {
    if (!(await stat(path)).isFile()) return false;
    const fh = await open(path, 'r');
    try {
      const head = Buffer.alloc(SNAPSHOT_FILE_MAGIC.length);
      const { bytesRead } = await fh.read(head, 0, head.length, 0);
      return bytesRead === head.length && head.equals(SNAPSHOT_FILE_MAGIC);
    } finally {
      await fh.close();
    }
  } catch {
    return false;
  }
}

/** The frames of a snapshot file, its magic and digest cut off (unchecked: see checkSnapshotFile). */
async function* framesOf(path: string, size: number): AsyncGenerator<Uint8Array, void, undefined> {
  const end = size - DIGEST_BYTES - 1;
  if (end < SNAPSHOT_FILE_MAGIC.length) return;
  yield* createReadStream(path, { start: SNAPSHOT_FILE_MAGIC.length, end }) as AsyncIterable<Buffer>;
}

/**
 * Reads the whole file: its magic, its digest, and its frames (a header, records that parse,
 * an end frame with the right count). Throws SnapshotFileError saying what is wrong.
 */
export async function checkSnapshotFile(path: string): Promise<SnapshotFileInfo> {
  let size: number;
  try {
    size = (await stat(path)).size;
  } catch (err) {
    throw new SnapshotFileError(`${path}: ${(err as Error).message}`);
  }
  if (!(await looksLikeSnapshotFile(path))) throw new SnapshotFileError(`${path} is not a pangea snapshot file (see \`pangea snapshot save\`)`);
  if (size < SNAPSHOT_FILE_MAGIC.length + DIGEST_BYTES) throw new SnapshotFileError(`${path} is cut short (${size} bytes)`);
  const hash = createHash('sha256');
  let digest = Buffer.alloc(0);
  for await (const chunk of createReadStream(path) as AsyncIterable<Buffer>) {
    // Hash all but the last DIGEST_BYTES bytes, which are kept aside as the digest.
    const both = digest.length > 0 ? Buffer.concat([digest, chunk]) : chunk;
    const cut = Math.max(0, both.length - DIGEST_BYTES);
    hash.update(both.subarray(0, cut));
    digest = Buffer.from(both.subarray(cut));
  }
  const sha256 = hash.digest();
  if (!sha256.equals(digest)) throw new SnapshotFileError(`${path} is damaged: its SHA-256 does not match the one it ends with (a cut or corrupted copy?)`);
  try {
    const header = await readSnapshot(framesOf(path, size));
    return { ...header, bytes: size, sha256: sha256.toString('hex') };
  } catch (err) {
    throw new SnapshotFileError(`${path}: ${(err as Error).message}`);
  }
}

/** The snapshot stream inside a file that checkSnapshotFile passed. */
export async function snapshotFileFrames(path: string): Promise<AsyncIterable<Uint8Array>> {
  const { size } = await stat(path);
  return framesOf(path, size);
}
