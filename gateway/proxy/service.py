"""Composition of the proxy: judge, relay listeners, mitmproxy (through its Python API) and the block-page server."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import tempfile
from collections.abc import Callable
from pathlib import Path

from gateway.i18n import tr
from gateway.proxy.blockpage import BlockPageServer, pac_file
from gateway.proxy.config import ProxySettings
from gateway.proxy.judge import Judge, load_never_intercept
from gateway.proxy.ref import load_key
from gateway.proxy.relay import HostResolver, Relay, original_destination
from gateway.proxy.stats import ProxyStats

log = logging.getLogger("gateway.proxy")

CA_FILE = "mitmproxy-ca.pem"  # the name mitmproxy's CertStore loads from its confdir: key + certificate
CA_CERT = "school-ca.pem"


def ca_ready(settings: ProxySettings) -> bool:
    return (settings.ca_dir / CA_FILE).is_file()


def _passphrase(settings: ProxySettings) -> str | None:
    if settings.ca_passphrase_file is not None:
        return settings.ca_passphrase_file.read_text(encoding="utf-8").splitlines()[0].strip()
    return os.environ.get("SCHOOL_GATEWAY_CA_PASSPHRASE") or None


class ProxyService:
    """Everything the proxy runs, started and stopped together; `addresses` says where each part listens.

    `clock`, `clock_trusted`, `origin_resolver`, `original_dst` and `resolver` are the injected side
    effects (tests, and labs without a firewall redirect); by default the wall clock, the kernel's NTP
    state, SO_ORIGINAL_DST and the system resolver (cached) are used.
    """

    def __init__(self, settings: ProxySettings, holder, *, stats: ProxyStats | None = None,
                 clock: Callable | None = None, clock_trusted: Callable[[], bool] | None = None,
                 origin_resolver: Callable | None = None,
                 original_dst: Callable = original_destination, resolver: HostResolver | None = None):
        self.settings = settings
        self.holder = holder
        self.stats = stats or ProxyStats()
        self._clock = clock
        self._clock_trusted = clock_trusted
        self.origin_resolver = origin_resolver
        self.original_dst = original_dst
        self.resolver = resolver or HostResolver()  # one name cache for the relay and mitmproxy's hook
        self.addresses: dict[str, tuple[str, int]] = {}
        self.handoffs: dict = {}
        self.judge: Judge | None = None
        self.master = None
        self.addon = None
        self._servers: list[asyncio.AbstractServer] = []
        self._mitm_task: asyncio.Task | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._mitm_lock = asyncio.Lock()
        self._ref_key = b""
        self._ca = False
        self.relay: Relay | None = None

    async def start(self) -> None:
        s = self.settings
        if self._clock_trusted is None:
            from gateway.clock import clock_synchronised
            self._clock_trusted = clock_synchronised
        ready = ca_ready(s)
        snapshot = self.holder.current
        if not ready and any(g.inspect_tls for g in snapshot.groups.values()):
            log.warning(tr("proxy.ca_missing", "en", dir=s.ca_dir))
        try:
            ref_key = load_key(s.ref_key)
        except OSError as exc:
            # Codes made with a throwaway key cannot be checked later; the page still works.
            log.warning("reference-code key %s unusable (%s): using a temporary key", s.ref_key, exc)
            ref_key = secrets.token_bytes(32)
        never = load_never_intercept(s.never_intercept, s.never_intercept_names)
        kwargs = {"clock": self._clock} if self._clock is not None else {}
        self.judge = Judge(self.holder, never, ca_ready=ready, intercept_all=s.intercept == "all",
                           clock_trusted=self._clock_trusted, **kwargs)
        self._ref_key, self._ca = ref_key, ready
        try:
            if s.fast_path:
                relay = Relay(self.judge, self.stats, s, start_mitm=self.ensure_mitm, ref_key=ref_key,
                              handoffs=self.handoffs, origin_resolver=self.origin_resolver,
                              original_dst=self.original_dst, resolver=self.resolver)
                self.relay = relay
                if s.plain_http == "mitmproxy" or (ready and any(g.inspect_tls for g in snapshot.groups.values())):
                    # Needed from the first flow on: start it now, so its errors show at start-up. Otherwise
                    # it starts with the first flow that must be decrypted (a reload adding inspect_tls).
                    relay.mitm = await self.ensure_mitm()
                if s.explicit:
                    server = await relay.listen(s.listen.host, s.listen.port, transparent=False)
                    self._servers.append(server)
                    self.addresses["explicit"] = server.sockets[0].getsockname()[:2]
                if s.transparent:
                    server = await relay.listen(s.transparent_listen.host, s.transparent_listen.port,
                                                transparent=True)
                    self._servers.append(server)
                    self.addresses["transparent"] = server.sockets[0].getsockname()[:2]
            else:
                modes = []
                if s.explicit:
                    modes.append(("regular", s.listen.host, s.listen.port))
                if s.transparent:
                    modes.append(("transparent", s.transparent_listen.host, s.transparent_listen.port))
                found = await self._start_mitm(modes, ready, ref_key)
                for (mode, _, _), address in zip(modes, found, strict=False):
                    self.addresses["explicit" if mode == "regular" else "transparent"] = address
            if s.blockpage_listen is not None:
                pac = pac_file(s.pac_target(), s.pac_direct, s.pac_fallback_direct)
                cert = s.ca_dir / CA_CERT
                page = BlockPageServer(self.judge, self.stats, ref_key, pac=pac,
                                       ca_cert=cert if cert.exists() else None, timeout=s.handshake_timeout)
                server = await page.start(s.blockpage_listen.host, s.blockpage_listen.port)
                self._servers.append(server)
                self.addresses["blockpage"] = server.sockets[0].getsockname()[:2]
        except BaseException:
            await self.stop()
            raise

    async def ensure_mitm(self) -> tuple[str, int]:
        """mitmproxy on loopback for the relay's hand-offs; started once, on first need."""
        async with self._mitm_lock:
            if "mitm" not in self.addresses:
                found = await self._start_mitm([("regular", "127.0.0.1", 0)], self._ca, self._ref_key)
                self.addresses["mitm"] = found[0]
            return self.addresses["mitm"]

    async def _start_mitm(self, modes: list[tuple[str, str, int]], ca: bool, ref_key: bytes) -> list:
        from mitmproxy import options
        from mitmproxy.addons import default_addons
        from mitmproxy.master import Master

        from gateway.proxy.addon import FilterAddon

        s = self.settings
        if ca:
            confdir = str(s.ca_dir)
        else:
            # mitmproxy insists on a CA; without the school's, give it a private throwaway one nobody
            # trusts. The judge never asks it to intercept, so it never signs anything shown to a client.
            self._tmp = tempfile.TemporaryDirectory(prefix="school-gateway-mitm-")
            confdir = self._tmp.name
        logging.getLogger("mitmproxy").setLevel(max(logging.getLogger("gateway").getEffectiveLevel(),
                                                     logging.WARNING))
        opts = options.Options()
        master = Master(opts, event_loop=asyncio.get_running_loop())
        master.addons.add(*default_addons())
        addon = FilterAddon(self.judge, self.stats, ref_key, handoffs=self.handoffs,
                            connect_ports=s.connect_ports, origin_resolver=self.origin_resolver,
                            block_no_sni=s.no_sni == "block", loopback_origins=s.loopback_origins,
                            resolver=self.resolver)
        master.addons.add(addon)
        spec = [f"{mode}@{host}:{port}" for mode, host, port in modes]  # mitmproxy splits at the last ':'

        passphrase = _passphrase(s) if ca else None
        opts.update(
            mode=spec,
            confdir=confdir,
            ssl_insecure=False,  # upstream certificates are always verified
            stream_large_bodies=s.stream_large_bodies,
            connection_strategy="lazy",  # a blocked request never opens a connection to its server
            cert_passphrase=passphrase,
            http3=False,  # QUIC is not filtered here; browsers fall back to TCP when UDP 443 is blocked
            block_global=True,
        )
        if s.upstream_ca is not None:
            opts.update(ssl_verify_upstream_trusted_ca=str(s.upstream_ca))
        self.master, self.addon = master, addon
        self._mitm_task = asyncio.get_running_loop().create_task(master.run())
        ready = asyncio.ensure_future(addon.ready.wait())
        done, _ = await asyncio.wait({ready, self._mitm_task}, return_when=asyncio.FIRST_COMPLETED)
        if ready not in done:
            ready.cancel()
            exc = self._mitm_task.exception() if not self._mitm_task.cancelled() else None
            raise RuntimeError(f"mitmproxy did not start: {exc}")
        found = master.addons.get("proxyserver").listen_addrs()
        if len(found) < len(modes):
            raise RuntimeError(f"mitmproxy listens on {found}, expected {len(modes)} listeners")
        return [tuple(a[:2]) for a in found]

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        if self.relay is not None:
            self.relay.close_all()  # Python 3.12+ waits for open connections in wait_closed()
        for server in self._servers:
            try:
                await asyncio.wait_for(server.wait_closed(), 2)
            except (TimeoutError, Exception):
                pass
        self._servers.clear()
        if self.master is not None and self._mitm_task is not None:
            self.master.shutdown()
            try:
                await asyncio.wait_for(self._mitm_task, 10)
            except BaseException:
                pass
            self.master = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def _proxy_settings(settings_like) -> ProxySettings:
    if isinstance(settings_like, ProxySettings):
        return settings_like
    found = getattr(settings_like, "proxy", None)
    return found if isinstance(found, ProxySettings) else ProxySettings()


async def run_proxy(settings_like, holder, stop_event: asyncio.Event, *, stats: ProxyStats | None = None,
                    started: Callable[[ProxyService], None] | None = None, **inject) -> None:
    """Run the proxy until `stop_event` is set. `settings_like` is a ProxySettings or an object with a
    `.proxy` ProxySettings (the gateway's Settings). `holder.current` is read per decision, so the
    gateway's own policy reloads apply here too. `started(service)` is called once it listens."""
    service = ProxyService(_proxy_settings(settings_like), holder, stats=stats, **inject)
    await service.start()
    try:
        log.info(tr("proxy.cli.listening", "en", what=", ".join(f"{k} {h}:{p}" for k, (h, p) in
                                                                 service.addresses.items())))
        if started is not None:
            started(service)
        await stop_event.wait()
    finally:
        await service.stop()


def ca_cert_path(settings: ProxySettings) -> Path:
    return settings.ca_dir / CA_CERT
