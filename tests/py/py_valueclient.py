"""pyshv SHVValueClient that subscribes to a path and prints value changes.

Usage: py_valueclient.py URL RI PATH COUNT
Prints `SUBSCRIBED` once the subscription is made (and a change handler for PATH is in
place), then for each of COUNT changes of PATH: `VALUE value`, and last `CACHED value`
(the client's cache), then `DONE`. The client first asks `.app:shvVersionMajor` to pick SHV 3 or 2:
a user whose roles grant nothing on `.app` must still get an answer.
"""

import asyncio
import sys

from common import out, fail
from shv.rpcapi.valueclient import SHVValueClient


async def main(url: str, ri: str, path: str, count: int) -> None:
    async with asyncio.timeout(20):
        client = await SHVValueClient.connect(url)
        version = await client.peer_shv_version()
        if version < (3, 0):
            fail(f"broker seen as SHV {version}")
        changes: asyncio.Queue = asyncio.Queue()
        client.on_change(path, lambda _c, _p, value: changes.put_nowait(value))
        if not await client.subscribe(ri):
            fail(f"subscribe({ri}) returned false")
        out("SUBSCRIBED")
        for _ in range(count):
            out("VALUE", await changes.get())
        out("CACHED", client[path])
        await client.disconnect()
        out("DONE")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
