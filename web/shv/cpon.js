// Cpon, the text form of SHV values (same value model as chainpack.js).
// toCpon writes the compact form the Rust `shvproto` writer produces (sorted Map keys,
// no spaces), parseCpon reads what people type: comments, optional commas, hex
// numbers, b"…" and x"…" blobs, d"…" date-times, <meta> prefixes.

import {
  UInt, Double, Decimal, DateTime, IMap, MetaMap, WithMeta, MAX_DEPTH,
} from './chainpack.js';

const utf8enc = new TextEncoder();
const utf8dec = new TextDecoder('utf-8', { fatal: true });

export class CponError extends Error {
  constructor(message, offset) {
    super(`${message} (at character ${offset})`);
    this.name = 'CponError';
    this.offset = offset;
  }
}

// --- Writer ------------------------------------------------------------------------

function quote(s) {
  let out = '"';
  for (const c of s) {
    switch (c) {
      case '\0': out += '\\0'; break;
      case '\\': out += '\\\\'; break;
      case '\t': out += '\\t'; break;
      case '\r': out += '\\r'; break;
      case '\n': out += '\\n'; break;
      case '"': out += '\\"'; break;
      default: out += c;
    }
  }
  return out + '"';
}

function blobText(b) {
  let out = 'b"';
  for (const x of b) {
    if (x === 0x5c) out += '\\\\';
    else if (x === 0x09) out += '\\t';
    else if (x === 0x0d) out += '\\r';
    else if (x === 0x0a) out += '\\n';
    else if (x === 0x22) out += '\\"';
    else if (x < 0x20 || x >= 0x7f) out += '\\' + x.toString(16).padStart(2, '0');
    else out += String.fromCharCode(x);
  }
  return out + '"';
}

/** A double the way Rust's Display prints it: plain digits, never an exponent. */
function doubleText(x) {
  if (Number.isNaN(x)) return 'NaN';
  if (!Number.isFinite(x)) return x > 0 ? 'inf' : '-inf';
  if (Object.is(x, -0)) return '-0';
  const s = String(x);
  const m = /^(-?)(\d)(?:\.(\d+))?e([+-]\d+)$/.exec(s);
  if (!m) return s;
  const [, sign, d0, frac = '', e] = m;
  const digits = d0 + frac;
  const point = 1 + Number(e); // position of the decimal point within digits
  if (point <= 0) return `${sign}0.${'0'.repeat(-point)}${digits}`;
  if (point >= digits.length) return sign + digits + '0'.repeat(point - digits.length);
  return `${sign}${digits.slice(0, point)}.${digits.slice(point)}`;
}

function decimalText(d) {
  let m = BigInt(d.mantissa);
  const e = d.exponent;
  const neg = m < 0n;
  if (neg) m = -m;
  let s = m.toString();
  const n = s.length;
  if (e < 0 && n + e > 0) s = `${s.slice(0, n + e)}.${s.slice(n + e)}`;
  else if (e < 0 && e >= -3) s = `0.${'0'.repeat(-(e + n))}${s}`;
  else if (e > 0 && n <= 9 - e) s += '0'.repeat(e) + '.';
  else if (e === 0) s += '.';
  else s += `e${e}`;
  return neg ? '-' + s : s;
}

const pad = (n, w = 2) => String(n).padStart(w, '0');

function dateTimeText(dt) {
  const local = new Date(dt.epochMsec + dt.utcOffset * 1000);
  let s = `${pad(local.getUTCFullYear(), 4)}-${pad(local.getUTCMonth() + 1)}-${pad(local.getUTCDate())}`
    + `T${pad(local.getUTCHours())}:${pad(local.getUTCMinutes())}:${pad(local.getUTCSeconds())}`;
  const ms = dt.epochMsec % 1000;
  if (ms > 0) s += '.' + pad(ms, 3);
  let off = dt.utcOffset;
  if (off === 0) s += 'Z';
  else {
    s += off < 0 ? '-' : '+';
    off = Math.abs(off);
    s += pad(Math.floor(off / 3600));
    if (Math.floor(off / 60) % 60) s += pad(Math.floor(off / 60) % 60);
  }
  return `d"${s}"`;
}

function utf8Compare(a, b) {
  const x = utf8enc.encode(a), y = utf8enc.encode(b);
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i] - y[i];
  return x.length - y.length;
}

/** Compact Cpon of a value. */
export function toCpon(v) {
  if (v === null || v === undefined) return 'null';
  switch (typeof v) {
    case 'boolean': return v ? 'true' : 'false';
    case 'string': return quote(v);
    case 'bigint': return v.toString();
    case 'number': return Number.isInteger(v) && !Object.is(v, -0) ? String(v) : doubleText(v);
    default:
  }
  if (v instanceof WithMeta) {
    if (v.meta.size === 0) return toCpon(v.value);
    const items = [...v.meta].map(([k, x]) => `${typeof k === 'string' ? quote(k) : k}:${toCpon(x)}`);
    return `<${items.join(',')}>${toCpon(v.value)}`;
  }
  if (v instanceof Uint8Array) return blobText(v);
  if (Array.isArray(v)) return `[${v.map(toCpon).join(',')}]`;
  if (v instanceof IMap) {
    const keys = [...v.keys()].sort((a, b) => a - b);
    return `i{${keys.map((k) => `${k}:${toCpon(v.get(k))}`).join(',')}}`;
  }
  if (v instanceof UInt) return `${v.value}u`;
  if (v instanceof Double) return doubleText(v.value);
  if (v instanceof Decimal) return decimalText(v);
  if (v instanceof DateTime) return dateTimeText(v);
  if (v instanceof Date) return dateTimeText(DateTime.fromDate(v));
  if (v instanceof Map || typeof v === 'object') {
    const entries = (v instanceof Map ? [...v.entries()] : Object.entries(v))
      .sort((a, b) => utf8Compare(a[0], b[0]));
    return `{${entries.map(([k, x]) => `${quote(k)}:${toCpon(x)}`).join(',')}}`;
  }
  throw new TypeError(`cannot write ${typeof v} as Cpon`);
}

// --- Parser ------------------------------------------------------------------------

class Parser {
  constructor(text, maxDepth) {
    this.s = text;
    this.i = 0;
    this.depth = 0;
    this.maxDepth = maxDepth;
  }
  fail(msg, at = this.i) { throw new CponError(msg, at); }
  eof() { return this.i >= this.s.length; }
  peek() {
    if (this.eof()) this.fail('unexpected end of Cpon');
    return this.s[this.i];
  }
  next() { const c = this.peek(); this.i++; return c; }

  // Whitespace, comments and the separators ',' and ':' carry no meaning.
  skip() {
    while (!this.eof()) {
      const c = this.s[this.i];
      if (c <= ' ' || c === ',' || c === ':') { this.i++; continue; }
      if (c === '/') {
        const d = this.s[this.i + 1];
        if (d === '*') {
          const end = this.s.indexOf('*/', this.i + 2);
          if (end < 0) this.fail('unterminated comment');
          this.i = end + 2;
        } else if (d === '/') {
          const end = this.s.indexOf('\n', this.i + 2);
          this.i = end < 0 ? this.s.length : end + 1;
        } else this.fail('malformed comment');
        continue;
      }
      break;
    }
  }
  enter() { if (++this.depth > this.maxDepth) this.fail(`nesting deeper than ${this.maxDepth} levels`); }

  value() {
    this.skip();
    let meta = null;
    if (this.peek() === '<') {
      this.enter();
      this.i++;
      meta = new MetaMap();
      for (;;) {
        this.skip();
        if (this.peek() === '>') { this.i++; break; }
        const at = this.i;
        const k = this.value();
        let key;
        if (typeof k === 'string') key = k;
        else if (typeof k === 'number' || typeof k === 'bigint') key = Number(k);
        else if (k instanceof UInt) key = Number(k.value);
        else this.fail('MetaMap key must be an Int or a String', at);
        meta.set(key, this.value());
      }
      this.depth--;
      this.skip();
    }
    const v = this.plain();
    return meta ? new WithMeta(v, meta) : v;
  }

  plain() {
    const c = this.peek();
    if ((c >= '0' && c <= '9') || c === '-' || c === '+') return this.number();
    switch (c) {
      case '"': return this.string();
      case 'b': if (this.s[this.i + 1] === '"') { this.i++; return this.blobEsc(); } break;
      case 'x': if (this.s[this.i + 1] === '"') { this.i++; return this.blobHex(); } break;
      case 'd': if (this.s[this.i + 1] === '"') { this.i++; return this.dateTime(); } break;
      case '[': return this.container(']', () => [], (l, v) => l.push(v));
      case '{': return this.map();
      case 'i': if (this.s[this.i + 1] === '{') { this.i++; return this.imap(); } break;
      default:
    }
    for (const [word, v] of [['null', null], ['true', true], ['false', false]]) {
      if (this.s.startsWith(word, this.i)) { this.i += word.length; return v; }
    }
    return this.fail(`unexpected character '${c}'`);
  }

  container(close, make, add) {
    this.enter();
    this.i++;
    const out = make();
    for (;;) {
      this.skip();
      if (this.peek() === close) { this.i++; break; }
      add(out, this.value());
    }
    this.depth--;
    return out;
  }

  map() {
    this.enter();
    this.i++;
    const m = Object.create(null);
    for (;;) {
      this.skip();
      if (this.peek() === '}') { this.i++; break; }
      if (this.peek() !== '"') this.fail('Map key must be a String');
      const k = this.string();
      m[k] = this.value();
    }
    this.depth--;
    return m;
  }

  imap() {
    this.enter();
    this.i++;
    const m = new IMap();
    for (;;) {
      this.skip();
      if (this.peek() === '}') { this.i++; break; }
      const at = this.i;
      const k = this.number();
      if (typeof k !== 'number' && typeof k !== 'bigint') this.fail('IMap key must be an Int', at);
      m.set(Number(k), this.value());
    }
    this.depth--;
    return m;
  }

  // Reads "…" as bytes (escapes resolved), the opening quote at this.i.
  quotedBytes(blob) {
    const at = this.i;
    if (this.next() !== '"') this.fail('\'"\' expected', at);
    const out = [];
    for (;;) {
      if (this.eof()) this.fail('unterminated string', at);
      const c = String.fromCodePoint(this.s.codePointAt(this.i));
      this.i += c.length;
      if (c === '"') break;
      if (c !== '\\') { for (const b of utf8enc.encode(c)) out.push(b); continue; }
      const e = this.next();
      const simple = { '\\': 0x5c, '"': 0x22, n: 0x0a, r: 0x0d, t: 0x09 }[e];
      if (simple !== undefined) out.push(simple);
      else if (blob) {
        const h = e + this.next();
        if (!/^[0-9a-fA-F]{2}$/.test(h)) this.fail(`bad escape \\${h} in blob`);
        out.push(parseInt(h, 16));
      } else if (e === '0') out.push(0);
      else for (const b of utf8enc.encode(e)) out.push(b);
    }
    return new Uint8Array(out);
  }
  string() {
    const at = this.i;
    try { return utf8dec.decode(this.quotedBytes(false)); } catch (e) {
      if (e instanceof CponError) throw e;
      return this.fail('String is not valid UTF-8', at);
    }
  }
  blobEsc() { return this.quotedBytes(true); }
  blobHex() {
    const at = this.i;
    const end = this.s.indexOf('"', this.i + 1);
    if (this.next() !== '"' || end < 0) this.fail('unterminated hex blob', at);
    const hex = this.s.slice(this.i, end).replace(/\s+/g, '');
    if (hex.length % 2 || /[^0-9a-fA-F]/.test(hex)) this.fail('bad hex blob', at);
    this.i = end + 1;
    const b = new Uint8Array(hex.length / 2);
    for (let k = 0; k < b.length; k++) b[k] = parseInt(hex.substr(k * 2, 2), 16);
    return b;
  }
  dateTime() {
    const at = this.i;
    const text = this.string();
    const m = /^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,3}))?(Z|[+-]\d\d(?::?\d\d)?)?$/.exec(text);
    if (!m) this.fail(`invalid DateTime '${text}'`, at);
    const [, y, mo, d, h, mi, sec, ms = '0', tz = 'Z'] = m;
    let off = 0;
    if (tz !== 'Z') {
      const digits = tz.slice(1).replace(':', '');
      off = (Number(digits.slice(0, 2)) * 3600 + Number(digits.slice(2) || 0) * 60) * (tz[0] === '-' ? -1 : 1);
    }
    const localMs = Date.UTC(+y, +mo - 1, +d, +h, +mi, +sec, Number(ms.padEnd(3, '0')));
    return new DateTime(localMs - off * 1000, off);
  }

  number() {
    const at = this.i;
    let neg = false;
    if (this.s[this.i] === '+' || this.s[this.i] === '-') neg = this.s[this.i++] === '-';
    let mant = 0n;
    let digits = 0;
    if (this.s[this.i] === '0' && /[xX]/.test(this.s[this.i + 1] ?? '')) {
      this.i += 2;
      while (/[0-9a-fA-F]/.test(this.s[this.i] ?? '')) { mant = mant * 16n + BigInt(parseInt(this.s[this.i++], 16)); digits++; }
    } else {
      while (/[0-9]/.test(this.s[this.i] ?? '')) { mant = mant * 10n + BigInt(this.s[this.i++]); digits++; }
    }
    if (!digits) this.fail('number without digits', at);
    let isDecimal = false, exp = 0, decimals = 0;
    if (this.s[this.i] === '.') {
      isDecimal = true;
      this.i++;
      while (/[0-9]/.test(this.s[this.i] ?? '')) { mant = mant * 10n + BigInt(this.s[this.i++]); decimals++; }
    }
    if (/[eE]/.test(this.s[this.i] ?? '')) {
      isDecimal = true;
      this.i++;
      const m = /^[+-]?\d+/.exec(this.s.slice(this.i));
      if (!m) this.fail('malformed exponent');
      exp = Number(m[0]);
      this.i += m[0].length;
    }
    if (neg) mant = -mant;
    if (isDecimal) return new Decimal(small(mant), exp - decimals);
    if (this.s[this.i] === 'u') {
      this.i++;
      if (neg) this.fail('UInt cannot be negative', at);
      return new UInt(small(mant));
    }
    return small(mant);
  }
}

function small(n) { return n >= -9007199254740991n && n <= 9007199254740991n ? Number(n) : n; }

/** Parses one Cpon value; trailing whitespace and comments are allowed, nothing else. */
export function parseCpon(text, { maxDepth = MAX_DEPTH } = {}) {
  const p = new Parser(text, maxDepth);
  const v = p.value();
  p.skip();
  if (!p.eof()) p.fail('unexpected text after the value');
  return v;
}
