/**
 * CES-encoded objects in the store: `k + m` shard objects `<prefix>/shard-<i>`.
 *
 * Writing: encode in memory (small objects: segments) or into staging files (bounded memory
 * whatever the size: snapshots), upload each shard create-if-absent, reuse an existing shard only when its size and SHA-256 match, then read
 * every shard back and check it before the record is returned (and so before a manifest
 * can list it). Reading and verifying: a shard whose checksum fails is treated as missing,
 * so up to `m` lost or damaged shards are rebuilt; more are named in the error.
 */
import { createHash } from 'node:crypto';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { CesError, FileSink, MemorySink, bufferSource, decodeShards, encodeStream, type CesKey, type CesParams, type KeyRing } from '../ces/index.js';
import type { EncodedObject, ShardRecord } from './manifest.js';
import { ObjectStoreError, type ObjectStore } from './store.js';

export class ArchiveObjectError extends Error {
  override readonly name = 'ArchiveObjectError';
}

export function shardKey(prefix: string, i: number): string {
  return `${prefix}/shard-${i}`;
}

export function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** An object encoded but not uploaded yet: its shards in local files, or in memory. */
export interface StagedObject {
  readonly prefix: string;
  readonly label: string;
  readonly rawBytes: number;
  /** The staging directory (files), or null (memory). */
  readonly dir: string | null;
  readonly shard: (i: number) => Promise<Uint8Array>;
  readonly shardCount: number;
}

/** Objects up to this size (plaintext, as estimated by the caller) are staged in memory. */
export const STAGE_IN_MEMORY_BYTES_MAX = 64 * 1024 * 1024;

/**
 * Encodes `source` into shards: in memory when `sizeHint` says it is small (no disk writes
 * beside the log's), else into files under `stagingDir` (bounded memory whatever the size).
 */
export async function stageEncoded(
  prefix: string,
  label: string,
  source: AsyncIterable<Uint8Array>,
  key: CesKey,
  params: CesParams,
  stagingDir: string,
  sizeHint = Number.POSITIVE_INFINITY,
): Promise<StagedObject> {
  const n = params.dataShards + params.parityShards;
  if (sizeHint <= STAGE_IN_MEMORY_BYTES_MAX) {
    const sinks = Array.from({ length: n }, () => new MemorySink());
    const { totalBytes } = await encodeStream(source, sinks, key, label, params);
    const shards = sinks.map((s) => s.bytes());
    return { prefix, label, rawBytes: totalBytes, dir: null, shard: (i) => Promise.resolve(shards[i]!), shardCount: n };
  }
  const dir = join(stagingDir, prefix.replace(/\//g, '_'));
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  const paths = Array.from({ length: n }, (_, i) => join(dir, `shard-${i}`));
  try {
    const sinks = await Promise.all(paths.map((p) => FileSink.create(p)));
    try {
      const { totalBytes } = await encodeStream(source, sinks, key, label, params);
      return { prefix, label, rawBytes: totalBytes, dir, shard: (i) => readFile(paths[i]!), shardCount: n };
    } finally {
      await Promise.all(sinks.map((s) => s.close()));
    }
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

export async function discardStaged(staged: StagedObject): Promise<void> {
  if (staged.dir !== null) await rm(staged.dir, { recursive: true, force: true });
}

/**
 * Uploads a staged object's shards create-if-absent and reads each back; resolves with its
 * record only once every stored shard is exactly the staged one. Keeps the staged files.
 */
export async function uploadStaged(store: ObjectStore, staged: StagedObject): Promise<EncodedObject> {
  const shards: ShardRecord[] = [];
  for (let i = 0; i < staged.shardCount; i++) {
    // From files, one shard in memory at a time: a shard is at most a segment's bytes over k.
    const bytes = await staged.shard(i);
    const record = { size: bytes.byteLength, sha256: sha256Hex(bytes) };
    const name = shardKey(staged.prefix, i);
    const put = await store.putIfAbsent(name, bytes);
    // Fresh or reused, the stored bytes must be exactly ours: read them back.
    const back = await store.get(name);
    if (back.byteLength !== record.size || sha256Hex(back) !== record.sha256) {
      throw new ArchiveObjectError(
        put === 'exists'
          ? `${store.url}/${name} exists with other content (${back.byteLength} bytes); archive objects are immutable, refusing to list it`
          : `${store.url}/${name} reads back different from what was uploaded`,
      );
    }
    shards.push(record);
  }
  return { prefix: staged.prefix, label: staged.label, rawBytes: staged.rawBytes, shards };
}

/** What `fetchShards` found: the usable shards (`undefined` where missing or bad). */
export interface FetchedShards {
  readonly shards: (Uint8Array | undefined)[];
  readonly problems: string[];
  /** Shards absent from the store (as opposed to present and wrong). */
  readonly missing: number[];
  /** Shards present but wrong (size or checksum), with the bytes found. */
  readonly bad: { readonly index: number; readonly bytes: Uint8Array }[];
}

/** Downloads every shard and checks it against its record. */
export async function fetchShards(store: ObjectStore, obj: EncodedObject): Promise<FetchedShards> {
  // Problems are kept by shard and reported in shard order, whatever order the fetches end in.
  const byShard: (string | undefined)[] = [];
  const missing: number[] = [];
  const bad: { index: number; bytes: Uint8Array }[] = [];
  const shards = await Promise.all(
    obj.shards.map(async (rec, i): Promise<Uint8Array | undefined> => {
      const name = shardKey(obj.prefix, i);
      try {
        const bytes = await store.get(name);
        if (bytes.byteLength !== rec.size) byShard[i] = `${name}: ${bytes.byteLength} bytes, expected ${rec.size}`;
        else if (sha256Hex(bytes) !== rec.sha256) byShard[i] = `${name}: checksum mismatch`;
        else return bytes;
        bad.push({ index: i, bytes });
      } catch (err) {
        if (!(err instanceof ObjectStoreError && err.code === 'not_found')) throw err;
        byShard[i] = `${name}: missing`;
        missing.push(i);
      }
      return undefined;
    }),
  );
  const problems = byShard.filter((p): p is string => p !== undefined);
  return { shards, problems, missing: missing.sort((a, b) => a - b), bad: bad.sort((a, b) => a.index - b.index) };
}

/**
 * The plaintext of `obj`, rebuilt from whichever shards are good. Throws ArchiveObjectError
 * naming the bad shards when too few are left.
 */
export async function* readEncoded(store: ObjectStore, obj: EncodedObject, keys: KeyRing): AsyncGenerator<Buffer, void, undefined> {
  const { shards, problems } = await fetchShards(store, obj);
  try {
    yield* decodeShards(shards.map((s) => (s === undefined ? undefined : bufferSource(s))), keys, obj.label);
  } catch (err) {
    if (!(err instanceof CesError)) throw err;
    const why = problems.length > 0 ? `; bad shards: ${problems.join('; ')}` : '';
    throw new ArchiveObjectError(`${obj.prefix}: cannot decode (${err.message})${why}`, { cause: err });
  }
}
