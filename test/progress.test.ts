import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PROGRESS_LOG_INTERVAL_MS, PROGRESS_REDRAW_INTERVAL_MS, createProgress } from '../src/progress.js';

/** A stream that records what is written, and a clock the test moves. */
function fixture(isTTY: boolean): { out: { isTTY: boolean; write(s: string): boolean }; written: string[]; clock: { t: number } } {
  const written: string[] = [];
  return { out: { isTTY, write: (s: string) => written.push(s) > 0 }, written, clock: { t: 1_000 } };
}

test('on a terminal one line is redrawn with a bar, then ended by done()', () => {
  const { out, written, clock } = fixture(true);
  const p = createProgress('verifying', 40, out, { now: () => clock.t });
  p.update(12);
  assert.deepEqual(written, ['\rverifying 12/40 objects [======              ] 30%\x1b[K']);
  p.update(13); // too soon: not redrawn
  assert.equal(written.length, 1);
  clock.t += PROGRESS_REDRAW_INTERVAL_MS;
  p.update(40);
  assert.equal(written.at(-1), '\rverifying 40/40 objects [====================] 100%\x1b[K');
  p.done();
  assert.equal(written.at(-1), '\n');
  p.update(1); // after done: ignored
  assert.equal(written.at(-1), '\n');
});

test('elsewhere a plain line at most every interval, and one at the end', () => {
  const { out, written, clock } = fixture(false);
  const p = createProgress('pruning', 10, out, { now: () => clock.t, unit: 'segments' });
  p.update(3);
  assert.deepEqual(written, []);
  clock.t += PROGRESS_LOG_INTERVAL_MS;
  p.update(4);
  assert.deepEqual(written, ['pruning 4/10 segments (40%)\n']);
  clock.t += 1;
  p.update(20); // clamped to the total, and too soon
  assert.equal(written.length, 1);
  p.done();
  p.done();
  assert.deepEqual(written, ['pruning 4/10 segments (40%)\n', 'pruning 10/10 segments (100%)\n']);
});

test('a total of zero is complete at once', () => {
  const { out, written } = fixture(false);
  createProgress('verifying', 0, out).done();
  assert.deepEqual(written, ['verifying 0/0 objects (100%)\n']);
});
