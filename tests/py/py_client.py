"""pyshv client against our broker: log in (the URL decides SHA1 / PLAIN), browse, call.

Usage: py_client.py URL
Prints one `key JSON` line per observation, then `DONE`.
"""

import asyncio
import sys

from common import out
from shv.rpcapi.client import SHVClient
from shv.rpcdef.errors import RpcError


async def main(url: str) -> None:
    async with asyncio.timeout(20):
        client = await SHVClient.connect(url)
        out("LOGGED_IN")
        out("peer_shv_version", list(await client.peer_shv_version()))
        out("ls_root", sorted(await client.ls("")))
        out("ls_broker", sorted(await client.ls(".broker")))
        out("ls_has_broker", await client.ls_has_child("", ".broker"))
        out("dir_app", sorted(d.name for d in await client.dir(".app")))
        out("dir_app_has_ping", await client.dir_exists(".app", "ping"))
        out("shvVersionMajor", await client.call(".app", "shvVersionMajor"))
        await client.ping()
        out("ping_ok")
        info = await client.call(".broker/currentClient", "info")
        out("info_userName", info.get("userName") if isinstance(info, dict) else repr(info))
        out("number_get", await client.call("test/dev1/number", "get"))
        out("echo", await client.call("test/dev1", "echo", {"a": [1, 2, "x"], "b": None}))
        out("number_set", await client.call("test/dev1/number", "set", 5))
        out("number_get2", await client.call("test/dev1/number", "get"))
        out("dev_ls", await client.ls("test/dev1"))
        try:
            await client.call("no/such/path", "get")
            out("error", "none")
        except RpcError as exc:
            out("error", [type(exc).__name__, int(exc.error_code)])
        await client.disconnect()
        out("DONE")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
