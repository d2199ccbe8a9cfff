/**
 * The object store behind the archive: one small interface, two backends.
 *
 * - `file:///abs/path`: a directory; keys are relative paths under it (file-store.ts).
 * - `s3://bucket/prefix?region=..&endpoint=..&path_style=true`: @aws-sdk/client-s3 with the
 *   standard credential chain; keys go under `prefix/` (s3-store.ts).
 *
 * Keys are `/`-separated relative paths of `[A-Za-z0-9._-]` segments (never `..`).
 * Archive objects are immutable: they are written with `putIfAbsent` only, and the archive
 * never overwrites or deletes one (`delete` exists for fault-injection tests and operators).
 *
 * ```ts
 * const store = await openObjectStore('file:///var/lib/pangea/archive');
 * const r = await store.putIfAbsent('segments/1-10000/shard-0', bytes);  // 'created' | 'exists'
 * const back = await store.get('segments/1-10000/shard-0');
 * ```
 */

export interface ObjectInfo {
  readonly key: string;
  readonly size: number;
}

/** Why a store operation failed; `not_found` is the one callers branch on. */
export type ObjectStoreErrorCode = 'not_found' | 'bad_key' | 'bad_url' | 'unavailable';

export class ObjectStoreError extends Error {
  constructor(
    readonly code: ObjectStoreErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'ObjectStoreError';
  }
}

export interface ObjectStore {
  /** The URL it was opened with, credentials removed: for logs and reports. */
  readonly url: string;
  /**
   * Creates `key` holding `body` unless an object named `key` exists. Atomic on both
   * backends: a reader never sees a partial object under `key` (files: written beside it,
   * flushed and linked into place; S3: a single PutObject with `If-None-Match: *`, checked
   * with a HEAD before as well, since some S3-speaking servers ignore the header).
   * Returns 'exists' and leaves the object unchanged when one was there: the caller checks
   * its size and checksum before reusing it.
   */
  putIfAbsent(key: string, body: Uint8Array): Promise<'created' | 'exists'>;
  /** The whole object. Throws ObjectStoreError('not_found') when absent. */
  get(key: string): Promise<Uint8Array>;
  /** The size of `key`, or null when absent. */
  head(key: string): Promise<{ size: number } | null>;
  /** Every object whose key starts with `prefix`, in key order. */
  list(prefix: string): Promise<ObjectInfo[]>;
  /** Removes `key` (no error when absent). Not used by the archive itself. */
  delete(key: string): Promise<void>;
  /** Releases connections. */
  close(): Promise<void>;
}

const KEY_SEGMENT = /^[A-Za-z0-9._-]+$/;

/** Throws ObjectStoreError('bad_key') unless `key` is a safe relative key. */
export function checkKey(key: string): void {
  const parts = key.split('/');
  if (key.length === 0 || key.length > 512 || parts.some((p) => !KEY_SEGMENT.test(p) || p === '.' || p === '..')) {
    throw new ObjectStoreError('bad_key', `bad object key "${key}": use /-separated segments of A-Z a-z 0-9 . _ -`);
  }
}
