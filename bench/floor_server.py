"""The CPython floor for bench_dns: the least a Python DNS server on uvloop can do per query.

Answer mode (the hit/block floor): every UDP query is turned into a response (QR, RA, RCODE NXDOMAIN)
and sent back. Forward mode (the miss-path floor): every query goes to the upstream under a fresh
random ID from os.urandom, and the answer back to the client under its own ID; an answer whose ID is
not in flight is dropped. Neither parses, judges, caches or counts anything. Whatever the gateway costs
above these figures is its own code; what they cost is the interpreter, uvloop and the kernel.

Run: python bench/floor_server.py PORT [UPSTREAM_PORT]   (127.0.0.1 only; prints "floor ready")
"""

from __future__ import annotations

import asyncio
import os
import sys


class Floor(asyncio.DatagramProtocol):
    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        if len(data) >= 12:
            self.transport.sendto(data[:2] + b"\x81\x83" + data[4:], addr)


class Forward(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.pending: dict[bytes, tuple[bytes, tuple]] = {}  # our ID -> (client's ID, client's address)
        self.upstream = None
        self._ids, self._at = b"", 0

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:  # from a client
        if len(data) < 12:
            return
        if self._at >= len(self._ids):
            self._ids, self._at = os.urandom(4096), 0
        qid = self._ids[self._at : self._at + 2]
        self._at += 2
        self.pending[qid] = (data[:2], addr)
        self.upstream.sendto(qid + data[2:])

    def answered(self, data: bytes) -> None:  # from the upstream
        asked = self.pending.pop(data[:2], None)
        if asked is not None:
            self.transport.sendto(asked[0] + data[2:], asked[1])


class Upstream(asyncio.DatagramProtocol):
    def __init__(self, front: Forward) -> None:
        self.front = front

    def datagram_received(self, data: bytes, addr) -> None:
        self.front.answered(data)


async def main(port: int, upstream: int | None) -> None:
    loop = asyncio.get_running_loop()
    if upstream is None:
        await loop.create_datagram_endpoint(Floor, local_addr=("127.0.0.1", port))
    else:
        front = Forward()
        await loop.create_datagram_endpoint(lambda: front, local_addr=("127.0.0.1", port))
        front.upstream, _ = await loop.create_datagram_endpoint(
            lambda: Upstream(front), remote_addr=("127.0.0.1", upstream)
        )
    print("floor ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    args = (int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else None)
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(*args))
    else:
        uvloop.run(main(*args))
