/** A state store fed as the core would feed it, for the state machine's tests. */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import type { Command, ConfigEpoch, Entry, LogPoint } from '../../src/consensus/index.js';
import { openStores, type OpenStoresOptions, type Stores } from '../../src/stores.js';
import { encodeAppCommand, type ApplyResult, type AppCommand, type RequestId } from '../../src/state/command.js';

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

export function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'pangea-state-'));
  dirs.push(d);
  return d;
}

export const EPOCHS: readonly ConfigEpoch[] = [{ fromSlot: 1, config: { voters: ['a'], learners: [] } }];
export const GENESIS: LogPoint = { slot: 0, index: 0, epochs: EPOCHS };
export const b = (s: string): Uint8Array => new TextEncoder().encode(s);
export const HOUR = 60 * 60 * 1000;

/** A node's stores plus a feeder that numbers slots and indexes as the core would. */
export class Harness {
  readonly stores: Stores;
  private slot: number;
  private index: number;
  time = 1_000_000;

  constructor(
    readonly dir = tempDir(),
    opts: OpenStoresOptions = {},
  ) {
    this.stores = openStores(dir, { genesis: GENESIS, ...opts });
    const { point } = this.stores.state.applied();
    this.slot = point.slot;
    this.index = point.index;
  }

  get state() {
    return this.stores.state;
  }

  entry(batch: readonly Command[], epochs: readonly ConfigEpoch[] = EPOCHS): Entry {
    const e: Entry = { slot: ++this.slot, index: this.index + 1, batch, epochs };
    this.index += batch.length;
    return e;
  }

  /** Applies one command in its own slot and returns its answer. */
  one(op: AppCommand['op'], requestId?: RequestId): ApplyResult {
    const results = this.state.apply([this.entry([this.cmd(op, requestId)])]);
    assert.equal(results.length, 1);
    return results[0]!;
  }

  cmd(op: AppCommand['op'], requestId?: RequestId, time = this.time): Command {
    return { kind: 'app', data: encodeAppCommand({ op, time, proposal: 'a:1', ...(requestId ? { requestId } : {}) }) };
  }
}

