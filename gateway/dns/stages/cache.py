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
    it as one bytes atom (`kept`), which the garbage collector never tracks; a hit decodes it."""

    __slots__ = ("addresses", "cname_targets")

    def __init__(self, cname_targets: tuple[str, ...], addresses: tuple[tuple[str, bytes], ...]):
        self.cname_targets = cname_targets
        self.addresses = addresses  # (owner, address) pairs; a cached answer's owners are not kept: ""


_NOTHING = b"\x00"
_EMPTY = Kept((), ())


def kept(info) -> bytes:
    """The cache's form of an answer's facts, one bytes atom: the CNAME targets joined by newlines
    (names are escaped presentation text, so neither a newline nor a NUL occurs in one), a NUL, then
    each address as its length in one byte and its bytes. A container here would keep the whole entry
    tracked by the collector (see gateway/dns/cache.py)."""
    if not info.cname_targets and not info.addresses:
        return _NOTHING
    head = "\n".join(info.cname_targets).encode("utf-8")
    return head + b"\x00" + b"".join(bytes((len(address),)) + address for _, address in info.addresses)


def unkept(meta: bytes) -> Kept:
    if meta == _NOTHING:
        return _EMPTY
    cut = meta.index(0)
    cnames = tuple(meta[:cut].decode("utf-8").split("\n")) if cut else ()
    addresses = []
    i, n = cut + 1, len(meta)
    while i < n:
        size = meta[i]
        addresses.append(("", meta[i + 1 : i + 1 + size]))
        i += 1 + size
    return Kept(cnames, tuple(addresses))


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
