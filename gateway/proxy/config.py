"""The `proxy:` map of gateway.yaml -> frozen ProxySettings (problems collected with file and line)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from gateway.core.names import NameError_, normalize
from gateway.i18n import register
from gateway.settings import Listen
from gateway.shipped import shipped

register({
    "proxy.bad_address": (
        "địa chỉ '{value}' không hợp lệ — dùng IP:cổng, ví dụ 0.0.0.0:3128 hoặc [::]:3128",
        "address '{value}' is not valid — use IP:port, e.g. 0.0.0.0:3128 or [::]:3128",
    ),
    "proxy.config.bad_port": ("cổng '{value}' không hợp lệ — dùng số từ 1 đến 65535",
                       "port '{value}' is not valid — use a number from 1 to 65535"),
    "proxy.bad_size": ("kích thước '{value}' không hợp lệ — ví dụ 512k, 1m, 10m",
                       "size '{value}' is not valid — e.g. 512k, 1m, 10m"),
    "proxy.bad_origin": ("'{value}' không phải IP:cổng của máy chủ gốc", "'{value}' is not an origin IP:port"),
})

MODES = ("explicit", "transparent", "both")
INTERCEPT = ("needed", "all")
PLAIN_HTTP = ("relay", "mitmproxy")
NO_SNI = ("block", "allow")
ALLOWED_KEYS = ("enabled", "mode", "listen", "transparent_listen", "blockpage_listen", "fast_path", "plain_http", "pac",
                "intercept", "never_intercept", "ca", "ref_key", "connect_ports", "no_sni", "handshake_timeout",
                "stream_large_bodies", "transparent_origins", "upstream_ca", "loopback_origins")


def state_dir() -> Path:
    """Where the box keeps its own secrets (CA, reference-code key): SCHOOL_GATEWAY_STATE_DIR overrides."""
    return Path(os.environ.get("SCHOOL_GATEWAY_STATE_DIR", "/var/lib/school-gateway"))


# One address type for every listener and destination in the gateway's config.
Address = Listen


def _default_never_intercept() -> tuple[Path, ...]:
    return (shipped("blocklists/never_intercept.txt"),)


@dataclass(frozen=True, slots=True)
class ProxySettings:
    """Everything the proxy needs from gateway.yaml; built once, never changed."""

    mode: str = "explicit"  # explicit (browsers set a proxy / PAC), transparent (firewall redirect), both
    listen: Address = Listen("127.0.0.1", 3128)  # explicit-proxy port (CONNECT and plain HTTP)
    transparent_listen: Address = Listen("127.0.0.1", 3129)  # where the firewall redirects ports 80 and 443
    blockpage_listen: Address | None = Listen("127.0.0.1", 8080)  # block page, PAC/WPAD, CA download
    fast_path: bool = True  # False: mitmproxy handles every connection (slower; for comparison)
    plain_http: str = "relay"  # who forwards plain HTTP: the relay (one request a connection) or mitmproxy
    pac_proxy: str | None = None  # "host:port" the PAC file names; default: `listen` unless it is a wildcard
    pac_direct: tuple[str, ...] = ()  # names the PAC file sends DIRECT (the school's own intranet)
    pac_fallback_direct: bool = False  # True lets browsers go direct when the proxy is down (fails open)
    intercept: str = "needed"  # for inspect_tls groups: decrypt only blocked/safe-search hosts, or all
    never_intercept: tuple[Path, ...] = field(default_factory=_default_never_intercept)
    never_intercept_names: tuple[str, ...] = ()
    ca_dir: Path = field(default_factory=lambda: state_dir() / "ca")
    ca_passphrase_file: Path | None = None
    ref_key: Path = field(default_factory=lambda: state_dir() / "ref.key")
    connect_ports: tuple[int, ...] = (443,)  # CONNECT elsewhere would tunnel VPNs and SSH past the filter
    no_sni: str = "block"  # TLS without a server name cannot be judged; block it, or judge the IP
    handshake_timeout: float = 10.0  # seconds a client has to send its CONNECT / ClientHello / request
    stream_large_bodies: str = "1m"  # mitmproxy streams bodies above this instead of buffering them
    transparent_origins: dict = field(default_factory=dict)  # name -> Address; labs and tests only
    loopback_origins: bool = False  # let clients reach the box's own loopback (benchmarks only)
    upstream_ca: Path | None = None  # CA bundle for verifying origins instead of the public one (a private intranet)
    source: str = "(built-in defaults)"

    @property
    def explicit(self) -> bool:
        return self.mode in ("explicit", "both")

    @property
    def transparent(self) -> bool:
        return self.mode in ("transparent", "both")

    def pac_target(self) -> str:
        """The proxy address the PAC file hands to browsers."""
        if self.pac_proxy:
            return self.pac_proxy
        return str(self.listen)


def read_proxy_settings(m, r, base_dir: Path) -> ProxySettings | None:
    """Read the value of `proxy:` (a YMap, or None when the key is absent) with FieldReader `r`.

    Returns None when there is no proxy section or it says `enabled: false`. Problems go to `r`;
    the caller raises ConfigError when any was an error. Relative paths are relative to `base_dir`
    (the folder of gateway.yaml).
    """
    from gateway.policy.source import YList, YMap

    if m is None:
        return None
    if not isinstance(m, YMap):
        r.problem(None, "schema.type", key="proxy", expected="a mapping", got=type(m).__name__)
        return None
    r.keys(m, "proxy", ALLOWED_KEYS)
    if not r.typed(m, "enabled", bool, "yes/no", True):
        return None
    base = ProxySettings()

    def address(key: str, default: Address | None, allow_off: bool = False) -> Address | None:
        raw = m.get(key)
        if raw is None:
            return default
        if allow_off and (raw is False or str(raw).strip().lower() in ("off", "no", "none")):
            return None
        try:
            return Address.parse(str(raw))
        except ValueError:
            r.problem(m.line_of(key), "proxy.bad_address", value=raw)
            return default

    def choice(key: str, allowed: tuple[str, ...], default: str) -> str:
        raw = r.typed(m, key, str, "text")
        if raw is None:
            return default
        if raw.strip().lower() not in allowed:
            r.problem(m.line_of(key), "schema.choice", key=key, allowed=", ".join(allowed), got=raw)
            return default
        return raw.strip().lower()

    def path(raw: str) -> Path:
        p = Path(os.path.expanduser(str(raw)))
        return p if p.is_absolute() else (base_dir / p).resolve()

    def names(container, key: str) -> tuple[str, ...]:
        out = []
        for raw, where in r.str_list(container, key):
            text = raw[2:] if raw.startswith("*.") else raw
            try:
                out.append(normalize(text))
            except NameError_ as exc:
                r.problem(where.line, "policy.bad_name", value=raw, why=str(exc))
        return tuple(out)

    mode = choice("mode", MODES, base.mode)
    listen = address("listen", base.listen)
    transparent_listen = address("transparent_listen", base.transparent_listen)
    blockpage = address("blockpage_listen", base.blockpage_listen, allow_off=True)

    pac_proxy, pac_direct, pac_fallback = None, (), False
    pac_m = r.mapping(m, "pac")
    if pac_m is not None:
        r.keys(pac_m, "proxy.pac", ("proxy", "direct", "fallback_direct"))
        pac_proxy = r.typed(pac_m, "proxy", str, "host:port")
        pac_direct = names(pac_m, "direct")
        pac_fallback = r.typed(pac_m, "fallback_direct", bool, "yes/no", False)

    lists: list[Path] = []
    extra: tuple[str, ...] = ()
    ni = m.get("never_intercept")
    if isinstance(ni, (YList, str)):
        ni_m = YMap()
        ni_m.line, ni_m.key_lines, ni_m.file = m.line_of("never_intercept"), {}, getattr(m, "file", "")
        ni_m["lists"] = ni
        ni = ni_m
    if isinstance(ni, YMap):
        r.keys(ni, "proxy.never_intercept", ("shipped", "lists", "names"))
        if r.typed(ni, "shipped", bool, "yes/no", True):
            lists.extend(base.never_intercept)
        for raw, where in r.str_list(ni, "lists"):
            p = path(raw)
            if not p.exists():
                r.problem(where.line, "policy.list_missing", path=raw, category="never_intercept")
                continue
            lists.append(p)
        extra = names(ni, "names")
    elif ni is None:
        lists.extend(base.never_intercept)
    else:
        r.problem(m.line_of("never_intercept"), "schema.type", key="never_intercept",
                  expected="{lists: [...], names: [...]}", got=str(ni))
        lists.extend(base.never_intercept)

    ca_dir, passphrase = base.ca_dir, None
    ca_m = r.mapping(m, "ca")
    if ca_m is not None:
        r.keys(ca_m, "proxy.ca", ("dir", "passphrase_file"))
        raw = r.typed(ca_m, "dir", str, "a folder")
        ca_dir = path(raw) if raw else ca_dir
        raw = r.typed(ca_m, "passphrase_file", str, "a file")
        passphrase = path(raw) if raw else None
    raw = r.typed(m, "ref_key", str, "a file")
    ref_key = path(raw) if raw else base.ref_key

    ports = []
    raw_ports = m.get("connect_ports")
    if raw_ports is not None:
        items = raw_ports if isinstance(raw_ports, list) else [raw_ports]
        for item in items:
            if isinstance(item, int) and not isinstance(item, bool) and 1 <= item <= 65535:
                ports.append(item)
            else:
                r.problem(m.line_of("connect_ports"), "proxy.config.bad_port", value=item)
    timeout = r.typed(m, "handshake_timeout", (int, float), "seconds", base.handshake_timeout)
    if isinstance(timeout, (int, float)) and timeout <= 0:
        r.problem(m.line_of("handshake_timeout"), "schema.type", key="handshake_timeout",
                  expected="seconds > 0", got=str(timeout))
        timeout = base.handshake_timeout
    size = r.typed(m, "stream_large_bodies", str, "a size", base.stream_large_bodies)
    if size is not None and not _size_ok(size):
        r.problem(m.line_of("stream_large_bodies"), "proxy.bad_size", value=size)
        size = base.stream_large_bodies

    origins: dict = {}
    om = r.mapping(m, "transparent_origins")
    if om is not None:
        for name, value in om.items():
            try:
                origins[normalize(name)] = Address.parse(str(value), 443)
            except NameError_ as exc:
                r.problem(om.line_of(name), "policy.bad_name", value=name, why=str(exc))
            except ValueError:
                r.problem(om.line_of(name), "proxy.bad_origin", value=value)

    raw = r.typed(m, "upstream_ca", str, "a file")
    upstream_ca = path(raw) if raw else None
    if upstream_ca is not None and not upstream_ca.is_file():
        r.problem(m.line_of("upstream_ca"), "file.missing")
        upstream_ca = None

    return ProxySettings(
        mode=mode,
        listen=listen or base.listen,
        transparent_listen=transparent_listen or base.transparent_listen,
        blockpage_listen=blockpage,
        fast_path=r.typed(m, "fast_path", bool, "yes/no", True),
        plain_http=choice("plain_http", PLAIN_HTTP, base.plain_http),
        pac_proxy=pac_proxy,
        pac_direct=pac_direct,
        pac_fallback_direct=bool(pac_fallback),
        intercept=choice("intercept", INTERCEPT, base.intercept),
        never_intercept=tuple(lists),
        never_intercept_names=extra,
        ca_dir=ca_dir,
        ca_passphrase_file=passphrase,
        ref_key=ref_key,
        connect_ports=tuple(ports) or base.connect_ports,
        no_sni=choice("no_sni", NO_SNI, base.no_sni),
        handshake_timeout=float(timeout),
        stream_large_bodies=size,
        transparent_origins=origins,
        upstream_ca=upstream_ca,
        loopback_origins=r.typed(m, "loopback_origins", bool, "yes/no", False),
        source=getattr(r, "file", ""),
    )


def _size_ok(text: str) -> bool:
    text = text.strip().lower()
    if text and text[-1] in "kmg":
        text = text[:-1]
    return text.isdigit()
