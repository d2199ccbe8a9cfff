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
    await assert.rejects(startServer(opts(`127.0.0.1:${port}`)), /EADDRINUSE|in use/);
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
