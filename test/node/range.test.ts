/**
 * `GET /v1/kv?prefix=&after=&limit=` against a real 3-node cluster over HTTP, as clients use
 * it: prefixes (percent-encoded, non-ASCII, reserved characters), `after` at present and
 * absent keys, `limit` and `more`, paging to the end, the 4 MiB page bound, value encodings,
 * deleted keys, `consistency`, bad queries, and a follower scanning right after a write
 * through it.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { killAll, leaderOf, removeDir, startCluster, tempDir, type TestNode } from '../cluster/harness.js';

const root = tempDir('pangea-range-');
let nodes: TestNode[] = [];
let http = '';
before(async () => {
  nodes = await startCluster(root, 3);
  http = nodes[0]!.info.http;
});
after(async () => {
  await killAll();
  removeDir(root);
});

interface Page {
  items: { key: string; value: string; revision: number }[];
  more: boolean;
  index: number;
}

async function put(base: string, key: string, value: string | Uint8Array = key): Promise<void> {
  const res = await fetch(`${base}/v1/kv/${key}`, { method: 'PUT', body: value, signal: AbortSignal.timeout(10_000) });
  assert.equal(res.status, 200, `PUT ${key}: ${await res.text()}`);
  await res.arrayBuffer().catch(() => undefined);
}

async function scan(query: string, base = http): Promise<Page> {
  const res = await fetch(`${base}/v1/kv?${query}`, { signal: AbortSignal.timeout(10_000) });
  const text = await res.text();
  assert.equal(res.status, 200, `GET /v1/kv?${query}: ${text}`);
  return JSON.parse(text) as Page;
}

const keys = (p: Page): string[] => p.items.map((i) => i.key);

test('prefix, after (present, absent, past the end), limit and more', async () => {
  for (const k of ['p', 'p/a', 'p/b', 'p/c/d', 'pa', 'q', 'o/p']) await put(http, k);
  assert.deepEqual(keys(await scan('prefix=p/')), ['p/a', 'p/b', 'p/c/d']);
  assert.deepEqual(keys(await scan('prefix=p')), ['p', 'p/a', 'p/b', 'p/c/d', 'pa']);
  assert.deepEqual(keys(await scan('prefix=p%2F')), ['p/a', 'p/b', 'p/c/d'], 'a percent-encoded slash is a slash');
  assert.deepEqual(keys(await scan('prefix=p/&after=p/a')), ['p/b', 'p/c/d'], 'after is exclusive');
  assert.deepEqual(keys(await scan('prefix=p/&after=p/aa')), ['p/b', 'p/c/d'], 'after an absent key');
  assert.deepEqual(keys(await scan('prefix=p/&after=p/z')), [], 'after the last key');
  assert.deepEqual(keys(await scan('prefix=p/&after=o')), ['p/a', 'p/b', 'p/c/d'], 'after a key before the prefix');
  assert.deepEqual(keys(await scan('prefix=zz')), []);
  const two = await scan('prefix=p/&limit=2');
  assert.deepEqual(keys(two), ['p/a', 'p/b']);
  assert.equal(two.more, true);
  const three = await scan('prefix=p/&limit=3');
  assert.equal(three.more, false, 'more only when keys beyond the page match');
  const all = await scan('');
  for (const k of ['o/p', 'p', 'p/a', 'pa', 'q']) assert.ok(keys(all).includes(k), `an empty prefix lists ${k}`);
  assert.ok(all.index >= 7 && two.items[0]!.revision > 0 && two.items[0]!.value === 'p/a');
});

test('paging with after and limit reaches the end, in order, without repeats', async () => {
  const written = Array.from({ length: 120 }, (_, i) => `page/${String(i).padStart(3, '0')}`);
  await Promise.all(written.map((k) => put(http, k)));
  const seen: string[] = [];
  let afterKey: string | null = null;
  for (let pages = 0; pages < 100; pages++) {
    const page = await scan(`prefix=page/&limit=7${afterKey === null ? '' : `&after=${encodeURIComponent(afterKey)}`}`);
    seen.push(...keys(page));
    if (!page.more) break;
    afterKey = page.items[page.items.length - 1]!.key;
  }
  assert.deepEqual(seen, written);
});

test('a page carries at most 4 MiB of values (at least one item), then more', async () => {
  const mib = Buffer.alloc(1024 * 1024, 0x7a);
  for (let i = 0; i < 6; i++) await put(http, `big/${i}`, mib);
  const first = await scan('prefix=big/&limit=100');
  assert.equal(first.items.length, 4);
  assert.equal(first.more, true);
  const rest = await scan(`prefix=big/&after=${first.items[3]!.key}`);
  assert.deepEqual(keys(rest), ['big/4', 'big/5']);
  assert.equal(rest.more, false);
});

test('values in utf8 or base64; keys with non-ASCII and reserved characters; bad queries are 400', async () => {
  await put(http, 'enc/bin', new Uint8Array([0xff, 0x00, 0x41]));
  const b64 = await scan('prefix=enc/&encoding=base64');
  assert.equal(b64.items[0]!.value, Buffer.from([0xff, 0x00, 0x41]).toString('base64'));
  const asText = await fetch(`${http}/v1/kv?prefix=enc/&encoding=utf8`);
  assert.equal(asText.status, 400, 'a value that is not UTF-8 is not sent as text');
  assert.match(await asText.text(), /encoding=base64/);
  await put(http, 'enc/text', 'héllo');
  assert.equal((await scan('prefix=enc/t')).items[0]!.value, 'héllo', 'utf8 is the default');

  await put(http, '%C3%BC/%C3%A9t%C3%A9', 'summer');
  await put(http, '%C3%BC/x', 'x');
  await put(http, '%C3%BCber', 'over');
  // Ordered by bytes: 'x' (0x78) before 'é' (0xc3 0xa9).
  assert.deepEqual(keys(await scan('prefix=%C3%BC/')), ['ü/x', 'ü/été'], 'a non-ASCII prefix');
  assert.deepEqual(keys(await scan(`prefix=${encodeURIComponent('ü/')}&after=${encodeURIComponent('ü/x')}`)), ['ü/été']);
  await put(http, 'r%20s%26t%3Du', 'reserved');
  assert.deepEqual(keys(await scan('prefix=r%20s%26')), ['r s&t=u'], 'reserved characters, percent-encoded');
  assert.equal((await scan('prefix=r%20s%26')).items[0]!.value, 'reserved');

  for (const bad of ['limit=0', 'limit=10001', 'limit=abc', 'limit=-1', 'encoding=hex', 'consistency=eventual', 'prefix=%FF', 'prefix=%E0%A4']) {
    const res = await fetch(`${http}/v1/kv?${bad}`);
    assert.equal(res.status, 400, `${bad}: ${await res.text()}`);
  }
});

test('deleted keys leave the range; stale and linearizable scans; a follower sees its own write at once', async () => {
  for (const k of ['del/a', 'del/b', 'del/c']) await put(http, k);
  const res = await fetch(`${http}/v1/kv/del/b`, { method: 'DELETE' });
  assert.equal(res.status, 200);
  assert.deepEqual(keys(await scan('prefix=del/')), ['del/a', 'del/c']);
  assert.deepEqual(keys(await scan('prefix=del/&consistency=linearizable')), ['del/a', 'del/c']);
  const stale = await scan('prefix=del/&consistency=stale', http);
  assert.ok(keys(stale).every((k) => k !== 'del/b'), 'stale reads the local state: the delete applied here already');

  const leader = await leaderOf(nodes);
  const follower = nodes.find((n) => n !== leader)!;
  for (let i = 0; i < 5; i++) {
    await put(follower.info.http, `mine/${i}`);
    assert.deepEqual(keys(await scan('prefix=mine/', follower.info.http)).slice(-1), [`mine/${i}`], 'a linearizable scan on the follower right after its write');
  }
});
