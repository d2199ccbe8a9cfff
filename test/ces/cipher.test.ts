import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { xchacha20poly1305 } from '@noble/ciphers/chacha.js';
import { hchacha20, open, seal } from '../../src/ces/cipher.js';

test('HChaCha20 matches the test vector of draft-irtf-cfrg-xchacha section 2.2.1', () => {
  const key = Buffer.from('000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f', 'hex');
  const nonce = Buffer.from('000000090000004a0000000031415927', 'hex');
  assert.equal(hchacha20(key, nonce).toString('hex'), '82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc');
});

test('XChaCha20-Poly1305 from HChaCha20 + node:crypto is byte-identical to @noble/ciphers', () => {
  fc.assert(
    fc.property(
      fc.uint8Array({ minLength: 32, maxLength: 32 }),
      fc.uint8Array({ minLength: 24, maxLength: 24 }),
      fc.uint8Array({ maxLength: 100 }),
      fc.uint8Array({ maxLength: 3000 }),
      (key, nonce, ad, plaintext) => {
        const ours = seal(key, nonce, ad, plaintext);
        const noble = xchacha20poly1305(key, nonce, ad).encrypt(plaintext);
        assert.deepEqual(new Uint8Array(ours), noble);
        assert.deepEqual(new Uint8Array(open(key, nonce, ad, ours)!), plaintext);
      },
    ),
    { numRuns: 200 },
  );
});

test('decryption fails on any altered byte of ciphertext, tag, nonce or associated data', () => {
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 1, maxLength: 500 }), fc.nat(), fc.constantFrom('ct', 'nonce', 'ad'), (pt, where, what) => {
      const key = new Uint8Array(32).fill(7);
      const nonce = new Uint8Array(24).fill(3);
      const ad = new Uint8Array(20).fill(9);
      const sealed = seal(key, nonce, ad, pt);
      const flip = (b: Uint8Array): Uint8Array => {
        const c = Uint8Array.from(b);
        c[where % c.length]! ^= 0x10;
        return c;
      };
      if (what === 'ct') assert.equal(open(key, nonce, ad, flip(sealed)), undefined);
      if (what === 'nonce') assert.equal(open(key, flip(nonce), ad, sealed), undefined);
      if (what === 'ad') assert.equal(open(key, nonce, flip(ad), sealed), undefined);
    }),
    { numRuns: 100 },
  );
});
