/**
 * The store taken away and given back, with real processes: `pangea soak` passes against a
 * healthy archiving node; with the S3 store down, archiving fails, soak names it, the hot
 * log grows to its quota and writes get 503 while reads go on; with the store back, the
 * archive catches up, the hot log is pruned and writes resume, losing nothing acknowledged;
 * a stopped node fails soak.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { after, test } from 'node:test';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeNewKeyFile } from '../../src/ces/index.js';
import { killAll, metric, removeDir, startNode, tempDir, waitFor, type TestNode } from '../cluster/harness.js';
import { startS3, type TestS3 } from './s3rver.js';

const RUN = fileURLToPath(new URL('../../../bin/run.js', import.meta.url));
const dirs: string[] = [];
let s3: TestS3 | null = null;
after(async () => {
  await killAll();
  await s3?.close();
  for (const d of dirs) removeDir(d);
});

async function put(node: TestNode, key: string, value: string): Promise<{ status: number; body: string }> {
  const res = await fetch(`${node.info.http}/v1/kv/${key}`, { method: 'PUT', body: value, signal: AbortSignal.timeout(5000) });
  return { status: res.status, body: await res.text() };
}

function soak(url: string, seconds: number): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [RUN, 'soak', '--url', url, '--duration', `${seconds}s`, '--interval', '250ms', '--stall-after', '5s'], { timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: stdout + stderr });
    });
  });
}

test('with the store down the hot log fills to its quota and writes get 503; with it back, archiving catches up and writes resume; soak tells which', { timeout: 180_000 }, async () => {
  const root = tempDir();
  dirs.push(root);
  s3 = await startS3(join(root, 's3'));
  const port = (s3 as TestS3 & { port: number }).port;
  const keyFile = join(root, 'archive.key');
  await writeNewKeyFile(keyFile);
  // The quota leaves the healthy phase about 4x its steady hot log (~20 KB: a segment, the
  // retention, the archive's delay): at 40 KB, a 2 s pause of the archiver or s3rver on a busy
  // 2-core machine filled it and soak saw the node not ready (CI on Node 24, once).
  const node = await startNode({
    dataDir: join(root, 'n1'),
    extra: [
      '--archive-key-file', keyFile, '--archive-url', s3.url('quota'), '--segment-entries', '20', '--snapshot-segments', '1', '--archive-delay-entries', '2', '--archive-delay', '0s',
      '--archive-interval', '100ms', '--prune-interval', '200ms', '--hot-retention', '10', '--hot-quota-bytes', '81920',
    ],
  });
  await waitFor('node ready', async () => (await fetch(`${node.info.http}/readyz`)).status === 200);

  const acked = new Map<string, string>();
  let n = 0;
  const value = 'x'.repeat(200);
  const write = async (): Promise<{ status: number; body: string }> => {
    const key = `k${n++}`;
    const r = await put(node, key, `${key}-${value}`);
    if (r.status === 200) acked.set(key, `${key}-${value}`);
    return r;
  };

  // Healthy: soak passes while writes flow.
  let writing = true;
  const background = (async () => {
    while (writing) {
      await write();
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  const healthy = await soak(node.info.http, 3);
  writing = false;
  await background;
  assert.equal(healthy.code, 0, healthy.out);
  await waitFor('archiving to catch up', async () => (await metric(node, 'pangea_archive_last_index')) >= (await metric(node, 'pangea_commit_index')) - 25);

  // The store goes away: writes go on until the hot log reaches its quota.
  await s3.close();
  let refused: { status: number; body: string } | null = null;
  for (let i = 0; i < 5000 && refused === null; i++) {
    const r = await write();
    if (r.status !== 200) refused = r;
  }
  assert.ok(refused !== null, 'the quota never refused a write');
  assert.equal(refused.status, 503, refused.body);
  assert.match(refused.body, /quota/);
  assert.equal(await metric(node, 'pangea_hot_quota_alarm'), 1);
  await waitFor('the quota alarm in the log', () => /client writes refused: the hot log is at its quota/.test(node.output()));
  assert.ok((await metric(node, 'pangea_archive_errors_total')) > 0);
  // Reads go on.
  const [someKey, someValue] = [...acked][0]!;
  const read = await fetch(`${node.info.http}/v1/kv/${someKey}`);
  assert.equal(read.status, 200);
  assert.equal(await read.text(), someValue);
  const down = await soak(node.info.http, 2);
  assert.equal(down.code, 1, down.out);
  assert.match(down.out, /archive/i);

  // The store comes back (same port, same objects): archiving catches up, pruning frees the
  // hot log, and writes are taken again.
  s3 = await startS3(join(root, 's3'), 'pangea-test', port);
  await waitFor('the quota alarm to clear', async () => (await metric(node, 'pangea_hot_quota_alarm')) === 0, 60_000);
  assert.equal((await write()).status, 200);
  for (const [key, v] of acked) {
    const res = await fetch(`${node.info.http}/v1/kv/${key}?consistency=stale`);
    assert.equal(await res.text(), v, `acknowledged ${key} lost`);
  }

  // A stopped node fails soak.
  await node.kill('SIGTERM');
  const stopped = await soak(node.info.http, 1);
  assert.equal(stopped.code, 1, stopped.out);
  assert.match(stopped.out, /ready|unreachable|refused/i);
});
