/**
 * The `pangea` commands an operator runs against a live cluster (`kv`, `member`, `snapshot`,
 * `endpoint`), each as a real process (bin/run.js) against a real 3-node cluster: their
 * output, their exit codes, and the refusals they pass on in one line.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { writeNewKeyFile } from '../../src/ces/index.js';
import { APPLY_LEVEL_MAX } from '../../src/state/command.js';
import { clusterView, isReady, killAll, leaderOf, pangea, removeDir, startCluster, startNode, tempDir, waitFor } from './harness.js';

const root = tempDir('pangea-cli-');
after(async () => {
  await killAll();
  removeDir(root);
});

test('pangea kv, member and endpoint against a live 3-node cluster', { timeout: 180_000 }, async () => {
  // A cluster of several nodes archives to a store they share (here a directory all three
  // reach), each with the archive key: `alarm list` stays quiet below.
  const keyFile = join(root, 'archive.key');
  await writeNewKeyFile(keyFile);
  const nodes = await startCluster(root, 3, ['--log-level', 'info', '--archive-url', `file://${join(root, 'archive')}`, '--archive-key-file', keyFile]);
  const leader = await leaderOf(nodes);
  const follower = nodes.find((n) => n !== leader)!;
  // One address given: a follower. Writes go through it; the others are learned.
  const ep = follower.info.http;

  // kv: put, get, conditional put refused with the current revision, range, txn, del.
  const put = await pangea(ep, ['kv', 'put', 'greeting', 'hello']);
  assert.equal(put.code, 0, put.stderr);
  const rev = Number(/^revision (\d+) index \d+$/m.exec(put.stdout)?.[1]);
  assert.ok(rev > 0, put.stdout);
  assert.deepEqual(await pangea(ep, ['kv', 'get', 'greeting']), { code: 0, stdout: 'hello\n', stderr: '' });
  const json = JSON.parse((await pangea(ep, ['kv', 'get', 'greeting', '--json', '--stale'])).stdout) as { value: string; revision: number };
  assert.deepEqual([json.value, json.revision], ['hello', rev]);
  const refused = await pangea(ep, ['kv', 'put', 'greeting', 'hi', '--if-match', String(rev + 1000)]);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /precondition_failed/);
  assert.equal((await pangea(ep, ['kv', 'put', 'config/a', '1'])).code, 0);
  assert.equal((await pangea(ep, ['kv', 'put', 'config/b', '2'])).code, 0);
  assert.equal((await pangea(ep, ['kv', 'range', '--prefix', 'config/'])).stdout, 'config/a\t1\nconfig/b\t2\n');
  assert.equal((await pangea(ep, ['kv', 'range', '--prefix', 'config/', '--limit', '1'])).stdout, 'config/a\t1\n');
  const txnFile = join(root, 'txn.json');
  writeFileSync(txnFile, JSON.stringify({ compare: [{ key: 'config/a', target: 'value', op: '==', value: '1' }], success: [{ op: 'put', key: 'config/a', value: '10' }, { op: 'get', key: 'config/b' }] }));
  const txn = JSON.parse((await pangea(ep, ['kv', 'txn', '--file', txnFile])).stdout) as { succeeded: boolean; results: { value?: string }[] };
  assert.equal(txn.succeeded, true);
  assert.equal(txn.results[1]!.value, '2');
  const fromStdin = JSON.parse((await pangea(ep, ['kv', 'txn', '--file', '-'], JSON.stringify({ compare: [{ key: 'config/a', target: 'value', op: '==', value: '1' }] }))).stdout) as { succeeded: boolean };
  assert.equal(fromStdin.succeeded, false, 'config/a is 10 now');
  const badTxn = await pangea(ep, ['kv', 'txn', '--file', '-'], '{"compare": 3}');
  assert.equal(badTxn.code, 2);
  assert.match(badTxn.stderr, /--file: "compare" must be an array/);
  assert.match((await pangea(ep, ['kv', 'del', 'greeting'])).stdout, /^deleted true index \d+$/m);
  const gone = await pangea(ep, ['kv', 'get', 'greeting']);
  assert.equal(gone.code, 1);
  assert.match(gone.stderr, /greeting: not found/);

  // member: the list names each node once and the leader; changes that make no sense are
  // refused with the node's reason, in one line.
  const list = await pangea(ep, ['member', 'list']);
  assert.equal(list.code, 0, list.stderr);
  for (const n of nodes) assert.match(list.stdout, new RegExp(`^${n.info.peerId}  voter${n === leader ? ' \\(leader\\)' : ''}  ${n.info.http}`, 'm'));
  const bogus = await pangea(ep, ['member', 'add', '--peer-id', 'bogus', '--http', 'http://127.0.0.1:1', '--p2p', '/ip4/127.0.0.1/tcp/1']);
  assert.equal(bogus.code, 1);
  assert.match(bogus.stderr, /bad_request: .*peer/i);
  const stranger = await pangea(ep, ['member', 'remove', '12D3KooWBxZGnFwtpuQKZ2H3ZxNn6Bps3N7GoXRLVWTmdM2MTcK3']);
  assert.equal(stranger.code, 1);
  assert.match(stranger.stderr, /not_found/);
  const promote = await pangea(ep, ['member', 'promote', leader.info.peerId]);
  assert.equal(promote.code, 1);
  assert.match(promote.stderr, /is a voter already/);
  assert.equal((await clusterView(ep)).members.length, 3, 'nothing changed');

  // leader transfer: through a follower (forwarded to the leader); the voter named leads, and
  // writes go on. A peer that is no member is refused.
  const other = nodes.find((n) => n !== leader && n !== follower)!;
  const transfer = await pangea(ep, ['leader', 'transfer', other.info.peerId]);
  assert.equal(transfer.code, 0, transfer.stderr);
  assert.equal(transfer.stdout, `${other.info.peerId} leads now\n`);
  assert.equal((await clusterView(leader.info.http)).leader, other.info.peerId, 'the old leader answered once it saw the new one lead');
  await waitFor('the follower to follow the new leader', async () => (await clusterView(ep)).leader === other.info.peerId);
  assert.equal((await pangea(ep, ['kv', 'put', 'after-transfer', 'yes'])).code, 0);
  const notMember = await pangea(ep, ['leader', 'transfer', '12D3KooWBxZGnFwtpuQKZ2H3ZxNn6Bps3N7GoXRLVWTmdM2MTcK3']);
  assert.equal(notMember.code, 1);
  assert.match(notMember.stderr, /not_found: .* is not a member/);
  // And back, so the rest of the test finds the leader it knows.
  assert.equal((await pangea(ep, ['leader', 'transfer', leader.info.peerId])).code, 0);
  await waitFor('the first leader to lead again', async () => (await clusterView(other.info.http)).leader === leader.info.peerId);

  // version and alarm list: every member's build; no alarm on a healthy cluster.
  const versions = JSON.parse((await pangea(ep, ['version', '--cluster', '--json'])).stdout) as { self: { version: string }; members: { version?: string }[] };
  assert.equal(versions.members.length, 3);
  assert.ok(versions.members.every((m) => m.version === versions.self.version), JSON.stringify(versions));
  assert.match((await pangea(ep, ['version'])).stdout, /^pangea \d+\.\d+\.\d+.* \(node v\d+.*, data format \d+, apply levels \d+-\d+\)$/m);

  // cluster upgrade: every member asked over libp2p; a level no member's build applies is
  // refused naming all three, and nothing is proposed; the level they all apply is a no-op.
  const before = await clusterView(ep);
  assert.equal(before.applyLevel, APPLY_LEVEL_MAX);
  const tooNew = await pangea(ep, ['cluster', 'upgrade', '--level', String(APPLY_LEVEL_MAX + 1)]);
  assert.equal(tooNew.code, 1);
  assert.match(tooNew.stderr, new RegExp(`conflict: apply level ${APPLY_LEVEL_MAX + 1} needs every member to run a build that applies it: (\\S+ runs pangea \\S+, which applies levels 1 to ${APPLY_LEVEL_MAX}(; )?){3}$`, 'm'));
  const same = await pangea(ep, ['cluster', 'upgrade', '--json']);
  assert.equal(same.code, 0, same.stderr);
  assert.equal((JSON.parse(same.stdout) as { level: number }).level, APPLY_LEVEL_MAX);
  assert.equal((await clusterView(ep)).applyLevel, APPLY_LEVEL_MAX);
  assert.deepEqual(await pangea(ep, ['alarm', 'list']), { code: 0, stdout: '', stderr: '' });

  // snapshot save: the state streamed into a checked file; a damaged copy is refused (the
  // data dir named left without a node); a whole one restores as a new one-node cluster.
  const snapFile = join(root, 'backup.snapshot');
  const saved = await pangea(ep, ['snapshot', 'save', snapFile]);
  assert.equal(saved.code, 0, saved.stderr);
  assert.match(saved.stdout, /^saved the state at index \d+ \(\d+ records, .*, sha256 [0-9a-f]{64}\) from http:\/\/\S+ to \S+backup\.snapshot$/m);
  assert.match((await pangea(ep, ['snapshot', 'status', snapFile])).stdout, /^index \d+ \(slot \d+\), \d+ records, .*\nvoters: \S+, \S+, \S+$/m);
  const damaged = join(root, 'damaged.snapshot');
  const bytes = readFileSync(snapFile);
  bytes[bytes.length >> 1]! ^= 1;
  writeFileSync(damaged, bytes);
  const bad = await pangea(ep, ['snapshot', 'status', damaged]);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /damaged\.snapshot is damaged: its SHA-256 does not match/);
  const badDir = join(root, 'bad-restore');
  await assert.rejects(startNode({ dataDir: badDir, extra: ['--restore-from', damaged] }), /--restore-from: .*damaged\.snapshot is damaged/);
  assert.ok(!existsSync(join(badDir, 'cluster.json')), 'a refused restore left a node behind');
  const restored = await startNode({ dataDir: join(root, 'restored'), extra: ['--restore-from', snapFile] });
  await waitFor('the restored node to be ready', () => isReady(restored), 30_000);
  assert.equal((await pangea(restored.info.http, ['kv', 'get', 'config/a'])).stdout, '10\n');
  assert.equal((await pangea(restored.info.http, ['kv', 'get', 'config/b'])).stdout, '2\n');
  const restoredView = await clusterView(restored.info.http);
  assert.notEqual(restoredView.clusterId, (await clusterView(ep)).clusterId, 'a restore is a new cluster');
  assert.deepEqual(restoredView.members.map((m) => m.peerId), [restored.info.peerId]);
  await restored.kill('SIGTERM');

  // endpoint: every member asked directly; one down makes health fail and status say so.
  const status = JSON.parse((await pangea(ep, ['endpoint', 'status', '--json'])).stdout) as { peerId: string; ready: boolean; leader: string }[];
  assert.equal(status.length, 3);
  assert.ok(status.every((s) => s.ready && s.leader === leader.info.peerId), JSON.stringify(status));
  assert.equal((await pangea(ep, ['endpoint', 'health'])).code, 0);
  const down = nodes.find((n) => n !== leader && n !== follower)!;
  await down.kill('SIGKILL');
  const health = await waitFor('health to fail', async () => {
    const h = await pangea(ep, ['endpoint', 'health']);
    return h.code === 1 ? h : null;
  });
  assert.match(health.stdout, new RegExp(`${down.info.http}  unhealthy: `));
  assert.match(health.stderr, /1 of 3 members are not healthy/);
  assert.match((await pangea(ep, ['endpoint', 'status'])).stdout, new RegExp(`${down.info.peerId}  voter  ${down.info.http}  unreachable`));
  assert.match((await pangea(ep, ['alarm', 'list'])).stdout, new RegExp(`^${down.info.peerId}  ${down.info.http}  unreachable: `, 'm'));

  // What an operator reads in the logs and metrics: elections, membership changes, the build.
  await waitFor('the leader to log that it leads', () => /this node leads now: it won an election/.test(leader.output()));
  assert.match(follower.output(), new RegExp(`following a leader.*${leader.info.peerId}`));
  assert.match(follower.output(), /membership change applied.*"op":"add_learner"/);
  const metrics = await (await fetch(`${leader.info.http}/metrics`)).text();
  assert.match(metrics, /^pangea_build_info\{version="\d+\.\d+\.\d+[^"]*",node="v\d+[^"]*",apply_levels="\d+-\d+"\} 1$/m);
  assert.ok(Number(/^pangea_db_bytes (\d+)$/m.exec(metrics)?.[1]) > 0, 'the LMDB file size');
  for (const h of ['pangea_log_write_seconds', 'pangea_apply_seconds', 'pangea_commit_seconds']) {
    assert.ok(Number(new RegExp(`^${h}_count (\\d+)$`, 'm').exec(metrics)?.[1]) > 0, `${h} observed writes (forwarded ones count on the leader)`);
  }

  // Flags that make no sense exit 2, naming the flag.
  const badEp = await pangea('not a url', ['kv', 'get', 'x']);
  assert.equal(badEp.code, 2);
  assert.match(badEp.stderr, /--endpoints: not a url is not a URL/);
});
