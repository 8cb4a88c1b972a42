"""pyshv client that subscribes to an RI and prints the signals it gets.

Usage: py_subscriber.py URL RI COUNT
Prints `SUBSCRIBED` once the broker accepted the subscription, then for each of COUNT
signals: `SIGNAL [path, signal, source, param]`, then `DONE`.
"""

import asyncio
import sys

from common import out, fail
from shv.rpcapi.client import SHVClient


class Subscriber(SHVClient):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.signals: asyncio.Queue = asyncio.Queue()

    async def _got_signal(self, signal: SHVClient.Signal) -> None:
        await self.signals.put(signal)


async def main(url: str, ri: str, count: int) -> None:
    async with asyncio.timeout(20):
        client = await Subscriber.connect(url)
        if not await client.subscribe(ri):
            fail(f"subscribe({ri}) returned false")
        out("SUBSCRIBED")
        for _ in range(count):
            s = await client.signals.get()
            out("SIGNAL", [s.path, s.signal, s.source, s.param])
        await client.disconnect()
        out("DONE")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
