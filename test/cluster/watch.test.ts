/**
 * `GET /v1/watch` (API.md "Watch") over HTTP against a real 3-node cluster: change events
 * per index with a txn whole, key and prefix selectors, resuming with `Last-Event-ID` on
 * another node without a gap or a duplicate, the start at a linearizable read index,
 * progress events, values and encodings, bad requests, `--max-watches`, `pangea watch`, and
 * `PangeaClient.watch` across a leader killed with -9.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { PangeaClient } from '../../src/client.js';
import { readEvents, type SseEvent } from '../../src/net/sse.js';
import { killAll, leaderOf, removeDir, startCluster, tempDir, type TestNode } from './harness.js';

const root = tempDir();
let nodes: TestNode[] = [];
let leader: TestNode;
let follower: TestNode;

before(async () => {
  nodes = await startCluster(root, 3, ['--max-watches', '3']);
  leader = await leaderOf(nodes);
  follower = nodes.find((n) => n !== leader)!;
});

after(async () => {
  await killAll();
  removeDir(root);
});

async function put(key: string, value: string): Promise<number> {
  const res = await fetch(`${leader.info.http}/v1/kv/${key}`, { method: 'PUT', body: value, signal: AbortSignal.timeout(15_000) });
  assert.equal(res.status, 200, await res.clone().text());
  return ((await res.json()) as { index: number }).index;
}

async function del(key: string): Promise<number> {
  const res = await fetch(`${leader.info.http}/v1/kv/${key}`, { method: 'DELETE', signal: AbortSignal.timeout(15_000) });
  assert.equal(res.status, 200);
  return ((await res.json()) as { index: number }).index;
}

async function txn(body: unknown): Promise<number> {
  const res = await fetch(`${leader.info.http}/v1/txn`, { method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json' }, signal: AbortSignal.timeout(15_000) });
  assert.equal(res.status, 200, await res.clone().text());
  return ((await res.json()) as { index: number }).index;
}

interface Watch {
  readonly status: number;
  readonly headers: Headers;
  /** The next `count` events of the kinds asked for (others are skipped). */
  next(count: number, kinds?: readonly string[]): Promise<SseEvent[]>;
  close(): void;
}

async function watch(node: TestNode, query: string, headers: Record<string, string> = {}): Promise<Watch> {
  const ac = new AbortController();
  const res = await fetch(`${node.info.http}/v1/watch?${query}`, { headers, signal: ac.signal });
  const events = res.ok ? readEvents(res.body!) : null;
  return {
    status: res.status,
    headers: res.headers,
    async next(count, kinds = ['change', 'error']) {
      const out: SseEvent[] = [];
      const timer = setTimeout(() => ac.abort(), 15_000);
      try {
        while (out.length < count) {
          const r = await events!.next();
          if (r.done) break;
          if (kinds.includes(r.value.event)) out.push(r.value);
        }
      } finally {
        clearTimeout(timer);
      }
      return out;
    },
    close: () => ac.abort(),
  };
}

const data = (e: SseEvent): { index: number; changes: Record<string, unknown>[] } => JSON.parse(e.data) as never;

test('a prefix watch sees every change of the prefix once, in index order, a txn whole', { timeout: 60_000 }, async () => {
  const start = await put('other/0', 'x');
  const w = await watch(follower, `prefix=a%2F&after=${start}`);
  assert.equal(w.status, 200);
  assert.match(w.headers.get('content-type') ?? '', /^text\/event-stream/);
  const i1 = await put('a/1', 'one');
  const i2 = await put('a/2', 'two');
  await put('b/1', 'not watched');
  const i3 = await del('a/1');
  await del('a/absent'); // deleted nothing: no change
  const i4 = await txn({ compare: [], success: [{ op: 'put', key: 'a/3', value: 'three' }, { op: 'delete', key: 'a/2' }, { op: 'put', key: 'b/2', value: 'x' }] });
  const events = await w.next(4);
  w.close();
  assert.deepEqual(events.map((e) => [e.id, e.event]), [[String(i1), 'change'], [String(i2), 'change'], [String(i3), 'change'], [String(i4), 'change']]);
  assert.deepEqual(data(events[0]!), { index: i1, changes: [{ type: 'put', key: 'a/1', value: 'one', revision: i1 }] });
  assert.deepEqual(data(events[2]!), { index: i3, changes: [{ type: 'delete', key: 'a/1', cause: 'delete' }] });
  assert.deepEqual(data(events[3]!), {
    index: i4,
    changes: [
      { type: 'put', key: 'a/3', value: 'three', revision: i4 },
      { type: 'delete', key: 'a/2', cause: 'txn' },
    ],
  });
});

test('a watch resumed with Last-Event-ID on another node continues with no gap and no duplicate', { timeout: 60_000 }, async () => {
  const start = await put('r/0', 'start');
  const w1 = await watch(leader, `prefix=r%2F&after=${start}`);
  const written: number[] = [];
  for (let i = 1; i <= 6; i++) written.push(await put(`r/${i}`, `v${i}`));
  const firstThree = await w1.next(3);
  w1.close();
  const last = firstThree.at(-1)!.id!;
  // after= is overridden by Last-Event-ID.
  const w2 = await watch(follower, `prefix=r%2F&after=0`, { 'last-event-id': last });
  const rest = await w2.next(3);
  w2.close();
  assert.deepEqual([...firstThree, ...rest].map((e) => Number(e.id)), written);
});

test('a key watch without a start begins at a linearizable read index, shown in Pangea-Index', { timeout: 60_000 }, async () => {
  const before = await put('k/one', 'old');
  const w = await watch(follower, 'key=k%2Fone');
  assert.equal(w.status, 200);
  const from = Number(w.headers.get('pangea-index'));
  assert.ok(from >= before, `starts at ${from}, after the write at ${before}`);
  await put('k/one2', 'same prefix, another key');
  const i = await put('k/one', 'new');
  const [e] = await w.next(1);
  w.close();
  assert.deepEqual(data(e!), { index: i, changes: [{ type: 'put', key: 'k/one', value: 'new', revision: i }] });
});

test('progress events while quiet, values=false and encoding=base64', { timeout: 60_000 }, async () => {
  const start = await put('p/0', 'x');
  const w = await watch(leader, `prefix=p%2F&after=${start}&progress=1&values=false`);
  const [progress] = await w.next(1, ['progress']);
  assert.ok(Number(progress!.id) >= start);
  assert.deepEqual(JSON.parse(progress!.data), { index: Number(progress!.id) });
  const i = await put('p/1', 'hidden');
  const [e] = await w.next(1);
  w.close();
  assert.deepEqual(data(e!).changes, [{ type: 'put', key: 'p/1', revision: i }]);

  const b = await watch(leader, `key=p%2F1&after=${i - 1}&encoding=base64`);
  const [eb] = await b.next(1);
  b.close();
  assert.deepEqual(data(eb!).changes, [{ type: 'put', key: 'p/1', value: Buffer.from('hidden').toString('base64'), revision: i }]);
});

test('bad watch requests are 400 and change nothing; past --max-watches a watch is 503', { timeout: 60_000 }, async () => {
  for (const q of ['', 'key=a&prefix=b', 'key=a&after=x', 'key=a&after=-1', 'key=a&progress=0', 'key=a&values=maybe', 'key=a&encoding=hex', 'key=%ZZ', 'key=a&after=999999999']) {
    const res = await fetch(`${leader.info.http}/v1/watch?${q}`, { signal: AbortSignal.timeout(15_000) });
    const body = await res.text();
    assert.equal(res.status, 400, `${q}: ${body}`);
    assert.equal((JSON.parse(body) as { error: { code: string } }).error.code, 'bad_request', body);
  }
  const wrong = await fetch(`${leader.info.http}/v1/watch?key=a`, { method: 'POST' });
  assert.equal(wrong.status, 405);
  const open = [await watch(follower, 'key=m1'), await watch(follower, 'key=m2'), await watch(follower, 'key=m3')];
  assert.deepEqual(open.map((w) => w.status), [200, 200, 200]);
  const refused = await fetch(`${follower.info.http}/v1/watch?key=m4`, { signal: AbortSignal.timeout(15_000) });
  assert.equal(refused.status, 503);
  for (const w of open) w.close();
});

test('pangea watch prints the changes as JSON lines', { timeout: 60_000 }, async () => {
  const start = await put('cli/0', 'x');
  const run = fileURLToPath(new URL('../../../bin/run.js', import.meta.url));
  const child = spawn(process.execPath, [run, 'watch', '--url', follower.info.http, '--prefix', 'cli/', '--after', String(start)], { stdio: ['ignore', 'pipe', 'pipe'] });
  try {
    const lines: string[] = [];
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const got = new Promise<void>((resolve) => {
      let buf = '';
      child.stdout.on('data', (d: Buffer) => {
        buf += d.toString();
        const parts = buf.split('\n');
        buf = parts.pop()!;
        lines.push(...parts);
        if (lines.length >= 2) resolve();
      });
    });
    const i1 = await put('cli/1', 'one');
    const i2 = await del('cli/1');
    await Promise.race([got, new Promise((_, reject) => setTimeout(() => reject(new Error(`no output: ${err}`)), 20_000))]);
    assert.deepEqual(lines.slice(0, 2).map((l) => JSON.parse(l)), [
      { index: i1, changes: [{ type: 'put', key: 'cli/1', value: 'one', revision: i1 }] },
      { index: i2, changes: [{ type: 'delete', key: 'cli/1', cause: 'delete' }] },
    ]);
  } finally {
    child.kill('SIGKILL');
  }
});

/** Last: it kills the leader. */
test('client.watch sees every acknowledged write once, in index order, across a leader killed with -9', { timeout: 120_000 }, async () => {
  const endpoints = nodes.map((n) => n.info.http);
  const writer = new PangeaClient({ endpoints, deadlineMs: 30_000 });
  const watcher = new PangeaClient({ endpoints: [leader.info.http, ...endpoints.filter((e) => e !== leader.info.http)] });
  const start = (await writer.put('z/0', 'start')).index;
  const seen: number[] = [];
  const keys = new Map<number, string>();
  const stop = new AbortController();
  const watching = (async () => {
    for await (const ev of watcher.watch({ prefix: 'z/', after: start, signal: stop.signal })) {
      for (const c of ev.changes) keys.set(ev.index, c.key);
      seen.push(ev.index);
    }
  })();
  const acked = new Map<number, string>();
  for (let i = 1; i <= 60; i++) {
    if (i === 20) await leader.kill('SIGKILL'); // the watcher's node too
    const r = await writer.put(`z/${i}`, `v${i}`);
    acked.set(r.index, `z/${i}`);
  }
  const last = Math.max(...acked.keys());
  const deadline = Date.now() + 60_000;
  while (!seen.includes(last) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  stop.abort();
  await watching;
  writer.close();
  watcher.close();
  for (let i = 1; i < seen.length; i++) assert.ok(seen[i]! > seen[i - 1]!, `in order, once: ${seen.join(',')}`);
  for (const [index, key] of acked) assert.equal(keys.get(index), key, `index ${index} (${key}) seen`);
});
