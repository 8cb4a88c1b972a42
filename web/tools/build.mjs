#!/usr/bin/env node
// Builds web/dist/: exactly the files the page needs, which is what the broker serves
// (`shvbroker --web-root web/dist`). No bundler: the page's own files are copied as
// they are, our modules by following the imports from app.js, and xterm.js + the fit
// addon from node_modules/ (npm ci) into dist/vendor/. Never serve web/ itself: it
// holds node_modules (puppeteer…), the tests and the tools.
//
//   node tools/build.mjs     (npm run build)     -q: print nothing but errors

import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const web = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dist = path.join(web, 'dist');
const quiet = process.argv.includes('-q');

/** The page's own files, copied as they are (app.js's imports are followed below). */
const PAGE = ['index.html', 'app.js', 'style.css', 'favicon.svg'];
/** [from node_modules/, to dist/]: the pinned xterm.js (package-lock.json). */
const VENDOR = [
  ['@xterm/xterm/lib/xterm.mjs', 'vendor/xterm.mjs'],
  ['@xterm/xterm/css/xterm.css', 'vendor/xterm.css'],
  ['@xterm/addon-fit/lib/addon-fit.mjs', 'vendor/addon-fit.mjs'],
  // MIT: the licence goes with the copy.
  ['@xterm/xterm/LICENSE', 'vendor/xterm.LICENSE.txt'],
  ['@xterm/addon-fit/LICENSE', 'vendor/addon-fit.LICENSE.txt'],
];

class BuildError extends Error {}

/** Relative specifiers of a module's static imports and re-exports. */
function importsOf(source) {
  const specs = [];
  const re = /^\s*(?:import|export)\s(?:[^'";]*?\sfrom\s*)?['"]([^'"]+)['"]/gm;
  for (const m of source.matchAll(re)) specs.push(m[1]);
  const code = source.replace(/^\s*(?:\/\/|\/?\*).*$/gm, ''); // comment lines (JSDoc's import('…') types)
  if (/\bimport\s*\(/.test(code)) throw new BuildError('dynamic import() is not followed by the build: use a static import');
  return specs;
}

function build() {
  const modules = path.join(web, 'node_modules');
  if (!existsSync(modules)) throw new BuildError(`${modules} is missing: run \`npm ci\` first`);
  const files = new Map(); // dist-relative path → { from, transform? }
  for (const f of PAGE) files.set(f, { from: path.join(web, f) });
  for (const [from, to] of VENDOR) {
    const src = path.join(modules, from);
    if (!existsSync(src)) throw new BuildError(`${src} is missing: run \`npm ci\` (package-lock.json pins it)`);
    // The source maps are not shipped, so their comments go too.
    const transform = to.endsWith('.mjs') ? (t) => t.replace(/\n\/\/# sourceMappingURL=\S*\s*$/, '\n') : undefined;
    files.set(to, { from: src, transform });
  }

  // Our modules: whatever app.js imports, transitively (only under web/, never node_modules).
  const queue = ['app.js'];
  const seen = new Set(queue);
  while (queue.length) {
    const rel = queue.shift();
    const source = readFileSync(path.join(web, rel), 'utf8');
    for (const spec of importsOf(source)) {
      if (!spec.startsWith('./') && !spec.startsWith('../')) throw new BuildError(`${rel} imports "${spec}": only relative imports work without a bundler`);
      const target = path.posix.normalize(path.posix.join(path.posix.dirname(rel), spec));
      if (target.startsWith('../') || target.startsWith('node_modules/') || target.startsWith('dist/')) {
        throw new BuildError(`${rel} imports "${spec}", outside the page's files`);
      }
      if (files.has(target) && files.get(target).from.startsWith(modules)) continue; // vendor/…
      if (!existsSync(path.join(web, target))) throw new BuildError(`${rel} imports "${spec}", which does not exist`);
      files.set(target, { from: path.join(web, target) });
      if (!seen.has(target)) { seen.add(target); queue.push(target); }
    }
  }

  // Everything index.html links must be in dist/.
  const html = readFileSync(path.join(web, 'index.html'), 'utf8');
  for (const m of html.matchAll(/\s(?:src|href)\s*=\s*"([^"]*)"/g)) {
    const ref = m[1];
    if (/^(?:[a-z][a-z0-9+.-]*:|\/\/|#)/i.test(ref)) throw new BuildError(`index.html links "${ref}": the page loads nothing from elsewhere`);
    const target = path.posix.normalize(ref.split(/[?#]/)[0].replace(/^\//, ''));
    if (!files.has(target)) throw new BuildError(`index.html links "${ref}", which the build does not produce`);
  }

  // Write next to dist/, then swap it in (a running broker never sees half a build).
  const tmp = `${dist}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  for (const [to, { from, transform }] of [...files].sort(([a], [b]) => a.localeCompare(b))) {
    const out = path.join(tmp, to);
    mkdirSync(path.dirname(out), { recursive: true });
    if (transform) writeFileSync(out, transform(readFileSync(from, 'utf8')));
    else copyFileSync(from, out);
  }
  const old = `${dist}.old-${process.pid}`;
  if (existsSync(dist)) renameSync(dist, old);
  renameSync(tmp, dist);
  rmSync(old, { recursive: true, force: true });
  return [...files.keys()].sort();
}

function list(dir, base = dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? list(p, base) : [[path.relative(base, p), statSync(p).size]];
  });
}

try {
  build();
  if (!quiet) {
    const files = list(dist);
    for (const [f, n] of files) console.log(`  ${f.padEnd(28)} ${String(n).padStart(8)}`);
    console.log(`built ${path.relative(process.cwd(), dist) || '.'}/: ${files.length} files`);
  }
} catch (e) {
  console.error(`build: ${e instanceof BuildError ? e.message : e.stack}`);
  process.exit(1);
}
