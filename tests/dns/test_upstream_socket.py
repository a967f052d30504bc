"""The UDP path of Upstreams at the socket level: source ports, IDs, forgeries, timeouts, no fd leaks.

The upstream here is a scripted DNS server on 127.0.0.1 in the test's own event loop, so each test
decides exactly what comes back, from where, and when.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import os
import socket
from collections.abc import Callable

import dns.message
import dns.rrset
import pytest

from gateway.dns import upstream as upstream_module
from gateway.dns.upstream import _CHANNEL_QUERIES, UpstreamError, Upstreams, UpstreamSpec

ADDRESS = "93.184.216.34"

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is optional
    uvloop = None

LOOPS = ["asyncio", pytest.param("uvloop", marks=pytest.mark.skipif(uvloop is None, reason="no uvloop"))]


def run(coro, loop_kind: str = "asyncio"):
    factory = uvloop.new_event_loop if loop_kind == "uvloop" else None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


def open_fds() -> int:
    gc.collect()  # sockets of earlier tests that are only waiting for the collector
    return len(os.listdir("/proc/self/fd"))


needs_proc = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")


def answer(query: bytes, *, qid: int | None = None, name: str | None = None, address: str = ADDRESS) -> bytes:
    q = dns.message.from_wire(query)
    if name is not None:
        q = dns.message.make_query(name, "A")
        q.id = dns.message.from_wire(query).id
    r = dns.message.make_response(q)
    owner = q.question[0].name
    r.answer.append(dns.rrset.from_text(owner, 300, "IN", "A", address))
    if qid is not None:
        r.id = qid
    return r.to_wire()


Respond = Callable[[bytes, tuple], list[bytes]]


class Scripted(asyncio.DatagramProtocol):
    """A UDP DNS server whose replies come from `respond(query, addr)`; replies can also be held back."""

    def __init__(self, respond: Respond | None = None) -> None:
        self.respond = respond if respond is not None else (lambda data, addr: [answer(data)])
        self.received: list[tuple[bytes, tuple]] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        self.received.append((data, addr))
        for reply in self.respond(data, addr):
            self.transport.sendto(reply, addr)

    def send(self, data: bytes, addr) -> None:
        self.transport.sendto(data, addr)

    @property
    def port(self) -> int:
        return self.transport.get_extra_info("sockname")[1]

    @property
    def ports(self) -> list[int]:
        return [addr[1] for _, addr in self.received]

    @property
    def ids(self) -> list[int]:
        return [data[0] << 8 | data[1] for data, _ in self.received]


async def scripted(respond: Respond | None = None) -> Scripted:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_datagram_endpoint(lambda: Scripted(respond), local_addr=("127.0.0.1", 0))
    return proto


def ups_for(*servers: Scripted | str, timeout: float = 1.0, **kw) -> Upstreams:
    texts = [s if isinstance(s, str) else f"udp://127.0.0.1:{s.port}" for s in servers]
    return Upstreams([UpstreamSpec.parse(t) for t in texts], timeout=timeout, **kw)


def query(name: str = "example.com", qid: int = 0x4242) -> bytes:
    q = dns.message.make_query(name, "A")
    q.id = qid
    return q.to_wire()


def addresses(wire: bytes) -> list[str]:
    return sorted(rr.to_text() for rrset in dns.message.from_wire(wire).answer for rr in rrset)


async def until(predicate: Callable[[], bool], timeout: float = 2.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        assert loop.time() < end, "condition not reached in time"
        await asyncio.sleep(0.005)


# ---- source ports and IDs ----


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_one_query_at_a_time_gets_a_fresh_port_each(loop_kind):
    async def main():
        server = await scripted()
        async with ups_for(server) as ups:
            for i in range(12):
                assert addresses(await ups.query(query(f"n{i}.example.com"))) == [ADDRESS]
        return server

    server = run(main(), loop_kind)
    # The kernel picks each port at random: a repeat is possible, just unlikely.
    assert len(set(server.ports)) >= 10
    assert len(set(server.ids)) >= 10


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_overlapping_queries_share_a_port_only_a_few_dozen_times(loop_kind):
    held: list[tuple[bytes, tuple]] = []

    async def main():
        server = await scripted(lambda data, addr: held.append((data, addr)) or [])
        async with ups_for(server, timeout=5.0) as ups:
            n = 5 * _CHANNEL_QUERIES
            tasks = [asyncio.ensure_future(ups.query(query(f"n{i}.example.com", qid=7))) for i in range(n)]
            await until(lambda: len(held) == n)
            for data, addr in held:
                server.send(answer(data), addr)
            results = await asyncio.gather(*tasks)
            assert all(addresses(r) == [ADDRESS] for r in results)
            assert all(r[:2] == b"\x00\x07" for r in results)  # the client's ID comes back
        return server

    server = run(main(), loop_kind)
    per_port: dict[int, list[int]] = {}
    for port, qid in zip(server.ports, server.ids, strict=True):
        per_port.setdefault(port, []).append(qid)
    assert len(per_port) >= 5
    for ids in per_port.values():
        assert len(ids) <= _CHANNEL_QUERIES
        assert len(set(ids)) == len(ids)  # IDs never repeat among the queries sharing a port


# ---- forgeries ----


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_wrong_id_and_wrong_question_from_the_upstream_address_are_counted_and_ignored(loop_kind):
    def respond(data, addr):
        real_id = data[0] << 8 | data[1]
        return [
            answer(data, qid=real_id ^ 0x5555, address="6.6.6.6"),
            answer(data, name="evil.example", address="6.6.6.6"),
            b"\x00",  # too short to carry an ID
            answer(data),
        ]

    async def main():
        server = await scripted(respond)
        async with ups_for(server) as ups:
            assert addresses(await ups.query(query())) == [ADDRESS]
            assert ups.spoofed == 3
            assert ups.health()[0].failures == 0

    run(main(), loop_kind)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_reply_from_another_port_never_reaches_the_query(loop_kind):
    async def main():
        other = await scripted(lambda data, addr: [])
        # The forgery carries the right ID and question but comes from `other`'s port: the connected
        # socket never receives it. Only the real upstream's reply gets through.
        server = await scripted(lambda data, addr: other.send(answer(data, address="6.6.6.6"), addr) or [])
        async with ups_for(server, timeout=0.3) as ups:
            with pytest.raises(UpstreamError, match="no answer within"):
                await ups.query(query())
            assert ups.spoofed == 0
            server.respond = lambda data, addr: (other.send(answer(data, address="6.6.6.6"), addr), [answer(data)])[1]
            assert addresses(await ups.query(query())) == [ADDRESS]

    run(main(), loop_kind)


# ---- timeouts, cancellation, close: nothing left open ----


@needs_proc
@pytest.mark.parametrize("loop_kind", LOOPS)
def test_sockets_are_closed_after_answers_timeouts_and_failures(loop_kind):
    async def main():
        server = await scripted()
        silent = await scripted(lambda data, addr: [])
        dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        dead.bind(("127.0.0.1", 0))
        dead_port = dead.getsockname()[1]
        dead.close()
        before = open_fds()
        async with ups_for(server) as ups:
            await asyncio.gather(*(ups.query(query(f"n{i}.example.com")) for i in range(50)))
            assert open_fds() == before
        async with ups_for(silent, timeout=0.2) as ups:
            results = await asyncio.gather(
                *(ups.query(query(f"n{i}.example.com")) for i in range(20)), return_exceptions=True
            )
            assert all(isinstance(r, UpstreamError) and "no answer within" in str(r) for r in results)
            assert open_fds() == before
        async with ups_for(f"udp://127.0.0.1:{dead_port}", server) as ups:
            # Port unreachable fails every query sharing that socket at once; each moves to the next upstream.
            results = await asyncio.gather(*(ups.query(query(f"n{i}.example.com")) for i in range(20)))
            assert all(addresses(r) == [ADDRESS] for r in results)
            assert ups.health()[0].failures >= 1
            assert open_fds() == before

    run(main(), loop_kind)


@needs_proc
@pytest.mark.parametrize("loop_kind", LOOPS)
def test_a_late_answer_after_cancel_is_expected_not_a_forgery(loop_kind):
    held: list[tuple[bytes, tuple]] = []

    async def main():
        server = await scripted(lambda data, addr: held.append((data, addr)) or [])
        before = open_fds()
        async with ups_for(server, timeout=5.0) as ups:
            first = asyncio.ensure_future(ups.query(query("first.example")))
            second = asyncio.ensure_future(ups.query(query("second.example")))
            await until(lambda: len(held) == 2)
            assert held[0][1] == held[1][1]  # overlapping: one socket
            first.cancel()
            with pytest.raises(asyncio.CancelledError):
                await first
            server.send(answer(held[0][0]), held[0][1])  # the cancelled one's answer arrives late
            await asyncio.sleep(0.05)
            assert ups.spoofed == 0 and not second.done()
            server.send(answer(held[1][0]), held[1][1])
            assert addresses(await second) == [ADDRESS]
            assert ups.health()[0].queries == 2 and ups.health()[0].failures == 0
            assert open_fds() == before

    run(main(), loop_kind)


@needs_proc
@pytest.mark.parametrize("loop_kind", LOOPS)
def test_cancelling_the_only_waiter_closes_its_socket(loop_kind):
    async def main():
        server = await scripted(lambda data, addr: [])
        before = open_fds()
        async with ups_for(server, timeout=5.0) as ups:
            task = asyncio.ensure_future(ups.query(query()))
            await until(lambda: len(server.received) == 1)
            assert open_fds() == before + 1
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert open_fds() == before
            assert ups.health()[0].failures == 0  # giving up is not the upstream's failure

    run(main(), loop_kind)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_merged_waiter_cancelled_the_other_still_gets_the_answer(loop_kind):
    held: list[tuple[bytes, tuple]] = []
    key = ("example.com", 1)

    async def main():
        server = await scripted(lambda data, addr: held.append((data, addr)) or [])
        async with ups_for(server, timeout=5.0) as ups:
            a = asyncio.ensure_future(ups.query(query(qid=1), key))
            b = asyncio.ensure_future(ups.query(query(qid=2), key))
            await until(lambda: len(held) == 1)
            a.cancel()
            with pytest.raises(asyncio.CancelledError):
                await a
            server.send(answer(held[0][0]), held[0][1])
            r = await b
            assert r[:2] == b"\x00\x02" and addresses(r) == [ADDRESS]
        assert len(held) == 1

    run(main(), loop_kind)


@needs_proc
@pytest.mark.parametrize("loop_kind", LOOPS)
def test_close_fails_udp_queries_in_flight_and_closes_their_sockets(loop_kind):
    async def main():
        server = await scripted(lambda data, addr: [])
        before = open_fds()
        ups = ups_for(server, timeout=5.0)
        tasks = [asyncio.ensure_future(ups.query(query(f"n{i}.example.com"))) for i in range(5)]
        merged = asyncio.ensure_future(ups.query(query("n0.example.com"), "k"))
        await until(lambda: len(server.received) == 6)
        await ups.close()
        for task in [*tasks, merged]:
            with pytest.raises(UpstreamError, match="closed"):
                await task
        assert open_fds() == before

    run(main(), loop_kind)


def test_socket_that_cannot_be_opened_is_an_upstream_failure(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError(errno.EMFILE, "Too many open files")

    async def main():
        server = await scripted()
        async with ups_for(server) as ups:
            monkeypatch.setattr(upstream_module.socket, "socket", refuse)
            with pytest.raises(UpstreamError, match="Too many open files"):
                await ups.query(query())
            assert ups.health()[0].failures == 1
            monkeypatch.undo()
            assert addresses(await ups.query(query())) == [ADDRESS]

    run(main())


def test_a_failed_send_fails_over(monkeypatch):
    class NoSend(socket.socket):
        def send(self, *args, **kwargs):
            raise OSError(errno.ENOBUFS, "No buffer space available")

    async def main():
        bad, good = await scripted(), await scripted()
        async with ups_for(bad, good) as ups:
            real = upstream_module.socket.socket
            opened: list[socket.socket] = []

            def factory(family, kind, *rest):
                # The first upstream's socket cannot send; the second upstream's is a normal one.
                sock = (NoSend if not opened else real)(family, kind, *rest)
                opened.append(sock)
                return sock

            monkeypatch.setattr(upstream_module.socket, "socket", factory)
            assert addresses(await ups.query(query())) == [ADDRESS]
            assert [h.failures for h in ups.health()] == [1, 0]
            assert all(s.fileno() == -1 for s in opened)  # closed
        assert bad.received == [] and len(good.received) == 1

    run(main())


def test_closed_after_use_raises_and_leaves_nothing(monkeypatch):
    async def main():
        server = await scripted()
        ups = ups_for(server)
        await ups.query(query())
        await ups.close()
        with pytest.raises(UpstreamError, match="closed"):
            await ups.query(query())
        with contextlib.suppress(Exception):
            await ups.close()  # twice is harmless

    run(main())
