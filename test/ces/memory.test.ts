import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';

const rssBytesMax = 256 * 1024 * 1024;
const streamMiB = 1024;
const child = fileURLToPath(new URL('./rss-child.js', import.meta.url));

function peakRssBytes(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  assert.ok(m, 'VmHWM in /proc status');
  return Number(m[1]) * 1024;
}

test(`encoding and decoding a ${streamMiB} MiB incompressible stream peaks under ${rssBytesMax >> 20} MiB RSS`,
  { skip: process.platform !== 'linux' && 'reads /proc', timeout: 5 * 60_000 }, async (t) => {
    const proc = spawn(process.execPath, [child, String(streamMiB)], { stdio: ['pipe', 'pipe', 'inherit'] });
    try {
      const lines = createInterface({ input: proc.stdout });
      const exited = new Promise<never>((_, reject) => proc.once('exit', (code) => reject(new Error(`child exited early with ${code}`))));
      const line = await Promise.race([new Promise<string>((resolve) => lines.once('line', resolve)), exited]);
      const peak = peakRssBytes(proc.pid!);
      const r = JSON.parse(line) as { same: boolean; inBytes: number; outBytes: number; ms: number };
      const mbps = ((r.inBytes / 1e6) / (r.ms / 1000)).toFixed(0);
      t.diagnostic(`ces ${streamMiB} MiB encode+decode (2 of 6 shards lost): peak RSS ${(peak / 2 ** 20).toFixed(1)} MiB, ${r.ms} ms, ${mbps} MB/s`);
      assert.equal(r.inBytes, streamMiB * 2 ** 20);
      assert.equal(r.outBytes, r.inBytes);
      assert.ok(r.same, 'decoded bytes differ from the input');
      assert.ok(peak < rssBytesMax, `peak RSS ${peak} bytes`);
      proc.stdin.end();
    } finally {
      if (proc.exitCode === null) proc.kill('SIGKILL');
    }
  });
