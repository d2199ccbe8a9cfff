import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const bin = fileURLToPath(new URL('../../../bin/run.js', import.meta.url));

function pangea(...args: string[]): { status: number | null; out: string; err: string } {
  // spawnSync kills the child if it outlives the timeout.
  const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, out: r.stdout, err: r.stderr };
}

test('pangea ces keygen, encode, decode and verify', { timeout: 120_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'pangea-ces-cli-'));
  try {
    const key = join(dir, 'k1');
    const key2 = join(dir, 'k2');
    let r = pangea('ces', 'keygen', '--out', key);
    assert.equal(r.status, 0, r.err);
    assert.equal(statSync(key).mode & 0o777, 0o600);
    assert.match(readFileSync(key, 'utf8'), /^# pangea ces key id [0-9a-f]{16}\n[0-9a-f]{64}\n$/);
    assert.notEqual(pangea('ces', 'keygen', '--out', key).status, 0, 'keygen does not overwrite');
    assert.equal(pangea('ces', 'keygen', '--out', key2).status, 0);

    const input = join(dir, 'in');
    writeFileSync(input, Buffer.concat([Buffer.from('x'.repeat(30_000)), Buffer.from(Array.from({ length: 20_000 }, (_, i) => (i * 7919) & 0xff))]));
    const shards = join(dir, 'shards');
    r = pangea('ces', 'encode', '--key-file', key, '--data-shards', '3', '--parity-shards', '2', '--label', 'c1/log/0-9',
      '--stripe-bytes', '4096', input, shards);
    assert.equal(r.status, 0, r.err);
    for (let i = 0; i < 5; i++) assert.ok(existsSync(join(shards, `shard-${i}`)));

    const out = join(dir, 'out');
    r = pangea('ces', 'decode', '--key-file', key2, '--key-file', key, '--label', 'c1/log/0-9', shards, out);
    assert.equal(r.status, 0, r.err);
    assert.ok(readFileSync(out).equals(readFileSync(input)));

    r = pangea('ces', 'decode', '--key-file', key, '--label', 'c1/log/10-19', shards, join(dir, 'nope'));
    assert.notEqual(r.status, 0);
    assert.match(r.err, /wrong_label/);
    assert.ok(!existsSync(join(dir, 'nope')), 'no output on failure');
    r = pangea('ces', 'decode', '--key-file', key2, '--label', 'c1/log/0-9', shards, join(dir, 'nope'));
    assert.match(r.err, /wrong_key/);

    unlinkSync(join(shards, 'shard-0'));
    const corrupt = readFileSync(join(shards, 'shard-3'));
    corrupt[corrupt.length - 200]! ^= 1;
    writeFileSync(join(shards, 'shard-3'), corrupt);
    r = pangea('ces', 'verify', '--key-file', key, shards);
    assert.equal(r.status, 0, r.out + r.err);
    assert.match(r.out, /3 of 5 shards good/);
    assert.match(r.out, /missing +shard 0/);
    assert.match(r.out, /bad +\S+shard-3 \[3\]: checksum mismatch in stripe \d+/);
    assert.match(r.out, /rebuildable: yes/);
    r = pangea('ces', 'decode', '--key-file', key, '--label', 'c1/log/0-9', shards, out);
    assert.equal(r.status, 0, r.err);
    assert.ok(readFileSync(out).equals(readFileSync(input)));

    unlinkSync(join(shards, 'shard-4'));
    r = pangea('ces', 'verify', '--key-file', key, shards);
    assert.equal(r.status, 1);
    assert.match(r.out, /rebuildable: NO \(not_enough_shards: stripe \d+/);
    r = pangea('ces', 'decode', '--key-file', key, '--label', 'c1/log/0-9', shards, join(dir, 'nope'));
    assert.notEqual(r.status, 0);
    assert.match(r.err, /not_enough_shards/);
    assert.ok(!existsSync(join(dir, 'nope')));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
