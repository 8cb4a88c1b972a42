// The operator ("rsh") end of an SHV TunnelCtl tunnel (shared/spec/tunnel.md):
//
//   us    --launchRexec(R)-------------------------------> agent
//   rexec --<8:R, 13:rcid, 15:{1:3 CreateTunnelRequest, 5:W}>--> us
//   us    --<8:W, 11:rcid, 13:null, 15:{1:4 CreateTunnelResponse}>--> rexec
//   data   rexec -> us on R: [1|2, blob];  us -> rexec on W: [0, blob], [3, {control}]
//   close  <15:{1:5 CloseTunnel}> i{2: {"exitCode"|"signal"|"error": …}}
//
// Every frame is an RPC *response*; brokers route ours by the CallerIds we learnt from
// the RevCallerIds of rexec's CreateTunnelRequest.
//
// Flow control (our Rust endpoint's [ext]): each side keeps at most FLOW_WINDOW
// "cost" units unacknowledged, a data frame costing its length + FRAME_COST, and the
// receiver acknowledges consumed cost with {"ack": n} on channel 3 once a quarter
// window has gathered. We ack what the terminal has actually written.

import { IMap, MetaMap, WithMeta, unwrap, toInt } from './chainpack.js';
import {
  TAG, KEY, ERR, RpcError, ConnectionError, TimeoutError, makeMessage, stackFromValue, stackToValue,
} from './rpc.js';

export const STATE = Object.freeze({
  FIND_TUNNEL_REQUEST: 1, FIND_TUNNEL_RESPONSE: 2, CREATE_TUNNEL_REQUEST: 3,
  CREATE_TUNNEL_RESPONSE: 4, CLOSE_TUNNEL: 5,
});
export const CHANNEL = Object.freeze({ STDIN: 0, STDOUT: 1, STDERR: 2, CONTROL: 3 });
export const FLOW_WINDOW = 2 * 1024 * 1024;
export const FRAME_COST = 4096;
export const MAX_CHUNK = 256 * 1024;
const ACK_THRESHOLD = FLOW_WINDOW / 4;

/** The tunnel could not be opened, or failed (reason from the far side or a broker). */
export class TunnelError extends Error {
  constructor(message, kind = 'failed') {
    super(message);
    this.name = 'TunnelError';
    this.kind = kind; // failed | not-found | not-agent | access-denied | timeout | disconnected
  }
}

function tunnelCtl(state) {
  return new WithMeta(new IMap([[1, state]]), new MetaMap([[TAG.META_TYPE_ID, 3]]));
}

function ctlState(msg) {
  const c = unwrap(msg.meta.get(TAG.TUNNEL_CTL));
  return c instanceof IMap ? toInt(c.get(1)) : undefined;
}

/** {exitCode}|{signal}|{error}|{detached: true} from a CloseTunnel message. */
function closeStatus(msg) {
  const body = msg.value;
  if (body.has(KEY.ERROR)) {
    const e = unwrap(body.get(KEY.ERROR));
    return { error: String(unwrap(e instanceof IMap ? e.get(2) : e?.message) ?? 'tunnel error') };
  }
  const r = unwrap(body.get(KEY.RESULT));
  if (r && typeof r === 'object' && !(r instanceof IMap) && !Array.isArray(r)) {
    if (r.error !== undefined) return { error: String(unwrap(r.error)) };
    if (toInt(r.exitCode) !== undefined) return { exitCode: toInt(r.exitCode) };
    if (toInt(r.signal) !== undefined) return { signal: toInt(r.signal) };
  }
  return { detached: true };
}

/** One line for a close status, e.g. "exited with status 3". */
export function describeClose(st) {
  if (st.exitCode !== undefined) return `exited with status ${st.exitCode}`;
  if (st.signal !== undefined) return `killed by signal ${st.signal}`;
  if (st.error !== undefined) return `tunnel failed: ${st.error}`;
  return 'the remote side closed the session';
}

/**
 * Tells "no such path", "not an agent" and "no access" apart after launchRexec failed
 * with MethodNotFound (the broker answers all three with that code).
 */
export async function diagnoseLaunchError(client, path, err) {
  if (!(err instanceof RpcError)) return err;
  if (err.code !== ERR.METHOD_NOT_FOUND) return new TunnelError(err.message || `launchRexec failed (${err.code})`);
  try {
    const has = await client.hasMethod(path, 'launchRexec');
    return has
      ? new TunnelError(`access denied: you may not open a shell on ${path} (${err.message})`, 'access-denied')
      : new TunnelError(`${path} is not an shvagent (it has no launchRexec method)`, 'not-agent');
  } catch {
    return new TunnelError(`unknown agent: no such path '${path}'`, 'not-found');
  }
}

export class Tunnel {
  /**
   * @param {import('./rpc.js').RpcClient} client a logged-in client
   * @param {string} agentPath e.g. "test/agent"
   * @param {object} o cmd (List of Strings; [] = login shell), cols, rows, env (Map),
   *   cwd, pty (default true), timeout (ms to open, default 30 s),
   *   onData(bytes, channel) — call consumed(bytes.length) once they were displayed,
   *   onClose(status) — {exitCode}|{signal}|{error}|{detached},
   *   onNotice(text) — a broker's line for the operator (shown, never interpreted)
   */
  constructor(client, agentPath, o = {}) {
    this.client = client;
    this.agentPath = agentPath;
    this.o = { cmd: [], cols: 80, rows: 24, env: { TERM: 'xterm-256color' }, pty: true, timeout: 30000, ...o };
    this.state = 'new'; // new | opening | open | closed
    this.status = null;
    this.recvId = null; // R
    this.sendId = null; // W
    this.sendCids = [];
    this.window = FLOW_WINDOW; // cost we may still send
    this.outQueue = []; // [channel, Uint8Array] waiting for the window / the open
    this.unacked = 0; // consumed cost not yet acknowledged to the far side
    this.pendingResize = null;
    this.bytesIn = 0;
    this.bytesOut = 0;
  }

  /** Calls launchRexec and completes the handshake; rejects with TunnelError. */
  open() {
    if (this.state !== 'new') throw new Error('open() called twice');
    this.state = 'opening';
    const { client } = this;
    const rid = client.nextRequestId();
    this.recvId = rid;
    const params = { cmd: this.o.cmd, env: this.o.env };
    if (this.o.pty) { params.cols = this.o.cols; params.rows = this.o.rows; }
    if (this.o.cwd) params.cwd = this.o.cwd;
    const launch = { method: this.o.pty ? 'runPtyCmd' : 'runCmd', params };
    return new Promise((resolve, reject) => {
      const fail = (err) => {
        clearTimeout(timer);
        client.unregisterStream(rid);
        this.state = 'closed';
        this.status = { error: err.message };
        reject(err);
      };
      const timer = setTimeout(() => fail(new TunnelError(
        `the tunnel did not open within ${this.o.timeout / 1000} s`, 'timeout')), this.o.timeout);
      client.registerStream(rid, (msg) => {
        if (msg === null) { fail(new TunnelError(client.closeReason ?? 'connection to the broker lost', 'disconnected')); return; }
        const state = ctlState(msg);
        if (state === STATE.CREATE_TUNNEL_REQUEST) {
          const ctl = unwrap(msg.meta.get(TAG.TUNNEL_CTL));
          const w = toInt(ctl.get(5));
          if (w === undefined) { fail(new TunnelError('CreateTunnelRequest without RequestId')); return; }
          this.sendId = w;
          this.sendCids = stackFromValue(msg.meta.get(TAG.REV_CALLER_IDS));
          clearTimeout(timer);
          try {
            this.#sendFrame(true, tunnelCtl(STATE.CREATE_TUNNEL_RESPONSE));
          } catch (e) { fail(new TunnelError(e.message, 'disconnected')); return; }
          this.state = 'open';
          client.registerStream(rid, (m) => this.#onFrame(m));
          if (this.pendingResize) this.resize(...this.pendingResize);
          this.#flush();
          resolve(this);
        } else if (state === STATE.CLOSE_TUNNEL) {
          const st = closeStatus(msg);
          fail(new TunnelError(st.error ?? 'the tunnel was closed before it opened'));
        } else if (state === STATE.FIND_TUNNEL_REQUEST) {
          fail(new TunnelError('the broker does not support tunnels (FindTunnelRequest reached the client)'));
        } else if (state === undefined) {
          if (msg.value.has(KEY.ERROR)) {
            const e = unwrap(msg.value.get(KEY.ERROR));
            const err = new RpcError(toInt(e?.get?.(1)) ?? 0, String(unwrap(e?.get?.(2)) ?? ''));
            clearTimeout(timer);
            client.unregisterStream(rid);
            diagnoseLaunchError(client, this.agentPath, err).then(fail, fail);
          } else if (!msg.value.has(KEY.DELAY)) {
            fail(new TunnelError('launchRexec answered a plain result, not a tunnel'));
          }
        }
        // Other TunnelCtl states (a late FindTunnelResponse…) carry nothing for us.
      });
      try {
        client.sendMessage(makeMessage(
          [[TAG.REQUEST_ID, rid], [TAG.SHV_PATH, this.agentPath], [TAG.METHOD, 'launchRexec']],
          [[KEY.PARAM, launch]],
        ));
      } catch (e) {
        fail(e instanceof ConnectionError ? new TunnelError(e.message, 'disconnected') : e);
      }
    });
  }

  #sendFrame(revCallerIds, ctl, result) {
    const meta = [[TAG.REQUEST_ID, this.sendId]];
    if (this.sendCids.length) meta.push([TAG.CALLER_IDS, stackToValue(this.sendCids)]);
    if (revCallerIds) meta.push([TAG.REV_CALLER_IDS, null]);
    if (ctl) meta.push([TAG.TUNNEL_CTL, ctl]);
    this.client.sendMessage(makeMessage(meta, result === undefined ? [] : [[KEY.RESULT, result]]));
  }

  #onFrame(msg) {
    if (this.state === 'closed') return;
    if (msg === null) { this.#finish({ error: this.client.closeReason ?? 'connection to the broker lost' }); return; }
    const state = ctlState(msg);
    if (state === STATE.CLOSE_TUNNEL) { this.#finish(closeStatus(msg)); return; }
    if (state !== undefined) return; // late handshake frames
    const body = msg.value;
    if (body.has(KEY.ERROR)) { this.#finish(closeStatus(msg)); return; }
    const r = unwrap(body.get(KEY.RESULT));
    if (!Array.isArray(r) || r.length < 2) return;
    const ch = toInt(r[0]);
    const payload = unwrap(r[1]);
    if (ch === CHANNEL.CONTROL) {
      const ack = payload && typeof payload === 'object' ? toInt(payload.ack) : undefined;
      if (ack !== undefined && ack > 0) {
        this.window = Math.min(FLOW_WINDOW, this.window + ack);
        this.#flush();
      }
      // A broker's notice for the operator (a session about to be ended by policy).
      const notice = payload && typeof payload === 'object' ? unwrap(payload.notice) : undefined;
      if (typeof notice === 'string') this.o.onNotice?.(notice.slice(0, 1024));
      return;
    }
    let bytes;
    if (payload instanceof Uint8Array) bytes = payload;
    else if (typeof payload === 'string') bytes = new TextEncoder().encode(payload); // old peers
    else return;
    this.bytesIn += bytes.length;
    if (this.o.onData) this.o.onData(bytes, ch);
    else this.consumed(bytes.length);
  }

  /** The application has displayed one data frame of `n` bytes: acknowledge it. */
  consumed(n) {
    if (this.state !== 'open') return;
    this.unacked += n + FRAME_COST;
    if (this.unacked >= ACK_THRESHOLD) {
      const ack = this.unacked;
      this.unacked = 0;
      this.#sendControl({ ack });
    }
  }

  /** Sends bytes to the command's stdin (queued until the tunnel is open / has window). */
  write(data) {
    if (this.state === 'closed') return;
    const bytes = typeof data === 'string' ? new TextEncoder().encode(data) : data;
    for (let off = 0; off < bytes.length; off += MAX_CHUNK) {
      this.outQueue.push(bytes.subarray(off, off + MAX_CHUNK));
    }
    this.#flush();
  }

  #flush() {
    if (this.state !== 'open') return;
    while (this.outQueue.length && this.window >= this.outQueue[0].length + FRAME_COST) {
      const chunk = this.outQueue.shift();
      this.window -= chunk.length + FRAME_COST;
      this.bytesOut += chunk.length;
      try {
        this.#sendFrame(false, null, [CHANNEL.STDIN, chunk]);
      } catch { return; } // the close handler reports the lost connection
    }
  }

  #sendControl(map) {
    try { this.#sendFrame(false, null, [CHANNEL.CONTROL, map]); } catch { /* connection lost */ }
  }

  /** The terminal's size changed. */
  resize(cols, rows) {
    if (this.state === 'opening' || this.state === 'new') { this.pendingResize = [cols, rows]; return; }
    if (this.state !== 'open') return;
    this.#sendControl({ resize: [cols, rows] });
  }

  /** Closes the command's stdin. */
  eof() { if (this.state === 'open') this.#sendControl({ eof: true }); }

  /** Sends a signal to the command's process group. */
  signal(n) { if (this.state === 'open') this.#sendControl({ signal: n }); }

  /** Detaches: sends CloseTunnel; the far side hangs up the command. */
  close() {
    if (this.state === 'open') {
      try { this.#sendFrame(false, tunnelCtl(STATE.CLOSE_TUNNEL)); } catch { /* gone anyway */ }
    }
    this.#finish({ detached: true, local: true });
  }

  #finish(status) {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.status = status;
    this.client.unregisterStream(this.recvId);
    this.outQueue = [];
    this.o.onClose?.(status);
  }
}

export { TimeoutError };
