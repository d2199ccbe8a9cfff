/**
 * Keys. A key is 32 random bytes; its id is derived from it (the first 8 bytes of
 * HMAC-SHA256(key, "pangea-ces/1 key id")), so any key file names its own id and a shard's
 * header names the key that opens it. Decoding picks the key by id from a {@link KeyRing},
 * so keys can rotate: keep old keys in the ring for as long as objects encoded under them live.
 *
 * Key file: either exactly 32 raw bytes, or text holding 64 hex digits, with `#` comment lines.
 * `pangea ces keygen` writes `# pangea ces key id <16 hex digits>` above the hex; when such a
 * comment is present it must match the key, which catches a damaged key file.
 */
import { createHmac, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { CesError } from './errors.js';
import { keyIdBytes } from './format.js';
import { writeFileDurable } from '../durable-file.js';

export const keyBytes = 32;

/** A master key and the subkeys derived from it. Treat as secret. */
export interface CesKey {
  readonly id: Uint8Array;
  /** Hex of `id`, as shown to operators. */
  readonly idHex: string;
  /** XChaCha20-Poly1305 key. */
  readonly cipherKey: Uint8Array;
  /** HMAC-SHA256 key of the synthetic nonces. */
  readonly nonceKey: Uint8Array;
}

function derive(master: Uint8Array, purpose: string): Buffer {
  return createHmac('sha256', master).update(`pangea-ces/1 ${purpose}`).digest();
}

export function cesKey(master: Uint8Array): CesKey {
  if (master.length !== keyBytes) throw new CesError('bad_key', `a key is ${keyBytes} bytes, got ${master.length}`);
  const id = derive(master, 'key id').subarray(0, keyIdBytes);
  return { id, idHex: id.toString('hex'), cipherKey: derive(master, 'cipher key'), nonceKey: derive(master, 'nonce key') };
}

export function generateKeyBytes(): Buffer {
  return randomBytes(keyBytes);
}

/** The text `pangea ces keygen` writes. */
export function formatKeyFile(master: Uint8Array): string {
  return `# pangea ces key id ${cesKey(master).idHex}\n${Buffer.from(master).toString('hex')}\n`;
}

/** Parses a key file's bytes (raw or hex, see above); throws `bad_key`. */
export function parseKeyFile(bytes: Uint8Array, source = 'key file'): CesKey {
  if (bytes.every((b) => b === 0 || b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09)) {
    // What a crash leaves of a file written without fsync: nothing, or zeros.
    throw new CesError(
      'bad_key',
      `${source} is empty (${bytes.length} bytes, no key): it was lost in a crash or truncated; copy the key file from another node of this cluster (every node holds the same key) or from your backup`,
    );
  }
  if (bytes.length === keyBytes) return cesKey(bytes);
  const text = Buffer.from(bytes).toString('utf8');
  let declaredId: string | undefined;
  const body: string[] = [];
  for (const line of text.split(/\r?\n/)) {
    const t = line.trim();
    if (t.startsWith('#')) {
      const m = /\bid\s+([0-9a-fA-F]{16})\b/.exec(t);
      if (m) declaredId = m[1]!.toLowerCase();
    } else if (t !== '') body.push(t);
  }
  const hex = body.join('');
  if (!/^[0-9a-fA-F]{64}$/.test(hex)) {
    throw new CesError('bad_key', `${source}: expected ${keyBytes} raw bytes or ${keyBytes * 2} hex digits`);
  }
  const key = cesKey(Buffer.from(hex, 'hex'));
  if (declaredId !== undefined && declaredId !== key.idHex) {
    throw new CesError('bad_key', `${source}: says key id ${declaredId} but the key's id is ${key.idHex}; the file is damaged`);
  }
  return key;
}

export async function readKeyFile(path: string): Promise<CesKey> {
  return parseKeyFile(await readFile(path), path);
}

/** Writes a new key file readable by its owner only, durably; refuses to overwrite. Returns the key. */
export async function writeNewKeyFile(path: string): Promise<CesKey> {
  const master = generateKeyBytes();
  await writeFileDurable(path, formatKeyFile(master), { mode: 0o600, exclusive: true });
  return cesKey(master);
}

/** Keys by id. Encoding uses one key; decoding takes the ring and picks by the shards' key id. */
export class KeyRing {
  private readonly keys = new Map<string, CesKey>();
  constructor(keys: Iterable<CesKey> = []) {
    for (const k of keys) this.add(k);
  }
  add(key: CesKey): void {
    this.keys.set(key.idHex, key);
  }
  get(idHex: string): CesKey | undefined {
    return this.keys.get(idHex);
  }
  ids(): string[] {
    return [...this.keys.keys()];
  }
}
