"""Three network namespaces joined by veth pairs: a pupil's device, the gateway routing (topology a), the outside."""

# Every address below lives only inside these namespaces; nothing is routed to or from this machine.

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

# 198.18.0.0/15 (RFC 2544 benchmarking) and a ULA: never routed anywhere, so nothing can leak out.
CLIENT4, GW_LAN4, GW_WAN4, OUTSIDE4 = "198.18.1.2", "198.18.1.1", "198.18.2.1", "198.18.2.53"
CLIENT6, GW_LAN6, GW_WAN6, OUTSIDE6 = "fd5e:1::2", "fd5e:1::1", "fd5e:2::1", "fd5e:2::53"
OUTSIDE_ANSWER4, OUTSIDE_ANSWER6 = "198.18.2.80", "fd5e:2::80"  # what the outside resolver says for any name
LAN_IF, WAN_IF = "lan0", "wan0"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class Lab:
    """client ── lan0 [gateway] wan0 ── outside; the gateway forwards between them."""

    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.client, self.gw, self.outside = f"sgwt-c-{tag}", f"sgwt-g-{tag}", f"sgwt-o-{tag}"
        self.procs: list[subprocess.Popen] = []

    def up(self) -> Lab:
        for ns in (self.client, self.gw, self.outside):
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            # No duplicate address detection: a tentative link-local address would hold back neighbour
            # discovery (and so the first IPv6 packets) for a second or two.
            for key in ("net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"):
                subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", key], check=True)
        _ip("link", "add", LAN_IF, "netns", self.gw, "type", "veth", "peer", "name", "eth0", "netns", self.client)
        _ip("link", "add", WAN_IF, "netns", self.gw, "type", "veth", "peer", "name", "eth0", "netns", self.outside)
        for ns, dev, v4, v6 in ((self.client, "eth0", CLIENT4, CLIENT6), (self.gw, LAN_IF, GW_LAN4, GW_LAN6),
                                (self.gw, WAN_IF, GW_WAN4, GW_WAN6), (self.outside, "eth0", OUTSIDE4, OUTSIDE6)):
            _ip("-n", ns, "addr", "add", f"{v4}/24", "dev", dev)
            _ip("-n", ns, "-6", "addr", "add", f"{v6}/64", "dev", dev, "nodad")
            _ip("-n", ns, "link", "set", dev, "up")
        for ns, via4, via6 in ((self.client, GW_LAN4, GW_LAN6), (self.outside, GW_WAN4, GW_WAN6)):
            _ip("-n", ns, "route", "add", "default", "via", via4)
            _ip("-n", ns, "-6", "route", "add", "default", "via", via6)
        for key in ("net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"):
            subprocess.run(["ip", "netns", "exec", self.gw, "sysctl", "-qw", key], check=True)
        self._wait_addresses()
        return self

    def _wait_addresses(self, seconds: float = 10.0) -> None:
        # The readiness signal: no address in any namespace is still tentative.
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if not any(subprocess.run(["ip", "-n", ns, "-6", "addr", "show", "tentative"], capture_output=True,
                                      text=True).stdout.strip() for ns in (self.client, self.gw, self.outside)):
                return
            time.sleep(0.05)

    def down(self) -> None:
        for proc in self.procs:
            stop(proc)
        for ns in (self.client, self.gw, self.outside):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def __enter__(self) -> Lab:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    def cmd(self, ns: str, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", ns, *argv]

    def run(self, ns: str, argv: list[str], timeout: float = 60, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(self.cmd(ns, argv), capture_output=True, text=True, timeout=timeout, **kw)

    def start(self, ns: str, argv: list[str], ready: str, **kw) -> subprocess.Popen:
        """Start a long-running process in a namespace and wait for its readiness line."""
        proc = start_process(self.cmd(ns, argv), ready, **kw)
        self.procs.append(proc)
        return proc

    def start_outside(self) -> subprocess.Popen:
        return self.start(self.outside, [sys.executable, str(HERE / "outside_servers.py")], "outside ready")

    def probe(self, ns: str, *args: str) -> dict:
        """One probe from a namespace (nsprobe.py), as a dict."""
        done = self.run(ns, [sys.executable, str(HERE / "nsprobe.py"), *args])
        if done.returncode != 0:
            raise RuntimeError(done.stdout + done.stderr)
        return json.loads(done.stdout)

    def load_rules(self, path: Path) -> None:
        done = self.run(self.gw, ["nft", "-f", str(path)])
        assert done.returncode == 0, done.stderr

    def flush_rules(self) -> None:
        self.run(self.gw, ["nft", "flush", "ruleset"])


def start_process(argv: list[str], ready: str, *, env: dict | None = None, cwd: Path | None = None,
                  timeout: float = 60) -> subprocess.Popen:
    """Start a process and return once it prints `ready` (its output lines are kept in proc.lines)."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd)
    seen = threading.Event()
    lines: list[str] = []

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            if ready in line:
                seen.set()
        seen.set()

    threading.Thread(target=read, daemon=True).start()
    seen.wait(timeout)
    if proc.poll() is not None or not any(ready in line for line in lines):
        stop(proc)
        raise RuntimeError(f"{argv[:6]} did not get ready:\n{''.join(lines)}")
    proc.lines = lines  # type: ignore[attr-defined]
    return proc


def stop(proc: subprocess.Popen) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def quiet_port() -> int:
    """A port free for UDP and TCP on loopback, below the kernel's ephemeral range (32768 and up), so
    that no outgoing connection (apt, pip during a playbook run) can take it before the test binds it."""
    for _ in range(200):
        port = 20000 + secrets.randbelow(12000)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
            try:
                u.bind(("127.0.0.1", port))
                t.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port")


def gateway_env() -> dict:
    return {**os.environ, "SCHOOL_GATEWAY_CLOCK": "synced", "PYTHONPATH": str(REPO)}


LAB_SCHOOL = """\
school:
  id: HN-LAB-0001
  name: Trường Thử Nghiệm
  ward: Phường Thử
  levels: [thcs]
groups:
  thcs: {band: thcs, clients: [198.18.1.0/24, "fd5e:1::/64"]}
  may_nay: {band: staff, clients: [127.0.0.0/8, "::1"]}
  khach: {band: thcs, clients: []}
unknown_group: khach
"""


def write_gateway(folder: Path, *, scrapers: tuple[str, ...] = (OUTSIDE4 + "/32",)) -> Path:
    """gateway.yaml for the real gateway in the gateway namespace: the shipped Department policy, the
    outside resolver as its upstream, DNS on port 53 of every address, metrics for the 'Department'."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "school.yaml").write_text(LAB_SCHOOL, encoding="utf-8")
    allow = ", ".join(f'"{a}"' for a in ("127.0.0.0/8", "::1/128", *scrapers))
    config = folder / "gateway.yaml"
    config.write_text(f"""\
dns:
  listen: ["0.0.0.0:53", "[::]:53"]
  upstreams: ["udp://{OUTSIDE4}:53"]
  timeout: 1
policy:
  school: {folder / "school.yaml"}
  cache_dir: {folder / "cache"}
  watch: false
state_dir: {folder / "state"}
metrics:
  listen: "0.0.0.0:9153"
  allow: [{allow}]
""", encoding="utf-8")
    return config
