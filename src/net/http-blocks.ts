/**
 * The blocks endpoints (API contract, "Blocks"): reads of a block, at an index, in a batch,
 * and its history; pend, commit and cancel, each one log command (state/block-apply.ts).
 * Input is judged here as apply judges it (blocks.ts), so a malformed request is `400`
 * before anything is proposed; apply judges it again, since a command is trusted by no one.
 *
 * Paths: `POST /v1/blocks/{get,pend,commit,cancel}` are the operations; any other method on
 * `/v1/blocks/{id}` reads block `id` (so a block may be called `get`).
 */
import canonicalize from 'canonicalize';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { ACTION_BLOCKS_MAX, PEND_TTL_MS_DEFAULT, PEND_TTL_MS_MAX, type ApplyResult, type BlockCmd } from '../state/command.js';
import { BlockError, checkActionId, checkBlockId, parseReads, parseTransform, type Transform } from '../state/blocks.js';
import type { BlockRevision, BlockState } from '../state/block-apply.js';
import type { BlockReader } from '../state/state-store.js';
import { HttpError, badRequest, parseConsistency, parseQuery } from './http-parse.js';
import type { ModelHttpDeps } from './http-models.js';

/** Ids one `POST /v1/blocks/get` reads at most (API contract). */
export const BLOCKS_GET_MAX = 1_000;
/** Bytes of bodies (as stored, now) one batch read answers at most. */
export const GET_BODY_BYTES_MAX = 8 * 1024 * 1024;
/** History items one page lists at most. */
export const REVISIONS_LIMIT_MAX = 1_000;
const REVISIONS_LIMIT_DEFAULT = 100;

/** What the blocks endpoints need from the HTTP API around them (http.ts). */
export interface BlockHttpDeps<C> extends ModelHttpDeps<C> {
  readonly blocks: () => BlockReader;
  readonly write: (op: BlockCmd) => Promise<ApplyResult>;
}

export class BlockHttp<C extends { readonly req: IncomingMessage; readonly res: ServerResponse }> {
  constructor(private readonly d: BlockHttpDeps<C>) {}

  /** Serves `/v1/blocks/<rest>`. */
  route(ctx: C, method: string, rest: string, query: string): Promise<void> {
    if (method === 'POST') {
      switch (rest) {
        case 'get':
          return this.getMany(ctx);
        case 'pend':
          return this.pend(ctx);
        case 'commit':
          return this.commit(ctx);
        case 'cancel':
          return this.cancel(ctx);
      }
    }
    if (rest.endsWith('/revisions')) {
      allowGet(method);
      return this.revisions(ctx, blockIdOf(rest.slice(0, -'/revisions'.length)), query);
    }
    allowGet(method);
    return this.getOne(ctx, blockIdOf(rest), query);
  }

  private async getOne(ctx: C, id: string, query: string): Promise<void> {
    const q = parseQuery(query);
    const at = optIndex(q.get('at'), 'at');
    await this.d.read(parseConsistency(q.get('consistency')));
    const index = this.d.applied();
    const state = this.stateAt(id, at, index);
    const headers = { 'pangea-index': String(index), ...(state.revision > 0 ? { etag: `"${state.revision}"` } : {}) };
    if (state.body === null) throw new HttpError(404, 'not_found', state.revision === 0 ? `no block ${id}` : `block ${id} was deleted at ${state.revision}`, { revision: state.revision, index }, headers);
    this.d.send(ctx.res, 200, { id, revision: state.revision, body: state.body, index }, headers);
  }

  private async getMany(ctx: C): Promise<void> {
    const body = await this.d.readJson(ctx);
    only(body, ['ids', 'at', 'consistency'], 'get');
    if (!Array.isArray(body.ids) || body.ids.length < 1 || body.ids.length > BLOCKS_GET_MAX) throw badRequest(`ids must be a list of 1 to ${BLOCKS_GET_MAX} block ids`);
    const ids = [...new Set(body.ids.map((id) => blockId(id, 'ids')))];
    const at = body.at === undefined ? undefined : indexOf(body.at, 'at');
    await this.d.read(parseConsistency(body.consistency === undefined ? undefined : String(body.consistency)));
    const index = this.d.applied();
    // Bounded by the bodies' stored sizes before any is decoded (review: one 1 MiB block
    // named 1,000 times ran the answering node out of memory).
    let bytes = 0;
    for (const id of ids) bytes += this.d.blocks().blockBytes(id);
    if (bytes > GET_BODY_BYTES_MAX) throw new HttpError(413, 'payload_too_large', `these blocks hold ${bytes} bytes, over the ${GET_BODY_BYTES_MAX} one read answers: ask for fewer`);
    const items = ids.map((id) => {
      const s = this.stateAt(id, at, index);
      return { id, revision: s.revision, deleted: s.body === null && s.revision > 0, body: s.body };
    });
    this.d.send(ctx.res, 200, { index, items }, { 'pangea-index': String(index) });
  }

  private async revisions(ctx: C, id: string, query: string): Promise<void> {
    const q = parseQuery(query);
    const after = optIndex(q.get('after'), 'after') ?? 0;
    const limitRaw = q.get('limit');
    let limit = REVISIONS_LIMIT_DEFAULT;
    if (limitRaw !== undefined) {
      if (!/^[1-9][0-9]{0,3}$/.test(limitRaw) || Number(limitRaw) > REVISIONS_LIMIT_MAX) throw badRequest(`limit must be 1 to ${REVISIONS_LIMIT_MAX}`);
      limit = Number(limitRaw);
    }
    await this.d.read(parseConsistency(q.get('consistency')));
    const index = this.d.applied();
    const { items, more, complete } = this.d.blocks().blockRevisions(id, after, limit);
    // Below the history's floor (the hot log's) revisions are not listed: said, not hidden.
    this.d.send(ctx.res, 200, { items: items.map(revisionJson), more, index, ...(complete ? {} : { complete: false }) }, { 'pangea-index': String(index) });
  }

  private async pend(ctx: C): Promise<void> {
    const body = await this.d.readJson(ctx);
    only(body, ['actionId', 'reads', 'transform', 'ttl'], 'pend');
    const { actionId, reads, transform } = action(body, true)!;
    let ttlMs = PEND_TTL_MS_DEFAULT;
    if (body.ttl !== undefined) {
      if (typeof body.ttl !== 'number' || !Number.isFinite(body.ttl) || body.ttl <= 0 || body.ttl * 1000 > PEND_TTL_MS_MAX) throw badRequest(`ttl must be seconds, more than 0 and at most ${PEND_TTL_MS_MAX / 1000}`);
      ttlMs = Math.max(1, Math.round(body.ttl * 1000));
    }
    const r = await this.d.write({ t: 'block_pend', actionId, reads, transform, ttlMs });
    if (r.kind !== 'block_pended') return this.refused(r);
    this.d.send(ctx.res, 200, { index: r.index, actionId: r.actionId, expiresAt: r.expiresAt }, { 'pangea-index': String(r.index) });
  }

  private async commit(ctx: C): Promise<void> {
    const body = await this.d.readJson(ctx);
    only(body, ['actionId', 'reads', 'transform'], 'commit');
    const oneShot = action(body, false);
    const op: BlockCmd = oneShot === null ? { t: 'block_commit', actionId: actionIdOf(body.actionId) } : { t: 'block_commit', ...oneShot };
    const r = await this.d.write(op);
    if (r.kind !== 'block_committed') return this.refused(r);
    this.d.send(ctx.res, 200, { index: r.index, revisions: r.revisions }, { 'pangea-index': String(r.index) });
  }

  private async cancel(ctx: C): Promise<void> {
    const body = await this.d.readJson(ctx);
    only(body, ['actionId'], 'cancel');
    const r = await this.d.write({ t: 'block_cancel', actionId: actionIdOf(body.actionId) });
    if (r.kind !== 'block_cancelled') return this.refused(r);
    this.d.send(ctx.res, 200, { index: r.index, cancelled: r.cancelled }, { 'pangea-index': String(r.index) });
  }

  /** Block `id` at `at` (undefined: now). */
  private stateAt(id: string, at: number | undefined, applied: number): BlockState {
    const blocks = this.d.blocks();
    if (at === undefined) return blocks.block(id) ?? { revision: 0, body: null };
    if (at > applied) throw badRequest(`at ${at} is past the applied index, ${applied}`);
    const s = blocks.blockAt(id, at);
    if (s === 'unavailable') throw new HttpError(410, 'history_unavailable', `block ${id} at ${at}: that is below this node's history (it starts at the hot log's floor) and is not the current state`, { index: applied });
    return s;
  }

  /** The contract's error for an apply that refused. */
  private async refused(r: ApplyResult): Promise<never> {
    const index = r.index;
    switch (r.kind) {
      case 'block_conflict': {
        // The answer may come from the leader before this node applied that index: the
        // missed transforms are read from this node's history once it has.
        if (this.d.applied() < index) await this.d.read('linearizable');
        const blocks = this.d.blocks();
        const conflicts = r.conflicts.map((c) => {
          const { items, more } = blocks.blockMissing(c.id, c.expected, c.current);
          return { id: c.id, expected: c.expected, current: c.current, missing: items.map(revisionJson), more };
        });
        throw new HttpError(409, 'conflict', `${conflicts.length} of the reads are stale: rebase on the missing transforms`, { index, conflicts });
      }
      case 'block_pending':
        throw new HttpError(409, 'pending', `${r.pending.length} of the blocks are held by pending actions`, { index, pending: r.pending });
      case 'action_not_found':
        throw new HttpError(404, 'action_not_found', `no pending action ${r.actionId}: unknown, expired, cancelled or finished`, { index });
      case 'action_reused':
        throw new HttpError(409, 'conflict', `action ${r.actionId} was committed at ${r.committed}: an action id commits once`, { index, committed: r.committed, conflicts: [] });
      case 'invalid_operation':
        throw new HttpError(422, 'invalid_operation', r.message, { index });
      case 'invalid':
        throw new HttpError(400, 'bad_request', r.message, { index });
      default:
        throw new Error(`a block command was answered ${r.kind}`);
    }
  }
}

function revisionJson(r: BlockRevision): Record<string, unknown> {
  return { revision: r.revision, actionId: r.actionId, transform: JSON.parse(r.transform) as unknown };
}

function allowGet(method: string): void {
  if (method !== 'GET') throw new HttpError(405, 'method_not_allowed', `${method} is not allowed here`, {}, { allow: 'GET' });
}

function blockIdOf(raw: string): string {
  return blockId(raw, 'block id');
}

function judged<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof BlockError) throw e.code === 'invalid_operation' ? new HttpError(422, 'invalid_operation', e.message) : badRequest(e.message);
    throw e;
  }
}

function blockId(v: unknown, what: string): string {
  return judged(() => checkBlockId(v, what));
}

function actionIdOf(v: unknown): string {
  return judged(() => checkActionId(v));
}

/** The action of a pend or one-shot commit: null when the body has neither reads nor
 *  transform (and `required` is false). */
function action(body: Record<string, unknown>, required: boolean): { actionId: string; reads: { id: string; revision: number }[]; transform: string } | null {
  const actionId = actionIdOf(body.actionId);
  if (!required && body.reads === undefined && body.transform === undefined) return null;
  if (body.transform === undefined) throw badRequest('transform is missing');
  if (body.reads === undefined) throw badRequest('reads is missing (an empty list when the action read nothing)');
  const transform: Transform = judged(() => parseTransform(body.transform));
  const reads = judged(() => parseReads(body.reads, transform));
  if (reads.length > ACTION_BLOCKS_MAX) throw badRequest(`reads: at most ${ACTION_BLOCKS_MAX}`);
  return { actionId, reads, transform: canonicalize(body.transform) as string };
}

function only(o: Record<string, unknown>, allowed: readonly string[], what: string): void {
  for (const k of Object.keys(o)) if (!allowed.includes(k)) throw badRequest(`${what}: unknown field ${JSON.stringify(k)}`);
}

function indexOf(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw badRequest(`${what} must be a log index (a non-negative integer)`);
  return v;
}

function optIndex(raw: string | undefined, what: string): number | undefined {
  if (raw === undefined || raw === '') return undefined;
  if (!/^(0|[1-9][0-9]{0,15})$/.test(raw) || !Number.isSafeInteger(Number(raw))) throw badRequest(`${what} must be a log index (a non-negative integer)`);
  return Number(raw);
}
