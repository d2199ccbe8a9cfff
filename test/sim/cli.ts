/**
 * `npm run sim -- --seed N` replays one seed with a trace; `npm run sim -- --seeds N [--from S]`
 * runs a campaign with a progress line (`--trace-lines N`: how much of a failing seed's trace
 * to print, default 600). Exit status 1 on the first failure, with its seed.
 * `--defect NAME` runs replicas with one of the core's rules broken (see Defects in defective-replica.ts),
 * `--driver-defect NAME` drivers with one of the driver's (see DriverDefects), `--sync-defect
 * NAME` block sync checks with one of theirs (see SyncDefects), `--state-defect NAME` the state
 * machine with one of its rules broken (see StateDefects in defective-state.ts).
 */
import { DEFAULT_FAULT_TICKS, simulate, type SimStats } from './world.js';

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

/**
 * The shortest failing run of a seed: the same seed with a shorter fault phase replays the
 * same events up to the point where the network heals, so the smallest fault phase that
 * still fails gives the shortest trace.
 */
const defectIndex = process.argv.indexOf('--defect');
const driverDefectIndex = process.argv.indexOf('--driver-defect');
const syncDefectIndex = process.argv.indexOf('--sync-defect');
const stateDefectIndex = process.argv.indexOf('--state-defect');
const defects = {
  ...(defectIndex > 0 ? { defects: { [process.argv[defectIndex + 1]!]: true } } : {}),
  ...(driverDefectIndex > 0 ? { driverDefects: { [process.argv[driverDefectIndex + 1]!]: true } } : {}),
  ...(syncDefectIndex > 0 ? { syncDefects: { [process.argv[syncDefectIndex + 1]!]: true } } : {}),
  ...(stateDefectIndex > 0 ? { stateDefects: { [process.argv[stateDefectIndex + 1]!]: true } } : {}),
  // `--blocks`: the block actor runs too (world.ts blockStep).
  ...(process.argv.includes('--blocks') ? { blocks: true } : {}),
};

function shrink(seed: number): { faultTicks: number; error: string; trace: readonly string[] } | null {
  const full = simulate({ seed, trace: true, ...defects });
  if (full.ok) return null;
  let best = { faultTicks: DEFAULT_FAULT_TICKS, error: full.error ?? '', trace: full.trace };
  let lo = 0;
  let hi = DEFAULT_FAULT_TICKS;
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    const r = simulate({ seed, trace: true, faultTicks: mid, ...defects });
    if (!r.ok) {
      best = { faultTicks: mid, error: r.error ?? '', trace: r.trace };
      hi = mid;
    } else lo = mid;
  }
  return best;
}

const seed = arg('seed');
const traceLines = arg('trace-lines') ?? 600;
if (seed !== undefined) {
  const r = shrink(seed);
  if (r !== null) {
    console.log(r.trace.slice(-traceLines).join('\n'));
    console.log(`\nseed ${seed} FAILED: ${r.error}`);
    console.log(`(shortest failing run: fault phase of ${r.faultTicks} ticks; ${r.trace.length} events in its trace, the last ${traceLines} shown; --trace-lines N for more)`);
    process.exit(1);
  }
  const ok = simulate({ seed, ...defects });
  console.log(`seed ${seed} ok: ${JSON.stringify(ok.stats)}`);
  process.exit(0);
}

const count = arg('seeds') ?? 1000;
const from = arg('from') ?? 1;
const totals: Partial<SimStats> = {};
const started = Date.now();
for (let s = from; s < from + count; s++) {
  const r = simulate({ seed: s, ...defects });
  if (!r.ok) {
    console.log(`\nseed ${s} FAILED: ${r.error}\nreplay: npm run sim -- --seed ${s}${defects.blocks ? ' --blocks' : ''}`);
    process.exit(1);
  }
  // Counts add up; a `...MaxMs` figure is the most of any seed.
  for (const [k, v] of Object.entries(r.stats)) totals[k as keyof SimStats] = k.endsWith('MaxMs') ? Math.max(totals[k as keyof SimStats] ?? -Infinity, v) : (totals[k as keyof SimStats] ?? 0) + v;
  const done = s - from + 1;
  if (done % 100 === 0 || done === count) {
    const rate = done / ((Date.now() - started) / 1000);
    process.stdout.write(`\r${done}/${count} seeds ok, ${rate.toFixed(0)} seeds/s`);
  }
}
console.log(`\nall ${count} seeds passed; totals: ${JSON.stringify(totals)}`);
