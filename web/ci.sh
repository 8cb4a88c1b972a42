#!/usr/bin/env bash
# CI for the web terminal (web/): run from anywhere, as root on a fresh Debian machine.
# Assumes the Rust binaries are built (cargo build --workspace → target/debug/, or set
# SHV_BIN_DIR). Installs Debian's Chromium if missing (no browser download by npm),
# installs the pinned npm packages from package-lock.json, builds web/dist/ (what the
# broker serves with --web-root web/dist), runs the node tests (codec vectors, SHA-1,
# RPC client and tunnel against the real broker and agent), then the headless browser
# test (its screenshot goes to a temporary file unless SCREENSHOT=PATH says otherwise).
set -euo pipefail
cd "$(dirname "$0")"

if [[ ! -x /usr/bin/chromium ]]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium >/dev/null
fi
if ! command -v node >/dev/null || [[ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]]; then
    echo "web/ci.sh: Node.js 20 or newer is required" >&2
    exit 1
fi

export PUPPETEER_SKIP_DOWNLOAD=1   # puppeteer-core downloads nothing anyway; belt and braces
npm ci --no-audit --no-fund --loglevel=error

echo "== build (web/dist)"
npm run --silent build

echo "== node tests"
node --test test/

echo "== browser test (headless $(/usr/bin/chromium --version 2>/dev/null | head -n1))"
node test/browser.mjs
