"""Test kit for the updater: a loopback mirror with switchable faults, bundle makers, a recording observer."""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import gzip
import hashlib
import io
import json
import shutil
import tarfile
import threading
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from gateway.policy.compile import PolicyPaths, load_policy
from gateway.shipped import shipped
from gateway.updater.bundle import build_bundle, bundle_name, verify_tree
from gateway.updater.keys import key_id
from gateway.updater.manifest import POINTER, canonical, pointer_body

SCHOOL = shipped("policies/school.example.yaml")
DEPARTMENT = shipped("policies/department")
BLOCKLISTS = shipped("blocklists")
NOW = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


class Mirror:
    """A static web server on 127.0.0.1 serving `root` under /dept/, with ETag/Last-Modified and faults.

    faults[name] = "500" | "stall" | "truncate" | "404". The socket listens before the constructor
    returns, so a client may connect at once (no readiness wait needed).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.faults: dict[str, str] = {}
        self.requests: list[tuple[str, dict, int]] = []
        self.release = threading.Event()
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                mirror._serve(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/dept"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        name = urllib.parse.unquote(h.path.split("?", 1)[0]).removeprefix("/dept/")
        fault = self.faults.get(name)

        def record(status: int) -> None:
            # Before the answer goes out: a client that has its answer must find its request here.
            self.requests.append((name, dict(h.headers), status))

        if fault == "stall":
            record(0)
            self.release.wait(20)
            return
        if fault in ("500", "404"):
            record(int(fault))
            h.send_error(int(fault))
            return
        path = self.root / name
        if "/" in name or not path.is_file():
            record(404)
            h.send_error(404)
            return
        data = path.read_bytes()
        etag = '"' + hashlib.sha256(data).hexdigest()[:20] + '"'
        if h.headers.get("If-None-Match") == etag:
            record(304)
            h.send_response(304)
            h.send_header("ETag", etag)
            h.end_headers()
            return
        record(200)
        h.send_response(200)
        h.send_header("Content-Length", str(len(data)))
        h.send_header("ETag", etag)
        h.send_header("Last-Modified", email.utils.formatdate(path.stat().st_mtime, usegmt=True))
        h.end_headers()
        if fault == "truncate":  # promise everything, send half, hang up
            h.wfile.write(data[: len(data) // 2])
            h.wfile.flush()
            h.close_connection = True
            return
        h.wfile.write(data)

    def count(self, name: str) -> int:
        return sum(1 for n, _, _ in self.requests if n == name)

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


class Recorder:
    """An UpdateObserver that remembers every call."""

    def __init__(self) -> None:
        self.failures: list[str] = []
        self.successes: list[tuple[dict, float]] = []
        self.untrusted: list[bool] = []
        self.stale: list[int] = []
        self.polled = threading.Event()

    def failure(self, reason: str) -> None:
        self.failures.append(reason)
        self.polled.set()

    def success(self, manifest: dict, at: float) -> None:
        self.successes.append((manifest, at))
        self.polled.set()

    def clock_untrusted(self, untrusted: bool) -> None:
        self.untrusted.append(untrusted)

    def stale_entries(self, count: int) -> None:
        self.stale.append(count)


def department_copy(tmp: Path, edit: Callable[[Path], None] | None = None) -> tuple[Path, Path]:
    """A copy of the shipped Department layer and lists (same layout), optionally edited."""
    root = tmp / f"src-{len(list(tmp.glob('src-*')))}"
    shutil.copytree(DEPARTMENT, root / "policies" / "department")
    shutil.copytree(BLOCKLISTS, root / "blocklists")
    if edit is not None:
        edit(root)
    return root / "policies" / "department", root / "blocklists"


def make_bundle(tmp: Path, key, version: int, *, created: dt.datetime = NOW - DAY, valid: dt.timedelta = 30 * DAY,
                department: Path = DEPARTMENT, blocklists: Path = BLOCKLISTS, school: Path | None = SCHOOL,
                min_gateway: str = "0.1.0", compiled: bool = True) -> Path:
    out = tmp / "built"
    out.mkdir(exist_ok=True)
    path, _ = build_bundle(department, blocklists, key, version, out / bundle_name(version), school=school,
                           created=created, expires=created + valid, min_gateway=min_gateway, compiled=compiled)
    return path


def serve(root: Path, bundle: Path, key, *, version: int | None = None, size: int | None = None,
          sha256: str | None = None, created: str = "2026-11-30T08:00:00Z") -> dict:
    """Put `bundle` in the mirror folder with a latest.json signed by `key` (fields overridable to lie)."""
    data = bundle.read_bytes()
    if version is None:
        with tarfile.open(bundle, "r:gz") as tar:
            version = json.loads(tar.extractfile("manifest.json").read())["version"]
    name = bundle_name(version)
    (root / name).write_bytes(data)
    body = pointer_body(version, name, sha256 or hashlib.sha256(data).hexdigest(), size or len(data), created,
                        key_id(key.public_key()))
    doc = dict(body, signature=base64.b64encode(key.sign(canonical(body))).decode())
    (root / POINTER).write_text(json.dumps(doc), encoding="utf-8")
    return doc


def retar(src: Path, dst: Path, edit: Callable[[list], None]) -> Path:
    """Rewrite a bundle's members [TarInfo, bytes] through `edit` (tampering, odd members)."""
    members = []
    with tarfile.open(src, "r:gz") as tar:
        for info in tar.getmembers():
            data = tar.extractfile(info).read() if info.isfile() else b""
            members.append([info, data])
    edit(members)
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for info, data in members:
            if info.isfile():
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    dst.write_bytes(buf.getvalue())
    return dst


def member(members: list, name: str) -> list:
    return next(m for m in members if m[0].name == name)


def assert_whole(state_dir: Path) -> int:
    """`current` names a bundle whose every file matches its manifest; no leftovers. Returns its version."""
    bundles = Path(state_dir) / "bundles"
    current = bundles / "current"
    assert current.is_symlink(), "no current bundle"
    target = bundles / current.readlink()
    assert verify_tree(target) is None, verify_tree(target)
    manifest = json.loads((target / "manifest.json").read_text())
    for entry in manifest["files"]:
        assert hashlib.sha256((target / entry["path"]).read_bytes()).hexdigest() == entry["sha256"]
    leftovers = [p.name for p in bundles.iterdir() if p.name.startswith(".")]
    leftovers += [p.name for p in (Path(state_dir) / "updater").glob("download-*")]
    assert not leftovers, leftovers
    return manifest["version"]


def compiles(department: Path) -> None:
    load_policy(PolicyPaths(department, SCHOOL))
