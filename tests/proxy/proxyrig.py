"""Test rig: a local HTTP + HTTPS origin that records requests, and the real proxy service in a thread."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import socket
import ssl
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from policyfactory import write_policy

from gateway.core.snapshot import SnapshotHolder
from gateway.policy.compile import load_policy
from gateway.proxy.config import Address, ProxySettings

# Clients are told apart by their loopback source address (all of 127/8 is local on Linux).
PLAIN = "127.0.0.1"  # thcs, no inspection
LAB = "127.0.0.2"  # thcs, inspect_tls: true
PRIMARY = "127.0.0.3"  # tieu_hoc
STAFF = "127.0.0.4"
OUTSIDE = "127.0.0.9"  # not served

CATEGORIES = """\
categories:
  adult: {name: {vi: Khiêu dâm, en: Adult}, lists: [adult.txt], mandatory: true}
  gambling:
    name: {vi: Cờ bạc, en: Gambling}
    description: {vi: "Cá cược, sòng bạc trực tuyến.", en: "Betting and online casinos."}
    lists: [gambling.txt]
  self_harm:
    name: {vi: "Tự gây hại, tự tử", en: "Self-harm and suicide"}
    description: {vi: "Nội dung cổ vũ tự gây hại.", en: "Content promoting self-harm or suicide."}
    lists: [self_harm.txt]
    hotline: true
  social: {name: {vi: Mạng xã hội, en: Social}, lists: [social.txt]}
  games: {name: {vi: Trò chơi, en: Games}, lists: [games.txt]}
  bypass: {name: {vi: Vượt tường lửa, en: Bypass}, lists: [bypass.txt]}
  education: {name: {vi: Học tập, en: Education}, lists: [education.txt], kind: allow}
"""

BANDS = """\
bands:
  mam_non:
    name: {vi: Mầm non, en: Preschool}
    walled_garden: {allow_categories: [education]}
    safe_search: strict
  tieu_hoc:
    name: {vi: Tiểu học, en: Primary}
    block: [gambling, self_harm, social, bypass]
    safe_search: strict
  thcs:
    name: {vi: Trung học cơ sở, en: Lower secondary}
    block: [gambling, self_harm, bypass]
    safe_search: moderate
  thpt:
    name: {vi: THPT, en: Upper secondary}
    block: [gambling]
    safe_search: moderate
  staff:
    name: {vi: Giáo viên, en: Staff}
    safe_search: "off"
"""

LISTS = {
    "adult.txt": "porn.example\n",
    "gambling.txt": "casino.example\nbet.example\n",
    "self_harm.txt": "selfharm.example\n",
    "social.txt": "facebook.com\n",
    "games.txt": "roblox.com\n",
    "bypass.txt": "dns.google\n",
    "education.txt": "olm.vn\n",
    "never.txt": "captive.apple.com\n",
}

SCHOOL = """\
school:
  id: HN-PROXY-1
  name: Trường THCS Thử Proxy
  ward: Phường Thử
  levels: [thcs]
  timezone: Asia/Ho_Chi_Minh
  contact: {name: "Thầy Nguyễn Văn A", email: "cntt@truong-thu.edu.vn", room: "Phòng Tin học"}
groups:
  hoc_sinh: {band: thcs, clients: [127.0.0.1]}
  phong_may: {band: thcs, clients: [127.0.0.2], inspect_tls: true}
  tieu_hoc: {band: tieu_hoc, clients: [127.0.0.3]}
  staff: {band: staff, clients: [127.0.0.4]}
serve: [127.0.0.0/29]
bands:
  thcs:
    deny: [denied.test]
"""

BIG = 8 * 1024 * 1024  # bytes /big answers with: several socket buffers, to exercise flow control

# Names the origin answers for (one certificate covers them all).
ORIGIN_NAMES = ("allowed.test", "www.youtube.com", "www.google.com", "www.bing.com", "casino.example",
                "selfharm.example", "denied.test", "reload.test", "facebook.com", "restrict.youtube.com",
                "restrictmoderate.youtube.com", "forcesafesearch.google.com")


def make_certs(folder: Path) -> tuple[Path, Path, Path, bytes]:
    """A test CA and a leaf for ORIGIN_NAMES: (ca.pem, leaf.pem, leaf.key, leaf DER)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "proxy test origin CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
          .not_valid_after(now + dt.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "allowed.test")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in ORIGIN_NAMES]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_path, leaf_path, key_path = folder / "origin-ca.pem", folder / "origin.pem", folder / "origin.key"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    leaf_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return ca_path, leaf_path, key_path, leaf.public_bytes(serialization.Encoding.DER)


class Origin:
    """HTTP and HTTPS on 127.0.0.1 answering `origin <host><path>` and recording every request."""

    def __init__(self, folder: Path):
        self.ca, cert, key, self.leaf_der = make_certs(folder)
        self.requests: list[dict] = []
        self.dialed: list[str] = []  # names the proxy asked the origin resolver for, in order
        origin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                host = (self.headers.get("Host") or "").split(":")[0]
                origin.requests.append({"host": host, "path": self.path, "headers": dict(self.headers.items()),
                                        "tls": isinstance(self.connection, ssl.SSLSocket)})
                body = f"origin {host}{self.path}\n".encode()
                if self.path.startswith("/big"):
                    body = bytes(range(256)) * (BIG // 256)
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                host = (self.headers.get("Host") or "").split(":")[0]
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    data = b""
                    while True:
                        size = int(self.rfile.readline().strip(), 16)
                        if size == 0:
                            self.rfile.readline()
                            break
                        data += self.rfile.read(size)
                        self.rfile.readline()
                else:
                    data = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                origin.requests.append({"host": host, "path": self.path, "headers": dict(self.headers.items()),
                                        "tls": isinstance(self.connection, ssl.SSLSocket), "body": data})
                body = b"posted %d bytes: %s\n" % (len(data), data)
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.https = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.https.socket = ctx.wrap_socket(self.https.socket, server_side=True)
        self.http.daemon_threads = self.https.daemon_threads = True
        self._threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (self.http, self.https)]
        for t in self._threads:
            t.start()

    @property
    def http_port(self) -> int:
        return self.http.server_address[1]

    @property
    def https_port(self) -> int:
        return self.https.server_address[1]

    def resolve(self, host: str, port: int) -> tuple[str, int] | None:
        """The proxy's origin resolver: our names go to this origin (443 -> HTTPS, anything else -> HTTP)."""
        self.dialed.append(host)
        if host not in ORIGIN_NAMES and not host.startswith("www.google."):
            return None
        return ("127.0.0.1", self.https_port if port == 443 else self.http_port)

    def close(self) -> None:
        for s in (self.http, self.https):
            s.shutdown()
            s.server_close()


def build_holder(root: Path, school: str = SCHOOL, lists: dict | None = None) -> SnapshotHolder:
    return SnapshotHolder(load_policy(write_policy(root, categories=CATEGORIES, bands=BANDS, school=school,
                                                   lists=lists or LISTS)))


def snapshot_for(root: Path, school: str = SCHOOL, lists: dict | None = None):
    return load_policy(write_policy(root, categories=CATEGORIES, bands=BANDS, school=school, lists=lists or LISTS))


class LoopbackOnlyResolver:
    """The proxy's name resolver in tests: IP literals and localhost only, so no test ever sends a
    DNS query off the machine (a name the origin resolver does not map fails to connect)."""

    async def resolve(self, host: str, port: int) -> list[tuple[str, int]]:
        if host == "localhost":
            return [("127.0.0.1", port)]
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise OSError(f"test resolver: no DNS for {host!r}") from None
        return [(host, port)]


class ProxyRig:
    """The real ProxyService (relay + mitmproxy + block-page server) on an event loop in its own thread."""

    def __init__(self, tmp: Path, holder: SnapshotHolder, origin: Origin, **overrides):
        from gateway.proxy.service import ProxyService

        base = ProxySettings(mode="both", listen=Address("127.0.0.1", 0), transparent_listen=Address("127.0.0.1", 0),
                             blockpage_listen=Address("127.0.0.1", 0), ca_dir=tmp / "ca", ref_key=tmp / "ref.key",
                             upstream_ca=origin.ca, handshake_timeout=2.0)
        self.settings = replace(base, **overrides)
        self.holder = holder
        self.origin = origin
        self.loop = asyncio.new_event_loop()
        self.service = ProxyService(self.settings, holder, origin_resolver=origin.resolve,
                                    clock_trusted=lambda: True, original_dst=lambda transport: None,
                                    resolver=LoopbackOnlyResolver())
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("proxy did not start")
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.service.start())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()

    def call(self, fn, *args):
        """Run `fn(*args)` on the proxy's loop and return its result (for looking inside)."""
        done = threading.Event()
        box = {}

        def run():
            try:
                box["value"] = fn(*args)
            finally:
                done.set()

        self.loop.call_soon_threadsafe(run)
        done.wait(10)
        return box.get("value")

    def wait_until(self, predicate, timeout: float = 5.0) -> bool:
        """Check `predicate()` on the proxy's loop until it holds (connection teardown is asynchronous)."""
        pause = threading.Event()
        for _ in range(int(timeout / 0.01)):
            if self.call(predicate):
                return True
            pause.wait(0.01)
        return bool(self.call(predicate))

    def stop(self) -> None:
        future = asyncio.run_coroutine_threadsafe(self.service.stop(), self.loop)
        future.result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    # -- addresses ---------------------------------------------------------------------------------
    @property
    def explicit(self) -> tuple[str, int]:
        return self.service.addresses["explicit"]

    @property
    def transparent(self) -> tuple[str, int]:
        return self.service.addresses["transparent"]

    @property
    def blockpage(self) -> tuple[str, int]:
        return self.service.addresses["blockpage"]


def read_response(sock: socket.socket, limit: int = 64 << 20) -> tuple[int, dict, bytes]:
    """Read one HTTP/1.1 response with Content-Length (or until close)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1]) if lines and lines[0].startswith("HTTP/") else 0
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "-1"))
    while (length < 0 or len(body) < length) and len(body) < limit:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body


def connect(address: tuple[str, int], source: str, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(address, timeout=timeout, source_address=(source, 0))


def proxy_get(rig: ProxyRig, url: str, source: str = PLAIN, headers: dict | None = None) -> tuple[int, dict, bytes]:
    """A plain-HTTP request through the explicit proxy (absolute-form)."""
    host = url.split("/")[2]
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    with connect(rig.explicit, source) as sock:
        sock.sendall(f"GET {url} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n".encode())
        return read_response(sock)


def tunnel(rig: ProxyRig, host: str, source: str = PLAIN, port: int = 443) -> tuple[int, socket.socket]:
    """CONNECT through the explicit proxy: (status, socket positioned after the response head)."""
    sock = connect(rig.explicit, source)
    sock.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(1)
        if not chunk:
            break
        data += chunk
    status = int(data.split(b" ")[1]) if data.startswith(b"HTTP/") else 0
    return status, sock


def tls_client(sock: socket.socket, server_name: str | None, cafile: Path) -> ssl.SSLSocket:
    ctx = ssl.create_default_context(cafile=str(cafile))
    if server_name is None:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx.wrap_socket(sock, server_hostname=server_name)


def https_get(tls: ssl.SSLSocket, host: str, path: str = "/", headers: dict | None = None,
              keep_alive: bool = False) -> tuple[int, dict, bytes]:
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    conn = "keep-alive" if keep_alive else "close"
    tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: {conn}\r\n\r\n".encode())
    return read_response(tls)
