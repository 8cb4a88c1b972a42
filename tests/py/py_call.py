"""One pyshv call through our broker. Usage: py_call.py URL PATH METHOD [PARAM_JSON]
Prints `RESULT json` (or `ERROR [name, code]`), then `DONE`."""

import asyncio
import json
import sys

from common import connect, out
from shv.rpcapi.client import SHVClient
from shv.rpcdef.errors import RpcError


async def main(url: str, path: str, method: str, param: object) -> None:
    async with asyncio.timeout(20):
        client = await connect(SHVClient, url)
        try:
            out("RESULT", await client.call(path, method, param))
        except RpcError as exc:
            out("ERROR", [type(exc).__name__, int(exc.error_code)])
        await client.disconnect()
        out("DONE")


if __name__ == "__main__":
    param = json.loads(sys.argv[4]) if len(sys.argv) > 4 else None
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], param))
