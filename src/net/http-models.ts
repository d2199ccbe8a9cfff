/**
 * What the data models' endpoints (http-blocks.ts, http-providers.ts, http-collections.ts)
 * need from the HTTP API around them (http.ts): the applied index, request bodies, reads at
 * a consistency, answers, and the contract's error for an apply that refused.
 */
import type { ServerResponse } from 'node:http';
import type { ApplyResult } from '../state/command.js';
import type { Consistency } from './service.js';

export interface ModelHttpDeps<C> {
  /** The node's applied index now. */
  readonly applied: () => number;
  readonly readJson: (ctx: C) => Promise<Record<string, unknown>>;
  /** Reads (and refuses) a body where none is expected. */
  readonly readNothing: (ctx: C) => Promise<void>;
  readonly read: (consistency: Consistency) => Promise<number>;
  readonly send: (res: ServerResponse, status: number, body: unknown, headers?: Record<string, string>) => void;
  /** Sends `text`, already JSON (stored records are canonical JSON: no parse and stringify). */
  readonly sendJsonText: (res: ServerResponse, status: number, text: string, headers?: Record<string, string>) => void;
  /** Throws the contract's error for an apply that refused (http.ts sendApplyError). */
  readonly refused: (ctx: C, r: ApplyResult) => never;
}
