/**
 * Blocks for clients (API contract, "Blocks"): the shapes PangeaClient's block methods take
 * and answer, and `transact`, the read-modify-commit loop Optimystic's users write by hand.
 *
 * transact(ids, fn): read the blocks in one consistent read, let `fn` build a transform from
 * them, commit it in one command with the revisions read. A conflict answers with the
 * transforms the client missed (up to 16 a block): they are applied to its copies, so the
 * rebase needs no second read, and `fn` runs again on the new state; a block whose missed
 * transforms did not all come (`more`) is read again. A block held by a pend: wait, read
 * again. An outcome unknown: the same action id again (an action commits once: a `conflict`
 * naming `committed` says the first attempt did).
 */
import { randomBytes } from 'node:crypto';
import { applyTransform, decodeBody, parseTransform, type Body, type Json } from './state/blocks.js';
import { sleep } from './sleep.js';
import type { CallOptions } from './recipes.js';
import { PangeaError } from './client-error.js';

export type BlockBody = { [field: string]: Json };
export type BlockOp = { op: 'set'; field: string; value: Json } | { op: 'splice'; field: string; index: number; deleteCount: number; insert?: Json[] };
export interface BlockTransform {
  inserts?: Record<string, BlockBody>;
  updates?: Record<string, BlockOp[]>;
  deletes?: string[];
}
export interface BlockReadRef {
  readonly id: string;
  readonly revision: number;
}
/** A block as read: `body` null when absent; `deleted` when a tombstone (its revision is the
 *  delete's). */
export interface BlockRead {
  readonly id: string;
  readonly revision: number;
  readonly body: BlockBody | null;
  readonly deleted: boolean;
  readonly index: number;
}
export interface BlockRevisionInfo {
  readonly revision: number;
  readonly actionId: string;
  readonly transform: BlockTransform;
}

/** Given the blocks read (by id), the transform to commit, or null for none. */
export type TransactFn = (blocks: ReadonlyMap<string, BlockRead>) => BlockTransform | null | Promise<BlockTransform | null>;
export interface TransactOptions extends CallOptions {
  /** Commits tried at most (default 16). */
  readonly attempts?: number;
}
export interface TransactResult {
  /** Null when `fn` returned null. */
  readonly index: number | null;
  readonly revisions: Record<string, number>;
  readonly actionId: string | null;
  readonly attempts: number;
}

/** What transact needs of PangeaClient (its methods of the same names). */
export interface BlockClient {
  getBlocks(ids: readonly string[], opts?: CallOptions): Promise<{ index: number; items: BlockRead[] }>;
  commit(a: { actionId: string; reads?: readonly BlockReadRef[]; transform?: BlockTransform }, opts?: CallOptions): Promise<{ index: number; revisions: Record<string, number> }>;
}

export function newActionId(): string {
  return `a-${randomBytes(12).toString('base64url')}`;
}

interface Conflict {
  readonly id: string;
  readonly current: number;
  readonly missing: readonly BlockRevisionInfo[];
  readonly more: boolean;
}

export async function transact(client: BlockClient, ids: readonly string[], fn: TransactFn, opts: TransactOptions = {}): Promise<TransactResult> {
  const attempts = opts.attempts ?? 16;
  const call = opts.signal ? { signal: opts.signal } : {};
  const blocks = new Map<string, BlockRead>();
  const readAll = async (which: readonly string[]): Promise<void> => {
    if (which.length === 0) return;
    for (const b of (await client.getBlocks(which, call)).items) blocks.set(b.id, b);
  };
  await readAll([...new Set(ids)]);
  for (let attempt = 1; attempt <= attempts; attempt++) {
    const transform = await fn(blocks);
    if (transform === null) return { index: null, revisions: {}, actionId: null, attempts: attempt };
    const reads = [...blocks.values()].map((b) => ({ id: b.id, revision: b.revision }));
    const actionId = newActionId();
    try {
      const r = await commitOnce(client, actionId, reads, transform, call);
      return { index: r.index, revisions: r.revisions, actionId, attempts: attempt };
    } catch (e) {
      if (!(e instanceof PangeaError)) throw e;
      if (e.code === 'conflict' && Array.isArray(e.details.conflicts)) {
        const reread: string[] = [];
        for (const c of e.details.conflicts as Conflict[]) if (!rebase(blocks, c)) reread.push(c.id);
        await readAll(reread);
      } else if (e.code === 'pending') {
        await sleep(Math.min(2_000, 50 * 2 ** attempt), opts.signal);
        await readAll([...blocks.keys()]);
      } else throw e;
    }
  }
  throw new PangeaError(409, 'conflict', `transact: no commit in ${attempts} attempts`);
}

/** One commit; an outcome unknown is tried again with the same action id, whose commit
 *  the cluster applies once. */
async function commitOnce(client: BlockClient, actionId: string, reads: readonly BlockReadRef[], transform: BlockTransform, call: CallOptions): Promise<{ index: number; revisions: Record<string, number> }> {
  for (let tries = 0; ; tries++) {
    try {
      return await client.commit({ actionId, reads, transform }, call);
    } catch (e) {
      if (e instanceof PangeaError && e.code === 'conflict' && typeof e.details.committed === 'number') {
        // The attempt before did commit: its revisions are those of the blocks it changed.
        const touched = [...Object.keys(transform.inserts ?? {}), ...Object.keys(transform.updates ?? {}), ...(transform.deletes ?? [])];
        return { index: e.details.committed, revisions: Object.fromEntries(touched.map((id) => [id, e.details.committed as number])) };
      }
      if (!(e instanceof PangeaError) || !e.mayHaveApplied || tries >= 5) throw e;
    }
  }
}

/** Applies a conflict's missed transforms to the copy of its block; false when they are not
 *  all there (the block is read again). */
function rebase(blocks: Map<string, BlockRead>, c: Conflict): boolean {
  const b = blocks.get(c.id);
  if (b === undefined || c.more) return false;
  const missing = c.missing.filter((m) => m.revision > b.revision);
  if (missing.length === 0 || missing[missing.length - 1]!.revision !== c.current) return false;
  let body: Body | null = b.body;
  try {
    for (const m of missing) {
      const before = body;
      const out = applyTransform((id) => (id === c.id && before !== null ? before : undefined), parseTransform(m.transform)).get(c.id);
      if (out !== undefined) body = out === null ? null : decodeBody(out);
    }
  } catch {
    return false;
  }
  blocks.set(c.id, { ...b, revision: c.current, body, deleted: body === null });
  return true;
}
