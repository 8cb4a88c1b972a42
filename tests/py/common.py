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


async def connect(cls, url: str):
    """`cls.connect(url)`, except that `ws://HOST:PORT` goes through pySHV's own
    WebSocket client given that host and port: pySHV's URL dispatch hands WebSocket URLs
    to it without the port, which reaches only WebSockets on Unix sockets."""
    from shv.rpcurl import RpcProtocol, RpcUrl
    from shv.rpctransport.ws import RpcClientWebSockets

    u = RpcUrl.parse(url)
    if u.protocol is RpcProtocol.WS and u.port != -1:
        client = RpcClientWebSockets(u.location, u.port)
        await client.reset()
        res = cls(client, u.login)
        await res.wait_for_login()
        return res
    return await cls.connect(url)
