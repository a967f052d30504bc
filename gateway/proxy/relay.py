"""The fast path: peek at CONNECT host / TLS SNI, decide, then splice bytes, close, or hand the flow to mitmproxy.

Most connections are HTTPS to allowed names. mitmproxy spends milliseconds of CPU on each one even when
it only passes it through, so this relay judges them itself from the first bytes and splices the two
sockets with asyncio protocols (no task per direction, no copies beyond the kernel's). Only flows that
need a look inside go to mitmproxy on loopback: plain HTTP (block page, safe search) and, for
`inspect_tls` groups, the TLS connections that must be decrypted. The relay remembers which of its
loopback connections carries which client, so mitmproxy judges the real client, not 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gateway.core.model import Action
from gateway.i18n import tr
from gateway.proxy import safesearch
from gateway.proxy.blockpage import choose_lang, render_block, response_bytes
from gateway.proxy.http1 import HeadError, parse_request, response_head, upstream_head
from gateway.proxy.judge import Verdict, host_name, is_ip, is_local, split_authority
from gateway.proxy.tls import HelloReader, Peek, alert, looks_like_tls

log = logging.getLogger("gateway.proxy")

SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h; IP6T_SO_ORIGINAL_DST has the same value
MAX_HEAD = 16 * 1024  # request head / first bytes before a decision
MAX_PENDING = 256 * 1024  # bytes buffered from a client while its upstream connects
HIGH_WATER = 512 * 1024  # per-direction write buffer before the other side is paused
LOW_WATER = 128 * 1024

_HEAD, _SNIFF, _HELLO, _WAIT, _SPLICE, _CLOSED = range(6)
_OK = b"HTTP/1.1 200 Connection established\r\n\r\n"

OriginResolver = Callable[[str, int], "tuple[str, int] | None"]


@dataclass(frozen=True, slots=True)
class Handoff:
    """Who is really behind one of the relay's loopback connections to mitmproxy."""

    client: str  # the client's address (kept in memory only while the connection is open)
    kind: str  # "plain" (explicit HTTP), "connect" (explicit CONNECT), "transparent"
    verdict: Verdict | None = None  # the relay's verdict on the CONNECT host / SNI, when it made one


def original_destination(transport: asyncio.BaseTransport) -> tuple[str, int] | None:
    """Where a firewall-redirected connection was going (SO_ORIGINAL_DST), or None when not redirected."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return None
    try:
        if sock.family == socket.AF_INET:
            raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
            port = struct.unpack_from("!H", raw, 2)[0]
            host = socket.inet_ntop(socket.AF_INET, raw[4:8])
        elif sock.family == socket.AF_INET6:
            raw = sock.getsockopt(socket.IPPROTO_IPV6, SO_ORIGINAL_DST, 28)
            port = struct.unpack_from("!H", raw, 2)[0]
            host = socket.inet_ntop(socket.AF_INET6, raw[8:24])
        else:
            return None
    except OSError:
        return None
    own = transport.get_extra_info("sockname")
    if own is not None and (host, port) == tuple(own[:2]):
        return None  # not redirected: "forwarding" there would loop back to ourselves
    return host, port


class _Refused(Exception):
    """The destination is the box itself."""




@functools.lru_cache(maxsize=4096)  # asked once a connection, for a few distinct addresses


class HostResolver:
    """getaddrinfo with a small TTL cache and merged in-flight lookups (squid keeps an ipcache too):
    a thread-pool lookup per connection would cost more CPU than the whole splice."""

    def __init__(self, ttl: float = 60.0, size: int = 4096, clock: Callable[[], float] = time.monotonic):
        self.ttl, self.size, self.clock = ttl, size, clock
        self._cache: dict[tuple[str, int], tuple[float, list]] = {}
        self._pending: dict[tuple[str, int], asyncio.Future] = {}

    async def resolve(self, host: str, port: int) -> list[tuple[str, int]]:
        key = (host, port)
        hit = self._cache.get(key)
        now = self.clock()
        if hit is not None and hit[0] > now:
            return hit[1]
        if is_ip(host):
            return [(host, port)]
        pending = self._pending.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending[key] = future
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            # IPv4 first: a school LAN is far more often v4-only upstream than v6-only.
            addrs = sorted({(i[4][0], i[4][1]) for i in infos}, key=lambda a: ":" in a[0])
            if len(self._cache) >= self.size:
                self._cache.clear()
            self._cache[key] = (now + self.ttl, addrs)
            future.set_result(addrs)
            return addrs
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here, so a lookup nobody else waited for logs nothing
            raise
        finally:
            del self._pending[key]


class Relay:
    """Listeners for explicit (CONNECT / plain HTTP) and transparent (redirected 80/443) clients."""

    def __init__(self, judge, stats, settings, *, mitm: tuple[str, int] | None = None,
                 start_mitm: Callable[[], Awaitable[tuple[str, int]]] | None = None, ref_key: bytes = b"",
                 handoffs: dict | None = None, origin_resolver: OriginResolver | None = None,
                 original_dst: Callable[[asyncio.BaseTransport], tuple[str, int] | None] = original_destination,
                 resolver: HostResolver | None = None):
        self.judge = judge
        self.stats = stats
        self.mitm = mitm  # mitmproxy's loopback listener, once it runs
        self.start_mitm = start_mitm  # starts mitmproxy on first need; None: nothing can be inspected
        self.ref_key = ref_key
        self.plain_native = settings.plain_http == "relay"
        self.loopback_origins = settings.loopback_origins
        self.handoffs = handoffs if handoffs is not None else {}
        self.connect_ports = frozenset(settings.connect_ports)
        self.block_no_sni = settings.no_sni == "block"
        self.timeout = settings.handshake_timeout
        static = {name: (a.host, a.port) for name, a in settings.transparent_origins.items()}
        self.origin_resolver = origin_resolver or ((lambda name, port: static.get(name)) if static else None)
        self.original_dst = original_dst
        self.resolver = resolver or HostResolver()
        self.clients: set = set()  # open client connections, so stop() can close them

    def close_all(self) -> None:
        for client in list(self.clients):
            client.close()

    async def inspector(self) -> tuple[str, int]:
        """mitmproxy's address, starting it if this is the first flow that needs it."""
        if self.mitm is None:
            if self.start_mitm is None:
                raise OSError("no inspecting proxy configured")
            self.mitm = await self.start_mitm()
        return self.mitm

    async def listen(self, host: str, port: int, transparent: bool) -> asyncio.AbstractServer:
        loop = asyncio.get_running_loop()
        return await loop.create_server(lambda: _Client(self, transparent), host, port, backlog=1024,
                                        reuse_address=True)


class _Upstream(asyncio.Protocol):
    """The relay's side towards the origin (or mitmproxy)."""

    __slots__ = ("client", "eof", "expect_reply", "pending", "response", "transport")

    def __init__(self, client: _Client, expect_reply: bool, response: bool = False):
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.expect_reply = expect_reply  # we sent mitmproxy a CONNECT and await its "200"
        self.response = response  # plain HTTP: the response head is still to come (and to rewrite)
        self.pending = bytearray()
        self.eof = False

    def connection_made(self, transport):
        self.transport = transport
        transport.set_write_buffer_limits(HIGH_WATER, LOW_WATER)

    def data_received(self, data):
        client = self.client
        if client.state == _SPLICE:
            if self.response:
                try:
                    self._response(data)
                except Exception as exc:  # fail closed: end this connection, never forward unchecked
                    log.exception("proxy relay error: %s", exc)
                    client.abort("relay")
                return
            client.transport.write(data)
            return
        try:
            self._before_splice(data)
        except Exception as exc:
            log.exception("proxy relay error: %s", exc)
            client.abort("relay")

    def _before_splice(self, data: bytes) -> None:
        client = self.client
        self.pending += data
        if self.expect_reply:
            end = self.pending.find(b"\r\n\r\n")
            if end < 0:
                if len(self.pending) > MAX_HEAD:
                    client.abort("handoff")
                return
            status = bytes(self.pending[:end]).split(b" ", 2)
            rest = self.pending[end + 4:]
            self.pending = bytearray(rest)
            self.expect_reply = False
            if len(status) < 2 or status[1] != b"200":
                client.abort("handoff")
                return
            client.handoff_ready()

    def _response(self, data: bytes) -> None:
        # Forward the response head with Connection: close (one request per connection), then raw.
        self.pending += data
        client = self.client
        while self.response:
            end = self.pending.find(b"\r\n\r\n")
            if end < 0:
                if len(self.pending) > MAX_HEAD:
                    client.abort("upstream")
                return
            try:
                status, head = response_head(bytes(self.pending[:end]))
            except HeadError:
                client.transport.write(response_bytes(502, [("Content-Type", "text/plain")], b"bad gateway\n"))
                client.abort("upstream")
                return
            del self.pending[:end + 4]
            client.transport.write(head)
            if status == 101 and client.upgrading:
                client.body_left = None  # switched protocols (WebSocket): raw both ways from here
                self.response = False
            elif status >= 200 or status == 101:
                self.response = False
        if self.pending:
            data, self.pending = bytes(self.pending), bytearray()
            client.transport.write(data)

    def eof_received(self):
        self.eof = True
        client = self.client
        if client.state != _SPLICE or client.http:
            client.close()  # a plain-HTTP response ends with the origin's close; close() flushes first
            return False
        if client.transport.can_write_eof():
            client.transport.write_eof()
        if client.eof:
            client.close()
            return False
        return True

    def connection_lost(self, exc):
        self.client.close()

    def pause_writing(self):
        transport = self.client.transport
        if transport is not None:
            transport.pause_reading()

    def resume_writing(self):
        transport = self.client.transport
        if transport is not None:
            transport.resume_reading()


class _Client(asyncio.Protocol):
    """One client connection from accept to close."""

    __slots__ = ("body_left", "buf", "client", "connect_host", "connect_port", "eof", "handoff_port", "hello", "http",
                 "kind", "mapped", "original", "paused", "peer", "relay", "spliced", "state", "task", "timer",
                 "transparent", "transport", "upgrading", "verdict")

    def __init__(self, relay: Relay, transparent: bool):
        self.relay = relay
        self.transparent = transparent
        self.state = _SNIFF if transparent else _HEAD
        self.transport: asyncio.Transport | None = None
        self.peer: _Upstream | None = None
        self.buf = bytearray()
        self.hello: HelloReader | None = None
        self.client = ""
        self.connect_host: str | None = None
        self.connect_port = 443
        self.verdict: Verdict | None = None
        self.original: tuple[str, int] | None = None
        self.timer = None
        self.task = None
        self.eof = False
        self.spliced = False
        self.handoff_port: int | None = None
        self.kind = "passthrough"
        self.paused = False
        self.http = False  # one plain-HTTP request forwarded by the relay itself
        self.body_left: int | None = None  # plain HTTP: request body bytes still to forward (None: raw)
        self.upgrading = False
        self.mapped = False  # the origin resolver chose the destination (labs, tests)

    # -- asyncio callbacks ------------------------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        self.relay.clients.add(self)
        transport.set_write_buffer_limits(HIGH_WATER, LOW_WATER)
        peer = transport.get_extra_info("peername")
        self.client = peer[0] if peer else ""
        if self.transparent:
            self.original = self.relay.original_dst(transport)
        self.timer = asyncio.get_running_loop().call_later(self.relay.timeout, self._timed_out)

    def data_received(self, data):
        state = self.state
        if state == _SPLICE:
            left = self.body_left
            if left is None:
                self.peer.transport.write(data)
            elif left > 0:
                part = data[:left]
                self.body_left = left - len(part)
                self.peer.transport.write(part)
            # else: bytes after the one request's body (a pipelined request): the origin never sees them
            return
        try:
            if state == _HELLO:
                if self.hello.feed(data) is Peek.MORE:
                    if len(self.hello.raw) > MAX_PENDING:
                        self.abort("bad_hello")
                    return
                self._on_hello()
            elif state == _WAIT:
                self.buf += data
                if len(self.buf) > MAX_PENDING and not self.paused:
                    self.paused = True
                    self.transport.pause_reading()
            elif state == _HEAD:
                self.buf += data
                self._on_head()
            elif state == _SNIFF:
                self.buf += data
                self._on_sniff()
        except Exception as exc:  # fail closed: a bug here closes this one connection, nothing more
            log.exception("proxy relay error: %s", exc)
            self.abort("relay")

    def eof_received(self):
        self.eof = True
        peer = self.peer
        if self.state == _WAIT:
            return True  # a client that half-closes after its request: the EOF follows it at splice time
        if self.state != _SPLICE or peer is None or peer.transport is None:
            self.close()
            return False
        if peer.transport.can_write_eof():
            peer.transport.write_eof()
        if peer.eof:
            self.close()
            return False
        return True

    def connection_lost(self, exc):
        self.close()

    def pause_writing(self):
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self):
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    # -- states -----------------------------------------------------------------------------------
    def _on_head(self):
        buf = self.buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD:
                self._reply(431, "Request Header Fields Too Large", "request head too large")
            elif len(buf) >= 8 and not buf[:1].isalpha():
                self._reply(400, "Bad Request", "not HTTP")
            return
        line = bytes(buf[:buf.find(b"\r\n")])
        parts = line.split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            self._reply(400, "Bad Request", "not an HTTP/1 request")
            return
        if parts[0] != b"CONNECT":
            self._plain_http(end)
            return
        try:
            host, port = split_authority(parts[1].decode("ascii"), 443)
        except (ValueError, UnicodeDecodeError):
            self._reply(400, "Bad Request", "bad CONNECT target")
            return
        if port not in self.relay.connect_ports:
            self.relay.stats.count("none", "block", "passthrough")
            ports = ", ".join(str(p) for p in sorted(self.relay.connect_ports))
            self._reply(403, "Forbidden", tr("proxy.bad_port", "vi", ports=ports) + "\n" +
                        tr("proxy.bad_port", "en", ports=ports))
            return
        verdict = self.relay.judge.verdict(self.client, host)
        self.connect_host, self.connect_port, self.verdict = host, port, verdict
        rest = bytes(buf[end + 4:])
        self.buf = bytearray()
        if not verdict.served:
            self.relay.stats.count("none", "refused", "passthrough")
            self._reply(403, "Forbidden", tr("proxy.refused", "vi") + "\n" + tr("proxy.refused", "en"))
            return
        if verdict.blocked and not verdict.intercept:
            self._count(verdict)
            self._reply(403, "Forbidden", tr("proxy.blocked_connect", "vi") + "\n" +
                        tr("proxy.blocked_connect", "en"))
            return
        self.hello = HelloReader()
        if verdict.intercept:
            self.transport.write(_OK)
            self._start_hello(rest)
            return
        # Allowed: open the origin first and say 200 only once it answers, as squid does, so an
        # unreachable origin is a clean 502 rather than a tunnel that dies after the handshake.
        self.buf = bytearray(rest)
        target = self._mapped(self._dial_name(verdict, host), port)
        self._connect(target[0], target[1], None, None, then_ok=True)

    def _start_hello(self, data: bytes):
        self.state = _HELLO
        if data and self.hello.feed(data) is not Peek.MORE:
            self._on_hello()

    def _on_sniff(self):
        buf = self.buf
        if looks_like_tls(buf[:2]):
            self.hello = HelloReader()
            self.buf = bytearray()
            self._start_hello(bytes(buf))
            return
        if not buf[:1].isalpha():
            self.abort("not_tls_or_http")
            return
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD:
                self.abort("head_too_large")
            return
        self._plain_http(end)

    def _plain_http(self, end: int) -> None:
        """One plain-HTTP request: judged, answered with the block page, or forwarded with safe search."""
        relay = self.relay
        self.kind = "plain"
        buf = self.buf
        try:
            req = parse_request(bytes(buf[:end]))
        except HeadError as exc:
            self._reply(exc.status, "Bad Request" if exc.status == 400 else "Not Implemented", str(exc))
            return
        if self.transparent:
            target = self._origin(req.host, req.port)
        else:
            target = self._mapped(req.host, req.port)
        if target is None:
            self.abort("no_original_destination")
            return
        if not relay.plain_native or req.chunked:
            # mitmproxy answers it (chunked uploads need its HTTP/1 framing; or it was asked to).
            if relay.start_mitm is None and relay.mitm is None:
                self._reply(411, "Length Required", "Content-Length required / cần Content-Length")
                return
            self._to_mitm(target if self.transparent else None, bytes(buf), "transparent" if self.transparent
                          else "plain")
            return
        verdict = relay.judge.verdict(self.client, req.host)
        d = verdict.decision
        if not verdict.served:
            relay.stats.count("none", "refused", "plain")
            self._reply(403, "Forbidden", tr("proxy.refused", "vi") + "\n" + tr("proxy.refused", "en"))
            return
        if verdict.blocked:
            query = req.path.partition("?")[2]
            wanted = next((part[5:] for part in query.split("&") if part.startswith("lang=")), None)
            accept = req.header(b"accept-language")
            lang = choose_lang(accept.decode("latin-1") if accept else None, wanted)
            page = render_block(verdict, lang, relay.ref_key, req.path)
            relay.stats.count(d.band, "block", "plain", d, self.client)
            self.transport.write(response_bytes(*page, head_only=req.method == "HEAD"))
            self.state = _CLOSED
            self._cancel_timer()
            self.transport.close()
            return
        path, extra, action = req.path, [], d.action.value
        snapshot = verdict.snapshot
        engine = safesearch.engine_for(verdict.host)
        if engine is not None and snapshot is not None and d.band in snapshot.bands:
            path, extra = safesearch.enforce_head(req.path, engine, snapshot.bands[d.band].safe_search)
            if extra or path != req.path:
                relay.stats.rewrite(d.band, engine)
                action = "rewrite"
        relay.stats.count(d.band, action, "plain", d, self.client)
        body = bytes(buf[end + 4:end + 4 + req.length])
        self.http = True
        self.upgrading = req.upgrade is not None
        self.body_left = None if self.upgrading else req.length - len(body)
        self.buf = bytearray()
        if req.expect_continue and self.body_left:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # we strip Expect, so we answer it
        self._connect(target[0], target[1], upstream_head(req, path, extra) + body, None)

    def _on_hello(self):
        hello = self.hello
        relay = self.relay
        sni = hello.sni if hello.state is Peek.HELLO else None
        verdict = self.verdict
        if self.transparent:
            if hello.state is not Peek.HELLO:
                self.abort("bad_hello")
                return
            if sni is None:
                relay.stats.error("no_sni")
                if relay.block_no_sni:
                    self._alert(None)
                    return
                verdict = relay.judge.verdict(self.client, (self.original or ("", 0))[0])
            else:
                verdict = relay.judge.verdict(self.client, sni)
            if not verdict.served:
                relay.stats.count("none", "refused", "passthrough")
                self.abort(None)
                return
        elif sni is not None:
            try:
                same = sni == self.connect_host or host_name(sni) == verdict.host
            except ValueError:
                same = False
            if not same:
                # The name inside TLS is the one the server answers for: judge it as well, and keep
                # whichever of the two blocks (a CONNECT to an allowed name cannot smuggle a blocked SNI).
                second = relay.judge.verdict(self.client, sni)
                if second.blocked or not verdict.blocked:
                    verdict = second
        self.verdict = verdict
        if verdict.blocked and not verdict.intercept:
            self._alert(verdict)
            return
        if verdict.intercept:
            if self.peer is not None:  # an origin opened for a CONNECT that now turns out to need a look
                self.peer.client = _Detached
                self.peer.transport.close()
                self.peer = None
            self.kind = "intercepted"
            if self.transparent:
                target = self._origin(sni or "", self.original[1] if self.original else 443)
                if target is None:
                    self.abort("no_original_destination")
                    return
            else:
                target = self._mapped(self.connect_host, self.connect_port)
            self._to_mitm(target, bytes(hello.raw), "transparent" if self.transparent else "connect")
            return
        self._count(verdict)
        data = bytes(hello.raw)
        if self.peer is not None:
            self.peer.transport.write(data)
            self._splice()
            return
        if self.transparent:
            target = self._origin(sni or "", self.original[1] if self.original else 443)
            if target is None:
                self.abort("no_original_destination")
                return
            self._connect(target[0], target[1], data, None)
        else:
            target = self._mapped(self._dial_name(verdict, self.connect_host), self.connect_port)
            self._connect(target[0], target[1], data, None)

    # -- helpers ----------------------------------------------------------------------------------
    @staticmethod
    def _dial_name(verdict: Verdict, host: str) -> str:
        """The name to connect to. A safe-search rewrite (`www.youtube.com` -> `restrict.youtube.com`)
        is what the DNS filter answers with a CNAME; an explicit proxy resolves names itself, so it
        must dial the restricted host the same way (the TLS hello, and its SNI, stay the client's)."""
        d = verdict.decision
        if d.action is Action.REWRITE and d.rewrite_to:
            return d.rewrite_to
        return host

    def _mapped(self, host: str, port: int) -> tuple[str, int]:
        """Where an explicit CONNECT goes: the origin resolver's answer (labs, tests), else the name."""
        resolver = self.relay.origin_resolver
        if resolver is not None:
            try:
                found = resolver(host_name(host), port)
            except Exception:
                found = None
            if found is not None:
                self.mapped = True
                return found
        return host, port

    def _origin(self, name: str, port: int) -> tuple[str, int] | None:
        resolver = self.relay.origin_resolver
        if resolver is not None and name:
            try:
                found = resolver(host_name(name), port)
            except Exception:
                found = None
            if found is not None:
                self.mapped = True
                return found
        return self.original

    def _count(self, verdict: Verdict) -> None:
        d = verdict.decision
        self.relay.stats.count(d.band, d.action.value, "passthrough", d, self.client)
        if d.action is Action.REWRITE:
            self.relay.stats.rewrite(d.band, d.engine or "other")

    def _alert(self, verdict: Verdict | None) -> None:
        if verdict is not None:
            self._count(verdict)
        else:
            self.relay.stats.count("none", "block", "passthrough")
        self.state = _CLOSED
        self._cancel_timer()
        self.transport.write(alert())
        self.transport.close()
        if self.peer is not None and self.peer.transport is not None:
            self.peer.client = _Detached
            self.peer.transport.close()
            self.peer = None

    def _reply(self, status: int, reason: str, text: str) -> None:
        body = (text + "\n").encode("utf-8")
        self.transport.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
                             f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode("ascii") + body)
        self.state = _CLOSED
        self._cancel_timer()
        self.transport.close()

    def _to_mitm(self, target: tuple[str, int] | None, initial: bytes, kind: str) -> None:
        if self.relay.mitm is None and self.relay.start_mitm is None:
            self.abort("no_inspector")
            return
        # With a target, mitmproxy is told where to connect by a CONNECT line (to the address the
        # relay resolved and checked); without one (explicit plain HTTP) it reads the client's own bytes.
        self.buf = bytearray(initial) if target is not None else bytearray()
        self._connect(None, 0, None if target is not None else initial, target, handoff=kind)

    async def _addresses(self, host: str, port: int) -> list[tuple[str, int]]:
        """The addresses to try for a name the client chose: never the box itself (its loopback
        services, e.g. metrics, are not for pupils), unless the origin resolver put it there."""
        addresses = await self.relay.resolver.resolve(host, port)
        if self.mapped or self.relay.loopback_origins:
            return addresses
        allowed = [a for a in addresses if not is_local(a[0])]
        if not allowed:
            raise _Refused(host)
        return allowed

    def _connect(self, host: str | None, port: int, initial: bytes | None, connect: tuple[str, int] | None, *,
                 then_ok: bool = False, handoff: str | None = None) -> None:
        self.state = _WAIT
        self.task = asyncio.get_running_loop().create_task(
            self._open(host, port, initial, connect, then_ok, handoff))

    async def _open(self, host, port, initial, connect, then_ok, handoff) -> None:
        loop = asyncio.get_running_loop()
        try:
            if host is None:  # mitmproxy, started on first need
                if connect is not None:
                    target = (await self._addresses(*connect))[0]
                    authority = f"[{target[0]}]:{target[1]}" if ":" in target[0] else f"{target[0]}:{target[1]}"
                    connect = f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode("ascii")
                addresses = [await self.relay.inspector()]
            else:
                addresses = await self._addresses(host, port)
            error: Exception | None = None
            for address in addresses[:4]:
                try:
                    _, upstream = await loop.create_connection(
                        lambda: _Upstream(self, connect is not None, self.http), address[0], address[1])
                    break
                except OSError as exc:
                    error = exc
            else:
                raise error or OSError("no address")
        except _Refused:
            if self.state == _CLOSED:
                return
            self.relay.stats.error("local_destination")
            if then_ok or self.http:
                self._reply(403, "Forbidden", "destination not allowed / không được phép kết nối tới địa chỉ này")
            else:
                self.abort(None)
            return
        except (OSError, asyncio.CancelledError) as exc:
            if self.state == _CLOSED:
                return
            self.relay.stats.error("handoff" if handoff else "upstream")
            log.debug("proxy upstream connect failed: %s", exc)
            if then_ok or (self.http and handoff is None):
                self._reply(502, "Bad Gateway", "cannot reach the site / không kết nối được tới trang web")
            else:
                self.abort(None)
            return
        if self.state == _CLOSED:
            upstream.client = _Detached
            upstream.transport.close()
            return
        try:
            self._connected(upstream, initial, connect, then_ok, handoff)
        except Exception as exc:  # fail closed
            log.exception("proxy relay error: %s", exc)
            self.abort("relay")

    def _connected(self, upstream: _Upstream, initial, connect: bytes | None, then_ok, handoff) -> None:
        self.peer = upstream
        if handoff is not None:
            sockname = upstream.transport.get_extra_info("sockname")
            self.handoff_port = sockname[1]
            self.relay.handoffs[self.handoff_port] = Handoff(self.client, handoff, self.verdict)
        if connect is not None:
            upstream.transport.write(connect)  # the rest waits for mitmproxy's 200 (handoff_ready)
            return
        if then_ok:
            self.transport.write(_OK)
            pending, self.buf = bytes(self.buf), bytearray()
            self._start_hello(pending)
            return
        if initial:
            upstream.transport.write(initial)
        self._splice()

    def handoff_ready(self) -> None:
        """mitmproxy accepted our CONNECT: send what the client sent so far and start splicing."""
        data, self.buf = bytes(self.buf), bytearray()
        if data:
            self.peer.transport.write(data)
        self._splice()

    def _splice(self) -> None:
        if self.state == _CLOSED:
            return
        self.state = _SPLICE
        self._cancel_timer()
        self.spliced = True
        self.relay.stats.open += 1
        peer = self.peer
        if self.buf:
            data, self.buf = bytes(self.buf), bytearray()
            if self.body_left is not None:
                data = data[:self.body_left]
                self.body_left -= len(data)
            if data:
                peer.transport.write(data)
        if peer.pending and not peer.expect_reply:
            data, peer.pending = bytes(peer.pending), bytearray()
            if peer.response:
                peer._response(data)
            else:
                self.transport.write(data)
        if self.paused:
            self.paused = False
            self.transport.resume_reading()
        if self.eof and peer.transport.can_write_eof():
            peer.transport.write_eof()
        if peer.eof and self.transport.can_write_eof():
            self.transport.write_eof()

    def _timed_out(self) -> None:
        self.timer = None
        if self.state not in (_SPLICE, _CLOSED):
            self.abort("timeout")

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def abort(self, why: str | None) -> None:
        if why is not None:
            self.relay.stats.error(why)
        self.close()

    def close(self) -> None:
        if self.state == _CLOSED and self.transport is None:
            return
        first = self.state != _CLOSED
        self.state = _CLOSED
        self.relay.clients.discard(self)
        self._cancel_timer()
        if first and self.spliced:
            self.relay.stats.open -= 1
            self.spliced = False
        if self.handoff_port is not None:
            self.relay.handoffs.pop(self.handoff_port, None)
            self.handoff_port = None
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self.task = None
        transport, self.transport = self.transport, None
        if transport is not None:
            transport.close()
        peer, self.peer = self.peer, None
        if peer is not None and peer.transport is not None:
            peer.client = _Detached
            peer.transport.close()


class _DetachedClient:
    """Stands in for a closed client so a late upstream callback has nothing to act on."""

    state = _CLOSED
    eof = True

    class _NoTransport:
        def write(self, data):
            pass

        def write_eof(self):
            pass

        def can_write_eof(self):
            return False

        def pause_reading(self):
            pass

        def resume_reading(self):
            pass

        def close(self):
            pass

    transport = _NoTransport()

    def close(self):
        pass

    def abort(self, why):
        pass

    def handoff_ready(self):
        pass


_Detached = _DetachedClient()
