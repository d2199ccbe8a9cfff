import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { after, test } from 'node:test';
import { clusterView, isReady, killAll, removeDir, startNode, tempDir, waitFor, type TestNode } from './harness.js';

const dirs: string[] = [];
after(async () => {
  await killAll();
  for (const d of dirs) removeDir(d);
});

const ready = isReady;

async function voters(n: TestNode): Promise<string[]> {
  return (await clusterView(n.info.http)).members.filter((m) => m.role === 'voter').map((m) => m.peerId);
}

async function threeNodes(root: string, extra: string[] = [], token?: string): Promise<TestNode[]> {
  const n1 = await startNode({ dataDir: `${root}/n1`, extra });
  await waitFor('node 1 ready', () => ready(n1));
  const joinExtra = token ? [...extra] : extra;
  const n2 = await startNode({ dataDir: `${root}/n2`, join: n1.info.http, extra: joinExtra });
  const n3 = await startNode({ dataDir: `${root}/n3`, join: n1.info.http, extra: joinExtra });
  const nodes = [n1, n2, n3];
  await waitFor('three voters', async () => (await voters(n1)).length === 3 && (await Promise.all(nodes.map(ready))).every(Boolean), 60_000);
  return nodes;
}

test('--force-new-cluster brings a survivor back alone with every write it applied, and new nodes can join it', { timeout: 120_000 }, async () => {
  const root = tempDir();
  dirs.push(root);
  const [n1, n2, n3] = await threeNodes(root);
  const keys: string[] = [];
  for (let i = 0; i < 60; i++) {
    const res = await fetch(`${n1!.info.http}/v1/kv/k${i}`, { method: 'PUT', body: `v${i}` });
    assert.equal(res.status, 200);
    keys.push(`k${i}`);
  }
  const commit = (await clusterView(n1!.info.http)).commitIndex;
  await waitFor('node 1 to apply everything', async () => (await clusterView(n1!.info.http)).appliedIndex >= commit);

  // Two of three are destroyed for good: no quorum is left.
  await n2!.kill();
  await n3!.kill();
  removeDir(n2!.dataDir);
  removeDir(n3!.dataDir);
  await n1!.kill();

  const survivor = await startNode({
    dataDir: n1!.dataDir,
    httpListen: n1!.info.http.replace('http://', ''),
    extra: ['--force-new-cluster'],
  });
  await waitFor('the survivor to lead alone', () => ready(survivor), 30_000);
  for (let i = 0; i < keys.length; i++) {
    const res = await fetch(`${survivor.info.http}/v1/kv/${keys[i]}`);
    assert.equal(res.status, 200);
    assert.equal(await res.text(), `v${i}`);
  }
  assert.equal((await fetch(`${survivor.info.http}/v1/kv/after`, { method: 'PUT', body: 'x' })).status, 200);
  await waitFor('former members gone', async () => (await clusterView(survivor.info.http)).members.length === 1);

  const n4 = await startNode({ dataDir: `${root}/n4`, join: survivor.info.http });
  try {
    await waitFor('node 4 to be a ready voter', async () => (await ready(n4)) && (await voters(survivor)).includes(n4.info.peerId), 60_000);
  } catch (err) {
    console.log('SURVIVOR', survivor.output().slice(-3000), '\nN4', n4.output().slice(-3000));
    console.log(JSON.stringify(await clusterView(survivor.info.http)), JSON.stringify(await clusterView(n4.info.http)));
    throw err;
  }
  const res = await fetch(`${n4.info.http}/v1/kv/k7`);
  assert.equal(await res.text(), 'v7');
  assert.equal((await voters(survivor)).length, 2);
  // The joiner replayed the log: the former members' removals are in it, so it derives the
  // same voters as the survivor (found by review: they were not, once).
  assert.deepEqual((await voters(n4)).sort(), (await voters(survivor)).sort());
});

test('with --admin-token-file, membership changes and snapshots need the token; --join sends it', { timeout: 120_000 }, async () => {
  const root = tempDir();
  dirs.push(root);
  const tokenFile = `${root}/token`;
  writeFileSync(tokenFile, 's3cret-token\n', { mode: 0o600 });
  const n1 = await startNode({ dataDir: `${root}/n1`, extra: ['--admin-token-file', tokenFile] });
  await waitFor('node 1 ready', () => ready(n1));
  const body = JSON.stringify({ peerId: '12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA', p2p: [], http: 'http://127.0.0.1:9', role: 'learner' });
  const post = (auth?: string) =>
    fetch(`${n1.info.http}/v1/cluster/members`, { method: 'POST', body, headers: { 'content-type': 'application/json', ...(auth ? { authorization: auth } : {}) } });
  const missing = await post();
  assert.equal(missing.status, 401);
  assert.equal(((await missing.json()) as { error: { code: string } }).error.code, 'unauthorized');
  const wrong = await post('Bearer nope');
  assert.equal(wrong.status, 403);
  assert.equal((await fetch(`${n1.info.http}/v1/cluster/members/x`, { method: 'DELETE' })).status, 401);
  // A snapshot is every key: it needs the token too.
  assert.equal((await fetch(`${n1.info.http}/v1/cluster/snapshot`)).status, 401);
  assert.equal((await fetch(`${n1.info.http}/v1/cluster/snapshot`, { headers: { authorization: 'Bearer nope' } })).status, 403);
  const snap = await fetch(`${n1.info.http}/v1/cluster/snapshot`, { headers: { authorization: 'Bearer s3cret-token' } });
  assert.equal(snap.status, 200);
  assert.match(snap.headers.get('pangea-index') ?? '', /^\d+$/);
  assert.equal(Buffer.from(await snap.arrayBuffer()).subarray(0, 16).toString('latin1'), 'pangea-snapshot\n');

  const n2 = await startNode({ dataDir: `${root}/n2`, join: n1.info.http, extra: ['--admin-token-file', tokenFile] });
  await waitFor('node 2 to be a ready voter', async () => (await ready(n2)) && (await voters(n1)).includes(n2.info.peerId), 60_000);
});
