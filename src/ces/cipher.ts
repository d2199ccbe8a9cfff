/**
 * XChaCha20-Poly1305 with synthetic (SIV-style) nonces.
 *
 * Cipher: XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha) built from two parts: the HChaCha20
 * subkey step from @noble/ciphers (one 64-byte block of work per stripe) and node:crypto's
 * ChaCha20-Poly1305 (OpenSSL, vectorised) on the subkey with nonce `0^4 || nonce[16..24]`.
 * The output is byte-identical to @noble/ciphers' `xchacha20poly1305` (tested), which is pure
 * JavaScript and about 10x slower (~110 MB/s against ~1.4 GB/s; `npm run bench -- ces` shows
 * both): it would be the slowest stage of the pipeline.
 *
 * Nonces: `nonce = HMAC-SHA256(nonceKey, ad || message)[0..24]`, where `message` is what is
 * encrypted (the zstd frame) and `ad` the stripe's associated data. The same input, key and
 * parameters therefore give the same shards (two nodes encoding a segment produce one object),
 * and a nonce repeats only for an identical (ad, message) pair, which is harmless. The nonce
 * covers the compressed bytes rather than the raw stripe because SIV security needs the nonce
 * to cover exactly what the keystream encrypts: a zstd upgrade or another level could
 * otherwise encrypt a different frame under the same nonce. It is also cheaper to hash.
 */
import { createCipheriv, createDecipheriv, createHmac } from 'node:crypto';
import { endianness } from 'node:os';
import { hchacha } from '@noble/ciphers/chacha.js';
import { assert } from './errors.js';
import { nonceBytes, tagBytes } from './format.js';

assert(endianness() === 'LE', 'CES supports little-endian hosts only (HChaCha20 word order)');

const sigma = Uint32Array.from([0x61707865, 0x3320646e, 0x79622d32, 0x6b206574]); // "expand 32-byte k"

/** HChaCha20(key, nonce[0..16]): the XChaCha20 subkey. */
export function hchacha20(key: Uint8Array, nonce16: Uint8Array): Buffer {
  assert(key.length === 32 && nonce16.length === 16, 'hchacha20 sizes');
  const k = new Uint32Array(8);
  const n = new Uint32Array(4);
  new Uint8Array(k.buffer).set(key);
  new Uint8Array(n.buffer).set(nonce16);
  const out = new Uint32Array(8);
  hchacha(sigma, k, n, out);
  return Buffer.from(out.buffer);
}

function split(key: Uint8Array, nonce: Uint8Array): { subkey: Buffer; iv: Buffer } {
  assert(nonce.length === nonceBytes, 'xchacha nonce is 24 bytes');
  const iv = Buffer.alloc(12);
  iv.set(nonce.subarray(16, 24), 4);
  return { subkey: hchacha20(key, nonce.subarray(0, 16)), iv };
}

/** XChaCha20-Poly1305 encryption; returns ciphertext || 16-byte tag. */
export function seal(key: Uint8Array, nonce: Uint8Array, ad: Uint8Array, plaintext: Uint8Array): Buffer {
  const out = Buffer.alloc(plaintext.length + tagBytes);
  sealInto(out, key, nonce, ad, plaintext);
  return out;
}

/** Like {@link seal}, writing ciphertext || tag to the start of `out`; returns its length. */
export function sealInto(out: Uint8Array, key: Uint8Array, nonce: Uint8Array, ad: Uint8Array, plaintext: Uint8Array): number {
  assert(out.length >= plaintext.length + tagBytes, 'seal output too small');
  const { subkey, iv } = split(key, nonce);
  const c = createCipheriv('chacha20-poly1305', subkey, iv, { authTagLength: tagBytes });
  c.setAAD(ad, { plaintextLength: plaintext.length });
  const body = c.update(plaintext);
  const final = c.final();
  assert(body.length === plaintext.length && final.length === 0, 'stream cipher output length');
  out.set(body, 0);
  out.set(c.getAuthTag(), plaintext.length);
  return plaintext.length + tagBytes;
}

/** XChaCha20-Poly1305 decryption of ciphertext || tag; undefined if authentication fails. */
export function open(key: Uint8Array, nonce: Uint8Array, ad: Uint8Array, sealed: Uint8Array): Buffer | undefined {
  if (sealed.length < tagBytes) return undefined;
  const { subkey, iv } = split(key, nonce);
  const bodyBytes = sealed.length - tagBytes;
  const d = createDecipheriv('chacha20-poly1305', subkey, iv, { authTagLength: tagBytes });
  d.setAAD(ad, { plaintextLength: bodyBytes });
  d.setAuthTag(sealed.subarray(bodyBytes));
  const body = d.update(sealed.subarray(0, bodyBytes));
  try {
    d.final();
  } catch {
    return undefined;
  }
  return body;
}

/** The synthetic nonce of a stripe: HMAC-SHA256(nonceKey, ad || message), first 24 bytes. */
export function syntheticNonce(nonceKey: Uint8Array, ad: Uint8Array, message: Uint8Array): Buffer {
  return createHmac('sha256', nonceKey).update(ad).update(message).digest().subarray(0, nonceBytes);
}
