// Starts the real shvbroker (ws:// + tcp:// on ephemeral loopback ports, web root =
// web/dist/, what `npm run build` writes) and an shvagent mounted at test/agent, for the
// node and browser tests.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const webDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
/** The broker's web root: the built page only (never web/ with node_modules, tests, tools). */
export const distDir = path.join(webDir, 'dist');
export const binDir = path.resolve(webDir, process.env.SHV_BIN_DIR ?? '../target/debug');

/** `npm run build` (tools/build.mjs): writes dist/ from the current sources. */
export function build() {
  execFileSync(process.execPath, [path.join(webDir, 'tools/build.mjs'), '-q'], { stdio: 'inherit' });
}

export function bin(name) {
  const p = path.join(binDir, name);
  if (!existsSync(p)) throw new Error(`${p} is missing: build the workspace first (cargo build --workspace) or set SHV_BIN_DIR`);
  return p;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Waits until `pred()` is truthy, polling; throws `what` after `ms`. */
export async function waitFor(pred, ms, what) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await pred();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(50);
  }
}

// Whatever happens to the test process, its broker and agents do not outlive it.
const children = new Set();
process.on('exit', () => { for (const c of children) c.kill('SIGKILL'); });

function track(child, name) {
  children.add(child);
  child.on('exit', () => children.delete(child));
  const st = { log: '', exited: false };
  child.stderr.on('data', (d) => { st.log += d; });
  child.stdout.on('data', (d) => { st.log += d; });
  child.on('exit', () => { st.exited = true; });
  child.on('error', (e) => { st.log += `\n${name}: ${e.message}`; st.exited = true; });
  return st;
}

/**
 * @returns {{wsUrl, wsPort, tcpPort, broker, agent, stop, log, startAgent}}
 */
export async function startBroker({ webRoot: root = distDir, agent = true, extraArgs = [] } = {}) {
  if (root && !existsSync(path.join(root, 'index.html'))) {
    throw new Error(`${root}/index.html is missing: run \`npm run build\` first`);
  }
  const args = ['--listen', 'ws://127.0.0.1:0', '--listen', 'tcp://127.0.0.1:0', ...extraArgs];
  if (root) args.push('--web-root', root);
  const broker = spawn(bin('shvbroker'), args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: process.env.SHV_TEST_LOG ?? 'info' },
  });
  const bst = track(broker, 'shvbroker');
  const ports = await waitFor(() => {
    if (bst.exited) throw new Error(`shvbroker exited:\n${bst.log}`);
    const ws = /listening on ws:\/\/127\.0\.0\.1:(\d+)/.exec(bst.log);
    const tcp = /listening on tcp:\/\/127\.0\.0\.1:(\d+)/.exec(bst.log);
    return ws && tcp ? { ws: Number(ws[1]), tcp: Number(tcp[1]) } : null;
  }, 10000, 'the broker\'s "listening on" log lines');
  const env = {
    wsPort: ports.ws,
    tcpPort: ports.tcp,
    wsUrl: `ws://127.0.0.1:${ports.ws}/`,
    httpUrl: `http://127.0.0.1:${ports.ws}/`,
    broker,
    agents: [],
    log: () => `--- broker ---\n${bst.log}\n${env.agents.map((a) => `--- agent ---\n${a.st.log}`).join('\n')}`,
    async startAgent(mount = 'test/agent') {
      const home = mkdtempSync(path.join(tmpdir(), 'shv-web-agent-'));
      const child = spawn(bin('shvagent'), [`tcp://device@127.0.0.1:${ports.tcp}?password=device`, '--mount', mount], {
        stdio: ['ignore', 'pipe', 'pipe'],
        // A predictable shell for the tests: the agent starts the user's login shell.
        env: { ...process.env, HOME: home, SHELL: '/bin/bash', PS1: '$ ' },
        cwd: home,
      });
      const st = track(child, 'shvagent');
      env.agents.push({ child, st });
      // Mounted when the broker lists it.
      const parent = mount.split('/').slice(0, -1).join('/');
      const leaf = mount.split('/').at(-1);
      await waitFor(async () => {
        if (st.exited) throw new Error(`shvagent exited:\n${st.log}`);
        return (await shvcallLs(ports.tcp, parent)).includes(`"${leaf}"`);
      }, 10000, `the agent mounted at ${mount}`);
      return child;
    },
    stop() {
      for (const a of env.agents) a.child.kill('SIGTERM');
      broker.kill('SIGTERM');
    },
  };
  if (agent) await env.startAgent();
  return env;
}

function shvcallLs(tcpPort, p) {
  return new Promise((resolve) => {
    const c = spawn(bin('shvcall'), [`tcp://admin@127.0.0.1:${tcpPort}?password=admin`, p, 'ls'], { stdio: ['ignore', 'pipe', 'ignore'] });
    let out = '';
    c.stdout.on('data', (d) => { out += d; });
    c.on('close', () => resolve(out));
    c.on('error', () => resolve(''));
  });
}
