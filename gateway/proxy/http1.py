"""Just enough HTTP/1.1 for the relay to forward one plain request: parse a head, check framing, rewrite it."""

from __future__ import annotations

from dataclasses import dataclass, field

# Hop-by-hop headers (RFC 9110 7.6.1) and the proxy's own: never forwarded as they came.
HOP_BY_HOP = frozenset({b"connection", b"proxy-connection", b"keep-alive", b"proxy-authorization",
                        b"proxy-authenticate", b"te", b"trailer", b"transfer-encoding", b"upgrade", b"expect"})
_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


class HeadError(ValueError):
    """A request the relay will not forward; `status` is the answer to give."""

    def __init__(self, status: int, why: str):
        super().__init__(why)
        self.status = status


@dataclass
class RequestHead:
    method: str
    target: str  # as sent: absolute-form (explicit proxy) or origin-form (transparent)
    version: str
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    host: str = ""  # from the absolute URI, else the Host header (without port)
    port: int = 80
    path: str = "/"
    length: int = 0  # request body bytes (Content-Length)
    chunked: bool = False
    upgrade: bytes | None = None  # e.g. b"websocket" when the client asks to switch protocols
    expect_continue: bool = False

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


def parse_request(head: bytes) -> RequestHead:
    """Parse a request head (without the final blank line). Raises HeadError for anything that could
    be read two ways (request smuggling) or that this relay does not forward."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1.") or not parts[0] or not set(parts[0]) <= _TOKEN:
        raise HeadError(400, "malformed request line")
    method, target, version = (p.decode("latin-1") for p in parts)
    req = RequestHead(method, target, version)
    lengths = set()
    encodings = []
    connection = b""
    for line in lines[1:]:
        if not line or line[:1] in (b" ", b"\t"):
            raise HeadError(400, "obsolete header folding")
        name, sep, value = line.partition(b":")
        if not sep or not name or not set(name) <= _TOKEN:
            raise HeadError(400, "malformed header")
        value = value.strip(b" \t")
        lower = name.lower()
        if lower == b"content-length":
            lengths.update(v.strip() for v in value.split(b","))
        elif lower == b"transfer-encoding":
            encodings += [v.strip().lower() for v in value.split(b",") if v.strip()]
        elif lower == b"connection":
            connection += b"," + value.lower()
        elif lower == b"upgrade":
            req.upgrade = value
        elif lower == b"expect" and value.lower() == b"100-continue":
            req.expect_continue = True
        req.headers.append((name, value))
    if lengths and encodings:
        raise HeadError(400, "both Content-Length and Transfer-Encoding")
    if len(lengths) > 1:
        raise HeadError(400, "conflicting Content-Length")
    if lengths:
        (text,) = lengths
        if not text.isdigit() or len(text) > 15:
            raise HeadError(400, "bad Content-Length")
        req.length = int(text)
    if encodings:
        if encodings != [b"chunked"]:
            raise HeadError(501, "unsupported Transfer-Encoding")
        req.chunked = True
    if req.upgrade is not None and b"upgrade" not in [t.strip() for t in connection.split(b",")]:
        req.upgrade = None
    lowered = target.lower()
    if lowered.startswith("http://"):
        rest = target[7:]
        authority, slash, path = rest.partition("/")
        req.path = "/" + path if slash else "/"
        authority = authority.rpartition("@")[2]  # never forward credentials in the URL's authority
        req.host, req.port = _authority(authority, 80)
    elif lowered.startswith("https://") or lowered.startswith("ftp://"):
        raise HeadError(400, "only http:// URLs here; HTTPS goes through CONNECT")
    elif target.startswith("/"):
        req.path = target
        host = req.header(b"host")
        if host:
            req.host, req.port = _authority(host.decode("latin-1"), 80)
    else:
        raise HeadError(400, "bad request target")
    if not req.host:
        raise HeadError(400, "no host")
    return req


def _authority(text: str, default: int) -> tuple[str, int]:
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    if port and not port.isdigit():
        raise HeadError(400, "bad port")
    value = int(port) if port else default
    if not 0 < value < 65536:
        raise HeadError(400, "bad port")
    return host, value


def upstream_head(req: RequestHead, path: str, extra: list[tuple[str, str]]) -> bytes:
    """The request as the origin gets it: origin-form, one request per connection (Connection: close)."""
    out = [f"{req.method} {path} HTTP/1.1".encode("latin-1")]
    replaced = {name.lower().encode() for name, _ in extra}
    has_host = False
    for name, value in req.headers:
        lower = name.lower()
        if lower in HOP_BY_HOP or lower in replaced:
            continue
        if lower == b"host":
            has_host = True
        out.append(name + b": " + value)
    if not has_host:
        host = f"[{req.host}]" if ":" in req.host else req.host
        out.append(f"Host: {host}{'' if req.port == 80 else f':{req.port}'}".encode("latin-1"))
    out += [f"{name}: {value}".encode("latin-1") for name, value in extra]
    if req.upgrade is not None:
        out += [b"Connection: Upgrade", b"Upgrade: " + req.upgrade]
    else:
        out.append(b"Connection: close")
    return b"\r\n".join(out) + b"\r\n\r\n"


def response_head(head: bytes) -> tuple[int, bytes]:
    """(status, head with Connection: close) for a response head without its blank line."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise HeadError(502, "malformed response")
    status = int(parts[1])
    if status == 101:
        return status, head + b"\r\n\r\n"
    kept = [line for line in lines[1:]
            if line.partition(b":")[0].strip().lower() not in (b"connection", b"keep-alive", b"proxy-connection")]
    if status >= 200:
        kept.append(b"Connection: close")
    return status, b"\r\n".join([lines[0], *kept]) + b"\r\n\r\n"
