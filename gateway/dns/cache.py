"""Wire-format cache of upstream answers: stores packets as received, patches ID and TTLs on a hit."""

from __future__ import annotations

import enum
import struct
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_PAIR = struct.Struct("=HI")  # a TTL field's offset in the packet and its cap, in an entry's packed caps
_INF = float("inf")


class Freshness(enum.Enum):
    """Whether a hit is within its TTL or served past expiry under RFC 8767."""

    FRESH = "fresh"
    STALE = "stale"


@dataclass(slots=True)
class CacheHit:
    """A cached answer ready to send: ID set, TTLs reduced by the time spent in cache."""

    packet: bytes
    freshness: Freshness
    # Set on exactly one hit per entry: the caller should refresh the entry in the background.
    prefetch: bool
    # Whatever the caller stored with the answer (the facts it parsed once: CNAME targets, addresses).
    meta: object = None
    # Until when (this cache's clock) `packet` is exactly what a hit returns: the next whole-second TTL
    # tick or the entry's expiry, whichever comes first. 0 for stale answers.
    until: float = 0.0


# An entry is one tuple of values the collector never tracks (bytes, str, int, float; not array), so the
# first collection that sees it stops tracking it. A nested tuple would not do: a collection checks
# tuples in the order it found them reachable, which puts a tuple referenced only by the entry after
# the entry, so the entry is checked while its part is still tracked and is promoted tracked. 20,000
# such entries in the oldest generation made full collections take 15-20 ms and young ones 2-7 ms.
# So the TTL caps are packed into bytes (offset, cap pairs, _PAIR) and the caller's meta should be a
# single atom too (the cache stage stores bytes). Fields: (packet, ttls, stored, expires,
# prefetch_at, stale_until, hits, meta).


class Cache:
    """LRU cache of upstream answer packets keyed by whatever the caller chooses.

    The cache never parses DNS: the caller hands over the packet, the offsets of every RR TTL field
    (never the OPT pseudo-record's, whose "TTL" holds EDNS flags) and the answer's TTL (for a
    negative answer, RFC 2308's min(SOA TTL, SOA MINIMUM), or None for `negative_ttl`).

    TTL semantics. The entry's lifetime L is the caller's ttl clamped to [min_ttl, max_ttl]
    (negative answers: min(ttl, negative_ttl), min_ttl not applied); L == 0 is not stored. Each TTL
    field gets a cap at store time, cap = min(max(original, min_ttl), L) (negative: min(original, L)),
    and a fresh hit reports max(0, cap - elapsed) with elapsed in whole seconds. So TTLs count down
    from what upstream said; no TTL outlives the entry (max_ttl lowering, or a CNAME with a longer TTL
    than the answer, both report the lifetime remaining); and a record that min_ttl raised reports
    the remaining lifetime instead of sitting at 0 while the cache still serves it. A reported TTL is
    therefore never above max(original, min_ttl).

    Elapsed seconds are counted from `tick_phase()` seconds (in [0, 1)) before the store, a phase of
    the entry's own: a TTL may read up to a second low, never high, and entries stored in one burst
    (a warm-up, the morning's first traffic) do not all tick at the same instant. Their ticks end the
    answer memo's copies (an exact answer changes every second), and every popular name going
    through the chain at one instant was a burst of ~30 ms of work each second.

    An expired entry is kept for `stale_for` seconds and served only when the caller allows stale,
    with every TTL set to `stale_answer_ttl`.
    """

    def __init__(self, *, max_entries: int = 20000, min_ttl: int = 0, max_ttl: int = 86400,
                 negative_ttl: int = 300, stale_for: int = 86400, stale_answer_ttl: int = 30,
                 prefetch_hits: int = 3, prefetch_ratio: float = 0.1,
                 clock: Callable[[], float] = time.monotonic,
                 tick_phase: Callable[[], float] = lambda: 0.0) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        if not 0 <= min_ttl <= max_ttl:
            raise ValueError(f"need 0 <= min_ttl <= max_ttl, got min_ttl={min_ttl} max_ttl={max_ttl}")
        if negative_ttl < 0 or stale_for < 0 or stale_answer_ttl < 0:
            raise ValueError("negative_ttl, stale_for and stale_answer_ttl must not be negative")
        if not 0.0 <= prefetch_ratio <= 1.0:
            raise ValueError(f"prefetch_ratio must be within [0, 1], got {prefetch_ratio}")
        self._max_entries = max_entries
        self._min_ttl = min_ttl
        self._max_ttl = max_ttl
        self._negative_ttl = negative_ttl
        self._stale_for = stale_for
        self._stale_answer_ttl = stale_answer_ttl
        self._prefetch_hits = prefetch_hits
        self._prefetch_ratio = prefetch_ratio
        self._clock = clock
        self._tick_phase = tick_phase
        self._entries: OrderedDict[Hashable, tuple] = OrderedDict()
        self._hits = 0
        self._misses = 0
        self._stale_hits = 0
        self._evictions = 0
        self._expired = 0
        self._inserts = 0

    def put(self, key: Hashable, packet: bytes, ttl_offsets: Sequence[int], ttl: int | None,
            negative: bool = False, meta: object = None) -> None:
        """Store an upstream answer with the caller's `meta` (handed back on every hit).

        A lifetime of 0 after clamping stores nothing and drops `key`.
        """
        packet = bytes(packet)
        size = len(packet)
        if size < 12:
            raise ValueError(f"packet of {size} bytes is shorter than a DNS header")
        if negative:
            lifetime = min(self._negative_ttl if ttl is None else max(ttl, 0), self._negative_ttl)
            floor = 0
        elif ttl is None:
            lifetime = 0
            floor = 0
        else:
            lifetime = min(max(ttl, self._min_ttl), self._max_ttl)
            floor = self._min_ttl
        if lifetime <= 0:
            # The newest answer says "do not cache": an older copy must not keep being served.
            self._entries.pop(key, None)
            return
        ttls = []
        for off in ttl_offsets:
            if not 12 <= off <= size - 4:
                raise ValueError(f"TTL offset {off} is outside the {size}-byte packet's records")
            original = _U32.unpack_from(packet, off)[0]
            if original > 0x7FFFFFFF:  # RFC 2181 section 8: a TTL with the top bit set means 0
                original = 0
            ttls.append(_PAIR.pack(off, min(max(original, floor), lifetime)))
        now = self._clock()
        expires = now + lifetime
        prefetch_at = expires - lifetime * self._prefetch_ratio if self._prefetch_ratio > 0 else _INF
        stored = now - self._tick_phase()
        entry = (packet, b"".join(ttls), stored, expires, prefetch_at, expires + self._stale_for, 0, meta)
        entries = self._entries
        entries[key] = entry
        entries.move_to_end(key)
        self._inserts += 1
        if len(entries) > self._max_entries:
            entries.popitem(last=False)
            self._evictions += 1

    def get(self, key: Hashable, id: int, allow_stale: bool = False) -> CacheHit | None:
        """Return the answer for `key` with its ID set to `id`, or None on a miss."""
        entry = self._entries.get(key)
        if entry is None:
            self._misses += 1
            return None
        now = self._clock()
        packet, ttls, stored, expires, prefetch_at, _stale, hits, meta = entry
        if now < expires:
            self._entries.move_to_end(key)
            elapsed = int(now - stored)
            if elapsed < 0:  # a clock stepping back must not push TTLs above their caps
                elapsed = 0
            buf = bytearray(packet)
            _U16.pack_into(buf, 0, id)
            pack = _U32.pack_into
            for off, cap in _PAIR.iter_unpack(ttls):
                left = cap - elapsed
                pack(buf, off, left if left > 0 else 0)
            self._hits += 1
            until = stored + elapsed + 1
            if until > expires:
                until = expires
            prefetch = False
            if prefetch_at != _INF:  # still counting hits towards a prefetch: the entry changes
                hits += 1
                if now >= prefetch_at and hits >= self._prefetch_hits:
                    prefetch, prefetch_at = True, _INF
                self._entries[key] = (packet, ttls, stored, expires, prefetch_at, _stale, hits, meta)
            return CacheHit(bytes(buf), Freshness.FRESH, prefetch, meta, until)
        return self._get_expired(key, entry, id, now, allow_stale)

    def _get_expired(self, key: Hashable, entry: tuple, id: int, now: float,
                     allow_stale: bool) -> CacheHit | None:
        packet, ttls, _stored, _expires, _prefetch_at, stale_until, _hits, meta = entry
        if now >= stale_until:
            del self._entries[key]
            self._expired += 1
            self._misses += 1
            return None
        if not allow_stale:
            self._misses += 1
            return None
        self._entries.move_to_end(key)
        buf = bytearray(packet)
        _U16.pack_into(buf, 0, id)
        stale_ttl = self._stale_answer_ttl
        for off, _cap in _PAIR.iter_unpack(ttls):
            _U32.pack_into(buf, off, stale_ttl)
        self._stale_hits += 1
        return CacheHit(bytes(buf), Freshness.STALE, False, meta)

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Drop every entry; counters are kept, they are monotonic for metrics."""
        self._entries.clear()

    def stats(self) -> dict[str, int]:
        """Counters since construction: hits, misses, stale_hits, entries, evictions, expired, inserts."""
        return {
            "hits": self._hits,
            "misses": self._misses,
            "stale_hits": self._stale_hits,
            "entries": len(self._entries),
            "evictions": self._evictions,
            "expired": self._expired,
            "inserts": self._inserts,
        }
