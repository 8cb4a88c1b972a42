#!/usr/bin/env node
// End-to-end test of the page in headless Chromium (Debian's /usr/bin/chromium, driven
// by puppeteer-core; nothing is downloaded). The broker serves the page itself from its
// --web-root on the same ws:// listener the page then connects to.
//
//   node test/browser.mjs            (SHV_BIN_DIR, CHROMIUM, SCREENSHOT override defaults)
//
// Checks: log in, open a shell on test/agent with the keyboard, `echo $((6*7))` → 42,
// viewport resize changes `stty size`, `exit 3` shows the status; wrong password,
// unknown agent, insufficient access (viewer) and a dropped connection each show a
// clear message. Writes a screenshot of a live session to docs/web-terminal.png.

import { execFileSync } from 'node:child_process';
import { parseCpon } from '../shv/cpon.js';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import puppeteer from 'puppeteer-core';
import { startBroker, bin, webRoot } from './harness.mjs';

// BROWSER=firefox runs the same checks in Firefox (Debian's firefox-esr, WebDriver BiDi).
const FIREFOX = process.env.BROWSER === 'firefox';
const EXECUTABLE = process.env.CHROMIUM ?? (FIREFOX ? '/usr/bin/firefox-esr' : '/usr/bin/chromium');
const SCREENSHOT = process.env.SCREENSHOT
  ?? (FIREFOX ? path.join(tmpdir(), 'web-terminal-firefox.png') : path.resolve(webRoot, '../docs/web-terminal.png'));
const STEP_TIMEOUT = 15000;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let passed = 0;
function ok(what) { passed++; console.log(`ok ${passed} - ${what}`); }

class CheckFailed extends Error {}

/**
 * Polls `probe()` (returns {ok, shown}) until ok; fails with what was expected and
 * what the page showed.
 */
async function expect(what, expected, probe, ms = STEP_TIMEOUT) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    last = await probe();
    if (last.ok) { ok(what); return last; }
    if (Date.now() > end) break;
    await sleep(100);
  }
  throw new CheckFailed(`FAILED: ${what}\n  expected: ${expected}\n  the page showed: ${JSON.stringify(last.shown, null, 2)}`);
}

// `node --test test/` picks up every file in test/: this one is run on its own (it
// drives a browser and writes the screenshot), so there it only reports a skip.
if (process.env.NODE_TEST_CONTEXT) {
  const { test } = await import('node:test');
  test('browser test (run it with: node test/browser.mjs)', { skip: 'run separately' }, () => {});
} else {
  await main();
}

async function main() {
// --- preconditions -----------------------------------------------------------------

const help = execFileSync(bin('shvbroker'), ['--help'], { encoding: 'utf8' });
if (!help.includes('--web-root')) {
  console.error('FAILED: this shvbroker has no --web-root option; the page must be served by the broker itself (rebuild the workspace).');
  process.exit(1);
}

const env = await startBroker();
// A few more devices, so that the list and the screenshot look like a real site.
await env.startAgent('test/lab/plc-gateway');
await env.startAgent('test/site-b/router');
const profile = mkdtempSync(path.join(tmpdir(), 'shv-web-chromium-'));
const browser = await puppeteer.launch(FIREFOX ? {
  browser: 'firefox',
  executablePath: EXECUTABLE,
  headless: true,
  userDataDir: profile,
  // A closed network: nothing to phone home to.
  extraPrefsFirefox: {
    'app.update.enabled': false, 'network.captive-portal-service.enabled': false,
    'network.connectivity-service.enabled': false, 'browser.safebrowsing.malware.enabled': false,
    'browser.safebrowsing.phishing.enabled': false, 'datareporting.policy.dataSubmissionEnabled': false,
    'toolkit.telemetry.enabled': false, 'extensions.update.enabled': false,
  },
} : {
  executablePath: EXECUTABLE,
  headless: true,
  userDataDir: profile,
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--disable-dev-shm-usage', '--font-render-hinting=none',
  ],
});
const page = await browser.newPage();
const pageErrors = [];
page.on('pageerror', (e) => pageErrors.push(`pageerror: ${e.message}`));
page.on('console', (m) => { if (m.type() === 'error') pageErrors.push(`console: ${m.text()}`); });
page.on('requestfailed', (r) => pageErrors.push(`request failed: ${r.url()} ${r.failure()?.errorText}`));
// The window size. Firefox ESR's WebDriver BiDi lacks a command puppeteer's
// setViewport needs; there the page's root element is resized instead (the terminal
// follows its container through the same ResizeObserver either way).
let bidiViewport = true;
async function setSize(width, height) {
  if (bidiViewport) {
    try { await page.setViewport({ width, height }); return; } catch { bidiViewport = false; }
  }
  await page.evaluate((w, h) => {
    document.documentElement.style.width = `${w}px`;
    document.documentElement.style.height = `${h}px`;
  }, width, height);
}
await setSize(1200, 700);

// Helpers that read the page ------------------------------------------------------------

const text = (sel) => page.$eval(sel, (e) => (e.hidden ? '' : e.textContent.trim())).catch(() => '');
const visible = (sel) => page.$eval(sel, (e) => !e.hidden && e.offsetParent !== null).catch(() => false);
// The active session: its status line, its terminal's text, its size.
const active = () => page.evaluate(() => {
  const s = window.shvApp.active;
  if (!s) return null;
  return { path: s.path, state: s.state, status: s.message, badge: s.badge.textContent, screen: s.screenText(), cols: s.term.cols, rows: s.term.rows };
});
const screenLines = async () => ((await active())?.screen ?? '').split('\n');

async function typeInTerminal(line) {
  await page.focus('.pane:not([hidden]) .xterm-helper-textarea');
  await page.keyboard.type(line, { delay: 5 });
  await page.keyboard.press('Enter');
}

/** Runs `cmd` after a unique marker and returns the output line(s) after it. */
async function run(cmd, what, expected, accept, ms) {
  const marker = `m${Math.random().toString(36).slice(2, 8)}`;
  await typeInTerminal(`echo ${marker}-begin; ${cmd}; echo ${marker}-end`);
  const r = await expect(what, expected, async () => {
    const lines = await screenLines();
    const b = lines.findIndex((l) => l.trim() === `${marker}-begin`);
    const e = lines.findIndex((l, i) => i > b && l.trim() === `${marker}-end`);
    const out = b >= 0 && e > b ? lines.slice(b + 1, e).map((l) => l.trimEnd()) : null;
    return { ok: out !== null && accept(out), shown: out ?? lines.slice(-8), out };
  }, ms);
  return r.out;
}

async function login(user, password) {
  await page.waitForSelector('#user', { visible: true });
  await page.$eval('#user', (e) => { e.value = ''; });
  await page.$eval('#password', (e) => { e.value = ''; });
  await page.type('#user', user);
  await page.type('#password', password);
  await page.keyboard.press('Enter'); // keyboard-first: Enter submits
}

// Alt+N, type into the filter, Enter (on the last item — "Open “PATH”" — with pickLast).
async function openFromFilter(filterText, pickLast = false) {
  await page.keyboard.down('Alt');
  await page.keyboard.press('KeyN');
  await page.keyboard.up('Alt');
  await page.$eval('#device-filter', (e) => { e.value = ''; });
  await page.type('#device-filter', filterText);
  if (pickLast) await page.keyboard.press('ArrowUp'); // the selection wraps around
  await page.keyboard.press('Enter');
}

/** Waits for the shell prompt at the end of the active terminal. */
async function prompt(what) {
  await expect(what, 'a shell prompt ending in "$" or "#"', async () => {
    const lines = (await screenLines()).filter((l) => l.trim());
    const last = lines.at(-1) ?? '';
    return { ok: /[$#]$/.test(last.trimEnd()), shown: lines.slice(-3) };
  });
}

/** Types a command and waits until the screen matches `re` (for the screenshot). */
async function show(cmd, re, what) {
  await typeInTerminal(cmd);
  await expect(what, String(re), async () => {
    const s = (await active()).screen;
    return { ok: re.test(s), shown: s.split('\n').filter((l) => l.trim()).slice(-5) };
  });
}

/** Open tunnels according to the broker (.broker/tunnels:list, as admin). */
function brokerTunnels() {
  const out = execFileSync(bin('shvcall'), [`tcp://admin@127.0.0.1:${env.tcpPort}?password=admin`, '.broker/tunnels', 'list'], { encoding: 'utf8' });
  return parseCpon(out).length;
}
const tunnelsAre = (n, what) => expect(what, `${n} open tunnel(s) in .broker/tunnels:list`,
  async () => { const k = brokerTunnels(); return { ok: k === n, shown: `${k} open tunnel(s)` }; });

let failure = null;
try {
  await page.goto(env.httpUrl, { waitUntil: 'load' });
  await expect('the broker serves the page (login form visible)', 'the login form',
    async () => ({ ok: await visible('#login-form'), shown: await page.title() }));
  await expect('the WebSocket URL defaults to the page\'s origin', env.wsUrl,
    async () => { const v = await page.$eval('#ws-url', (e) => e.value); return { ok: v === env.wsUrl, shown: v }; });

  // Wrong password ---------------------------------------------------------------------
  await login('admin', 'not-the-password');
  await expect('wrong password gives a clear message', 'Login failed: … wrong user name or password',
    async () => { const t = await text('#login-error'); return { ok: /Login failed/.test(t) && /wrong user name or password/i.test(t), shown: t }; });

  // Log in, find the agent -----------------------------------------------------------------
  await login('admin', 'admin');
  await expect('logged in: the device list shows test/agent', 'an item test/agent in #device-list',
    async () => { const t = await page.$$eval('#device-list li.agent', (l) => l.map((e) => e.dataset.path)); return { ok: t.includes('test/agent'), shown: { devices: t, error: await text('#login-error') } }; });

  // Open a shell with the keyboard: filter, arrows, Enter --------------------------------
  await page.type('#device-filter', 'agent');
  await page.keyboard.press('ArrowDown');
  await page.keyboard.press('ArrowUp');
  await page.keyboard.press('Enter');
  await expect('a shell opens on test/agent', 'status "Connected · test/agent"',
    async () => { const a = await active(); return { ok: a?.state === 'open' && a.status === 'Connected · test/agent', shown: a && { status: a.status, screen: a.screen.trim().slice(-300) } }; });

  await prompt('the remote shell shows its prompt');
  await run('echo $((6*7))', 'typing echo $((6*7)) prints 42', 'a line "42"', (out) => out.includes('42'));

  // Resize follows the window --------------------------------------------------------------
  const size = async () => (await run('stty size', 'stty size answers', '"ROWS COLS"', (out) => /^\d+ \d+$/.test(out[0] ?? '')))[0];
  const before = await size();
  const termBefore = await active();
  if (before !== `${termBefore.rows} ${termBefore.cols}`) {
    throw new CheckFailed(`FAILED: the remote PTY size matches the terminal\n  expected: ${termBefore.rows} ${termBefore.cols}\n  the page showed: ${before}`);
  }
  ok(`stty size matches the terminal (${before})`);
  await setSize(860, 520);
  await expect('the terminal refits to the smaller window', 'fewer columns and rows',
    async () => { const a = await active(); return { ok: a.cols < termBefore.cols && a.rows < termBefore.rows, shown: `${a.rows} ${a.cols}` }; });
  const after = await size();
  const termAfter = await active();
  if (after === before || after !== `${termAfter.rows} ${termAfter.cols}`) {
    throw new CheckFailed(`FAILED: stty size changes with the viewport\n  expected: ${termAfter.rows} ${termAfter.cols} (was ${before})\n  the page showed: ${after}`);
  }
  ok(`stty size follows the viewport (${before} → ${after})`);
  await setSize(1200, 700);

  // A second tab, then the screenshot of a live session -----------------------------------
  await openFromFilter('test/lab/plc-gateway');
  await expect('a second session opens in a new tab', '2 tabs, the second connected',
    async () => { const n = await page.$$eval('#tabs .tab', (t) => t.length); const a = await active(); return { ok: n === 2 && a?.state === 'open', shown: { tabs: n, status: a?.status } }; });
  await prompt('the second shell shows its prompt');
  await tunnelsAre(2, 'the broker sees both tunnels');
  await show('uname -sr', /Linux/, 'a command in the second session');
  await page.keyboard.down('Alt');
  await page.keyboard.press('Digit1');
  await page.keyboard.up('Alt');
  await expect('Alt+1 switches back to the first tab', 'tab 1 active',
    async () => { const i = await page.$$eval('#tabs .tab', (t) => t.findIndex((e) => e.classList.contains('active'))); return { ok: i === 0, shown: i }; });
  await show('clear', /^[^\n]*[$#]\s*$/, 'clear');
  // Neutral content (a scratch directory, made-up readings): the screenshot is
  // committed, and should show the tool, not this machine.
  await show('cd "$(mktemp -d)" && mkdir logs config && touch run.sh notes.txt && chmod +x run.sh && ls --color=always -F', /run\.sh\*/, 'ls --color=always in the first session');
  await show('for i in 1 2 3 4; do echo "sensor $i: $((20 + i * 3)).5 C"; done', /sensor 4: 32\.5 C[\s\S]*[$#]\s*$/, 'a few lines of output');
  await show('printf "\\e[1;31mred \\e[1;32mgreen \\e[1;33myellow \\e[1;34mblue \\e[1;35mmagenta \\e[1;36mcyan\\e[0m  \\e[38;5;208m256-colour\\e[0m \\e[1mbold\\e[0m \\e[4munderline\\e[0m\\n"',
    /red green yellow blue magenta cyan/, 'colours');
  await sleep(300);
  mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
  await page.screenshot({ path: SCREENSHOT });
  ok(`screenshot written to ${SCREENSHOT}`);
  await page.keyboard.down('Alt');
  await page.keyboard.press('Digit2');
  await page.keyboard.up('Alt');
  // exit 3 ---------------------------------------------------------------------------------
  await typeInTerminal('exit 3');
  await expect('exit 3 shows the exit status', 'status line "Session ended — exited with status 3", tab badge "exit 3"',
    async () => { const a = await active(); return { ok: /exited with status 3/.test(a.status) && a.badge === 'exit 3' && /exited with status 3/.test(a.screen), shown: { status: a.status, badge: a.badge } }; });
  await tunnelsAre(1, 'the ended session\'s tunnel is gone from the broker');
  await page.keyboard.down('Alt');
  await page.keyboard.press('KeyW');
  await page.keyboard.up('Alt');
  await expect('Alt+W closes the ended tab', '1 tab left',
    async () => { const n = await page.$$eval('#tabs .tab', (t) => t.length); return { ok: n === 1, shown: n }; });

  // Unknown agent ----------------------------------------------------------------------------
  await openFromFilter('test/nope');
  await expect('an unknown agent path gives a clear message', 'status "unknown agent: no such path \'test/nope\'"',
    async () => { const a = await active(); return { ok: a?.state === 'failed' && /unknown agent: no such path 'test\/nope'/.test(a.status), shown: a && { path: a.path, status: a.status } }; });

  // A node that is not an agent --------------------------------------------------------------
  await openFromFilter('test', true);
  await expect('a node without launchRexec gives a clear message', 'status "test is not an shvagent …"',
    async () => { const a = await active(); return { ok: a?.state === 'failed' && /test is not an shvagent/.test(a.status), shown: a && { path: a.path, status: a.status } }; });

  // Insufficient access ------------------------------------------------------------------------
  await page.click('#logout');
  await login('viewer', 'viewer');
  await expect('viewer logged in and sees the agent', 'test/agent listed',
    async () => { const t = await page.$$eval('#device-list li.agent', (l) => l.map((e) => e.dataset.path)); return { ok: t.includes('test/agent'), shown: { devices: t, error: await text('#login-error') } }; });
  await openFromFilter('test/agent');
  await expect('a read-only user gets "access denied"', 'status "access denied: you may not open a shell on test/agent …"',
    async () => { const a = await active(); return { ok: a?.state === 'failed' && /access denied/.test(a.status), shown: a && { status: a.status } }; });

  // Dropped connection ------------------------------------------------------------------------
  await page.click('#logout');
  await login('admin', 'admin');
  await openFromFilter('test/agent');
  await expect('a shell is open again', 'Connected', async () => { const a = await active(); return { ok: a?.state === 'open', shown: a?.status }; });
  await openFromFilter('test/agent');
  await expect('and a second one', '2 live tabs', async () => {
    const st = await page.evaluate(() => window.shvApp.sessions.map((x) => x.state));
    return { ok: st.length === 2 && st.every((x) => x === 'open'), shown: st };
  });
  await tunnelsAre(2, 'two tunnels open');
  await page.keyboard.down('Alt');
  await page.keyboard.press('KeyW');
  await page.keyboard.up('Alt');
  await tunnelsAre(1, 'Alt+W on a live tab closes its tunnel (CloseTunnel)');
  await page.reload({ waitUntil: 'load' });
  await tunnelsAre(0, 'leaving the page closes the remaining tunnel');
  await login('admin', 'admin');
  await openFromFilter('test/agent');
  await expect('a shell is open after the reload', 'Connected', async () => { const a = await active(); return { ok: a?.state === 'open', shown: a?.status }; });
  await prompt('its prompt');
  env.broker.kill('SIGKILL');
  await expect('a dropped connection gives a clear message', 'banner "Connection to the broker lost …" and the session ended with that reason',
    async () => {
      const banner = await text('#banner');
      const a = await active();
      return { ok: /Connection to the broker lost/.test(banner) && /Connection to the broker lost/.test(a?.status ?? ''), shown: { banner, status: a?.status } };
    });

  const serious = pageErrors.filter((e) => !/WebSocket|ERR_CONNECTION_REFUSED|favicon/.test(e));
  if (serious.length) throw new CheckFailed(`FAILED: the page logged errors:\n  ${serious.join('\n  ')}`);
  ok('no script errors on the page');
} catch (e) {
  failure = e;
} finally {
  await browser.close().catch(() => {});
  env.stop();
  rmSync(profile, { recursive: true, force: true });
}

if (failure) {
  console.error(`\n${failure instanceof CheckFailed ? failure.message : failure.stack}`);
  if (pageErrors.length) console.error(`\npage errors:\n  ${pageErrors.join('\n  ')}`);
  if (process.env.SHV_TEST_VERBOSE) console.error(env.log());
  console.error(`\nbrowser test: ${passed} checks passed, then a failure`);
  process.exit(1);
}
console.log(`browser test (${FIREFOX ? 'Firefox' : 'Chromium'}): all ${passed} checks passed`);
}
