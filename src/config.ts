/**
 * `pangea serve` settings: flags, the config file, and the value forms they share.
 *
 * The config file is JSON whose keys are the flags' names (CONFIG_KEYS); unknown keys are
 * errors, and `null` means unset, as if the key were left out. A flag typed on the command
 * line wins over the config file, which wins over SERVE_DEFAULTS. `resolveServeOptions` checks
 * every value and combination and builds the server's `ServeOptions` without any I/O;
 * `checkServeFiles` then reads the files the settings name (`serve --dry-run` runs both).
 *
 * ```ts
 * const options = resolveServeOptions({ flags: { 'archive-delay': '1m' }, file: loadConfigFile('pangea.json') });
 * ```
 */
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { multiaddr } from '@multiformats/multiaddr';
import { parseFileUrl, parseS3Url, redactUrl } from './archive/open-store.js';
import { NODE_ARCHIVE_DEFAULTS, SEGMENT_ENTRIES_MAX, type NodeArchiveOptions } from './archive/options.js';
import { ObjectStoreError } from './archive/store.js';
import { readKeyFile } from './ces/keys.js';
import { isLogLevel, type LogLevel } from './logger.js';
import { maxRequestBytesDefault, maxTxnOpsDefault, maxValueBytesDefault } from './net/http.js';

export const CONFIG_KEYS = [
  'data-dir',
  'http-listen',
  'p2p-listen',
  'join',
  'metrics-listen',
  'advertise-http',
  'advertise-p2p',
  'admin-token-file',
  'force-new-cluster',
  'max-value-bytes',
  'max-request-bytes',
  'max-txn-ops',
  'log-level',
  'archive-url',
  'archive-key-file',
  'segment-entries',
  'snapshot-segments',
  'archive-delay-entries',
  'archive-delay',
  'archive-interval',
  'prune-interval',
  'hot-retention',
  'hot-quota-bytes',
  'checkpoint',
  'restore-from',
  'restore-index',
  'blocksync-cold-reads-max',
  'blocksync-queue-max',
  'blocksync-timeout',
] as const;

export type ConfigKey = (typeof CONFIG_KEYS)[number];

/** Settings by key: as oclif parsed the typed flags, or as a config file holds them. */
export type ConfigValues = Partial<Record<ConfigKey, unknown>>;

export interface ConfigFile {
  readonly path: string;
  readonly values: ConfigValues;
}

export { DURATION_MS_MAX, formatDuration, parseDuration } from './duration.js';
import { formatDuration, parseDuration } from './duration.js';

const BYTE_UNITS: Readonly<Record<string, number>> = { B: 1, KiB: 1 << 10, MiB: 1 << 20, GiB: 1 << 30, TiB: 2 ** 40 };
const BYTE_SIZE = new RegExp(`^(\\d+)(${Object.keys(BYTE_UNITS).join('|')})?$`);

/** A byte count: a non-negative integer, or a string such as `4096`, `512MiB` or `8GiB`
 *  (binary units B, KiB, MiB, GiB, TiB). */
export function parseByteSize(value: number | string, what: string): number {
  const m = typeof value === 'string' ? BYTE_SIZE.exec(value) : null;
  const bytes = typeof value === 'number' ? value : m ? Number(m[1]) * BYTE_UNITS[m[2] ?? 'B']! : NaN;
  if (!Number.isSafeInteger(bytes) || bytes < 0) {
    throw new Error(`${what} must be a byte count like 1073741824, 512MiB or 8GiB (units B, KiB, MiB, GiB, TiB), not ${JSON.stringify(value)}`);
  }
  return bytes;
}

/** Bytes of a checkpoint's hash: the chain value at its index. */
export const CHECKPOINT_HASH_BYTES = 32;

/** Parses `INDEX:HASH`: an index >= 1 and CHECKPOINT_HASH_BYTES bytes in hex. */
export function parseCheckpoint(text: string, what: string): [number, Uint8Array] {
  const digits = CHECKPOINT_HASH_BYTES * 2;
  const bad = (why: string): Error => new Error(`${what} must be INDEX:HASH (an index >= 1 and ${digits} hex digits), not ${JSON.stringify(text)}: ${why}`);
  const colon = text.indexOf(':');
  if (colon < 0) throw bad('no colon');
  const index = Number(text.slice(0, colon));
  const hex = text.slice(colon + 1);
  if (!/^\d+$/.test(text.slice(0, colon)) || !Number.isSafeInteger(index) || index < 1) throw bad('the index is not a whole number >= 1');
  if (!/^[0-9a-fA-F]*$/.test(hex)) throw bad('the hash is not hex');
  if (hex.length !== digits) throw bad(`the hash has ${hex.length} digits`);
  return [index, new Uint8Array(Buffer.from(hex, 'hex'))];
}

/** Parses repeated checkpoints; an index given twice must name the same hash. */
export function parseCheckpoints(texts: readonly string[], what: string): Map<number, Uint8Array> {
  const checkpoints = new Map<number, Uint8Array>();
  for (const text of texts) {
    const [index, hash] = parseCheckpoint(text, what);
    const before = checkpoints.get(index);
    if (before !== undefined && !Buffer.from(before).equals(hash)) throw new Error(`${what} gives index ${index} two different hashes`);
    checkpoints.set(index, hash);
  }
  return checkpoints;
}

const ARCHIVE_URL_FORM = 'file:///ABSOLUTE/DIR or s3://BUCKET[/PREFIX][?region=R&endpoint=URL&path_style=true|false]';

/** Checks the form of an archive URL (not that the store is reachable) and returns it as given,
 *  by the rules the object store opens it with (`parseFileUrl`, `parseS3Url`). Credentials
 *  never go in the URL. */
export function checkArchiveUrl(text: string, what: string): string {
  const bad = (why: string): Error => new Error(`${what} must be ${ARCHIVE_URL_FORM}: ${why}, not ${JSON.stringify(redactUrl(text))}`);
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):/.exec(text)?.[1]?.toLowerCase();
  if (scheme === undefined) throw bad('not a URL');
  if (scheme !== 'file' && scheme !== 's3') throw bad(`unknown scheme ${scheme}:`);
  try {
    if (scheme === 'file') parseFileUrl(text);
    else parseS3Url(text);
  } catch (e) {
    if (e instanceof ObjectStoreError) throw bad(e.message);
    throw e;
  }
  return text;
}

function isHttpUrl(text: string): boolean {
  try {
    const url = new URL(text);
    return (url.protocol === 'http:' || url.protocol === 'https:') && url.hostname !== '' && url.username === '' && url.password === '';
  } catch {
    return false;
  }
}

/** Checks an http(s) URL such as a member's address; returns it as given. */
export function checkHttpUrl(text: string, what: string): string {
  if (!isHttpUrl(text)) throw new Error(`${what} must be an http:// or https:// URL like http://10.0.0.4:7070, not ${JSON.stringify(text)}`);
  return text;
}

/** Checks a libp2p multiaddr; returns it as given. */
export function checkMultiaddr(text: string, what: string): string {
  try {
    multiaddr(text);
  } catch (err) {
    throw new Error(`${what} must be a multiaddr like /ip4/127.0.0.1/tcp/7071, not ${JSON.stringify(text)} (${(err as Error).message})`);
  }
  return text;
}

export interface HostPort {
  readonly host: string;
  readonly port: number;
}

/** Everything `serve` runs with, resolved from flags, the config file and defaults. */
export interface ServeOptions {
  readonly dataDir: string;
  readonly httpListen: HostPort;
  readonly p2pListen: readonly string[];
  readonly join?: string | undefined;
  readonly metricsListen?: HostPort | undefined;
  readonly advertiseHttp?: string | undefined;
  readonly advertiseP2p?: readonly string[] | undefined;
  readonly adminTokenFile?: string | undefined;
  readonly forceNewCluster: boolean;
  readonly maxValueBytes: number;
  readonly maxRequestBytes: number;
  readonly maxTxnOps: number;
  readonly logLevel: LogLevel;
  readonly archive: NodeArchiveOptions;
}

/** `HOST:PORT` (IPv6 as `[::1]:PORT`); port 0 asks for any free port. */
export function parseHostPort(value: string, flag: string): HostPort {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(value);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new Error(`${flag} must be HOST:PORT, not "${value}"`);
  return { host: (m[1] ?? m[2])!, port };
}

/** Each defaulted key's value when neither the command line nor the config file sets it,
 *  written as on the command line (the flags show them in `--help`). Other keys stay unset. */
export const SERVE_DEFAULTS = {
  'data-dir': './pangea-data',
  'http-listen': '127.0.0.1:7070',
  'p2p-listen': ['/ip4/127.0.0.1/udp/7071/quic-v1', '/ip4/127.0.0.1/tcp/7071'],
  'force-new-cluster': false,
  'max-value-bytes': maxValueBytesDefault,
  'max-request-bytes': maxRequestBytesDefault,
  'max-txn-ops': maxTxnOpsDefault,
  'log-level': 'info',
  'archive-delay-entries': NODE_ARCHIVE_DEFAULTS.delayEntries,
  'archive-delay': formatDuration(NODE_ARCHIVE_DEFAULTS.delayMs),
  'archive-interval': formatDuration(NODE_ARCHIVE_DEFAULTS.intervalMs),
  'prune-interval': formatDuration(NODE_ARCHIVE_DEFAULTS.pruneIntervalMs),
  'hot-retention': NODE_ARCHIVE_DEFAULTS.hotRetention,
  'hot-quota-bytes': String(NODE_ARCHIVE_DEFAULTS.hotQuotaBytes),
  checkpoint: [],
  'blocksync-cold-reads-max': NODE_ARCHIVE_DEFAULTS.coldReadsMax,
  'blocksync-queue-max': NODE_ARCHIVE_DEFAULTS.coldQueueMax,
  'blocksync-timeout': formatDuration(NODE_ARCHIVE_DEFAULTS.blocksyncTimeoutMs),
} as const satisfies ConfigValues;

/** Reads a config file: a JSON object of known keys. Values are checked by resolveServeOptions. */
export function loadConfigFile(path: string): ConfigFile {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new Error(`cannot read config file ${path}: ${(err as Error).message}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error(`config file ${path} must hold a JSON object`);
  const known = new Set<string>(CONFIG_KEYS);
  for (const key of Object.keys(parsed)) {
    if (!known.has(key)) throw new Error(`config file ${path}: unknown key "${key}" (known: ${CONFIG_KEYS.join(', ')})`);
  }
  return { path, values: parsed as ConfigValues };
}

export interface ServeSources {
  /** The flags typed on the command line, by name (without oclif's defaults). */
  readonly flags: ConfigValues;
  readonly file?: ConfigFile | undefined;
}

/** A value as the caller gets it: always there for keys with a default. */
type Setting<K extends ConfigKey, T> = K extends keyof typeof SERVE_DEFAULTS ? T : T | undefined;

/** Reads each key from the winning source, checks its type, and names it in errors as the
 *  source spells it (`--key`, or `config file PATH: "key"`). */
class SettingsReader {
  private readonly read = new Set<ConfigKey>();

  constructor(private readonly sources: ServeSources) {}

  private lookup(key: ConfigKey): { value: unknown; what: string } | undefined {
    this.read.add(key);
    const flag = this.sources.flags[key];
    if (flag !== undefined) return { value: flag, what: `--${key}` };
    const file = this.sources.file;
    const inFile = file?.values[key];
    if (file !== undefined && inFile !== undefined && inFile !== null) return { value: inFile, what: `config file ${file.path}: "${key}"` };
    const fallback = (SERVE_DEFAULTS as ConfigValues)[key];
    return fallback === undefined ? undefined : { value: fallback, what: `--${key}` };
  }

  /** `parse(value, what)` on the key's value when it is set and of the expected JSON type. */
  private typed<K extends ConfigKey, V, T>(key: K, type: string, ok: (v: unknown) => v is V, parse: (v: V, what: string) => T): Setting<K, T> {
    const got = this.lookup(key);
    if (got === undefined) return undefined as Setting<K, T>;
    if (!ok(got.value)) throw new Error(`${got.what} must be ${type}, not ${JSON.stringify(got.value)}`);
    return parse(got.value, got.what) as Setting<K, T>;
  }

  string<K extends ConfigKey, T = string>(key: K, parse: (v: string, what: string) => T = (v) => v as T): Setting<K, T> {
    return this.typed(key, 'a string', isString, (v, what) => {
      if (v === '') throw new Error(`${what} must not be empty`);
      return parse(v, what);
    });
  }

  strings<K extends ConfigKey, T = string[]>(key: K, parse: (v: string[], what: string) => T = (v) => v as T): Setting<K, T> {
    return this.typed(key, 'an array of strings', (v): v is string[] => Array.isArray(v) && v.every(isString), parse);
  }

  boolean<K extends ConfigKey>(key: K): Setting<K, boolean> {
    return this.typed(key, 'true or false', (v): v is boolean => typeof v === 'boolean', (v) => v);
  }

  integer<K extends ConfigKey>(key: K, min: number, max = Number.MAX_SAFE_INTEGER): Setting<K, number> {
    return this.typed(key, 'an integer', (v): v is number => Number.isSafeInteger(v), (v, what) => {
      if (v < min || v > max) throw new Error(`${what} must be ${max === Number.MAX_SAFE_INTEGER ? `at least ${min}` : `from ${min} to ${max}`}, not ${v}`);
      return v;
    });
  }

  /** Durations are strings in a config file too: a bare number has no unit. */
  duration<K extends ConfigKey>(key: K, minMs = 0): Setting<K, number> {
    return this.typed(key, 'a duration string like "30s" or "5m"', isString, (v, what) => {
      const ms = parseDuration(v, what);
      if (ms < minMs) throw new Error(`${what} must be at least ${formatDuration(minMs)}, not ${JSON.stringify(v)}`);
      return ms;
    });
  }

  bytes<K extends ConfigKey>(key: K): Setting<K, number> {
    return this.typed(key, 'a byte count like 1073741824 or "8GiB"', (v): v is number | string => isString(v) || typeof v === 'number', parseByteSize);
  }

  /** Asserts every key was read: a key added to CONFIG_KEYS but not to resolveServeOptions
   *  would otherwise be accepted and ignored. */
  assertAllRead(): void {
    const unread = CONFIG_KEYS.filter((k) => !this.read.has(k));
    if (unread.length > 0) throw new Error(`bug: resolveServeOptions ignores ${unread.join(', ')}`);
  }
}

function isString(v: unknown): v is string {
  return typeof v === 'string';
}

/**
 * Builds the server's options from the typed flags, the config file and SERVE_DEFAULTS,
 * checking every value's type, form and bounds, and the combinations: `--restore-from`
 * excludes `--join`, `--restore-index` needs `--restore-from`. Pure: reads no file (see
 * checkServeFiles). Throws an Error naming the offending key.
 */
export function resolveServeOptions(sources: ServeSources): ServeOptions {
  const s = new SettingsReader(sources);
  const logLevel = s.string('log-level', (v, what) => {
    if (!isLogLevel(v)) throw new Error(`${what} must be debug, info, warn or error, not ${JSON.stringify(v)}`);
    return v;
  });
  const multiaddrs = (v: string[], what: string): string[] => v.map((a) => checkMultiaddr(a, what));
  const options: ServeOptions = {
    dataDir: s.string('data-dir'),
    httpListen: s.string('http-listen', parseHostPort),
    p2pListen: s.strings('p2p-listen', multiaddrs),
    join: s.string('join', checkHttpUrl),
    metricsListen: s.string('metrics-listen', parseHostPort),
    advertiseHttp: s.string('advertise-http', checkHttpUrl),
    advertiseP2p: s.strings('advertise-p2p', multiaddrs),
    adminTokenFile: s.string('admin-token-file'),
    forceNewCluster: s.boolean('force-new-cluster'),
    maxValueBytes: s.integer('max-value-bytes', 0),
    maxRequestBytes: s.integer('max-request-bytes', 1),
    maxTxnOps: s.integer('max-txn-ops', 1),
    logLevel,
    archive: {
      url: s.string('archive-url', checkArchiveUrl),
      keyFile: s.string('archive-key-file'),
      segmentEntries: s.integer('segment-entries', 1, SEGMENT_ENTRIES_MAX),
      snapshotSegments: s.integer('snapshot-segments', 1),
      delayEntries: s.integer('archive-delay-entries', 0),
      delayMs: s.duration('archive-delay'),
      intervalMs: s.duration('archive-interval'),
      pruneIntervalMs: s.duration('prune-interval'),
      hotRetention: s.integer('hot-retention', 0),
      hotQuotaBytes: s.bytes('hot-quota-bytes'),
      checkpoints: s.strings('checkpoint', parseCheckpoints),
      restoreFrom: s.string('restore-from', checkArchiveUrl),
      restoreIndex: s.integer('restore-index', 1),
      coldReadsMax: s.integer('blocksync-cold-reads-max', 1),
      coldQueueMax: s.integer('blocksync-queue-max', 1),
      blocksyncTimeoutMs: s.duration('blocksync-timeout', 1),
    },
  };
  s.assertAllRead();
  if (options.archive.restoreFrom !== undefined && options.join !== undefined) {
    throw new Error('--restore-from and --join exclude each other: a restore bootstraps a new cluster, a join enters an existing one');
  }
  if (options.archive.restoreIndex !== undefined && options.archive.restoreFrom === undefined) {
    throw new Error('--restore-index needs --restore-from (the archive to restore from)');
  }
  return options;
}

/**
 * Reads the files the settings name, as `serve --dry-run` promises: the admin token file must
 * hold a token and the archive key file (when given) a key (src/ces/keys.ts). Throws an Error
 * naming the setting; never puts a secret in it.
 */
export async function checkServeFiles(options: ServeOptions): Promise<void> {
  const path = options.adminTokenFile;
  if (path !== undefined) {
    let token: string;
    try {
      token = (await readFile(path, 'utf8')).trim();
    } catch (err) {
      throw new Error(`--admin-token-file: cannot read ${path}: ${(err as Error).message}`);
    }
    if (token === '') throw new Error(`--admin-token-file: ${path} is empty`);
  }
  if (options.archive.keyFile !== undefined) {
    try {
      await readKeyFile(options.archive.keyFile);
    } catch (err) {
      throw new Error(`--archive-key-file: ${(err as Error).message}`);
    }
  }
}

/** `options` as `serve --dry-run` prints them: JSON, unset settings as null, checkpoints as
 *  `{ "INDEX": "HEX" }`. Holds file paths only, never a file's contents. */
export function formatServeOptions(options: ServeOptions): string {
  return JSON.stringify(
    options,
    (_key, value: unknown) =>
      value === undefined ? null
      : value instanceof Map ? Object.fromEntries([...(value as Map<number, Uint8Array>)].map(([i, h]) => [i, Buffer.from(h).toString('hex')]))
      : value,
    2,
  );
}
