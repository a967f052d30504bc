"""Cache stage: answers from the wire-format cache of upstream answers (below policy, so one cached
answer is judged afresh for every band), stores fresh upstream answers, triggers prefetch."""

from __future__ import annotations

from collections.abc import Callable

from gateway.dns.cache import Cache
from gateway.dns.stages import Request, Stage

CACHEABLE_RCODES = (0, 3)  # NOERROR, NXDOMAIN


class Kept:
    """What a cached answer's hits still need from its parse (the policy stage re-judges CNAME targets
    and checks addresses for rebinding); the parsed records themselves are not kept. The cache stores
    it as a plain tuple (`kept`), which the garbage collector does not track; a hit unpacks it."""

    __slots__ = ("addresses", "cname_targets")

    def __init__(self, cname_targets: tuple[str, ...], addresses: tuple[tuple[str, bytes], ...]):
        self.cname_targets = cname_targets
        self.addresses = addresses


_NOTHING = ((), ())


def kept(info) -> tuple:
    """The cache's form of an answer's facts: (CNAME targets, addresses), tuples of atoms only."""
    if not info.cname_targets and not info.addresses:
        return _NOTHING
    return (info.cname_targets, info.addresses)


def unkept(meta: tuple) -> Kept:
    return Kept(meta[0], meta[1])


class CacheStage(Stage):
    name = "cache"

    def __init__(self, cache: Cache, prefetch: Callable[[Request], None] | None = None):
        self.cache = cache
        self.prefetch = prefetch

    def before(self, req: Request):
        hit = self.cache.get(req.lookup_key, req.query.id)
        if hit is None:
            return None
        req.meta = unkept(hit.meta)
        req.until = hit.until
        if hit.prefetch and self.prefetch is not None:
            self.prefetch(req)
        return hit.packet

    def after(self, req: Request, response: bytes) -> bytes:
        info = req.meta
        if req.from_upstream and info is not None and info.rcode in CACHEABLE_RCODES and not info.tc:
            negative = info.rcode == 3 or (not info.addresses and not info.cname_targets and not _has_answer(info))
            self.cache.put(req.lookup_key, response, info.ttl_offsets, info.ttl, negative, meta=kept(info))
        return response


def _has_answer(info) -> bool:
    return any(rr.section == 0 for rr in info.records)
