import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { allVoters, killAll, removeDir, startCluster, startNode, tempDir, waitFor } from './harness.js';

const dirs: string[] = [];
after(async () => {
  await killAll();
  for (const d of dirs) removeDir(d);
});

/** A data dir cut off while joining through a member that is gone: its cluster file alone. */
function cutOffJoiner(dir: string, view: { clusterId: string; genesis: unknown; archive: unknown }): void {
  mkdirSync(dir, { recursive: true });
  const joining = { url: 'http://127.0.0.1:1', archive: view.archive ?? null, sponsor: '12D3KooWGoneGoneGoneGoneGoneGoneGoneGoneGoneGoneGone' };
  writeFileSync(join(dir, 'cluster.json'), JSON.stringify({ clusterId: view.clusterId, genesis: view.genesis, joining }));
}

test('a joiner cut off while joining resumes through another member given with --join, and not into another cluster', { timeout: 180_000 }, async () => {
  const root = tempDir();
  dirs.push(root);
  const [n1, n2] = await startCluster(join(root, 'a'), 2);
  const view = (await (await fetch(`${n1!.info.http}/v1/cluster`)).json()) as { clusterId: string; genesis: unknown; archive: unknown };

  // Another cluster's member: a resume through it is refused, naming both clusters.
  const other = await startNode({ dataDir: join(root, 'b1') });
  const wrong = join(root, 'wrong');
  cutOffJoiner(wrong, view);
  await assert.rejects(startNode({ dataDir: wrong, join: other.info.http }), (err: Error) => /is a member of cluster\s+\S+,\s+but this data dir joins cluster\s+(\S+)/.exec(err.message)?.[1] === view.clusterId);
  assert.ok(JSON.parse(readFileSync(join(wrong, 'cluster.json'), 'utf8')).joining.url === 'http://127.0.0.1:1', 'the refused resume changed nothing');

  const dir = join(root, 'n3');
  cutOffJoiner(dir, view);
  const n3 = await startNode({ dataDir: dir, join: n2!.info.http });
  await waitFor('3 ready voters', () => allVoters([n1!, n2!, n3]), 60_000);
  await waitFor('the join to be recorded as done', () => JSON.parse(readFileSync(join(dir, 'cluster.json'), 'utf8')).joining === undefined);
});
