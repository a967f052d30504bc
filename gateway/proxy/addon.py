"""The mitmproxy addon: the same decisions for the flows the relay hands over (and for all flows without it).

mitmproxy runs addon hooks inside `safecall`, which logs an exception and lets the flow go on: that
would fail open. Every hook here therefore catches its own errors and blocks instead.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket

from mitmproxy import http

from gateway.core.model import Action, Decision, Reason
from gateway.i18n import tr
from gateway.proxy import safesearch
from gateway.proxy.blockpage import choose_lang, render_block
from gateway.proxy.judge import Verdict, is_ip, is_local

log = logging.getLogger("gateway.proxy")

_LOOPBACK = ("127.0.0.1", "::1", "::ffff:127.0.0.1")


def _text_response(status: int, text: str) -> http.Response:
    return http.Response.make(status, text.encode("utf-8"), {"Content-Type": "text/plain; charset=utf-8",
                                                             "Cache-Control": "no-store"})


def _fail_closed(on_error):
    """Run the hook; on any exception log it and apply `on_error(self, *args)` (the blocking outcome)."""
    def wrap(hook):
        @functools.wraps(hook)
        def run(self, *args):
            try:
                return hook(self, *args)
            except Exception as exc:
                log.exception("proxy hook %s failed, blocking: %s", hook.__name__, exc)
                self.stats.error("decision")
                try:
                    on_error(self, *args)
                except Exception:
                    log.exception("could not block after a hook error")
        return run
    return wrap






class FilterAddon:
    """Judges CONNECT hosts, SNIs and each HTTP request; answers blocks with the block page; enforces
    safe search in requests; passes through (never decrypts) what need not be inspected."""

    def __init__(self, judge, stats, ref_key: bytes, *, handoffs: dict | None = None, connect_ports=(443,),
                 origin_resolver=None, block_no_sni: bool = True, loopback_origins: bool = False,
                 resolver=None):
        self.judge = judge
        self.stats = stats
        self.ref_key = ref_key
        self.handoffs = handoffs if handoffs is not None else {}
        self.connect_ports = frozenset(connect_ports)
        self.origin_resolver = origin_resolver
        self.block_no_sni = block_no_sni
        self.loopback_origins = loopback_origins
        self.resolver = resolver  # gateway.proxy.relay.HostResolver (None: the system's, uncached)
        self.ready = asyncio.Event()
        self._conn: dict[str, Verdict] = {}  # client connection id -> blocking connection-level verdict
        self._kill: set[str] = set()  # client connection ids whose pass-through must not reach a server
        self._dial: dict[str, str] = {}  # client connection id -> safe-search host to connect to instead

    # -- who is the client -----------------------------------------------------------------------
    def _client(self, conn) -> tuple[str, object | None]:
        peer = conn.peername
        if peer is None:
            return "", None
        if peer[0] in _LOOPBACK:
            handoff = self.handoffs.get(peer[1])
            if handoff is not None:
                return handoff.client, handoff
        return peer[0], None

    def _remember(self, conn_id: str, verdict: Verdict) -> Verdict:
        """Keep the blocking verdict for the connection; return the one that now stands."""
        old = self._conn.get(conn_id)
        if old is not None:
            return old
        if verdict.blocked:
            self._conn[conn_id] = verdict
        return verdict

    # -- lifecycle -------------------------------------------------------------------------------
    def running(self) -> None:
        self.ready.set()

    def client_disconnected(self, client) -> None:
        self._conn.pop(client.id, None)
        self._kill.discard(client.id)
        self._dial.pop(client.id, None)

    # -- hooks -----------------------------------------------------------------------------------
    def _connect_error(self, flow) -> None:
        flow.response = _text_response(403, tr("proxy.blocked_connect", "vi") + "\n" +
                                       tr("proxy.blocked_connect", "en"))

    @_fail_closed(_connect_error)
    def http_connect(self, flow) -> None:
        client, handoff = self._client(flow.client_conn)
        if handoff is not None:
            if handoff.verdict is not None:
                self._remember(flow.client_conn.id, handoff.verdict)
            return  # the relay already judged this one and wants it inspected
        if flow.request.port not in self.connect_ports:
            self.stats.count("none", "block", "passthrough")
            ports = ", ".join(str(p) for p in sorted(self.connect_ports))
            flow.response = _text_response(403, tr("proxy.bad_port", "vi", ports=ports))
            return
        verdict = self.judge.verdict(client, flow.request.host)
        if not verdict.served:
            self.stats.count("none", "refused", "passthrough")
            flow.response = _text_response(403, tr("proxy.refused", "vi") + "\n" + tr("proxy.refused", "en"))
            return
        if verdict.blocked and not verdict.intercept:
            d = verdict.decision
            self.stats.count(d.band, "block", "passthrough", d, client)
            self._connect_error(flow)
            return
        self._remember(flow.client_conn.id, verdict)

    def _hello_error(self, data) -> None:
        data.ignore_connection = True
        self._kill.add(data.context.client.id)

    @_fail_closed(_hello_error)
    def tls_clienthello(self, data) -> None:
        conn = data.context.client
        client, handoff = self._client(conn)
        sni = data.client_hello.sni
        if sni:
            verdict = self.judge.verdict(client, sni)
        else:
            address = data.context.server.address
            host = address[0] if address else ""
            if self.block_no_sni and (not host or is_ip(host)):
                self.stats.error("no_sni")
                verdict = Verdict(Decision(Action.BLOCK, Reason.ERROR, "none", "none", rule="TLS without SNI"),
                                  host, None, True, False, self.judge.clock())
            else:
                verdict = self.judge.verdict(client, host)
        if not verdict.served:
            self.stats.count("none", "refused", "passthrough")
            self._hello_error(data)
            return
        verdict = self._remember(conn.id, verdict) if verdict.blocked else self._conn.get(conn.id, verdict)
        if verdict.intercept:
            return  # decrypt: requestheaders shows the block page or enforces safe search
        data.ignore_connection = True
        d = verdict.decision
        if verdict.blocked:
            self._kill.add(conn.id)
            self.stats.count(d.band, "block", "passthrough", d, client)
            return
        if d.action is Action.REWRITE and d.rewrite_to and handoff is None:
            self._dial[conn.id] = d.rewrite_to  # as the DNS filter's CNAME would (see Relay._dial_name)
        if handoff is None:
            self.stats.count(d.band, d.action.value, "passthrough", d, client)

    async def server_connect(self, data) -> None:
        try:
            if data.client.id in self._kill:
                data.server.error = "blocked by the school gateway"
                return
            if not data.server.address:
                return
            host, port = data.server.address[:2]
            dial = self._dial.get(data.client.id)
            if dial is not None:
                host = dial
                data.server.address = (host, port)
            if self.origin_resolver is not None:
                found = self.origin_resolver(host, port)
                if found is not None:
                    data.server.address = tuple(found)
                    return
            _, handoff = self._client(data.client)
            if self.loopback_origins or (handoff is not None and handoff.kind != "plain"):
                return  # the relay named this address itself, after the same check
            # Never let a client reach the box's own loopback services (metrics, admin) through us:
            # resolve here, refuse loopback answers, and pin the connection to a checked address.
            if is_ip(host):
                addresses = [host.strip("[]")]
            elif self.resolver is not None:
                addresses = [a[0] for a in await self.resolver.resolve(host, port)]
            else:
                infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
                addresses = [i[4][0] for i in infos]
            allowed = [a for a in addresses if not is_local(a)]
            if not allowed:
                self.stats.error("local_destination")
                data.server.error = "destination not allowed by the school gateway"
                return
            data.server.address = (allowed[0], port)
        except OSError as exc:
            data.server.error = f"cannot resolve {data.server.address[0]}: {exc}"  # no second lookup by mitmproxy
        except Exception as exc:  # fail closed
            log.exception("proxy hook server_connect failed, blocking: %s", exc)
            self.stats.error("decision")
            data.server.error = "blocked by the school gateway (decision error)"

    def _request_error(self, flow) -> None:
        flow.response = _text_response(403, tr("proxy.page.why.error", "vi") + "\n" + tr("proxy.page.why.error", "en"))

    @_fail_closed(_request_error)
    def requestheaders(self, flow) -> None:
        # Judged on the headers, before any body: a blocked upload never reaches the server, even when
        # mitmproxy streams large bodies.
        flow.metadata["gateway_judged"] = True
        if flow.response is not None:
            return
        client, _ = self._client(flow.client_conn)
        request = flow.request
        kind = "intercepted" if request.scheme == "https" else "plain"
        verdict = self.judge.verdict(client, request.pretty_host)
        standing = self._conn.get(flow.client_conn.id)
        if standing is not None and not verdict.blocked:
            verdict = standing
        d = verdict.decision
        if verdict.blocked:
            lang = choose_lang(request.headers.get("accept-language"), request.query.get("lang"))
            status, headers, body = render_block(verdict, lang, self.ref_key, request.path)
            flow.response = http.Response.make(status, body, dict(headers))
            self.stats.count(d.band if verdict.served else "none", "block" if verdict.served else "refused", kind,
                             d, client if verdict.served else None)
            return
        action = d.action.value
        snapshot = verdict.snapshot
        if snapshot is not None and d.band in snapshot.bands:
            engine = safesearch.engine_for(verdict.host)
            if engine is not None and safesearch.enforce(request, engine, snapshot.bands[d.band].safe_search):
                self.stats.rewrite(d.band, engine)
                action = "rewrite"
        self.stats.count(d.band, action, kind, d, client)

    def request(self, flow) -> None:
        # requestheaders decided already; this catches a flow whose headers hook never ran (a replay).
        if flow.response is None and not flow.metadata.get("gateway_judged"):
            self.requestheaders(flow)
