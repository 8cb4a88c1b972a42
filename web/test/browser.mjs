#!/usr/bin/env node
// End-to-end test of the page in headless Chromium (Debian's /usr/bin/chromium, driven
// by puppeteer-core; nothing is downloaded). The broker serves the page itself from its
// --web-root (web/dist/, rebuilt from the sources first: npm run build) on the same
// ws:// listener the page then connects to; the page is loaded from
// http://127.0.0.1:PORT/ and opens ws://127.0.0.1:PORT/ (Origin http://127.0.0.1:PORT).
//
//   node test/browser.mjs            (SHV_BIN_DIR, CHROMIUM, SCREENSHOT override defaults)
//
// Checks: the web root serves the built page only; the login form never submits
// natively; the page connects only to its own origin (?ws= is ignored) and stores only
// the user name; log in, open a shell on test/agent with the keyboard, `echo $((6*7))`
// → 42, viewport resize changes `stty size`, `exit 3` shows the status; wrong password,
// unknown agent, insufficient access (viewer) and a dropped connection each show a
// clear message; escape sequences in an error message do not reach the terminal.
// Writes a screenshot of a live session to a temporary file (SCREENSHOT=PATH chooses
// it: `SCREENSHOT=../docs/web-terminal.png` refreshes the README's picture); a test run
// leaves the tree clean.

import { execFileSync } from 'node:child_process';
import { parseCpon } from '../shv/cpon.js';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import puppeteer from 'puppeteer-core';
import { startBroker, bin, build, webDir, distDir } from './harness.mjs';

// BROWSER=firefox runs the same checks in Firefox (Debian's firefox-esr, WebDriver BiDi).
const FIREFOX = process.env.BROWSER === 'firefox';
const EXECUTABLE = process.env.CHROMIUM ?? (FIREFOX ? '/usr/bin/firefox-esr' : '/usr/bin/chromium');
const SCREENSHOT = process.env.SCREENSHOT
  ? path.resolve(process.env.SCREENSHOT)
  : path.join(tmpdir(), FIREFOX ? 'web-terminal-firefox.png' : 'web-terminal.png');
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

build(); // the page as the sources are now
const env = await startBroker({ webRoot: distDir });
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
// Every WebSocket the page opens, by URL.
await page.evaluateOnNewDocument(() => {
  const Native = window.WebSocket;
  window.wsOpened = [];
  window.WebSocket = class extends Native {
    constructor(url, protocols) { super(url, protocols); window.wsOpened.push(String(url)); }
  };
});
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
  // login() only submits: wait until the session is up and the broker's devices are
  // listed, or Alt+N and Enter can land on the login form (a race seen under load).
  await page.waitForSelector('#device-list li', { visible: true, timeout: 20000 });
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

/** HTTP status of a GET of `p` on the broker's web listener. */
const status = async (p) => (await fetch(new URL(p, env.httpUrl))).status;
const STORE = 'shv-web-terminal';

let failure = null;
try {
  // The web root is dist/: the page, not the directory with node_modules, tests, tools.
  const hidden = ['node_modules/puppeteer-core/package.json', 'node_modules/@xterm/xterm/lib/xterm.mjs',
    'package.json', 'package-lock.json', 'ci.sh', 'README.md', 'test/browser.mjs', 'test/harness.mjs',
    'tools/build.mjs', 'shv/cpon.js', 'dist/index.html'];
  const served = ['', 'index.html', 'app.js', 'style.css', 'favicon.svg', 'shv/rpc.js', 'vendor/xterm.mjs', 'vendor/xterm.css', 'vendor/addon-fit.mjs'];
  await expect('the web root serves the built page only', `404 for ${hidden.join(', ')}; 200 for the page's files`, async () => {
    const got = {};
    for (const p of [...hidden, ...served]) got[`/${p}`] = await status(p);
    const ok = hidden.every((p) => got[`/${p}`] === 404) && served.every((p) => got[`/${p}`] === 200);
    return { ok, shown: got };
  });

  // Before its script runs, the form does nothing on Enter (a native GET would put the
  // password into the URL). The page itself sees to that, whatever CSP it is served with:
  const html = await (await fetch(env.httpUrl)).text();
  const form = /<form id="login-form"[^>]*>/.exec(html)?.[0] ?? '';
  const button = /<button id="login-button"[^>]*>/.exec(html)?.[0] ?? '';
  const fields = html.match(/<input id="(?:user|password)"[^>]*>/g) ?? [];
  if (!/method="post"/.test(form) || !/\sdisabled\b/.test(button) || fields.length !== 2 || fields.some((f) => /\sname=/.test(f))) {
    throw new CheckFailed(`FAILED: the login form cannot submit natively\n  expected: method="post", a disabled submit button, no name on the user and password fields\n  the page showed: ${form} ${button} ${fields.join(' ')}`);
  }
  ok('the login form cannot submit natively (POST, unnamed fields, button disabled until the script runs)');
  // Scripts off shows that state for as long as we like (Firefox's BiDi cannot do it).
  let noScript = true;
  try { await page.setJavaScriptEnabled(false); } catch { noScript = false; }
  if (noScript) {
    await page.goto(env.httpUrl, { waitUntil: 'load' });
    const requests = [];
    // Navigations (a submit) and anything carrying the password (the favicon may still load).
    const onRequest = (r) => {
      const line = `${r.method()} ${r.url()} ${r.postData() ?? ''}`;
      if (r.isNavigationRequest() || line.includes('secret-password')) requests.push(line);
    };
    page.on('request', onRequest);
    await page.type('#user', 'admin');
    await page.type('#password', 'secret-password');
    await page.keyboard.press('Enter');
    await page.click('#login-button').catch(() => {});
    await sleep(700);
    page.off('request', onRequest);
    const url = page.url();
    if (requests.length || url !== env.httpUrl) {
      throw new CheckFailed(`FAILED: Enter before the script loaded must do nothing\n  expected: no request, the URL still ${env.httpUrl}\n  the page showed: ${JSON.stringify({ url, requests })}`);
    }
    ok('without its script the login form does nothing (Enter, click)');
    await page.setJavaScriptEnabled(true);
  }

  // The page connects to its own origin only; ?ws= is no longer an override, and an
  // old stored WebSocket URL is dropped (only the user name is kept).
  await page.goto(env.httpUrl, { waitUntil: 'load' });
  await page.evaluate((k) => localStorage.setItem(k, JSON.stringify({ user: 'admin', url: 'ws://127.0.0.1:9/' })), STORE);
  await page.goto(`${env.httpUrl}?ws=${encodeURIComponent('ws://127.0.0.1:9/')}`, { waitUntil: 'load' });
  await expect('the broker serves the page (login form visible)', 'the login form',
    async () => ({ ok: await visible('#login-form') && !(await page.$('#ws-url')), shown: await page.title() }));
  await expect('only the user name is stored', `{"user":"admin"} in localStorage, #user = admin`, async () => {
    const stored = await page.evaluate((k) => localStorage.getItem(k), STORE);
    const user = await page.$eval('#user', (e) => e.value);
    return { ok: stored === '{"user":"admin"}' && user === 'admin', shown: { stored, user } };
  });

  // Wrong password ---------------------------------------------------------------------
  await login('admin', 'not-the-password');
  await expect('wrong password gives a clear message', 'Login failed: … wrong user name or password',
    async () => { const t = await text('#login-error'); return { ok: /Login failed/.test(t) && /wrong user name or password/i.test(t), shown: t }; });
  await expect('the page connects to its own origin only (?ws= is ignored)', `WebSockets to ${env.wsUrl} only`, async () => {
    const urls = await page.evaluate(() => window.wsOpened);
    return { ok: urls.length > 0 && urls.every((u) => u === env.wsUrl), shown: urls };
  });

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

  // Escape sequences in an error message (here the path, echoed in "no such path") ---------
  await page.$eval('#device-filter', (e) => {
    e.value = `test/\x1b[?1049h\x1b]0;pwned\x07\x9b2J${'x'.repeat(600)}`;
    e.dispatchEvent(new Event('input'));
  });
  await page.focus('#device-filter');
  await page.keyboard.press('ArrowUp'); // "Open “PATH”", the last item
  await page.keyboard.press('Enter');
  await expect('an error message cannot drive the terminal', 'no such path \'test/… (capped), no control characters, no alternate screen, no "pwned"',
    async () => {
      const a = await active();
      const buf = await page.evaluate(() => window.shvApp.active.term.buffer.active.type);
      // eslint-disable-next-line no-control-regex
      const clean = (t) => !/[\x00-\x08\x0b-\x1f\x7f-\x9f]/.test(t);
      const ok = a?.state === 'failed' && /no such path 'test\/x{100}/.test(a.status) && a.status.length <= 500
        && a.status.endsWith('…') && clean(a.status) && buf === 'normal' && !/pwned/.test(a.screen) && /no such path/.test(a.screen);
      return { ok, shown: a && { status: a.status, length: a.status.length, buffer: buf, screen: a.screen.trim().slice(-300) } };
    });

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
