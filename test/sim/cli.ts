/**
 * `npm run sim -- --seed N` replays one seed with a trace; `npm run sim -- --seeds N [--from S]`
 * runs a campaign with a progress line. Exit status 1 on the first failure, with its seed.
 */
import { simulate, type SimStats } from './world.js';

function arg(name: string): number | undefined {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0) return undefined;
  const v = Number(process.argv[i + 1]);
  if (!Number.isSafeInteger(v) || v < 0) {
    console.error(`--${name} needs a non-negative integer`);
    process.exit(2);
  }
  return v;
}

const seed = arg('seed');
if (seed !== undefined) {
  const r = simulate({ seed, trace: true });
  if (!r.ok) {
    console.log(r.trace.slice(-400).join('\n'));
    console.log(`\nseed ${seed} FAILED: ${r.error}`);
    process.exit(1);
  }
  console.log(`seed ${seed} ok: ${JSON.stringify(r.stats)}`);
  process.exit(0);
}

const count = arg('seeds') ?? 1000;
const from = arg('from') ?? 1;
const totals: Partial<SimStats> = {};
const started = Date.now();
for (let s = from; s < from + count; s++) {
  const r = simulate({ seed: s });
  if (!r.ok) {
    console.log(`\nseed ${s} FAILED: ${r.error}\nreplay: npm run sim -- --seed ${s}`);
    process.exit(1);
  }
  for (const [k, v] of Object.entries(r.stats)) totals[k as keyof SimStats] = (totals[k as keyof SimStats] ?? 0) + v;
  const done = s - from + 1;
  if (done % 100 === 0 || done === count) {
    const rate = done / ((Date.now() - started) / 1000);
    process.stdout.write(`\r${done}/${count} seeds ok, ${rate.toFixed(0)} seeds/s`);
  }
}
console.log(`\nall ${count} seeds passed; totals: ${JSON.stringify(totals)}`);
