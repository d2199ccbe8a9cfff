import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IDENTITY_FILE, loadOrCreateIdentity } from '../../src/net/identity.js';

test('identity is created once, persists across reloads, mode 0600', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'pangea-id-'));
  try {
    const dataDir = join(dir, 'data'); // created on demand
    const a = await loadOrCreateIdentity(dataDir);
    assert.match(a.peerId, /^12D3KooW/);
    assert.equal(a.privateKey.type, 'Ed25519');
    const st = await stat(join(dataDir, IDENTITY_FILE));
    assert.equal(st.mode & 0o777, 0o600);
    assert.deepEqual(await readdir(dataDir), [IDENTITY_FILE], 'no temporary file left behind');
    const b = await loadOrCreateIdentity(dataDir);
    assert.equal(b.peerId, a.peerId);
    assert.ok(b.privateKey.equals(a.privateKey));
    const other = await loadOrCreateIdentity(join(dir, 'other'));
    assert.notEqual(other.peerId, a.peerId);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a corrupt identity file is an error, not a silent new identity', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'pangea-id-'));
  try {
    await writeFile(join(dir, IDENTITY_FILE), new Uint8Array([1, 2, 3]));
    await assert.rejects(loadOrCreateIdentity(dir));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
