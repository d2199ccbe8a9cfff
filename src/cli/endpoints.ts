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
        const e = err as { message?: string; cause?: { message?: string } };
        return { ...base, reachable: false, ready: false, reason: e.cause?.message ?? e.message ?? String(err) };
      }
    }),
  );
}
