#!/usr/bin/env bash
# The main job, end to end on this machine: build everything, start shvbroker on its
# built-in default config (loopback only), mount an shvagent, poke both with shvcall, run
# a command over a remote-shell tunnel with shvrsh, then (on a terminal) open an
# interactive remote shell: type `exit` (or `~.` after Enter) to end the demo. Without a
# terminal (`scripts/demo.sh | tee log`) the broker and the agent keep running for the
# web terminal and other tools until Ctrl-C; SHV_DEMO_EXIT=1 stops them at once.
#
# The broker also serves the web terminal (web/, xterm.js from npm) on its WebSocket
# port: the demo prints the URL to open in a browser.
#
#   scripts/demo.sh            # tcp://127.0.0.1:3755, web terminal on http://127.0.0.1:3777/
#   SHV_DEMO_PORT=0 SHV_DEMO_WS_PORT=0 scripts/demo.sh   # any free ports instead
set -euo pipefail
cd "$(dirname "$0")/.."

# As .ci/run builds: the same fingerprints, so the demo after a test run rebuilds nothing.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
cargo build --workspace
BIN="${CARGO_TARGET_DIR:-target}/debug"
# The web terminal: its pinned npm packages (xterm.js) installed once from the lockfile,
# then web/dist built (the only directory the broker serves).
WEB=0
if command -v npm >/dev/null; then
    if [ -d web/node_modules ] || (cd web && npm ci --no-audit --no-fund --loglevel=error); then
        (cd web && npm run --silent build) && WEB=1
    fi
fi

RUN_DIR="$(mktemp -d)"
BROKER_PID=""
AGENT_PID=""
cleanup() {
    [ -n "$AGENT_PID" ] && kill "$AGENT_PID" 2>/dev/null || true
    [ -n "$BROKER_PID" ] && kill "$BROKER_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$RUN_DIR"
}
trap cleanup EXIT

# The default config listens on tcp://127.0.0.1:3755 and unix:$XDG_RUNTIME_DIR/shvbroker.sock;
# a private runtime dir keeps the socket away from any other broker.
LISTEN=(--listen "tcp://127.0.0.1:${SHV_DEMO_PORT:-3755}" --listen "unix:${RUN_DIR}/shvbroker.sock")
if [ "$WEB" = 1 ]; then
    LISTEN+=(--listen "ws://127.0.0.1:${SHV_DEMO_WS_PORT:-3777}" --web-root web/dist)
fi
XDG_RUNTIME_DIR="$RUN_DIR" "$BIN/shvbroker" "${LISTEN[@]}" 2>"$RUN_DIR/broker.log" &
BROKER_PID=$!

PORT=""
for _ in $(seq 1 300); do
    PORT="$(sed -n 's/.*listening on tcp:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$RUN_DIR/broker.log" | head -n1)"
    [ -n "$PORT" ] && break
    if ! kill -0 "$BROKER_PID" 2>/dev/null; then
        echo "demo: shvbroker exited:" >&2
        cat "$RUN_DIR/broker.log" >&2
        exit 1
    fi
    sleep 0.1
done
[ -n "$PORT" ] || { echo "demo: shvbroker did not start" >&2; cat "$RUN_DIR/broker.log" >&2; exit 1; }
echo "== shvbroker is listening on tcp://127.0.0.1:$PORT and unix:$RUN_DIR/shvbroker.sock"

ADMIN="tcp://admin@127.0.0.1:$PORT?password=admin"
call() {
    echo "\$ shvcall '$1' '$2' '$3' ${4:+'$4'}"
    "$BIN/shvcall" "$@"
}

call "$ADMIN" "" ls
call "$ADMIN" .app name
call "$ADMIN" .app shvVersionMajor
call "$ADMIN" .broker/currentClient info
call "unix:$RUN_DIR/shvbroker.sock?user=viewer&password=viewer" .app ping

# A device: shvagent mounted at test/agent, then a command run through it.
"$BIN/shvagent" "tcp://device@127.0.0.1:$PORT?password=device" --mount test/agent \
    2>"$RUN_DIR/agent.log" &
AGENT_PID=$!
for _ in $(seq 1 300); do
    if "$BIN/shvcall" "$ADMIN" test ls 2>/dev/null | grep -q '"agent"'; then break; fi
    sleep 0.1
done
call "$ADMIN" test ls
call "$ADMIN" test/agent ls
call "$ADMIN" test/agent runCmd '"echo hello from the agent; uname -s"'

# The remote shell: a tunnel from shvrsh through the broker to shvrexec on the device.
echo "\$ shvrsh '$ADMIN' test/agent -- sh -c 'echo hello from a remote shell; echo to stderr >&2; exit 3'"
set +e
"$BIN/shvrsh" "$ADMIN" test/agent -- sh -c 'echo hello from a remote shell; echo to stderr >&2; exit 3'
echo "(exit status $?)"
set -e
echo "\$ head -c 1048576 /dev/urandom | shvrsh ... -- sha256sum   (compare with the local sum)"
head -c 1048576 /dev/urandom >"$RUN_DIR/blob"
"$BIN/shvrsh" "$ADMIN" test/agent -- sha256sum <"$RUN_DIR/blob"
sha256sum <"$RUN_DIR/blob"
call "$ADMIN" .broker/tunnels list

if [ "$WEB" = 1 ]; then
    WSPORT="$(sed -n 's/.*listening on ws:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$RUN_DIR/broker.log" | head -n1)"
    echo "== web terminal: open http://127.0.0.1:$WSPORT/ and log in as admin/admin (pick test/agent)"
else
    echo "== (no web terminal: it needs npm, then 'cd web && npm ci && npm run build')"
fi
if [ -t 0 ] && [ -t 1 ]; then
    echo "== interactive remote shell on test/agent (exit or ~. to leave; the web terminal works meanwhile)"
    echo "\$ shvrsh '$ADMIN' test/agent"
    "$BIN/shvrsh" "$ADMIN" test/agent || true
    echo "== demo OK"
elif [ "${SHV_DEMO_EXIT:-0}" = 1 ]; then
    echo "== demo OK"
else
    echo "== no terminal, so no interactive shell here; from another terminal try"
    echo "\$ $BIN/shvrsh '$ADMIN' test/agent"
    echo "== demo OK; the broker and the agent keep running: Ctrl-C stops them"
    wait "$BROKER_PID" || true
fi
