"""DNS benchmark: the gateway against dnsmasq and unbound, same list, same upstream, same machine.

Run:  .venv/bin/python bench/bench_dns.py [--domains 1000000] [--seconds 10] [--seed 1] [--quick]

Every server under test runs pinned to core 0, the load generators (dnsperf, the reload probe) and
the shared fake upstream run on core 1. All traffic stays on 127.0.0.1. See bench/README.md for what
each figure means and the targets the PASS/FAIL lines check.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import platform
import random
import re
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHON = REPO / ".venv" / "bin" / "python"
HOST = "127.0.0.1"

# The fake upstream answers every name with example.com's addresses (IANA's documentation domain).
# Not 192.0.2.1: the gateway's DNS-rebinding protection (on by default) turns answers that point a
# public name at a private/documentation range into NXDOMAIN. No packet is ever sent to these.
ANSWER_V4 = "93.184.215.14"
ANSWER_V6 = "2606:2800:21f:cb07:6820:80da:af6b:8b2c"

SERVER_CPU, CLIENT_CPU = "0", "1"
A, AAAA = 1, 28
NOERROR, SERVFAIL, NXDOMAIN, REFUSED = 0, 2, 3, 5
RCODE_NAMES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}

COLUMNS = ("gateway1", "gateway2", "dnsmasq", "unbound", "floor")
TITLES = {
    "gateway1": "gateway(1w)",
    "gateway2": "gateway(2w)",
    "dnsmasq": "dnsmasq",
    "unbound": "unbound",
    "floor": "CPython floor",
}
SERVERS = ("gateway", "floor", "dnsmasq", "unbound")

LATENCY_QPS = 2000
RELOAD_TAIL = 1.0  # seconds of load after the new list serves
STALL_MS = 20.0  # the reload target: no answer delayed longer than this


def say(text: str = "") -> None:
    print(text, flush=True)


# ---------------------------------------------------------------------------------------------------
# Names

_SYLLABLE_TEXT = (
    "ba bo ca co da do ga go ha ho ka ko la lo ma mo na no pa po ra ro sa so ta to va vo xa "
    "an en in on un ai ao au ay bet win vip top max pro hot fun star club king lucky spin slot "
    "bong cuoc keo nha cai game play gold xo so tai xiu ngoc long phat thanh hung viet nam "
    "sun moon sky net web app shop live tv hub zone land city box cloud data link mail"
)
SYLLABLES = tuple(_SYLLABLE_TEXT.split())
TLDS = (
    "com",
    "com",
    "com",
    "com",
    "net",
    "net",
    "org",
    "vn",
    "com.vn",
    "com.vn",
    "info",
    "xyz",
    "top",
    "io",
    "club",
    "biz",
    "asia",
    "online",
    "site",
)
SUBLABELS = (
    "www",
    "m",
    "api",
    "cdn",
    "img",
    "static",
    "app",
    "login",
    "media",
    "mobile",
    "en",
    "vi",
    "bet",
    "live",
    "play",
)


def _word(rng: random.Random) -> str:
    word = "".join(rng.choice(SYLLABLES) for _ in range(rng.choice((2, 2, 3, 3, 4))))
    r = rng.random()
    if r < 0.25:
        word += str(rng.randrange(1000))
    elif r < 0.35:
        word += "-" + rng.choice(SYLLABLES) + rng.choice(SYLLABLES)
    return word


def _domain(rng: random.Random) -> str:
    tld = rng.choice(TLDS)
    name = _word(rng) + "." + tld
    labels = name.count(".") + 1
    want = rng.choice((2, 2, 2, 3, 3, 4))
    while labels < want:
        name = (rng.choice(SUBLABELS) if rng.random() < 0.6 else _word(rng)) + "." + name
        labels += 1
    return name


def listed(name: str, blocked: set[str]) -> bool:
    """Is the name or one of its parents in the set (what all three servers block)?"""
    parts = name.split(".")
    return any(".".join(parts[i:]) in blocked for i in range(len(parts) - 1))


def shipped_names() -> set[str]:
    out = set()
    for path in (REPO / "blocklists").glob("*.txt"):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            line = line.split("#", 1)[0].strip().lower()
            if line:
                out.add(line.split()[-1].lstrip("*.").rstrip("."))
    return out


@dataclass
class Workload:
    blocked: list[str]
    allowed: list[str]  # the small set the hit/block mix draws its allowed names from
    mix: list[tuple[str, int]]
    miss: list[tuple[str, int]]
    reload_name: str


def make_workload(n: int, seed: int, mix_lines: int, miss_lines: int) -> Workload:
    rng = random.Random(seed)
    blocked_set: set[str] = set()
    blocked: list[str] = []
    while len(blocked) < n:
        name = _domain(rng)
        if name not in blocked_set:
            blocked_set.add(name)
            blocked.append(name)
    avoid = shipped_names()

    def allowed_name(make) -> str:
        while True:
            name = make()
            if not listed(name, blocked_set) and not listed(name, avoid) and name not in avoid:
                return name

    allowed_set: set[str] = set()
    while len(allowed_set) < 1000:
        allowed_set.add(allowed_name(lambda: _domain(rng)))
    allowed = sorted(allowed_set)
    rng.shuffle(allowed)

    def qtype() -> int:
        return AAAA if rng.random() < 0.15 else A

    mix = []
    for _ in range(mix_lines):
        if rng.random() < 0.30:
            name = rng.choice(blocked)
            if rng.random() < 0.5:
                name = rng.choice(SUBLABELS) + "." + name
        else:
            name = rng.choice(allowed)
        mix.append((name, qtype()))
    miss = []
    for i in range(miss_lines):
        stem = f"{_word(rng)}{i:x}"
        miss.append((allowed_name(lambda s=stem: f"{s}.{rng.choice(TLDS)}"), qtype()))
    reload_name = allowed_name(lambda: f"reload-{rng.randrange(16**8):08x}-check.com")
    return Workload(blocked, allowed, mix, miss, reload_name)


def write_lines(path: Path, lines) -> None:
    with path.open("w", encoding="ascii") as fh:
        fh.write("\n".join(lines))
        fh.write("\n")


def write_perf_file(path: Path, queries) -> None:
    write_lines(path, (f"{name} {'AAAA' if t == AAAA else 'A'}" for name, t in queries))


# ---------------------------------------------------------------------------------------------------
# DNS wire (just enough for readiness, answer checks and the reload probe)


def qname_wire(name: str) -> bytes:
    out = bytearray()
    for label in name.rstrip(".").split("."):
        out.append(len(label))
        out += label.encode("ascii")
    return bytes(out) + b"\0"


def query_body(name: str, qtype: int) -> bytes:
    """A query without its 2-byte ID (RD set, one question, no EDNS)."""
    return b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + qname_wire(name) + struct.pack(">HH", qtype, 1)


def _skip_name(data: bytes, off: int) -> int:
    while True:
        n = data[off]
        if n == 0:
            return off + 1
        if n & 0xC0 == 0xC0:
            return off + 2
        off += n + 1


def parse_answer(data: bytes) -> tuple[int, int, list[tuple[int, bytes]]]:
    qid, flags, qd, an = struct.unpack_from(">HHHH", data)
    off = 12
    for _ in range(qd):
        off = _skip_name(data, off) + 4
    records = []
    for _ in range(an):
        off = _skip_name(data, off)
        rtype, _cls, _ttl, rdlen = struct.unpack_from(">HHIH", data, off)
        off += 10
        records.append((rtype, data[off : off + rdlen]))
        off += rdlen
    return qid, flags & 0xF, records


def ask(port: int, name: str, qtype: int = A, timeout: float = 0.5):
    """One UDP query; (rcode, records) or None on timeout."""
    qid = secrets.randbelow(65536)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(qid.to_bytes(2, "big") + query_body(name, qtype), (HOST, port))
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                data = s.recv(4096)
                try:
                    rid, rcode, records = parse_answer(data)
                except (struct.error, IndexError):
                    continue
                if rid == qid:
                    return rcode, records
        except OSError:
            return None
    return None


def check_answers(port: int, work: Workload) -> str:
    """Same answers everywhere, or the comparison means nothing."""
    problems = []
    allowed, blocked = work.allowed[0], work.blocked[len(work.blocked) // 2]
    cases = (
        (allowed, A, NOERROR, socket.inet_pton(socket.AF_INET, ANSWER_V4)),
        (allowed, AAAA, NOERROR, socket.inet_pton(socket.AF_INET6, ANSWER_V6)),
        (blocked, A, NXDOMAIN, None),
        ("www." + blocked, A, NXDOMAIN, None),
    )
    for name, qtype, rcode, rdata in cases:
        got = ask(port, name, qtype, timeout=2.0)
        if got is None:
            problems.append(f"{name} {qtype}: no answer")
            continue
        if got[0] != rcode:
            problems.append(f"{name} {qtype}: {RCODE_NAMES.get(got[0], got[0])}, expected {RCODE_NAMES[rcode]}")
        elif rdata is not None and rdata not in [r for t, r in got[1] if t == qtype]:
            problems.append(f"{name} {qtype}: answer {got[1]!r} lacks the upstream's address")
    return "ok" if not problems else "; ".join(problems)


# ---------------------------------------------------------------------------------------------------
# Processes


def free_port() -> int:
    rng = random.SystemRandom()
    for _ in range(500):
        port = rng.randrange(15000, 30000)  # below the ephemeral range the clients' sockets use
        try:
            with (
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u,
                socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t,
            ):
                u.bind((HOST, port))
                t.bind((HOST, port))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port on 127.0.0.1")


def _proc_table() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def process_tree(pid: int) -> list[int]:
    table = _proc_table()
    out, stack = [], [pid]
    while stack:
        p = stack.pop()
        out.append(p)
        stack.extend(table.get(p, ()))
    return out


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            # utime + stime (all threads) + cutime + cstime: what the process's reaped children used is
            # its cost too (a server that forks a helper per query must not look cheap for it).
            total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    return total / CLK_TCK


def memory_mb(pids: list[int]) -> tuple[float, float]:
    """(RSS summed over the processes, PSS summed: shared pages counted once)."""
    rss = pss = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1])
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1])
    return rss / 1024, pss / 1024


class LoadMeter:
    """CPU used by processes that are not ours (other people's builds and tests share the machine):
    total busy time from /proc/stat minus this process, its reaped children and its live descendants."""

    def __init__(self) -> None:
        self.t0, self.busy0, self.ours0 = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float]:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fields[:7])
        busy = (user + nice + system + irq + softirq) / CLK_TCK
        t = os.times()
        ours = t.user + t.system + t.children_user + t.children_system
        ours += cpu_seconds(process_tree(os.getpid())[1:])
        return time.monotonic(), busy, ours

    def cores(self) -> float:
        """Other processes' CPU since construction, in cores (1.0 = one core busy all the time)."""
        t, busy, ours = self._sample()
        return max(0.0, (busy - self.busy0) - (ours - self.ours0)) / max(1e-3, t - self.t0)


QUIET_CORES = 0.10  # other processes may use this much of a core before figures count as disturbed
_quiet_budget = [120.0]  # seconds of waiting for a quiet machine, over the whole run


def wait_quiet(label: str) -> float:
    """Wait (bounded) until other processes leave the cores alone; returns the last measured load."""
    start = time.monotonic()
    while True:
        meter = LoadMeter()
        time.sleep(1.0)  # the measurement window, not a readiness wait
        load = meter.cores()
        if load <= QUIET_CORES or _quiet_budget[0] <= 0:
            break
        waited = time.monotonic() - start
        if waited < 1.5:
            say(
                f"  [{label}] other processes use {load:.0%} of a core: waiting for a quiet machine "
                f"(up to {_quiet_budget[0]:.0f} s more over the run)"
            )
        _quiet_budget[0] -= 1.0
    if load > QUIET_CORES:
        say(f"  [{label}] machine still busy ({load:.0%} of a core used by other processes): measuring anyway")
    return load


class Server:
    """One process we started (pinned with taskset), its log, and how to tell it is ready."""

    def __init__(
        self,
        label: str,
        argv: list[str],
        log: Path,
        cpus: str = SERVER_CPU,
        ready_lines: int = 0,
        env: dict | None = None,
    ):
        self.label, self.argv, self.log, self.cpus = label, argv, log, cpus
        self.ready_lines = ready_lines  # >0: ready after this many "school-gateway ready" stdout lines
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.started = 0.0
        self.ready_at: float | None = None
        self.stdout: list[str] = []
        self._ready = threading.Event()
        self._log_fh = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def start(self) -> None:
        self._log_fh = self.log.open("ab")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            ["taskset", "-c", self.cpus, *self.argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if self.ready_lines else self._log_fh,
            stderr=self._log_fh,
            env=self.env,
            start_new_session=True,
        )
        if self.ready_lines:
            threading.Thread(target=self._read_stdout, daemon=True).start()

    def _read_stdout(self) -> None:
        seen = 0
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.stdout.append(line)
            # Workers share stdout: their ready lines can land on one line, so count occurrences.
            if "school-gateway ready" in line:
                seen += line.count("school-gateway ready")
                if seen >= self.ready_lines and self.ready_at is None:
                    self.ready_at = time.perf_counter()
                    self._ready.set()
        self._ready.set()  # EOF: the process ended; wait_ready sees it

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready_line(self, timeout: float) -> float:
        if not self._ready.wait(timeout) or self.ready_at is None:
            raise RuntimeError(
                f"{self.label}: not ready after {timeout:.0f} s"
                if self.alive()
                else f"{self.label}: exited with code {self.proc.poll()} before ready"
            )
        return self.ready_at - self.started

    def wait_ready_query(self, port: int, name: str, timeout: float) -> float:
        """Ready = the list's last name is answered NXDOMAIN (the whole list is loaded)."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.label}: exited with code {self.proc.poll()} before ready")
            got = ask(port, name, A, timeout=0.02)
            if got is not None and got[0] == NXDOMAIN:
                return time.perf_counter() - self.started
            if got is not None:
                time.sleep(0.01)  # answered but not loaded yet: ask again shortly
        raise RuntimeError(f"{self.label}: list not answering after {timeout:.0f} s")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: only what we started
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        if self.proc.stdout:
            self.proc.stdout.close()
        if self._log_fh:
            self._log_fh.close()

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join((self.stdout + text)[-lines:])


# ---------------------------------------------------------------------------------------------------
# Load generators

DNSPERF_FIELDS = {
    "sent": r"Queries sent:\s+(\d+)",
    "completed": r"Queries completed:\s+(\d+)",
    "lost": r"Queries lost:\s+(\d+)",
    "qps": r"Queries per second:\s+([\d.]+)",
    "avg_latency": r"Average Latency \(s\):\s+([\d.]+)",
    "run_time": r"Run time \(s\):\s+([\d.]+)",
}


def dnsperf_argv(
    port: int,
    path: Path,
    seconds: float,
    *,
    once: bool = False,
    clients: int = 4,
    outstanding: int = 100,
    rate: float | None = None,
    verbose: bool = False,
) -> list[str]:
    argv = [
        "taskset",
        "-c",
        CLIENT_CPU,
        "dnsperf",
        "-s",
        HOST,
        "-p",
        str(port),
        "-d",
        str(path),
        "-l",
        f"{seconds:g}",
        "-c",
        str(clients),
        "-q",
        str(outstanding),
        "-t",
        "2",
    ]
    if once:
        argv += ["-n", "1"]
    if rate:
        argv += ["-Q", f"{rate:.0f}"]
    if verbose:
        argv.append("-v")  # a line per answer: "> RCODE name type latency"
    return argv


def parse_dnsperf(stdout: str, stderr: str = "", returncode: int = 0) -> dict:
    result: dict = {}
    for key, pattern in DNSPERF_FIELDS.items():
        m = re.search(pattern, stdout)
        if m:
            result[key] = float(m.group(1))
    codes = re.search(r"Response codes:\s+(.*)", stdout)
    result["codes"] = codes.group(1).strip() if codes else ""
    if "qps" not in result:
        why = stderr.strip() or stdout.strip()[-2000:]
        raise RuntimeError(f"dnsperf failed (exit {returncode}): {why}")
    return result


def dnsperf(
    port: int, path: Path, seconds: float, *, once: bool = False, clients: int = 4, outstanding: int = 100
) -> dict:
    argv = dnsperf_argv(port, path, seconds, once=once, clients=clients, outstanding=outstanding)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    return parse_dnsperf(out.stdout, out.stderr, out.returncode)


def answer_lines(stdout: str) -> list[tuple[str, float]]:
    """(rcode, latency in s) of each answer `dnsperf -v` printed, in the order they came back."""
    out = []
    for line in stdout.splitlines():
        if line.startswith("> "):
            parts = line.split()
            with contextlib.suppress(ValueError, IndexError):
                out.append((parts[1], float(parts[-1])))
    return out


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]


class _Probe(asyncio.DatagramProtocol):
    def __init__(self, done: asyncio.Future):
        self.done = done

    def datagram_received(self, data: bytes, addr) -> None:
        if len(data) >= 12 and data[3] & 0xF == NXDOMAIN and not self.done.done():
            self.done.set_result(time.perf_counter())


def reload_action(port: int, new_name: str, trigger, before: float = 1.0, limit: float = 60.0):
    """A coroutine factory: wait `before` s after `t0`, `trigger()` the reload, then ask for the newly
    listed name every 20 ms until an answer says NXDOMAIN (the new list is serving). Probes never time
    out, so a server that queues for seconds is still heard."""

    async def run(t0: float) -> dict:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, t0 + before - time.perf_counter()))
        t_signal = time.perf_counter()
        await trigger()
        done = loop.create_future()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Probe(done), remote_addr=(HOST, port))
        body = query_body(new_name, A)
        try:
            qid = 0
            while time.perf_counter() - t_signal < limit:
                qid = (qid + 1) & 0xFFFF
                transport.sendto(qid.to_bytes(2, "big") + body)
                with contextlib.suppress(TimeoutError):
                    return {"seconds": await asyncio.wait_for(asyncio.shield(done), 0.02) - t_signal}
        finally:
            transport.close()
        return {"error": f"new list not serving {limit:.0f} s after the reload"}

    return run


def run_async(coro):
    try:
        import uvloop  # the same event loop the gateway uses, where installed
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


# ---------------------------------------------------------------------------------------------------
# The servers


@dataclass
class Env:
    tmp: Path
    work: Workload
    up_port: int
    seconds: float
    gw_list: Path = None
    dnsmasq_list: Path = None
    unbound_list: Path = None
    dept: Path = None
    school: Path = None
    cache_dir: Path = None
    mix_file: Path = None
    miss_files: list = None
    warm_file: Path = None


def write_inputs(env: Env) -> None:
    tmp, work = env.tmp, env.work
    # Gateway: a copy of the shipped Department layer, the generated list added to `gambling`
    # (mandatory: blocked for every band), and a school file putting 127.0.0.0/8 in band thcs.
    shutil.copytree(REPO / "blocklists", tmp / "blocklists")
    shutil.copytree(REPO / "policies" / "department", tmp / "policies" / "department")
    env.dept = tmp / "policies" / "department"
    cats = env.dept / "categories.yaml"
    text = cats.read_text(encoding="utf-8")
    if "lists: [gambling.txt]" not in text:
        raise RuntimeError("policies/department/categories.yaml: no 'lists: [gambling.txt]' line to extend")
    cats.write_text(
        text.replace("lists: [gambling.txt]", "lists: [gambling.txt, bench-generated.txt]"), encoding="utf-8"
    )
    env.gw_list = tmp / "blocklists" / "bench-generated.txt"
    write_lines(env.gw_list, ["# Generated by bench/bench_dns.py: synthetic names, one a line", *work.blocked])
    env.school = tmp / "policies" / "school.yaml"
    env.school.write_text(
        "school: {id: BENCH, name: Bench, ward: Bench}\ngroups:\n  bench: {band: thcs, clients: [127.0.0.0/8]}\n",
        encoding="utf-8",
    )
    env.cache_dir = tmp / "gateway-cache"
    env.cache_dir.mkdir()
    # dnsmasq: `server=/name/` (no address) = `local=/name/`: NXDOMAIN for the name and its subdomains,
    # like `address=/name/`, but from a --servers-file, which SIGHUP re-reads (conf-file lines it does not).
    env.dnsmasq_list = tmp / "dnsmasq-blocklist.conf"
    write_lines(env.dnsmasq_list, (f"server=/{d}/" for d in work.blocked))
    env.unbound_list = tmp / "unbound-blocklist.conf"
    write_lines(env.unbound_list, (f'local-zone: "{d}." always_nxdomain' for d in work.blocked))
    env.mix_file = tmp / "queries-mix.txt"
    write_perf_file(env.mix_file, work.mix)
    # Two halves of unique names: a repeated miss run must not hit what the first one cached.
    half = len(work.miss) // 2
    env.miss_files = [tmp / "queries-miss-1.txt", tmp / "queries-miss-2.txt"]
    write_perf_file(env.miss_files[0], work.miss[:half])
    write_perf_file(env.miss_files[1], work.miss[half:])
    env.warm_file = tmp / "queries-warm.txt"
    write_perf_file(env.warm_file, [(n, t) for n in work.allowed for t in (A, AAAA)])


def dnsmasq_argv(port: int, pidfile: Path, extra: list[str]) -> list[str]:
    return [
        "dnsmasq",
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--no-poll",
        f"--listen-address={HOST}",
        "--bind-interfaces",
        f"--port={port}",
        "--log-facility=-",
        "--user=root",
        "--group=root",
        f"--pid-file={pidfile}",
        *extra,
    ]


def start_upstream(env: Env) -> Server:
    argv = dnsmasq_argv(
        env.up_port,
        env.tmp / "upstream.pid",
        [
            f"--address=/#/{ANSWER_V4}",
            f"--address=/#/{ANSWER_V6}",
            "--cache-size=0",
            "--local-ttl=3600",
            "--dns-forward-max=10000",
        ],
    )
    server = Server("upstream", argv, env.tmp / "upstream.log", cpus=CLIENT_CPU)
    server.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(f"upstream dnsmasq exited: {server.log_tail()}")
        got = ask(env.up_port, "ready.check.example", A, timeout=0.05)
        if got is not None and got[0] == NOERROR:
            return server
    raise RuntimeError("upstream dnsmasq not answering after 20 s")


def gateway_server(env: Env, label: str, port: int, workers: int, cpus: str) -> Server:
    conf = env.tmp / f"gateway-{workers}w.yaml"
    conf.write_text(
        "dns:\n"
        f'  listen: ["{HOST}:{port}"]\n'
        f"  workers: {workers}\n"
        f'  upstreams: ["udp://{HOST}:{env.up_port}"]\n'
        "  rate_limit: {qps: 0}  # one benchmark client: no per-client limit\n"
        f'metrics: {{listen: "{HOST}:{free_port()}"}}  # a free port: others may run gateways here\n'
        "policy:\n"
        f"  department: {env.dept}\n"
        f"  school: {env.school}\n"
        f"  cache_dir: {env.cache_dir}\n"
        "  watch: false  # the reload measured is the SIGHUP one, not a second one from the file watcher\n",
        encoding="utf-8",
    )
    child_env = dict(os.environ)
    child_env["SCHOOL_GATEWAY_RESOLV_CONF"] = "/dev/null"  # never fall back to the machine's resolver
    child_env["PYTHONUNBUFFERED"] = "1"
    # An installed gateway starts from byte-compiled modules (pip compiles them on install, and an
    # editable install writes them on its first start). A shell that forbids writing them would make
    # every start recompile ~60 modules and measure the compiler, not the gateway.
    child_env.pop("PYTHONDONTWRITEBYTECODE", None)
    argv = [str(PYTHON), "-m", "gateway.cli", "run", "--config", str(conf), "--lang", "en"]
    return Server(label, argv, env.tmp / f"{label}.log", cpus=cpus, ready_lines=workers, env=child_env)


def dnsmasq_server(env: Env, port: int) -> Server:
    argv = dnsmasq_argv(
        port,
        env.tmp / "dnsmasq.pid",
        [
            f"--server={HOST}#{env.up_port}",
            f"--servers-file={env.dnsmasq_list}",
            "--cache-size=10000",
            "--dns-forward-max=1000",
        ],
    )
    return Server("dnsmasq", argv, env.tmp / "dnsmasq.log")


def unbound_server(env: Env, port: int, control_port: int) -> tuple[Server, Path]:
    conf = env.tmp / "unbound.conf"
    conf.write_text(
        f"""server:
    verbosity: 0
    num-threads: 1
    interface: {HOST}@{port}
    port: {port}
    outgoing-interface: {HOST}
    do-ip4: yes
    do-ip6: no
    do-udp: yes
    do-tcp: yes
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: no
    chroot: ""
    username: ""
    directory: "{env.tmp}"
    logfile: ""
    use-syslog: no
    pidfile: "{env.tmp / "unbound.pid"}"
    module-config: "iterator"
    include: "{env.unbound_list}"
remote-control:
    control-enable: yes
    control-use-cert: no
    control-interface: {HOST}
    control-port: {control_port}
forward-zone:
    name: "."
    forward-addr: {HOST}@{env.up_port}
""",
        encoding="utf-8",
    )
    return Server("unbound", ["unbound", "-d", "-c", str(conf)], env.tmp / "unbound.log"), conf


# ---------------------------------------------------------------------------------------------------
# Measurements


def warm(port: int, env: Env, passes: int = 1) -> None:
    """Put the allowed names in the server's cache (every worker's: several sockets, several passes)."""
    for _ in range(passes):
        dnsperf(port, env.warm_file, 30, once=True, clients=8, outstanding=20)


def _background(r: dict, kind: str, meter: LoadMeter) -> None:
    load = meter.cores()
    r.setdefault("bg", {})[kind] = load
    if load > QUIET_CORES:
        say(f"    ! other processes used {load:.0%} of a core during this run: figure disturbed")


_retry_budget = [150.0]  # seconds of repeated runs (disturbed by other processes) over the whole run


def _retry(label: str, kind: str, load: float, cost: float) -> bool:
    """Repeat a disturbed run once, after waiting for quiet, while the run-wide budget lasts."""
    if load <= QUIET_CORES or _retry_budget[0] < cost:
        return False
    _retry_budget[0] -= cost
    say(f"    repeating the {kind} run ({load:.0%} of a core was used by other processes)")
    wait_quiet(label)
    return True


def _dnsperf_run(server: Server, port: int, kind: str, path: Path, seconds: float, once: bool):
    pids = process_tree(server.pid)
    meter = LoadMeter()
    before = cpu_seconds(pids)
    out = dnsperf(port, path, seconds, once=once)
    used = cpu_seconds(pids) - before
    load = meter.cores()
    values = {
        f"{kind}_qps": out["qps"],
        f"{kind}_lost": out.get("lost", 0),
        f"{kind}_sent": out.get("sent", 0),
        f"{kind}_avg_ms": out.get("avg_latency", 0) * 1e3,
        f"{kind}_cpu_us": used / out["completed"] * 1e6 if out.get("completed") else None,
    }
    say(
        f"  {kind:4}: {out['qps']:>9,.0f} q/s, lost {out.get('lost', 0):.0f}/{out.get('sent', 0):.0f}, "
        f"avg {values[f'{kind}_avg_ms']:.2f} ms, server CPU {used:.2f} s = "
        f"{_fmt(values[f'{kind}_cpu_us'], '{:.1f}')} µs/query; {out['codes']}"
        + (f"  [other processes: {load:.0%} of a core]" if load > QUIET_CORES else "")
    )
    if not server.alive():
        raise RuntimeError(f"{server.label} died during the {kind} run:\n{server.log_tail()}")
    return values, load


def _latency_run(port: int, env: Env):
    """dnsperf at a fixed LATENCY_QPS with a line per answer: p50/p99/max of every answer after the
    first second (warm-up). A C client, so its own pauses do not end up in the server's tail."""
    meter = LoadMeter()
    seconds = min(5.0, env.seconds)
    argv = dnsperf_argv(port, env.mix_file, seconds + 1, rate=LATENCY_QPS, verbose=True)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    stats = parse_dnsperf(out.stdout, out.stderr, out.returncode)
    lat = [t for _, t in answer_lines(out.stdout)][LATENCY_QPS:]
    load = meter.cores()
    values = {"lat_lost": stats.get("lost", 0)}
    if lat:
        values.update(lat_p50=percentile(lat, 0.5) * 1e3, lat_p99=percentile(lat, 0.99) * 1e3, lat_max=max(lat) * 1e3)
    say(
        f"  {LATENCY_QPS} q/s: sent {stats.get('sent', 0):.0f}, lost {values['lat_lost']:.0f}, "
        f"p50 {_fmt(values.get('lat_p50'), '{:.3f}')} ms, p99 {_fmt(values.get('lat_p99'), '{:.3f}')} ms, "
        f"max {_fmt(values.get('lat_max'), '{:.2f}')} ms"
        + (f"  [other processes: {load:.0%} of a core]" if load > QUIET_CORES else "")
    )
    return values, load


def _keep(r: dict, kind: str, attempts: list) -> None:
    """Keep the least disturbed attempt; flag it if even that one was disturbed."""
    values, load = min(attempts, key=lambda a: a[1])
    r.update(values)
    r.setdefault("bg", {})[kind] = load
    if len(attempts) > 1:
        say(f"    kept the {kind} run with {load:.0%} of a core used by other processes")
    if load > QUIET_CORES:
        say(f"    ! {kind}: other processes used {load:.0%} of a core: figure disturbed")


def measure(col: str, server: Server, port: int, env: Env, results: dict) -> None:
    r = results[col]
    label = TITLES[col]
    r["answers"] = check_answers(port, env.work)
    say(f"  answers: {r['answers']}")
    passes = 3 if col == "gateway2" else 1
    warm(port, env, passes)
    dnsperf(port, env.mix_file, 1)  # settle
    wait_quiet(label)
    for kind, paths, once in (("mix", [env.mix_file, env.mix_file], False), ("miss", env.miss_files, True)):
        attempts = [_dnsperf_run(server, port, kind, paths[0], env.seconds, once)]
        if _retry(label, kind, attempts[0][1], env.seconds + 2):
            attempts.append(_dnsperf_run(server, port, kind, paths[1], env.seconds, once))  # unseen names
        _keep(r, kind, attempts)
    warm(port, env, passes)  # the miss run may have evicted the allowed set
    attempts = [_latency_run(port, env)]
    if _retry(label, "latency", attempts[0][1], min(5.0, env.seconds) + 3):
        attempts.append(_latency_run(port, env))
    _keep(r, "latency", attempts)
    pids = process_tree(server.pid)
    r["rss"], r["pss"] = memory_mb(pids)
    each = " + ".join(f"{memory_mb([pid])[0]:.0f}" for pid in pids)
    say(f"  memory: RSS {r['rss']:.0f} MB ({each}), PSS {r['pss']:.0f} MB over {len(pids)} process(es)")


def measure_reload(
    col: str, server: Server, port: int, env: Env, results: dict, rate: float, list_file: Path, line: str, trigger
) -> None:
    """dnsperf at `rate` with a line per answer; after 1 s append `line` to the list and `trigger` the
    reload, probe until the new list serves, keep the load on for RELOAD_TAIL s, stop dnsperf (SIGINT:
    it prints its statistics; queries still in flight count as interrupted, not lost). A stall shows as
    the latency of the answers queued behind it; dnsperf gives up on a query after 2 s (lost)."""
    r = results[col]
    meter = LoadMeter()
    action = reload_action(port, env.work.reload_name, _appending(list_file, line, trigger))
    out_path = env.tmp / f"reload-{col}.txt"
    argv = dnsperf_argv(port, env.mix_file, 300, rate=rate, outstanding=500, verbose=True)
    with out_path.open("w", encoding="utf-8") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        try:
            res = run_async(action(time.perf_counter()))
            time.sleep(RELOAD_TAIL)
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    text = out_path.read_text(encoding="utf-8", errors="replace")
    stats = parse_dnsperf(text, "", proc.returncode)
    answers = answer_lines(text)
    latencies = [t for _, t in answers]
    r["reload_sent"], r["reload_lost"] = stats.get("sent", 0), stats.get("lost", 0)
    r["reload_max"] = max(latencies) * 1e3 if latencies else None
    r["reload_slow"] = sum(1 for t in latencies if t * 1e3 > STALL_MS)
    r["reload_errors"] = sum(1 for code, _ in answers if code not in ("NOERROR", "NXDOMAIN"))
    r["reload_seconds"] = res.get("seconds")
    r["reload_rate"] = stats.get("qps")
    if "error" in res:
        r["reload_note"] = res["error"]
    say(
        f"  reload at {_fmt(r['reload_rate'], '{:,.0f}')} q/s: sent {r['reload_sent']:.0f}, "
        f"lost {r['reload_lost']:.0f}, errors {r['reload_errors']}, max latency "
        f"{_fmt(r['reload_max'], '{:.1f}')} ms, {r['reload_slow']} answers over {STALL_MS:.0f} ms, "
        f"new list serving after {_fmt(r['reload_seconds'], '{:.2f}')} s"
        + (f" ({r['reload_note']})" if "reload_note" in r else "")
    )
    _background(r, "reload", meter)
    if not server.alive():
        raise RuntimeError(f"{server.label} died during the reload:\n{server.log_tail()}")


def _appending(path: Path, line: str, trigger):
    async def run():
        with path.open("a", encoding="ascii") as fh:
            fh.write(line + "\n")
        await trigger()

    return run


def signal_trigger(server: Server):
    async def run():
        for pid in process_tree(server.pid)[:1]:
            os.kill(pid, signal.SIGHUP)

    return run


def unbound_control_trigger(conf: Path):
    async def run():
        proc = await asyncio.create_subprocess_exec(
            "taskset",
            "-c",
            CLIENT_CPU,
            "unbound-control",
            "-c",
            str(conf),
            "reload",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"unbound-control reload: {out.decode(errors='replace').strip()}")

    return run


# ---------------------------------------------------------------------------------------------------
# Report


def _fmt(value, spec: str) -> str:
    return "—" if value is None else spec.format(value)


ROWS = (
    ("answers check", "answers", "{}"),
    ("list load: start → ready, text list (s)", "load_s", "{:.2f}"),
    ("  start from compiled list (s)", "load_compiled_s", "{:.2f}"),
    ("hit/block mix: q/s (dnsperf, saturating)", "mix_qps", "{:,.0f}"),
    ("  lost / sent", "mix_lost_sent", "{}"),
    ("  avg latency at saturation (ms)", "mix_avg_ms", "{:.2f}"),
    ("  server CPU per query (µs)", "mix_cpu_us", "{:.1f}"),
    ("miss path: q/s (unique names, upstream)", "miss_qps", "{:,.0f}"),
    ("  lost / sent", "miss_lost_sent", "{}"),
    ("  server CPU per query (µs)", "miss_cpu_us", "{:.1f}"),
    (f"latency at {LATENCY_QPS} q/s: p50 (ms)", "lat_p50", "{:.3f}"),
    ("  p99 (ms)", "lat_p99", "{:.3f}"),
    ("  max (ms)", "lat_max", "{:.2f}"),
    ("  lost", "lat_lost", "{}"),
    ("RSS after the runs (MB, summed)", "rss", "{:.0f}"),
    ("  PSS (MB, shared pages once)", "pss", "{:.0f}"),
    ("  RSS after load (MB)", "rss_loaded", "{:.0f}"),
    ("reload under load: rate (q/s)", "reload_rate", "{:,.0f}"),
    ("  lost / sent", "reload_lost_sent", "{}"),
    ("  SERVFAIL/other errors", "reload_errors", "{}"),
    ("  max latency (ms)", "reload_max", "{:.1f}"),
    (f"  answers over {STALL_MS:.0f} ms", "reload_slow", "{}"),
    ("  signal → new list serving (s)", "reload_seconds", "{:.2f}"),
    ("other processes' CPU, worst run (% core)", "bg_max", "{:.0%}"),
)
WIDTH = 44


def _num(d: dict, key: str):
    v = d.get(key)
    return v if isinstance(v, float | int) and not isinstance(v, bool) else None


def _both(a, b) -> bool:
    return a is not None and b is not None


def print_report(results: dict, info: list[str]) -> None:
    for r in results.values():
        for kind in ("mix", "miss", "reload"):
            if f"{kind}_lost" in r:
                r[f"{kind}_lost_sent"] = f"{r[f'{kind}_lost']:.0f} / {r[f'{kind}_sent']:.0f}"
        if r.get("bg"):
            r["bg_max"] = max(r["bg"].values())
    say()
    say("=" * 100)
    say(f"DNS benchmark — {dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}")
    for line in info:
        say("  " + line)
    say("=" * 100)
    say(f"{'metric':{WIDTH}}" + "".join(f"{TITLES[c]:>14}" for c in COLUMNS))
    for title, key, spec in ROWS:
        cells = []
        for c in COLUMNS:
            v = results.get(c, {}).get(key)
            text = _fmt(v, spec) if not isinstance(v, str) else v
            if key == "answers" and isinstance(v, str) and v != "ok":
                text = "WRONG"
            cells.append(f"{text:>14}")
        say(f"{title:{WIDTH}}" + "".join(cells))
    for c in COLUMNS:
        a = results.get(c, {}).get("answers")
        if isinstance(a, str) and a != "ok":
            say(f"  {TITLES[c]} answers: {a}")
        for note in results.get(c, {}).get("notes", []):
            say(f"  {TITLES[c]}: {note}")

    g, u, m = results.get("gateway1", {}), results.get("unbound", {}), results.get("dnsmasq", {})
    say()
    say(f"{'ratios: gateway(1 worker) / peer':{WIDTH}}{'/unbound':>14}{'/dnsmasq':>14}")
    for title, key, peer_key in (
        ("server CPU/query, hit/block (lower better)", "mix_cpu_us", "mix_cpu_us"),
        ("miss-path q/s (higher better)", "miss_qps", "miss_qps"),
        (f"p99 at {LATENCY_QPS} q/s (lower better)", "lat_p99", "lat_p99"),
        ("RSS (lower better)", "rss", "rss"),
        ("load time, text list (lower better)", "load_s", "load_s"),
        ("start from compiled / peer's load", "load_compiled_s", "load_s"),
    ):
        cells = []
        for peer in (u, m):
            a, b = _num(g, key), _num(peer, peer_key)
            cells.append(f"{a / b:.2f}×" if _both(a, b) and b else "—")
        say(f"{title:{WIDTH}}" + "".join(f"{c:>14}" for c in cells))

    f = results.get("floor", {})
    if f:

        def ratio(a, b) -> str:
            return f"{a / b:.2f}×" if _both(a, b) and b else "—"

        say(
            "CPython floor (bench/floor_server.py, no work): "
            f"CPU/query {ratio(_num(f, 'mix_cpu_us'), _num(u, 'mix_cpu_us'))} unbound's, "
            f"miss q/s {ratio(_num(f, 'miss_qps'), _num(u, 'miss_qps'))} unbound's, "
            f"p99 {ratio(_num(f, 'lat_p99'), _num(u, 'lat_p99'))} unbound's, "
            f"RSS {ratio(_num(f, 'rss'), _num(m, 'rss'))} dnsmasq's"
        )
        above = []
        for title, key in (("hit/block", "mix_cpu_us"), ("miss", "miss_cpu_us")):
            a, b = _num(g, key), _num(f, key)
            if _both(a, b):
                above.append(f"{title} {a - b:.1f} µs/query")
        if above:
            say("gateway's own work above that floor: " + ", ".join(above))
    say()
    checks = []

    def check(name: str, ok: bool | None, detail: str) -> None:
        checks.append(ok)
        say(f"{'PASS' if ok else 'FAIL' if ok is not None else 'N/A '}  {name}: {detail}")

    a, b = _num(g, "mix_cpu_us"), _num(u, "mix_cpu_us")
    check(
        "1 worker, hit/block CPU per query ≤ unbound's",
        a <= b if _both(a, b) else None,
        f"{_fmt(a, '{:.1f}')} µs vs {_fmt(b, '{:.1f}')} µs",
    )
    a, b = _num(g, "miss_qps"), _num(u, "miss_qps")
    check("miss-path q/s ≥ unbound's", a >= b if _both(a, b) else None, f"{_fmt(a, '{:,.0f}')} vs {_fmt(b, '{:,.0f}')}")
    a, b = _num(g, "lat_p99"), _num(u, "lat_p99")
    check(
        f"p99 at {LATENCY_QPS} q/s ≤ 1.5× unbound's",
        a <= 1.5 * b if _both(a, b) else None,
        f"{_fmt(a, '{:.3f}')} ms vs 1.5 × {_fmt(b, '{:.3f}')} ms",
    )
    a, b = _num(g, "rss"), _num(m, "rss")
    check(
        "RSS ≤ 1/4 of dnsmasq's",
        a <= b / 4 if _both(a, b) else None,
        f"{_fmt(a, '{:.0f}')} MB vs {_fmt(b, '{:.0f}')} MB / 4 = {_fmt(b / 4 if b else None, '{:.0f}')} MB",
    )
    a = _num(g, "load_compiled_s")
    check(
        "start from the compiled list ≤ 0.3 s",
        a <= 0.3 if a is not None else None,
        f"{_fmt(a, '{:.2f}')} s (process start to `school-gateway ready`, interpreter start included)",
    )
    lost, mx = _num(g, "reload_lost"), _num(g, "reload_max")
    errors = g.get("reload_errors")
    ok = None
    if _both(lost, mx):
        ok = lost == 0 and mx <= STALL_MS and not errors and "reload_note" not in g
    check(
        f"reload under load: zero lost, no stall > {STALL_MS:.0f} ms",
        ok,
        f"lost {_fmt(lost, '{:.0f}')}, errors {_fmt(errors, '{}')}, max latency {_fmt(mx, '{:.1f}')} ms "
        f"({g.get('reload_slow', '—')} answers over {STALL_MS:.0f} ms)"
        + (f"; {g['reload_note']}" if "reload_note" in g else ""),
    )
    g2 = results.get("gateway2", {})
    ok = None
    if "mix_lost" in g2:
        ok = (
            g2["mix_lost"] == 0
            and g2.get("miss_lost", 1) == 0
            and g2.get("lat_lost", 1) == 0
            and g2.get("answers") == "ok"
        )
    lost_text = (
        f"mix {g2.get('mix_lost_sent', '—')}, miss {g2.get('miss_lost_sent', '—')}, "
        f"{LATENCY_QPS} q/s {g2.get('lat_lost', '—')}"
    )
    check(
        "2 workers serve without loss",
        ok,
        f"combined {_fmt(_num(g2, 'mix_qps'), '{:,.0f}')} q/s hit/block, "
        f"{_fmt(_num(g2, 'miss_qps'), '{:,.0f}')} q/s miss; "
        f"lost/sent: {lost_text}",
    )
    say()
    say(
        f"{sum(1 for c in checks if c)} passed, {sum(1 for c in checks if c is False)} failed, "
        f"{sum(1 for c in checks if c is None)} not measured"
    )
    busy = [
        f"{TITLES[c]} {kind} {load:.0%}"
        for c in COLUMNS
        for kind, load in results.get(c, {}).get("bg", {}).items()
        if load > QUIET_CORES
    ]
    if busy:
        say(
            f"WARNING: other processes used more than {QUIET_CORES:.0%} of a core during: {', '.join(busy)}. "
            "Those figures are disturbed; rerun on an idle machine."
        )


# ---------------------------------------------------------------------------------------------------


def tool_versions() -> list[str]:
    out = []
    for argv, pattern in (
        (["dnsmasq", "--version"], r"version (\S+)"),
        (["unbound", "-V"], r"Version (\S+)"),
        (["dnsperf", "-h"], r"Version (\S+)"),
    ):
        try:
            text = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            m = re.search(pattern, text.stdout + text.stderr)
            out.append(f"{argv[0]} {m.group(1) if m else '?'}")
        except (OSError, subprocess.TimeoutExpired):
            out.append(f"{argv[0]} missing")
    return out


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def missing_tools(servers: set[str]) -> list[str]:
    need = {"taskset": "util-linux", "dnsperf": "dnsperf", "dnsmasq": "dnsmasq-base"}
    if "unbound" in servers:
        need.update({"unbound": "unbound", "unbound-control": "unbound"})
    return [f"{tool} (apt-get install -y {pkg})" for tool, pkg in need.items() if shutil.which(tool) is None]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--domains", type=int, help="listed domains (default 1,000,000; --quick 100,000)")
    p.add_argument("--seconds", type=float, help="length of each dnsperf run (default 10; --quick 3)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="smoke check: 100,000 domains, 3-second runs")
    p.add_argument(
        "--servers",
        default=",".join(SERVERS),
        help=f"comma-separated subset of {','.join(SERVERS)} (default all; floor = bench/floor_server.py)",
    )
    p.add_argument("--keep-temp", action="store_true", help="keep the temp dir (lists, configs, logs)")
    args = p.parse_args(argv)
    domains = args.domains or (100_000 if args.quick else 1_000_000)
    seconds = args.seconds or (3.0 if args.quick else 10.0)
    servers = {s.strip() for s in args.servers.split(",") if s.strip()}
    if servers - set(SERVERS):
        p.error(f"unknown server(s): {', '.join(sorted(servers - set(SERVERS)))}")

    missing = missing_tools(servers)
    _quiet_budget[0] = 60.0 if args.quick else 120.0
    _retry_budget[0] = 60.0 if args.quick else 150.0
    if missing:
        say("bench_dns: missing tools: " + "; ".join(missing))
        return 2
    cores = os.cpu_count() or 1
    global SERVER_CPU, CLIENT_CPU
    if cores < 2:
        SERVER_CPU = CLIENT_CPU = "0"
        say("bench_dns: warning: one core only: servers and clients share it, figures are not comparable")
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {int(CLIENT_CPU)})  # the reload probe is this process
    info = [
        f"machine: {cores} cores, {cpu_model()}, Linux {platform.release()}, Python {platform.python_version()}",
        "tools: " + ", ".join(tool_versions()),
        f"list: {domains:,} generated domains (seed {args.seed}); runs of {seconds:g} s; dnsperf -c 4 -q 100",
        f"pinning: servers on core {SERVER_CPU} (gateway 2 workers: cores 0-1), dnsperf, the reload probe "
        f"and the shared upstream on core {CLIENT_CPU}",
    ]
    inherited = sorted(k for k in os.environ if k.startswith("SCHOOL_GATEWAY_"))
    if inherited:
        pairs = ", ".join(f"{k}={os.environ[k]}" for k in inherited)
        info.append(f"environment passed to the gateway: {pairs}")
    for line in info:
        say(line)

    tmp = Path(tempfile.mkdtemp(prefix="bench-dns-"))
    started: list[Server] = []
    results: dict = {c: {} for c in COLUMNS}
    t_begin = time.perf_counter()
    try:
        t = time.perf_counter()
        mix_lines = 200_000
        miss_lines = int(min(1_200_000, max(100_000, seconds * 60_000)))
        work = make_workload(domains, args.seed, mix_lines, 2 * miss_lines)
        env = Env(tmp=tmp, work=work, up_port=free_port(), seconds=seconds)
        write_inputs(env)
        say(
            f"[inputs] {domains:,} listed, {len(work.mix):,} mix queries, "
            f"2 × {len(work.miss) // 2:,} unique miss queries "
            f"in {time.perf_counter() - t:.1f} s ({tmp})"
        )
        upstream = start_upstream(env)
        started.append(upstream)
        say(f"[upstream] dnsmasq on {HOST}:{env.up_port}, answers every name with {ANSWER_V4} / {ANSWER_V6}")

        reload_rate = None
        if "gateway" in servers:
            reload_rate = run_gateway(env, results, started)
        if reload_rate is None:
            reload_rate = 5000.0
        if "floor" in servers:
            run_floor(env, results, started)
        if "dnsmasq" in servers:
            run_dnsmasq(env, results, started, reload_rate)
        if "unbound" in servers:
            run_unbound(env, results, started, reload_rate)
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    finally:
        for server in reversed(started):
            server.stop()
        if args.keep_temp:
            say(f"temp dir kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    info.append(f"whole run: {time.perf_counter() - t_begin:.0f} s")
    print_report(results, info)
    return 0


def _start(server: Server, started: list[Server]) -> None:
    started.append(server)
    server.start()


def _finish(server: Server, started: list[Server]) -> None:
    server.stop()
    started.remove(server)


def _gateway_log_notes(server: Server) -> list[str]:
    notes = []
    try:
        lines = server.log.read_text(errors="replace").splitlines()
    except OSError:
        return notes
    for line in lines:
        if any(w in line for w in ("Traceback", "ERROR", "CRITICAL", "WARNING", "Error")):
            notes.append("log: " + line.strip()[:200])
    counts = Counter(notes)
    return [f"{n} (×{c})" if c > 1 else n for n, c in list(counts.items())[:8]]


def run_gateway(env: Env, results: dict, started: list[Server]) -> float | None:
    r1 = results["gateway1"]
    port = free_port()
    try:
        cold = gateway_server(env, "gateway-cold", port, 1, SERVER_CPU)
        say(f"[gateway 1 worker] {HOST}:{port}: first start, compiling the text list ...")
        _start(cold, started)
        r1["load_s"] = cold.wait_ready_line(120)
        say(f"  ready after {r1['load_s']:.2f} s: {cold.stdout[-1] if cold.stdout else ''}")
        r1["notes"] = _gateway_log_notes(cold)
        _finish(cold, started)
        gw = gateway_server(env, "gateway1", port, 1, SERVER_CPU)
        _start(gw, started)
        r1["load_compiled_s"] = gw.wait_ready_line(120)
        r1["rss_loaded"] = memory_mb(process_tree(gw.pid))[0]
        say(f"  second start (compiled list in cache_dir): ready after {r1['load_compiled_s']:.2f} s")
        t = time.perf_counter()
        subprocess.run([str(PYTHON), "-c", "import gateway.app, gateway.cli"], cwd=REPO, check=False, timeout=60)
        say(f"  (for scale: `python -c 'import gateway.app, gateway.cli'` takes {time.perf_counter() - t:.2f} s)")
        measure("gateway1", gw, port, env, results)
        rate = r1["mix_qps"] / 2
        measure_reload(
            "gateway1",
            gw,
            port,
            env,
            results,
            rate,
            env.gw_list,
            env.work.reload_name,
            signal_trigger(gw),
        )
        with contextlib.suppress(OSError):
            reloaded = [ln for ln in gw.log.read_text(errors="replace").splitlines() if "reloaded" in ln]
            if reloaded:
                say("  gateway log: " + reloaded[-1].strip())
        r1["notes"] = list(dict.fromkeys(r1["notes"] + _gateway_log_notes(gw)))
        _finish(gw, started)
    except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
        say(f"  gateway (1 worker) failed: {exc}")
        for s in [s for s in started if s.label.startswith("gateway")]:
            say("  --- its output ---\n" + s.log_tail(25))
            r1.setdefault("notes", []).extend(_gateway_log_notes(s))
            _finish(s, started)
        return None
    r2 = results["gateway2"]
    try:
        port = free_port()
        gw2 = gateway_server(env, "gateway2", port, 2, f"{SERVER_CPU},{CLIENT_CPU}")
        say(f"[gateway 2 workers] {HOST}:{port} on cores {SERVER_CPU},{CLIENT_CPU} (SO_REUSEPORT)")
        _start(gw2, started)
        r2["load_compiled_s"] = gw2.wait_ready_line(120)
        r2["rss_loaded"] = memory_mb(process_tree(gw2.pid))[0]
        say(f"  ready after {r2['load_compiled_s']:.2f} s")
        measure("gateway2", gw2, port, env, results)
        r2["notes"] = _gateway_log_notes(gw2)
        _finish(gw2, started)
    except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
        say(f"  gateway (2 workers) failed: {exc}")
        for s in [s for s in started if s.label.startswith("gateway")]:
            say("  --- its output ---\n" + s.log_tail(25))
            r2.setdefault("notes", []).extend(_gateway_log_notes(s))
            _finish(s, started)
    return r1["mix_qps"] / 2


def run_floor(env: Env, results: dict, started: list[Server]) -> None:
    """bench/floor_server.py: what the interpreter, uvloop and the kernel cost per query with no work at
    all. Answer mode (everything NXDOMAIN) for the mix and the latency run; forward mode (every query to
    the shared upstream and back) for the miss path. No answer check and no reload."""
    r = results["floor"]
    script = str(REPO / "bench" / "floor_server.py")
    for mode in ("answer", "forward"):
        port = free_port()
        argv = [str(PYTHON), script, str(port)] + ([str(env.up_port)] if mode == "forward" else [])
        server = Server(f"floor-{mode}", argv, env.tmp / f"floor-{mode}.log")
        try:
            say(f"[CPython floor, {mode} mode] {HOST}:{port}, bench/floor_server.py")
            _start(server, started)
            if mode == "answer":
                r["load_s"] = server.wait_ready_query(port, "ready.check.example", 60)
                r["rss_loaded"] = memory_mb(process_tree(server.pid))[0]
                dnsperf(port, env.mix_file, 1)  # settle
                wait_quiet("floor")
                _keep(r, "mix", [_dnsperf_run(server, port, "mix", env.mix_file, env.seconds, False)])
                _keep(r, "latency", [_latency_run(port, env)])
                r["rss"], r["pss"] = memory_mb(process_tree(server.pid))
                say(f"  memory: RSS {r['rss']:.0f} MB")
            else:
                deadline = time.monotonic() + 60
                while ask(port, "ready.check.example", A, timeout=0.05) is None:
                    if time.monotonic() > deadline or not server.alive():
                        raise RuntimeError("forward mode not answering")
                wait_quiet("floor")
                _keep(r, "miss", [_dnsperf_run(server, port, "miss", env.miss_files[0], env.seconds, True)])
        except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
            say(f"  floor server failed: {exc}\n{server.log_tail()}")
        finally:
            _finish(server, started)


def run_dnsmasq(env: Env, results: dict, started: list[Server], rate: float) -> None:
    r = results["dnsmasq"]
    port = free_port()
    server = dnsmasq_server(env, port)
    try:
        say(f"[dnsmasq] {HOST}:{port}, --servers-file with {len(env.work.blocked):,} server=/name/ lines")
        _start(server, started)
        r["load_s"] = server.wait_ready_query(port, env.work.blocked[-1], 120)
        r["rss_loaded"] = memory_mb(process_tree(server.pid))[0]
        say(f"  ready after {r['load_s']:.2f} s")
        measure("dnsmasq", server, port, env, results)
        measure_reload(
            "dnsmasq",
            server,
            port,
            env,
            results,
            rate,
            env.dnsmasq_list,
            f"server=/{env.work.reload_name}/",
            signal_trigger(server),
        )
    except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
        say(f"  dnsmasq failed: {exc}\n{server.log_tail()}")
    finally:
        _finish(server, started)


def run_unbound(env: Env, results: dict, started: list[Server], rate: float) -> None:
    r = results["unbound"]
    port, control = free_port(), free_port()
    server, conf = unbound_server(env, port, control)
    try:
        say(f"[unbound] {HOST}:{port}, {len(env.work.blocked):,} local-zone always_nxdomain lines")
        _start(server, started)
        r["load_s"] = server.wait_ready_query(port, env.work.blocked[-1], 120)
        r["rss_loaded"] = memory_mb(process_tree(server.pid))[0]
        say(f"  ready after {r['load_s']:.2f} s")
        measure("unbound", server, port, env, results)
        line = f'local-zone: "{env.work.reload_name}." always_nxdomain'
        measure_reload(
            "unbound", server, port, env, results, rate, env.unbound_list, line, unbound_control_trigger(conf)
        )
    except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
        say(f"  unbound failed: {exc}\n{server.log_tail()}")
    finally:
        _finish(server, started)


if __name__ == "__main__":
    sys.exit(main())
