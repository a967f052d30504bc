"""The block page (vi/en, self-contained HTML) and the small HTTP server that answers for the DNS block-page address.

The server also hands out the PAC/WPAD file for explicit-proxy clients and the school CA certificate.
"""

from __future__ import annotations

import asyncio
import html
import logging
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

from gateway.core.model import Reason
from gateway.i18n import tr
from gateway.proxy.judge import is_ip
from gateway.proxy.messages import BAND_AGES
from gateway.proxy.ref import make_ref

log = logging.getLogger("gateway.proxy")

SECURITY_HEADERS = (
    ("Cache-Control", "no-store"),
    # Nothing may load from anywhere: the page is one self-contained document.
    ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; "
                                "form-action 'none'; frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
)

_CSS = """
:root{color-scheme:light dark}
*{box-sizing:border-box}
body{margin:0;background:#eef1f4;color:#1b1b1b;font:1.125rem/1.55 system-ui,-apple-system,"Segoe UI",Roboto,
"Noto Sans",Arial,sans-serif}
main{max-width:40rem;margin:0 auto;padding:1.25rem 1.25rem 2rem;background:#fff;min-height:100vh}
.top{display:flex;justify-content:space-between;gap:1rem;align-items:baseline;font-size:1rem;color:#3d3d3d}
h1{font-size:1.75rem;line-height:1.25;color:#8a1c1c;margin:1rem 0 .5rem}
h2{font-size:1.25rem;margin:1.75rem 0 .5rem}
p{margin:.5rem 0}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.35rem 1rem;margin:1rem 0;padding:1rem;
background:#f4f6f8;border-radius:.5rem}
dt{font-weight:600}dd{margin:0;overflow-wrap:anywhere}
code{font:1.125rem/1.4 ui-monospace,Menlo,Consolas,monospace;letter-spacing:.04em}
a{color:#0b4f8a}a:focus-visible,.button:focus-visible{outline:3px solid #b45309;outline-offset:2px}
.button{display:inline-block;min-height:44px;padding:.7rem 1.2rem;border-radius:.5rem;background:#0b4f8a;
color:#fff;font-weight:600;text-decoration:none}
ul{padding-left:1.2rem}
.help{margin-top:1.75rem;padding:1rem;border-left:.4rem solid #b45309;background:#fff4e5;border-radius:.25rem}
.help h2{margin-top:0}
.call{background:#8a1c1c}
footer{margin-top:2rem;font-size:.95rem;color:#3d3d3d}
@media (max-width:30rem){dl{grid-template-columns:1fr}dt{margin-top:.4rem}}
@media (prefers-color-scheme:dark){body{background:#121212;color:#f1f1f1}main{background:#1c1c1c}
.top,footer{color:#d0d0d0}h1{color:#ff9b9b}dl{background:#262626}a{color:#9ccaff}.button{background:#0b4f8a;
color:#fff}.help{background:#2b2113}.call{background:#8a1c1c}}
"""


def choose_lang(accept_language: str | None, query: str | None = None) -> str:
    """'vi' or 'en': ?lang= first, else the better-ranked of the two in Accept-Language; Vietnamese by default."""
    if query in ("vi", "en"):
        return query
    best = {"vi": -1.0, "en": -1.0}
    for position, part in enumerate((accept_language or "").split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        prefix = tag.strip().lower().split("-", 1)[0]
        if prefix not in best:
            continue
        q = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                q = float(params[2:])
            except ValueError:
                q = 0.0
        score = q - position * 1e-6  # equal q: the one listed first wins
        best[prefix] = max(best[prefix], score)
    return "en" if best["en"] > best["vi"] and best["en"] > 0 else "vi"


def _band_label(snapshot, band: str, lang: str) -> str:
    policy = snapshot.bands.get(band) if snapshot is not None else None
    name = policy.name.get(lang) if policy is not None else band
    ages = BAND_AGES.get(band)
    return f"{name} ({tr('proxy.page.ages', lang, ages=ages)})" if ages else name


def _format_time(verdict, lang: str) -> str:
    local = verdict.now.astimezone(verdict.snapshot.tz) if verdict.snapshot is not None else verdict.now
    return local.strftime("%H:%M, %d/%m/%Y") if lang == "vi" else local.strftime("%Y-%m-%d %H:%M")


def render_block(verdict, lang: str, ref_key: bytes, path: str = "/") -> tuple[int, list[tuple[str, str]], bytes]:
    """(status, headers, body) of the block page for `verdict` in `lang`."""
    e = html.escape
    d = verdict.decision
    snap = verdict.snapshot
    other = "en" if lang == "vi" else "vi"
    cat = snap.categories.get(d.category) if (snap is not None and d.category) else None
    ref = make_ref(d, snap, verdict.now, ref_key) if snap is not None else "-"
    school = snap.school if snap is not None else None

    if not verdict.served:
        why, category = tr("proxy.page.why.not_served", lang), tr("proxy.page.reason.not_served", lang)
    elif cat is not None:
        category = cat.name.get(lang)
        why = tr("proxy.page.why.category", lang, category=category)
        if d.reason is Reason.SCHEDULE:
            why += " " + tr("proxy.page.why.schedule", lang)
    elif d.reason in (Reason.SCHOOL_DENY, Reason.WALLED_GARDEN):
        why, category = tr(f"proxy.page.why.{d.reason.value}", lang), tr(f"proxy.page.reason.{d.reason.value}", lang)
    else:
        why, category = tr("proxy.page.why.error", lang), tr("proxy.page.reason.error", lang)
    description = cat.description.get(lang) if cat is not None else ""

    rows = [("proxy.page.address", e(verdict.host or "?")), ("proxy.page.category", e(category))]
    if d.band != "none":
        rows.append(("proxy.page.band", e(_band_label(snap, d.band, lang))))
    rows += [("proxy.page.time", e(_format_time(verdict, lang))),
             ("proxy.page.ref", f"<code>{e(ref)}</code>")]
    details = "".join(f"<dt>{e(tr(k, lang))}</dt><dd>{v}</dd>" for k, v in rows)

    contact = dict(school.contact or {}) if school is not None else {}
    items = []
    for key in ("name", "email", "phone", "room"):
        value = contact.get(key)
        if not value:
            continue
        value = str(value)
        if key == "email":
            shown = f'<a href="mailto:{e(value)}">{e(value)}</a>'
        elif key == "phone":
            shown = f'<a href="tel:{e(value.replace(" ", ""))}">{e(value)}</a>'
        else:
            shown = e(value)
        items.append(f"<li>{e(tr('proxy.page.contact.' + key, lang))}: {shown}</li>")
    ask_key = "proxy.page.ask.staff" if d.band == "staff" else "proxy.page.ask.child"
    button = ""
    if contact.get("email"):
        subject = quote(tr("proxy.page.mail_subject", lang, host=verdict.host or "?", ref=ref))
        body = quote(tr("proxy.page.mail_body", lang))
        button = (f'<p><a class="button" href="mailto:{e(str(contact["email"]))}?subject={subject}&amp;body={body}">'
                  f"{e(tr('proxy.page.button', lang))}</a></p>")
    hotline = ""
    if cat is not None and cat.hotline:
        hotline = (f'<section class="help" aria-labelledby="help"><h2 id="help">{e(tr("proxy.page.help", lang))}</h2>'
                   f"<p>{e(tr('proxy.page.hotline', lang))}</p>"
                   f'<p><a class="button call" href="tel:111">{e(tr("proxy.page.call", lang))}</a></p></section>')
    school_name = e(school.name) if school is not None else ""
    desc_html = f"<p>{e(description)}</p>" if description else ""
    switch = (f'<a href="{e(_lang_link(path, other))}" lang="{other}" hreflang="{other}">'
              f'{e(tr("proxy.page.other_lang", lang))}</a>')
    page = f"""<!doctype html>
<html lang="{lang}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{e(tr("proxy.page.title", lang))}</title>
<style>{_CSS}</style>
</head>
<body>
<main>
<div class="top"><span>{school_name}</span>{switch}</div>
<h1>{e(tr("proxy.page.title", lang))}</h1>
<p>{e(tr("proxy.page.lead", lang))}</p>
<section aria-labelledby="why"><h2 id="why">{e(tr("proxy.page.why", lang))}</h2>
<p>{e(why)}</p>{desc_html}</section>
{hotline}
<dl>{details}</dl>
<section aria-labelledby="ask"><h2 id="ask">{e(tr("proxy.page.ask", lang))}</h2>
<p>{e(tr(ask_key, lang))} {e(tr("proxy.page.ask.quote", lang))}</p>
{"<ul>" + "".join(items) + "</ul>" if items else ""}{button}</section>
<footer>{school_name + " · " if school_name else ""}{e(tr("proxy.page.footer", lang))}</footer>
</main>
</body>
</html>
"""
    headers = [("Content-Type", "text/html; charset=utf-8"), ("Content-Language", lang), *SECURITY_HEADERS]
    return 403, headers, page.encode("utf-8")


def _lang_link(path: str, lang: str) -> str:
    # Same address with ?lang=: it is blocked too, so the page comes back in the other language.
    bare = (path or "/").split("?", 1)[0] or "/"
    return f"{bare}?lang={lang}"


def render_simple(title_key: str, text_key: str | None, lang: str, links: list[tuple[str, str]] = (),
                  status: int = 200) -> tuple[int, list[tuple[str, str]], bytes]:
    """A small page in the block page's style (not blocked now, index)."""
    e = html.escape
    items = "".join(f'<li><a href="{e(href)}">{e(tr(key, lang))}</a></li>' for key, href in links)
    body = f"""<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(tr(title_key, lang))}</title><style>{_CSS}</style></head>
<body><main><h1 style="color:inherit">{e(tr(title_key, lang))}</h1>
{f"<p>{e(tr(text_key, lang))}</p>" if text_key else ""}{f"<ul>{items}</ul>" if items else ""}</main></body></html>
"""
    headers = [("Content-Type", "text/html; charset=utf-8"), ("Content-Language", lang), *SECURITY_HEADERS]
    return status, headers, body.encode("utf-8")


def pac_file(proxy: str, direct: tuple[str, ...] = (), fallback_direct: bool = False) -> bytes:
    """The PAC/WPAD script: everything through the school proxy except local names and private addresses."""
    lines = [
        "// School gateway proxy auto-configuration (served by school-gateway).",
        "function FindProxyForURL(url, host) {",
        "  host = host.toLowerCase();",
        '  if (isPlainHostName(host) || host === "localhost" || dnsDomainIs(host, ".local")) return "DIRECT";',
        "  if (/^\\d+\\.\\d+\\.\\d+\\.\\d+$/.test(host) && (isInNet(host, \"10.0.0.0\", \"255.0.0.0\") ||",
        '      isInNet(host, "172.16.0.0", "255.240.0.0") || isInNet(host, "192.168.0.0", "255.255.0.0") ||',
        '      isInNet(host, "127.0.0.0", "255.0.0.0") || isInNet(host, "169.254.0.0", "255.255.0.0")))',
        '    return "DIRECT";',
    ]
    for name in direct:
        lines.append(f'  if (host === "{name}" || dnsDomainIs(host, ".{name}")) return "DIRECT";')
    target = f"PROXY {proxy}" + ("; DIRECT" if fallback_direct else "")
    lines += [f'  return "{target}";', "}", ""]
    return "\n".join(lines).encode("ascii")


def response_bytes(status: int, headers: list[tuple[str, str]], body: bytes, head_only: bool = False) -> bytes:
    reasons = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
               431: "Request Header Fields Too Large"}
    out = [f"HTTP/1.1 {status} {reasons.get(status, 'OK')}"]
    out += [f"{k}: {v}" for k, v in headers]
    out += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
    data = "\r\n".join(out).encode("latin-1")
    return data if head_only else data + body


class BlockPageServer:
    """HTTP/1.1 on the block-page address: any Host gets the block page for that host's decision.

    The DNS filter's `blockpage` answer points blocked names here (port 80). Browsers that go straight
    to HTTPS get a certificate error instead: this server has no certificate for the blocked name, and
    must not have one (see docs/proxy.md).
    """

    def __init__(self, judge, stats, ref_key: bytes, *, pac: bytes | None = None, ca_cert: Path | None = None,
                 timeout: float = 10.0):
        self.judge = judge
        self.stats = stats
        self.ref_key = ref_key
        self.pac = pac
        self.ca_cert = ca_cert
        self.timeout = timeout

    async def start(self, host: str, port: int) -> asyncio.AbstractServer:
        return await asyncio.start_server(self._serve, host, port, limit=32 * 1024, backlog=512)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            peer = writer.get_extra_info("peername")
            client = peer[0] if peer else ""
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.timeout)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
                return
            writer.write(self.respond(client, head))
            await writer.drain()
        except Exception as exc:  # a broken request must not take the server down
            log.debug("block page request failed: %s", exc)
            self.stats.error("blockpage")
        finally:
            writer.close()

    def respond(self, client: str, head: bytes) -> bytes:
        """The whole HTTP response for one request head from `client`."""
        try:
            text = head.decode("latin-1")
            request_line, *header_lines = text.split("\r\n")
            method, target, version = request_line.split(" ")
            if not version.startswith("HTTP/1."):
                raise ValueError(version)
        except ValueError:
            return response_bytes(400, [("Content-Type", "text/plain")], b"bad request\n")
        headers = {}
        for line in header_lines:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        head_only = method == "HEAD"
        if method not in ("GET", "HEAD", "POST"):
            return response_bytes(405, [("Allow", "GET, HEAD")], b"")
        parts = urlsplit(target)
        path = parts.path or "/"
        host = parts.hostname or headers.get("host", "")
        if host.startswith("["):
            host = host[1:].split("]", 1)[0]
        elif host.count(":") == 1:
            host = host.split(":", 1)[0]
        query = parse_qs(parts.query).get("lang", [None])[0]
        lang = choose_lang(headers.get("accept-language"), query)
        if path in ("/proxy.pac", "/wpad.dat") and self.pac is not None:
            return response_bytes(200, [("Content-Type", "application/x-ns-proxy-autoconfig"),
                                        ("Cache-Control", "max-age=300")], self.pac, head_only)
        if path in ("/school-ca.crt", "/school-ca.pem", "/school-ca.cer") and self.ca_cert is not None:
            try:
                pem = self.ca_cert.read_bytes()
            except OSError:
                return response_bytes(404, [("Content-Type", "text/plain")], b"no CA\n", head_only)
            if path.endswith(".cer"):
                from cryptography import x509
                from cryptography.hazmat.primitives.serialization import Encoding

                body = x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)
            else:
                body = pem
            return response_bytes(200, [("Content-Type", "application/x-x509-ca-cert"),
                                        ("Content-Disposition", f'attachment; filename="{path[1:]}"')],
                                  body, head_only)
        if not host or is_ip(host):
            links = []
            if self.pac is not None:
                links.append(("proxy.page.index.pac", "/proxy.pac"))
            if self.ca_cert is not None and self.ca_cert.exists():
                links.append(("proxy.page.index.ca", "/school-ca.crt"))
            return response_bytes(*render_simple("proxy.page.index.title", None, lang, links), head_only)
        verdict = self.judge.verdict(client, host)
        d = verdict.decision
        band = d.band
        if verdict.blocked:
            self.stats.count(band, "block" if verdict.served else "refused", "blockpage", d,
                             client if verdict.served else None)
            return response_bytes(*render_block(verdict, lang, self.ref_key, target if target.startswith("/")
                                                else path), head_only)
        self.stats.count(band, d.action.value, "blockpage", d, client)
        return response_bytes(*render_simple("proxy.page.open.title", "proxy.page.open.text", lang), head_only)


