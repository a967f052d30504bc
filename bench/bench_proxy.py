"""Proxy benchmark: the gateway's relay (and mitmproxy alone) against squid+squidGuard and e2guardian.

Run:  .venv/bin/python bench/bench_proxy.py [--domains 1000000] [--seconds 8] [--seed 1] [--quick]

Every proxy gets the same seeded list of blocked domains and the same local origin (plain HTTP and
TLS on 127.0.0.1), one proxy at a time, pinned to core 0; the origin and the load generators (wrk,
our CONNECT+TLS client) run on core 1. Figures: plain-HTTP requests/s and p99 latency (wrk, 32
connections), CONNECT pass-through TLS handshakes/s and CPU per connection (the proxy's process
tree utime+stime from /proc, divided by the connections served), RSS and PSS with the list loaded.
Not a test: it prints figures, ratios and the targets' PASS/FAIL lines. The whole run stays under
ten minutes and every process it started is killed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable if Path(sys.executable).exists() else str(REPO / ".venv" / "bin" / "python")
HOST = "127.0.0.1"
SERVER_CPU, CLIENT_CPU = "0", "1"
DEADLINE = 9.5 * 60  # seconds: the run stops measuring and cleans up past this
TICK = os.sysconf("SC_CLK_TCK")
STARTED = time.monotonic()

_SYLLABLES = ("ba", "bo", "ca", "co", "da", "do", "ga", "go", "ha", "ho", "ka", "ko", "la", "lo", "ma", "mo",
              "na", "no", "pa", "po", "ra", "ro", "sa", "so", "ta", "to", "va", "vo", "xa", "bet", "win", "vip",
              "top", "max", "pro", "hot", "fun", "star", "club", "king", "lucky", "spin", "slot", "bong", "cuoc",
              "keo", "nha", "cai", "game", "play", "gold", "xo", "so", "tai", "xiu", "ngoc", "long", "phat")
_TLDS = ("com", "com", "com", "net", "org", "vn", "com.vn", "info", "xyz", "top", "io", "club")

PROCS: list[subprocess.Popen] = []  # everything we started, each in its own session


def say(text: str = "") -> None:
    print(text, flush=True)


def over_time() -> bool:
    return time.monotonic() - STARTED > DEADLINE


# ---------------------------------------------------------------------------------------------------
# Processes and /proc


def start(argv: list[str], log: Path, cpu: str, env: dict | None = None) -> subprocess.Popen:
    fh = open(log, "wb")  # noqa: SIM115 (kept open for the child's lifetime)
    proc = subprocess.Popen(["taskset", "-c", cpu, *argv], stdin=subprocess.DEVNULL, stdout=fh,
                            stderr=subprocess.STDOUT, start_new_session=True, env=env)
    PROCS.append(proc)
    return proc


def stop(proc: subprocess.Popen | None) -> None:
    if proc is None:
        return
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(8)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: only what we started
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def stop_all() -> None:
    for proc in reversed(PROCS):
        stop(proc)


def process_tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime of all its threads
    return total / TICK


def memory_mb(pids: list[int]) -> tuple[float, float]:
    rss = pss = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1])
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            continue
    return rss / 1024, pss / 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float, log: Path) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}: {log.read_text(errors='replace')[-1500:]}")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), 0.2):
            return
        time.sleep(0.1)  # a bench polling a peer that has no readiness signal of its own
    raise RuntimeError(f"port {port} not open after {timeout}s: {log.read_text(errors='replace')[-1500:]}")


def wait_line(log: Path, text: str, proc: subprocess.Popen, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if text in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}: {log.read_text(errors='replace')[-1500:]}")
        time.sleep(0.1)
    raise RuntimeError(f"no {text!r} after {timeout}s: {log.read_text(errors='replace')[-1500:]}")


# ---------------------------------------------------------------------------------------------------
# The list, the origin and the load


def make_names(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        word = "".join(rng.choice(_SYLLABLES) for _ in range(rng.choice((2, 3, 3, 4))))
        name = f"{word}{rng.randrange(10000)}.{rng.choice(_TLDS)}"
        if name not in seen and name != "localhost":
            seen.add(name)
            out.append(name)
    return out


ORIGIN = r'''
import asyncio, ssl, sys
try:
    import uvloop
except ImportError:
    uvloop = None
http_port, tls_port, cert, key = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
BODY = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n"

class Http(asyncio.Protocol):
    def connection_made(self, t):
        self.t, self.buf = t, b""
    def data_received(self, data):
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head, self.buf = self.buf[:end].lower(), self.buf[end + 4:]
            self.t.write(BODY)
            if b"connection: close" in head:
                self.t.close()
                return

class Tls(asyncio.Protocol):
    def connection_made(self, t):
        self.t = t
    def data_received(self, data):
        self.t.write(BODY)

async def main():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    loop = asyncio.get_running_loop()
    await loop.create_server(Http, "127.0.0.1", http_port, backlog=1024)
    await loop.create_server(Tls, "127.0.0.1", tls_port, ssl=ctx, backlog=1024)
    print("ORIGIN READY", flush=True)
    await asyncio.Event().wait()

(uvloop.run if uvloop else asyncio.run)(main())
'''

HANDSHAKER = r'''
import asyncio, ssl, sys, time
try:
    import uvloop
except ImportError:
    uvloop = None
port, target, seconds, conc = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.minimum_version = ssl.TLSVersion.TLSv1_3
ok = failed = 0
async def one():
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"CONNECT " + target.encode() + b" HTTP/1.1\r\nHost: " + target.encode() + b"\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        if b" 200" not in head.split(b"\r\n", 1)[0]:
            raise RuntimeError(head[:40])
        await asyncio.wait_for(writer.start_tls(ctx, server_hostname="localhost"), 10)
    finally:
        writer.transport.abort()
async def worker(end):
    global ok, failed
    while time.monotonic() < end:
        try:
            await one()
            ok += 1
        except Exception:
            failed += 1
async def main():
    end = time.monotonic() + seconds
    started = time.monotonic()
    await asyncio.gather(*(worker(end) for _ in range(conc)))
    print(f"{ok} {failed} {time.monotonic() - started:.3f}", flush=True)
(uvloop.run if uvloop else asyncio.run)(main())
'''


def make_cert(folder: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())  # cheap handshakes: the origin is not what we measure
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=7))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "origin.pem", folder / "origin.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def http_request(port: int, raw: bytes, timeout: float = 10) -> tuple[int, bytes]:
    """One request; reads the head and a Content-Length body (or to close). A CONNECT stops at the head."""
    with socket.create_connection((HOST, port), timeout) as s:
        s.sendall(raw)
        data = b""
        with contextlib.suppress(OSError):
            while len(data) < 1 << 20:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
                head, sep, body = data.partition(b"\r\n\r\n")
                if not sep:
                    continue
                if raw.startswith(b"CONNECT"):
                    break
                length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                if length and len(body) >= int(length.group(1)):
                    break
    match = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    return (int(match.group(1)) if match else 0), data


def blocked(status: int, body: bytes) -> bool:
    # Each proxy says "blocked" its own way: 403 (ours), a redirect (squidGuard), an "Access Denied" page.
    return status == 403 or status in (301, 302, 303, 307) or b"Access Denied" in body


def check(port: int, blocked_name: str, origin_http: int, origin_tls: int) -> str:
    problems = []
    status, body = http_request(port, f"GET http://{blocked_name}/ HTTP/1.1\r\nHost: {blocked_name}\r\n"
                                      "Connection: close\r\n\r\n".encode())
    if not blocked(status, body):
        problems.append(f"blocked name answered {status}")
    status, body = http_request(port, f"GET http://localhost:{origin_http}/ HTTP/1.1\r\nHost: localhost:"
                                      f"{origin_http}\r\nConnection: close\r\n\r\n".encode())
    if status != 200 or not body.endswith(b"ok\n"):
        problems.append(f"allowed name answered {status}")
    status, body = http_request(port, f"CONNECT {blocked_name}:443 HTTP/1.1\r\nHost: {blocked_name}:443\r\n\r\n"
                                .encode())
    if status == 200:
        problems.append("blocked CONNECT answered 200")
    status, body = http_request(port, f"CONNECT localhost:{origin_tls} HTTP/1.1\r\nHost: localhost:{origin_tls}"
                                      "\r\n\r\n".encode())
    if status != 200:
        problems.append(f"allowed CONNECT answered {status}")
    return "ok" if not problems else "; ".join(problems)


def run_wrk(port: int, origin_http: int, seconds: float, work: Path) -> dict:
    script = work / "proxy.lua"
    script.write_text(textwrap.dedent(f"""\
        wrk.method = "GET"
        wrk.path = "http://localhost:{origin_http}/"
        wrk.headers["Host"] = "localhost:{origin_http}"
        """))
    argv = ["taskset", "-c", CLIENT_CPU, "wrk", "-t1", "-c32", f"-d{int(seconds)}s", "--latency", "-s", str(script),
            f"http://{HOST}:{port}/"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)) if "Requests/sec" in out else 0.0
    p99 = None
    match = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    if match:
        p99 = float(match.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[match.group(2)]
    total = re.search(r"(\d+) requests in", out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {"rps": rps, "p99_ms": p99, "requests": int(total.group(1)) if total else 0,
            "non2xx": int(bad.group(1)) if bad else 0,
            "socket_errors": sum(int(x) for x in errors.groups()) if errors else 0}


def run_handshakes(port: int, origin_tls: int, seconds: float, work: Path) -> tuple[int, int, float]:
    script = work / "handshaker.py"
    script.write_text(HANDSHAKER)
    argv = ["taskset", "-c", CLIENT_CPU, PYTHON, str(script), str(port), f"localhost:{origin_tls}", str(seconds), "32"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    ok, failed, elapsed = out.stdout.split()
    return int(ok), int(failed), float(elapsed)


# ---------------------------------------------------------------------------------------------------
# The proxies


def ours_config(work: Path, name: str, port: int, *, fast_path: bool, plain_http: str, tls_port: int) -> Path:
    path = work / f"{name}.yaml"
    path.write_text(textwrap.dedent(f"""\
        policy: {{department: ours/department, school: ours/school.yaml, cache_dir: ours/cache}}
        proxy:
          listen: {HOST}:{port}
          fast_path: {str(fast_path).lower()}
          plain_http: {plain_http}
          blockpage_listen: off
          ref_key: ours/ref.key
          ca: {{dir: ours/ca}}
          connect_ports: [443, {tls_port}]
          loopback_origins: true        # the bench origin is on 127.0.0.1
        """))
    return path


def write_ours_policy(work: Path, domains: Path) -> None:
    root = work / "ours"
    (root / "department").mkdir(parents=True)
    (root / "lists").mkdir()
    shutil.copy(domains, root / "lists" / "bench.txt")
    (root / "department" / "baseline.yaml").write_text(
        'version: "bench-1"\nlists_dir: ../lists\nnever_block: []\nschedules: {}\nsafe_search: {}\n')
    (root / "department" / "categories.yaml").write_text(
        "categories:\n  bench: {name: {vi: Danh sách thử, en: Bench list}, lists: [bench.txt]}\n")
    bands = "".join(f"  {b}: {{name: {{vi: {b}, en: {b}}}, block: [bench], safe_search: strict}}\n"
                    for b in ("mam_non", "tieu_hoc", "thcs", "thpt", "staff"))
    (root / "department" / "bands.yaml").write_text("bands:\n" + bands)
    (root / "school.yaml").write_text(textwrap.dedent("""\
        school: {id: HN-BENCH, name: Bench, ward: W, levels: [thcs], timezone: Asia/Ho_Chi_Minh}
        groups:
          all: {band: thcs, clients: [127.0.0.0/8]}
        """))


def start_ours(work: Path, name: str, port: int, fast_path: bool, plain_http: str, tls_port: int) -> subprocess.Popen:
    config = ours_config(work, name, port, fast_path=fast_path, plain_http=plain_http, tls_port=tls_port)
    log = work / f"{name}.log"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = start([PYTHON, "-m", "gateway.proxy.cli", "proxy", "--config", str(config), "--lang", "en"], log,
                 SERVER_CPU, env)
    wait_line(log, "Proxy running", proc, 120)
    return proc


def setup_squid(work: Path, domains: Path, port: int) -> tuple[list[str], float]:
    sg = work / "squidguard"
    (sg / "db" / "bench").mkdir(parents=True)
    (sg / "log").mkdir()
    shutil.copy(domains, sg / "db" / "bench" / "domains")
    conf = sg / "squidGuard.conf"
    conf.write_text(textwrap.dedent(f"""\
        dbhome {sg / 'db'}
        logdir {sg / 'log'}
        dest bench {{
            domainlist bench/domains
        }}
        acl {{
            default {{
                pass !bench all
                redirect 302:http://{HOST}/blocked.html
            }}
        }}
        """))
    started = time.monotonic()
    subprocess.run(["squidGuard", "-c", str(conf), "-C", "all"], check=True, capture_output=True, timeout=300)
    compile_seconds = time.monotonic() - started
    sq = work / "squid"
    sq.mkdir()
    (sq / "squid.conf").write_text(textwrap.dedent(f"""\
        http_port {HOST}:{port}
        visible_hostname bench-squid
        pid_filename none
        cache_log {sq / 'cache.log'}
        access_log none
        cache deny all
        cache_mem 8 MB
        dns_nameservers 127.0.0.1
        hosts_file /etc/hosts
        acl SSL_ports port 1-65535
        acl CONNECT method CONNECT
        http_access allow all
        url_rewrite_program /usr/bin/squidGuard -c {conf}
        url_rewrite_children 4 startup=4 idle=4 concurrency=0
        url_rewrite_bypass off
        pinger_enable off
        shutdown_lifetime 1 seconds
        coredump_dir {sq}
        """))
    for path in (work, sg, sg / "db", sg / "db" / "bench", sg / "log", sq):
        os.chmod(path, 0o777)
    # squid runs its helpers as its own user: squidGuard must be able to write the log -C left behind
    # (it waits forever otherwise, and squid reports all redirectors busy).
    for path in [*(sg / "db" / "bench").iterdir(), *(sg / "log").iterdir(), conf]:
        os.chmod(path, 0o666)
    return ["squid", "-N", "-f", str(sq / "squid.conf")], compile_seconds


def setup_e2guardian(work: Path, domains: Path, port: int) -> list[str] | None:
    source = Path("/etc/e2guardian")
    if not source.exists() or shutil.which("e2guardian") is None:
        return None
    e2 = work / "e2guardian"
    shutil.copytree(source, e2)
    for path in e2.rglob("*"):
        if path.is_file():
            with contextlib.suppress(UnicodeDecodeError, OSError):
                text = path.read_text()
                if "/etc/e2guardian" in text:
                    path.write_text(text.replace("/etc/e2guardian", str(e2)))
    conf = e2 / "e2guardian.conf"
    text = conf.read_text()

    def setting(text: str, key: str, value: str) -> str:
        new, count = re.subn(rf"(?m)^#?\s*{key}\s*=.*$", f"{key} = {value}", text, count=1)
        return new if count else text + f"\n{key} = {value}\n"

    text = re.sub(r"(?m)^filterports\s*=.*$", "", text)
    text = re.sub(r"(?m)^checkip\s*=.*$", "", text)  # loop guard: the origin is on 127.0.0.1 too
    text = re.sub(r"(?m)^transparenthttpsport\s*=.*$", "", text)
    for key, value in (("filterip", HOST), ("filterports", str(port)), ("nodaemon", "on"), ("nologger", "on"),
                       ("loglevel", "0"), ("pidfilename", f"'{e2 / 'e2g.pid'}'"), ("httpworkers", "200"),
                       ("daemonuser", "'root'"), ("daemongroup", "'root'"), ("reverseaddresslookups", "off"),
                       ("logconnectionhandlingerrors", "off")):
        text = setting(text, key, value)
    conf.write_text(text)
    with (e2 / "lists" / "bannedsitelist").open("a") as fh:
        fh.write(f"\n.Include<{domains}>\n")
    return ["e2guardian", "-N", "-c", str(conf)]  # -N: stay in the foreground (nodaemon = on is not enough)


# ---------------------------------------------------------------------------------------------------


def measure(label: str, proc: subprocess.Popen, port: int, work: Path, blocked_name: str, origin_http: int,
            origin_tls: int, seconds: float) -> dict:
    result: dict = {"label": label}
    result["check"] = check(port, blocked_name, origin_http, origin_tls)
    pids = process_tree(proc.pid)  # taskset exec'd the proxy: proc.pid is the proxy itself
    result["rss"], result["pss"] = memory_mb(pids)
    before = cpu_seconds(process_tree(proc.pid))
    wrk = run_wrk(port, origin_http, seconds, work)
    after = cpu_seconds(process_tree(proc.pid))
    result.update(wrk)
    result["cpu_per_request_us"] = (after - before) / wrk["requests"] * 1e6 if wrk["requests"] else None
    before = cpu_seconds(process_tree(proc.pid))
    ok, failed, elapsed = run_handshakes(port, origin_tls, seconds, work)
    after = cpu_seconds(process_tree(proc.pid))
    result["handshakes"] = ok
    result["handshake_failures"] = failed
    result["handshakes_per_s"] = ok / elapsed if elapsed else 0
    result["cpu_per_conn_us"] = (after - before) / ok * 1e6 if ok else None
    result["rss_after"], result["pss_after"] = memory_mb(process_tree(proc.pid))
    return result


def fmt(value, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--domains", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="100k domains, 3-second runs")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (configs, logs) for a look")
    parser.add_argument("--only", help="comma-separated subset: relay,relay-mitm-http,mitmproxy,squid,e2guardian")
    args = parser.parse_args()
    if args.quick:
        args.domains, args.seconds = 100_000, 3.0
    missing = [tool for tool in ("taskset", "wrk", "squid", "squidGuard") if shutil.which(tool) is None]
    if missing:
        say(f"missing tools: {', '.join(missing)} — apt-get install -y util-linux wrk squid squidguard e2guardian")
        return 2
    work = Path(tempfile.mkdtemp(prefix="bench-proxy-"))
    os.chmod(work, 0o755)
    timer = threading.Timer(DEADLINE + 20, lambda: (stop_all(), os._exit(3)))  # hard stop, whatever happens
    timer.daemon = True
    timer.start()
    results = []
    try:
        say(f"# proxy benchmark — {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, "
            f"{args.domains:,} listed domains (seed {args.seed}), {args.seconds:g} s per load run")
        say(f"# proxies on core {SERVER_CPU}; origin, wrk and the CONNECT+TLS client on core {CLIENT_CPU}")
        names = make_names(args.domains, args.seed)
        domains = work / "domains.txt"
        domains.write_text("\n".join(names) + "\n")
        os.chmod(domains, 0o644)
        blocked_name = "www." + names[len(names) // 2]
        cert, key = make_cert(work)
        origin_http, origin_tls = free_port(), free_port()
        log = work / "origin.log"
        origin = start([PYTHON, "-c", ORIGIN, str(origin_http), str(origin_tls), str(cert), str(key)], log, CLIENT_CPU)
        wait_line(log, "ORIGIN READY", origin, 30)
        write_ours_policy(work, domains)

        def ours(name: str, fast_path: bool, plain_http: str):
            def run(port: int) -> subprocess.Popen:
                return start_ours(work, name, port, fast_path, plain_http, origin_tls)
            return run

        def squid(port: int) -> subprocess.Popen:
            argv, seconds = setup_squid(work, domains, port)
            say(f"# squidGuard -C compiled the list in {seconds:.1f} s")
            log = work / "squid.log"
            proc = start(argv, log, SERVER_CPU)
            wait_port(port, proc, 120, log)
            return proc

        def e2guardian(port: int) -> subprocess.Popen | None:
            argv = setup_e2guardian(work, domains, port)
            if argv is None:
                say("# e2guardian is not installed (apt-get install -y e2guardian): no e2guardian figures")
                return None
            log = work / "e2guardian.log"
            proc = start(argv, log, SERVER_CPU)
            wait_port(port, proc, 120, log)
            return proc

        plan = [("relay", "gateway relay (TLS + HTTP)", ours("relay", True, "relay")),
                ("relay-mitm-http", "gateway relay, HTTP on mitmproxy", ours("relay-mitm-http", True, "mitmproxy")),
                ("mitmproxy", "mitmproxy only (gateway addon)", ours("mitmproxy", False, "mitmproxy")),
                ("squid", "squid + squidGuard", squid),
                ("e2guardian", "e2guardian", e2guardian)]
        wanted = set(args.only.split(",")) if args.only else None
        for key_, label, starter in plan:
            if wanted is not None and key_ not in wanted:
                continue
            if over_time():
                say(f"# out of time: {label} not measured")
                continue
            port = free_port()
            proc = None
            try:
                proc = starter(port)
                if proc is not None:
                    results.append((key_, measure(label, proc, port, work, blocked_name, origin_http, origin_tls,
                                                  args.seconds)))
            except Exception as exc:
                say(f"# {label}: not measured: {exc}")
            finally:
                stop(proc)
        report(dict(results))
    finally:
        stop_all()
        timer.cancel()
        if args.keep:
            say(f"# work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    say(f"# run took {time.monotonic() - STARTED:.0f} s; every process started here was stopped")
    return 0


def report(results: dict) -> None:
    say()
    say(f"{'proxy':34} {'check':6} {'RSS MB':>7} {'PSS MB':>7} {'RSS load':>8} {'HTTP r/s':>9} {'p99 ms':>8} "
        f"{'µs/req':>7} {'TLS hs/s':>9} {'µs/conn':>8} {'fail':>5}")
    for r in results.values():
        say(f"{r['label']:34} {('ok' if r['check'] == 'ok' else 'BAD'):6} {r['rss']:7.1f} {r['pss']:7.1f} "
            f"{r['rss_after']:8.1f} {r['rps']:9.0f} {fmt(r['p99_ms'], '8.2f')} {fmt(r['cpu_per_request_us'], '7.0f')} "
            f"{r['handshakes_per_s']:9.0f} {fmt(r['cpu_per_conn_us'], '8.0f')} {r['handshake_failures']:5d}")
    for r in results.values():
        if r["check"] != "ok":
            say(f"  {r['label']}: check failed: {r['check']}")
        if r["non2xx"] or r["socket_errors"]:
            say(f"  {r['label']}: wrk saw {r['non2xx']} non-2xx responses, {r['socket_errors']} socket errors")
    say()

    def ratio(a: str, b: str, field: str) -> float | None:
        x, y = results.get(a, {}).get(field), results.get(b, {}).get(field)
        return x / y if x and y else None

    lines = [
        ("CPU per passed-through TLS connection, relay / squid+squidGuard",
         ratio("relay", "squid", "cpu_per_conn_us")),
        ("CPU per passed-through TLS connection, relay / mitmproxy only",
         ratio("relay", "mitmproxy", "cpu_per_conn_us")),
        ("TLS handshakes/s, relay / squid+squidGuard", ratio("relay", "squid", "handshakes_per_s")),
        ("TLS handshakes/s, relay / mitmproxy only", ratio("relay", "mitmproxy", "handshakes_per_s")),
        ("RSS with the list, relay / e2guardian", ratio("relay", "e2guardian", "rss")),
        ("RSS with the list, relay+mitmproxy(HTTP) / e2guardian", ratio("relay-mitm-http", "e2guardian", "rss")),
        ("PSS with the list, relay / e2guardian", ratio("relay", "e2guardian", "pss")),
        ("plain HTTP r/s, relay / squid+squidGuard", ratio("relay", "squid", "rps")),
        ("plain HTTP r/s, relay / e2guardian", ratio("relay", "e2guardian", "rps")),
        ("plain HTTP r/s, mitmproxy (HTTP) / squid+squidGuard", ratio("relay-mitm-http", "squid", "rps")),
        ("plain HTTP r/s, mitmproxy (HTTP) / e2guardian", ratio("relay-mitm-http", "e2guardian", "rps")),
        ("plain HTTP p99, relay / squid+squidGuard", ratio("relay", "squid", "p99_ms")),
        ("plain HTTP p99, mitmproxy (HTTP) / squid+squidGuard", ratio("relay-mitm-http", "squid", "p99_ms")),
    ]
    say("ratios")
    for text, value in lines:
        say(f"  {text:62} {fmt(value, '6.2f')}")
    say()
    say("targets")
    target = [("CPU per passed-through TLS connection ≤ squid+squidGuard's",
               ratio("relay", "squid", "cpu_per_conn_us"), lambda v: v <= 1.0),
              ("RSS with the list ≤ e2guardian's", ratio("relay", "e2guardian", "rss"), lambda v: v <= 1.0)]
    for text, value, good in target:
        verdict = "n/a " if value is None else ("PASS" if good(value) else "FAIL")
        say(f"  {verdict} {text} (ratio {fmt(value, '.2f')})")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        stop_all()
        sys.exit(130)
