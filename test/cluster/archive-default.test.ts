/**
 * The default archive (a cluster bootstrapped without --archive-url) lives in the bootstrap
 * node's data dir: it archives while that node is the only member, and once another joins,
 * archiving and pruning stop on every node, which the banner, /readyz, the metrics, the log
 * and `pangea alarm list` all say. A cluster given a shared --archive-url archives with any
 * number of members.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { allVoters, isReady, killAll, metric, removeDir, startNode, tempDir, waitFor, type TestNode } from './harness.js';

const RUN = fileURLToPath(new URL('../../../bin/run.js', import.meta.url));
const root = tempDir('pangea-archive-default-');
after(async () => {
  await killAll();
  removeDir(root);
});

interface ArchiveStatus {
  readonly state: 'on' | 'off';
  readonly reason?: string;
  readonly behindIndexes: number;
}

async function readyArchive(n: TestNode): Promise<ArchiveStatus> {
  const res = await fetch(`${n.info.http}/readyz`, { signal: AbortSignal.timeout(2000) });
  return ((await res.json()) as { archive: ArchiveStatus }).archive;
}

function alarms(endpoint: string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [RUN, 'alarm', 'list', '--endpoints', endpoint], { timeout: 30_000 }, (err, stdout) => {
      if (err !== null && typeof (err as { code?: unknown }).code !== 'number') return reject(err);
      resolve(stdout);
    });
  });
}

test('the default archive serves a one-node cluster only; a second member turns archiving off, and everything says so', { timeout: 120_000 }, async () => {
  const n1 = await startNode({ dataDir: join(root, 'n1'), extra: ['--log-level', 'info'] });
  await waitFor('n1 ready', () => isReady(n1));
  assert.match(n1.output(), /archive {2}file:\/\/\S+\/n1\/archive, segments of \d+ entries \(the default, in this data dir: for a one-node cluster only; a cluster of several nodes needs --archive-url/);
  await waitFor('archiving on', async () => (await readyArchive(n1)).state === 'on');
  assert.equal(await metric(n1, 'pangea_archive_enabled'), 1);

  // Every node needs the archive key; with it, only the default archive's rule keeps n2 off.
  const n2 = await startNode({ dataDir: join(root, 'n2'), join: n1.info.http, extra: ['--log-level', 'info', '--archive-key-file', join(root, 'n1', 'archive.key')] });
  await waitFor('two ready voters', () => allVoters([n1, n2]), 60_000);
  for (const n of [n1, n2]) {
    const a = await waitFor('archiving off', async () => {
      const s = await readyArchive(n);
      return s.state === 'off' ? s : null;
    });
    assert.match(a.reason ?? '', /the archive is the default one in node \S+'s data dir .* serves a one-node cluster only, and this cluster has 2 members: archiving and pruning are off/);
    assert.equal(await metric(n, 'pangea_archive_enabled'), 0);
  }
  await waitFor('the log line', () => /archiving is off: the archive is the default one/.test(n1.output()));
  assert.match(await alarms(n1.info.http), /archive_off: the cluster neither archives nor prunes/);
});

test('a cluster bootstrapped with a shared --archive-url archives with several members', { timeout: 120_000 }, async () => {
  const url = `file://${join(root, 'shared')}`;
  const a = await startNode({ dataDir: join(root, 'a'), extra: ['--archive-url', url] });
  await waitFor('a ready', () => isReady(a));
  assert.match(a.output(), new RegExp(`archive {2}${url}, segments of \\d+ entries\\n`));
  const b = await startNode({ dataDir: join(root, 'b'), join: a.info.http, extra: ['--archive-key-file', join(root, 'a', 'archive.key')] });
  await waitFor('two ready voters', () => allVoters([a, b]), 60_000);
  for (const n of [a, b]) {
    assert.equal((await readyArchive(n)).state, 'on');
    assert.equal(await metric(n, 'pangea_archive_enabled'), 1);
  }
});
