"""Shared bits of the interop scripts: one JSON line per observation on stdout."""

import json
import sys


def out(key: str, value: object = None) -> None:
    """Print `key JSON` (or just `key`) and flush, for the Rust side to assert on."""
    if value is None:
        print(key, flush=True)
    else:
        print(key, json.dumps(value, sort_keys=True, default=repr), flush=True)


def fail(msg: str) -> None:
    print(f"FAIL {msg}", file=sys.stderr, flush=True)
    sys.exit(1)
