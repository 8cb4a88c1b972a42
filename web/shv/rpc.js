// An SHV RPC client over WebSocket (subprotocol "shv3": one message per binary
// WebSocket message, a format byte 1 = ChainPack, then the message: MetaMap + IMap).
// Works with the browser's WebSocket and with the `ws` package in Node.

import {
  encode, decode, WithMeta, MetaMap, IMap, unwrap, toInt, toHex,
} from './chainpack.js';
import { shvLoginHash } from './sha1.js';

export const TAG = Object.freeze({
  META_TYPE_ID: 1, REQUEST_ID: 8, SHV_PATH: 9, METHOD: 10, CALLER_IDS: 11,
  REV_CALLER_IDS: 13, ACCESS: 14, TUNNEL_CTL: 15, USER_ID: 16, ACCESS_LEVEL: 17, SOURCE: 19,
});
export const KEY = Object.freeze({ PARAM: 1, RESULT: 2, ERROR: 3, DELAY: 4, ABORT: 5 });
export const ERR = Object.freeze({
  METHOD_NOT_FOUND: 2, INVALID_PARAM: 3, METHOD_CALL_EXCEPTION: 8, LOGIN_REQUIRED: 10,
  NOT_IMPLEMENTED: 12, TRY_AGAIN_LATER: 13, REQUEST_INVALID: 14,
});

const FORMAT_CHAINPACK = 1;

/** An error the peer answered (code and message from the wire). */
export class RpcError extends Error {
  constructor(code, message, data) {
    super(message || `RPC error ${code}`);
    this.name = 'RpcError';
    this.code = code;
    this.data = data;
  }
}
/** The connection could not be made, or was lost. */
export class ConnectionError extends Error {
  constructor(message) { super(message); this.name = 'ConnectionError'; }
}
export class LoginError extends Error {
  constructor(message) { super(message); this.name = 'LoginError'; }
}
export class TimeoutError extends Error {
  constructor(message) { super(message); this.name = 'TimeoutError'; }
}

/** A CallerIds/RevCallerIds stack from the wire: null/absent = [], Int = [x]. */
export function stackFromValue(v) {
  const x = unwrap(v);
  if (x === null || x === undefined) return [];
  if (Array.isArray(x)) return x.map(toInt).filter((n) => n !== undefined);
  const n = toInt(x);
  return n === undefined ? [] : [n];
}
/** The wire form of a stack: one element as an Int, more as a List. */
export function stackToValue(s) { return s.length === 1 ? s[0] : [...s]; }

/** Builds an RPC message (a WithMeta of MetaMap + IMap body). */
export function makeMessage(meta, body = new IMap()) {
  return new WithMeta(body instanceof IMap ? body : new IMap(body), new MetaMap([[TAG.META_TYPE_ID, 1], ...meta]));
}

function errorFromBody(body) {
  const e = unwrap(body.get(KEY.ERROR));
  if (e instanceof IMap) return new RpcError(toInt(e.get(1)) ?? 0, String(unwrap(e.get(2)) ?? ''), e.get(3));
  // Older peers use a Map {"code", "message"}.
  if (e && typeof e === 'object') return new RpcError(toInt(e.code) ?? 0, String(e.message ?? ''));
  return new RpcError(0, 'malformed error');
}

export class RpcClient {
  /**
   * Opens a WebSocket to `url`, says hello and logs in with SHA1.
   * @param {string} url ws://host:port[/path] or wss://…
   * @param {object} o user, password, WebSocket (constructor; default globalThis.WebSocket),
   *   timeout (ms per call, default 10 s), pingInterval (ms, default 30 s), userAgent
   */
  static async connect(url, o = {}) {
    const client = new RpcClient(o);
    await client.#open(url);
    try {
      await client.#login(o.user ?? '', o.password ?? '', o.userAgent);
    } catch (e) {
      client.close();
      throw e;
    }
    client.#startPing();
    return client;
  }

  #ws = null;
  #nextId = 1;
  #pending = new Map(); // request id -> {resolve, reject, timer}
  #streams = new Map(); // request id -> handler(msg) for tunnel traffic
  #signalHandlers = new Set();
  #closeHandlers = new Set();
  #pingTimer = null;
  #closed = false;
  #opts;

  constructor(opts) {
    this.#opts = { timeout: 10000, pingInterval: 30000, ...opts };
    this.closeReason = null;
  }

  get isOpen() { return !this.#closed; }

  #open(url) {
    const WS = this.#opts.WebSocket ?? globalThis.WebSocket;
    if (!WS) throw new ConnectionError('no WebSocket implementation');
    return new Promise((resolve, reject) => {
      let ws;
      try {
        ws = new WS(url, 'shv3');
      } catch (e) {
        reject(new ConnectionError(`cannot connect to ${url}: ${e.message}`));
        return;
      }
      ws.binaryType = 'arraybuffer';
      this.#ws = ws;
      let opened = false;
      ws.onopen = () => {
        opened = true;
        if (ws.protocol !== 'shv3') {
          ws.close();
          reject(new ConnectionError(`${url} did not accept the shv3 WebSocket subprotocol`));
          return;
        }
        resolve();
      };
      ws.onerror = () => {
        // The browser hides the reason; onclose follows with a code.
        if (!opened) reject(new ConnectionError(`cannot connect to ${url}`));
      };
      ws.onclose = (ev) => {
        if (!opened) reject(new ConnectionError(`cannot connect to ${url}`));
        this.#shutdown(`connection to the broker lost${ev && ev.code && ev.code !== 1000 && ev.code !== 1005 ? ` (WebSocket close ${ev.code})` : ''}`);
      };
      ws.onmessage = (ev) => this.#onMessage(ev.data);
    });
  }

  async #login(user, password, userAgent) {
    const hello = unwrap(await this.call('', 'hello'));
    const nonce = hello && typeof hello.nonce === 'string' ? hello.nonce : null;
    if (!nonce) throw new LoginError('the broker sent no login nonce');
    const param = {
      login: { user, password: shvLoginHash(nonce, password), type: 'SHA1' },
      options: {
        idleWatchDogTimeOut: 180,
        userAgent: userAgent ?? 'shv-web-terminal',
      },
    };
    try {
      await this.call('', 'login', param);
    } catch (e) {
      if (e instanceof RpcError) throw new LoginError(e.message || 'login failed');
      throw e;
    }
  }

  #startPing() {
    // The broker drops clients that send nothing for its idle timeout (default 180 s).
    const every = this.#opts.pingInterval;
    if (!every) return;
    this.#pingTimer = setInterval(() => {
      this.call('.app', 'ping').catch(() => {});
    }, every);
    this.#pingTimer.unref?.(); // Node: do not keep the process alive for pings
  }

  #onMessage(data) {
    const bytes = new Uint8Array(data instanceof ArrayBuffer ? data : data.buffer ?? data);
    if (bytes.length === 0 || bytes[0] !== FORMAT_CHAINPACK) return; // ResetSession/unknown
    let msg;
    try {
      msg = decode(bytes.subarray(1));
    } catch (e) {
      console.warn(`shv: dropping undecodable message: ${e.message}`);
      return;
    }
    if (!(msg instanceof WithMeta) || !(msg.value instanceof IMap)) return;
    const rid = toInt(msg.meta.get(TAG.REQUEST_ID));
    const method = unwrap(msg.meta.get(TAG.METHOD));
    if (rid !== undefined && typeof method === 'string') {
      this.#answerRequest(msg, method);
      return;
    }
    if (rid === undefined) {
      if (typeof method === 'string') {
        const sig = {
          path: String(unwrap(msg.meta.get(TAG.SHV_PATH)) ?? ''),
          signal: method,
          source: String(unwrap(msg.meta.get(TAG.SOURCE)) ?? 'get'),
          param: msg.value.get(KEY.PARAM) ?? null,
        };
        for (const h of this.#signalHandlers) h(sig);
      }
      return;
    }
    const stream = this.#streams.get(rid);
    if (stream) {
      stream(msg);
      return;
    }
    const p = this.#pending.get(rid);
    if (!p) return;
    const body = msg.value;
    // A Delay-only response is progress: keep waiting.
    if (!body.has(KEY.RESULT) && !body.has(KEY.ERROR) && body.has(KEY.DELAY)) return;
    this.#pending.delete(rid);
    clearTimeout(p.timer);
    if (body.has(KEY.ERROR)) p.reject(errorFromBody(body));
    else p.resolve(body.get(KEY.RESULT) ?? null);
  }

  // A request from the broker to us (we mount nothing, so little is expected).
  #answerRequest(msg, method) {
    const path = String(unwrap(msg.meta.get(TAG.SHV_PATH)) ?? '');
    const meta = [[TAG.REQUEST_ID, msg.meta.get(TAG.REQUEST_ID)]];
    if (msg.meta.has(TAG.CALLER_IDS)) meta.push([TAG.CALLER_IDS, msg.meta.get(TAG.CALLER_IDS)]);
    let body;
    if (path === '.app' && method === 'ping') body = [[KEY.RESULT, null]];
    else if (path === '' && method === 'ls') body = [[KEY.RESULT, []]];
    else {
      body = [[KEY.ERROR, new IMap([[1, ERR.METHOD_NOT_FOUND], [2, `method '${path}:${method}' not found`]])]];
    }
    this.sendMessage(makeMessage(meta, body));
  }

  #shutdown(reason) {
    if (this.#closed) return;
    this.#closed = true;
    this.closeReason = reason;
    clearInterval(this.#pingTimer);
    const err = new ConnectionError(reason);
    for (const p of this.#pending.values()) {
      clearTimeout(p.timer);
      p.reject(err);
    }
    this.#pending.clear();
    for (const s of [...this.#streams.values()]) s(null); // null = connection gone
    this.#streams.clear();
    for (const h of this.#closeHandlers) h(reason);
  }

  /** Allocates a request id (also used by tunnels). */
  nextRequestId() { return this.#nextId++; }

  /** Sends a message built with makeMessage. Throws ConnectionError when closed. */
  sendMessage(msg) {
    if (this.#closed || this.#ws.readyState !== 1) throw new ConnectionError(this.closeReason ?? 'not connected');
    const body = encode(msg);
    const frame = new Uint8Array(body.length + 1);
    frame[0] = FORMAT_CHAINPACK;
    frame.set(body, 1);
    this.#ws.send(frame);
  }

  /** Bytes the WebSocket has queued but not yet sent (for back-pressure). */
  get bufferedAmount() { return this.#ws?.bufferedAmount ?? 0; }

  /**
   * Calls `path:method(param)`; resolves with the result, rejects with RpcError (the
   * peer's error), TimeoutError or ConnectionError.
   */
  call(path, method, param, { timeout = this.#opts.timeout } = {}) {
    const id = this.nextRequestId();
    const meta = [[TAG.REQUEST_ID, id], [TAG.SHV_PATH, path], [TAG.METHOD, method]];
    const body = param === undefined ? [] : [[KEY.PARAM, param]];
    return new Promise((resolve, reject) => {
      try {
        this.sendMessage(makeMessage(meta, body));
      } catch (e) {
        reject(e);
        return;
      }
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new TimeoutError(`${path}:${method} did not answer within ${timeout / 1000} s`));
      }, timeout);
      this.#pending.set(id, { resolve, reject, timer });
    });
  }

  /** Child names of a node. */
  async ls(path) {
    const r = unwrap(await this.call(path, 'ls'));
    return Array.isArray(r) ? r.map((x) => String(unwrap(x))) : [];
  }

  /** Methods of a node as [{name, flags, param, result, access, signals}]. */
  async dir(path) {
    const r = unwrap(await this.call(path, 'dir'));
    if (!Array.isArray(r)) return [];
    return r.map((d) => {
      const m = unwrap(d);
      const get = (k, name) => unwrap(m instanceof IMap ? m.get(k) : m?.[name]);
      return {
        name: String(get(1, 'name') ?? ''),
        flags: toInt(get(2, 'flags')) ?? 0,
        param: get(3, 'param') ?? null,
        result: get(4, 'result') ?? null,
        access: get(5, 'access') ?? null,
        signals: get(6, 'signals') ?? null,
      };
    });
  }

  /** Whether `path` has `method` (dir with a String param answers a Bool). */
  async hasMethod(path, method) {
    return unwrap(await this.call(path, 'dir', method)) === true;
  }

  /** Registers a handler for every response with request id `rid` (tunnels). */
  registerStream(rid, handler) { this.#streams.set(rid, handler); }
  unregisterStream(rid) { this.#streams.delete(rid); }

  onSignal(h) { this.#signalHandlers.add(h); return () => this.#signalHandlers.delete(h); }
  onClose(h) { this.#closeHandlers.add(h); return () => this.#closeHandlers.delete(h); }

  /** Closes the connection (pending calls fail with ConnectionError). */
  close() {
    try { this.#ws?.close(1000); } catch { /* already closed */ }
    this.#shutdown('connection closed');
  }
}

export { toHex };
