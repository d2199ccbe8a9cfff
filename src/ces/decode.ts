/**
 * Decoding: any subset of an object's shards in, plaintext out, one stripe at a time.
 *
 * A shard that is missing, unreadable, truncated, of another object, or whose header is bad
 * is left out; a piece whose record head or checksum is bad is an erasure for its stripe only.
 * With at least `k` good pieces a stripe is rebuilt (Reed-Solomon), authenticated and
 * decrypted (failure is a hard `auth_failed`), and decompressed; with fewer, decoding throws
 * `not_enough_shards` naming the stripe and what was wrong with each shard.
 *
 * Streaming contract: stripes are yielded as soon as they are authenticated, so a consumer
 * has the whole object only when iteration ends without an error; on error it must discard
 * what it received (the CLI writes to a temporary file and renames on success).
 *
 * Framing: every shard of an object stores the same record head for a stripe (all but the
 * checksum), and its piece length. The decoder reads the heads, takes the most common
 * plausible one as a candidate, reads that many piece bytes from every shard and accepts the
 * candidate once a piece under it passes its checksum (else it puts the bytes back and tries
 * the next candidate). Corrupt bytes therefore never shift the framing of a shard.
 */
import { CesError, assert, type CesErrorCode } from './errors.js';
import { bufferSource, ByteReader, type ShardSource } from './io.js';
import { associatedData, headerBytes, labelHash, nonceBytes, objectIdentity, parseHeader, parseRecordHead,
  parseTrailer, pieceBytesMax, pieceChecksum, recordBytes, recordCoveredBytes, trailerBytes,
  type RecordHead, type ShardHeader } from './format.js';
import type { CesKey, KeyRing } from './keys.js';
import { Erasure } from './erasure.js';
import { open } from './cipher.js';
import { StripeDecompressor } from './compress.js';

export interface DecodeOptions {
  /** Names of the sources in messages and reports (e.g. file names); default `source <i>`. */
  names?: readonly string[];
}

/** What a verification found about one shard or source. */
export interface ShardReport {
  /** The source's name, or `shard <i>` for a shard no source provided. */
  name: string;
  /** From the shard's header; undefined if it was unreadable. */
  shardIndex: number | undefined;
  /**
   * good: no problem found (every piece and the trailer were checked if the object is
   * rebuildable). bad: some piece, its framing or the trailer is bad. rejected: not usable.
   */
  status: 'good' | 'bad' | 'missing' | 'rejected';
  /** The first few problems found, in order. */
  problems: string[];
}

export interface VerifyReport {
  /** Whether decoding succeeds with these shards. */
  rebuildable: boolean;
  /** Why not, if not. */
  error: CesError | undefined;
  dataShards: number | undefined;
  parityShards: number | undefined;
  /** Stripes decoded (all of them if rebuildable). */
  stripeCount: number;
  totalBytes: number;
  goodShards: number;
  /** Shards `0 .. k+m-1` in order, then sources not belonging to the object. */
  shards: ShardReport[];
}

/** Problems remembered per shard, to bound memory on a badly damaged object. */
const problemsMax = 8;

/** What became of one source. */
class Slot {
  reader: ByteReader | undefined;
  header: ShardHeader | undefined;
  live = false;
  rejection: { code: CesErrorCode | 'missing' | 'duplicate'; reason: string } | undefined;
  problems: string[] = [];
  problemCount = 0;
  // This stripe:
  headBytes: Uint8Array | undefined;
  head: RecordHead | undefined;
  headKey: string | undefined;
  got = 0;
  pieceOffset = 0;
  pieceOk: boolean | undefined;

  constructor(
    readonly name: string,
    readonly source: ShardSource | undefined,
  ) {}

  note(problem: string): void {
    this.problemCount++;
    if (this.problems.length < problemsMax) this.problems.push(problem);
  }
  kill(reason: string): void {
    this.live = false;
    this.note(reason);
  }
  reject(code: CesErrorCode | 'missing' | 'duplicate', reason: string): void {
    this.live = false;
    this.rejection = { code, reason };
  }
  label(): string {
    return this.header ? `${this.name} (shard ${this.header.shardIndex})` : this.name;
  }
}

function hex(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.length).toString('hex');
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Precedence of header-level causes when no shard at all is usable. */
const rejectionPrecedence: CesErrorCode[] = ['unsupported_version', 'wrong_label', 'foreign_shard', 'bad_header'];

class ObjectDecoder {
  readonly slots: Slot[];
  header: ShardHeader | undefined;
  private key: CesKey | undefined;
  private byIndex: (Slot | undefined)[] = [];
  private data = Buffer.alloc(0);
  private parity = Buffer.alloc(0);
  private erasure: Erasure | undefined;
  private readonly decompressor = new StripeDecompressor();
  stripeIndex = 0;
  totalBytes = 0;
  done = false;
  private prevNonce: Uint8Array = new Uint8Array(nonceBytes);

  constructor(
    sources: readonly (ShardSource | undefined)[],
    private readonly keyRing: KeyRing,
    private readonly expectedLabelHash: Uint8Array | undefined,
    names: readonly string[] | undefined,
  ) {
    this.slots = sources.map((s, i) => new Slot(names?.[i] ?? `source ${i}`, s));
  }

  get k(): number {
    return this.header!.dataShards;
  }
  get n(): number {
    return this.header!.dataShards + this.header!.parityShards;
  }

  /** Reads and checks the headers, picks the object and its key. Throws CesError. */
  async start(): Promise<void> {
    await Promise.all(this.slots.map((s) => this.readHeader(s)));
    const groups = new Map<string, Slot[]>();
    for (const s of this.slots) {
      if (!s.header) continue;
      const id = objectIdentity(s.header);
      groups.set(id, [...(groups.get(id) ?? []), s]);
    }
    const ordered = [...groups.values()].sort((a, b) => b.length - a.length);
    const chosen = ordered[0];
    if (chosen === undefined) throw this.noUsableShard();
    if (ordered[1] !== undefined && ordered[1].length === chosen.length) {
      throw new CesError('foreign_shard', `the shards belong to ${ordered.length} different objects and none has a majority: ` +
        ordered.map((g) => g.map((s) => s.label()).join(', ')).map((g) => `[${g}]`).join(' vs '));
    }
    for (const g of ordered.slice(1)) {
      for (const s of g) s.reject('foreign_shard', `belongs to another object than ${chosen[0]!.label()} (different object id or parameters)`);
    }
    this.header = chosen[0]!.header!;
    this.byIndex = new Array<Slot | undefined>(this.n).fill(undefined);
    for (const s of chosen) {
      const i = s.header!.shardIndex;
      if (this.byIndex[i] !== undefined) s.reject('duplicate', `a second copy of shard ${i}; ignored`);
      else {
        this.byIndex[i] = s;
        s.live = true;
      }
    }
    const present = this.byIndex.filter((s) => s !== undefined).length;
    if (present < this.k) {
      const foreign = this.slots.some((s) => s.rejection?.code === 'foreign_shard' || s.rejection?.code === 'wrong_label');
      throw new CesError(foreign ? 'foreign_shard' : 'not_enough_shards',
        `${present} usable shards of the object, need k = ${this.k}: ${this.describeShards()}`);
    }
    const keyId = hex(this.header.keyId);
    this.key = this.keyRing.get(keyId);
    if (this.key === undefined) {
      const ids = this.keyRing.ids();
      throw new CesError('wrong_key', `the shards were encoded with key id ${keyId}; the key ring holds ${ids.length ? ids.join(', ') : 'no keys'}`);
    }
    // Unzeroed: every byte used is either read from a shard or rebuilt, and pages that are
    // never written cost no memory, so a header claiming huge stripes costs nothing by itself.
    const pieceMax = pieceBytesMax(this.header.stripeBytes, this.k);
    this.data = Buffer.allocUnsafeSlow(this.k * pieceMax);
    this.parity = Buffer.allocUnsafeSlow(Math.max(1, this.header.parityShards) * pieceMax);
    this.erasure = new Erasure(this.k, this.header.parityShards);
  }

  private async readHeader(s: Slot): Promise<void> {
    if (s.source === undefined) return s.reject('missing', 'missing');
    s.reader = new ByteReader(s.source);
    let bytes: Uint8Array;
    try {
      bytes = await s.reader.read(headerBytes);
    } catch (e) {
      return s.reject('missing', `unreadable: ${errorText(e)}`);
    }
    const r = parseHeader(bytes);
    if (!r.ok) return s.reject(r.code, r.reason);
    if (this.expectedLabelHash && !Buffer.from(r.header.labelHash).equals(this.expectedLabelHash)) {
      return s.reject('wrong_label', 'encoded under another label than the one given');
    }
    s.header = r.header;
  }

  private noUsableShard(): CesError {
    const given = this.slots.filter((s) => s.source !== undefined);
    if (given.length === 0) return new CesError('not_enough_shards', 'no shards given');
    const codes = new Set(given.map((s) => s.rejection?.code));
    const code = rejectionPrecedence.find((c) => codes.has(c)) ?? 'not_enough_shards';
    return new CesError(code, `no usable shard: ${given.map((s) => `${s.label()}: ${s.rejection?.reason}`).join('; ')}`);
  }

  /** Every shard index's state, then rejected sources, for messages. */
  private describeShards(stripeNotes?: Map<Slot, string>): string {
    const parts: string[] = [];
    for (let i = 0; i < this.n; i++) {
      const s = this.byIndex[i];
      if (s === undefined) parts.push(`shard ${i} missing`);
      else if (!s.live) parts.push(`${s.label()} ${s.problems[s.problems.length - 1] ?? 'unusable'}`);
      else if (stripeNotes?.has(s)) parts.push(`${s.label()} ${stripeNotes.get(s)}`);
    }
    for (const s of this.slots) {
      if (s.rejection && s.rejection.code !== 'missing') parts.push(`${s.label()} rejected: ${s.rejection.reason}`);
      else if (s.rejection && s.source !== undefined) parts.push(`${s.label()} ${s.rejection.reason}`);
    }
    return parts.join('; ');
  }

  private regionOffset(s: Slot, pieceBytes: number): { buf: Buffer; off: number } {
    const i = s.header!.shardIndex;
    return i < this.k ? { buf: this.data, off: i * pieceBytes } : { buf: this.parity, off: (i - this.k) * pieceBytes };
  }

  /** Positions every slot's piece under `pieceBytes`, putting back bytes read under another length. */
  private async frame(slots: Slot[], pieceBytes: number, prevPieceBytes: number): Promise<void> {
    for (const s of slots) {
      if (s.got > 0) {
        const { buf, off } = this.regionOffset(s, prevPieceBytes);
        s.reader!.unread(buf.subarray(off, off + s.got));
      }
      s.got = 0;
      s.pieceOk = undefined;
    }
    await Promise.all(
      slots.map(async (s) => {
        const { buf, off } = this.regionOffset(s, pieceBytes);
        s.pieceOffset = off;
        try {
          s.got = await s.reader!.readInto(buf, off, pieceBytes);
        } catch (e) {
          s.got = -1;
          s.kill(`unreadable in stripe ${this.stripeIndex}: ${errorText(e)}`);
        }
      }),
    );
  }

  private checkPiece(s: Slot, pieceBytes: number): boolean {
    if (s.pieceOk === undefined) {
      const { buf, off } = this.regionOffset(s, pieceBytes);
      s.pieceOk = s.got === pieceBytes && s.head !== undefined &&
        Buffer.from(pieceChecksum(s.header!.bytes, s.headBytes!, buf.subarray(off, off + pieceBytes))).equals(s.head.checksum);
    }
    return s.pieceOk;
  }

  /** Decodes the next stripe; undefined once the last stripe has been returned. Throws CesError. */
  async nextStripe(): Promise<Buffer | undefined> {
    if (this.done) return undefined;
    assert(this.header !== undefined && this.key !== undefined && this.erasure !== undefined, 'started');
    const j = this.stripeIndex;
    const header = this.header;
    const k = this.k;
    await Promise.all(this.liveSlots().map((s) => this.readHead(s, j)));
    const readers = this.liveSlots();
    const candidates = new Map<string, Slot[]>();
    for (const s of readers) if (s.headKey !== undefined) candidates.set(s.headKey, [...(candidates.get(s.headKey) ?? []), s]);
    const ordered = [...candidates.values()].sort((a, b) => b.length - a.length || a[0]!.header!.shardIndex - b[0]!.header!.shardIndex);
    const notes = new Map<Slot, string>();
    for (const s of readers) if (s.headKey === undefined) notes.set(s, `bad record head in stripe ${j}`);
    let pieceBytes = 0;
    let accepted: Slot[] | undefined;
    for (const cand of ordered) {
      const p = cand[0]!.head!.pieceBytes;
      if (p !== pieceBytes) {
        await this.frame(readers, p, pieceBytes);
        pieceBytes = p;
      }
      if (cand.some((s) => this.checkPiece(s, p))) {
        accepted = cand;
        break;
      }
    }
    if (accepted === undefined) {
      for (const s of readers) if (s.live) s.note(`stripe ${j}: no good piece`);
      throw new CesError('not_enough_shards', `stripe ${j}: no shard has a good piece, need ${k}: ${this.describeShards(notes)}`);
    }
    // Shards of two objects that share stripe 0 but differ later: keep the majority.
    const rivals = ordered.filter((c) => c[0]!.head!.pieceBytes === pieceBytes)
      .map((c) => ({ c, valid: c.filter((s) => this.checkPiece(s, pieceBytes)) }))
      .filter((r) => r.valid.length > 0)
      .sort((a, b) => b.valid.length - a.valid.length);
    if (rivals.length > 1) {
      if (rivals[0]!.valid.length === rivals[1]!.valid.length) {
        throw new CesError('foreign_shard', `stripe ${j}: shards hold different content for the same object and none has a majority: ` +
          rivals.map((r) => `[${r.valid.map((s) => s.label()).join(', ')}]`).join(' vs '));
      }
      accepted = rivals[0]!.c;
      for (const r of rivals.slice(1)) for (const s of r.valid) s.kill(`holds another object's content from stripe ${j} on`);
    }
    const head = accepted[0]!.head!;
    const good: Slot[] = [];
    for (const s of readers) {
      if (!s.live) continue;
      if (s.got !== pieceBytes) s.kill(`truncated in stripe ${j}`);
      else if (s.headKey !== accepted[0]!.headKey) {
        if (!notes.has(s)) notes.set(s, `record head of stripe ${j} differs from the other shards`);
        s.note(notes.get(s)!);
      } else if (!this.checkPiece(s, pieceBytes)) {
        notes.set(s, `checksum mismatch in stripe ${j}`);
        s.note(notes.get(s)!);
      } else good.push(s);
    }
    if (good.length < k) {
      throw new CesError('not_enough_shards', `stripe ${j}: ${good.length} good pieces, need k = ${k}: ${this.describeShards(notes)}`);
    }
    let present = 0;
    for (const s of good) present |= 1 << s.header!.shardIndex;
    await this.erasure.rebuild(this.data, this.parity, pieceBytes, present);
    const ad = associatedData({
      labelHash: header.labelHash,
      stripeBytes: header.stripeBytes,
      stripeIndex: j,
      plaintextBytes: head.plaintextBytes,
      last: head.last,
      prevNonce: this.prevNonce,
    });
    if (j === 0 && !Buffer.from(head.nonce).equals(header.objectId)) {
      throw new CesError('auth_failed', 'stripe 0: nonce does not match the object id in the headers');
    }
    const frame = open(this.key.cipherKey, head.nonce, ad, this.data.subarray(0, head.ciphertextBytes));
    if (frame === undefined) {
      throw new CesError('auth_failed', `stripe ${j}: authentication failed with key id ${this.key.idHex}: ` +
        'the shards were altered (consistently with their checksums) or another key has the same id');
    }
    const out = Buffer.allocUnsafe(head.plaintextBytes);
    const got = this.decompressor.decompress(out, frame);
    if (got !== head.plaintextBytes) {
      throw new CesError('corrupt', `stripe ${j}: authenticated but decompresses to ${got ?? 'nothing'} bytes, not ${head.plaintextBytes}`);
    }
    this.prevNonce = Uint8Array.from(head.nonce);
    this.totalBytes += head.plaintextBytes;
    this.stripeIndex++;
    if (head.last) {
      this.done = true;
      await this.checkTrailers();
    }
    return out;
  }

  private liveSlots(): Slot[] {
    return this.byIndex.filter((s): s is Slot => s !== undefined && s.live);
  }

  private async readHead(s: Slot, j: number): Promise<void> {
    s.head = undefined;
    s.headKey = undefined;
    s.headBytes = undefined;
    s.got = 0;
    s.pieceOk = undefined;
    let b: Uint8Array;
    try {
      b = await s.reader!.read(recordBytes);
    } catch (e) {
      return s.kill(`unreadable in stripe ${j}: ${errorText(e)}`);
    }
    if (b.length < recordBytes) return s.kill(b.length === 0 ? `ends before stripe ${j} (truncated)` : `truncated in stripe ${j}`);
    s.headBytes = b;
    const head = parseRecordHead(b, s.header!);
    if (head !== undefined && head.stripeIndex === j) {
      s.head = head;
      s.headKey = hex(b.subarray(0, recordCoveredBytes));
    }
  }

  /** Checks each live shard's trailer and that nothing follows it; problems are reported, not thrown. */
  private async checkTrailers(): Promise<void> {
    await Promise.all(
      this.liveSlots().map(async (s) => {
        try {
          const b = await s.reader!.read(trailerBytes);
          const t = b.length === trailerBytes ? parseTrailer(s.header!.bytes, b) : undefined;
          if (t === undefined) return s.note(b.length < trailerBytes ? 'trailer missing (truncated)' : 'bad trailer');
          if (t.stripeCount !== this.stripeIndex || t.totalBytes !== this.totalBytes || !Buffer.from(t.lastNonce).equals(this.prevNonce)) {
            return s.note('trailer does not match the stripes');
          }
          if (!(await s.reader!.atEnd())) s.note('bytes after the trailer');
        } catch (e) {
          s.kill(`unreadable trailer: ${errorText(e)}`);
        }
      }),
    );
  }

  async close(): Promise<void> {
    await Promise.all(this.slots.map((s) => s.reader?.close().catch(() => undefined)));
  }

  report(error: CesError | undefined): VerifyReport {
    const shards: ShardReport[] = [];
    if (this.header) {
      for (let i = 0; i < this.n; i++) {
        const s = this.byIndex[i];
        if (s === undefined) shards.push({ name: `shard ${i}`, shardIndex: i, status: 'missing', problems: [] });
        else {
          const problems = [...s.problems];
          if (s.problemCount > s.problems.length) problems.push(`and ${s.problemCount - s.problems.length} more problems`);
          const ok = s.live && s.problemCount === 0;
          shards.push({ name: s.name, shardIndex: i, status: ok ? 'good' : 'bad', problems });
        }
      }
    }
    for (const s of this.slots) {
      if (s.rejection === undefined || s.source === undefined) continue;
      shards.push({ name: s.name, shardIndex: s.header?.shardIndex, status: 'rejected', problems: [s.rejection.reason] });
    }
    return {
      rebuildable: error === undefined && this.done,
      error,
      dataShards: this.header?.dataShards,
      parityShards: this.header?.parityShards,
      stripeCount: this.stripeIndex,
      totalBytes: this.totalBytes,
      goodShards: shards.filter((s) => s.status === 'good').length,
      shards,
    };
  }
}

/**
 * Decodes an object from any subset of its shards (array order does not matter: each
 * header names its shard; `undefined` entries are missing shards). `label` must be the one
 * given to the encoder. Yields the plaintext in order; throws CesError (see errors.ts).
 */
export async function* decodeShards(
  sources: readonly (ShardSource | undefined)[],
  keyRing: KeyRing,
  label: string,
  options: DecodeOptions = {},
): AsyncGenerator<Buffer, void, undefined> {
  const dec = new ObjectDecoder(sources, keyRing, labelHash(label), options.names);
  try {
    await dec.start();
    for (;;) {
      const out = await dec.nextStripe();
      if (out === undefined) return;
      if (out.length > 0) yield out;
    }
  } finally {
    await dec.close();
  }
}

/** Decodes shards held in memory (`undefined` for missing ones) into one buffer. */
export async function decodeBuffers(
  shards: readonly (Uint8Array | undefined)[],
  keyRing: KeyRing,
  label: string,
): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of decodeShards(shards.map((s) => (s === undefined ? undefined : bufferSource(s))), keyRing, label)) chunks.push(c);
  return Buffer.concat(chunks);
}

/**
 * Reads every shard through and reports which are good, which are bad and why, and whether
 * the object can be rebuilt (every stripe rebuilt, authenticated and decompressed). Without
 * `label`, accepts the label recorded in the shards. Never throws on bad shards.
 */
export async function verifyShards(
  sources: readonly (ShardSource | undefined)[],
  keyRing: KeyRing,
  label?: string,
  options: DecodeOptions = {},
): Promise<VerifyReport> {
  const dec = new ObjectDecoder(sources, keyRing, label === undefined ? undefined : labelHash(label), options.names);
  let error: CesError | undefined;
  try {
    await dec.start();
    while ((await dec.nextStripe()) !== undefined) {
      // Plaintext is dropped; only its authentication matters here.
    }
  } catch (e) {
    if (!(e instanceof CesError)) throw e;
    error = e;
  } finally {
    await dec.close();
  }
  return dec.report(error);
}
