/**
 * Objects as files: an input file to a directory of `shard-<i>` files and back. Used by the
 * `pangea ces` commands. Outputs appear complete or not at all: they are written under a
 * temporary name and renamed once encoding or decoding has succeeded.
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, readdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import { encodeStream, type EncodeResult } from './encode.js';
import { decodeShards, verifyShards, type VerifyReport } from './decode.js';
import { FileSink, fileChunkBytes, fileSource } from './io.js';
import { KeyRing, readKeyFile, type CesKey } from './keys.js';
import { resolveParams, type CesParams } from './params.js';

export const shardFilePrefix = 'shard-';

export function shardFileName(index: number): string {
  return `${shardFilePrefix}${index}`;
}

/** Loads key files into a ring. */
export async function loadKeyRing(paths: readonly string[]): Promise<KeyRing> {
  return new KeyRing(await Promise.all(paths.map((p) => readKeyFile(p))));
}

/** Encodes `inputPath` (or stdin for "-") into `outDir/shard-0 .. shard-{k+m-1}`. */
export async function encodeFile(
  inputPath: string,
  outDir: string,
  key: CesKey,
  label: string,
  params: Partial<CesParams> = {},
): Promise<EncodeResult> {
  const p = resolveParams(params);
  await mkdir(outDir, { recursive: true });
  const n = p.dataShards + p.parityShards;
  const tmp = Array.from({ length: n }, (_, i) => join(outDir, `.${shardFileName(i)}.${process.pid}.tmp`));
  const sinks: FileSink[] = [];
  try {
    for (const path of tmp) sinks.push(await FileSink.create(path));
    const input = inputPath === '-' ? process.stdin : createReadStream(inputPath, { highWaterMark: fileChunkBytes });
    const result = await encodeStream(input, sinks, key, label, p);
    await Promise.all(sinks.splice(0).map((s) => s.close()));
    await Promise.all(tmp.map((path, i) => rename(path, join(outDir, shardFileName(i)))));
    return result;
  } finally {
    await Promise.all(sinks.map((s) => s.close().catch(() => undefined)));
    await Promise.all(tmp.map((path) => rm(path, { force: true })));
  }
}

/** The shard files in a directory (`shard-<digits>`), sorted by index. */
export async function listShardFiles(dir: string): Promise<string[]> {
  const names = (await readdir(dir)).filter((f) => /^shard-\d+$/.test(f));
  return names.sort((a, b) => Number(a.slice(shardFilePrefix.length)) - Number(b.slice(shardFilePrefix.length))).map((f) => join(dir, f));
}

/** Decodes the shards found in `shardDir` into `outputPath` (or stdout for "-"). */
export async function decodeDir(shardDir: string, outputPath: string, keyRing: KeyRing, label: string): Promise<void> {
  const files = await listShardFiles(shardDir);
  const plaintext = Readable.from(decodeShards(files.map(fileSource), keyRing, label, { names: files }));
  if (outputPath === '-') {
    await pipeline(plaintext, process.stdout, { end: false });
    return;
  }
  const tmp = `${outputPath}.${process.pid}.tmp`;
  try {
    await pipeline(plaintext, createWriteStream(tmp, { mode: 0o644 }));
    await rename(tmp, outputPath);
  } finally {
    await rm(tmp, { force: true });
  }
}

/** Verifies the shards found in `shardDir`. */
export async function verifyDir(shardDir: string, keyRing: KeyRing, label?: string): Promise<VerifyReport> {
  const files = await listShardFiles(shardDir);
  return verifyShards(files.map(fileSource), keyRing, label, { names: files });
}
