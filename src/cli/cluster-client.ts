/**
 * What the commands that talk to a running cluster (`pangea kv|member|endpoint ...`) share:
 * the flags that say where the cluster is and how long to try, a `PangeaClient` built from
 * them, and how its errors are reported (one line, exit 1; bad flags exit 2).
 */
import { Flags, type Command } from '@oclif/core';
import { PangeaClient, PangeaError } from '../client.js';
import { readAdminTokenFile } from '../admin-token-file.js';

export const ENDPOINTS_DEFAULT = 'http://127.0.0.1:7070';

export const clusterFlags = {
  endpoints: Flags.string({
    description: 'HTTP addresses of members, comma-separated (the others are learned from /v1/cluster)',
    env: 'PANGEA_ENDPOINTS',
    default: ENDPOINTS_DEFAULT,
  }),
  'admin-token-file': Flags.string({ description: 'file holding the admin token, for membership changes, leader transfers and snapshots where the cluster requires one', env: 'PANGEA_ADMIN_TOKEN_FILE' }),
  'deadline-ms': Flags.integer({ description: 'give up on a call after this long, its retries across members included', default: 10_000, min: 1 }),
  json: Flags.boolean({ description: 'print the answer as JSON', default: false }),
};

export interface ClusterFlagValues {
  readonly endpoints: string;
  readonly 'admin-token-file'?: string | undefined;
  readonly 'deadline-ms': number;
}

export function endpointList(flags: ClusterFlagValues): string[] {
  const list = flags.endpoints
    .split(',')
    .map((e) => e.trim())
    .filter((e) => e !== '');
  for (const e of list) {
    let url: URL;
    try {
      url = new URL(e);
    } catch {
      throw new Error(`--endpoints: ${e} is not a URL (e.g. ${ENDPOINTS_DEFAULT})`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error(`--endpoints: ${e} is not an http(s) URL`);
  }
  if (list.length === 0) throw new Error('--endpoints: no address given');
  return list;
}

async function clientFrom(flags: ClusterFlagValues): Promise<PangeaClient> {
  const file = flags['admin-token-file'];
  const adminToken = file === undefined ? undefined : await readAdminTokenFile(file);
  return new PangeaClient({ endpoints: endpointList(flags), deadlineMs: flags['deadline-ms'], ...(adminToken !== undefined ? { adminToken } : {}) });
}

/** One line on stderr, whole (oclif's `error` boxes and wraps it), then exit `code`. */
export function fail(cmd: Command, message: string, code: number): never {
  process.stderr.write(`pangea: ${message}\n`);
  return cmd.exit(code);
}

/** Runs `fn` with a client; a failure is one line on stderr and exit 1 (2 for bad flags). */
export async function withClient<T>(cmd: Command, flags: ClusterFlagValues, fn: (c: PangeaClient) => Promise<T>): Promise<T> {
  let client: PangeaClient;
  try {
    client = await clientFrom(flags);
  } catch (err) {
    fail(cmd, (err as Error).message, 2);
  }
  try {
    return await fn(client);
  } catch (err) {
    if (err instanceof PangeaError) {
      const applied = err.mayHaveApplied ? ' (the write may have been applied)' : '';
      fail(cmd, `${err.code}: ${err.message}${applied}`, 1);
    }
    throw err;
  } finally {
    client.close();
  }
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Bytes for people: UTF-8 text when they are, else base64 marked so. */
export function showBytes(b: Uint8Array): string {
  try {
    return utf8.decode(b);
  } catch {
    return `base64:${Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('base64')}`;
  }
}
