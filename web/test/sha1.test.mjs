import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { sha1Hex, shvLoginHash } from '../shv/sha1.js';

test('FIPS 180 / RFC 3174 vectors', () => {
  assert.equal(sha1Hex(''), 'da39a3ee5e6b4b0d3255bfef95601890afd80709');
  assert.equal(sha1Hex('abc'), 'a9993e364706816aba3e25717850c26c9cd0d89d');
  assert.equal(sha1Hex('abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq'),
    '84983e441c3bd26ebaae4aa1f95129e5e54670f1');
  assert.equal(sha1Hex('a'.repeat(1000000)), '34aa973cd4c4daa4f61eeb2bdbad27316534016f');
  assert.equal(sha1Hex('The quick brown fox jumps over the lazy dog'), '2fd4e1c67a2d28fced849ee1bb76e7391b93eb12');
});

test('every length around the block boundaries, UTF-8, bytes (vs node:crypto)', () => {
  for (let n = 0; n < 300; n++) {
    const s = 'x'.repeat(n) + (n % 3 ? 'ř😀' : '');
    assert.equal(sha1Hex(s), createHash('sha1').update(s).digest('hex'), `length ${n}`);
  }
  const bytes = Uint8Array.from({ length: 256 }, (_, i) => i);
  assert.equal(sha1Hex(bytes), createHash('sha1').update(bytes).digest('hex'));
});

test('SHV login hash', () => {
  const nonce = 'abcdefghij';
  const expected = createHash('sha1').update(nonce + createHash('sha1').update('admin').digest('hex')).digest('hex');
  assert.equal(shvLoginHash(nonce, 'admin'), expected);
});
