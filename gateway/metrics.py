"""Every Prometheus metric of the box on one registry, and the anonymising layer in front of it.

The DNS hot path only bumps plain dict counters; `Metrics.flush` (about once a second) moves the
deltas into prometheus-client, translating each age band into its *published* label first: a band
seen from fewer than `min_group_size` distinct clients over the past week is merged with the next
smallest ones under band="suppressed" (decided at most once per `decision_interval`), and a merged
cell that is still too small is not published at all. Labels never carry an address, device or name.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import os
import secrets
import socket
import ssl
import threading
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from gateway import __version__

BANDS = ("mam_non", "tieu_hoc", "thcs", "thpt", "staff")
BYPASS_KINDS = {"use-application-dns.net": "doh_canary", "mask.icloud.com": "private_relay",
                "mask-h2.icloud.com": "private_relay", "mask-api.icloud.com": "private_relay"}
SUPPRESSED = "suppressed"
WEEK_DAYS = 7
RESPONSE_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class DistinctClients:
    """Distinct clients per band per day, as keyed hashes held in memory only (the key is random and
    never written down), so an address cannot be recovered from them."""

    def __init__(self, clock: Callable[[], float] = time.time, key: bytes | None = None, cap: int = 4096):
        self.clock = clock
        self.key = key or secrets.token_bytes(16)
        self.cap = cap
        self.days: dict[int, dict[str, set[int]]] = {}
        # (band, address) pairs already counted today, so a repeat costs one lookup and no hash. Held in
        # memory only and dropped at midnight, like the access stage's address -> group memo.
        self._today: set[tuple[str, str]] = set()
        self._day = None

    def see(self, band: str, address: str) -> None:
        day = int(self.clock() // 86400)
        pair = (band, address)
        if day == self._day and pair in self._today:
            return
        if day != self._day or len(self._today) >= 65536:
            self._today = set()
            self._day = day
        self._today.add(pair)
        bands = self.days.get(day)
        if bands is None:
            bands = self.days[day] = {}
            for old in [d for d in self.days if d <= day - WEEK_DAYS]:
                del self.days[old]
        seen = bands.setdefault(band, set())
        if len(seen) < self.cap:
            # keyed BLAKE2b is a MAC on its own (no HMAC construction needed) and cheap per query
            digest = hashlib.blake2b(address.encode(), key=self.key, digest_size=8).digest()
            seen.add(int.from_bytes(digest, "big"))

    def week(self) -> dict[str, set[int]]:
        out: dict[str, set[int]] = {}
        for bands in self.days.values():
            for band, seen in bands.items():
                out.setdefault(band, set()).update(seen)
        return out


def publish_map(counts: dict[str, int], min_size: int) -> dict[str, str | None]:
    """Band -> published label. Small bands merge, smallest first, with the next smallest until the
    merged cell holds at least `min_size` clients; a cell that never gets there is withheld (None)."""
    mapping: dict[str, str | None] = {b: (b if n else None) for b, n in counts.items()}
    # a band nobody was seen in is withheld (another worker's view may lag); it drags no one in
    small = sorted((n, b) for b, n in counts.items() if 0 < n < min_size)
    if not small:
        return mapping
    merged = [b for _, b in small]
    total = sum(n for n, _ in small)
    rest = sorted((n, b) for b, n in counts.items() if n >= min_size)
    while total < min_size and rest:
        n, b = rest.pop(0)
        merged.append(b)
        total += n
    label = SUPPRESSED if total >= min_size else None
    for b in merged:
        mapping[b] = label
    return mapping


def add_to_histogram(child, counts: list) -> None:
    """Add bucket counts (RESPONSE_BUCKETS order, +Inf last, then the sum) to one histogram child at once.
    prometheus-client has no bulk observe; its histogram children (every 0.x release this project
    allows) keep one value per bucket and one for the sum, which this adds to. A test compares the
    result with observing each sample."""
    buckets, total = counts[:-1], counts[-1]
    for value, n in zip(child._buckets, buckets, strict=True):
        if n:
            value.inc(n)
    child._sum.inc(total)


class Metrics:
    """The box's metrics. `count_*` are called on the hot path (dict bumps); `flush` publishes."""

    def __init__(self, *, min_group_size: int = 10, decision_interval: float = 86400.0,
                 clock: Callable[[], float] = time.time, state_dir: Path | None = None,
                 worker: int = 0, workers: int = 1, key: bytes | None = None):
        from prometheus_client import CollectorRegistry, Gauge, Histogram
        from prometheus_client import Counter as PCounter

        self.registry = CollectorRegistry()
        self.min_group_size = min_group_size
        self.decision_interval = decision_interval
        self.clock = clock
        self.state_dir = state_dir
        self.worker = worker
        self.workers = workers
        self._decision_mtime = None
        self.clients = DistinctClients(clock, key)
        self.mapping: dict[str, str | None] = {b: None for b in BANDS}  # nothing published until decided
        self.decided_at: float | None = None
        self._load_decision()
        self._lock = threading.Lock()
        self.queries: Counter = Counter()  # (band, action, protocol)
        self.blocks: Counter = Counter()  # (band, category)
        self.rewrites: Counter = Counter()  # (band, engine)
        self.bypass: Counter = Counter()  # (band, kind)
        # Response times as histogram bucket counts per protocol (bisect on the hot path, bulk-added on
        # flush): publishing one observation at a time would cost a second's worth of queries each flush.
        self.latencies: dict[str, list] = {}  # protocol -> [count per bucket (+Inf last)..., sum of seconds]
        reg = self.registry
        mp = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        gauge = (lambda *a, mode="max", **k: Gauge(*a, registry=reg, multiprocess_mode=mode, **k)) if mp else \
            (lambda *a, mode="max", **k: Gauge(*a, registry=reg, **k))
        self.build_info = gauge("schoolgw_build_info", "Gateway version running", ["version"])
        self.school_info = gauge("schoolgw_school_info", "What this box says it is (public facts)",
                                 ["school_id", "ward", "level"])
        self.protection = gauge("schoolgw_protection_enabled", "1 while DNS filtering serves with a policy",
                                mode="min")
        self.policy_info = gauge("schoolgw_policy_info", "Policy in force", ["version", "fingerprint"],
                                 mode="mostrecent" if mp else "max")
        self.policy_loaded = gauge("schoolgw_policy_loaded_timestamp_seconds", "When the policy in force was loaded")
        self.policy_warnings = gauge("schoolgw_policy_warnings", "Stale or ignored school entries")
        self.reloads = PCounter("schoolgw_policy_reloads", "Policy reloads", ["outcome"], registry=reg)
        self.bundle_version = gauge("schoolgw_bundle_version", "Installed Department bundle version")
        self.bundle_expiry = gauge("schoolgw_bundle_expiry_timestamp_seconds", "When the installed bundle expires")
        self.update_failures = PCounter("schoolgw_update_failures", "Failed bundle updates", ["reason"],
                                        registry=reg)
        self.update_success = gauge("schoolgw_update_last_success_timestamp_seconds", "Last successful update")
        self.clock_synced = gauge("schoolgw_clock_synchronised", "1 when the system clock is synchronised",
                                  mode="min")
        self.dns_queries = PCounter("schoolgw_dns_queries", "DNS queries answered", ["band", "action", "protocol"],
                                    registry=reg)
        self.dns_blocks = PCounter("schoolgw_dns_blocks", "Blocked queries by category", ["band", "category"],
                                   registry=reg)
        self.safe_search = PCounter("schoolgw_safe_search_rewrites", "Safe-search rewrites", ["band", "engine"],
                                    registry=reg)
        self.bypass_attempts = PCounter("schoolgw_bypass_attempts", "Attempts to get around the filter",
                                        ["band", "kind"], registry=reg)
        self.response = Histogram("schoolgw_dns_response_seconds", "Time to answer a query", ["protocol"],
                                  buckets=RESPONSE_BUCKETS, registry=reg)
        self.cache_entries = gauge("schoolgw_dns_cache_entries", "Answers in the cache", mode="sum")
        self.cache_lookups = PCounter("schoolgw_dns_cache_lookups", "Cache lookups", ["result"], registry=reg)
        self.upstream_up = gauge("schoolgw_upstream_up", "1 when the upstream is healthy", ["upstream"], mode="min")
        self.upstream_latency = gauge("schoolgw_upstream_latency_seconds", "Smoothed upstream latency",
                                      ["upstream"])
        self.rate_limited = PCounter("schoolgw_dns_rate_limited", "Queries dropped by the rate limit",
                                     registry=reg)
        self.single_source = gauge("schoolgw_dns_single_source", "1 when nearly all queries come from one router")
        self.proxy_connections = PCounter("schoolgw_proxy_connections", "Proxy connections and requests",
                                          ["band", "action", "kind"], registry=reg)
        self.proxy_blocks = PCounter("schoolgw_proxy_blocks", "Proxy blocks by category", ["band", "category"],
                                     registry=reg)
        self.proxy_open = gauge("schoolgw_proxy_open_connections", "Connections being spliced now", mode="sum")
        self.proxy_pending: dict[str, Counter] = {"connections": Counter(), "blocks": Counter()}
        self.build_info.labels(__version__).set(1)
        self._cache_seen = {"hit": 0, "miss": 0, "stale": 0}
        self._rate_seen = 0

    # -- hot path --------------------------------------------------------------------------------
    def observe(self, req, seconds: float) -> None:
        """One answered DNS query (the observe stage's listener): counts only, nothing identifying kept.
        Runs for every query, memo hits included."""
        d = req.decision
        group = req.group
        band = d.band if d is not None else (group.band.id if group is not None else "none")
        action = d.action._value_ if d is not None else ("refused" if group is None else "local")
        protocol = req.proto
        self.queries[(band, action, protocol)] += 1
        if group is not None and band in BANDS:
            self.clients.see(band, req.client)
        counts = self.latencies.get(protocol)
        if counts is None:
            counts = self.latencies[protocol] = [0] * (len(RESPONSE_BUCKETS) + 1) + [0.0]
        counts[bisect_left(RESPONSE_BUCKETS, seconds)] += 1
        counts[-1] += seconds
        if d is None:
            if req.query.qname.endswith("resolver.arpa"):
                self.bypass[(band, "resolver_discovery")] += 1
            return
        if action == "block":
            self.blocks[(band, d.category or d.reason.value)] += 1
            if d.category == "bypass":
                self.bypass[(band, BYPASS_KINDS.get(d.matched or "", "bypass_names"))] += 1
        elif action == "rewrite":
            self.rewrites[(band, d.engine or "other")] += 1

    # -- publishing ------------------------------------------------------------------------------
    def _decision_file(self) -> Path | None:
        return self.state_dir / "privacy-decision.json" if self.state_dir else None

    def _load_decision(self) -> None:
        path = self._decision_file()
        if path is None or not path.exists():
            return
        try:
            data = json.loads(path.read_text())
            self.mapping = {b: data["mapping"].get(b) for b in BANDS}
            self.decided_at = float(data["decided_at"])
        except (OSError, ValueError, KeyError, TypeError):
            pass

    def _share_dir(self) -> Path:
        # Rewritten every few seconds: keep it with the multiprocess files (memory, /run), not on the SD card.
        mp = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        return Path(mp) if mp else self.state_dir

    def share(self) -> None:
        """Write this worker's keyed client hashes where worker 0 can union them (workers > 1)."""
        if self.state_dir is None or self.workers <= 1:
            return
        week = self.clients.week()
        data = {b: sorted(week.get(b, ())) for b in BANDS}
        path = self._share_dir() / f"clients-{self.worker}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)

    def _all_clients(self) -> dict[str, set[int]]:
        week = self.clients.week()
        if self.state_dir is None or self.workers <= 1:
            return week
        merged = {b: set(week.get(b, ())) for b in BANDS}
        for path in self._share_dir().glob("clients-*.json"):
            try:
                for band, values in json.loads(path.read_text()).items():
                    merged.setdefault(band, set()).update(values)
            except (OSError, ValueError):
                continue
        return merged

    def decide(self, force: bool = False) -> None:
        now = self.clock()
        if self.worker != 0:  # only worker 0 decides; the others follow its decision file
            path = self._decision_file()
            if path is not None and path.exists() and path.stat().st_mtime != self._decision_mtime:
                self._decision_mtime = path.stat().st_mtime
                self._load_decision()
            return
        if not force and self.decided_at is not None and now - self.decided_at < self.decision_interval:
            return
        all_clients = self._all_clients()
        counts = {b: len(all_clients.get(b, ())) for b in BANDS}
        self.mapping = publish_map(counts, self.min_group_size)
        self.decided_at = now
        path = self._decision_file()
        if path is not None and self.worker == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"decided_at": now, "mapping": self.mapping}))
            os.replace(tmp, path)

    def flush(self) -> None:
        """Move hot-path counts into the published metrics (bands translated, small cells withheld)."""
        self.decide()
        mapping = self.mapping

        def label(band: str) -> str | None:
            return mapping.get(band, band) if band in BANDS else band

        with self._lock:
            queries, self.queries = self.queries, Counter()
            blocks, self.blocks = self.blocks, Counter()
            rewrites, self.rewrites = self.rewrites, Counter()
            bypass, self.bypass = self.bypass, Counter()
            latencies, self.latencies = self.latencies, {}
        if any(mapping.get(band) is None for band, _, _ in queries if band in BANDS):
            # Some clients' band is withheld (not decided yet, or the whole school is below
            # min_group_size): publish no query-derived figure, or totals minus bands would describe
            # them. Keep the counts (bounded: a few keys) until a decision lets them out.
            self._withheld = True
            with self._lock:
                self.queries.update(queries)
                self.blocks.update(blocks)
                self.rewrites.update(rewrites)
                self.bypass.update(bypass)
                for proto, counts in latencies.items():
                    mine = self.latencies.setdefault(proto, [0] * len(counts[:-1]) + [0.0])
                    for i, n in enumerate(counts):
                        mine[i] += n
            return
        self._withheld = False
        for (band, action, proto), n in queries.items():
            if (b := label(band)) is not None:
                self.dns_queries.labels(b, action, proto).inc(n)
        for (band, cat), n in blocks.items():
            if (b := label(band)) is not None:
                self.dns_blocks.labels(b, cat).inc(n)
        for (band, engine), n in rewrites.items():
            if (b := label(band)) is not None:
                self.safe_search.labels(b, engine).inc(n)
        for (band, kind), n in bypass.items():
            if (b := label(band)) is not None:
                self.bypass_attempts.labels(b, kind).inc(n)
        for proto, counts in latencies.items():
            add_to_histogram(self.response.labels(proto), counts)
        self._flush_proxy(label)

    def add_proxy(self, taken: dict, open_now: int) -> None:
        """The proxy's counts since its last take(); published on the next flush, bands translated."""
        self.proxy_pending["connections"].update(taken.get("connections", {}))
        self.proxy_pending["blocks"].update(taken.get("blocks", {}))
        self.proxy_open.set(open_now)

    def _flush_proxy(self, label) -> None:
        pending = self.proxy_pending
        held = {"connections": Counter(), "blocks": Counter()}
        for (band, action, kind), n in pending["connections"].items():
            b = label(band)
            if b is None:
                held["connections"][(band, action, kind)] += n
            else:
                self.proxy_connections.labels(b, action, kind).inc(n)
        for (band, category), n in pending["blocks"].items():
            b = label(band)
            if b is None:
                held["blocks"][(band, category)] += n
            else:
                self.proxy_blocks.labels(b, category).inc(n)
        self.proxy_pending = held

    def set_cache(self, stats: dict) -> None:
        self.cache_entries.set(stats.get("entries", 0))
        if getattr(self, "_withheld", False):
            return
        for result, key in (("hit", "hits"), ("miss", "misses"), ("stale", "stale_hits")):
            value = stats.get(key, 0)
            if value > self._cache_seen[result]:
                self.cache_lookups.labels(result).inc(value - self._cache_seen[result])
                self._cache_seen[result] = value

    def set_rate_limited(self, total: int) -> None:
        if total > self._rate_seen:
            self.rate_limited.inc(total - self._rate_seen)
            self._rate_seen = total

    def set_policy(self, snapshot, loaded_at: float) -> None:
        labels = (snapshot.version, snapshot.fingerprint[:16])
        old = getattr(self, "_policy_labels", None)
        if old is not None and old != labels:
            if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
                self.policy_info.labels(*old).set(0)  # another worker's file may still hold it: say it is gone
            else:
                self.policy_info.remove(*old)
        self._policy_labels = labels
        self.policy_info.labels(*labels).set(1)
        self.policy_loaded.set(loaded_at)
        self.policy_warnings.set(len(snapshot.warnings))
        school = snapshot.school
        self.school_info.labels(school.id, school.ward, ";".join(school.levels)).set(1)

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            return self.multiprocess_exposition()
        return generate_latest(self.registry)

    @staticmethod
    def multiprocess_exposition() -> bytes:
        """Every worker's numbers, added up (prometheus-client's multiprocess mode)."""
        from prometheus_client import CollectorRegistry, generate_latest, multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)


class MetricsServer:
    """`/metrics` on its own listener: an allowlist of scraper addresses (403 for anyone else),
    optional basic auth (401), optional TLS and mutual TLS."""

    def __init__(self, render: Callable[[], bytes], host: str, port: int, allow: Iterable = (),
                 basic_auth: tuple[str, str] | None = None, tls: dict | None = None):
        self.render = render
        self.allow = tuple(ipaddress.ip_network(a) if isinstance(a, str) else a for a in allow)
        self.basic_auth = basic_auth
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # no access log: it would hold scraper addresses only, still noise
                pass

            def do_GET(self):
                peer = ipaddress.ip_address(self.client_address[0].split("%", 1)[0])
                if peer.version == 6 and peer.ipv4_mapped:
                    peer = peer.ipv4_mapped
                if server.allow and not any(peer in net for net in server.allow):
                    self.send_error(403, "not an allowed scraper address")
                    return
                if server.basic_auth is not None and not server._auth_ok(self.headers.get("Authorization", "")):
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="school-gateway metrics"')
                    self.end_headers()
                    return
                if self.path.split("?", 1)[0] not in ("/metrics", "/"):
                    self.send_error(404)
                    return
                body = server.render()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        class Server(ThreadingHTTPServer):
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
            daemon_threads = True

        self.httpd = Server((host, port), Handler)
        if tls:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(tls["cert"], tls["key"])
            if tls.get("client_ca"):
                ctx.load_verify_locations(tls["client_ca"])
                ctx.verify_mode = ssl.CERT_REQUIRED
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="metrics", daemon=True)

    def _auth_ok(self, header: str) -> bool:
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        want_user, want_password = self.basic_auth
        return hmac.compare_digest(user, want_user) and hmac.compare_digest(password, want_password)

    def start(self) -> MetricsServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
