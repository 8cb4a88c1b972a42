// ChainPack, the binary encoding of SHV RPC values.
//
// How SHV values map to JavaScript:
//   Null -> null            Bool -> boolean         String -> string
//   Int  -> number (bigint outside the safe-integer range; either is accepted)
//   UInt -> UInt            Double -> number, or Double when the value is integral
//   Decimal -> Decimal      DateTime -> DateTime    Blob -> Uint8Array
//   List -> Array           Map -> plain object (a JS Map is accepted when encoding)
//   IMap -> IMap (a Map with integer keys)
//   any value with a MetaMap -> WithMeta { value, meta: MetaMap }
// so that every decoded value encodes back to the same bytes.

export class UInt {
  /** @param {number|bigint} value */
  constructor(value) {
    if (typeof value === 'number' && !(Number.isSafeInteger(value) && value >= 0)) {
      throw new RangeError(`UInt must be a non-negative integer, got ${value}`);
    }
    if (typeof value === 'bigint' && (value < 0n || value > 0xffffffffffffffffn)) {
      throw new RangeError(`UInt out of range: ${value}`);
    }
    this.value = value;
  }
}

/** A Double whose value happens to be integral (plain numbers would encode as Int). */
export class Double {
  constructor(value) { this.value = Number(value); }
}

export class Decimal {
  /** value = mantissa * 10^exponent */
  constructor(mantissa, exponent) {
    this.mantissa = mantissa;
    this.exponent = exponent;
  }
  toNumber() { return Number(this.mantissa) * 10 ** this.exponent; }
}

export class DateTime {
  /**
   * @param {number} epochMsec milliseconds since 1970-01-01T00:00:00Z
   * @param {number} utcOffset the local time's offset from UTC in seconds (15 min steps)
   */
  constructor(epochMsec, utcOffset = 0) {
    this.epochMsec = epochMsec;
    this.utcOffset = utcOffset;
  }
  static fromDate(d) { return new DateTime(d.getTime(), 0); }
  toDate() { return new Date(this.epochMsec); }
}

/** Map with integer keys. */
export class IMap extends Map {}

/** Meta data of a value: integer or string keys, order kept. */
export class MetaMap extends Map {}

/** A value carrying a MetaMap (e.g. an RPC message: MetaMap + IMap body). */
export class WithMeta {
  constructor(value, meta = new MetaMap()) {
    this.value = value;
    this.meta = meta instanceof MetaMap ? meta : new MetaMap(meta);
  }
}

export class DecodeError extends Error {
  constructor(message, offset) {
    super(offset === undefined ? message : `${message} (at byte ${offset})`);
    this.name = 'DecodeError';
    this.offset = offset;
  }
}

export const MAX_DEPTH = 64;

const T = {
  NULL: 0x80, UINT: 0x81, INT: 0x82, DOUBLE: 0x83, BLOB: 0x85, STRING: 0x86,
  LIST: 0x88, MAP: 0x89, IMAP: 0x8a, META: 0x8b, DECIMAL: 0x8c, DATETIME: 0x8d,
  CSTRING: 0x8e, FALSE: 0xfd, TRUE: 0xfe, TERM: 0xff,
};
export const TYPE = Object.freeze(T);

// 2018-02-02T00:00:00Z, the epoch of ChainPack DateTime.
const SHV_EPOCH_MSEC = 1517529600000n;

const utf8enc = new TextEncoder();
// fatal: SHV 3 Strings must be valid UTF-8, as on the Rust side.
const utf8dec = new TextDecoder('utf-8', { fatal: true });

/** Plain object (not an Array, Map, class instance …) — encoded as a Map. */
function isPlainObject(v) {
  if (v === null || typeof v !== 'object') return false;
  const p = Object.getPrototypeOf(v);
  return p === null || p === Object.prototype;
}

function bitLength(n) { // n: bigint >= 0
  return n === 0n ? 0 : n.toString(2).length;
}

function bytesNeeded(bitLen) {
  if (bitLen === 0) return 1;
  if (bitLen <= 28) return Math.floor((bitLen - 1) / 7) + 1;
  return Math.floor((bitLen - 1) / 8) + 2;
}

// --- Encoder -----------------------------------------------------------------------

class ByteSink {
  constructor() { this.buf = new Uint8Array(256); this.len = 0; }
  reserve(n) {
    if (this.len + n <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.len + n) cap *= 2;
    const b = new Uint8Array(cap);
    b.set(this.buf.subarray(0, this.len));
    this.buf = b;
  }
  byte(b) { this.reserve(1); this.buf[this.len++] = b; }
  bytes(a) { this.reserve(a.length); this.buf.set(a, this.len); this.len += a.length; }
  result() { return this.buf.slice(0, this.len); }
}

// The variable-length number format:
//   0xxxxxxx | 10xxxxxx x8 | 110xxxxx x8 x8 | 1110xxxx x8 x8 x8 | 1111nnnn + (n+4) bytes
function writeUintBits(out, num, bitLen) { // num: bigint
  const cnt = bytesNeeded(bitLen);
  const b = new Uint8Array(cnt);
  let n = num;
  for (let i = cnt - 1; i >= 0; i--) { b[i] = Number(n & 0xffn); n >>= 8n; }
  if (bitLen <= 28) {
    const mask = (0xf0 << (4 - cnt)) & 0xff; // the length prefix bits
    b[0] = (b[0] & ~mask) | ((mask << 1) & 0xff);
  } else {
    b[0] = 0xf0 | (cnt - 5);
  }
  out.bytes(b);
}

function writeUintData(out, num) {
  if (typeof num === 'number' && num < 128) { out.byte(num); return; } // hot path
  const n = BigInt(num);
  writeUintBits(out, n, bitLength(n));
}

// Signed: sign-magnitude, the sign in the highest bit the chosen length can hold.
function writeIntData(out, num) {
  let n = BigInt(num);
  const neg = n < 0n;
  if (neg) n = -n;
  const bitLen = bitLength(n) + 1;
  if (neg) {
    const cnt = bytesNeeded(bitLen);
    const signPos = bitLen <= 28 ? cnt * 7 - 1 : (cnt - 1) * 8 - 1;
    n |= 1n << BigInt(signPos);
  }
  writeUintBits(out, n, bitLen);
}

function writeInt(out, n) {
  if (typeof n === 'number' && n >= 0 && n < 64) out.byte(0x40 + n);
  else if (typeof n === 'bigint' && n >= 0n && n < 64n) out.byte(0x40 + Number(n));
  else { out.byte(T.INT); writeIntData(out, n); }
}

function writeString(out, s) {
  const b = utf8enc.encode(s);
  out.byte(T.STRING);
  writeUintData(out, b.length);
  out.bytes(b);
}

function utf8Compare(a, b) {
  const x = utf8enc.encode(a), y = utf8enc.encode(b);
  const n = Math.min(x.length, y.length);
  for (let i = 0; i < n; i++) if (x[i] !== y[i]) return x[i] - y[i];
  return x.length - y.length;
}

function writeMeta(out, meta) {
  out.byte(T.META);
  for (const [k, v] of meta) {
    if (typeof k === 'string') writeString(out, k);
    else writeInt(out, k);
    writeValue(out, v);
  }
  out.byte(T.TERM);
}

function writeDateTime(out, dt) {
  let msecs = BigInt(Math.round(dt.epochMsec)) - SHV_EPOCH_MSEC;
  const offset = BigInt(Math.trunc(dt.utcOffset / 60 / 15) & 0x7f);
  const noMsec = msecs % 1000n === 0n;
  if (noMsec) msecs /= 1000n;
  if (offset !== 0n) msecs = (msecs << 7n) | offset;
  msecs <<= 2n;
  if (offset !== 0n) msecs |= 1n;
  if (noMsec) msecs |= 2n;
  out.byte(T.DATETIME);
  writeIntData(out, msecs);
}

function writeValue(out, v) {
  if (v === null || v === undefined) { out.byte(T.NULL); return; }
  switch (typeof v) {
    case 'boolean': out.byte(v ? T.TRUE : T.FALSE); return;
    case 'string': writeString(out, v); return;
    case 'bigint':
      if (v < -0x7fffffffffffffffn || v > 0x7fffffffffffffffn) throw new RangeError(`Int out of range: ${v}`);
      writeInt(out, v); return;
    case 'number':
      if (Number.isInteger(v) && !Object.is(v, -0)) {
        if (!Number.isSafeInteger(v)) throw new RangeError(`Int ${v} is not exact; use a bigint`);
        writeInt(out, v);
      } else {
        writeDouble(out, v);
      }
      return;
    default:
  }
  if (v instanceof WithMeta) {
    if (v.meta.size > 0) writeMeta(out, v.meta);
    writeValue(out, v.value);
  } else if (v instanceof Uint8Array) {
    out.byte(T.BLOB); writeUintData(out, v.length); out.bytes(v);
  } else if (Array.isArray(v)) {
    out.byte(T.LIST);
    for (const x of v) writeValue(out, x);
    out.byte(T.TERM);
  } else if (v instanceof IMap) {
    out.byte(T.IMAP);
    // Sorted like the Rust side's BTreeMap, so equal maps give equal bytes.
    for (const k of [...v.keys()].sort((a, b) => Number(a) - Number(b))) {
      writeInt(out, k); writeValue(out, v.get(k));
    }
    out.byte(T.TERM);
  } else if (v instanceof MetaMap) {
    throw new TypeError('a MetaMap is not a value; wrap the value in WithMeta');
  } else if (v instanceof Map || isPlainObject(v)) {
    const entries = v instanceof Map ? [...v.entries()] : Object.entries(v);
    entries.sort((a, b) => utf8Compare(a[0], b[0]));
    out.byte(T.MAP);
    for (const [k, x] of entries) {
      if (typeof k !== 'string') throw new TypeError('Map keys must be strings (use IMap)');
      writeString(out, k); writeValue(out, x);
    }
    out.byte(T.TERM);
  } else if (v instanceof UInt) {
    const n = v.value;
    if (n < 64) out.byte(Number(n));
    else { out.byte(T.UINT); writeUintData(out, n); }
  } else if (v instanceof Double) {
    writeDouble(out, v.value);
  } else if (v instanceof Decimal) {
    out.byte(T.DECIMAL); writeIntData(out, v.mantissa); writeIntData(out, v.exponent);
  } else if (v instanceof DateTime) {
    writeDateTime(out, v);
  } else if (v instanceof Date) {
    writeDateTime(out, DateTime.fromDate(v));
  } else if (ArrayBuffer.isView(v) || v instanceof ArrayBuffer) {
    const b = v instanceof ArrayBuffer ? new Uint8Array(v) : new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
    out.byte(T.BLOB); writeUintData(out, b.length); out.bytes(b);
  } else {
    throw new TypeError(`cannot encode ${Object.prototype.toString.call(v)} as ChainPack`);
  }
}

function writeDouble(out, x) {
  const b = new Uint8Array(9);
  b[0] = T.DOUBLE;
  new DataView(b.buffer).setFloat64(1, x, true);
  out.bytes(b);
}

/** Encodes a value (see the mapping at the top) to ChainPack bytes. */
export function encode(value) {
  const out = new ByteSink();
  writeValue(out, value);
  return out.result();
}

// --- Decoder -----------------------------------------------------------------------

class Reader {
  constructor(bytes, maxDepth) {
    this.b = bytes;
    this.pos = 0;
    this.depth = 0;
    this.maxDepth = maxDepth;
  }
  fail(msg, at = this.pos) { throw new DecodeError(msg, at); }
  need(n) {
    if (n > this.b.length - this.pos) {
      this.fail(`truncated ChainPack: ${n} more byte(s) needed, ${this.b.length - this.pos} left`);
    }
  }
  byte() { this.need(1); return this.b[this.pos++]; }
  peek() { this.need(1); return this.b[this.pos]; }

  // Returns [value: bigint, bitLen] of the variable-length number format.
  uintBits() {
    const at = this.pos;
    const head = this.byte();
    let cnt, num, bitLen;
    if ((head & 0x80) === 0) return [BigInt(head & 0x7f), 7];
    if ((head & 0x40) === 0) { cnt = 1; num = head & 0x3f; bitLen = 14; }
    else if ((head & 0x20) === 0) { cnt = 2; num = head & 0x1f; bitLen = 21; }
    else if ((head & 0x10) === 0) { cnt = 3; num = head & 0x0f; bitLen = 28; }
    else if (head === 0xff) this.fail('TERM byte inside a number', at);
    else { cnt = (head & 0x0f) + 4; num = 0; bitLen = cnt * 8; }
    if (cnt > 8) this.fail(`number of ${cnt} bytes does not fit in 64 bits`, at);
    this.need(cnt);
    let n = BigInt(num);
    for (let i = 0; i < cnt; i++) n = (n << 8n) | BigInt(this.b[this.pos++]);
    return [n, bitLen];
  }
  uintData() { return this.uintBits()[0]; }
  intData() {
    const [n, bitLen] = this.uintBits();
    const sign = 1n << BigInt(bitLen - 1);
    return (n & sign) ? -(n & ~sign) : n;
  }
  length() {
    const n = this.uintData();
    if (n > BigInt(this.b.length - this.pos)) {
      this.fail(`truncated ChainPack: length ${n} exceeds the ${this.b.length - this.pos} byte(s) left`);
    }
    return Number(n);
  }

  enter() {
    if (++this.depth > this.maxDepth) this.fail(`nesting deeper than ${this.maxDepth} levels`);
  }

  value() {
    let meta = null;
    if (this.peek() === T.META) meta = this.metaMap();
    const v = this.plainValue();
    return meta ? new WithMeta(v, meta) : v;
  }

  metaMap() {
    this.enter();
    this.pos++;
    const m = new MetaMap();
    while (this.peek() !== T.TERM) {
      const at = this.pos;
      const k = this.plainValue();
      let key;
      if (typeof k === 'string') key = k;
      else if (typeof k === 'number' || typeof k === 'bigint') key = Number(k);
      else if (k instanceof UInt) key = Number(k.value);
      else this.fail('MetaMap key must be an Int or a String', at);
      m.set(key, this.value());
    }
    this.pos++;
    this.depth--;
    return m;
  }

  plainValue() {
    const at = this.pos;
    const t = this.byte();
    if (t < 0x40) return new UInt(t);
    if (t < 0x80) return t & 0x3f;
    switch (t) {
      case T.NULL: return null;
      case T.TRUE: return true;
      case T.FALSE: return false;
      case T.INT: return num(this.intData());
      case T.UINT: return new UInt(num(this.uintData()));
      case T.DOUBLE: {
        this.need(8);
        const x = new DataView(this.b.buffer, this.b.byteOffset + this.pos, 8).getFloat64(0, true);
        this.pos += 8;
        return Number.isInteger(x) || Object.is(x, -0) ? new Double(x) : x;
      }
      case T.DECIMAL: {
        const m = this.intData();
        const e = this.intData();
        if (e < -128n || e > 127n) this.fail(`Decimal exponent ${e} out of range`, at);
        return new Decimal(num(m), Number(e));
      }
      case T.DATETIME: return this.dateTime();
      case T.BLOB: {
        const n = this.length();
        const b = this.b.slice(this.pos, this.pos + n);
        this.pos += n;
        return b;
      }
      case T.STRING: {
        const n = this.length();
        const s = this.utf8(this.b.subarray(this.pos, this.pos + n), at);
        this.pos += n;
        return s;
      }
      case T.CSTRING: {
        const end = this.b.indexOf(0, this.pos);
        if (end < 0) this.fail('truncated ChainPack: CString without its terminating 0');
        const s = this.utf8(this.b.subarray(this.pos, end), at);
        this.pos = end + 1;
        return s;
      }
      case T.LIST: {
        this.enter();
        const l = [];
        while (this.peek() !== T.TERM) l.push(this.value());
        this.pos++;
        this.depth--;
        return l;
      }
      case T.MAP: {
        this.enter();
        const m = Object.create(null);
        while (this.peek() !== T.TERM) {
          if (this.peek() !== T.STRING) this.fail('Map key must be a String');
          const k = this.plainValue();
          m[k] = this.value();
        }
        this.pos++;
        this.depth--;
        return m;
      }
      case T.IMAP: {
        this.enter();
        const m = new IMap();
        while (this.peek() !== T.TERM) {
          const kat = this.pos;
          const k = this.plainValue();
          let key;
          if (typeof k === 'number' || typeof k === 'bigint') key = Number(k);
          else if (k instanceof UInt) key = Number(k.value);
          else this.fail('IMap key must be an Int', kat);
          m.set(key, this.value());
        }
        this.pos++;
        this.depth--;
        return m;
      }
      case T.META: return this.fail('MetaMap where a value was expected', at);
      case T.TERM: return this.fail('unexpected container end', at);
      default: return this.fail(`invalid ChainPack type byte 0x${t.toString(16)}`, at);
    }
  }

  utf8(bytes, at) {
    try { return utf8dec.decode(bytes); } catch { return this.fail('String is not valid UTF-8', at); }
  }

  dateTime() {
    let d = this.intData();
    const hasOffset = (d & 1n) !== 0n;
    const noMsec = (d & 2n) !== 0n;
    d >>= 2n;
    let offset = 0;
    if (hasOffset) {
      offset = Number(d & 0x7fn);
      if (offset >= 64) offset -= 128; // 7-bit two's complement
      d >>= 7n;
    }
    if (noMsec) d *= 1000n;
    return new DateTime(Number(d + SHV_EPOCH_MSEC), offset * 15 * 60);
  }
}

/** A bigint as a number when that is exact. */
function num(n) {
  return n >= -9007199254740991n && n <= 9007199254740991n ? Number(n) : n;
}

/**
 * Decodes one ChainPack value that must fill `bytes` exactly.
 * Throws DecodeError on truncated or malformed input, or nesting beyond maxDepth.
 */
export function decode(bytes, { maxDepth = MAX_DEPTH, allowTrailing = false } = {}) {
  const b = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  const r = new Reader(b, maxDepth);
  const v = r.value();
  if (!allowTrailing && r.pos !== b.length) {
    throw new DecodeError(`${b.length - r.pos} byte(s) after the value`, r.pos);
  }
  return v;
}

// --- Helpers -----------------------------------------------------------------------

/** The value without its meta. */
export function unwrap(v) { return v instanceof WithMeta ? v.value : v; }

/** The meta of a value (an empty MetaMap when it has none). */
export function metaOf(v) { return v instanceof WithMeta ? v.meta : new MetaMap(); }

/** An integer from the wire (Int or UInt) as a number, else undefined. */
export function toInt(v) {
  const x = unwrap(v);
  if (typeof x === 'number' && Number.isInteger(x)) return x;
  if (typeof x === 'bigint') return Number(x);
  if (x instanceof UInt) return Number(x.value);
  return undefined;
}

export function toHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

export function fromHex(hex) {
  const h = hex.replace(/\s+/g, '');
  if (h.length % 2 || /[^0-9a-fA-F]/.test(h)) throw new Error(`bad hex string: ${hex}`);
  const b = new Uint8Array(h.length / 2);
  for (let i = 0; i < b.length; i++) b[i] = parseInt(h.substr(i * 2, 2), 16);
  return b;
}
