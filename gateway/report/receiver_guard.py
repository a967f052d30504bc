"""Guard in front of the Department's remote-write receiver: per-school basic auth, own series only."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import http.client
import logging
import os
import secrets
import socket
import ssl
import tempfile
import threading
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from gateway.report.inventory import School
from gateway.report.messages import tr
from gateway.report.remote_write import WireError, WriteRequest, parse_body

log = logging.getLogger("gateway.report.receiver_guard")

WRITE_PATH = "/api/v1/write"
MAX_BODY = 16 * 1024 * 1024  # compressed; Prometheus sends a few hundred KiB per batch at most
REALM = "school-gateway remote write"
ITERATIONS = 200_000
# Labels the inventory fixes for a school: a box may omit them but never contradict them.
INVENTORY_LABELS = ("school_name", "ward", "level")
_FORWARDED_HEADERS = ("Content-Type", "Content-Encoding", "X-Prometheus-Remote-Write-Version", "User-Agent")


class CredentialsError(ValueError):
    """The credentials file has a bad line."""


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    """'pbkdf2_sha256$iterations$salt$hash' (base64): stored instead of the password itself."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"pbkdf2_sha256${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def _check(password: str, stored: str) -> bool:
    try:
        scheme, iterations, salt, digest = stored.split("$")
        if scheme != "pbkdf2_sha256":
            return False
        got = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
        return hmac.compare_digest(got, base64.b64decode(digest))
    except (ValueError, binascii.Error):
        return False


def load_credentials(path: Path, lang: str = "vi") -> dict[str, str]:
    """school_id -> stored hash, from lines 'school_id:pbkdf2_sha256$...' ('#' starts a comment)."""
    out: dict[str, str] = {}
    for number, raw in enumerate(Path(path).read_text(encoding="utf-8-sig").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        school_id, sep, stored = line.partition(":")
        if not sep or not school_id or not stored.startswith("pbkdf2_sha256$") or stored.count("$") != 3:
            raise CredentialsError(tr("guard.bad_credentials_file", lang, file=str(path), line=number))
        out[school_id.strip()] = stored.strip()
    return out


def set_credential(path: Path, school_id: str, password: str | None = None) -> str:
    """Create or replace `school_id`'s line in the credentials file; returns the (new) password."""
    password = password or secrets.token_urlsafe(24)
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    kept = [line for line in lines if line.partition(":")[0].strip() != school_id]
    kept.append(f"{school_id}:{hash_password(password)}")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("\n".join(kept) + "\n")
    os.chmod(tmp, 0o600)  # hashes only, but still nobody else's business
    os.replace(tmp, path)
    return password


@dataclass(frozen=True, slots=True)
class Verdict:
    status: int
    reason: str
    school_id: str | None = None


class Guard:
    """The policy: who may write, and which series they may write. No I/O, so it is testable alone."""

    def __init__(self, credentials: Mapping[str, str], inventory: Sequence[School] | None = None):
        self.credentials = dict(credentials)
        self.inventory = {s.id: s.labels() for s in inventory} if inventory is not None else None
        # PBKDF2 costs ~0.1 s: remember (school, password digest) pairs already verified
        self._verified: set[tuple[str, bytes]] = set()
        self._lock = threading.Lock()

    def authenticate(self, header: str | None) -> str | None:
        """The school id of a valid 'Authorization: Basic ...' header, else None."""
        if not header or header[:6].lower() != "basic ":
            return None
        try:
            user, sep, password = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        stored = self.credentials.get(user)
        if not sep or stored is None:
            return None
        key = (user, hashlib.sha256(stored.encode() + b"\0" + password.encode()).digest())
        with self._lock:
            if key in self._verified:
                return user
        if not _check(password, stored):
            return None
        with self._lock:
            if len(self._verified) > 10_000:
                self._verified.clear()
            self._verified.add(key)
        return user

    def check(self, school_id: str, request: WriteRequest) -> Verdict:
        """Every series must carry school_id=<the authenticated school> and agree with the inventory."""
        expected = None
        if self.inventory is not None:
            expected = self.inventory.get(school_id)
            if expected is None:
                return Verdict(403, f"school {school_id} is not in the inventory", school_id)
        for ts in request.timeseries:
            ids = [v for k, v in ts.labels if k == "school_id"]
            if ids != [school_id]:
                name = ts.label("__name__") or "?"
                return Verdict(403, f"series {name} has school_id={','.join(ids) or '(none)'}, "
                                    f"but the credentials are for {school_id}", school_id)
            if expected is not None:
                for label in INVENTORY_LABELS:
                    value = ts.label(label)
                    if value is not None and value != expected[label]:
                        return Verdict(403, f"series {ts.label('__name__') or '?'} has {label}={value!r}; the "
                                            f"inventory says {expected[label]!r}", school_id)
        return Verdict(200, "ok", school_id)


class GuardServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], guard: Guard, upstream: str, *, timeout: float = 30.0,
                 tls: ssl.SSLContext | None = None):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, GuardHandler)
        self.guard = guard
        parts = urllib.parse.urlsplit(upstream)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"upstream must be an http(s) URL: {upstream}")
        self.upstream = parts
        self.upstream_timeout = timeout
        if tls is not None:
            # handshake in the handler thread, not in accept(): a slow client must not stall the others
            self.socket = tls.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)

    def forward(self, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes]:
        """POST the body unchanged to the real receiver; its status goes back to the box."""
        parts = self.upstream
        cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        conn = cls(parts.hostname, parts.port, timeout=self.upstream_timeout)
        try:
            conn.request("POST", parts.path or WRITE_PATH, body=body, headers=dict(headers))
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()


class GuardHandler(BaseHTTPRequestHandler):
    server: GuardServer
    protocol_version = "HTTP/1.1"  # keep-alive: a box's agent sends many small batches

    def log_message(self, format: str, *args) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _reply(self, status: int, text: str = "", headers: Mapping[str, str] | None = None) -> None:
        body = (text + "\n").encode() if text else b""
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if body:
            self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path in ("/-/ready", "/-/healthy"):
            self._reply(200, "ok")
        else:
            self._reply(404, "not found")

    def do_POST(self) -> None:
        if urllib.parse.urlsplit(self.path).path != WRITE_PATH:
            self._reply(404, f"only {WRITE_PATH} is served here")
            return
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self._reply(411, "Content-Length required")
            return
        if int(length) > MAX_BODY:
            self.close_connection = True
            self._reply(413, f"body larger than {MAX_BODY} bytes")
            return
        school_id = self.server.guard.authenticate(self.headers.get("Authorization"))
        if school_id is None:
            log.warning("remote write refused from %s: bad or missing credentials", self.client_address[0])
            # the unread body would desynchronise a keep-alive connection: close it instead
            self.close_connection = True
            self._reply(401, "valid per-school credentials required",
                        {"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'})
            return
        body = self.rfile.read(int(length))
        if (self.headers.get("Content-Encoding") or "").lower() != "snappy":
            self._reply(415, "Content-Encoding: snappy required")
            return
        try:
            request = parse_body(body)
        except WireError as exc:
            log.warning("remote write refused for school %s: %s", school_id, exc)
            self._reply(400, f"not a snappy-compressed WriteRequest: {exc}")
            return
        verdict = self.server.guard.check(school_id, request)
        if verdict.status != 200:
            log.warning("remote write refused for school %s: %s", school_id, verdict.reason)
            self._reply(verdict.status, verdict.reason)
            return
        headers = {k: v for k in _FORWARDED_HEADERS if (v := self.headers.get(k)) is not None}
        try:
            status, answer = self.server.forward(body, headers)
        except OSError as exc:
            # 5xx makes the box's Prometheus retry the batch, so an upstream restart loses nothing
            log.error("forwarding to %s failed: %s", self.server.upstream.geturl(), exc)
            self._reply(502, "upstream receiver unavailable")
            return
        self._reply(status, answer.decode("utf-8", "replace").strip())


def serve(address: tuple[str, int], guard: Guard, upstream: str, *, tls: ssl.SSLContext | None = None
          ) -> GuardServer:
    """Bind the guard (port 0 picks a free one); the caller runs serve_forever()."""
    return GuardServer(address, guard, upstream, tls=tls)
