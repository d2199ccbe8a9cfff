/**
 * Forwarding a client request from a follower to the leader. The request is re-sent with
 * `Pangea-Forwarded: 1`, so a node that receives a forwarded request never forwards it
 * again. Whether the request may have reached the leader decides the error: a failure
 * before the connection was made means the write was never handed over (503); after, its
 * fate is unknown (504).
 */
import { Agent, request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { HttpError } from './http-parse.js';

export const forwardedHeader = 'pangea-forwarded';

/** The request headers a forward carries over; everything else is the connection's own. */
const requestHeadersKept = ['content-type', 'if-match', 'if-none-match', 'pangea-request-id', 'authorization', 'accept'] as const;
/** The answer headers sent back to the client. */
const responseHeadersKept = ['content-type', 'etag', 'pangea-index', 'retry-after', 'allow'] as const;

export class Forwarder {
  private readonly agent = new Agent({ keepAlive: true, maxSockets: 256 });
  private readonly httpsAgent = new HttpsAgent({ keepAlive: true, maxSockets: 256 });

  constructor(private readonly timeoutMs: number) {}

  /**
   * Sends `req` (whose body was read into `body`) to `leaderHttp` and pipes the answer to
   * `res`. Rejects with an `HttpError` (503 or 504) when no answer arrives; `isWrite` says
   * whether a failure after sending is `outcome_unknown` (a read has no outcome to lose).
   */
  forward(req: IncomingMessage, res: ServerResponse, body: Buffer | null, leaderHttp: string, isWrite: boolean): Promise<void> {
    let url: URL;
    try {
      url = new URL(req.url ?? '/', leaderHttp);
    } catch {
      return Promise.reject(unavailable(`leader address ${leaderHttp} is not a URL`));
    }
    const headers: Record<string, string> = { [forwardedHeader]: '1' };
    for (const h of requestHeadersKept) {
      const v = req.headers[h];
      if (typeof v === 'string') headers[h] = v;
    }
    if (body !== null) headers['content-length'] = String(body.byteLength);
    const https = url.protocol === 'https:';
    return new Promise<void>((resolve, reject) => {
      let sent = false;
      let settled = false;
      const fail = (why: string): void => {
        if (settled) return;
        settled = true;
        reject(sent && isWrite
          ? new HttpError(504, 'outcome_unknown', `forward to the leader failed after sending: ${why}`)
          : unavailable(`forward to the leader failed: ${why}`));
      };
      const out = (https ? httpsRequest : httpRequest)(url, { method: req.method, headers, agent: https ? this.httpsAgent : this.agent, timeout: this.timeoutMs }, (up) => {
        if (settled) {
          up.resume();
          return;
        }
        settled = true;
        const h: Record<string, string> = {};
        for (const name of responseHeadersKept) {
          const v = up.headers[name];
          if (typeof v === 'string') h[name] = v;
        }
        res.writeHead(up.statusCode ?? 502, h);
        up.pipe(res);
        up.on('error', () => res.destroy());
        up.on('end', () => resolve());
        res.on('close', () => {
          if (!up.complete) up.destroy();
          resolve();
        });
      });
      out.on('socket', (socket) => {
        if (!socket.connecting) sent = true;
        else socket.once('connect', () => (sent = true));
      });
      out.on('timeout', () => out.destroy(new Error(`no answer within ${this.timeoutMs} ms`)));
      out.on('error', (e) => fail(e.message));
      out.end(body ?? undefined);
    });
  }

  close(): void {
    this.agent.destroy();
    this.httpsAgent.destroy();
  }
}

function unavailable(message: string): HttpError {
  return new HttpError(503, 'unavailable', message, {}, { 'retry-after': '1' });
}
