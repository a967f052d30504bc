"""The CPython floor for bench_dns: the least a Python DNS server on uvloop can do per query.

It answers every UDP query by turning its header into a response (QR, RA, RCODE NXDOMAIN) and sending
the packet back: no parsing, no policy, no list, no cache, no metrics. Whatever the gateway costs above
this figure is its own code; what this costs is the interpreter, uvloop and the kernel.

Run: python bench/floor_server.py PORT   (127.0.0.1 only; prints "floor ready" once bound)
"""

from __future__ import annotations

import asyncio
import sys


class Floor(asyncio.DatagramProtocol):
    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        if len(data) >= 12:
            self.transport.sendto(data[:2] + b"\x81\x83" + data[4:], addr)


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(Floor, local_addr=("127.0.0.1", port))
    print("floor ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(int(sys.argv[1])))
    else:
        uvloop.run(main(int(sys.argv[1])))
