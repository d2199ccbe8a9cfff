/**
 * The `file:///abs/path` backend: a directory whose files are the objects, a key's `/`
 * separators being directory levels (created on demand, the root included).
 *
 * `putIfAbsent` writes the body to a temp file under `<root>/~tmp/`, flushes it, and
 * hard-links it into place: `link()` refuses an existing name, so exactly one of several
 * racing writers (processes or hosts sharing the directory) creates the object, and a reader
 * sees either no file or the whole body. `~tmp` is not a valid key segment, so temp files
 * never collide with keys and `list` never reports them; one left by a crash is inert and
 * may be removed once no write is under way.
 */
import { randomBytes } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import { link, mkdir, open, readdir, readFile, stat, unlink } from 'node:fs/promises';
import { dirname, isAbsolute, join, relative, sep } from 'node:path';
import { pathToFileURL } from 'node:url';
import { syncDir } from '../durable-file.js';
import { checkKey, type ObjectInfo, type ObjectStore, ObjectStoreError } from './store.js';

/** Directory under the root holding temp files while they are written. */
const TEMP_DIR = '~tmp';
/** A directory or file name `list` reports: a valid key segment (`~tmp` is not one). */
const KEY_SEGMENT = /^[A-Za-z0-9._-]+$/;

function errno(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException | null)?.code;
}

export class FileObjectStore implements ObjectStore {
  /** `root`: the absolute directory path; `url`: how to name it in messages (default its file URL). */
  constructor(
    readonly root: string,
    readonly url: string = pathToFileURL(root).href,
  ) {
    if (!isAbsolute(root)) throw new ObjectStoreError('bad_url', `object store directory "${root}" is not an absolute path`);
  }

  async putIfAbsent(key: string, body: Uint8Array): Promise<'created' | 'exists'> {
    const path = this.path(key);
    const tempDir = join(this.root, TEMP_DIR);
    const temp = join(tempDir, `${process.pid}-${randomBytes(8).toString('hex')}`);
    try {
      await this.makeDirs(dirname(path), key);
      await mkdir(tempDir, { recursive: true });
      const fh = await open(temp, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL, 0o644);
      try {
        await fh.writeFile(body);
        await fh.sync();
      } finally {
        await fh.close();
      }
      try {
        await link(temp, path);
      } catch (e) {
        if (errno(e) !== 'EEXIST') throw e;
        if ((await stat(path)).isFile()) return 'exists';
        throw new ObjectStoreError('bad_key', `object key "${key}" names a directory of other keys in ${this.url}`);
      }
      await syncDir(dirname(path));
      return 'created';
    } catch (e) {
      throw this.failure('put', key, e);
    } finally {
      await unlink(temp).catch(() => {});
    }
  }

  async get(key: string): Promise<Uint8Array> {
    const path = this.path(key);
    try {
      return await readFile(path);
    } catch (e) {
      if (isAbsence(e) || errno(e) === 'EISDIR') throw new ObjectStoreError('not_found', `no object "${key}" in ${this.url}`, { cause: e });
      throw this.failure('get', key, e);
    }
  }

  async head(key: string): Promise<{ size: number } | null> {
    const path = this.path(key);
    try {
      const s = await stat(path);
      return s.isFile() ? { size: s.size } : null;
    } catch (e) {
      if (isAbsence(e)) return null;
      throw this.failure('head', key, e);
    }
  }

  /** Keys are reported only when every segment is a valid key segment: stray files are skipped. */
  async list(prefix: string): Promise<ObjectInfo[]> {
    const out: ObjectInfo[] = [];
    const walk = async (dir: string, rel: string): Promise<void> => {
      let names: string[];
      try {
        names = await readdir(dir);
      } catch (e) {
        if (isAbsence(e)) return; // the root before the first put, or a directory removed meanwhile
        throw e;
      }
      for (const name of names) {
        if (!KEY_SEGMENT.test(name)) continue;
        const key = rel + name;
        const mayMatch = key.startsWith(prefix) || prefix.startsWith(`${key}/`);
        if (!mayMatch) continue;
        let s;
        try {
          s = await stat(join(dir, name));
        } catch (e) {
          if (isAbsence(e)) continue;
          throw e;
        }
        if (s.isDirectory()) await walk(join(dir, name), `${key}/`);
        else if (s.isFile() && key.startsWith(prefix)) out.push({ key, size: s.size });
      }
    };
    try {
      await walk(this.root, '');
    } catch (e) {
      throw this.failure('list', prefix, e);
    }
    return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  async delete(key: string): Promise<void> {
    const path = this.path(key);
    try {
      await unlink(path);
    } catch (e) {
      if (isAbsence(e) || errno(e) === 'EISDIR') return; // a directory is no object
      throw this.failure('delete', key, e);
    }
  }

  async close(): Promise<void> {}

  private path(key: string): string {
    checkKey(key);
    return join(this.root, ...key.split('/'));
  }

  /**
   * Creates `dir` and its missing parents, then flushes the directories holding the new
   * entries (all but `dir` itself, which the caller flushes after linking into it) so they
   * survive a crash along with the object.
   */
  private async makeDirs(dir: string, key: string): Promise<void> {
    let first: string | undefined;
    try {
      first = await mkdir(dir, { recursive: true });
    } catch (e) {
      if (errno(e) === 'ENOTDIR' || errno(e) === 'EEXIST') {
        throw new ObjectStoreError('bad_key', `object key "${key}" runs through an object in ${this.url}`, { cause: e });
      }
      throw e;
    }
    if (first === undefined) return;
    let d = dirname(first);
    await syncDir(d);
    for (const part of relative(d, dir).split(sep).slice(0, -1)) {
      d = join(d, part);
      await syncDir(d);
    }
  }

  private failure(op: string, key: string, e: unknown): ObjectStoreError {
    if (e instanceof ObjectStoreError) return e;
    return new ObjectStoreError('unavailable', `${op} "${key}" in ${this.url} failed: ${(e as Error).message}`, { cause: e });
  }
}

/** ENOENT, or ENOTDIR when a key runs through a file: no such object either way. */
function isAbsence(e: unknown): boolean {
  return errno(e) === 'ENOENT' || errno(e) === 'ENOTDIR';
}
