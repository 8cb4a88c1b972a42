#!/usr/bin/env node
// Regenerates tests/vectors/chainpack.json from the Rust side, without cargo:
// a stand-in broker on 127.0.0.1 lets the real `shvcall` binary log in, then
//  - "both" vectors: shvcall parses the Cpon parameter and sends it; the parameter's
//    bytes in its request are the Rust (shvproto) ChainPack encoding. We answer with
//    the same bytes as the result and shvcall prints them back as Cpon (Rust decoder
//    and Cpon writer), which is the canonical Cpon stored in the file.
//  - "decode" vectors (values Cpon cannot express: Doubles, UInt above i64::MAX): we
//    answer with the given bytes and record the Cpon shvcall prints.
// Usage: node tools/gen-vectors.mjs [--check]   (SHV_BIN_DIR, default ../target/debug)

import net from 'node:net';
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  decode, encode, toHex, fromHex, WithMeta, MetaMap, IMap,
} from '../shv/chainpack.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const binDir = path.resolve(here, '..', process.env.SHV_BIN_DIR ?? '../target/debug');
const outFile = path.resolve(here, '../../tests/vectors/chainpack.json');

const allBytes = Array.from({ length: 256 }, (_, i) => (i < 0x20 || i >= 0x7f || i === 0x22 || i === 0x5c
  ? '\\' + i.toString(16).padStart(2, '0') : String.fromCharCode(i))).join('');

const both = [
  ['null', 'null'], ['true', 'true'], ['false', 'false'],
  ['uint tiny 0', '0u'], ['uint tiny 63', '63u'], ['uint 64 (1+1 bytes)', '64u'],
  ['uint 127', '127u'], ['uint 128', '128u'], ['uint 16383 (2 bytes max)', '16383u'],
  ['uint 16384 (3 bytes)', '16384u'], ['uint 2097151', '2097151u'], ['uint 2097152 (4 bytes)', '2097152u'],
  ['uint 268435455 (28 bits)', '268435455u'], ['uint 268435456 (5 bytes)', '268435456u'],
  ['uint 4294967295', '4294967295u'], ['uint 2^40', '1099511627776u'],
  ['uint 2^53', '9007199254740992u'], ['uint i64 max', '9223372036854775807u'],
  ['int tiny 0', '0'], ['int tiny 1', '1'], ['int tiny 63', '63'], ['int 64', '64'],
  ['int -1', '-1'], ['int -63', '-63'], ['int -64', '-64'], ['int -65', '-65'],
  ['int 127', '127'], ['int 128', '128'], ['int 8191 (2 bytes max)', '8191'], ['int 8192 (3 bytes)', '8192'],
  ['int -8191', '-8191'], ['int -8192', '-8192'], ['int 1048575', '1048575'], ['int 1048576 (4 bytes)', '1048576'],
  ['int -1048576', '-1048576'], ['int 134217727 (28 bits)', '134217727'], ['int 134217728 (5 bytes)', '134217728'],
  ['int -134217728', '-134217728'], ['int 2^31-1', '2147483647'], ['int -2^31', '-2147483648'],
  ['int 2^40', '1099511627776'], ['int -2^40', '-1099511627776'],
  ['int 2^53-1 (JS safe max)', '9007199254740991'], ['int -(2^53-1)', '-9007199254740991'],
  ['int 2^53+1 (bigint in JS)', '9007199254740993'], ['int 5489328932823932', '5489328932823932'],
  ['int i64 max', '9223372036854775807'], ['int -(i64 max)', '-9223372036854775807'],
  ['decimal 1.5', '1.5'], ['decimal 123.45', '123.45'], ['decimal -0.005', '-0.005'],
  ['decimal 42.', '42.'], ['decimal 1e10', '1e10'], ['decimal 1.23e-10', '1.23e-10'], ['decimal 12300.', '123e2'],
  ['datetime shv epoch', 'd"2018-02-02T00:00:00Z"'], ['datetime with msec', 'd"2024-03-01T12:34:56.789Z"'],
  ['datetime +05', 'd"2021-11-08T01:02:03+05"'], ['datetime -0815 with msec', 'd"2021-11-08T01:02:03.456-0815"'],
  ['datetime before the shv epoch', 'd"2017-05-03T18:30:00Z"'], ['datetime 1970', 'd"1970-01-01T00:00:01Z"'],
  ['string empty', '""'], ['string ascii', '"hello"'], ['string utf-8 czech', '"Příliš žluťoučký kůň"'],
  ['string utf-8 emoji and cjk', '"😀 漢字 ∑"'], ['string escapes', '"a\\"b\\\\c\\nd\\te\\rf\\0g"'],
  ['string 200 chars (2-byte length)', `"${'x'.repeat(200)}"`],
  ['blob empty', 'b""'], ['blob ascii', 'b"hello"'], ['blob all 256 byte values', `b"${allBytes}"`],
  ['blob 300 bytes', `x"${'a5'.repeat(300)}"`],
  ['list empty', '[]'], ['list ints', '[1,2,3]'], ['list mixed', '[null,true,"s",-5,7u,b"\\00\\ff"]'],
  ['list nested', '[[[]],[[1]],[]]'],
  ['map empty', '{}'], ['map simple', '{"a":1,"b":[true,null]}'], ['map keys sorted', '{"zeta":1,"alpha":2,"Mid":3}'],
  ['map nested', '{"x":{"y":{"z":[1,{"w":"deep"}]}}}'], ['map utf-8 key', '{"klíč":"hodnota"}'],
  ['imap empty', 'i{}'], ['imap simple', 'i{1:"a",2:i{3:null}}'], ['imap negative and big keys', 'i{-1:1,0:2,64:3,1000:4}'],
  ['meta on null', '<1:1>null'], ['meta int and string keys', '<"s":"x",2:3,"t":[1,2]>[1]'],
  ['meta in a list item', '[<1:2>3,<"a":true>{}]'], ['meta on map', '<8:1,10:"x">{"k":"v"}'],
  ['meta nested in meta', '<1:<2:3>4>5'],
  ['rpc request ls', '<1:1,8:42,9:"test/agent",10:"ls">i{1:null}'],
  ['rpc request hello', '<1:1,8:1,10:"hello">i{}'],
  ['rpc request login sha1', '<1:1,8:2,10:"login">i{1:{"login":{"password":"2ad5a7d5f36f2c3c5b1e6d9d1ee4aa08aba7b5d5","type":"SHA1","user":"admin"},"options":{"idleWatchDogTimeOut":180}}}'],
  ['rpc request with caller ids', '<1:1,8:7,9:"test/agent",10:"launchRexec",11:[3,12],17:63>i{1:{"method":"runPtyCmd","params":{"cmd":[],"cols":80,"env":{"TERM":"xterm-256color"},"rows":24}}}'],
  ['rpc response result', '<1:1,8:42,11:3>i{2:["a","b",".app"]}'],
  ['rpc response error', '<1:1,8:43>i{3:i{1:2,2:"Method \'foo\' not found"}}'],
  ['rpc signal chng', '<1:1,9:"test/dev/number",10:"chng",19:"get">i{1:7}'],
  ['tunnel find request', '<1:1,8:7,11:12,13:null,15:<1:3>i{1:1,7:"nonce1"}>i{}'],
  ['tunnel create request', '<1:1,8:7,11:[3,12],13:null,15:<1:3>i{1:3,2:"127.0.0.1",3:3755,5:9,6:[3,12]}>i{}'],
  ['tunnel create response', '<1:1,8:9,11:5,13:null,15:<1:3>i{1:4}>i{}'],
  ['tunnel data', '<1:1,8:7,11:[3,12]>i{2:[1,b"hi\\r\\n"]}'],
  ['tunnel control resize', '<1:1,8:9,11:5>i{2:[3,{"resize":[120,40]}]}'],
  ['tunnel control ack', '<1:1,8:9,11:5>i{2:[3,{"ack":6144}]}'],
  ['tunnel close exit code', '<1:1,8:7,11:12,15:<1:3>i{1:5}>i{2:{"exitCode":3}}'],
];

function f64(x) {
  const b = new Uint8Array(9);
  b[0] = 0x83;
  new DataView(b.buffer).setFloat64(1, x, true);
  return toHex(b);
}
const decodeOnly = [
  ['double 0.5', f64(0.5)], ['double -1234.5678', f64(-1234.5678)], ['double 1.0 (integral)', f64(1)],
  ['double 0.1', f64(0.1)], ['double 1e-7', f64(1e-7)], ['double 1e21', f64(1e21)],
  ['double -2.5e-3', f64(-2.5e-3)], ['double in a list', `88${f64(3.25).toString()}${f64(-0.125)}ff`],
  ['uint u64 max', '81f4ffffffffffffffff'],
];

// --- a stand-in broker -------------------------------------------------------------

function readUint(b, pos) {
  const head = b[pos];
  if (head === undefined) return null;
  let cnt; let n;
  if ((head & 0x80) === 0) return [head, pos + 1];
  if ((head & 0x40) === 0) { cnt = 1; n = head & 0x3f; } else if ((head & 0x20) === 0) { cnt = 2; n = head & 0x1f; } else if ((head & 0x10) === 0) { cnt = 3; n = head & 0x0f; } else { cnt = (head & 0x0f) + 4; n = 0; }
  if (pos + 1 + cnt > b.length) return null;
  for (let i = 0; i < cnt; i++) n = n * 256 + b[pos + 1 + i];
  return [n, pos + 1 + cnt];
}
function block(msg) {
  const len = msg.length + 1;
  const hdr = len < 128 ? [len] : len < 16384 ? [0x80 | (len >> 8), len & 0xff] : [0xc0 | (len >> 16), (len >> 8) & 0xff, len & 0xff];
  return Buffer.concat([Buffer.from(hdr), Buffer.from([1]), Buffer.from(msg)]);
}
function response(id, bodyBytes) {
  const meta = encode(new WithMeta(null, new MetaMap([[1, 1], [8, id]])));
  return block(Buffer.concat([Buffer.from(meta.subarray(0, meta.length - 1)), Buffer.from(bodyBytes)]));
}

// One shvcall session: returns {paramHex, printed}.
function session(cponParam, resultHex) {
  return new Promise((resolve, reject) => {
    let paramHex = null;
    const server = net.createServer((sock) => {
      let buf = Buffer.alloc(0);
      sock.on('data', (d) => {
        buf = Buffer.concat([buf, d]);
        for (;;) {
          const h = readUint(buf, 0);
          if (!h || h[1] + h[0] > buf.length) break;
          const payload = new Uint8Array(buf.subarray(h[1] + 1, h[1] + h[0]));
          buf = buf.subarray(h[1] + h[0]);
          const msg = decode(payload);
          const id = msg.meta.get(8);
          const method = msg.meta.get(10);
          if (method === 'hello') sock.write(response(id, encode(new IMap([[2, { nonce: 'abcdefghijklmnop' }]]))));
          else if (method === 'login') sock.write(response(id, encode(new IMap([[2, null]]))));
          else {
            let result;
            if (resultHex) result = fromHex(resultHex);
            else {
              // Locate the parameter's own bytes: meta, then 8a 41 <param> ff.
              const metaBytes = encode(new WithMeta(null, msg.meta)).subarray(0, -1);
              const start = metaBytes.length;
              if (toHex(payload.subarray(0, start)) !== toHex(metaBytes)
                || payload[start] !== 0x8a || payload[start + 1] !== 0x41 || payload.at(-1) !== 0xff) {
                reject(new Error(`unexpected request layout: ${toHex(payload)}`));
                return;
              }
              result = payload.subarray(start + 2, payload.length - 1);
              paramHex = toHex(result);
            }
            sock.write(response(id, Buffer.concat([Buffer.from([0x8a, 0x42]), Buffer.from(result), Buffer.from([0xff])])));
          }
        }
      });
      sock.on('error', () => {});
    });
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      const args = [`tcp://admin@127.0.0.1:${port}?password=admin`, 'test', 'echo'];
      if (cponParam !== null) args.push('--', cponParam);
      const p = spawn(path.join(binDir, 'shvcall'), args, { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = ''; let err = '';
      p.stdout.on('data', (d) => { out += d; });
      p.stderr.on('data', (d) => { err += d; });
      p.on('close', (code) => {
        server.close();
        if (code !== 0) reject(new Error(`shvcall ${cponParam ?? resultHex} failed (${code}): ${err}`));
        else resolve({ paramHex, printed: out.replace(/\n$/, '') });
      });
    });
  });
}

const vectors = [];
for (const [name, cpon] of both) {
  const { paramHex, printed } = await session(cpon, null);
  // "both" only when Rust parses its own Cpon output back to the same bytes.
  const again = printed === cpon ? paramHex : (await session(printed, null)).paramHex;
  vectors.push({ name, cpon: printed, chainpack_hex: paramHex, direction: again === paramHex ? 'both' : 'decode' });
}
for (const [name, hex] of decodeOnly) {
  const { printed } = await session(null, hex);
  vectors.push({ name, cpon: printed, chainpack_hex: hex, direction: 'decode' });
}

const text = `${JSON.stringify(vectors, null, 1)}\n`;
if (process.argv.includes('--check')) {
  const old = readFileSync(outFile, 'utf8');
  if (old !== text) { console.error(`${outFile} differs from what the Rust binaries produce`); process.exit(1); }
  console.log(`${outFile}: ${vectors.length} vectors agree with the Rust binaries`);
} else {
  writeFileSync(outFile, text);
  console.log(`wrote ${vectors.length} vectors to ${outFile}`);
}
