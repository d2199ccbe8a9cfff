/**
 * Opening an object store from its URL, and naming one in logs without its secrets.
 *
 * - `file:///abs/path` (or `file://localhost/abs/path`): FileObjectStore on that directory,
 *   which need not exist yet; percent-escapes are decoded. No query or fragment.
 * - `s3://bucket[/prefix][?region=R][&endpoint=E][&path_style=true|false]`: S3ObjectStore;
 *   keys go under `prefix/`, whose segments follow the key rules. `endpoint` is an
 *   URL-encoded `http(s)://host[:port]` of an S3-speaking server. Credentials come from the
 *   AWS SDK's standard chain, never from the URL: one carrying any is refused.
 *
 * Every malformed URL is ObjectStoreError('bad_url') with a message saying what to write.
 */
import { stat } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { FileObjectStore } from './file-store.js';
import type { S3Location } from './s3-store.js';
import { checkKey, type ObjectStore, ObjectStoreError } from './store.js';

/** Query parameters an `s3://` URL may carry. */
const S3_PARAMS = new Set(['region', 'endpoint', 'path_style']);
/** S3 bucket names: 3 to 63 of a-z 0-9 . -, starting and ending with a letter or digit. */
const BUCKET = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;
/** Query parameter names whose values are masked by redactUrl. */
const SECRET_PARAM = /secret|password|token|signature|credential|access.?key/i;

/**
 * The store `url` names, by scheme. Makes no request: an unreachable store is found by the
 * first operation ('unavailable'). Throws ObjectStoreError('bad_url') for a malformed URL,
 * a file URL naming something other than a directory, or an S3 store with no region.
 */
export async function openObjectStore(url: string): Promise<ObjectStore> {
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):/.exec(url)?.[1]?.toLowerCase();
  if (scheme === 'file') return openFileStore(url);
  if (scheme === 's3') {
    // Loaded only for S3 stores: the AWS SDK is a third of a node's start-up time.
    const { S3ObjectStore } = await import('./s3-store.js');
    return S3ObjectStore.open(redactUrl(url), parseS3Url(url));
  }
  throw badUrl(url, 'use file:///absolute/path or s3://bucket/prefix?region=...');
}

/**
 * `url` without credentials: user info (of the URL and of any URL in its query) removed,
 * secret-looking query parameters masked; `url` itself when it holds none. Safe for logs
 * and error messages.
 */
export function redactUrl(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return url.replace(/\/\/[^/?#]*@/, '//');
  }
  let changed = false;
  if (u.username || u.password) {
    u.username = '';
    u.password = '';
    changed = true;
  }
  for (const [name, value] of [...u.searchParams]) {
    const redacted = SECRET_PARAM.test(name) ? '***' : redactUrl(value);
    if (redacted !== value) {
      u.searchParams.set(name, redacted);
      changed = true;
    }
  }
  return changed ? u.href : url;
}

/** The parts of an `s3://` URL; throws ObjectStoreError('bad_url'). */
export function parseS3Url(url: string): S3Location {
  const u = parseUrl(url);
  if (u.username || u.password) {
    throw badUrl(url, 'credentials do not belong in the URL: use the AWS credential chain (environment, ~/.aws, instance role)');
  }
  if (!u.hostname) throw badUrl(url, 'no bucket: write s3://bucket/prefix');
  if (!BUCKET.test(u.hostname)) throw badUrl(url, `"${u.hostname}" is no bucket name (3 to 63 of a-z 0-9 . -)`);
  if (u.port) throw badUrl(url, 'a bucket has no port: give the server as ?endpoint=http%3A%2F%2Fhost%3Aport');
  if (u.hash) throw badUrl(url, 'no fragment allowed');
  const path = u.pathname.replace(/^\/+|\/+$/g, '');
  if (path) {
    try {
      checkKey(path);
    } catch {
      throw badUrl(url, `prefix "${path}" is not /-separated segments of A-Z a-z 0-9 . _ -`);
    }
  }
  for (const name of u.searchParams.keys()) {
    if (!S3_PARAMS.has(name)) throw badUrl(url, `unknown parameter "${name}" (known: ${[...S3_PARAMS].join(', ')})`);
    if (u.searchParams.getAll(name).length > 1) throw badUrl(url, `"${name}" given twice`);
  }
  const region = u.searchParams.get('region') ?? undefined;
  if (region === '') throw badUrl(url, 'empty region');
  if (region !== undefined && !/^[a-z0-9-]+$/.test(region)) throw badUrl(url, `bad region "${region}"`);
  const endpoint = u.searchParams.get('endpoint') ?? undefined;
  if (endpoint !== undefined) checkEndpoint(url, endpoint);
  const pathStyle = u.searchParams.get('path_style') ?? 'false';
  if (pathStyle !== 'true' && pathStyle !== 'false') throw badUrl(url, `path_style is true or false, not "${pathStyle}"`);
  return { bucket: u.hostname, prefix: path ? `${path}/` : '', region, endpoint, pathStyle: pathStyle === 'true' };
}

/** The directory of a `file:` URL; throws ObjectStoreError('bad_url'). */
export function parseFileUrl(url: string): string {
  if (!/^file:\/\//i.test(url)) throw badUrl(url, 'use an absolute path: file:///absolute/path');
  const u = parseUrl(url);
  // The URL parser turns `localhost` into no host.
  if (u.hostname) throw badUrl(url, `"${u.hostname}" would be a host: file URLs take an absolute path, file:///absolute/path`);
  if (u.search || u.hash) throw badUrl(url, 'no query or fragment allowed');
  try {
    return fileURLToPath(u).replace(/(.)\/+$/, '$1');
  } catch (e) {
    throw new ObjectStoreError('bad_url', `object store URL "${redactUrl(url)}": ${(e as Error).message}`, { cause: e });
  }
}

async function openFileStore(url: string): Promise<ObjectStore> {
  const root = parseFileUrl(url);
  const isDir = await stat(root).then(
    (s) => s.isDirectory(),
    () => undefined, // absent: created by the first put
  );
  if (isDir === false) throw badUrl(url, `${root} is not a directory`);
  return new FileObjectStore(root, redactUrl(url));
}

function checkEndpoint(url: string, endpoint: string): void {
  let e: URL;
  try {
    e = new URL(endpoint);
  } catch {
    throw badUrl(url, `endpoint "${redactUrl(endpoint)}" is not a URL: write it URL-encoded, endpoint=http%3A%2F%2Fhost%3Aport`);
  }
  if (e.protocol !== 'http:' && e.protocol !== 'https:') throw badUrl(url, `endpoint "${redactUrl(endpoint)}" is not http(s)`);
  if (e.username || e.password) throw badUrl(url, 'credentials do not belong in the endpoint: use the AWS credential chain');
}

function parseUrl(url: string): URL {
  try {
    return new URL(url);
  } catch (e) {
    throw new ObjectStoreError('bad_url', `object store URL "${redactUrl(url)}" does not parse`, { cause: e });
  }
}

function badUrl(url: string, why: string): ObjectStoreError {
  return new ObjectStoreError('bad_url', `object store URL "${redactUrl(url)}": ${why}`);
}
