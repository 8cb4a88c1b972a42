"""pyshv device mounted on our broker (devmount / devid in the URL).

Serves, relative to its mount point:
  counter:get (rd) -> 123 at start, counter:set (wr), echo(x) -> x
plus pyshv's standard .app and .device nodes. Prints `READY` once logged in, then
serves until killed.

Usage: py_device.py URL
"""

import asyncio
import sys

from common import connect, out
from shv.rpcapi.device import SHVDevice
from shv.rpcdef import RpcAccess, RpcDir, RpcMethodNotFoundError


class Device(SHVDevice):
    APP_NAME = "pyshv-test-device"
    DEVICE_NAME = "pydev"

    def __init__(self, *args, **kwargs) -> None:
        self.counter = 123
        super().__init__(*args, **kwargs)

    def _ls(self, path: str):
        yield from super()._ls(path)
        if path == "":
            yield "counter"

    def _dir(self, path: str):
        yield from super()._dir(path)
        if path == "":
            yield RpcDir("echo", access=RpcAccess.BROWSE)
        if path == "counter":
            yield RpcDir.getter(result="i", signal=True)
            yield RpcDir.setter(param="i")

    async def _method_call(self, request: SHVDevice.Request):
        match request.path, request.method:
            case "", "echo":
                return request.param
            case "counter", "get" if request.access >= RpcAccess.READ:
                return self.counter
            case "counter", "set" if request.access >= RpcAccess.WRITE:
                if not isinstance(request.param, int):
                    raise RpcMethodNotFoundError("set needs an int")
                self.counter = request.param
                return None
            case "", "accessLevel":
                return int(request.access)
        return await super()._method_call(request)


async def main(url: str) -> None:
    async with asyncio.timeout(20):
        dev = await connect(Device, url)
    out("READY")
    await dev.task


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
