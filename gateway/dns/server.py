"""asyncio UDP and TCP listeners that feed packets through the stage chain; no policy code here."""

from __future__ import annotations

import asyncio
import logging
import socket

from gateway.dns import answers
from gateway.dns.memo import AnswerMemo
from gateway.dns.stages import Chain, Request
from gateway.dns.wire import Query, parse_query, truncate_for_udp

log = logging.getLogger("gateway.dns")

TCP_IDLE = 10.0  # seconds a client TCP connection may stay silent (RFC 7766 suggests seconds, not minutes)
TCP_MAX_CONNECTIONS = 512
MAX_PENDING = 4096  # UDP queries waiting on upstreams; beyond this new misses get SERVFAIL at once


def _finish(raw: bytes, question_end: int, response: bytes) -> bytes:
    # Give the client back its own spelling of the question (0x20 case randomisation survives).
    if len(response) >= question_end and response[12:question_end] != raw[12:question_end] \
            and response[12:question_end].lower() == raw[12:question_end].lower():
        response = response[:12] + raw[12:question_end] + response[question_end:]
    return response


def _gate(data: bytes, tcp: bool) -> Query | bytes | None:
    """The packet as a Query, or the error reply for a rejected one (FORMERR, NOTIMP, ...), or None (drop).

    parse_query never raises (property-tested on arbitrary bytes), so one packet cannot stop a listener.
    """
    q = parse_query(data, tcp=tcp)
    if q is None or type(q) is Query:
        return q
    return answers.error_from_raw(data, q)


class UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, chain: Chain, memo: AnswerMemo | None = None):
        self.chain = chain
        self.memo = memo
        self.transport = None
        self.pending: set[asyncio.Task] = set()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        memo = self.memo
        if memo is not None:
            reply = memo.answer(data, addr)
            if reply is not None:
                if reply:
                    self.transport.sendto(reply, addr)
                return
        q = _gate(data, tcp=False)
        if type(q) is not Query:
            if q:
                self.transport.sendto(q, addr)
            return
        req = Request(q, addr[0], addr[1], "udp")
        result = self.chain.run(req)
        if type(result) is bytes:
            if result:
                reply = truncate_for_udp(_finish(data, q.question_end, result), q.udp_size)
                self.transport.sendto(reply, addr)
                if memo is not None and req.until:
                    memo.remember(data, req, reply)
            return
        if len(self.pending) >= MAX_PENDING:
            result.close()
            self.transport.sendto(answers.error(q, 2), addr)
            return
        if memo is not None:
            memo.saw(data)
        task = asyncio.get_running_loop().create_task(self._later(result, q, data, addr))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _later(self, pending, q, data, addr) -> None:
        result = await pending
        if result and self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(truncate_for_udp(_finish(data, q.question_end, result), q.udp_size), addr)

    def error_received(self, exc) -> None:  # ICMP errors for earlier replies; nothing to do
        pass


class TcpServer:
    """DNS over TCP (RFC 7766): length-prefixed messages, pipelined, with an idle timeout."""

    def __init__(self, chain: Chain):
        self.chain = chain
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.connections >= TCP_MAX_CONNECTIONS:
            writer.close()
            return
        self.connections += 1
        peer = writer.get_extra_info("peername") or ("", 0)
        lock = asyncio.Lock()
        tasks: set[asyncio.Task] = set()
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE)
                    data = await asyncio.wait_for(reader.readexactly(int.from_bytes(head, "big")), TCP_IDLE)
                except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                    break
                task = asyncio.get_running_loop().create_task(self._one(data, peer, writer, lock))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        finally:
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            self.connections -= 1
            writer.close()

    async def _one(self, data: bytes, peer, writer: asyncio.StreamWriter, lock: asyncio.Lock) -> None:
        q = _gate(data, tcp=True)
        if type(q) is not Query:
            reply = q
        else:
            req = Request(q, peer[0], peer[1], "tcp")
            result = self.chain.run(req)
            reply = result if type(result) is bytes else await result
            reply = _finish(data, q.question_end, reply) if reply else reply
        if not reply:
            return
        async with lock:
            try:
                writer.write(len(reply).to_bytes(2, "big") + reply)
                await writer.drain()
            except ConnectionError:
                pass


def bind_udp(host: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    sock.bind((host, port))
    sock.setblocking(False)
    return sock


def bind_tcp(host: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind((host, port))
    sock.listen(256)
    sock.setblocking(False)
    return sock


async def serve(chain: Chain, sockets: list[tuple[str, socket.socket]], memo: AnswerMemo | None = None):
    """Start listeners on already-bound sockets; returns (transports, tcp servers). UDP answers go
    through `memo` first when one is given."""
    loop = asyncio.get_running_loop()
    transports, servers = [], []
    tcp = TcpServer(chain)
    for kind, sock in sockets:
        if kind == "udp":
            transport, _ = await loop.create_datagram_endpoint(lambda: UdpProtocol(chain, memo), sock=sock)
            transports.append(transport)
        else:
            servers.append(await asyncio.start_server(tcp.handle, sock=sock))
    return transports, servers
