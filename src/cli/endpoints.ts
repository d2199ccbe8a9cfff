/**
 * Every member's own view, for `pangea endpoint status|health`: each member is asked
 * directly (GET /v1/cluster and /readyz on its HTTP address), not through the one that
 * listed them, so a member that is down or lagging shows as such.
 */
import { deadlineSignal } from '../abort.js';
import type { PangeaClient } from '../client.js';

export interface EndpointStatus {
  readonly peerId: string;
  readonly http: string;
  readonly role: string;
  readonly reachable: boolean;
  readonly ready: boolean;
  /** Why it is not ready or not reachable (the /readyz body, or the error). */
  readonly reason?: string;
  /** The leader as this member sees it. */
  readonly leader?: string | null;
  readonly commitIndex?: number;
  readonly appliedIndex?: number;
}

const PER_MEMBER_TIMEOUT_MS = 3_000;

async function fetchText(url: string): Promise<{ status: number; text: string }> {
  const t = deadlineSignal(new AbortController().signal, PER_MEMBER_TIMEOUT_MS);
  try {
    const res = await fetch(url, { signal: t.signal });
    return { status: res.status, text: await res.text() };
  } finally {
    t.done();
  }
}

/** Why a fetch failed, as fetch's cause says it (ECONNREFUSED ...), else its message. */
export function failure(err: unknown): string {
  const e = err as { message?: string; cause?: { message?: string } };
  return e.cause?.message ?? e.message ?? String(err);
}

export async function endpointStatuses(client: PangeaClient): Promise<EndpointStatus[]> {
  const members = await client.members();
  return Promise.all(
    members.map(async (m): Promise<EndpointStatus> => {
      const base = { peerId: m.peerId, http: m.http, role: m.role };
      if (m.http === '') return { ...base, reachable: false, ready: false, reason: 'no HTTP address recorded' };
      try {
        const [view, ready] = await Promise.all([fetchText(`${m.http}/v1/cluster`), fetchText(`${m.http}/readyz`)]);
        const v = JSON.parse(view.text) as { leader: string | null; commitIndex: number; appliedIndex: number };
        return {
          ...base,
          reachable: true,
          ready: ready.status === 200,
          ...(ready.status === 200 ? {} : { reason: ready.text.trim().slice(0, 200) || `HTTP ${ready.status}` }),
          leader: v.leader,
          commitIndex: v.commitIndex,
          appliedIndex: v.appliedIndex,
        };
      } catch (err) {
        return { ...base, reachable: false, ready: false, reason: failure(err) };
      }
    }),
  );
}

/** A member's /metrics, as text, or why it could not be read. */
export interface MemberMetrics {
  readonly peerId: string;
  readonly http: string;
  readonly text: string | null;
  readonly reason?: string;
}

export async function memberMetrics(client: PangeaClient): Promise<MemberMetrics[]> {
  const members = await client.members();
  return Promise.all(
    members.map(async (m): Promise<MemberMetrics> => {
      if (m.http === '') return { peerId: m.peerId, http: m.http, text: null, reason: 'no HTTP address recorded' };
      try {
        const r = await fetchText(`${m.http}/metrics`);
        if (r.status !== 200) return { peerId: m.peerId, http: m.http, text: null, reason: `HTTP ${r.status}` };
        return { peerId: m.peerId, http: m.http, text: r.text };
      } catch (err) {
        return { peerId: m.peerId, http: m.http, text: null, reason: failure(err) };
      }
    }),
  );
}

/** The samples of metric `name` in Prometheus text: labels (unescaped) and value. */
export function samples(text: string, name: string): { labels: Record<string, string>; value: number }[] {
  const out: { labels: Record<string, string>; value: number }[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith(name) || (line[name.length] !== ' ' && line[name.length] !== '{')) continue;
    const labels: Record<string, string> = {};
    let rest = line.slice(name.length);
    if (rest.startsWith('{')) {
      const end = rest.lastIndexOf('}');
      for (const m of rest.slice(1, end).matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[m[1]!] = m[2]!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
      rest = rest.slice(end + 1);
    }
    out.push({ labels, value: Number(rest.trim()) });
  }
  return out;
}

/** What needs an operator's attention on one member, from its metrics. */
export function alarmsOf(text: string): string[] {
  const out: string[] = [];
  if (samples(text, 'pangea_hot_quota_alarm').some((s) => s.value === 1)) out.push('hot_quota: the hot log is at its quota; client writes are refused until the archive catches up');
  if (samples(text, 'pangea_archive_enabled').some((s) => s.value === 0)) out.push('archive_off: the cluster neither archives nor prunes (GET /readyz says why)');
  for (const s of samples(text, 'pangea_archive_last_error_info')) out.push(`archive: ${s.labels.error ?? '?'}`);
  for (const s of samples(text, 'pangea_prune_last_error_info')) out.push(`prune: ${s.labels.error ?? '?'}`);
  const stalled = samples(text, 'pangea_commit_stalled_seconds')[0]?.value ?? 0;
  if (stalled >= STALL_ALARM_S) out.push(`commit_stalled: writes have waited ${Math.round(stalled)} s with the commit index standing still`);
  if (samples(text, 'pangea_ready')[0]?.value === 0) out.push('not_ready: /readyz answers 503');
  return out;
}

/** A commit index standing still this long while writes wait is an alarm. */
const STALL_ALARM_S = 5;
