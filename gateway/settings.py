"""gateway.yaml -> frozen Settings; unknown keys rejected; every error names file and line."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from gateway.core.names import NameError_, normalize
from gateway.errors import ConfigError
from gateway.policy.schema import FieldReader
from gateway.policy.source import YMap, load_file
from gateway.shipped import shipped

DEFAULT_TIME_SERVERS = ("pool.ntp.org", "time.google.com", "time.cloudflare.com", "time.windows.com",
                        "time.apple.com", "ntp.ubuntu.com", "debian.pool.ntp.org", "vn.pool.ntp.org")


@dataclass(frozen=True, slots=True)
class Listen:
    """A listening or connecting address; `host` is an IP literal."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str, default_port: int | None = None) -> Listen:
        """'0.0.0.0:53', '[::]:53' or (with a default port) a bare IP; ValueError otherwise."""
        text = str(text).strip()
        if text.startswith("["):
            host, sep, port = text[1:].partition("]:")
            if not sep:
                host, port = text[1:].rstrip("]"), ""
        elif text.count(":") == 1:
            host, _, port = text.partition(":")
        else:
            host, port = text, ""  # a bare IPv4 or IPv6 address
        ipaddress.ip_address(host)
        if not port:
            if default_port is None:
                raise ValueError(text)
            value = default_port
        else:
            value = int(port)
        if not 0 <= value <= 65535:
            raise ValueError(text)
        return cls(host, value)


@dataclass(frozen=True, slots=True)
class CacheSettings:
    size: int = 20000
    min_ttl: int = 0
    max_ttl: int = 86400
    negative_ttl: int = 300
    serve_stale: int = 86400  # seconds past expiry a stale answer may be served while upstreams are down
    prefetch: bool = True


@dataclass(frozen=True, slots=True)
class RateLimit:
    qps: float = 50.0
    burst: int = 200
    exempt: tuple = ()  # networks never limited (the school router when it relays DNS)


@dataclass(frozen=True, slots=True)
class DnsSettings:
    listen: tuple[Listen, ...] = (Listen("127.0.0.1", 1053),)
    workers: int = 1  # 0 = one per core ("auto")
    upstreams: tuple[str, ...] = ()  # empty = the system's resolv.conf
    bootstrap: tuple[str, ...] = ()  # plain DNS used for time servers until the clock is synchronised
    timeout: float = 2.0
    block_ttl: int = 60
    cache: CacheSettings = field(default_factory=CacheSettings)
    rate_limit: RateLimit = field(default_factory=RateLimit)
    relays: tuple = ()  # addresses of routers that relay every client's DNS
    blockpage_v4: str | None = None
    blockpage_v6: str | None = None
    local_records: dict = field(default_factory=dict)  # name -> tuple of addresses
    forward_zones: dict = field(default_factory=dict)  # zone -> tuple of upstream specs
    rebinding_protection: bool = True
    time_servers: tuple[str, ...] = DEFAULT_TIME_SERVERS


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 9153
    allow: tuple = ()  # scraper networks; empty = loopback only
    basic_auth: tuple[str, str] | None = None  # (username, password read from password_file)
    tls: dict | None = None  # {"cert", "key", "client_ca"?}


@dataclass(frozen=True, slots=True)
class QueryLogSettings:
    enabled: bool = False  # off by default: a pupil's browsing log is personal data (Decree 13, PDPL)
    path: Path | None = None  # default: <state_dir>/querylog.sqlite
    privacy: str = "hide_clients"  # full | hide_names | hide_clients | counts
    retention_days: int = 7


@dataclass(frozen=True, slots=True)
class PrivacySettings:
    min_group_size: int = 10
    decision_interval: float = 86400.0  # seconds between decisions on which bands to merge


@dataclass(frozen=True, slots=True)
class PolicySettings:
    department: Path
    school: Path
    cache_dir: Path | None
    watch: bool = True


@dataclass(frozen=True, slots=True)
class Settings:
    dns: DnsSettings
    policy: PolicySettings
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    privacy: PrivacySettings = field(default_factory=PrivacySettings)
    state_dir: Path | None = None  # persistent state (bundles, audit trail); None = the cache dir
    updater: object = None  # UpdaterSettings when an `updater:` section is present
    proxy: object = None  # ProxySettings when a `proxy:` section is present
    log_level: str = "info"
    query_log: QueryLogSettings = field(default_factory=QueryLogSettings)
    source: str = "(built-in defaults)"
    embedded: bool = True  # True when no config file was given: the shipped default configuration


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "school-gateway"


def defaults() -> Settings:
    school = Path("/etc/school-gateway/school.yaml")
    return Settings(
        dns=DnsSettings(),
        policy=PolicySettings(
            department=shipped("policies/department"),
            school=school if school.exists() else shipped("policies/school.example.yaml"),
            cache_dir=default_cache_dir(),
        ),
    )


def _listen(text: str) -> Listen:
    return Listen.parse(text, 53)


def load_settings(path: Path) -> Settings:
    """Read gateway.yaml; raise ConfigError listing every problem."""
    display = str(path)
    value, problems = load_file(path, display)
    r = FieldReader(display, problems)
    base = defaults()
    if problems:
        raise ConfigError(problems)
    doc = value if isinstance(value, YMap) else YMap()
    if value is not None and not isinstance(value, YMap):
        r.problem(1, "schema.type", key="(document)", expected="a mapping", got="text")
    doc.line, doc.key_lines = getattr(doc, "line", 1), getattr(doc, "key_lines", {})
    r.keys(doc, "gateway.yaml", ("dns", "policy", "log", "metrics", "privacy", "state_dir", "updater", "proxy"))
    dns_m = r.mapping(doc, "dns") or YMap()
    if not hasattr(dns_m, "key_lines"):
        dns_m.line, dns_m.key_lines = 1, {}
    r.keys(dns_m, "dns", ("listen", "workers", "upstreams", "bootstrap_upstreams", "timeout", "block_ttl", "cache",
                          "rate_limit", "relays", "blockpage", "local_records", "forward_zones",
                          "rebinding_protection", "time_servers"))
    listen = []
    for text, where in r.str_list(dns_m, "listen"):
        try:
            listen.append(_listen(text))
        except ValueError:
            r.problem(where.line, "settings.bad_listen", value=text)
    workers_raw = dns_m.get("workers", 1)
    workers = 1
    if workers_raw == "auto":
        workers = 0
    elif isinstance(workers_raw, int) and not isinstance(workers_raw, bool) and workers_raw >= 1:
        workers = workers_raw
    else:
        r.problem(dns_m.line_of("workers"), "schema.type", key="workers", expected="auto or a number ≥ 1",
                  got=str(workers_raw))
    cache_m = r.mapping(dns_m, "cache")
    cache = CacheSettings()
    if cache_m is not None:
        r.keys(cache_m, "dns.cache", ("size", "min_ttl", "max_ttl", "negative_ttl", "serve_stale", "prefetch"))
        cache = CacheSettings(
            size=r.typed(cache_m, "size", int, "a number", cache.size),
            min_ttl=r.typed(cache_m, "min_ttl", int, "seconds", cache.min_ttl),
            max_ttl=r.typed(cache_m, "max_ttl", int, "seconds", cache.max_ttl),
            negative_ttl=r.typed(cache_m, "negative_ttl", int, "seconds", cache.negative_ttl),
            serve_stale=r.typed(cache_m, "serve_stale", int, "seconds", cache.serve_stale),
            prefetch=r.typed(cache_m, "prefetch", bool, "yes/no", cache.prefetch),
        )
    rl_m = r.mapping(dns_m, "rate_limit")
    rate = RateLimit()
    if rl_m is not None:
        r.keys(rl_m, "dns.rate_limit", ("qps", "burst", "exempt"))
        rate = RateLimit(
            qps=float(r.typed(rl_m, "qps", (int, float), "queries per second", rate.qps)),
            burst=r.typed(rl_m, "burst", int, "a number", rate.burst),
            exempt=tuple(n for n, _ in r.networks(rl_m, "exempt")),
        )
    bp = r.mapping(dns_m, "blockpage") or {}
    if isinstance(bp, YMap):
        r.keys(bp, "dns.blockpage", ("ipv4", "ipv6"))
    local: dict = {}
    lr = r.mapping(dns_m, "local_records") or YMap()
    for name, addrs in lr.items():
        try:
            key = normalize(name)
        except NameError_ as exc:
            r.problem(lr.line_of(name), "policy.bad_name", value=name, why=str(exc))
            continue
        values = [addrs] if isinstance(addrs, str) else list(addrs or [])
        good = []
        for a in values:
            try:
                good.append(str(ipaddress.ip_address(str(a))))
            except ValueError:
                r.problem(lr.line_of(name), "policy.bad_network", value=a)
        local[key] = tuple(good)
    zones: dict = {}
    fz = r.mapping(dns_m, "forward_zones") or YMap()
    for zone, ups in fz.items():
        try:
            zones[normalize(zone)] = tuple([ups] if isinstance(ups, str) else [str(u) for u in ups or []])
        except NameError_ as exc:
            r.problem(fz.line_of(zone), "policy.bad_name", value=zone, why=str(exc))
    relays = tuple(n for n, _ in r.networks(dns_m, "relays"))
    dns = DnsSettings(
        listen=tuple(listen) or base.dns.listen,
        workers=workers,
        upstreams=tuple(u for u, _ in r.str_list(dns_m, "upstreams")),
        bootstrap=tuple(u for u, _ in r.str_list(dns_m, "bootstrap_upstreams")),
        timeout=float(r.typed(dns_m, "timeout", (int, float), "seconds", 2.0)),
        block_ttl=r.typed(dns_m, "block_ttl", int, "seconds", 60),
        cache=cache,
        rate_limit=rate if not relays else RateLimit(rate.qps, rate.burst, rate.exempt + relays),
        relays=relays,
        blockpage_v4=bp.get("ipv4") if isinstance(bp, dict) else None,
        blockpage_v6=bp.get("ipv6") if isinstance(bp, dict) else None,
        local_records=local,
        forward_zones=zones,
        rebinding_protection=r.typed(dns_m, "rebinding_protection", bool, "yes/no", True),
        time_servers=tuple(normalize(t) for t, _ in r.str_list(dns_m, "time_servers")) or DEFAULT_TIME_SERVERS,
    )
    pol_m = r.mapping(doc, "policy") or YMap()
    if isinstance(pol_m, YMap) and pol_m:
        r.keys(pol_m, "policy", ("department", "school", "cache_dir", "watch"))
    here = path.parent

    def rel(key: str, default: Path | None) -> Path | None:
        raw = pol_m.get(key) if isinstance(pol_m, dict) else None
        return (here / raw).resolve() if raw else default

    policy = PolicySettings(
        department=rel("department", base.policy.department),
        school=rel("school", base.policy.school),
        cache_dir=rel("cache_dir", base.policy.cache_dir),
        watch=bool(pol_m.get("watch", True)) if isinstance(pol_m, dict) else True,
    )
    metrics = _metrics(r, r.mapping(doc, "metrics"), path.parent)
    priv_m = r.mapping(doc, "privacy")
    privacy = PrivacySettings()
    if priv_m is not None:
        r.keys(priv_m, "privacy", ("min_group_size", "decision_interval"))
        privacy = PrivacySettings(
            min_group_size=r.typed(priv_m, "min_group_size", int, "a number", 10),
            decision_interval=float(r.typed(priv_m, "decision_interval", (int, float), "seconds", 86400)),
        )
    state_raw = r.typed(doc, "state_dir", str, "a folder path")
    state_dir = (here / state_raw).resolve() if state_raw else None
    updater = proxy = None
    if doc.get("updater") is not None:
        from gateway.updater import read_updater_settings

        updater = read_updater_settings(r.mapping(doc, "updater"), r, here)
    if doc.get("proxy") is not None:
        from gateway.proxy.config import read_proxy_settings

        proxy = read_proxy_settings(r.mapping(doc, "proxy"), r, here)
    log_m = r.mapping(doc, "log") or {}
    query_log = QueryLogSettings()
    if isinstance(log_m, YMap):
        r.keys(log_m, "log", ("level", "query_log"))
        ql = r.mapping(log_m, "query_log")
        if ql is not None:
            r.keys(ql, "log.query_log", ("enabled", "path", "privacy", "retention_days"))
            level_q = r.typed(ql, "privacy", str, "full, hide_names, hide_clients or counts", "hide_clients")
            if level_q not in ("full", "hide_names", "hide_clients", "counts"):
                r.problem(ql.line_of("privacy"), "schema.choice", key="privacy",
                          allowed="full, hide_names, hide_clients, counts", got=level_q)
            raw_path = r.typed(ql, "path", str, "a file path")
            query_log = QueryLogSettings(
                enabled=bool(r.typed(ql, "enabled", bool, "yes/no", False)),
                path=(here / raw_path).resolve() if raw_path else None,
                privacy=level_q,
                retention_days=r.typed(ql, "retention_days", int, "days", 7),
            )
    level = str(log_m.get("level", "info")) if isinstance(log_m, dict) else "info"
    if any(not p.warning for p in problems):
        raise ConfigError(problems)
    return Settings(dns=dns, policy=policy, metrics=metrics, privacy=privacy, state_dir=state_dir, updater=updater,
                    proxy=proxy, log_level=level, query_log=query_log, source=display, embedded=False)


def _metrics(r: FieldReader, m: YMap | None, here: Path) -> MetricsSettings:
    if m is None:
        return MetricsSettings()
    r.keys(m, "metrics", ("enabled", "listen", "allow", "basic_auth", "tls"))
    host, port = "127.0.0.1", 9153
    raw = r.typed(m, "listen", str, "host:port")
    if raw:
        try:
            listen = _listen(raw)
            host, port = listen.host, listen.port
        except ValueError:
            r.problem(m.line_of("listen"), "settings.bad_listen", value=raw)
    auth = None
    auth_m = r.mapping(m, "basic_auth")
    if auth_m is not None:
        r.keys(auth_m, "metrics.basic_auth", ("username", "password_file"), ("username", "password_file"))
        pw_file = r.typed(auth_m, "password_file", str, "a file path")
        if pw_file:
            try:
                auth = (str(auth_m.get("username", "")), (here / pw_file).read_text(encoding="utf-8").strip())
            except OSError:
                r.problem(auth_m.line_of("password_file"), "file.missing")
    tls = None
    tls_m = r.mapping(m, "tls")
    if tls_m is not None:
        r.keys(tls_m, "metrics.tls", ("cert", "key", "client_ca"), ("cert", "key"))
        tls = {k: str((here / str(v)).resolve()) for k, v in tls_m.items() if v}
    return MetricsSettings(
        enabled=bool(r.typed(m, "enabled", bool, "yes/no", True)),
        host=host, port=port,
        allow=tuple(n for n, _ in r.networks(m, "allow")),
        basic_auth=auth, tls=tls,
    )


def system_resolvers(resolv_conf: Path | None = None) -> list[str]:
    """Nameservers from resolv.conf (SCHOOL_GATEWAY_RESOLV_CONF overrides its path), as upstream specs."""
    resolv_conf = resolv_conf or Path(os.environ.get("SCHOOL_GATEWAY_RESOLV_CONF", "/etc/resolv.conf"))
    out = []
    try:
        for line in resolv_conf.read_text(encoding="utf-8", errors="replace").splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                try:
                    ip = ipaddress.ip_address(parts[1].split("%", 1)[0])
                except ValueError:
                    continue
                out.append(f"udp://[{ip}]:53" if ip.version == 6 else f"udp://{ip}:53")
    except OSError:
        pass
    return out
