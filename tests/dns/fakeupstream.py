"""A real DNS server on loopback (UDP and TCP on one port, optional DoT) for tests to use as upstream."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import random
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from dnslib import AAAA, CNAME, MX, NS, PTR, QTYPE, RCODE, RR, SOA, TXT, A, DNSQuestion, DNSRecord

MODES = ("answer", "stall", "truncate", "spoof", "spoof_only", "servfail", "refused", "garbage", "cut", "trailing",
         "drop_tcp")
SPOOFED_ADDRESS = "6.6.6.6"  # what every forged reply claims, so a test can tell it never got through

_RDATA = {"A": A, "AAAA": AAAA, "CNAME": CNAME, "NS": NS, "PTR": PTR, "TXT": TXT}


class Received(NamedTuple):
    qname: str
    qtype: str
    proto: str  # "udp", "tcp" or "tls"
    id: int  # the query ID on the wire
    port: int  # the client's source port


class FakeUpstream:
    """A real DNS server on 127.0.0.1 (or ::1) run in a background thread with its own event loop.

    UDP and TCP share one random free port; with tls=True it also serves DoT on `tls_port` with a
    throwaway CA (`ca_pem`) and a certificate for `tls_name`. Names not in `records` get NXDOMAIN with
    an SOA, known names asked for another type NODATA with an SOA; CNAMEs are followed like a recursive
    resolver would. `mode` and `delay` may be changed at any time:

    answer | stall (never reply) | truncate (UDP TC=1 with no answers; TCP answers fully) |
    spoof (a reply from another port that matches in every other way, one with a wrong ID and one
    with a wrong question, then the right one; the forged ones claim SPOOFED_ADDRESS) | spoof_only |
    servfail | refused | garbage (the query's ID then random bytes, so that the client's parser, not
    just its ID check, is what meets them) | cut (the right header and question, then the last record
    cut short, so only a walk of the records finds it) | trailing (a whole answer, then stray bytes) |
    drop_tcp (TCP and DoT connections are closed unanswered).
    """

    def __init__(
        self,
        records: dict[tuple[str, str], list[str]] | None = None,
        *,
        tls: bool = False,
        host: str = "127.0.0.1",
    ) -> None:
        self.records: dict[tuple[str, str], list[str]] = {}
        for (name, rtype), values in (records or {}).items():
            self.add(name, rtype, values)
        self.host = host
        self.port = 0
        self.tls = tls
        self.tls_port: int | None = None
        self.ca_pem: bytes | None = None
        self.tls_name = "dns.test"
        self.mode = "answer"
        self.delay = 0.0
        self.ttl = 300
        self.queries: list[tuple[str, str, str]] = []  # (qname, qtype, proto) in arrival order
        self.received: list[Received] = []
        self.connections = 0  # TCP and DoT connections accepted
        self.closed_connections = 0
        self._cond = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._servers: list[asyncio.Server] = []
        self._writers: set[asyncio.StreamWriter] = set()
        self._udp: asyncio.DatagramTransport | None = None
        self._offport: socket.socket | None = None

    # ---- life cycle ----

    def start(self) -> FakeUpstream:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        udp, tcp = self._bind_pair(family)
        tls_sock, tls_ctx = None, None
        if self.tls:
            tls_sock = socket.socket(family, socket.SOCK_STREAM)
            tls_sock.bind((self.host, 0))
            self.tls_port = tls_sock.getsockname()[1]
            self.ca_pem, tls_ctx = _make_certificates(self.tls_name)
        self._offport = socket.socket(family, socket.SOCK_DGRAM)
        self._offport.bind((self.host, 0))
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run,
            args=(udp, tcp, tls_sock, tls_ctx, ready),
            name=f"fakeupstream-{self.port}",
            daemon=True,
        )
        self._thread.start()
        ready.wait()
        if self._error is not None:
            self._thread.join()
            raise RuntimeError("FakeUpstream failed to start") from self._error
        return self

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._teardown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._thread = None
        if self._offport is not None:
            self._offport.close()

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- what tests call ----

    def add(self, name: str, rtype: str, values: Iterable[str]) -> None:
        self.records[(_norm(name), rtype.upper())] = list(values)

    def spec(self, proto: str = "udp") -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if proto == "tls":
            return f"tls://{host}:{self.tls_port}#{self.tls_name}"
        return f"{proto}://{host}:{self.port}"

    def wait(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Block until predicate() holds after a query or connection event (async code: asyncio.to_thread)."""
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def drop_connections(self) -> None:
        """Close every open TCP/DoT connection from the server side, as a server's idle timeout would."""
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(self._drop(), self._loop).result(10)

    # ---- server thread ----

    def _bind_pair(self, family: int) -> tuple[socket.socket, socket.socket]:
        for _ in range(50):
            tcp = socket.socket(family, socket.SOCK_STREAM)
            udp = socket.socket(family, socket.SOCK_DGRAM)
            try:
                tcp.bind((self.host, 0))
                udp.bind((self.host, tcp.getsockname()[1]))
            except OSError:
                tcp.close()
                udp.close()
                continue
            self.port = tcp.getsockname()[1]
            return udp, tcp
        raise OSError("no port free for both UDP and TCP")

    def _run(self, udp, tcp, tls_sock, tls_ctx, ready: threading.Event) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._setup(udp, tcp, tls_sock, tls_ctx))
        except BaseException as exc:
            self._error = exc
            ready.set()
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _setup(self, udp, tcp, tls_sock, tls_ctx) -> None:
        loop = asyncio.get_running_loop()
        self._udp, _ = await loop.create_datagram_endpoint(lambda: _UdpServer(self), sock=udp)
        self._servers.append(await asyncio.start_server(partial(self._serve_stream, proto="tcp"), sock=tcp))
        if tls_sock is not None:
            self._servers.append(
                await asyncio.start_server(
                    partial(self._serve_stream, proto="tls"), sock=tls_sock, ssl=tls_ctx
                )
            )

    async def _teardown(self) -> None:
        for server in self._servers:
            server.close()
        await self._drop()
        if self._udp is not None:
            self._udp.close()
        me = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not me]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _drop(self) -> None:
        for writer in list(self._writers):
            writer.close()

    def _count(self, attr: str) -> None:
        with self._cond:
            setattr(self, attr, getattr(self, attr) + 1)
            self._cond.notify_all()

    def _record(self, request: DNSRecord, proto: str, peer: tuple) -> None:
        name = str(request.q.qname).rstrip(".").lower()
        qtype = QTYPE.get(request.q.qtype)
        with self._cond:
            self.queries.append((name, qtype, proto))
            self.received.append(Received(name, qtype, proto, request.header.id, peer[1]))
            self._cond.notify_all()

    def _on_datagram(self, data: bytes, addr: tuple) -> None:
        asyncio.get_running_loop().create_task(self._answer_udp(data, addr))

    async def _answer_udp(self, data: bytes, addr: tuple) -> None:
        for target, payload in await self._respond(data, "udp", addr):
            if target == "offport" and self._offport is not None:
                self._offport.sendto(payload, addr)
            elif self._udp is not None and not self._udp.is_closing():
                self._udp.sendto(payload, addr)

    async def _serve_stream(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, proto: str
    ) -> None:
        self._count("connections")
        self._writers.add(writer)
        peer = writer.get_extra_info("peername")
        tasks: set[asyncio.Task] = set()
        try:
            while True:
                head = await reader.readexactly(2)
                data = await reader.readexactly(int.from_bytes(head, "big"))
                if self.mode == "drop_tcp":
                    with contextlib.suppress(Exception):
                        self._record(DNSRecord.parse(data), proto, peer)
                    break
                # Each query in its own task, so answers come back as they are ready (pipelining).
                task = asyncio.get_running_loop().create_task(self._answer_stream(data, proto, peer, writer))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        except (EOFError, OSError):
            pass
        finally:
            for task in tasks:
                task.cancel()
            self._writers.discard(writer)
            writer.close()
            self._count("closed_connections")

    async def _answer_stream(
        self, data: bytes, proto: str, peer: tuple, writer: asyncio.StreamWriter
    ) -> None:
        for target, payload in await self._respond(data, proto, peer):
            if target != "offport" and not writer.is_closing():
                writer.write(len(payload).to_bytes(2, "big") + payload)

    async def _respond(self, data: bytes, proto: str, peer: tuple) -> list[tuple[str, bytes]]:
        """The replies to send for one query, each tagged with where it goes from ("reply" or "offport")."""
        try:
            request = DNSRecord.parse(data)
        except Exception:
            return []
        mode = self.mode  # as at receipt, so a test can change it for the next query
        self._record(request, proto, peer)
        if mode == "stall":
            return []
        if self.delay:
            await asyncio.sleep(self.delay)
        return self._replies(request, proto, mode)

    def _replies(self, request: DNSRecord, proto: str, mode: str) -> list[tuple[str, bytes]]:
        if mode == "garbage":
            return [("reply", request.header.id.to_bytes(2, "big") + os.urandom(random.randint(10, 100)))]
        reply = request.reply()
        if mode in ("servfail", "refused"):
            reply.header.rcode = RCODE.SERVFAIL if mode == "servfail" else RCODE.REFUSED
            return [("reply", reply.pack())]
        if mode == "truncate" and proto == "udp":
            reply.header.tc = 1
            return [("reply", reply.pack())]
        self._fill(reply)
        if mode == "cut":
            return [("reply", reply.pack()[:-2])]
        if mode == "trailing":
            return [("reply", reply.pack() + b"\x00\x00")]
        if mode not in ("spoof", "spoof_only"):
            return [("reply", reply.pack())]
        wrong_id = self._forged(request)
        wrong_id.header.id = (request.header.id + 1) & 0xFFFF
        forged = [("reply", wrong_id.pack()), ("reply", self._forged(request, "spoofed.invalid").pack())]
        if proto == "udp":
            # Perfect in every way but its source port: only a connected client socket keeps it out.
            forged.insert(0, ("offport", self._forged(request).pack()))
        return forged if mode == "spoof_only" else [*forged, ("reply", reply.pack())]

    def _forged(self, request: DNSRecord, qname: str | None = None) -> DNSRecord:
        forged = request.reply()
        if qname is not None:
            forged.questions = [DNSQuestion(qname, request.q.qtype)]
        forged.add_answer(RR(forged.q.qname, QTYPE.A, rdata=A(SPOOFED_ADDRESS), ttl=self.ttl))
        return forged

    def _fill(self, reply: DNSRecord) -> None:
        name = str(reply.q.qname).rstrip(".").lower()
        qtype = QTYPE.get(reply.q.qtype)
        known = {n for n, _ in self.records}
        owner: object = reply.q.qname  # the asked spelling, as a server echoing the question would
        current = name
        for _ in range(8):
            values = self.records.get((current, qtype))
            if values:
                for value in values:
                    reply.add_answer(self._rr(owner, qtype, value))
                return
            target = self.records.get((current, "CNAME"))
            if not target or qtype == "CNAME":
                break
            reply.add_answer(self._rr(owner, "CNAME", target[0]))
            current = owner = _norm(target[0])
        if current not in known:
            reply.header.rcode = RCODE.NXDOMAIN
        reply.add_auth(self._soa(current))

    def _rr(self, owner: object, rtype: str, value: str) -> RR:
        if rtype in _RDATA:
            return RR(owner, getattr(QTYPE, rtype), rdata=_RDATA[rtype](value), ttl=self.ttl)
        if rtype == "MX":
            preference, _, exchange = value.partition(" ")
            return RR(owner, QTYPE.MX, rdata=MX(exchange, int(preference)), ttl=self.ttl)
        return RR.fromZone(f"{owner} {self.ttl} IN {rtype} {value}")[0]

    def _soa(self, name: str) -> RR:
        zone = ".".join(name.split(".")[-2:]) or "."
        soa = SOA("ns.fake.test", "hostmaster.fake.test", (1, 3600, 600, 86400, self.ttl))
        return RR(zone, QTYPE.SOA, rdata=soa, ttl=self.ttl)


class _UdpServer(asyncio.DatagramProtocol):
    def __init__(self, owner: FakeUpstream) -> None:
        self._owner = owner

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self._owner._on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        pass  # the client gave up and closed its socket: nothing to do


def _norm(name: str) -> str:
    return name.rstrip(".").lower()


def _make_certificates(name: str) -> tuple[bytes, ssl.SSLContext]:
    """A throwaway CA and a server certificate for `name`: the CA's PEM, and a server context using them."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "FakeUpstream test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # load_cert_chain only reads files; they live just long enough to be read.
    with tempfile.TemporaryDirectory() as tmp:
        cert_path, key_path = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        ctx.load_cert_chain(cert_path, key_path)
    return ca.public_bytes(serialization.Encoding.PEM), ctx


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )
