/**
 * `pangea serve` settings: flags, the config file, and the value forms they share.
 *
 * Each setting is one row of SERVE_SETTINGS: its flag, its config file key (the same name),
 * its default and its checks. The config file is JSON; unknown keys are errors, and `null`
 * means unset, as if the key were left out. A flag typed on the command line wins over the
 * config file, which wins over the row's default. `resolveServeOptions` checks
 * every value and combination and builds the server's `ServeOptions` without any I/O;
 * `checkServeFiles` then reads the files the settings name (`serve --dry-run` runs both).
 *
 * ```ts
 * const options = resolveServeOptions({ flags: { 'archive-delay': '1m' }, file: loadConfigFile('pangea.json') });
 * ```
 */
import { LEASE_TICK_MS_DEFAULT } from './leases.js';
import { LEASES_MAX_DEFAULT } from './state/command.js';
import { readFileSync } from 'node:fs';
import { multiaddr } from '@multiformats/multiaddr';
import { parseFileUrl, parseS3Url, redactUrl } from './archive/open-store.js';
import { NODE_ARCHIVE_DEFAULTS, SEGMENT_ENTRIES_DEFAULT, SEGMENT_ENTRIES_MAX, SNAPSHOT_SEGMENTS_DEFAULT, type NodeArchiveOptions } from './archive/options.js';
import { ObjectStoreError } from './archive/store.js';
import { readKeyFile } from './ces/keys.js';
import { readAdminTokenFile } from './admin-token-file.js';
import { isLogLevel, type LogLevel } from './logger.js';
import { maxRequestBytesDefault, maxTxnOpsDefault, maxValueBytesDefault, watchesMaxDefault } from './net/http.js';

/** What a setting's value is: its JSON type in a config file, its flag's type, its parser. */
type SettingKind = 'string' | 'strings' | 'boolean' | 'integer' | 'duration' | 'bytes';

export interface SettingRow {
  readonly kind: SettingKind;
  /** The flag's `--help` line (docs/configuration.md says more). */
  readonly help: string;
  /** As typed on the command line (`--help` shows it); none: unset unless given. */
  readonly default?: string | number | boolean | readonly string[];
  /** Integers and durations (ms): the least allowed; integers: the most. */
  readonly min?: number;
  readonly max?: number;
  /** Checks a string (or each string of a list) and turns it into the option's value. */
  readonly parse?: (value: never, what: string) => unknown;
}

/**
 * Every `serve` setting, once: the oclif flags (commands/serve.ts), the config file's keys,
 * the defaults and the checks all come from here; docs/configuration.md and
 * pangea.example.json have a row each (a test keeps them in step).
 */
export const SERVE_SETTINGS = {
  'data-dir': { kind: 'string', help: 'where the node keeps its LMDB files and identity', default: './pangea-data' },
  'http-listen': { kind: 'string', help: 'HOST:PORT of the client API (port 0: any free port)', default: '127.0.0.1:7070', parse: (v: string, what: string) => parseHostPort(v, what) },
  'p2p-listen': { kind: 'strings', help: 'libp2p listen multiaddr (repeatable)', default: ['/ip4/127.0.0.1/udp/7071/quic-v1', '/ip4/127.0.0.1/tcp/7071'], parse: (v: string[], what: string) => checkMultiaddrs(v, what) },
  join: { kind: 'string', help: 'HTTP URL of any member of the cluster to join (ignored on an existing data dir)', parse: (v: string, what: string) => checkHttpUrl(v, what) },
  'metrics-listen': { kind: 'string', help: 'HOST:PORT of a second listener for /healthz, /readyz and /metrics', parse: (v: string, what: string) => parseHostPort(v, what) },
  'advertise-http': { kind: 'string', help: 'the HTTP URL peers and clients are told (for nodes listening on 0.0.0.0)', parse: (v: string, what: string) => checkHttpUrl(v, what) },
  'advertise-p2p': { kind: 'strings', help: 'a multiaddr peers are told (repeatable)', parse: (v: string[], what: string) => checkMultiaddrs(v, what) },
  'admin-token-file': { kind: 'string', help: 'file holding the bearer token membership changes require (and --join sends)' },
  'force-new-cluster': { kind: 'boolean', help: 'disaster recovery: restart this data dir as a one-member cluster after a quorum is lost for good', default: false },
  'max-value-bytes': { kind: 'integer', help: 'largest value accepted', default: maxValueBytesDefault, min: 0 },
  'max-request-bytes': { kind: 'integer', help: 'largest request body accepted', default: maxRequestBytesDefault, min: 1 },
  'max-txn-ops': { kind: 'integer', help: 'most compares plus operations in one transaction', default: maxTxnOpsDefault, min: 1 },
  'max-watches': { kind: 'integer', help: 'watch streams this node serves at once (more are answered 503)', default: watchesMaxDefault, min: 1 },
  'max-leases': { kind: 'integer', help: 'cluster-wide: leases the cluster may hold (more grants are answered 409), recorded in the log by the node that bootstraps it', default: LEASES_MAX_DEFAULT, min: 1 },
  'lease-tick': { kind: 'duration', help: 'how often lease keep-alives received here are proposed (one command each time), and the leader ticks while leases exist', default: formatDuration(LEASE_TICK_MS_DEFAULT), min: 10 },
  'log-level': { kind: 'string', help: 'debug, info, warn or error', default: 'info', parse: (v: string, what: string) => checkLogLevel(v, what) },
  'archive-url': {
    kind: 'string',
    help: 'cluster-wide: archive object store, file:///DIR or s3://BUCKET[/PREFIX][?region=..&endpoint=..&path_style=true] (default file://<data-dir>/archive, for a one-node cluster only: with more members archiving stops)',
    parse: (v: string, what: string) => checkArchiveUrl(v, what),
  },
  'archive-key-file': { kind: 'string', help: 'archive encryption key file, see `pangea ces keygen` (default <data-dir>/archive.key, made at bootstrap)' },
  'segment-entries': { kind: 'integer', help: `cluster-wide: log indexes per archived segment, 1..${SEGMENT_ENTRIES_MAX} (default ${SEGMENT_ENTRIES_DEFAULT})`, min: 1, max: SEGMENT_ENTRIES_MAX },
  'snapshot-segments': { kind: 'integer', help: `cluster-wide: archive a state snapshot every N segments (default ${SNAPSHOT_SEGMENTS_DEFAULT})`, min: 1 },
  'archive-delay-entries': { kind: 'integer', help: 'archive a segment only once the commit index is this many entries past its end', default: NODE_ARCHIVE_DEFAULTS.delayEntries, min: 0 },
  'archive-delay': { kind: 'duration', help: 'archive a segment only once it has been committed this long', default: formatDuration(NODE_ARCHIVE_DEFAULTS.delayMs) },
  'archive-interval': { kind: 'duration', help: 'how often the leader looks for segments to archive (0: no archiving on this node)', default: formatDuration(NODE_ARCHIVE_DEFAULTS.intervalMs) },
  'prune-interval': { kind: 'duration', help: 'how often the archived, verified hot log is pruned (0: never; see `pangea prune-hot`)', default: formatDuration(NODE_ARCHIVE_DEFAULTS.pruneIntervalMs) },
  'hot-retention': { kind: 'integer', help: 'log entries the hot log keeps whatever the archive holds', default: NODE_ARCHIVE_DEFAULTS.hotRetention, min: 0 },
  'hot-quota-bytes': { kind: 'bytes', help: 'hot-log size at which writes are refused with 503, e.g. 8GiB (0: no quota)', default: String(NODE_ARCHIVE_DEFAULTS.hotQuotaBytes) },
  checkpoint: { kind: 'strings', help: 'trusted chain value INDEX:HASH (64 hex digits) archive reads are checked against (repeatable)', default: [], parse: (v: string[], what: string) => parseCheckpoints(v, what) },
  'restore-from': { kind: 'string', help: 'bootstrap a new cluster from this archive URL, or from a FILE `pangea snapshot save` wrote (not with --join)', parse: (v: string, what: string) => checkRestoreSource(v, what) },
  'restore-index': { kind: 'integer', help: 'restore the state at this log index (default: the latest the archive holds; not for a snapshot file)', min: 1 },
  'blocksync-cold-reads-max': { kind: 'integer', help: 'archive reads served to catching-up peers at once', default: NODE_ARCHIVE_DEFAULTS.coldReadsMax, min: 1 },
  'blocksync-queue-max': { kind: 'integer', help: 'archive read requests queued before peers are told to retry', default: NODE_ARCHIVE_DEFAULTS.coldQueueMax, min: 1 },
  'blocksync-timeout': { kind: 'duration', help: 'how long a catch-up request may take', default: formatDuration(NODE_ARCHIVE_DEFAULTS.blocksyncTimeoutMs), min: 1 },
} as const satisfies Record<string, SettingRow>;

export type ConfigKey = keyof typeof SERVE_SETTINGS;
export const CONFIG_KEYS = Object.keys(SERVE_SETTINGS) as ConfigKey[];

/** The keys that have a default (the others are unset unless given). */
type DefaultedKey = { [K in ConfigKey]: (typeof SERVE_SETTINGS)[K] extends { readonly default: unknown } ? K : never }[ConfigKey];

/** Each defaulted key's value when neither the command line nor the config file sets it. */
export const SERVE_DEFAULTS: ConfigValues = Object.fromEntries(
  Object.entries(SERVE_SETTINGS as Record<string, SettingRow>).flatMap(([key, row]) => (row.default === undefined ? [] : [[key, row.default]])),
);

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

/** `scheme://...`: a URL, not a path. */
export function isUrl(text: string): boolean {
  return /^[A-Za-z][A-Za-z0-9+.-]*:\/\//.test(text);
}

/** `--restore-from`: an archive URL (checked as one), or a path to a snapshot file (checked
 *  when the node starts, server.ts). */
export function checkRestoreSource(text: string, what: string): string {
  if (isUrl(text)) return checkArchiveUrl(text, what);
  if (text === '') throw new Error(`${what} must be an archive URL or a snapshot file`);
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

function checkMultiaddrs(texts: string[], what: string): string[] {
  return texts.map((a) => checkMultiaddr(a, what));
}

function checkLogLevel(text: string, what: string): LogLevel {
  if (!isLogLevel(text)) throw new Error(`${what} must be debug, info, warn or error, not ${JSON.stringify(text)}`);
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
  readonly maxWatches: number;
  readonly leaseTickMs: number;
  readonly maxLeases: number;
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

/** The value of a setting of row `R`: its parser's result, else its kind's own type. */
type KindValue<R> = R extends { readonly kind: 'strings' } ? string[]
  : R extends { readonly kind: 'boolean' } ? boolean
  : R extends { readonly kind: 'integer' | 'duration' | 'bytes' } ? number
  : string;
type RowValue<R> = R extends { readonly parse: (...args: never[]) => infer T } ? T : KindValue<R>;
/** A value as the caller gets it: always there for keys with a default. */
type Setting<K extends ConfigKey> = K extends DefaultedKey ? RowValue<(typeof SERVE_SETTINGS)[K]> : RowValue<(typeof SERVE_SETTINGS)[K]> | undefined;

/** Reads each key from the winning source, checks it by its row, and names it in errors as
 *  the source spells it (`--key`, or `config file PATH: "key"`). */
class SettingsReader {
  constructor(private readonly sources: ServeSources) {}

  private lookup(key: ConfigKey): { value: unknown; what: string } | undefined {
    const flag = this.sources.flags[key];
    if (flag !== undefined) return { value: flag, what: `--${key}` };
    const file = this.sources.file;
    const inFile = file?.values[key];
    if (file !== undefined && inFile !== undefined && inFile !== null) return { value: inFile, what: `config file ${file.path}: "${key}"` };
    const fallback = SERVE_DEFAULTS[key];
    return fallback === undefined ? undefined : { value: fallback, what: `--${key}` };
  }

  get<K extends ConfigKey>(key: K): Setting<K> {
    const row: SettingRow = SERVE_SETTINGS[key];
    const got = this.lookup(key);
    if (got === undefined) return undefined as Setting<K>;
    const value = checkKind(row, got.value, got.what);
    return (row.parse === undefined ? value : (row.parse as (v: unknown, what: string) => unknown)(value, got.what)) as Setting<K>;
  }
}

/** A setting's value checked against its row's kind and bounds (durations and byte counts
 *  turned into numbers). */
function checkKind(row: SettingRow, v: unknown, what: string): unknown {
  const wrongType = (type: string): Error => new Error(`${what} must be ${type}, not ${JSON.stringify(v)}`);
  switch (row.kind) {
    case 'string':
      if (!isString(v)) throw wrongType('a string');
      if (v === '') throw new Error(`${what} must not be empty`);
      return v;
    case 'strings':
      if (!Array.isArray(v) || !v.every(isString)) throw wrongType('an array of strings');
      return v;
    case 'boolean':
      if (typeof v !== 'boolean') throw wrongType('true or false');
      return v;
    case 'integer': {
      if (!Number.isSafeInteger(v)) throw wrongType('an integer');
      const n = v as number;
      const min = row.min ?? 0;
      const max = row.max ?? Number.MAX_SAFE_INTEGER;
      if (n < min || n > max) throw new Error(`${what} must be ${max === Number.MAX_SAFE_INTEGER ? `at least ${min}` : `from ${min} to ${max}`}, not ${n}`);
      return n;
    }
    case 'duration': {
      // Durations are strings in a config file too: a bare number has no unit.
      if (!isString(v)) throw wrongType('a duration string like "30s" or "5m"');
      const ms = parseDuration(v, what);
      const min = row.min ?? 0;
      if (ms < min) throw new Error(`${what} must be at least ${formatDuration(min)}, not ${JSON.stringify(v)}`);
      return ms;
    }
    case 'bytes':
      if (!isString(v) && typeof v !== 'number') throw wrongType('a byte count like 1073741824 or "8GiB"');
      return parseByteSize(v, what);
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
  const options: ServeOptions = {
    dataDir: s.get('data-dir'),
    httpListen: s.get('http-listen'),
    p2pListen: s.get('p2p-listen'),
    join: s.get('join'),
    metricsListen: s.get('metrics-listen'),
    advertiseHttp: s.get('advertise-http'),
    advertiseP2p: s.get('advertise-p2p'),
    adminTokenFile: s.get('admin-token-file'),
    forceNewCluster: s.get('force-new-cluster'),
    maxValueBytes: s.get('max-value-bytes'),
    maxRequestBytes: s.get('max-request-bytes'),
    maxTxnOps: s.get('max-txn-ops'),
    maxWatches: s.get('max-watches'),
    leaseTickMs: s.get('lease-tick'),
    maxLeases: s.get('max-leases'),
    logLevel: s.get('log-level'),
    archive: {
      url: s.get('archive-url'),
      keyFile: s.get('archive-key-file'),
      segmentEntries: s.get('segment-entries'),
      snapshotSegments: s.get('snapshot-segments'),
      delayEntries: s.get('archive-delay-entries'),
      delayMs: s.get('archive-delay'),
      intervalMs: s.get('archive-interval'),
      pruneIntervalMs: s.get('prune-interval'),
      hotRetention: s.get('hot-retention'),
      hotQuotaBytes: s.get('hot-quota-bytes'),
      checkpoints: s.get('checkpoint'),
      restoreFrom: s.get('restore-from'),
      restoreIndex: s.get('restore-index'),
      coldReadsMax: s.get('blocksync-cold-reads-max'),
      coldQueueMax: s.get('blocksync-queue-max'),
      blocksyncTimeoutMs: s.get('blocksync-timeout'),
    },
  } satisfies Record<keyof ServeOptions, unknown>;
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
  if (options.adminTokenFile !== undefined) await readAdminTokenFile(options.adminTokenFile);
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
