"""Runs the real gateway (`school-gateway run`) as a subprocess on loopback for integration tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype
from policyfactory import write_policy

# Clients are told apart by their loopback source address (all of 127/8 is local on Linux).
DNS_SCHOOL = """\
school:
  id: HN-DNS-1
  name: DNS test school
  ward: Phường Thử
  levels: [thcs]
groups:
  thcs: {band: thcs, clients: [127.0.0.1, "::1"]}
  tieu_hoc: {band: tieu_hoc, clients: [127.0.0.2]}
  mam_non: {band: mam_non, clients: [127.0.0.3]}
  staff: {band: staff, clients: [127.0.0.4]}
  thpt: {band: thpt, clients: [127.0.0.5]}
serve: [127.0.0.0/29, "::1"]
bands:
  thcs:
    allow: [allowed-by-school.test]
    deny: [denied.test]
"""

DNS_LISTS = {
    "adult.txt": "porn.example\n",
    "gambling.txt": "casino.example\nbadcdn.test\n",
    "social.txt": "facebook.com\n",
    "games.txt": "roblox.com\n",
    "bypass.txt": "use-application-dns.net\nmask.icloud.com\ndns.google\n",
    "education.txt": "olm.vn\nkids.test\n",
    "never.txt": "captive.apple.com\n",
}


def free_port() -> int:
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, \
                socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            try:
                t.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


class GatewayProcess:
    def __init__(self, root: Path, upstreams: list[str], *, dns_extra: str = "", school: str = DNS_SCHOOL,
                 lists: dict | None = None, env: dict | None = None, workers: int = 1,
                 top_extra: str = ""):
        self.root = root
        self.paths = write_policy(root, school=school, lists=DNS_LISTS if lists is None else lists)
        self.port = free_port()
        self.metrics_port = free_port()
        self.config = root / "gateway.yaml"
        ups = "\n".join(f"    - {u}" for u in upstreams)
        self.config.write_text(textwrap.dedent(f"""\
            dns:
              listen: ["127.0.0.1:{self.port}", "[::1]:{self.port}"]
              workers: {workers}
              timeout: 0.5
              upstreams:
            {ups}
            """) + textwrap.indent(textwrap.dedent(dns_extra), "  ") + textwrap.dedent(f"""\
            metrics:
              listen: "127.0.0.1:{self.metrics_port}"
            """) + textwrap.dedent(top_extra) + textwrap.dedent(f"""\
            policy:
              department: {self.paths.department}
              school: {self.paths.school}
              cache_dir: {root / "cache"}
            """), encoding="utf-8")
        self.env = {**os.environ, "SCHOOL_GATEWAY_CLOCK": "synced", **(env or {})}
        self.proc = None
        self.lines: list[str] = []
        self.ready = threading.Event()

    def start(self, timeout: float = 30.0) -> GatewayProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "run", "--config", str(self.config)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self.env, cwd=self.root,
        )
        threading.Thread(target=self._read, daemon=True).start()
        self.ready.wait(timeout)
        if not any("school-gateway ready" in line for line in self.lines) or self.proc.poll() is not None:
            self.stop()
            raise RuntimeError("gateway did not start:\n" + "".join(self.lines))
        return self

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            if "school-gateway ready" in line:
                self.ready.set()
        self.ready.set()

    def ask(self, name: str, rtype: str = "A", *, source: str = "127.0.0.1", tcp: bool = False,
            timeout: float = 3.0, payload: int | None = 1232, want_dnssec: bool = False) -> dns.message.Message:
        if payload:
            q = dns.message.make_query(name, rtype, use_edns=0, payload=payload, want_dnssec=want_dnssec)
        else:
            q = dns.message.make_query(name, rtype, use_edns=False)
        host = "::1" if source == "::1" else "127.0.0.1"
        if tcp:
            return dns.query.tcp(q, host, port=self.port, source=source, timeout=timeout)
        return dns.query.udp(q, host, port=self.port, source=source, timeout=timeout)

    def scrape(self) -> str:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return r.read().decode()

    def reload(self) -> None:
        self.proc.send_signal(signal.SIGHUP)

    def stop(self) -> int | None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def rrs(msg: dns.message.Message, rtype: str) -> list[str]:
    code = dns.rdatatype.from_text(rtype)
    return [r.to_text() for rrset in msg.answer if rrset.rdtype == code for r in rrset]
