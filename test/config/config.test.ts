/**
 * `pangea serve` settings: the value parsers, the config file, resolveServeOptions' checks,
 * the example file and docs kept in step with CONFIG_KEYS, and `serve --dry-run` for real.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { NODE_ARCHIVE_DEFAULTS, SEGMENT_ENTRIES_MAX } from '../../src/archive/options.js';
import { writeNewKeyFile } from '../../src/ces/keys.js';
import Serve from '../../src/commands/serve.js';
import {
  CONFIG_KEYS,
  DURATION_MS_MAX,
  checkArchiveUrl,
  checkServeFiles,
  formatDuration,
  formatServeOptions,
  loadConfigFile,
  parseByteSize,
  parseCheckpoint,
  parseCheckpoints,
  parseDuration,
  resolveServeOptions,
  type ConfigValues,
} from '../../src/config.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const RUN = join(ROOT, 'bin/run.js');
const EXAMPLE = join(ROOT, 'pangea.example.json');
const DOCS = join(ROOT, 'docs/configuration.md');
const HASH = 'ab'.repeat(32);

const dir = mkdtempSync(join(tmpdir(), 'pangea-config-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** Writes `values` as a config file and returns its path. */
let files = 0;
function configFile(values: unknown): string {
  const path = join(dir, `config-${files++}.json`);
  writeFileSync(path, JSON.stringify(values));
  return path;
}

function resolveFile(values: ConfigValues, flags: ConfigValues = {}) {
  return resolveServeOptions({ flags, file: loadConfigFile(configFile(values)) });
}

describe('parseDuration', () => {
  test('reads h, m, s and ms, combined in that order, and 0', () => {
    const cases: [string, number][] = [
      ['0', 0], ['0s', 0], ['250ms', 250], ['30s', 30_000], ['90s', 90_000], ['5m', 300_000], ['1h', 3_600_000],
      ['1h30m', 5_400_000], ['1h2m3s4ms', 3_723_004], ['576h', DURATION_MS_MAX],
    ];
    for (const [text, ms] of cases) assert.equal(parseDuration(text, '--x'), ms, text);
  });

  test('refuses anything else, naming the setting and the value', () => {
    assert.throws(() => parseDuration('abc', '--archive-delay'), { message: '--archive-delay must be a duration like 30s or 5m, not "abc"' });
    for (const text of ['', '5', '-5s', '1.5h', '30m1h', '5 m', '1d', '30S', 's', '1h1h', ' 5s']) {
      assert.throws(() => parseDuration(text, '--x'), /--x must be a duration like 30s or 5m/, text);
    }
    assert.throws(() => parseDuration('577h', '--x'), /--x must be at most 576h/);
  });

  test('formatDuration writes what parseDuration reads back', () => {
    for (const ms of [0, 1, 250, 1_000, 60_000, 90_000, 3_600_000, 5_400_000, 3_723_004, DURATION_MS_MAX]) {
      assert.equal(parseDuration(formatDuration(ms), '--x'), ms);
    }
    assert.equal(formatDuration(5_400_000), '1h30m');
    assert.equal(formatDuration(0), '0');
  });
});

describe('checkpoints', () => {
  test('INDEX:HASH gives the index and the 32 hash bytes', () => {
    const [index, hash] = parseCheckpoint(`42:${HASH.toUpperCase()}`, '--checkpoint');
    assert.equal(index, 42);
    assert.deepEqual(hash, new Uint8Array(32).fill(0xab));
  });

  test('bad forms are refused with the reason', () => {
    const cases: [string, RegExp][] = [
      [HASH, /no colon/],
      [`0:${HASH}`, /index is not a whole number >= 1/],
      [`-1:${HASH}`, /index is not a whole number >= 1/],
      [`x:${HASH}`, /index is not a whole number >= 1/],
      [`:${HASH}`, /index is not a whole number >= 1/],
      ['1:abcd', /the hash has 4 digits/],
      [`1:${HASH}00`, /the hash has 66 digits/],
      [`1:${'zz'.repeat(32)}`, /the hash is not hex/],
    ];
    for (const [text, reason] of cases) {
      assert.throws(() => parseCheckpoint(text, '--checkpoint'), (err: Error) => err.message.startsWith('--checkpoint must be INDEX:HASH') && reason.test(err.message), text);
    }
  });

  test('repeated: a map by index; one index with two hashes is refused', () => {
    const map = parseCheckpoints([`1:${HASH}`, `7:${'cd'.repeat(32)}`, `1:${HASH}`], '--checkpoint');
    assert.deepEqual([...map.keys()], [1, 7]);
    assert.throws(() => parseCheckpoints([`1:${HASH}`, `1:${'cd'.repeat(32)}`], '--checkpoint'), /index 1 two different hashes/);
  });
});

test('byte counts: integers or binary units', () => {
  assert.equal(parseByteSize(0, '--q'), 0);
  assert.equal(parseByteSize('4096', '--q'), 4096);
  assert.equal(parseByteSize('512MiB', '--q'), 512 * 2 ** 20);
  assert.equal(parseByteSize('8GiB', '--q'), 8 * 2 ** 30);
  for (const bad of ['8GB', '-1', '1.5GiB', '', ' 1', 'MiB', -1, 1.5]) assert.throws(() => parseByteSize(bad, '--q'), /--q must be a byte count/, String(bad));
});

test('archive URLs: file:///ABSOLUTE or s3://BUCKET[/PREFIX][?region&endpoint&path_style]', () => {
  for (const good of [
    'file:///var/lib/pangea/archive',
    's3://pangea-archive',
    's3://pangea.archive/prod/eu/',
    's3://bucket/p?region=eu-west-1&endpoint=http://127.0.0.1:9000&path_style=true',
  ]) assert.equal(checkArchiveUrl(good, '--archive-url'), good);
  const bad: [string, RegExp][] = [
    ['archive', /not a URL/],
    ['/var/archive', /not a URL/],
    ['file://relative/dir', /absolute path/],
    ['file:///a?x=1', /no query/],
    ['http://bucket/x', /unknown scheme http:/],
    ['s3://Bad_Bucket', /no bucket name/],
    ['s3://bucket:9000', /a bucket has no port/],
    ['s3://key:secret@bucket', /credentials/],
    ['s3://bucket/a//b', /prefix/],
    ['s3://bucket/a b', /prefix/],
    ['s3://bucket?foo=1', /unknown parameter "foo"/],
    ['s3://bucket?region=a&region=b', /"region" given twice/],
    ['s3://bucket?path_style=yes', /path_style is true or false/],
    ['s3://bucket?endpoint=ftp://x', /endpoint .* is not http/],
  ];
  for (const [text, reason] of bad) {
    assert.throws(() => checkArchiveUrl(text, '--restore-from'), (err: Error) => err.message.startsWith('--restore-from must be file:///') && reason.test(err.message), text);
  }
});

describe('config file', () => {
  test('must be a readable JSON object of known keys', () => {
    assert.throws(() => loadConfigFile(configFile({ 'data-dir': '/d', 'archive-dealy': '1s' })), /unknown key "archive-dealy" \(known: data-dir,/);
    assert.throws(() => loadConfigFile(configFile(['data-dir'])), /must hold a JSON object/);
    assert.throws(() => loadConfigFile(join(dir, 'missing.json')), /cannot read config file/);
    const broken = join(dir, 'broken.json');
    writeFileSync(broken, '{"data-dir": ');
    assert.throws(() => loadConfigFile(broken), /cannot read config file/);
  });

  test('wrong types name the key and the file', () => {
    const cases: [ConfigValues, RegExp][] = [
      [{ 'max-txn-ops': '12' }, /"max-txn-ops" must be an integer, not "12"/],
      [{ 'segment-entries': 1.5 }, /"segment-entries" must be an integer/],
      [{ 'p2p-listen': '/ip4/127.0.0.1/tcp/1' }, /"p2p-listen" must be an array of strings/],
      [{ checkpoint: [1] }, /"checkpoint" must be an array of strings/],
      [{ 'force-new-cluster': 'yes' }, /"force-new-cluster" must be true or false/],
      [{ 'data-dir': 7 }, /"data-dir" must be a string/],
      [{ 'archive-delay': 30 }, /"archive-delay" must be a duration string like "30s"/],
      [{ 'hot-quota-bytes': true }, /"hot-quota-bytes" must be a byte count/],
    ];
    for (const [values, message] of cases) {
      assert.throws(() => resolveFile(values), (err: Error) => /^config file \S+config-\d+\.json: /.test(err.message) && message.test(err.message), JSON.stringify(values));
    }
  });

  test('null leaves a key unset', () => {
    const o = resolveFile({ join: null, 'log-level': null, 'archive-delay': null });
    assert.equal(o.join, undefined);
    assert.equal(o.logLevel, 'info');
    assert.equal(o.archive.delayMs, NODE_ARCHIVE_DEFAULTS.delayMs);
  });
});

describe('resolveServeOptions', () => {
  test('defaults: the server defaults of NodeArchiveOptions; cluster-wide settings unset', () => {
    const o = resolveServeOptions({ flags: {} });
    assert.equal(o.dataDir, './pangea-data');
    assert.deepEqual(o.httpListen, { host: '127.0.0.1', port: 7070 });
    assert.deepEqual(o.archive, {
      ...NODE_ARCHIVE_DEFAULTS,
      url: undefined, keyFile: undefined, segmentEntries: undefined, snapshotSegments: undefined, restoreFrom: undefined, restoreIndex: undefined,
    });
  });

  test('a typed flag wins over the config file, which wins over the default', () => {
    const o = resolveFile({ 'archive-delay': '1m', 'archive-interval': '0', 'hot-retention': 5, 'p2p-listen': ['/ip4/127.0.0.1/tcp/9'] }, { 'archive-delay': '250ms' });
    assert.equal(o.archive.delayMs, 250);
    assert.equal(o.archive.intervalMs, 0);
    assert.equal(o.archive.hotRetention, 5);
    assert.deepEqual(o.p2pListen, ['/ip4/127.0.0.1/tcp/9']);
    assert.equal(o.archive.pruneIntervalMs, NODE_ARCHIVE_DEFAULTS.pruneIntervalMs);
  });

  test('every archive setting maps to its NodeArchiveOptions field', () => {
    const o = resolveServeOptions({
      flags: {
        'archive-url': 's3://bkt/p', 'archive-key-file': '/k', 'segment-entries': 500, 'snapshot-segments': 3, 'archive-delay-entries': 0,
        'archive-delay': '1s', 'archive-interval': '2s', 'prune-interval': '3s', 'hot-retention': 0, 'hot-quota-bytes': '1KiB',
        checkpoint: [`9:${HASH}`], 'restore-from': 'file:///a', 'restore-index': 9, 'blocksync-cold-reads-max': 1,
        'blocksync-queue-max': 2, 'blocksync-timeout': '4s',
      },
    });
    assert.deepEqual(o.archive, {
      url: 's3://bkt/p', keyFile: '/k', segmentEntries: 500, snapshotSegments: 3, delayEntries: 0, delayMs: 1_000, intervalMs: 2_000,
      pruneIntervalMs: 3_000, hotRetention: 0, hotQuotaBytes: 1024, checkpoints: new Map([[9, new Uint8Array(32).fill(0xab)]]),
      restoreFrom: 'file:///a', restoreIndex: 9, coldReadsMax: 1, coldQueueMax: 2, blocksyncTimeoutMs: 4_000,
    });
  });

  test('bounds and forms', () => {
    const cases: [ConfigValues, RegExp][] = [
      [{ 'segment-entries': 0 }, new RegExp(`^--segment-entries must be from 1 to ${SEGMENT_ENTRIES_MAX}, not 0$`)],
      [{ 'segment-entries': SEGMENT_ENTRIES_MAX + 1 }, /--segment-entries must be from 1/],
      [{ 'snapshot-segments': 0 }, /^--snapshot-segments must be at least 1, not 0$/],
      [{ 'archive-delay-entries': -1 }, /--archive-delay-entries must be at least 0/],
      [{ 'max-request-bytes': 0 }, /--max-request-bytes must be at least 1/],
      [{ 'restore-from': 'file:///a', 'restore-index': 0 }, /--restore-index must be at least 1/],
      [{ 'blocksync-timeout': '0' }, /^--blocksync-timeout must be at least 1ms, not "0"$/],
      [{ 'blocksync-queue-max': 0 }, /--blocksync-queue-max must be at least 1/],
      [{ 'prune-interval': '5 minutes' }, /--prune-interval must be a duration/],
      [{ 'log-level': 'verbose' }, /^--log-level must be debug, info, warn or error, not "verbose"$/],
      [{ 'http-listen': '7070' }, /^--http-listen must be HOST:PORT/],
      [{ 'metrics-listen': 'localhost:99999' }, /^--metrics-listen must be HOST:PORT/],
      [{ 'p2p-listen': ['/ip4/1.2.3/tcp/1'] }, /^--p2p-listen must be a multiaddr/],
      [{ join: '10.0.0.1:7070' }, /^--join must be an http:\/\/ or https:\/\/ URL/],
      [{ 'advertise-http': 'ftp://x' }, /^--advertise-http must be an http/],
      [{ 'archive-url': 'file:archive' }, /^--archive-url must be file:\/\/\//],
      [{ 'data-dir': '' }, /^--data-dir must not be empty$/],
    ];
    for (const [flags, message] of cases) assert.throws(() => resolveServeOptions({ flags }), { message }, JSON.stringify(flags));
  });

  test('combinations: restore-from excludes join; restore-index needs restore-from', () => {
    assert.throws(() => resolveServeOptions({ flags: { 'restore-from': 'file:///a', join: 'http://10.0.0.1:7070' } }), /--restore-from and --join exclude each other/);
    assert.throws(() => resolveFile({ join: 'http://10.0.0.1:7070' }, { 'restore-from': 's3://bkt' }), /--restore-from and --join exclude each other/);
    assert.throws(() => resolveServeOptions({ flags: { 'restore-index': 5 } }), { message: /^--restore-index needs --restore-from/ });
    assert.equal(resolveServeOptions({ flags: { 'restore-from': 'file:///a', 'restore-index': 5 } }).archive.restoreIndex, 5);
  });
});

test('checkServeFiles reads the token and key files, and never shows a secret', async () => {
  const key = join(dir, 'archive.key');
  await writeNewKeyFile(key);
  const token = join(dir, 'token');
  writeFileSync(token, 's3cret\n');
  const ok = resolveServeOptions({ flags: { 'admin-token-file': token, 'archive-key-file': key } });
  await checkServeFiles(ok);
  const printed = formatServeOptions(ok);
  assert.ok(printed.includes(key) && !printed.includes('s3cret') && !printed.includes(readFileSync(key, 'utf8').split('\n')[1]!));

  const empty = join(dir, 'empty-token');
  writeFileSync(empty, '\n');
  await assert.rejects(checkServeFiles(resolveServeOptions({ flags: { 'admin-token-file': empty } })), /--admin-token-file: \S+ is empty/);
  await assert.rejects(checkServeFiles(resolveServeOptions({ flags: { 'admin-token-file': join(dir, 'nope') } })), /--admin-token-file: cannot read/);
  const badKey = join(dir, 'bad.key');
  writeFileSync(badKey, 'not a key\n');
  await assert.rejects(checkServeFiles(resolveServeOptions({ flags: { 'archive-key-file': badKey } })), { message: /^--archive-key-file: .*expected 32 raw bytes or 64 hex digits/ });
  await assert.rejects(checkServeFiles(resolveServeOptions({ flags: { 'archive-key-file': join(dir, 'nope.key') } })), /--archive-key-file: .*ENOENT/);
});

describe('keys, flags, example file and docs stay in step', () => {
  test('pangea.example.json holds every key and passes the real loader', () => {
    const file = loadConfigFile(EXAMPLE);
    assert.deepEqual(Object.keys(file.values).sort(), [...CONFIG_KEYS].sort());
    const o = resolveServeOptions({ flags: {}, file });
    assert.equal(o.archive.hotQuotaBytes, 8 * 2 ** 30);
  });

  test('docs/configuration.md has a table row for every key', () => {
    const rows = new Set([...readFileSync(DOCS, 'utf8').matchAll(/^\| `([a-z0-9-]+)` \|/gm)].map((m) => m[1]));
    for (const key of CONFIG_KEYS) assert.ok(rows.has(key), `docs/configuration.md lacks a row for ${key}`);
    assert.equal(rows.size, CONFIG_KEYS.length, 'docs/configuration.md has rows for keys that do not exist');
  });

  test('every key is a serve flag, and every serve flag but --config and --dry-run is a key', () => {
    assert.deepEqual(Object.keys(Serve.flags).filter((f) => f !== 'config' && f !== 'dry-run').sort(), [...CONFIG_KEYS].sort());
  });
});

describe('pangea serve --dry-run', () => {
  function serve(...args: string[]): { status: number | null; out: string; err: string } {
    const r = spawnSync(process.execPath, [RUN, 'serve', '--dry-run', ...args], { encoding: 'utf8', timeout: 60_000 });
    return { status: r.status, out: r.stdout, err: r.stderr };
  }

  test('prints the resolved settings as JSON and touches no data dir', { timeout: 120_000 }, () => {
    const dataDir = join(dir, 'never-created');
    const config = configFile({ 'data-dir': dataDir, 'archive-delay': '1m', 'hot-quota-bytes': '512MiB', checkpoint: [`3:${HASH}`] });
    const r = serve('--config', config, '--archive-interval', '0');
    assert.equal(r.status, 0, r.err);
    const printed = JSON.parse(r.out) as { dataDir: string; archive: Record<string, unknown> };
    assert.equal(printed.dataDir, dataDir);
    assert.equal(printed.archive.delayMs, 60_000);
    assert.equal(printed.archive.intervalMs, 0);
    assert.equal(printed.archive.hotQuotaBytes, 512 * 2 ** 20);
    assert.deepEqual(printed.archive.checkpoints, { 3: HASH });
    assert.equal(printed.archive.url, null);
    assert.ok(!existsSync(dataDir), 'dry-run created the data dir');
  });

  test('a bad value exits 2 naming the key', { timeout: 120_000 }, () => {
    const dataDir = join(dir, 'never-created-either');
    let r = serve('--config', configFile({ 'data-dir': dataDir, 'archive-delay': 30 }));
    assert.equal(r.status, 2);
    assert.match(r.err, /"archive-delay" must be a duration string like "30s"/);
    r = serve('--data-dir', dataDir, '--restore-from', 's3://bucket', '--join', 'http://127.0.0.1:7070');
    assert.equal(r.status, 2);
    assert.match(r.err, /--restore-from and --join/);
    r = serve('--data-dir', dataDir, '--archive-key-file', join(dir, 'missing.key'));
    assert.equal(r.status, 2);
    assert.match(r.err, /--archive-key-file/);
    assert.ok(!existsSync(dataDir), 'dry-run created the data dir');
  });
});
