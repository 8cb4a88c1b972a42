#!/usr/bin/env bash
# Runs pySHV 0.13.0's own broker test suite (../shared/conformance) against our debug
# broker with tests/conformance/pyshv-suite.yaml, a fresh broker per test, and fails
# unless at least 114 of its 115 tests pass. The 115th, test_shvclient.py::
# test_reconnect, needs pySHV's in-process broker object, which no external broker can
# give; it is deselected (not counted as passed).
#
# One known race in pySHV's own client is rerun, and nothing else: SHVBase.call()
# (shv/rpcapi/base.py) checks `request_id in self._responses`, awaits sending an abort,
# then `del`s the entry; a response arriving during that await has already removed it,
# and the cancelled call raises KeyError instead of CancelledError. The suite's
# test_prop_change_subscribed cancels such a call on purpose. Under CPU load it fails
# this way against pySHV's own broker too (10 of 30 runs here; ours 4 of 30; once in a
# clean CI run). A test that failed only with that traceback is run again, at most
# twice, and must pass then; any other failure fails the run.
#
#   tests/conformance/run.sh [PYTHON] [PORT]
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${1:-.venv/bin/python}"
PORT="${2:-3999}"
SUITE="${SHV_CONFORMANCE_DIR:-../shared/conformance}/run-pyshv-suite.sh"
REQUIRED=114
[ -x target/debug/shvbroker ] || { echo "conformance: build the workspace first" >&2; exit 2; }
[ -f "$SUITE" ] || { echo "conformance: $SUITE not found (set SHV_CONFORMANCE_DIR)" >&2; exit 2; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
BROKER="$PWD/target/debug/shvbroker -c $PWD/tests/conformance/pyshv-suite.yaml --listen tcp://127.0.0.1:{port} --log warn"

# run-pyshv-suite.sh with our broker; $1 names the junit report, the rest go to pytest.
suite() {
    local report="$1"
    shift
    bash "$SUITE" "$PYTHON" "$PORT" "$BROKER" --timeout=30 -p no:cacheprovider \
        --junitxml="$work/$report.xml" "$@"
}

# From a junit report: "passed N" and, per failed test, "known NODEID" when its only
# failure is the race above, else "other NODEID".
verdicts() {
    "$PYTHON" - "$1" <<'PY'
import sys
import xml.etree.ElementTree as ET

RACE = ("del self._responses[request.request_id]", "KeyError")
passed = 0
for case in ET.parse(sys.argv[1]).iter("testcase"):
    bad = [e for e in case if e.tag in ("failure", "error")]
    if any(e.tag == "skipped" for e in case):
        continue
    if not bad:
        passed += 1
        continue
    node = case.get("classname", "").replace(".", "/") + ".py::" + case.get("name", "")
    text = "".join((e.get("message") or "") + (e.text or "") for e in bad)
    known = len(bad) == 1 and bad[0].tag == "failure" and all(s in text for s in RACE)
    print(("known " if known else "other ") + node)
print(f"passed {passed}")
PY
}

status=0
suite first --deselect tests/test_shvclient.py::test_reconnect >"$work/log" 2>&1 || status=$?
[ -f "$work/first.xml" ] || { cat "$work/log"; echo "conformance: pytest wrote no report" >&2; exit 1; }
verdicts "$work/first.xml" >"$work/verdicts"
passed="$(sed -n 's/^passed //p' "$work/verdicts")"
mapfile -t known < <(sed -n 's/^known //p' "$work/verdicts")
attempt=1
while [ "$status" -ne 0 ] && [ "$attempt" -le 2 ] && [ "${#known[@]}" -gt 0 ] \
    && ! grep -q '^other ' "$work/verdicts"; do
    echo "conformance: rerun $attempt of ${known[*]}: failed only with pySHV's call() KeyError race"
    cat "$work/log" >>"$work/earlier.log"
    status=0
    suite "again$attempt" "${known[@]}" >"$work/log" 2>&1 || status=$?
    verdicts "$work/again$attempt.xml" >"$work/verdicts" 2>/dev/null || echo "other report" >"$work/verdicts"
    again="$(sed -n 's/^passed //p' "$work/verdicts")"
    passed=$((passed + ${again:-0}))
    mapfile -t known < <(sed -n 's/^known //p' "$work/verdicts")
    attempt=$((attempt + 1))
done
if [ "$status" -ne 0 ] && [ -f "$work/earlier.log" ]; then
    cat "$work/earlier.log"
fi
if [ "$status" -ne 0 ] || [ "${passed:-0}" -lt "$REQUIRED" ]; then
    cat "$work/log"
    echo "pySHV conformance suite: ${passed:-0} of 115 passed, $REQUIRED required (pytest status $status)" >&2
    exit 1
fi
echo "pySHV conformance suite: $passed of 115 passed (test_reconnect deselected: it needs pySHV's in-process broker)"
