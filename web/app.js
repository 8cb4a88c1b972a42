// The page: log in to a broker over WebSocket, find agents, open remote shells in tabs.
// The page is served from dist/ (npm run build): xterm.js is copied to vendor/ there.
import { Terminal } from './vendor/xterm.mjs';
import { FitAddon } from './vendor/addon-fit.mjs';
import { RpcClient, LoginError } from './shv/rpc.js';
import { Tunnel, describeClose } from './shv/tunnel.js';
import { findAgents } from './shv/discover.js';
import { printable } from './shv/printable.js';

const $ = (sel) => document.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v;
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else e.setAttribute(k, v);
  }
  e.append(...children);
  return e;
};

const THEME = {
  background: '#0a0c0f', foreground: '#d7dde6', cursor: '#3fa2f7', cursorAccent: '#0a0c0f',
  selectionBackground: '#264f78',
  black: '#1b2028', red: '#f2666a', green: '#5fd37a', yellow: '#e6c15a', blue: '#5aa6f7',
  magenta: '#c58af9', cyan: '#4fd1d9', white: '#c9d1d9',
  brightBlack: '#5c6773', brightRed: '#ff8a8d', brightGreen: '#86e89c', brightYellow: '#f5d77f',
  brightBlue: '#84bdfa', brightMagenta: '#dcb0fb', brightCyan: '#7fe3ea', brightWhite: '#ffffff',
};
const ANSI = { red: '\x1b[1;31m', yellow: '\x1b[33m', green: '\x1b[32m', dim: '\x1b[2m', reset: '\x1b[0m' };

/**
 * The broker's WebSocket: always the page's own origin (ws: for http:, wss: for https:,
 * the same host and port), never anything the URL or the user names. The broker's CSP
 * (connect-src 'self') would block any other target anyway.
 */
function brokerUrl() {
  if ((location.protocol !== 'http:' && location.protocol !== 'https:') || !location.host) return null;
  return `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}/`;
}

// Only the user name is remembered (earlier versions also stored a WebSocket URL).
const STORE = 'shv-web-terminal';
function savedUser() {
  try {
    const v = JSON.parse(localStorage.getItem(STORE) ?? '{}');
    return typeof v?.user === 'string' ? v.user : '';
  } catch { return ''; }
}
function saveUser(user) {
  try { localStorage.setItem(STORE, JSON.stringify({ user })); } catch { /* storage disabled */ }
}

// --- a shell session in a tab --------------------------------------------------------

let sessionSeq = 0;

class Session {
  constructor(app, path) {
    this.app = app;
    this.path = path;
    this.id = ++sessionSeq;
    this.tunnel = null;
    this.state = 'opening'; // opening | open | ended | failed
    this.message = '';

    this.badge = el('span', { class: 'badge' }, '…');
    this.tab = el('div', { class: 'tab', role: 'tab', tabindex: '-1', dataset: { id: this.id }, title: path },
      el('span', { class: 'num' }), el('span', { class: 'name' }, path), this.badge,
      el('span', { class: 'x', title: 'Close (Alt+W)' }, '×'));
    this.tab.addEventListener('mousedown', (ev) => {
      ev.preventDefault();
      if (ev.target.classList.contains('x')) app.closeSession(this);
      else app.activate(this);
    });
    this.statusMsg = el('span', { class: 'msg' });
    this.statusActions = el('span', { class: 'actions' });
    this.statusLine = el('div', { class: 'status-line' }, this.statusMsg, this.statusActions);
    this.termEl = el('div', { class: 'term' });
    this.pane = el('div', { class: 'pane', dataset: { id: this.id }, hidden: '' }, this.termEl, this.statusLine);

    this.term = new Terminal({
      cursorBlink: true, fontSize: 13, lineHeight: 1.1, scrollback: 5000, theme: THEME,
      fontFamily: '"DejaVu Sans Mono", "Cascadia Mono", Menlo, Consolas, "Liberation Mono", monospace',
    });
    this.fit = new FitAddon();
    this.term.loadAddon(this.fit);
    // Our Alt shortcuts are the page's, not the shell's.
    this.term.attachCustomKeyEventHandler((ev) => !app.isShortcut(ev));
    this.term.onData((d) => this.#input(new TextEncoder().encode(d)));
    this.term.onBinary((d) => this.#input(Uint8Array.from(d, (c) => c.charCodeAt(0) & 0xff)));
    this.term.onResize(({ cols, rows }) => {
      this.tunnel?.resize(cols, rows);
      if (this.state === 'open') this.statusActions.textContent = `${cols}×${rows}`;
    });
    this.resizeObserver = new ResizeObserver(() => this.refit());
  }

  mount(tabs, panes) {
    tabs.append(this.tab);
    panes.append(this.pane);
    this.term.open(this.termEl);
    this.resizeObserver.observe(this.termEl);
  }

  /** Fits the terminal to its pane (the resize then goes to the remote PTY). */
  refit() {
    if (this.pane.hidden || this.disposed) return;
    cancelAnimationFrame(this.fitFrame);
    this.fitFrame = requestAnimationFrame(() => {
      if (!this.pane.hidden && !this.disposed) this.fit.fit();
    });
  }

  #input(bytes) {
    if (this.state === 'open' || this.state === 'opening') { this.tunnel?.write(bytes); return; }
    // An ended session: Enter starts it again.
    if (bytes.length === 1 && bytes[0] === 13 && this.app.client?.isOpen) this.start();
  }

  setStatus(state, message, actions = '') {
    this.state = state;
    this.message = message;
    this.statusLine.className = `status-line ${{ open: 'ok', ended: 'ended', failed: 'failed' }[state] ?? ''}`;
    this.statusMsg.textContent = message;
    this.statusActions.textContent = actions;
    this.app.refreshTab(this);
  }

  async start() {
    if (this.pane.hidden === false) this.fit.fit();
    const { client } = this.app;
    this.setStatus('opening', `Opening a shell on ${this.path}…`);
    const tunnel = new Tunnel(client, this.path, {
      cols: this.term.cols,
      rows: this.term.rows,
      env: { TERM: 'xterm-256color', COLORTERM: 'truecolor' },
      // Acknowledge output only once the terminal has processed it, so a command that
      // prints faster than the page can render is slowed down (flow control).
      onData: (bytes) => this.term.write(bytes, () => tunnel.consumed(bytes.length)),
      onClose: (st) => this.#closed(st),
      // A broker's text: shown without control characters.
      onNotice: (text) => this.term.write(`\r\n${ANSI.yellow}[${printable(text)}]${ANSI.reset}\r\n`),
    });
    this.tunnel = tunnel;
    try {
      await tunnel.open();
    } catch (e) {
      if (this.tunnel !== tunnel) return;
      // Built from RPC errors of the broker or the device: shown without control characters.
      const msg = printable(e.message || String(e));
      this.term.write(`\r\n${ANSI.red}${msg}${ANSI.reset}\r\n`);
      this.setStatus('failed', msg, this.app.client?.isOpen ? 'Enter: retry · Alt+W: close' : 'Alt+W: close');
      return;
    }
    this.setStatus('open', `Connected · ${this.path}`, `${tunnel.o.cols}×${tunnel.o.rows}`);
  }

  #closed(st) {
    if (st.local || this.disposed) return;
    const lost = st.error !== undefined && !this.app.client?.isOpen;
    // The CloseTunnel's "error" is the far side's text: shown without control characters.
    const msg = lost ? 'Connection to the broker lost' : printable(describeClose(st));
    const failed = st.error !== undefined;
    const colour = failed ? ANSI.red : st.exitCode === 0 ? ANSI.green : ANSI.yellow;
    this.term.write(`\r\n${colour}[${msg}]${ANSI.reset}\r\n`);
    const actions = this.app.client?.isOpen ? 'Enter: new session · Alt+W: close' : 'Alt+W: close';
    this.setStatus(failed ? 'failed' : 'ended', `Session ended — ${msg}`, actions);
  }

  badgeText() {
    switch (this.state) {
      case 'opening': return ['…', ''];
      case 'open': return ['live', 'open'];
      case 'failed': return ['failed', 'failed'];
      default: {
        const st = this.tunnel?.status ?? {};
        if (st.exitCode !== undefined) return [`exit ${st.exitCode}`, 'ended'];
        if (st.signal !== undefined) return [`sig ${st.signal}`, 'ended'];
        return ['ended', 'ended'];
      }
    }
  }

  /** The terminal's visible text (for tests and diagnostics). */
  screenText() {
    const b = this.term.buffer.active;
    const lines = [];
    for (let i = 0; i < b.length; i++) lines.push(b.getLine(i)?.translateToString(true) ?? '');
    return lines.join('\n');
  }

  dispose() {
    this.disposed = true;
    this.tunnel?.close(); // sends CloseTunnel: the agent hangs up the shell
    this.resizeObserver.disconnect();
    this.term.dispose();
    this.tab.remove();
    this.pane.remove();
  }
}

// --- the application -----------------------------------------------------------------

class App {
  constructor() {
    this.client = null;
    this.sessions = [];
    this.active = null;
    this.agents = [];
    this.selected = 0;
    this.searchGen = 0;
    this.loggingOut = false;

    const saved = savedUser();
    try { if (localStorage.getItem(STORE) !== null) saveUser(saved); } catch { /* storage disabled */ } // keeps only the user
    $('#user').value = new URLSearchParams(location.search).get('user') ?? saved;
    if ($('#user').value) $('#password').focus();

    // The form never submits natively (that would send the password to the server): the
    // button is disabled in the HTML, so Enter does nothing until this handler exists.
    $('#login-form').addEventListener('submit', (ev) => { ev.preventDefault(); this.login(); });
    $('#login-button').disabled = false;
    $('#logout').addEventListener('click', () => this.logout());
    $('#refresh').addEventListener('click', () => this.search());
    const filter = $('#device-filter');
    filter.addEventListener('input', () => { this.selected = 0; this.renderDevices(); });
    filter.addEventListener('keydown', (ev) => this.filterKey(ev));
    window.addEventListener('keydown', (ev) => this.globalKey(ev), true);
    // Leaving the page detaches every session (CloseTunnel), as shvrsh's ~. does.
    window.addEventListener('pagehide', () => {
      for (const s of this.sessions) s.tunnel?.close();
      this.client?.close();
    });
  }

  // Login --------------------------------------------------------------------------

  async login() {
    const user = $('#user').value.trim();
    const password = $('#password').value;
    const url = brokerUrl();
    const err = $('#login-error');
    err.hidden = true;
    if (!url) { this.loginError('Open this page from the broker (http://HOST:PORT/ of its ws:// listener).'); return; }
    const button = $('#login-button');
    button.disabled = true;
    button.textContent = 'Connecting…';
    try {
      this.client = await RpcClient.connect(url, { user, password, userAgent: `shv-web-terminal ${navigator.userAgent}` });
    } catch (e) {
      this.loginError(e instanceof LoginError
        ? `Login failed: ${printable(e.message)}`
        : `Cannot connect to ${url}: the broker is not reachable there, or that listener does not speak WebSocket.`);
      return;
    } finally {
      button.disabled = false;
      button.textContent = 'Log in';
    }
    saveUser(user);
    $('#password').value = '';
    this.user = user;
    this.url = url;
    this.client.onClose((reason) => this.connectionLost(reason));
    $('#banner').hidden = true;
    $('#login-view').hidden = true;
    $('#app-view').hidden = false;
    $('#conn').hidden = false;
    $('#conn').classList.remove('down');
    $('#conn-text').textContent = `${user} @ ${new URL(url).host}`;
    $('#logout').hidden = false;
    $('#hint').hidden = false;
    $('#device-filter').focus();
    this.search();
  }

  loginError(msg) {
    const err = $('#login-error');
    err.textContent = msg;
    err.hidden = false;
    $('#password').select();
  }

  logout() {
    this.loggingOut = true;
    for (const s of [...this.sessions]) this.closeSession(s);
    this.client?.close();
    this.client = null;
    this.loggingOut = false;
    this.showLogin();
  }

  showLogin() {
    $('#app-view').hidden = true;
    $('#login-view').hidden = false;
    $('#conn').hidden = true;
    $('#logout').hidden = true;
    $('#hint').hidden = true;
    $('#password').focus();
  }

  connectionLost(reason) {
    if (this.loggingOut) return;
    $('#conn').classList.add('down');
    $('#conn-text').textContent = `${this.user} @ ${new URL(this.url).host} — disconnected`;
    const banner = $('#banner');
    const again = el('button', {}, 'Log in again');
    again.addEventListener('click', () => { banner.hidden = true; this.logout(); });
    banner.replaceChildren(el('span', {}, `Connection to the broker lost (${printable(reason)}). Open sessions have ended.`), again);
    banner.hidden = false;
    $('#device-status').textContent = 'Disconnected';
  }

  // Devices ------------------------------------------------------------------------

  async search() {
    const gen = ++this.searchGen;
    const client = this.client;
    this.agents = [];
    this.renderDevices();
    const status = $('#device-status');
    status.textContent = 'Searching the tree…';
    const r = await findAgents(client, {
      isCancelled: () => gen !== this.searchGen || !client.isOpen,
      onFound: (p) => { if (gen === this.searchGen) { this.agents.push(p); this.agents.sort(); this.renderDevices(); } },
      onProgress: (p) => { if (gen === this.searchGen) status.textContent = `Searching… ${p.visited} nodes`; },
    });
    if (gen !== this.searchGen || !client.isOpen) return;
    const n = r.agents.length;
    status.textContent = `${n} device${n === 1 ? '' : 's'} · ${r.visited} nodes searched${r.truncated ? ' (search limit reached; type a path)' : ''}`;
  }

  visibleDevices() {
    const f = $('#device-filter').value.trim();
    const items = this.agents.filter((p) => p.toLowerCase().includes(f.toLowerCase())).map((p) => ({ path: p, agent: true }));
    // Any path can be opened by typing it (the tree search is bounded).
    if (f && !this.agents.includes(f)) items.push({ path: f.replace(/^\/+|\/+$/g, ''), agent: false });
    return items;
  }

  renderDevices() {
    const list = $('#device-list');
    const items = this.visibleDevices();
    this.selected = Math.max(0, Math.min(this.selected, items.length - 1));
    list.replaceChildren(...items.map((it, i) => {
      const li = el('li', {
        role: 'option', class: it.agent ? 'agent' : 'path', dataset: { path: it.path },
        'aria-selected': String(i === this.selected), title: it.agent ? `Open a shell on ${it.path}` : `Open ${it.path}`,
      }, it.agent ? it.path : `Open “${it.path}”`);
      li.addEventListener('click', () => this.openSession(it.path));
      return li;
    }));
    list.children[this.selected]?.scrollIntoView({ block: 'nearest' });
  }

  filterKey(ev) {
    const items = this.visibleDevices();
    if (ev.key === 'ArrowDown' || ev.key === 'ArrowUp') {
      ev.preventDefault();
      if (!items.length) return;
      this.selected = (this.selected + (ev.key === 'ArrowDown' ? 1 : -1) + items.length) % items.length;
      this.renderDevices();
    } else if (ev.key === 'Enter') {
      ev.preventDefault();
      const it = items[this.selected];
      if (it) this.openSession(it.path);
    } else if (ev.key === 'Escape') {
      if (ev.target.value) { ev.target.value = ''; this.renderDevices(); } else this.active?.term.focus();
    }
  }

  // Sessions and tabs ----------------------------------------------------------------

  openSession(path) {
    if (!this.client?.isOpen) return;
    $('#empty').hidden = true;
    const s = new Session(this, path);
    this.sessions.push(s);
    s.mount($('#tabs'), $('#panes'));
    this.activate(s);
    s.start();
    // Ready for the next pick.
    $('#device-filter').value = '';
    this.selected = 0;
    this.renderDevices();
    return s;
  }

  activate(s) {
    this.active = s;
    for (const x of this.sessions) {
      x.pane.hidden = x !== s;
      x.tab.classList.toggle('active', x === s);
      x.tab.setAttribute('aria-selected', String(x === s));
    }
    this.sessions.forEach((x, i) => { x.tab.querySelector('.num').textContent = i < 9 ? String(i + 1) : ''; });
    document.title = `${s.path} — SHV Remote Shell`;
    s.fit.fit();
    s.term.focus();
  }

  closeSession(s) {
    const i = this.sessions.indexOf(s);
    if (i < 0) return;
    this.sessions.splice(i, 1);
    s.dispose();
    const next = this.sessions[Math.min(i, this.sessions.length - 1)];
    if (next) this.activate(next);
    else {
      this.active = null;
      $('#empty').hidden = false;
      document.title = 'SHV Remote Shell';
      $('#device-filter').focus();
    }
  }

  refreshTab(s) {
    const [text, cls] = s.badgeText();
    s.badge.textContent = text;
    s.badge.className = `badge ${cls}`;
  }

  // Keyboard ---------------------------------------------------------------------------

  /** Alt+N, Alt+W, Alt+1…9, Alt+[ / Alt+] (by physical key, so layouts do not matter). */
  isShortcut(ev) {
    if (!ev.altKey || ev.ctrlKey || ev.metaKey) return false;
    return ['KeyN', 'KeyW', 'BracketLeft', 'BracketRight'].includes(ev.code) || /^Digit[1-9]$/.test(ev.code);
  }

  globalKey(ev) {
    if (ev.type !== 'keydown' || !this.isShortcut(ev) || $('#app-view').hidden) return;
    ev.preventDefault();
    ev.stopPropagation();
    const i = this.sessions.indexOf(this.active);
    if (ev.code === 'KeyN') $('#device-filter').focus();
    else if (ev.code === 'KeyW') { if (this.active) this.closeSession(this.active); } else if (ev.code.startsWith('Digit')) {
      const s = this.sessions[Number(ev.code.slice(5)) - 1];
      if (s) this.activate(s);
    } else if (this.sessions.length) {
      const d = ev.code === 'BracketLeft' ? -1 : 1;
      this.activate(this.sessions[(i + d + this.sessions.length) % this.sessions.length]);
    }
  }
}

window.shvApp = new App();
