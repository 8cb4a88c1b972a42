// printable(): far-side text (RPC errors, CloseTunnel "error") made safe for the terminal.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { printable, MAX_MESSAGE } from '../shv/printable.js';

// eslint-disable-next-line no-control-regex
const CONTROL = /[\x00-\x1f\x7f-\x9f]/;

test('plain text is kept', () => {
  assert.equal(printable('no such path \'test/nope\''), 'no such path \'test/nope\'');
  assert.equal(printable('Ünïcödé — ok ✓ 日本'), 'Ünïcödé — ok ✓ 日本');
  assert.equal(printable(undefined), '');
  assert.equal(printable(42), '42');
});

test('escape sequences go, with their parameters and payloads', () => {
  const cases = [
    ['a\x1b[31mred\x1b[0mb', 'aredb'], // SGR
    ['a\x1b[?1049hb', 'ab'], // alternate screen
    ['a\x1b[2J\x1b[Hb', 'ab'], // clear, home
    ['a\x1b]0;pwned\x07b', 'ab'], // OSC title, BEL
    ['a\x1b]8;;http://evil/\x1b\\link\x1b]8;;\x1b\\b', 'alinkb'], // OSC 8 hyperlink, ST
    ['a\x1bP+q544e\x1b\\b', 'ab'], // DCS (XTGETTCAP)
    ['a\x1b_apc\x1b\\b\x1b^pm\x1b\\c\x1bXsos\x1b\\d', 'abcd'], // APC, PM, SOS
    ['a\x9b31mb', 'ab'], // 8-bit CSI
    ['a\x9d0;pwned\x9cb', 'ab'], // 8-bit OSC and ST
    ['a\x90q\x9cb', 'ab'], // 8-bit DCS
    ['a\x1bcb', 'ab'], // RIS (full reset)
    ['a\x1b(0b', 'ab'], // charset designation
    ['a\x1b7\x1b8b', 'ab'], // save / restore cursor
    ['a\x1b]0;unterminated title', 'a'], // runs to the end
    ['a\x1b[', 'a'],
    ['a\x1b', 'a'],
  ];
  for (const [input, want] of cases) assert.equal(printable(input), want, JSON.stringify(input));
});

test('other controls go; line breaks and tabs become spaces', () => {
  assert.equal(printable('line 1\r\nline 2\tx'), 'line 1 line 2 x');
  assert.equal(printable('a\x00b\x07c\x08d\x7fe\x85f\x84g'), 'abcde fg');
  assert.equal(printable('\n\n  padded \n'), 'padded');
  for (let c = 0; c < 0xa0; c++) {
    const out = printable(`x${String.fromCharCode(c)}y`);
    assert.ok(!CONTROL.test(out), `U+${c.toString(16)} → ${JSON.stringify(out)}`);
  }
});

test('the length is capped', () => {
  const long = 'e'.repeat(10000);
  const out = printable(long);
  assert.equal(out.length, MAX_MESSAGE);
  assert.ok(out.endsWith('…'));
  assert.equal(printable('abcdef', 4), 'abc…');
  assert.equal(printable('abc', 4), 'abc');
  // No half surrogate pair at the cut.
  const emoji = printable('ab😀cd', 4);
  assert.equal(emoji, 'ab…');
  // Huge input with sequences: bounded work, still clean.
  const nasty = '\x1b]'.repeat(200000) + '\x1b['.repeat(200000);
  const t0 = Date.now();
  const r = printable(nasty);
  assert.ok(Date.now() - t0 < 1000);
  assert.ok(!CONTROL.test(r));
});
