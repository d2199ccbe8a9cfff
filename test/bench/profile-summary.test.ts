import assert from 'node:assert/strict';
import { test } from 'node:test';
import { stageOf, summarize, type CpuProfile } from '../../bench/profile-summary.js';

test('profile stages: Pangea modules, npm packages (scoped or not), Node internals, V8 pseudo-frames', () => {
  assert.equal(stageOf('file:///w/dist/src/consensus/replica.js', 'step'), 'pangea consensus/replica');
  assert.equal(stageOf('file:///w/node_modules/@libp2p/yamux/dist/src/stream.js', 'x'), '@libp2p/yamux');
  assert.equal(stageOf('file:///w/node_modules/msgpackr/pack.js', 'pack'), 'msgpackr');
  assert.equal(stageOf('node:_http_server', 'parserOnIncoming'), 'node:http');
  assert.equal(stageOf('node:internal/streams/writable', 'write'), 'node:streams');
  assert.equal(stageOf('', '(garbage collector)'), '(gc)');
  assert.equal(stageOf('', '(idle)'), '(idle)');
});

test('profile summary: self time by stage and function, idle left out of the busy share, and a window of monotonic time', () => {
  const frame = (id: number, functionName: string, url: string) => ({ id, callFrame: { functionName, url, lineNumber: 0 } });
  const profile: CpuProfile = {
    nodes: [frame(1, '(idle)', ''), frame(2, 'step', 'file:///w/dist/src/consensus/replica.js'), frame(3, 'pack', 'file:///w/node_modules/msgpackr/pack.js')],
    startTime: 1_000,
    endTime: 2_000,
    // Samples at 1000, 1100, 1200, 1300, 1400 µs; each stands for the 100 µs after it.
    samples: [2, 2, 3, 1, 2],
    timeDeltas: [0, 100, 100, 100, 100],
  };
  const all = summarize(profile);
  assert.equal(all.stages[0]!.name, 'pangea consensus/replica');
  assert.equal(all.stages[0]!.ms, 0.2);
  assert.equal(all.stages[1]!.name, 'msgpackr');
  assert.equal(all.stages[1]!.pct, 33.3);
  assert.equal(all.functions[0]!.name, 'step pangea consensus/replica:1');
  const window = summarize(profile, { fromUs: 1_150, toUs: 1_350 });
  assert.deepEqual(window.stages.map((r) => r.name), ['msgpackr']);
});
