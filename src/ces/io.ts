/**
 * Where shards go and come from. The archive implements these for S3; files and memory are here.
 */
import { createReadStream } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';

/**
 * Where one shard is written, in order. The encoder never has two writes outstanding on one
 * sink (it awaits each), but writes to different sinks concurrently. `buf` is valid only until
 * the returned promise settles: a sink that keeps the bytes must copy them.
 */
export interface ShardSink {
  write(buf: Uint8Array): Promise<void>;
}

/**
 * One shard, read front to back as chunks of any size (a file stream, an HTTP body...). A
 * source must not reuse or modify a chunk after yielding it: the decoder may keep views of it.
 */
export type ShardSource = AsyncIterable<Uint8Array>;

/** A shard held in memory; for small objects and tests. */
export class MemorySink implements ShardSink {
  private readonly chunks: Uint8Array[] = [];
  async write(buf: Uint8Array): Promise<void> {
    this.chunks.push(Uint8Array.from(buf));
  }
  bytes(): Buffer {
    return Buffer.concat(this.chunks);
  }
}

/** A shard written to a file; call `close()` when encoding is done (or failed). */
export class FileSink implements ShardSink {
  private constructor(private readonly handle: FileHandle) {}
  static async create(path: string): Promise<FileSink> {
    return new FileSink(await open(path, 'w', 0o644));
  }
  async write(buf: Uint8Array): Promise<void> {
    let done = 0;
    while (done < buf.length) {
      const { bytesWritten } = await this.handle.write(buf, done, buf.length - done);
      done += bytesWritten;
    }
  }
  close(): Promise<void> {
    return this.handle.close();
  }
}

/** Reads chunk sizes for files: large enough to amortise calls, small against the stripe. */
export const fileChunkBytes = 1024 * 1024;

export function fileSource(path: string): ShardSource {
  return createReadStream(path, { highWaterMark: fileChunkBytes });
}

/** A source that yields `bytes` in one chunk. */
export function bufferSource(bytes: Uint8Array): ShardSource {
  return {
    async *[Symbol.asyncIterator]() {
      if (bytes.length > 0) yield bytes;
    },
  };
}

const empty = new Uint8Array(0);

/**
 * Exact-length reads over a chunk stream, with push-back. Returned views may alias the
 * source's chunks, which must not be reused by the source after being yielded.
 */
export class ByteReader {
  private chunk: Uint8Array = empty;
  private pos = 0;
  private ended = false;
  private readonly it: AsyncIterator<Uint8Array>;
  /** Stream offset of the next byte `read` returns. */
  offset = 0;

  constructor(source: ShardSource) {
    this.it = source[Symbol.asyncIterator]();
  }

  /** Makes a chunk available; false at the end of the stream. */
  private async fill(): Promise<boolean> {
    while (this.pos >= this.chunk.length) {
      if (this.ended) return false;
      const r = await this.it.next();
      if (r.done) {
        this.ended = true;
        return false;
      }
      this.chunk = r.value;
      this.pos = 0;
    }
    return true;
  }

  /** The next `n` bytes, or fewer if the stream ends first. */
  async read(n: number): Promise<Uint8Array> {
    if (!(await this.fill())) return empty;
    if (this.chunk.length - this.pos >= n) {
      const out = this.chunk.subarray(this.pos, this.pos + n);
      this.pos += n;
      this.offset += n;
      return out;
    }
    const out = new Uint8Array(n);
    const got = await this.readInto(out, 0, n);
    return got === n ? out : out.subarray(0, got);
  }

  /** Copies the next `n` bytes to `dst[off..]`; returns how many there were (< n at the end). */
  async readInto(dst: Uint8Array, off: number, n: number): Promise<number> {
    let got = 0;
    while (got < n && (await this.fill())) {
      const take = Math.min(n - got, this.chunk.length - this.pos);
      dst.set(this.chunk.subarray(this.pos, this.pos + take), off + got);
      this.pos += take;
      got += take;
    }
    this.offset += got;
    return got;
  }

  /** Skips `n` bytes; returns how many there were. */
  async skip(n: number): Promise<number> {
    let got = 0;
    while (got < n && (await this.fill())) {
      const take = Math.min(n - got, this.chunk.length - this.pos);
      this.pos += take;
      got += take;
    }
    this.offset += got;
    return got;
  }

  /** Puts `bytes` back in front of the stream (bytes just read, so offsets stay right). */
  unread(bytes: Uint8Array): void {
    if (bytes.length === 0) return;
    const rest = this.chunk.subarray(this.pos);
    const merged = new Uint8Array(bytes.length + rest.length);
    merged.set(bytes, 0);
    merged.set(rest, bytes.length);
    this.chunk = merged;
    this.pos = 0;
    this.offset -= bytes.length;
  }

  async atEnd(): Promise<boolean> {
    return !(await this.fill());
  }

  /** Releases the source (closes a file stream) without reading the rest. */
  async close(): Promise<void> {
    this.ended = true;
    this.chunk = empty;
    this.pos = 0;
    await this.it.return?.();
  }
}
