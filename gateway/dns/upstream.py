"""Forwarding to the school's upstream resolvers: UDP (TCP on truncation), TCP, DNS-over-TLS, failover."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import os
import random
import re
import socket
import ssl
import struct
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, replace
from functools import partial

from gateway.dns.wire import ResponseInfo, WireError, scan_response
from gateway.errors import UpstreamError

__all__ = ["UpstreamError", "UpstreamHealth", "UpstreamSpec", "Upstreams"]

log = logging.getLogger(__name__)

_DEFAULT_PORTS = {"udp": 53, "tcp": 53, "tls": 853}
_EXAMPLES = "e.g. 9.9.9.9, udp://1.1.1.1:53, tcp://[2001:db8::1]:53 or tls://1.1.1.1#cloudflare-dns.com"
_HOSTNAME = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)(\.(?!-)[a-z0-9_-]{1,63}(?<!-))*")

_UNHEALTHY_AFTER = 3  # consecutive failures
_BACKOFF_FIRST = 5.0
_BACKOFF_MAX = 60.0
_EWMA_WEIGHT = 0.3  # weight of the newest latency sample
# A connection whose upstream has left this many queries unanswered has stopped working; start afresh.
_ABANDONED_MAX = 256
_IN_FLIGHT_MAX = 60000  # per connection: IDs are 16 bits and must stay unique on it
# Queries one UDP socket (one source port) may carry; it carries more than one only while they overlap.
_CHANNEL_QUERIES = 32

_SERVFAIL = 2
_REFUSED = 5


@dataclass(frozen=True, slots=True)
class UpstreamSpec:
    """One configured upstream resolver: transport, IP address, port and, for DoT, its certificate name."""

    proto: str  # "udp" (retried over TCP when truncated), "tcp" or "tls" (DNS-over-TLS, RFC 7858)
    host: str  # IP literal; a name would need DNS to find DNS
    port: int
    tls_name: str | None = None  # the name the DoT certificate must carry

    def __post_init__(self) -> None:
        if self.proto not in _DEFAULT_PORTS:
            raise ValueError(f"unknown upstream protocol {self.proto!r}; use udp, tcp or tls")
        try:
            host = str(ipaddress.ip_address(self.host))
        except ValueError:
            raise ValueError(
                f"upstream host {self.host!r} is not an IP address; give the resolver's address "
                "(a name would need DNS to find DNS)"
            ) from None
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 < self.port < 65536:
            raise ValueError(f"upstream port {self.port!r} is not between 1 and 65535")
        name = self.tls_name
        if self.proto == "tls":
            if not name:
                raise ValueError(
                    f"DNS-over-TLS upstream {host} needs the name on its certificate, e.g. tls://{host}#dns.example"
                )
            name = name.lower().rstrip(".")
            if not (_is_ip(name) or (len(name) <= 253 and _HOSTNAME.fullmatch(name))):
                raise ValueError(f"certificate name {self.tls_name!r} is not a host name")
        elif name is not None:
            raise ValueError(f"a certificate name (#{name}) only applies to tls:// upstreams")
        # Canonical spelling, so that equal upstreams compare equal and str() round-trips.
        object.__setattr__(self, "host", host)
        object.__setattr__(self, "tls_name", name)

    @classmethod
    def parse(cls, text: str) -> UpstreamSpec:
        """Read "9.9.9.9", "udp://1.1.1.1:53", "tcp://[2001:db8::1]:53" or "tls://1.1.1.1#cloudflare-dns.com".

        No scheme means udp; the port defaults to 53 (853 for tls). An IPv6 address with a port needs
        brackets: a bare "2001:db8::1:53" is read as an address.
        """
        raw = text.strip()
        if not raw:
            raise ValueError(f"empty upstream address; {_EXAMPLES}")
        scheme, sep, rest = raw.partition("://")
        proto = scheme.lower() if sep else "udp"
        if not sep:
            rest = raw
        if proto not in _DEFAULT_PORTS:
            hint = " (DNS-over-HTTPS is not supported; use tls://)" if proto == "https" else ""
            raise ValueError(f"upstream {text!r}: unknown scheme {scheme!r}{hint}; {_EXAMPLES}")
        rest, hashmark, name = rest.partition("#")
        try:
            host, port = _split_host_port(rest)
            return cls(
                proto, host, _DEFAULT_PORTS[proto] if port is None else port, name if hashmark else None
            )
        except ValueError as exc:
            raise ValueError(f"upstream {text!r}: {exc}; {_EXAMPLES}") from None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        text = f"{self.proto}://{host}:{self.port}"
        return f"{text}#{self.tls_name}" if self.tls_name else text


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _split_host_port(rest: str) -> tuple[str, int | None]:
    if rest.startswith("["):
        end = rest.find("]")
        if end < 0:
            raise ValueError("missing ']' after the IPv6 address")
        host, after = rest[1:end], rest[end + 1 :]
        if not after:
            return host, None
        if not after.startswith(":"):
            raise ValueError(f"unexpected {after!r} after the address")
        return host, _port(after[1:])
    if rest.count(":") == 1:
        host, _, port = rest.partition(":")
        return host, _port(port)
    return rest, None  # IPv4 without a port, or a bare IPv6 address


def _port(text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"port {text!r} is not a number")
    return int(text)


@dataclass(slots=True)
class UpstreamHealth:
    """What the gateway knows about one upstream; health() hands out copies."""

    spec: UpstreamSpec
    healthy: bool
    failures: int  # consecutive
    latency: float | None  # EWMA seconds; a failure counts as the whole attempt's time
    queries: int
    errors: int  # failed attempts plus SERVFAIL answers


# ---- wire: just enough of the format to match a response to its query, without building objects ----

_Question = tuple[bytes, int, int]  # (lower-cased wire name, qtype, qclass)

_MATCH, _MISMATCH, _MALFORMED, _TRUNCATED = range(4)


def _read_question(msg: bytes) -> tuple[_Question, int] | None:
    """The question at offset 12 and the offset after it, or None if it does not parse."""
    pos, end = 12, len(msg)
    while True:
        if pos >= end:
            return None
        n = msg[pos]
        if n == 0:
            break
        if n > 63:  # a compression pointer (nothing before offset 12 to point to) or a reserved label type
            return None
        pos += n + 1
    pos += 1
    if pos - 12 > 255 or pos + 4 > end:
        return None
    qtype, qclass = struct.unpack_from("!HH", msg, pos)
    # bytes.lower() only touches A-Z, and label length bytes are <= 63, so this lower-cases the name alone.
    return (msg[12:pos].lower(), qtype, qclass), pos + 4


def _classify(msg: bytes, qid: int, question: _Question, *, datagram: bool) -> int:
    """Judge a response to our query with ID qid: _MATCH, _MISMATCH (not ours), _MALFORMED or _TRUNCATED."""
    if len(msg) < 2 or (msg[0] << 8 | msg[1]) != qid:
        return _MISMATCH
    if len(msg) < 12:
        return _MALFORMED
    flags, qdcount = struct.unpack_from("!HH", msg, 2)
    if not flags & 0x8000:  # QR: a query is not an answer
        return _MALFORMED
    truncated = datagram and flags & 0x0200
    if truncated and qdcount == 0:
        return _TRUNCATED  # some servers drop the question from a truncated reply; it only costs a TCP retry
    if qdcount != 1:
        return _MALFORMED
    parsed = _read_question(msg)
    if parsed is None:
        return _MALFORMED
    if parsed[0] != question:
        return _MISMATCH
    if truncated:
        return _TRUNCATED
    return _MATCH  # its records are checked by the flight's scan_response, once for every waiter


def _client_question(packet: bytes) -> tuple[_Question, int]:
    if len(packet) < 12 or packet[4:6] != b"\x00\x01":
        raise ValueError("a query must carry exactly one question")
    parsed = _read_question(packet)
    if parsed is None:
        raise ValueError("the query's question does not parse")
    return parsed


class _BufferedSystemRandom(random.SystemRandom):
    """SystemRandom whose 16-bit draws (query IDs) come from os.urandom read 4 KiB at a time: one
    getrandom() system call per 2,048 upstream queries instead of one per query. The same kernel
    CSPRNG, only buffered; anything else is SystemRandom's own."""

    def __init__(self) -> None:
        super().__init__()
        self._pool = b""
        self._at = 0

    def getrandbits(self, k: int) -> int:
        if k != 16:
            return super().getrandbits(k)
        at = self._at
        pool = self._pool
        if at >= len(pool):
            self._pool = pool = os.urandom(4096)
            at = 0
        self._at = at + 2
        return pool[at] << 8 | pool[at + 1]


class _Fault(Exception):
    """The upstream misbehaved (malformed answer, broken connection): a failure of that upstream."""


class _Closed(_Fault):
    """The connection went away under a query; on a reused connection that is worth one more try."""


# ---- transports ----


_NONBLOCK = getattr(socket, "SOCK_NONBLOCK", 0)


class _UdpAttempt:
    """One query waiting on a _UdpChannel; cancel() gives up on it (its ID is then expected late)."""

    __slots__ = ("channel", "flight", "qid", "question", "timer")

    def __init__(self, channel: _UdpChannel, flight: _Flight, qid: int, question: _Question) -> None:
        self.channel = channel
        self.flight = flight
        self.qid = qid
        self.question = question
        self.timer: asyncio.TimerHandle | None = None

    def cancel(self) -> None:
        if self.channel.pending.get(self.qid) is self:
            self.channel.drop(self, answered=False)

    def expired(self) -> None:
        self.timer = None
        self.cancel()
        try:
            self.flight.timed_out()
        except Exception as exc:  # a bug: the waiters see it rather than wait forever
            self.flight.finish(exc)


class _UdpChannel:
    """A connected UDP socket to one upstream, driven by loop callbacks (no transport, no task).

    Its port is random (the kernel's pick), and being connected, datagrams from any other address are
    never delivered to it; an answer must also carry the ID and question of a query still waiting on
    it. It is shared only by queries that overlap in time, at most _CHANNEL_QUERIES of them: it takes
    no new query once it has carried that many, and it closes as soon as none is waiting. So one query
    at a time gets a fresh socket (and port) each, and under load the port still changes every few
    dozen queries.
    """

    __slots__ = ("abandoned", "fd", "left", "loop", "owner", "pending", "sock", "up")

    def __init__(self, owner: Upstreams, up: _Upstream) -> None:
        spec = up.health.spec
        sock = socket.socket(socket.AF_INET6 if ":" in spec.host else socket.AF_INET, socket.SOCK_DGRAM | _NONBLOCK)
        try:
            if not _NONBLOCK:
                sock.setblocking(False)
            sock.connect((spec.host, spec.port))
            self.loop = loop = asyncio.get_running_loop()
            self.fd = fd = sock.fileno()
            loop.add_reader(fd, self._readable)
        except BaseException:
            sock.close()
            raise
        self.sock: socket.socket | None = sock
        self.owner = owner
        self.up = up
        self.pending: dict[int, _UdpAttempt] = {}
        # IDs of queries that gave up (timeout, cancel): a late answer to one is expected, not a forgery.
        self.abandoned: set[int] = set()
        self.left = _CHANNEL_QUERIES

    def ask(self, flight: _Flight, packet: bytes, question: _Question, deadline: float) -> _UdpAttempt:
        """Send one query; raises OSError if the socket fails (every query waiting on it then fails too)."""
        pending, abandoned, rng = self.pending, self.abandoned, self.owner._rng
        qid = rng.getrandbits(16)
        while qid in pending or qid in abandoned:
            qid = rng.getrandbits(16)
        assert self.sock is not None
        try:
            self.sock.send(qid.to_bytes(2, "big") + packet[2:])
        except OSError as exc:
            self.broken(str(exc) or type(exc).__name__)
            raise
        attempt = _UdpAttempt(self, flight, qid, question)
        attempt.timer = self.loop.call_at(deadline, attempt.expired)
        pending[qid] = attempt
        self.left -= 1
        if self.left <= 0 and self.up.udp is self:
            self.up.udp = None  # carried its share: the next query opens a socket on a new port
        return attempt

    def drop(self, attempt: _UdpAttempt, *, answered: bool) -> None:
        del self.pending[attempt.qid]
        if attempt.timer is not None:
            attempt.timer.cancel()
            attempt.timer = None
        if not answered:
            self.abandoned.add(attempt.qid)
        if not self.pending:
            self.close()

    def broken(self, reason: str) -> None:
        """The socket failed (ICMP port unreachable arrives as a recv/send error): fail every query on it."""
        waiting = list(self.pending.values())
        self.pending.clear()
        self.close()
        for attempt in waiting:
            if attempt.timer is not None:
                attempt.timer.cancel()
                attempt.timer = None
            attempt.flight.attempt_failed(reason)

    def close(self) -> None:
        sock = self.sock
        if sock is None:
            return
        self.sock = None
        if self.up.udp is self:
            self.up.udp = None
        self.loop.remove_reader(self.fd)
        sock.close()

    def _readable(self) -> None:
        pending = self.pending
        while True:
            sock = self.sock
            if sock is None:
                return
            try:
                data = sock.recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.broken(str(exc) or type(exc).__name__)
                return
            qid = data[0] << 8 | data[1] if len(data) >= 2 else -1
            attempt = pending.get(qid)
            if attempt is None:
                if qid in self.abandoned:
                    self.abandoned.discard(qid)  # a late answer to a query that already moved on
                else:
                    self.owner.spoofed += 1
                continue
            verdict = _classify(data, qid, attempt.question, datagram=True)
            if verdict == _MISMATCH:
                self.owner.spoofed += 1  # not ours: keep listening for the real answer
                continue
            self.drop(attempt, answered=True)
            flight = attempt.flight
            try:
                if verdict == _MATCH:
                    flight.answered(data)
                elif verdict == _TRUNCATED:
                    flight.truncated()
                else:
                    flight.attempt_failed("malformed response")
            except Exception as exc:  # a bug: the waiters see it rather than wait forever
                flight.finish(exc)


class _Stream:
    """One TCP or TLS connection shared by concurrent queries, told apart by ID (RFC 7766 pipelining)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        idle_timeout: float,
        on_spoof: Callable[[], None],
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._idle_timeout = idle_timeout
        self._on_spoof = on_spoof
        self._loop = asyncio.get_running_loop()
        self._pending: dict[int, tuple[asyncio.Future[bytes], _Question]] = {}
        # IDs of queries we gave up on: their late answers are expected, and the IDs must not be reused yet.
        self._abandoned: set[int] = set()
        self._idle: asyncio.TimerHandle | None = None
        self.closed = False
        self._arm_idle()
        self._task = self._loop.create_task(self._read())

    async def ask(self, packet: bytes, question: _Question, rng: random.Random, deadline: float) -> bytes:
        if self.closed:
            raise _Closed("connection closed")
        if len(self._pending) + len(self._abandoned) >= _IN_FLIGHT_MAX:
            raise _Fault("too many queries in flight on one connection")
        qid = rng.getrandbits(16)
        while qid in self._pending or qid in self._abandoned:
            qid = rng.getrandbits(16)
        fut: asyncio.Future[bytes] = self._loop.create_future()
        self._pending[qid] = (fut, question)
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        try:
            wire = qid.to_bytes(2, "big") + packet[2:]
            async with asyncio.timeout_at(deadline):
                try:
                    self._writer.write(len(wire).to_bytes(2, "big") + wire)
                    await self._writer.drain()
                except ConnectionError as exc:
                    raise _Closed(f"connection lost: {exc}") from exc
                return await fut
        finally:
            del self._pending[qid]
            if not self.closed:
                if not fut.done() or fut.cancelled():
                    self._abandoned.add(qid)
                if len(self._abandoned) > _ABANDONED_MAX:
                    self.close()
                elif not self._pending:
                    self._arm_idle()

    def close(self) -> None:
        """Close gracefully (TLS close_notify); queries still waiting fail and move to the next upstream."""
        self._shut("connection closed")
        self._writer.close()

    async def aclose(self) -> None:
        self._shut("connection closed")
        self._writer.transport.abort()
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    def _arm_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        self._idle = self._loop.call_later(self._idle_timeout, self.close)

    def _shut(self, reason: str, kind: type[_Fault] = _Closed) -> None:
        if self.closed:
            return
        self.closed = True
        if self._idle is not None:
            self._idle.cancel()
        self._abandoned.clear()
        for fut, _ in self._pending.values():
            if not fut.done():
                fut.set_exception(kind(reason))

    async def _read(self) -> None:
        reason, kind = "connection closed by the upstream", _Closed
        try:
            while True:
                head = await self._reader.readexactly(2)
                msg = await self._reader.readexactly(head[0] << 8 | head[1])
                if not self._deliver(msg):
                    reason, kind = "malformed response", _Fault
                    break
        except OSError as exc:  # includes TLS errors
            reason = f"connection lost: {exc}"
        except EOFError:
            pass
        finally:
            self._shut(reason, kind)
            if not self._writer.is_closing():
                self._writer.close()

    def _deliver(self, msg: bytes) -> bool:
        """Hand one response to its query; False if the stream itself is broken."""
        if len(msg) < 12:
            return False
        qid = msg[0] << 8 | msg[1]
        entry = self._pending.get(qid)
        if entry is None:
            if qid in self._abandoned:
                self._abandoned.discard(qid)  # a late answer to a query that already moved on
            else:
                self._on_spoof()
            return True
        fut, question = entry
        verdict = _classify(msg, qid, question, datagram=False)
        if verdict == _MISMATCH:
            self._on_spoof()
        elif not fut.done():
            if verdict == _MATCH:
                fut.set_result(msg)
            else:
                fut.set_exception(_Fault("malformed response"))
        return True


# ---- the resolver set ----


@dataclass(slots=True, eq=False)
class _Upstream:
    index: int  # configured order breaks ties
    health: UpstreamHealth
    backoff: float = _BACKOFF_FIRST
    retry_at: float = 0.0
    stream: _Stream | None = None
    connecting: asyncio.Task[_Stream] | None = None
    udp: _UdpChannel | None = None  # the socket new UDP queries go out on, if one is open


class _Flight:
    """One question on its way to the upstreams, shared by every query() that waits for it.

    Driven by loop callbacks rather than a task of its own: the plan's attempts run one after another
    (UDP on a _UdpChannel; TCP and DoT, and the TCP retry of a truncated UDP answer, in a small task),
    and the outcome goes to each waiter's own future, so one waiter giving up never cancels another's
    answer. When the last waiter gives up, the flight stops; close() ends every flight with UpstreamError.
    """

    __slots__ = (
        "attempt_deadline",
        "budget",
        "deadline",
        "done",
        "failures",
        "index",
        "key",
        "loop",
        "owner",
        "packet",
        "plan",
        "question",
        "started",
        "task",
        "udp",
        "waiters",
    )

    def __init__(self, owner: Upstreams, packet: bytes, question: _Question, key: Hashable | None) -> None:
        self.owner = owner
        self.loop = asyncio.get_running_loop()
        self.packet = packet
        self.question = question
        self.key = key
        self.waiters: list[asyncio.Future[tuple[bytes, ResponseInfo]]] = []
        self.done = False
        self.plan: Sequence[_Upstream] = ()
        self.index = 0
        self.deadline = self.budget = self.attempt_deadline = self.started = 0.0
        self.failures: list[str] = []
        self.udp: _UdpAttempt | None = None
        self.task: asyncio.Task[bytes] | None = None

    def start(self) -> None:
        self.deadline = self.loop.time() + self.owner._timeout
        self.plan = self.owner._plan()
        self._next()

    def _next(self) -> None:
        plan, i = self.plan, self.index
        if i >= len(plan):
            self.finish(UpstreamError("no upstream answered: " + "; ".join(self.failures)))
            return
        up = plan[i]
        now = self.loop.time()
        self.budget = budget = max(0.0, self.deadline - now) / (len(plan) - i)
        self.attempt_deadline = now + budget
        self.started = self.owner._clock()
        up.health.queries += 1
        if up.health.spec.proto != "udp":
            self._stream(up)
            return
        try:
            channel = up.udp
            if channel is None:
                channel = up.udp = _UdpChannel(self.owner, up)
            self.udp = channel.ask(self, self.packet, self.question, self.attempt_deadline)
        except OSError as exc:
            self.attempt_failed(str(exc) or type(exc).__name__)

    def _stream(self, up: _Upstream) -> None:
        self.task = task = self.loop.create_task(
            self.owner._stream_query(up, self.packet, self.question, self.attempt_deadline)
        )
        task.add_done_callback(self._stream_done)

    def _stream_done(self, task: asyncio.Task[bytes]) -> None:
        if task is not self.task:
            if not task.cancelled():
                task.exception()  # retrieved: a stopped flight's task, nobody is waiting for it
            return
        self.task = None
        if task.cancelled():  # by cancel() or close(): the flight already ended
            return
        exc = task.exception()
        if exc is None:
            self.answered(task.result())
        elif isinstance(exc, TimeoutError):
            self.timed_out()
        elif isinstance(exc, (_Fault, OSError, EOFError)):
            self.attempt_failed(str(exc) or type(exc).__name__)
        else:
            self.finish(exc)  # a bug, not an upstream failure: let the waiters see it

    # ---- outcomes of one attempt ----

    def answered(self, response: bytes) -> None:
        self.udp = None
        rcode = response[3] & 0x0F
        if rcode == _REFUSED:
            # REFUSED says this upstream won't serve us (ACL); another may, and a child's device must
            # never be told REFUSED, which sends it off to a secondary resolver around the filter.
            self.attempt_failed("refused the query")
            return
        try:
            # Once per flight, not per waiter: every record must fit before the cache stores the answer
            # or the policy re-judges its CNAMEs and addresses.
            info = scan_response(response)
        except WireError as exc:
            self.attempt_failed(f"malformed response ({exc})")
            return
        # SERVFAIL is the upstream's answer about this name (often DNSSEC), not a broken upstream.
        self.owner._succeeded(self.plan[self.index], self.owner._clock() - self.started, servfail=rcode == _SERVFAIL)
        self.finish((response, info))

    def truncated(self) -> None:
        # The same query again over TCP, within what is left of this attempt.
        self.udp = None
        self._stream(self.plan[self.index])

    def timed_out(self) -> None:
        self.attempt_failed(f"no answer within {self.budget:.2f}s")

    def attempt_failed(self, reason: str) -> None:
        self.udp = None
        up = self.plan[self.index]
        self.owner._failed(up, self.budget)
        self.failures.append(f"{up.health.spec}: {reason}")
        self.index += 1
        if not self.done:
            self._next()

    # ---- the flight as a whole ----

    def finish(self, outcome: tuple[bytes, ResponseInfo] | BaseException) -> None:
        """Hand the outcome to every waiter and stop whatever is still running."""
        if self.done:
            return
        self.cancel()
        for waiter in self.waiters:
            if not waiter.done():
                if isinstance(outcome, BaseException):
                    waiter.set_exception(outcome)
                else:
                    waiter.set_result(outcome)

    def cancel(self) -> None:
        """Stop without an outcome (nobody wants it any more): no health is recorded for this attempt."""
        self.done = True
        owner = self.owner
        owner._live.discard(self)
        if self.key is not None and owner._flights.get(self.key) is self:
            del owner._flights[self.key]
        if self.udp is not None:
            self.udp.cancel()
            self.udp = None
        if self.task is not None:
            self.task.cancel()  # its done callback retrieves it; close() also awaits it
            owner._stopping.add(self.task)
            self.task.add_done_callback(owner._stopping.discard)
            self.task = None


def _ewma(old: float | None, sample: float) -> float:
    return sample if old is None else old + _EWMA_WEIGHT * (sample - old)


def _by_latency(up: _Upstream) -> tuple[float, int]:
    # Unmeasured ranks after measured: the configured primary keeps the traffic until something is known.
    latency = up.health.latency
    return (math.inf if latency is None else latency, up.index)


def _leave(flight: _Flight, waiter: asyncio.Future) -> None:
    waiters = flight.waiters
    waiters.remove(waiter)
    if not waiters and not flight.done:
        flight.cancel()  # nobody wants the answer any more


class Upstreams:
    """The school's upstream resolvers: sends a query to the best one and returns a verified answer.

    `timeout` bounds a whole query(): it is shared among at most `attempts` upstreams, each attempt
    getting an equal share of what is left (so a fast failure leaves more time for the next one).
    """

    def __init__(
        self,
        specs: Sequence[UpstreamSpec],
        *,
        timeout: float = 2.0,
        attempts: int = 2,
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        idle_timeout: float = 30.0,
    ) -> None:
        if not specs:
            raise ValueError("at least one upstream resolver is needed")
        if timeout <= 0 or attempts < 1 or idle_timeout <= 0:
            raise ValueError("timeout and idle_timeout must be positive and attempts at least 1")
        self._ups = [_Upstream(i, UpstreamHealth(s, True, 0, None, 0, 0)) for i, s in enumerate(specs)]
        self._timeout = timeout
        self._attempts = attempts
        self._clock = clock
        self._rng = rng if rng is not None else _BufferedSystemRandom()
        self._idle_timeout = idle_timeout
        self._ssl: ssl.SSLContext | None = None
        if any(s.proto == "tls" for s in specs):
            ctx = ssl_context if ssl_context is not None else ssl.create_default_context()
            if ctx.verify_mode != ssl.CERT_REQUIRED or not ctx.check_hostname:
                # Fail closed: an unverified DoT upstream could be anyone on the path.
                raise ValueError("the TLS context for DoT upstreams must verify certificates and host names")
            self._ssl = ctx
        self._flights: dict[Hashable, _Flight] = {}
        self._live: set[_Flight] = set()  # every flight not yet ended
        self._stopping: set[asyncio.Task[bytes]] = set()  # stream tasks of ended flights, until they finish
        self._closed = False
        self.spoofed = 0  # responses dropped because their ID or question matched no query of ours
        self.specs = tuple(specs)

    async def __aenter__(self) -> Upstreams:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def query(self, packet: bytes, key: Hashable | None = None) -> bytes:
        """Forward the client's query; return the upstream's response with the client's ID and spelling.

        Queries with an equal `key` already in flight share its upstream round trip and its outcome.
        Raises ValueError if the packet has no single parseable question (the server answers FORMERR),
        UpstreamError if no upstream gave a usable answer (the caller serves stale, else SERVFAIL).
        """
        question, qend = _client_question(packet)
        response, _ = await self.lookup(packet, question, key)
        # The upstream's question equals ours but for case; give the client back its own spelling (0x20).
        name_end = qend - 4
        return b"".join((packet[:2], response[2:12], packet[12:name_end], response[name_end:]))

    async def lookup(self, packet: bytes, question: _Question, key: Hashable | None = None
                     ) -> tuple[bytes, ResponseInfo]:
        """query() for a caller that built `packet` itself and so knows its question (lower-cased wire
        name, type, class): the response as the upstream sent it (under our ID, in its spelling) and
        its scan. Merged waiters share both, so an answer is walked once however many asked."""
        if self._closed:
            raise UpstreamError("upstreams are closed")
        flight = self._flights.get(key) if key is not None else None
        if flight is None or flight.question != question:
            # Also when a caller's key merges two different questions: never answer one with the other.
            flight = _Flight(self, packet, question, key)
            self._live.add(flight)
            if key is not None and key not in self._flights:
                self._flights[key] = flight
            fresh = True
        else:
            fresh = False
        waiter = flight.loop.create_future()
        flight.waiters.append(waiter)
        try:
            if fresh:
                flight.start()  # may end it at once (every upstream failed to send): the waiter holds that
            outcome = await waiter
        except BaseException:
            _leave(flight, waiter)
            # The exception's traceback holds this frame; were the future (holding the exception) still
            # in it, every failed query would leave a reference cycle for the collector to find.
            del waiter, flight
            raise
        _leave(flight, waiter)
        return outcome

    def health(self) -> list[UpstreamHealth]:
        """A copy of each upstream's state, in configured order."""
        return [replace(u.health) for u in self._ups]

    async def close(self) -> None:
        """Fail queries in flight with UpstreamError and close every socket."""
        self._closed = True
        closed = UpstreamError("upstreams are closed")
        for flight in list(self._live):
            flight.finish(closed)
        tasks: list[asyncio.Task] = [*self._stopping, *(u.connecting for u in self._ups if u.connecting)]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for up in self._ups:
            if up.udp is not None:
                up.udp.broken("upstreams are closed")
            if up.stream is not None:
                await up.stream.aclose()
                up.stream = None
        # Transports close their sockets on the next loop turn; give them that turn so "closed" means closed.
        await asyncio.sleep(0)

    def _plan(self) -> Sequence[_Upstream]:
        """The upstreams to try for one query, best first."""
        ups = self._ups
        if len(ups) == 1:
            return ups  # nothing to choose (and never mutated by a flight)
        now = self._clock()
        healthy = sorted((u for u in ups if u.health.healthy), key=_by_latency)
        resting = sorted((u for u in self._ups if not u.health.healthy), key=lambda u: (u.retry_at, u.index))
        if not healthy:
            return resting[: self._attempts]  # all down: try them anyway, longest rested first
        plan = healthy[: self._attempts]
        if resting and resting[0].retry_at <= now and self._attempts > 1:
            # Backoff over: this query probes it first, with a healthy upstream still behind it.
            probe = resting[0]
            probe.retry_at = now + probe.backoff  # claimed, so concurrent queries don't all probe it
            plan = [probe, *healthy[: self._attempts - 1]]
        return plan

    def _succeeded(self, up: _Upstream, elapsed: float, *, servfail: bool) -> None:
        h = up.health
        if not h.healthy:
            log.info("upstream %s answers again", h.spec)
        h.healthy = True
        h.failures = 0
        h.latency = _ewma(h.latency, elapsed)
        if servfail:
            h.errors += 1
        up.backoff = _BACKOFF_FIRST

    def _failed(self, up: _Upstream, penalty: float) -> None:
        h = up.health
        h.failures += 1
        h.errors += 1
        # A failure costs as much as the whole attempt: it puts this upstream behind ones that answer.
        h.latency = _ewma(h.latency, penalty)
        if h.failures < _UNHEALTHY_AFTER:
            return
        if h.healthy:
            h.healthy = False
            log.warning("upstream %s unhealthy after %d failures in a row", h.spec, h.failures)
        else:
            up.backoff = min(up.backoff * 2, _BACKOFF_MAX)
        up.retry_at = self._clock() + up.backoff

    def _count_spoof(self) -> None:
        self.spoofed += 1

    async def _stream_query(
        self, up: _Upstream, packet: bytes, question: _Question, deadline: float
    ) -> bytes:
        stream, fresh = await self._connection(up, deadline)
        try:
            return await stream.ask(packet, question, self._rng, deadline)
        except _Closed:
            if fresh:
                raise
        # The reused connection had been closed by the upstream (its idle timeout): once more on a new one.
        stream, _ = await self._connection(up, deadline)
        return await stream.ask(packet, question, self._rng, deadline)

    async def _connection(self, up: _Upstream, deadline: float) -> tuple[_Stream, bool]:
        if up.stream is not None and not up.stream.closed:
            return up.stream, False
        if up.connecting is None:
            # One connection attempt shared by every query that needs it now.
            up.connecting = asyncio.get_running_loop().create_task(self._connect(up))
            up.connecting.add_done_callback(partial(self._connected, up))
        async with asyncio.timeout_at(deadline):
            return await asyncio.shield(up.connecting), True

    async def _connect(self, up: _Upstream) -> _Stream:
        spec = up.health.spec
        tls = spec.proto == "tls"
        async with asyncio.timeout(self._timeout):  # bounded even after every query that wanted it gave up
            reader, writer = await asyncio.open_connection(
                spec.host,
                spec.port,
                ssl=self._ssl if tls else None,
                server_hostname=spec.tls_name if tls else None,
            )
        up.stream = _Stream(reader, writer, idle_timeout=self._idle_timeout, on_spoof=self._count_spoof)
        return up.stream

    @staticmethod
    def _connected(up: _Upstream, task: asyncio.Task[_Stream]) -> None:
        if up.connecting is task:
            up.connecting = None
        if not task.cancelled():
            task.exception()  # retrieved: the queries waiting on it got it through their shields
