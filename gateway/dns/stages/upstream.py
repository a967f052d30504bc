"""Upstream stage: forwards misses (merging identical queries in flight), serves stale answers while
every upstream is down (RFC 8767), then SERVFAIL; time-server names go over plain DNS until the clock
is synchronised."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from gateway.dns import answers
from gateway.dns.cache import Cache
from gateway.dns.stages import Request, Stage
from gateway.dns.stages.cache import kept, unkept
from gateway.dns.stages.policy import lookup_packet
from gateway.dns.wire import WireError, scan_response, with_id
from gateway.errors import UpstreamError

log = logging.getLogger("gateway.dns")
SERVFAIL = 2


def _question(key: tuple) -> tuple[bytes, int, int]:
    """The question of lookup_packet(*key's name, type, DO, EDNS*): the key's lower-cased wire name
    and type, class IN (a lookup packet always asks IN)."""
    return key[0], key[1], 1


class UpstreamStage(Stage):
    name = "upstream"

    def __init__(self, upstreams, cache: Cache | None = None, bootstrap=None, time_servers=(),
                 clock_trusted: Callable[[], bool] = lambda: True):
        self.upstreams = upstreams
        self.cache = cache
        self.bootstrap = bootstrap
        self.time_servers = frozenset(time_servers)
        self.clock_trusted = clock_trusted
        self.failures = 0
        self.stale_served = 0
        self._background: set[asyncio.Task] = set()

    def _choose(self, req: Request):
        if req.upstreams is not None:
            return req.upstreams
        if self.bootstrap is not None and req.query.qname in self.time_servers and not self.clock_trusted():
            return self.bootstrap  # DoT certificates cannot be checked with a wrong clock
        return self.upstreams

    def before(self, req: Request):
        return self._resolve(req)

    async def _resolve(self, req: Request) -> bytes:
        q = req.query
        key = req.lookup_key
        try:
            if key is None:
                response = await self._choose(req).query(q.raw)
                info = scan_response(response)
            else:
                packet = req.lookup_packet
                if packet is None:
                    packet = req.lookup_packet = lookup_packet(key[0], key[1], key[3], key[4])
                response, info = await self._choose(req).lookup(packet, _question(key), key)
        except (TimeoutError, UpstreamError, WireError, OSError) as exc:
            self.failures += 1
            if self.cache is not None and key is not None:
                hit = self.cache.get(key, q.id, allow_stale=True)
                if hit is not None:
                    self.stale_served += 1
                    req.meta = unkept(hit.meta)
                    return hit.packet
            log.debug("upstream failed: %s", exc)
            return answers.error(q, SERVFAIL)
        req.meta = info
        req.from_upstream = True
        return with_id(response, q.id)

    def prefetch(self, req: Request) -> None:
        """Refresh a popular cache entry in the background before it expires."""
        key = req.lookup_key
        packet = lookup_packet(key[0], key[1], key[3], key[4])
        upstreams = self._choose(req)

        async def refresh():
            try:
                response, info = await upstreams.lookup(packet, _question(key), ("prefetch", key))
            except Exception:
                return
            if self.cache is not None and info.rcode in (0, 3) and not info.tc:
                self.cache.put(key, response, info.ttl_offsets, info.ttl, info.rcode == 3, meta=kept(info))

        task = asyncio.get_running_loop().create_task(refresh())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
