/**
 * `startServer` in this process: a start-up that fails midway (here, the HTTP port is in
 * use) leaves nothing running or locked, so the same data dir starts at once afterwards.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { resolveServeOptions } from '../../src/config.js';
import { startServer } from '../../src/server.js';

const dir = mkdtempSync(join(tmpdir(), 'pangea-startup-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function listening(): Promise<Server> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => resolve(s));
  });
}

test('a start-up that fails midway releases the data dir, the ports and the stores', async () => {
  const busy = await listening();
  const port = (busy.address() as { port: number }).port;
  try {
    const opts = (http: string) => resolveServeOptions({ flags: { 'data-dir': dir, 'http-listen': http, 'p2p-listen': ['/ip4/127.0.0.1/tcp/0'], 'log-level': 'error' } });
    await assert.rejects(startServer(opts(`127.0.0.1:${port}`)), { message: `--http-listen 127.0.0.1:${port}: the address is in use` });
    const p2pBusy = resolveServeOptions({ flags: { 'data-dir': dir, 'http-listen': '127.0.0.1:0', 'p2p-listen': [`/ip4/127.0.0.1/tcp/${port}`], 'log-level': 'error' } });
    await assert.rejects(startServer(p2pBusy), (err: Error) => err.message.startsWith(`--p2p-listen /ip4/127.0.0.1/tcp/${port}: `));
    // The lock, the LMDB environment and the libp2p listener were let go: it starts now.
    const server = await startServer(opts('127.0.0.1:0'));
    try {
      assert.equal(server.node.peerId.length > 0, true);
    } finally {
      await server.stop();
    }
  } finally {
    busy.close();
  }
});

test('every metric series has help and a unit suffix: counters end in _total, a gauge of a size or time in _bytes or _seconds', async () => {
  const server = await startServer(resolveServeOptions({ flags: { 'data-dir': dir, 'http-listen': '127.0.0.1:0', 'p2p-listen': ['/ip4/127.0.0.1/tcp/0'], 'log-level': 'error' } }));
  try {
    const text = await server.node.metrics();
    const help = new Map([...text.matchAll(/^# HELP (\S+) (.*)$/gm)].map((m) => [m[1]!, m[2]!]));
    const types = new Map([...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => [m[1]!, m[2]!]));
    assert.ok(types.size >= 60, `${types.size} families`);
    for (const [name, type] of types) {
      assert.match(name, /^pangea_[a-z0-9_]+$/, name);
      assert.ok((help.get(name) ?? '').length > 10, `${name} has help`);
      if (type === 'counter') assert.match(name, /_total$/, `${name}: a counter ends in _total`);
      else for (const unit of ['bytes', 'seconds']) if (name.includes(`_${unit}`)) assert.match(name, new RegExp(`_${unit}$`), `${name}: the unit comes last`);
    }
    for (const name of ['pangea_commit_index', 'pangea_http_requests_inflight', 'pangea_blocksync_served_total', 'pangea_archive_last_error_info', 'pangea_http_request_duration_seconds']) assert.ok(types.has(name), name);
  } finally {
    await server.stop();
  }
});
