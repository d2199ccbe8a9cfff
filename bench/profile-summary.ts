/**
 * Where a node's CPU went, from a V8 `.cpuprofile` (what `npm run bench -- cluster --cpu-prof
 * DIR` writes): self time grouped into stages by where the code lives (Pangea's own modules,
 * each npm package, Node's internals, the garbage collector, idle), and the hottest functions.
 * Optionally only the samples inside one window of monotonic time (a phase of the bench).
 */
import { readFileSync } from 'node:fs';

interface ProfileNode {
  readonly id: number;
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number };
}

export interface CpuProfile {
  readonly nodes: readonly ProfileNode[];
  readonly startTime: number;
  readonly endTime: number;
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
}

export interface Row {
  readonly name: string;
  readonly ms: number;
  /** Share of the busy (not idle) time. */
  readonly pct: number;
}

export interface Summary {
  /** Sampled wall time in the window, and the part of it the thread was busy. */
  readonly wallMs: number;
  readonly busyMs: number;
  readonly stages: Row[];
  readonly functions: Row[];
}

/** The stage of a frame: where its code lives. */
export function stageOf(url: string, functionName: string): string {
  if (url === '') {
    if (functionName === '(idle)') return '(idle)';
    if (functionName === '(garbage collector)') return '(gc)';
    if (functionName === '(program)') return '(program: V8 and native, outside JS)';
    return '(native functions)';
  }
  const nm = url.lastIndexOf('/node_modules/');
  if (nm >= 0) {
    const parts = url.slice(nm + '/node_modules/'.length).split('/');
    return parts[0]!.startsWith('@') ? `${parts[0]}/${parts[1]}` : parts[0]!;
  }
  const src = url.indexOf('/dist/src/');
  if (src >= 0) return `pangea ${url.slice(src + '/dist/src/'.length).replace(/\.js$/, '')}`;
  if (url.startsWith('node:')) {
    const path = url.slice('node:'.length).replace(/^internal\//, '');
    const first = path.split('/')[0]!.replace(/^_/, '');
    return `node:${first.startsWith('http') ? 'http' : first.startsWith('stream') ? 'streams' : first}`;
  }
  return url;
}

export function summarize(profile: CpuProfile, window?: { fromUs: number; toUs: number }, top = 12): Summary {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const stages = new Map<string, number>();
  const functions = new Map<string, number>();
  let wallUs = 0;
  let idleUs = 0;
  let t = profile.startTime;
  for (let i = 0; i < profile.samples.length; i++) {
    t += profile.timeDeltas[i] ?? 0;
    // A sample stands for the time until the next one.
    const us = profile.timeDeltas[i + 1] ?? 0;
    if (window !== undefined && (t < window.fromUs || t >= window.toUs)) continue;
    const node = byId.get(profile.samples[i]!);
    if (node === undefined) continue;
    const { url, functionName, lineNumber } = node.callFrame;
    const stage = stageOf(url, functionName);
    wallUs += us;
    if (stage === '(idle)') {
      idleUs += us;
      continue;
    }
    stages.set(stage, (stages.get(stage) ?? 0) + us);
    const fn = `${functionName || '(anonymous)'} ${url === '' ? '' : `${stage}:${lineNumber + 1}`}`.trim();
    functions.set(fn, (functions.get(fn) ?? 0) + us);
  }
  const busyUs = wallUs - idleUs;
  const rows = (m: Map<string, number>): Row[] =>
    [...m.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([name, us]) => ({ name, ms: Math.round(us / 100) / 10, pct: busyUs > 0 ? Math.round((1000 * us) / busyUs) / 10 : 0 }));
  return { wallMs: Math.round(wallUs / 1000), busyMs: Math.round(busyUs / 1000), stages: rows(stages), functions: rows(functions) };
}

export function readProfile(file: string): CpuProfile {
  return JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
}

/** The summary as lines for people. */
export function formatSummary(title: string, s: Summary): string[] {
  const pct = s.wallMs > 0 ? Math.round((100 * s.busyMs) / s.wallMs) : 0;
  const lines = [`${title}: busy ${s.busyMs} ms of ${s.wallMs} ms sampled (${pct}%)`, '  top stages (self time, share of busy):'];
  for (const r of s.stages) lines.push(`    ${String(r.pct).padStart(5)}%  ${String(r.ms).padStart(8)} ms  ${r.name}`);
  lines.push('  top functions:');
  for (const r of s.functions) lines.push(`    ${String(r.pct).padStart(5)}%  ${String(r.ms).padStart(8)} ms  ${r.name}`);
  return lines;
}
