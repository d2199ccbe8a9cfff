/**
 * One watch stream (`GET /v1/watch`, API.md "Watch"): Server-Sent Events of the changes the
 * effects journal (src/state/effects.ts) records for a key or a prefix.
 *
 * A stream pulls: it reads the journal from the last index it sent up to the applied index,
 * a page at a time, and writes while the socket takes more. It holds no queue of its own,
 * so a slow watcher is never dropped nor gapped and costs no memory beyond its socket's
 * buffer: when the socket is full the stream waits for `drain` and then reads on from where
 * it stopped. Each change event carries every matching change of one index, in the order
 * applied, so a txn stays whole; ids are indexes, never sent twice, never skipped.
 *
 * Below the journal's floor (past the pruned hot log, or a node restored from a snapshot)
 * the stream reads the archive's effects objects (archive/effects-object.ts) a page at a
 * time, through the node's cold queue (shared with block sync), and writes the same events
 * a hot reader would, byte for byte; past the archived stretch it reads the journal again.
 * What the archive cannot give ends the stream with an `error` event: `history_unavailable`
 * (no effects archived there), `archive_unavailable` (a read failed: resume later) or
 * `overloaded` (the cold queue is full).
 */
import { isUtf8 } from 'node:buffer';
import type { ServerResponse } from 'node:http';
import type { Change, ColdEffects, Effects } from '../state/effects.js';
import { encodeValue, type Encoding } from './http-parse.js';

/** What a stream reads: the node's applied index and its effects journal. */
export interface WatchSource {
  applied(): number;
  /** The journal holds the effects of every index after this one. */
  floor(): number;
  effects(after: number, through: number, limit: number): Effects[];
  /** Calls `wake` after every apply; returns the function that stops it. */
  subscribe(wake: () => void): () => void;
  /** The archive's effects after `after`, at most `limit` rows (archive/cold.ts); absent
   *  when this node cannot read the archive. Throws when a read fails. */
  cold?(after: number, limit: number): Promise<ColdEffects | 'busy'>;
}

export interface WatchSpec {
  readonly key: Uint8Array | null;
  readonly prefix: Uint8Array | null;
  readonly blocks?: readonly string[] | null;
  /** A key whose provider records (API contract, "Providers") the stream follows. */
  readonly providers?: Uint8Array | null;
  /** A collection whose records (API contract, "Collections") the stream follows. */
  readonly collection?: string | null;
  /** The last index already seen (exclusive start). */
  readonly after: number;
  readonly values: boolean;
  readonly encoding: Encoding;
  readonly progressMs: number;
}

export interface WatchTiming {
  /** A `:` comment this often keeps proxies from closing a quiet stream. */
  readonly heartbeatMs: number;
  /** A socket that takes nothing for this long is closed. */
  readonly stallMs: number;
}

export const WATCH_TIMING: WatchTiming = { heartbeatMs: 15_000, stallMs: 60_000 };
/** Journal rows read at a time, before the stream yields to other work. */
const PAGE_ROWS = 256;
/** Watch work per event-loop turn, across every stream of a node: past it the rest waits
 *  for the next turn, so consensus and writes are never starved by fan-out. Measured with
 *  1,000 watchers on one prefix under 64 writing clients: without a budget every apply woke
 *  every stream in one turn, and writes timed out (504). */
export const WATCH_TURN_BUDGET_MS = 2;

/** Journal rows a node keeps decoded for its streams (JournalWindow), and their bytes. */
export const WINDOW_ROWS_MAX = 8_192;
export const WINDOW_BYTES_MAX = 64 * 1024 * 1024;

/**
 * The newest journal rows, read and decoded once for every stream of a node (one per node):
 * streams that keep up, or catch up over the same stretch, read the same rows, and decoding
 * them per stream was most of fan-out's cost (a CPU profile of 1,000 paused watchers: ~110 us
 * an event, mostly msgpack and LMDB reads). Holds every row in (lo, hi], extended at the top
 * as streams ask for more and trimmed at the bottom past WINDOW_ROWS_MAX or WINDOW_BYTES_MAX;
 * a stream behind it reads the journal itself. A journal row never changes once applied
 * (every node applies the same log), so the window never goes stale, except when the state
 * behind it goes back (a restore): then it starts again.
 */
export class JournalWindow {
  private rows: Effects[] = [];
  private bytes = 0;
  private lo = 0;
  private hi = 0;

  constructor(
    private readonly read: (after: number, through: number, limit: number) => Effects[],
    private readonly rowsMax = WINDOW_ROWS_MAX,
    private readonly bytesMax = WINDOW_BYTES_MAX,
  ) {}

  /** As WatchSource.effects: at most `limit` rows in (`after`, `through`], and fewer only
   *  when they are all there are. */
  effects(after: number, through: number, limit: number, applied: number): Effects[] {
    if (through <= after || limit <= 0) return [];
    if (applied < this.hi) this.reset(0);
    if (after < this.lo) return this.read(after, through, limit);
    if (after > this.hi) this.reset(after);
    if (through > this.hi) {
      const fresh = this.read(this.hi, through, limit);
      for (const row of fresh) {
        this.rows.push(row);
        this.bytes += rowBytes(row);
      }
      this.hi = fresh.length === limit ? fresh[fresh.length - 1]!.index : through;
      this.trim();
      if (after < this.lo) return this.read(after, through, limit);
    }
    // Rows in (after, min(through, hi)]: fewer than `limit` only when hi >= through, since a
    // short extension read everything up to `through`.
    const out: Effects[] = [];
    for (let i = this.firstAfter(after); i < this.rows.length && out.length < limit; i++) {
      const row = this.rows[i]!;
      if (row.index > through) break;
      out.push(row);
    }
    return out;
  }

  /** Drops every row. A node's state never goes back while it runs (a restore fills only an
   *  empty store, before the node starts), so nothing calls this but tests of a state that
   *  does; `applied` below the window (checked on each query) catches a dip seen meanwhile. */
  forget(): void {
    this.reset(0);
  }

  private reset(at: number): void {
    this.rows = [];
    this.bytes = 0;
    this.lo = this.hi = at;
  }

  private trim(): void {
    let cut = 0;
    while (cut < this.rows.length && (this.rows.length - cut > this.rowsMax || this.bytes > this.bytesMax)) this.bytes -= rowBytes(this.rows[cut++]!);
    if (cut === 0) return;
    this.lo = this.rows[cut - 1]!.index;
    this.rows = this.rows.slice(cut);
  }

  /** The position of the first row after `index`. */
  private firstAfter(index: number): number {
    let a = 0;
    let b = this.rows.length;
    while (a < b) {
      const m = (a + b) >>> 1;
      if (this.rows[m]!.index <= index) a = m + 1;
      else b = m;
    }
    return a;
  }
}

function rowBytes(row: Effects): number {
  let n = 64;
  for (const c of row.changes) {
    if (c.type === 'block') n += 48 + c.id.length + c.transform.length;
    else if (c.type === 'record') n += 64 + c.collection.length + String(c.pk).length + (c.record?.length ?? 0);
    else if (c.type === 'provider') n += 96 + c.key.byteLength + c.provider.length + (c.addrs?.reduce((a, x) => a + x.length, 0) ?? 0);
    else n += 48 + c.key.byteLength + (c.type === 'put' ? c.value.byteLength : 0);
  }
  return n;
}

/** Change events already written, per journal row, for each kind of stream that asked (its
 *  selector and encoding): streams alike send the same text, built once. Weak, so it lives
 *  as long as the window holds the row. */
const eventTexts = new WeakMap<Effects, Map<string, string | null>>();
/** Kinds of stream remembered per row, at most. */
const TEXTS_PER_ROW = 8;

/**
 * Runs the streams that have journal to send, round-robin, at most WATCH_TURN_BUDGET_MS of
 * them a turn (one per node: the HTTP API holds it).
 */
export class WatchScheduler {
  private readonly ready = new Set<WatchStream>();
  private scheduled = false;

  constructor(private readonly budgetMs = WATCH_TURN_BUDGET_MS) {}

  want(stream: WatchStream): void {
    this.ready.add(stream);
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => this.run());
  }

  private run(): void {
    this.scheduled = false;
    const started = performance.now();
    // A stream that wants more is added back at the end, behind the others.
    for (const stream of this.ready) {
      this.ready.delete(stream);
      stream.pump();
      if (performance.now() - started >= this.budgetMs) break;
    }
    if (this.ready.size > 0 && !this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.run());
    }
  }
}

export class WatchStream {
  private sent: number;
  private closed = false;
  private waitingDrain = false;
  private lastEventAt = Date.now();
  private readonly timers: ReturnType<typeof setInterval>[] = [];
  private stall: ReturnType<typeof setTimeout> | null = null;
  private unsubscribe: () => void = () => {};
  /** A read of the archive is under way (readCold). */
  private coldReading = false;
  /** Pages read from the archive, for metrics. */
  coldPages = 0;
  /** Events sent, for metrics. */
  events = 0;
  /** What makes two streams' events alike: selector, values and encoding (eventTexts). */
  private readonly kind: string;
  /** The block ids a `blocks=` stream selects, or null for a key or prefix stream. */
  private readonly blockIds: ReadonlySet<string> | null;

  constructor(
    private readonly source: WatchSource,
    private readonly spec: WatchSpec,
    private readonly res: ServerResponse,
    private readonly onClose: (stream: WatchStream) => void,
    private readonly scheduler: WatchScheduler = new WatchScheduler(),
    private readonly timing: WatchTiming = WATCH_TIMING,
  ) {
    this.sent = spec.after;
    const sel = spec.key !== null ? `k${Buffer.from(spec.key).toString('hex')}` : spec.prefix !== null ? `p${Buffer.from(spec.prefix).toString('hex')}`
      : spec.blocks ? `b${spec.blocks.join(',')}` : spec.collection != null ? `c${spec.collection}` : `v${Buffer.from(spec.providers!).toString('hex')}`;
    this.blockIds = spec.blocks ? new Set(spec.blocks) : null;
    this.kind = `${sel} ${spec.values ? spec.encoding : '-'}`;
  }

  /** Sends the headers and whatever the journal holds, then follows applies. */
  start(): void {
    const { res } = this;
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      'x-accel-buffering': 'no',
      'pangea-index': String(this.spec.after),
    });
    res.write('retry: 1000\n\n');
    res.once('close', () => this.close());
    this.unsubscribe = this.source.subscribe(() => this.schedule());
    this.timers.push(setInterval(() => this.waitingDrain || this.write(':\n\n'), this.timing.heartbeatMs));
    this.timers.push(setInterval(() => this.progress(), Math.max(100, Math.floor(this.spec.progressMs / 4))));
    for (const t of this.timers) t.unref();
    this.schedule();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.unsubscribe();
    for (const t of this.timers) clearInterval(t);
    if (this.stall !== null) clearTimeout(this.stall);
    if (!this.res.writableEnded) this.res.end();
    this.onClose(this);
  }

  private schedule(): void {
    if (this.closed || this.waitingDrain) return;
    this.scheduler.want(this);
  }

  /** Sends one journal page, unless the stream is level with the applied index or its socket
   *  is full, and asks its scheduler for another turn if more is waiting (WatchScheduler). */
  pump(): void {
    if (this.closed || this.waitingDrain) return;
    const applied = this.source.applied();
    if (this.sent >= applied) return;
    const floor = this.source.floor();
    if (this.sent < floor) {
      if (this.source.cold === undefined) {
        this.fail('history_unavailable', `this node's journal starts after index ${floor} and this node cannot read the archive: watch through a node that can`, floor);
      } else {
        this.readCold(floor);
      }
      return;
    }
    const rows = this.source.effects(this.sent, applied, PAGE_ROWS);
    const ok = this.send(rows);
    if (ok && rows.length < PAGE_ROWS) this.sent = applied; // nothing else changed up to it
    if (this.sent < this.source.applied()) this.schedule();
  }

  /** Whether the stream is reading the archive now (below the journal's floor). */
  get cold(): boolean {
    return this.coldReading || this.sent < this.source.floor();
  }

  /** One page from the archive; the stream goes on from where it ends (pump). */
  private readCold(floor: number): void {
    if (this.coldReading) return;
    this.coldReading = true;
    const after = this.sent;
    this.source.cold!(after, PAGE_ROWS).then(
      (got) => {
        this.coldReading = false;
        if (this.closed) return;
        if (got === 'busy') return this.fail('overloaded', 'this node\'s queue of archive reads is full: resume later, or through another node');
        if ('missing' in got) return this.fail('history_unavailable', got.missing, floor);
        this.coldPages++;
        if (this.send(got.rows)) this.sent = Math.max(this.sent, got.through);
        this.schedule();
      },
      (err: unknown) => {
        this.coldReading = false;
        if (!this.closed) this.fail('archive_unavailable', `reading the archive failed (${(err as Error).message}): resume later`);
      },
    );
  }

  /** Writes the matching changes of `rows`, moving `sent` past each; false once the socket
   *  is full (the rest is read again after `drain`). */
  private send(rows: readonly Effects[]): boolean {
    // One write to the socket for the page, not one per event.
    this.res.cork();
    try {
      for (const row of rows) {
        if (row.index <= this.sent) continue;
        const text = this.eventText(row);
        let ok = true;
        if (text !== null) {
          ok = this.write(text);
          this.events++;
          this.lastEventAt = Date.now();
        }
        this.sent = row.index;
        if (!ok) return false;
      }
      return true;
    } finally {
      this.res.uncork();
    }
  }

  /** The change event of `row` for this stream, or null when nothing in it matches; built
   *  once for streams alike (eventTexts). */
  private eventText(row: Effects): string | null {
    let texts = eventTexts.get(row);
    const known = texts?.get(this.kind);
    if (known !== undefined) return known;
    const changes = row.changes.filter((c) => this.matches(c));
    const text = changes.length === 0 ? null : this.changeEvent(row.index, changes);
    if (texts === undefined) eventTexts.set(row, (texts = new Map()));
    if (texts.size < TEXTS_PER_ROW) texts.set(this.kind, text);
    return text;
  }

  private matches(c: Change): boolean {
    if (c.type === 'block') return this.blockIds?.has(c.id) ?? false;
    if (c.type === 'provider') return this.spec.providers != null && Buffer.compare(c.key, this.spec.providers) === 0;
    if (c.type === 'record') return this.spec.collection === c.collection;
    if (this.blockIds !== null || this.spec.providers != null || this.spec.collection != null) return false;
    const key = c.key;
    const { key: k, prefix } = this.spec;
    if (k !== null) return Buffer.compare(key, k) === 0;
    if (key.byteLength < prefix!.byteLength) return false;
    return Buffer.compare(key.subarray(0, prefix!.byteLength), prefix!) === 0;
  }

  private changeEvent(index: number, changes: readonly Change[]): string {
    const out = changes.map((c) => {
      if (c.type === 'block') return { type: 'block', id: c.id, revision: index, transform: JSON.parse(c.transform) as unknown };
      if (c.type === 'record') {
        return c.record === undefined ? { type: 'delete', collection: c.collection, pk: c.pk } : { type: 'put', collection: c.collection, pk: c.pk, record: JSON.parse(c.record) as unknown, revision: index };
      }
      if (c.type === 'provider') {
        const pk = Buffer.from(c.key.buffer, c.key.byteOffset, c.key.byteLength).toString('utf8');
        return c.cause === undefined ? { type: 'provider', op: 'put', key: pk, provider: c.provider, addrs: c.addrs, lease: String(c.lease), revision: index } : { type: 'provider', op: 'delete', key: pk, provider: c.provider, cause: c.cause };
      }
      const key = Buffer.from(c.key.buffer, c.key.byteOffset, c.key.byteLength).toString('utf8');
      if (c.type === 'delete') return { type: 'delete', key, cause: c.cause };
      const lease = c.lease === undefined ? {} : { lease: String(c.lease) };
      if (!this.spec.values) return { type: 'put', key, revision: index, ...lease };
      // A value that is not UTF-8 cannot go as text: it goes as base64 and says so.
      if (this.spec.encoding === 'utf8' && !isUtf8(c.value)) return { type: 'put', key, value: encodeValue(c.value, 'base64'), encoding: 'base64', revision: index, ...lease };
      return { type: 'put', key, value: encodeValue(c.value, this.spec.encoding), revision: index, ...lease };
    });
    return `id: ${index}\nevent: change\ndata: ${JSON.stringify({ index, changes: out })}\n\n`;
  }

  /** After `progressMs` without a change event: every change up to `sent` has been sent. */
  private progress(): void {
    if (this.closed || this.waitingDrain || Date.now() - this.lastEventAt < this.spec.progressMs) return;
    this.lastEventAt = Date.now();
    this.write(`id: ${this.sent}\nevent: progress\ndata: ${JSON.stringify({ index: this.sent })}\n\n`);
  }

  /** An `error` event, then the stream ends. */
  fail(code: string, message: string, floor?: number): void {
    this.write(`event: error\ndata: ${JSON.stringify({ code, message, resumeAfter: this.sent, ...(floor === undefined ? {} : { floor }) })}\n\n`);
    this.close();
  }

  /** Writes; false when the socket is full (the stream then waits for `drain`, and closes
   *  the connection if that takes longer than `stallMs`). */
  private write(text: string): boolean {
    if (this.closed || this.res.writableEnded) return false;
    if (this.res.write(text)) return true;
    if (!this.waitingDrain) {
      this.waitingDrain = true;
      this.stall = setTimeout(() => this.res.destroy(new Error('watcher stalled')), this.timing.stallMs);
      this.stall.unref();
      this.res.once('drain', () => {
        this.waitingDrain = false;
        if (this.stall !== null) clearTimeout(this.stall);
        this.stall = null;
        this.schedule();
      });
    }
    return false;
  }
}
