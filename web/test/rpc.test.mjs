// The RPC client and the tunnel's rsh end against the real broker and agent.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { RpcClient, RpcError, LoginError, ConnectionError } from '../shv/rpc.js';
import { Tunnel, TunnelError, describeClose, FLOW_WINDOW } from '../shv/tunnel.js';
import { unwrap } from '../shv/chainpack.js';
import { findAgents } from '../shv/discover.js';
import { startBroker } from './harness.mjs';

let env;
before(async () => { env = await startBroker(); });
after(() => env?.stop());

const connect = (user = 'admin', password = user, o = {}) => RpcClient.connect(env.wsUrl, { user, password, WebSocket, ...o });
const dec = new TextDecoder();

test('login, ls, dir, .app calls', async () => {
  const c = await connect();
  try {
    assert.deepEqual(await c.ls(''), ['.app', '.broker', 'test']);
    assert.deepEqual(await c.ls('test'), ['agent']);
    const dir = await c.dir('test/agent');
    assert.ok(dir.some((m) => m.name === 'launchRexec'), JSON.stringify(dir.map((m) => m.name)));
    assert.equal(await c.hasMethod('test/agent', 'launchRexec'), true);
    assert.equal(await c.hasMethod('test', 'launchRexec'), false);
    assert.equal(unwrap(await c.call('.app', 'shvVersionMajor')), 3);
    assert.equal(unwrap(await c.call('.app', 'ping')), null);
  } finally { c.close(); }
});

test('RPC errors carry code and message', async () => {
  const c = await connect();
  try {
    await assert.rejects(c.call('test/nope', 'ls'), (e) => e instanceof RpcError && e.code === 2 && /no such path/.test(e.message));
    await assert.rejects(c.call('.app', 'noSuchMethod'), (e) => e instanceof RpcError && e.code === 2);
  } finally { c.close(); }
});

test('wrong password is a LoginError with the broker\'s message', async () => {
  await assert.rejects(connect('admin', 'wrong'), (e) => e instanceof LoginError && /wrong user name or password/.test(e.message));
});

test('unreachable broker is a ConnectionError', async () => {
  await assert.rejects(RpcClient.connect('ws://127.0.0.1:9/', { user: 'a', password: 'b', WebSocket }), ConnectionError);
});

test('ping keepalive runs', async () => {
  const c = await connect('admin', 'admin', { pingInterval: 100 });
  await new Promise((r) => setTimeout(r, 350));
  assert.ok(c.isOpen);
  c.close();
});

function collect(t) {
  const out = { text: '', closed: null };
  t.o.onData = (b) => { out.text += dec.decode(b); t.consumed(b.length); };
  t.o.onClose = (st) => { out.closed = st; };
  return out;
}

async function until(pred, ms, what, out) {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}; got ${JSON.stringify(out?.text?.slice(-500))}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('tunnel: command exit status, stdout', async () => {
  const c = await connect();
  try {
    const t = new Tunnel(c, 'test/agent', { cmd: ['sh', '-c', 'echo hello-$((6*7)); exit 3'] });
    const out = collect(t);
    await t.open();
    await until(() => out.closed, 10000, 'CloseTunnel', out);
    assert.match(out.text, /hello-42/);
    assert.deepEqual(out.closed, { exitCode: 3 });
    assert.equal(describeClose(out.closed), 'exited with status 3');
  } finally { c.close(); }
});

test('tunnel: interactive shell, input before open, resize, detach', async () => {
  const c = await connect();
  try {
    const t = new Tunnel(c, 'test/agent', { cmd: ['/bin/sh'], cols: 100, rows: 30 });
    const out = collect(t);
    t.write('stty size; echo mark-$((6*7))\r'); // typed before the tunnel is open
    await t.open();
    await until(() => /mark-42/.test(out.text), 10000, 'the echo', out);
    assert.match(out.text, /30 100/);
    t.resize(132, 43);
    t.write('stty size\r');
    await until(() => /43 132/.test(out.text), 10000, 'the new size', out);
    t.close();
    assert.deepEqual(out.closed, { detached: true, local: true });
    // The connection stays usable after a detach.
    assert.deepEqual(await c.ls('test'), ['agent']);
  } finally { c.close(); }
});

test('tunnel: bulk output beyond the flow window is acknowledged and arrives whole', async () => {
  const c = await connect();
  try {
    const n = 3 * FLOW_WINDOW;
    const t = new Tunnel(c, 'test/agent', { cmd: ['sh', '-c', `head -c ${n} /dev/zero | tr '\\0' x`], pty: false });
    let got = 0;
    let closed = null;
    t.o.onData = (b) => { got += b.length; setTimeout(() => t.consumed(b.length), 1); }; // a slowish consumer
    t.o.onClose = (st) => { closed = st; };
    await t.open();
    await until(() => closed, 30000, 'the end of the bulk output');
    assert.equal(got, n);
    assert.deepEqual(closed, { exitCode: 0 });
  } finally { c.close(); }
});

test('tunnel: bulk input respects the window (wc -c counts it all)', async () => {
  const c = await connect();
  try {
    const t = new Tunnel(c, 'test/agent', { cmd: ['wc', '-c'], pty: false });
    const out = collect(t);
    await t.open();
    const n = 5 * 1024 * 1024 + 7;
    t.write(new Uint8Array(n).fill(0x61));
    // eof only after everything has left the queue
    await until(() => t.outQueue.length === 0, 30000, 'the input to be sent');
    t.eof();
    await until(() => out.closed, 30000, 'wc to finish', out);
    assert.equal(out.text.trim(), String(n));
    assert.deepEqual(out.closed, { exitCode: 0 });
  } finally { c.close(); }
});

test('tunnel errors: unknown agent, not an agent, access denied', async () => {
  const admin = await connect();
  const viewer = await connect('viewer');
  try {
    await assert.rejects(new Tunnel(admin, 'test/nope').open(), (e) => e instanceof TunnelError && e.kind === 'not-found' && /no such path 'test\/nope'/.test(e.message));
    await assert.rejects(new Tunnel(admin, 'test').open(), (e) => e instanceof TunnelError && e.kind === 'not-agent');
    await assert.rejects(new Tunnel(viewer, 'test/agent').open(), (e) => e instanceof TunnelError && e.kind === 'access-denied' && /access denied/.test(e.message));
  } finally { admin.close(); viewer.close(); }
});

test('tunnel: command not found is exit status 127 with the reason, as a shell says it', async () => {
  const c = await connect();
  try {
    const t = new Tunnel(c, 'test/agent', { cmd: ['/no/such/program'] });
    const out = collect(t);
    await t.open();
    await until(() => out.closed, 10000, 'the close', out);
    assert.match(describeClose(out.closed), /status 127/);
    assert.match(out.text, /\/no\/such\/program: command not found/, out.text);
  } finally { c.close(); }
});

test('dropped connection: pending calls and open tunnels learn it', async () => {
  const local = await startBroker();
  try {
    const c = await RpcClient.connect(local.wsUrl, { user: 'admin', password: 'admin', WebSocket });
    const t = new Tunnel(c, 'test/agent', { cmd: ['/bin/sh'] });
    const out = collect(t);
    await t.open();
    let reason = null;
    c.onClose((r) => { reason = r; });
    local.broker.kill('SIGKILL');
    await until(() => out.closed && reason, 10000, 'the close', out);
    assert.match(out.closed.error, /connection to the broker lost/);
    await assert.rejects(c.call('.app', 'ping'), ConnectionError);
  } finally { local.stop(); }
});

test('findAgents: finds agents at any depth, bounded', async () => {
  await env.startAgent('test/site/b/agent2');
  const c = await connect();
  try {
    const r = await findAgents(c);
    assert.deepEqual(r.agents, ['test/agent', 'test/site/b/agent2']);
    assert.equal(r.truncated, false);
    const shallow = await findAgents(c, { maxDepth: 2 });
    assert.deepEqual(shallow.agents, ['test/agent']);
    assert.equal(shallow.truncated, true);
    const few = await findAgents(c, { maxNodes: 2 });
    assert.equal(few.truncated, true);
    assert.ok(few.visited <= 2);
  } finally { c.close(); }
});
