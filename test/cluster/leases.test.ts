/**
 * Leases (API.md "Leases") over HTTP against a real 3-node cluster: every endpoint through a
 * follower, keys attached by PUT and txn and shown by GET, range and watch; expiry within
 * TTL + 1.5 s of wall time and never before the TTL; bad inputs; a lease kept alive across
 * a leader killed with -9, across followers paused for 15 s (cluster time stands still while
 * nothing commits) and across a leader whose clock steps an hour; `client.lock` under a
 * holder killed with -9, and `client.elect`.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { PangeaClient } from '../../src/client.js';
import { readEvents } from '../../src/net/sse.js';
import { clusterView, killAll, leaderOf, pangea, removeDir, startCluster, tempDir, waitFor, type TestNode } from './harness.js';

const root = tempDir();
/** Allowance for observing an expiry over HTTP (a follower's stale read, the poll). */
const OBSERVE_MS = 250;
let nodes: TestNode[] = [];
const children = new Set<ChildProcess>();

before(async () => {
  // The test hook: SIGUSR2 steps a node's clock by an hour (src/commands/serve.ts).
  process.env.PANGEA_TEST_CLOCK_JUMP_MS = String(3600 * 1000);
  nodes = await startCluster(root, 3, ['--max-leases', '20']);
});

after(async () => {
  for (const c of children) c.kill('SIGKILL');
  await killAll();
  removeDir(root);
});

async function call(node: TestNode, method: string, path: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown>; headers: Headers }> {
  const init: RequestInit = { method, signal: AbortSignal.timeout(15_000) };
  if (body !== undefined) {
    init.body = typeof body === 'string' ? body : JSON.stringify(body);
    if (typeof body !== 'string') init.headers = { 'content-type': 'application/json' };
  }
  const res = await fetch(`${node.info.http}${path}`, init);
  const text = await res.text();
  let json: Record<string, unknown> = {};
  try {
    json = JSON.parse(text) as Record<string, unknown>;
  } catch {
    json = { raw: text };
  }
  return { status: res.status, json, headers: res.headers };
}

async function live(): Promise<{ leader: TestNode; follower: TestNode }> {
  const alive = nodes.filter((n) => n.proc.exitCode === null && n.proc.signalCode === null);
  const leader = await leaderOf(alive);
  return { leader, follower: alive.find((n) => n !== leader)! };
}

async function grant(node: TestNode, ttl: number): Promise<string> {
  const r = await call(node, 'POST', '/v1/leases', { ttl });
  assert.equal(r.status, 200, JSON.stringify(r.json));
  return r.json.id as string;
}

test('every lease endpoint through a follower; keys attach by PUT and txn, show in GET, range and watch, and go with a revoke', { timeout: 60_000 }, async () => {
  const { follower } = await live();
  const g = await call(follower, 'POST', '/v1/leases', { ttl: 60 });
  assert.equal(g.status, 200);
  assert.deepEqual(Object.keys(g.json).sort(), ['id', 'index', 'ttl']);
  const id = g.json.id as string;
  assert.equal(id, String(g.json.index), 'the id is the grant’s index');
  assert.equal(g.json.ttl, 60);

  const w = new AbortController();
  const watchRes = await fetch(`${follower.info.http}/v1/watch?prefix=l%2F&after=${id}`, { signal: w.signal });
  const events = readEvents(watchRes.body!);

  const p = await call(follower, 'PUT', `/v1/kv/l%2Fa?lease=${id}`, 'one');
  assert.equal(p.status, 200);
  const t = await call(follower, 'POST', '/v1/txn', { compare: [], success: [{ op: 'put', key: 'l/b', value: 'two', lease: id }, { op: 'put', key: 'l/c', value: 'three' }] });
  assert.equal(t.status, 200, JSON.stringify(t.json));
  const got = await fetch(`${follower.info.http}/v1/kv/l%2Fa`);
  assert.equal(got.headers.get('pangea-lease'), id);
  const plain = await fetch(`${follower.info.http}/v1/kv/l%2Fc`);
  assert.equal(plain.headers.get('pangea-lease'), null);
  const range = await call(follower, 'GET', '/v1/kv?prefix=l%2F');
  assert.deepEqual((range.json.items as { key: string; lease?: string }[]).map((i) => [i.key, i.lease ?? null]), [['l/a', id], ['l/b', id], ['l/c', null]]);

  const info = await call(follower, 'GET', `/v1/leases/${id}`);
  assert.equal(info.status, 200);
  assert.equal(info.json.id, id);
  assert.equal(info.json.keys, 2);
  assert.ok((info.json.remainingMs as number) > 50_000 && (info.json.remainingMs as number) <= 60_000, `remainingMs ${String(info.json.remainingMs)}`);
  const list = await call(follower, 'GET', `/v1/leases?limit=10000`);
  assert.ok((list.json.items as { id: string }[]).some((l) => l.id === id));
  assert.equal(list.json.more, false);
  const k = await call(follower, 'POST', `/v1/leases/${id}/keepalive`);
  assert.deepEqual([k.status, k.json.id, k.json.ttl], [200, id, 60]);

  const r = await call(follower, 'DELETE', `/v1/leases/${id}`);
  assert.deepEqual([r.status, r.json.revoked], [200, true]);
  assert.equal((await call(follower, 'GET', '/v1/kv/l%2Fa')).status, 404);
  assert.equal((await call(follower, 'GET', '/v1/kv/l%2Fc')).status, 200, 'a key without the lease stays');
  assert.equal((await call(follower, 'GET', `/v1/leases/${id}`)).json.error !== undefined, true);
  assert.deepEqual([(await call(follower, 'DELETE', `/v1/leases/${id}`)).json.revoked], [false]);

  const seen: Record<string, unknown>[] = [];
  for await (const ev of events) {
    if (ev.event !== 'change') continue;
    seen.push(...(JSON.parse(ev.data) as { changes: Record<string, unknown>[] }).changes);
    if (seen.length >= 5) break;
  }
  w.abort();
  assert.deepEqual(seen.map((c) => [c.type, c.key, c.lease ?? c.cause ?? null]), [
    ['put', 'l/a', id],
    ['put', 'l/b', id],
    ['put', 'l/c', null],
    ['delete', 'l/a', 'lease'],
    ['delete', 'l/b', 'lease'],
  ]);
});

test('pangea lease grant, keepalive, list and revoke, and kv put --lease', { timeout: 60_000 }, async () => {
  const endpoints = nodes.map((n) => n.info.http).join(',');
  const g = await pangea(endpoints, ['lease', 'grant', '30', '--json']);
  assert.equal(g.code, 0, g.stderr);
  const id = (JSON.parse(g.stdout) as { id: string }).id;
  assert.equal((await pangea(endpoints, ['kv', 'put', 'cli/leased', 'x', '--lease', id])).code, 0);
  const got = await call(nodes[0]!, 'GET', `/v1/leases/${id}`);
  assert.equal(got.json.keys, 1);
  const k = await pangea(endpoints, ['lease', 'keepalive', id]);
  assert.match(k.stdout, new RegExp(`^lease ${id} ttl 30 index \\d+`));
  const list = await pangea(endpoints, ['lease', 'list']);
  assert.match(list.stdout, new RegExp(`^${id}\tttl 30s\tremaining [0-9.]+s\tkeys 1$`, 'm'));
  assert.match((await pangea(endpoints, ['lease', 'revoke', id])).stdout, /^revoked index \d+/);
  const gone = await pangea(endpoints, ['lease', 'keepalive', id]);
  assert.equal(gone.code, 1);
  assert.match(gone.stderr, /not found/);
  assert.equal((await pangea(endpoints, ['kv', 'get', 'cli/leased'])).code, 1, 'the revoke deleted the key');
  const bad = await pangea(endpoints, ['lease', 'grant', '1']);
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /greater than or equal to 2/);
});

test('a lease nobody renews expires within TTL + 1.5 s of wall time, and not before its TTL', { timeout: 60_000 }, async () => {
  const { leader, follower } = await live();
  const sent = performance.now();
  const id = await grant(leader, 2);
  assert.equal((await call(follower, 'PUT', `/v1/kv/e%2F1?lease=${id}`, 'x')).status, 200);
  const gone = await waitFor('the key to expire', async () => ((await call(follower, 'GET', '/v1/kv/e%2F1?consistency=stale')).status === 404 ? performance.now() : null), 10_000);
  const ms = gone - sent;
  // TTL + 1.5 s, and what observing it costs: a stale read on a follower that applies the
  // expiring command a little after the leader, and the poll (CI once saw 3,557 ms on a
  // loaded machine).
  assert.ok(ms <= 2_000 + 1_500 + OBSERVE_MS, `expired after ${Math.round(ms)} ms`);
  // Log time may lead real time by (nodes - 1) x LOG_TIME_LEAD_MS (100 ms, driver.ts).
  assert.ok(ms >= 2_000 - 300, `expired early, after ${Math.round(ms)} ms`);
  assert.equal((await call(follower, 'POST', `/v1/leases/${id}/keepalive`)).status, 404);
});

test('bad inputs get the contract’s errors and change nothing', { timeout: 60_000 }, async () => {
  const { follower } = await live();
  for (const ttl of [1, 1e9, 2.5, '10', null]) {
    const r = await call(follower, 'POST', '/v1/leases', { ttl });
    assert.deepEqual([r.status, (r.json.error as { code: string }).code], [400, 'bad_request'], `ttl ${String(ttl)}`);
  }
  assert.equal((await call(follower, 'POST', '/v1/leases', { ttl: 10, extra: 1 })).status, 400);
  assert.equal((await call(follower, 'POST', '/v1/leases', 'not json')).status, 415);
  const unknown = await call(follower, 'PUT', '/v1/kv/bad%2F1?lease=999999999', 'x');
  assert.equal(unknown.status, 404);
  assert.equal((unknown.json.error as { code: string }).code, 'lease_not_found');
  assert.equal(typeof unknown.json.index, 'number', 'an apply-time error carries its index');
  assert.equal((await call(follower, 'GET', '/v1/kv/bad%2F1')).status, 404, 'the refused put wrote nothing');
  for (const path of ['/v1/leases/abc', '/v1/leases/0', '/v1/leases/-1', '/v1/leases/1.5']) assert.equal((await call(follower, 'GET', path)).status, 400, path);
  assert.equal((await call(follower, 'PUT', '/v1/kv/bad%2F1?lease=x', 'x')).status, 400);
  assert.equal((await call(follower, 'POST', '/v1/txn', { compare: [], success: [{ op: 'put', key: 'bad/1', value: 'x', lease: 'x' }] })).status, 400);
  assert.equal((await call(follower, 'POST', '/v1/leases/999999999/keepalive')).status, 404);
  assert.equal((await call(follower, 'PATCH', '/v1/leases/1')).status, 405);

  // The 10,001st key of a lease.
  const id = await grant(follower, 60);
  // In txns of 100 puts: one txn of 10,000 held a node's event loop for 200-330 ms (measured
  // with the state harness), more on a loaded machine, and cost the leader its lead in CI
  // (its forwarded writes were 504 outcome_unknown). A write that is 504 is sent again, as a
  // client would.
  const again = async (method: string, path: string, body?: unknown): ReturnType<typeof call> => {
    let r = await call(follower, method, path, body);
    for (let i = 0; i < 3 && (r.status === 504 || r.status === 503); i++) r = await call(follower, method, path, body);
    return r;
  };
  for (let t = 0; t < 100; t++) {
    const success = Array.from({ length: 100 }, (_, i) => ({ op: 'put', key: `many/${t * 100 + i}`, value: '', lease: id }));
    assert.equal((await again('POST', '/v1/txn', { compare: [], success })).status, 200);
  }
  const over = await again('PUT', `/v1/kv/many%2Fone-more?lease=${id}`, 'x');
  assert.deepEqual([over.status, (over.json.error as { code: string }).code], [409, 'limit_reached']);
  assert.equal((await call(follower, 'GET', '/v1/kv/many%2Fone-more')).status, 404);
  assert.equal((await call(follower, 'GET', `/v1/leases/${id}`)).json.keys, 10_000);
  assert.equal((await again('DELETE', `/v1/leases/${id}`)).json.revoked, true);
  assert.equal(((await call(follower, 'GET', '/v1/kv?prefix=many%2F&limit=1')).json.items as unknown[]).length, 0, 'a revoke deletes all 10,000 keys');
});

test('the cluster holds at most --max-leases leases, a setting its founder recorded in the log', { timeout: 60_000 }, async () => {
  const { follower } = await live();
  const held = ((await call(follower, 'GET', '/v1/leases')).json.items as unknown[]).length;
  const mine: string[] = [];
  for (let i = held; i < 20; i++) mine.push(await grant(follower, 60));
  const over = await call(follower, 'POST', '/v1/leases', { ttl: 60 });
  assert.deepEqual([over.status, (over.json.error as { code: string }).code], [409, 'limit_reached']);
  for (const id of mine) await call(follower, 'DELETE', `/v1/leases/${id}`);
  assert.equal((await call(follower, 'POST', '/v1/leases', { ttl: 60 })).status, 200, 'room again once revoked');
});

test('a leader whose clock steps an hour expires nothing early', { timeout: 60_000 }, async () => {
  const { leader, follower } = await live();
  const id = await grant(follower, 20);
  assert.equal((await call(follower, 'PUT', `/v1/kv/skew%2F1?lease=${id}`, 'x')).status, 200);
  const before = (await call(follower, 'GET', `/v1/leases/${id}`)).json.remainingMs as number;
  leader.proc.kill('SIGUSR2');
  await new Promise((r) => setTimeout(r, 4_000));
  assert.equal(leader.proc.exitCode ?? leader.proc.signalCode, null, 'the leader took the step and lives');
  const after = await call(follower, 'GET', `/v1/leases/${id}`);
  assert.equal(after.status, 200, 'the lease outlived the step');
  // Four seconds of ticks, plus at most one step of log time (1 s) for the jump; a leader
  // whose every command ran a step ahead would have cost twice the time.
  assert.ok((after.json.remainingMs as number) >= before - 4_000 - 1_000 - 500, `remaining ${String(after.json.remainingMs)} ms of ${before}`);
  assert.equal((await call(follower, 'GET', '/v1/kv/skew%2F1')).status, 200);
  await call(follower, 'DELETE', `/v1/leases/${id}`);
});

test('a lease kept alive survives followers paused for 15 s (cluster time stands still) and its leader killed with -9', { timeout: 120_000 }, async () => {
  const { leader } = await live();
  const client = new PangeaClient({ endpoints: nodes.map((n) => n.info.http), deadlineMs: 5_000 });
  const id = (await client.grantLease(3)).id;
  await client.put('kept/1', 'x', { lease: id });
  // Renew every second whatever happens (a Lease object would give up after a TTL without
  // getting through; this test wants the cluster's view).
  let renewing = true;
  const renewer = (async () => {
    while (renewing) {
      await client.keepAliveLease(id).catch(() => undefined);
      await new Promise((r) => setTimeout(r, 1_000));
    }
  })();
  const followers = nodes.filter((n) => n !== leader && n.proc.exitCode === null);
  for (const f of followers) f.proc.kill('SIGSTOP');
  // Five TTLs: a lease clock that ran on while nothing commits would have expired it.
  await new Promise((r) => setTimeout(r, 15_000));
  for (const f of followers) f.proc.kill('SIGCONT');
  await waitFor('a write to commit again', async () => (await client.put('kept/probe', 'x').then(() => true, () => false)) || null, 30_000);
  assert.ok(await client.leaseInfo(id), 'the lease survived the pause');
  assert.equal((await client.get('kept/1'))?.lease, id);

  await leader.kill('SIGKILL');
  const rest = nodes.filter((n) => n !== leader);
  await waitFor('a new leader', async () => {
    const v = await clusterView(rest[0]!.info.http).catch(() => null);
    return v !== null && v.leader !== null && v.leader !== leader.info.peerId;
  }, 30_000);
  await new Promise((r) => setTimeout(r, 5_000)); // more than the TTL
  assert.ok(await client.leaseInfo(id), 'the lease survived the leader’s death');
  assert.equal((await client.get('kept/1'))?.lease, id);
  renewing = false;
  await renewer;
  await client.revokeLease(id);
  client.close();
});

/** A process holding `name` (client.lock) until killed; resolves with its fencing revision. */
function holder(endpoints: readonly string[], name: string): Promise<{ child: ChildProcess; revision: number }> {
  const index = fileURLToPath(new URL('../../src/index.js', import.meta.url));
  const code = `const { PangeaClient } = await import(${JSON.stringify(index)});
const c = new PangeaClient({ endpoints: ${JSON.stringify(endpoints)} });
const lock = await c.lock(${JSON.stringify(name)}, { ttl: 2 });
console.log(JSON.stringify({ revision: lock.revision }));
setInterval(() => {}, 1000);`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.add(child);
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const line = out.split('\n').find((l) => l.startsWith('{'));
      if (line) resolve({ child, revision: (JSON.parse(line) as { revision: number }).revision });
    });
    child.once('exit', (code) => reject(new Error(`lock holder exited with ${code}`)));
  });
}

test('lock: mutual exclusion under a holder killed with -9; the next holder gets a higher fencing revision', { timeout: 60_000 }, async () => {
  const endpoints = nodes.filter((n) => n.proc.exitCode === null && n.proc.signalCode === null).map((n) => n.info.http);
  const first = await holder(endpoints, 'locks/job');
  const client = new PangeaClient({ endpoints });
  let acquiredAt = 0;
  const second = client.lock('locks/job', { ttl: 2 }).then((l) => {
    acquiredAt = performance.now();
    return l;
  });
  await new Promise((r) => setTimeout(r, 3_000));
  assert.equal(acquiredAt, 0, 'the lock is held: nobody else gets it');
  const killedAt = performance.now();
  first.child.kill('SIGKILL');
  const lock = await second;
  assert.ok(lock.revision > first.revision, `fencing revision ${lock.revision} after ${first.revision}`);
  assert.ok(acquiredAt - killedAt <= 2_000 + 1_500 + 1_000, `acquired ${Math.round(acquiredAt - killedAt)} ms after the holder died`);
  await lock.unlock();
  const again = await client.lock('locks/job', { ttl: 2 });
  assert.ok(again.revision > lock.revision);
  await again.unlock();
  client.close();
});

test('elect: one leader at a time, observed; a resignation hands over to the next candidate', { timeout: 60_000 }, async () => {
  const endpoints = nodes.filter((n) => n.proc.exitCode === null && n.proc.signalCode === null).map((n) => n.info.http);
  const client = new PangeaClient({ endpoints });
  const election = client.elect('elections/primary');
  assert.equal(await election.leader(), null);
  const stop = new AbortController();
  const observed: (string | null)[] = [];
  const observer = (async () => {
    for await (const l of election.observe({ signal: stop.signal })) observed.push(l === null ? null : new TextDecoder().decode(l.value));
  })().catch(() => undefined);
  const a = await election.campaign('a', { ttl: 5 });
  let bWon = false;
  const b = election.campaign('b', { ttl: 5 }).then((l) => {
    bWon = true;
    return l;
  });
  await new Promise((r) => setTimeout(r, 1_000));
  assert.equal(bWon, false, 'b waits while a leads');
  assert.equal(new TextDecoder().decode((await election.leader())!.value), 'a');
  await a.unlock();
  const leaderB = await b;
  assert.equal(new TextDecoder().decode((await election.leader())!.value), 'b');
  await leaderB.unlock();
  await waitFor('the observer to see every leader', () => (observed.at(-1) === null && observed.length >= 4) || null, 10_000);
  stop.abort();
  await observer;
  assert.deepEqual(observed, [null, 'a', 'b', null]);
  client.close();
});
