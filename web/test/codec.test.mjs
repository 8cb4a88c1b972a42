// ChainPack / Cpon against the shared vectors (tests/vectors/chainpack.json, generated
// by the Rust binaries: tools/gen-vectors.mjs), plus the decoder's guards.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import {
  encode, decode, toHex, fromHex, DecodeError, WithMeta, IMap, MetaMap, UInt, Double,
} from '../shv/chainpack.js';
import { toCpon, parseCpon, CponError } from '../shv/cpon.js';

const vectors = JSON.parse(readFileSync(new URL('../../tests/vectors/chainpack.json', import.meta.url)));

test('vector file covers every type', () => {
  assert.ok(vectors.length > 100);
  const hexes = vectors.map((v) => v.chainpack_hex.slice(0, 2));
  for (const t of ['80', 'fe', 'fd', '81', '82', '83', '85', '86', '88', '89', '8a', '8b', '8c', '8d']) {
    assert.ok(hexes.some((h) => h === t) || vectors.some((v) => v.chainpack_hex.includes(t)), `type ${t}`);
  }
});

for (const v of vectors) {
  test(`vector: ${v.name}`, () => {
    const bytes = fromHex(v.chainpack_hex);
    const value = decode(bytes);
    assert.equal(toHex(encode(value)), v.chainpack_hex, 'decode → encode must give the same bytes');
    assert.equal(toCpon(value), v.cpon, 'decode → Cpon must match the Rust Cpon writer');
    if (v.direction === 'both') {
      const parsed = parseCpon(v.cpon);
      assert.equal(toHex(encode(parsed)), v.chainpack_hex, 'Cpon → ChainPack');
      assert.deepEqual(parsed, value);
    }
  });
}

test('every truncation of every vector is a DecodeError', () => {
  for (const v of vectors) {
    const bytes = fromHex(v.chainpack_hex);
    for (let n = 0; n < bytes.length; n++) {
      assert.throws(() => decode(bytes.subarray(0, n)), DecodeError, `${v.name} cut at ${n}`);
    }
  }
});

test('garbage never hangs and fails with DecodeError', () => {
  let seed = 12345;
  const rnd = () => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed & 0xff; };
  for (let i = 0; i < 3000; i++) {
    const b = Uint8Array.from({ length: 1 + (i % 40) }, rnd);
    try { decode(b); } catch (e) { assert.ok(e instanceof DecodeError, `${e} for ${toHex(b)}`); }
  }
});

test('nesting limit', () => {
  const deep = (n) => new Uint8Array([...Array(n).fill(0x88), ...Array(n).fill(0xff)]);
  assert.doesNotThrow(() => decode(deep(64)));
  assert.throws(() => decode(deep(65)), /nesting deeper than 64/);
  assert.throws(() => decode(deep(100000)), /nesting deeper/);
  assert.throws(() => decode(deep(10), { maxDepth: 5 }), /nesting deeper than 5/);
  assert.throws(() => parseCpon('['.repeat(1000) + ']'.repeat(1000)), CponError);
});

test('clear errors', () => {
  assert.throws(() => decode(fromHex('8605616263')), /truncated ChainPack: length 5 exceeds/);
  assert.throws(() => decode(fromHex('85f7ffffffffffffffffff')), /does not fit|truncated|exceeds/);
  assert.throws(() => decode(fromHex('88')), /truncated/);
  assert.throws(() => decode(fromHex('87')), /invalid ChainPack type byte 0x87/);
  assert.throws(() => decode(fromHex('8602c328')), /not valid UTF-8/);
  assert.throws(() => decode(fromHex('4142')), /1 byte\(s\) after the value/);
  assert.throws(() => decode(fromHex('ff')), /unexpected container end/);
});

test('values with meta and the JS value model', () => {
  const msg = new WithMeta(new IMap([[1, { cmd: ['ls'], cols: 80 }]]), new MetaMap([[1, 1], [8, 5], [10, 'x']]));
  const back = decode(encode(msg));
  assert.ok(back instanceof WithMeta);
  assert.deepEqual([...back.meta], [[1, 1], [8, 5], [10, 'x']]);
  assert.equal(toCpon(back), '<1:1,8:5,10:"x">i{1:{"cmd":["ls"],"cols":80}}');
  assert.equal(toHex(encode(new UInt(5))), '05');
  assert.equal(toHex(encode(new Double(2))), '830000000000000040');
  assert.ok(decode(encode(2.5)) === 2.5);
  assert.ok(decode(encode(new Double(2))) instanceof Double);
  assert.equal(decode(fromHex('82f47fffffffffffffff')), 9223372036854775807n);
  assert.equal(toHex(encode(new Map([['b', 1], ['a', 2]]))), toHex(encode({ a: 2, b: 1 })));
  assert.throws(() => encode(2 ** 60), /use a bigint/);
  assert.throws(() => encode(Symbol('x')), TypeError);
});
