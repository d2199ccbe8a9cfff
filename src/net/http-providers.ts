/**
 * The providers endpoints (API contract, "Providers"): provider records on the log
 * (state/providers.ts), each on a lease.
 *
 * - `PUT /v1/providers/{key}` `{"provider","addrs","lease"}` -> `{"index"}`;
 * - `GET /v1/providers/{key}` -> `{"items":[{"provider","addrs","lease","revision"}],"index"}`;
 * - `GET /v1/providers?provider=P[&after=K&limit=L]` -> what P provides, by key;
 * - `DELETE /v1/providers/{key}/{provider}` -> `{"index","deleted"}` (the provider is what
 *   follows the last `/`: a provider's name holds none).
 */
import { wellFormed } from '../text.js';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { multiaddr } from '@multiformats/multiaddr';
import { PROVIDER_ADDR_BYTES_MAX, PROVIDER_ADDRS_MAX, PROVIDER_BYTES_MAX, type ApplyResult, type ProviderCmd } from '../state/command.js';
import type { ProviderRecord } from '../state/providers.js';
import type { ProviderReader } from '../state/state-store.js';
import { HttpError, badRequest, checkKeyBytes, parseConsistency, parseLeaseId, parsePathKey, parseQuery, percentDecode } from './http-parse.js';
import type { ModelHttpDeps } from './http-models.js';

const LIST_LIMIT_DEFAULT = 100;
const LIST_LIMIT_MAX = 10_000;

export interface ProviderHttpDeps<C> extends ModelHttpDeps<C> {
  readonly providers: () => ProviderReader;
  readonly write: (op: ProviderCmd) => Promise<ApplyResult>;
}

const utf8 = new TextEncoder();
const text = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('utf8');

export class ProviderHttp<C extends { readonly req: IncomingMessage; readonly res: ServerResponse }> {
  constructor(private readonly d: ProviderHttpDeps<C>) {}

  /** `/v1/providers` (rest null) or `/v1/providers/<rest>`. */
  route(ctx: C, method: string, rest: string | null, query: string): Promise<void> {
    if (rest === null) {
      if (method !== 'GET') throw new HttpError(405, 'method_not_allowed', `${method} is not allowed here`, {}, { allow: 'GET' });
      return this.listProvided(ctx, query);
    }
    switch (method) {
      case 'GET':
        return this.get(ctx, parsePathKey(rest), query);
      case 'PUT':
        return this.put(ctx, parsePathKey(rest));
      case 'DELETE': {
        const slash = rest.lastIndexOf('/');
        if (slash <= 0) throw badRequest('DELETE /v1/providers/{key}/{provider}');
        return this.delete(ctx, parsePathKey(rest.slice(0, slash)), providerName(text(percentDecode(rest.slice(slash + 1), 'provider'))));
      }
      default:
        throw new HttpError(405, 'method_not_allowed', `${method} is not allowed here`, {}, { allow: 'GET, PUT, DELETE' });
    }
  }

  private async get(ctx: C, key: Uint8Array, query: string): Promise<void> {
    await this.d.read(parseConsistency(parseQuery(query).get('consistency')));
    const index = this.d.applied();
    const items = this.d.providers().providers(key).map((r) => ({ provider: r.provider, addrs: r.addrs, lease: String(r.lease), revision: r.revision }));
    this.d.send(ctx.res, 200, { items, index }, { 'pangea-index': String(index) });
  }

  private async listProvided(ctx: C, query: string): Promise<void> {
    const q = parseQuery(query);
    const raw = q.get('provider');
    if (raw === undefined) throw badRequest('GET /v1/providers needs ?provider=P');
    const provider = providerName(text(percentDecode(raw, 'provider')));
    const afterRaw = q.get('after');
    // A key (1 to 1024 bytes): a longer one threw in the range read (helper-48).
    const after = afterRaw === undefined || afterRaw === '' ? null : checkKeyBytes(percentDecode(afterRaw, 'after'), 'after');
    const limitRaw = q.get('limit');
    let limit = LIST_LIMIT_DEFAULT;
    if (limitRaw !== undefined) {
      if (!/^[1-9][0-9]{0,4}$/.test(limitRaw) || Number(limitRaw) > LIST_LIMIT_MAX) throw badRequest(`limit must be 1 to ${LIST_LIMIT_MAX}`);
      limit = Number(limitRaw);
    }
    await this.d.read(parseConsistency(q.get('consistency')));
    const index = this.d.applied();
    const { items, more } = this.d.providers().provided(provider, after, limit);
    this.d.send(ctx.res, 200, { items: items.map(providedJson), more, index }, { 'pangea-index': String(index) });
  }

  private async put(ctx: C, key: Uint8Array): Promise<void> {
    const body = await this.d.readJson(ctx);
    for (const k of Object.keys(body)) if (!['provider', 'addrs', 'lease'].includes(k)) throw badRequest(`unknown field ${JSON.stringify(k.slice(0, 40))}`);
    const provider = providerName(body.provider);
    const addrs = body.addrs ?? [];
    if (!Array.isArray(addrs) || addrs.length > PROVIDER_ADDRS_MAX) throw badRequest(`addrs must be a list of at most ${PROVIDER_ADDRS_MAX} multiaddrs`);
    for (const a of addrs) {
      if (typeof a !== 'string' || a === '' || utf8.encode(a).byteLength > PROVIDER_ADDR_BYTES_MAX) throw badRequest(`each address is a multiaddr of 1 to ${PROVIDER_ADDR_BYTES_MAX} bytes`);
      try {
        multiaddr(a);
      } catch {
        throw badRequest(`${JSON.stringify(a.slice(0, 80))} is not a multiaddr`);
      }
    }
    if (body.lease === undefined) throw badRequest('a provider record needs a lease ("lease": id), so that it goes when its provider stops renewing');
    const lease = parseLeaseId(body.lease, 'lease');
    const r = await this.d.write({ t: 'provider_put', key, provider, addrs: addrs as string[], lease });
    if (r.kind !== 'provider_put') return this.d.refused(ctx, r);
    this.d.send(ctx.res, 200, { index: r.index }, { 'pangea-index': String(r.index) });
  }

  private async delete(ctx: C, key: Uint8Array, provider: string): Promise<void> {
    await this.d.readNothing(ctx);
    const r = await this.d.write({ t: 'provider_delete', key, provider });
    if (r.kind !== 'provider_deleted') return this.d.refused(ctx, r);
    this.d.send(ctx.res, 200, { index: r.index, deleted: r.deleted }, { 'pangea-index': String(r.index) });
  }
}

function providerName(v: unknown): string {
  if (typeof v !== 'string' || v === '' || utf8.encode(v).byteLength > PROVIDER_BYTES_MAX || v.includes('/') || !wellFormed(v)) {
    throw badRequest(`provider must be a peer id or name: 1 to ${PROVIDER_BYTES_MAX} bytes of UTF-8 without "/"`);
  }
  return v;
}

function providedJson(r: ProviderRecord): Record<string, unknown> {
  return { key: text(r.key), addrs: r.addrs, lease: String(r.lease), revision: r.revision };
}
