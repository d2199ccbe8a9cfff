/**
 * Crash recovery: a node SIGKILLed at many random points during a write load restarts on its
 * data dir and ports, and its hash chain and state end up equal to the others'.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { clusterView, isReady, killAll, removeDir, startNode, tempDir, waitFor, type TestNode } from './harness.js';

const dirs: string[] = [];
after(async () => {
  await killAll();
  for (const d of dirs) removeDir(d);
});

const ready = isReady;

async function send(url: string, init: RequestInit): Promise<number> {
  try {
    const res = await fetch(url, { ...init, signal: AbortSignal.timeout(5000) });
    await res.arrayBuffer();
    return res.status;
  } catch {
    return 0;
  }
}

async function dump(n: TestNode): Promise<string> {
  const res = await fetch(`${n.info.http}/v1/kv?prefix=&limit=10000&consistency=stale`);
  assert.equal(res.status, 200);
  return JSON.stringify(((await res.json()) as { items: unknown[] }).items);
}

test('a node killed at random points during writes recovers a log, chain and state equal to the others', { timeout: 180_000 }, async () => {
  const root = tempDir();
  dirs.push(root);
  const n1 = await startNode({ dataDir: `${root}/n1` });
  await waitFor('node 1', () => ready(n1));
  const nodes = [n1, await startNode({ dataDir: `${root}/n2`, join: n1.info.http }), await startNode({ dataDir: `${root}/n3`, join: n1.info.http })];
  await waitFor('three ready voters', async () => (await Promise.all(nodes.map(ready))).every(Boolean) && (await clusterView(n1.info.http)).members.filter((m) => m.role === 'voter').length === 3, 60_000);

  const acked = new Map<string, string>();
  let writing = true;
  let n = 0;
  const writer = async (w: number): Promise<void> => {
    while (writing) {
      const target = nodes[(n + w) % nodes.length]!;
      const i = n++;
      const key = `k${w}-${i}`;
      const kind = i % 5;
      if (kind < 3) {
        if ((await send(`${target.info.http}/v1/kv/${key}`, { method: 'PUT', body: `v${i}` })) === 200) acked.set(key, `v${i}`);
      } else if (kind === 3) {
        await send(`${target.info.http}/v1/kv/k${w}-${i - 3}`, { method: 'DELETE' });
        acked.delete(`k${w}-${i - 3}`);
      } else {
        const txn = { compare: [{ key: `t${w}`, target: 'exists', op: '==', value: true }], success: [{ op: 'put', key: `t${w}`, value: `${i}` }], failure: [{ op: 'put', key: `t${w}`, value: 'first' }] };
        await send(`${target.info.http}/v1/txn`, { method: 'POST', body: JSON.stringify(txn), headers: { 'content-type': 'application/json' } });
      }
    }
  };
  const writers = [0, 1, 2].map(writer);

  const rng = (() => {
    let s = 12345;
    return () => ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32);
  })();
  for (let round = 0; round < 6; round++) {
    await new Promise((r) => setTimeout(r, 150 + rng() * 600));
    const i = Math.floor(rng() * nodes.length);
    const victim = nodes[i]!;
    await victim.kill('SIGKILL');
    nodes[i] = await startNode({
      dataDir: victim.dataDir,
      httpListen: victim.info.http.replace('http://', ''),
      p2pListen: victim.info.p2p.map((a) => a.replace(/\/p2p\/[^/]+$/, '')),
    });
    await waitFor('the restarted node to be ready', () => ready(nodes[i]!), 30_000);
  }
  writing = false;
  await Promise.all(writers);
  assert.ok(acked.size > 20, `only ${acked.size} writes acknowledged`);

  // Everyone converges on the same applied index, chain value and state.
  const views = await waitFor('all nodes to apply the same index', async () => {
    const vs = await Promise.all(nodes.map((x) => clusterView(x.info.http) as Promise<{ appliedIndex: number; chain?: string }>));
    return vs.every((v) => v.appliedIndex === vs[0]!.appliedIndex) ? vs : null;
  }, 30_000);
  for (const v of views) assert.equal(v.chain, views[0]!.chain, 'hash chains differ at the same index');
  const states = await Promise.all(nodes.map(dump));
  for (const s of states) assert.equal(s, states[0], 'states differ');
  for (const [key, value] of acked) {
    const res = await fetch(`${nodes[0]!.info.http}/v1/kv/${key}?consistency=stale`);
    assert.equal(res.status, 200, `acknowledged ${key} is missing`);
    assert.equal(await res.text(), value);
  }
});
