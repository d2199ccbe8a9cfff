/**
 * The `s3://bucket/prefix` backend: @aws-sdk/client-s3 with the SDK's standard credential
 * chain (environment, shared config and credentials files, SSO, container and instance
 * roles); nothing secret is passed in or kept here. Works with AWS S3 and with S3-speaking
 * servers reached through `endpoint` (usually with path-style addressing).
 *
 * Failures are bounded: the SDK tries a request at most MAX_ATTEMPTS times, a connection
 * must open within CONNECT_TIMEOUT_MS and a socket may not stall longer than IDLE_TIMEOUT_MS,
 * so an unreachable store fails with 'unavailable' in seconds. There is no bound on a whole
 * request: a large object on a slow link takes what it takes while bytes flow.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { DeleteObjectCommand, GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { checkKey, type ObjectInfo, type ObjectStore, ObjectStoreError } from './store.js';

/** Where the objects live, as parsed from an `s3://` URL (see open-store.ts). */
export interface S3Location {
  readonly bucket: string;
  /** Prepended to every key: '' or a `/`-terminated path. */
  readonly prefix: string;
  /** undefined: the SDK's region chain (AWS_REGION, the shared config file). */
  readonly region: string | undefined;
  /** An S3-speaking server's base URL; undefined: AWS. */
  readonly endpoint: string | undefined;
  /** `https://endpoint/bucket/key` rather than `https://bucket.endpoint/key`. */
  readonly pathStyle: boolean;
}

export interface S3StoreOptions {
  /** Keys asked for per ListObjectsV2 page (S3 answers at most 1000). */
  readonly listPageKeys?: number;
}

/** Tries per request, the first included (the SDK's own retry with backoff). */
const MAX_ATTEMPTS = 3;
const CONNECT_TIMEOUT_MS = 10_000;
const IDLE_TIMEOUT_MS = 30_000;
const LIST_PAGE_KEYS = 1000;
/** Rounds of HEAD + conditional PUT when S3 answers 409 (a concurrent conditional write in flight). */
const CONFLICT_ROUNDS = 3;
const CONFLICT_BACKOFF_MS = 200;

type SdkError = Error & { Code?: string; code?: string; $metadata?: { httpStatusCode?: number } };

export class S3ObjectStore implements ObjectStore {
  private readonly client: S3Client;
  private readonly listPageKeys: number;

  /**
   * Resolves the region now, so a store with none configured fails at open ('bad_url')
   * rather than at its first request. `url` names the store in messages: no credentials.
   */
  static async open(url: string, location: S3Location, options: S3StoreOptions = {}): Promise<S3ObjectStore> {
    const store = new S3ObjectStore(url, location, options);
    try {
      await store.client.config.region();
    } catch (e) {
      await store.close();
      throw new ObjectStoreError('bad_url', `object store ${url} has no region: add ?region=... or set AWS_REGION`, { cause: e });
    }
    return store;
  }

  constructor(
    readonly url: string,
    readonly location: S3Location,
    options: S3StoreOptions = {},
  ) {
    this.listPageKeys = options.listPageKeys ?? LIST_PAGE_KEYS;
    this.client = new S3Client({
      region: location.region,
      endpoint: location.endpoint,
      forcePathStyle: location.pathStyle,
      maxAttempts: MAX_ATTEMPTS,
      requestHandler: { connectionTimeout: CONNECT_TIMEOUT_MS, socketTimeout: IDLE_TIMEOUT_MS },
    });
  }

  async putIfAbsent(key: string, body: Uint8Array): Promise<'created' | 'exists'> {
    const Key = this.objectKey(key);
    for (let round = 1; ; round++) {
      try {
        if ((await this.size(Key)) !== null) return 'exists';
        await this.client.send(
          new PutObjectCommand({ Bucket: this.location.bucket, Key, Body: body, ContentLength: body.byteLength, IfNoneMatch: '*' }),
        );
        return 'created';
      } catch (e) {
        const status = statusOf(e);
        if (status === 412) return 'exists';
        if (status !== 409 || round === CONFLICT_ROUNDS) throw this.failure('put', key, e);
      }
      await sleep(CONFLICT_BACKOFF_MS * round);
    }
  }

  async get(key: string): Promise<Uint8Array> {
    const Key = this.objectKey(key);
    try {
      const r = await this.client.send(new GetObjectCommand({ Bucket: this.location.bucket, Key }));
      if (!r.Body) throw new Error('response has no body');
      return await r.Body.transformToByteArray();
    } catch (e) {
      if (isNotFound(e)) throw new ObjectStoreError('not_found', `no object "${key}" in ${this.url}`, { cause: e });
      throw this.failure('get', key, e);
    }
  }

  async head(key: string): Promise<{ size: number } | null> {
    const Key = this.objectKey(key);
    try {
      const size = await this.size(Key);
      return size === null ? null : { size };
    } catch (e) {
      throw this.failure('head', key, e);
    }
  }

  /** Objects under the location whose names are not valid keys (written by others) are skipped. */
  async list(prefix: string): Promise<ObjectInfo[]> {
    const out: ObjectInfo[] = [];
    let ContinuationToken: string | undefined;
    try {
      do {
        const page = await this.client.send(
          new ListObjectsV2Command({
            Bucket: this.location.bucket,
            Prefix: this.location.prefix + prefix,
            MaxKeys: this.listPageKeys,
            ContinuationToken,
          }),
        );
        for (const o of page.Contents ?? []) {
          const key = o.Key?.slice(this.location.prefix.length);
          if (key !== undefined && isKey(key)) out.push({ key, size: o.Size ?? 0 });
        }
        ContinuationToken = page.IsTruncated ? page.NextContinuationToken : undefined;
      } while (ContinuationToken);
    } catch (e) {
      throw this.failure('list', prefix, e);
    }
    return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  async delete(key: string): Promise<void> {
    const Key = this.objectKey(key);
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.location.bucket, Key }));
    } catch (e) {
      if (isNotFound(e)) return;
      throw this.failure('delete', key, e);
    }
  }

  async close(): Promise<void> {
    this.client.destroy();
  }

  /** HEAD: the object's size, null when absent; throws the SDK's errors. */
  private async size(Key: string): Promise<number | null> {
    try {
      const r = await this.client.send(new HeadObjectCommand({ Bucket: this.location.bucket, Key }));
      return r.ContentLength ?? 0;
    } catch (e) {
      if (isNotFound(e)) return null;
      throw e;
    }
  }

  private objectKey(key: string): string {
    checkKey(key);
    return this.location.prefix + key;
  }

  private failure(op: string, key: string, e: unknown): ObjectStoreError {
    const err = e as SdkError;
    const status = statusOf(e);
    const what = [err.name !== 'Error' ? err.name : undefined, status ? `HTTP ${status}` : undefined, err.message || err.code]
      .filter((s) => s)
      .join(': ');
    return new ObjectStoreError('unavailable', `${op} "${key}" in ${this.url} failed: ${what}`, { cause: e });
  }
}

function statusOf(e: unknown): number | undefined {
  return (e as SdkError | null)?.$metadata?.httpStatusCode;
}

/** No such key. A 404 naming the bucket is not one: the whole store is missing. */
function isNotFound(e: unknown): boolean {
  const name = (e as SdkError | null)?.name;
  return name === 'NotFound' || name === 'NoSuchKey' || (statusOf(e) === 404 && name !== 'NoSuchBucket');
}

function isKey(key: string): boolean {
  try {
    checkKey(key);
    return true;
  } catch {
    return false;
  }
}
