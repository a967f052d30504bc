"""Access stage: only configured client networks are served (REFUSED otherwise), with a per-client
token-bucket rate limit; notices when every query arrives from one relaying router."""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable

from gateway.core.decide import identify
from gateway.dns import answers
from gateway.dns.stages import DROP, Request, Stage

log = logging.getLogger("gateway.dns")
REFUSED = 5


class TokenBuckets:
    """Per-address token buckets, bounded in memory (idle buckets are the first to go)."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic, limit: int = 65536):
        self.rate, self.burst, self.clock, self.limit = rate, float(burst), clock, limit
        self._buckets: dict[str, list[float]] = {}

    def allow(self, key: str) -> bool:
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.limit:
                self._buckets.pop(next(iter(self._buckets)))
            self._buckets[key] = [self.burst - 1.0, now]
            return True
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens < 1.0:
            bucket[0] = tokens
            return False
        bucket[0] = tokens - 1.0
        return True


class RelayWatch:
    """Counts queries per source over a window; when nearly all come from one address (a router
    relaying DNS), groups cannot work: say so once per window."""

    def __init__(self, window: float = 300.0, min_queries: int = 500, clock: Callable[[], float] = time.monotonic):
        self.window, self.min_queries, self.clock = window, min_queries, clock
        self._start = clock()
        self._counts: dict[str, int] = {}
        self._seen = 0
        self.single_source = False  # exported as a metric

    def see(self, address: str) -> None:
        counts = self._counts
        counts[address] = counts.get(address, 0) + 1
        self._seen += 1
        if self._seen & 255:  # look at the clock (and the table's size) every 256 queries only
            return
        if len(counts) > 4096:
            counts.clear()
        now = self.clock()
        if now - self._start >= self.window:
            total = sum(counts.values())
            top = max(counts.values(), default=0)
            single = total >= self.min_queries and top >= 0.95 * total
            if single and not self.single_source:
                log.warning("almost every DNS query comes from one address: a router is relaying DNS, so client "
                            "groups cannot tell devices apart; point DHCP's DNS option at the gateway instead")
            self.single_source = single
            counts.clear()
            self._start = now


class AccessStage(Stage):
    name = "access"

    def __init__(self, holder, rate: float, burst: int, exempt=(), clock: Callable[[], float] = time.monotonic):
        self.holder = holder
        self.buckets = TokenBuckets(rate, burst, clock) if rate > 0 else None
        self.exempt = tuple(exempt)
        self._exempt_cache: dict[str, bool] = {}
        self.relays = RelayWatch(clock=clock)
        self.refused = 0
        self.limited = 0
        self._snap = None
        self._groups: dict = {}  # address -> GroupPolicy | None, for the current snapshot only

    def _is_exempt(self, address: str) -> bool:
        found = self._exempt_cache.get(address)
        if found is None:
            try:
                ip = ipaddress.ip_address(address.split("%", 1)[0])
                found = any(ip in net for net in self.exempt)
            except ValueError:
                found = False
            if len(self._exempt_cache) > 4096:
                self._exempt_cache.clear()
            self._exempt_cache[address] = found
        return found

    def group_of(self, client: str):
        """The client's group for the policy in force, or None when the address is not served."""
        snap = self.holder.current
        if snap is not self._snap:  # a new policy: group membership may have changed
            self._snap, self._groups = snap, {}
        group = self._groups.get(client, False)
        if group is False:
            group = identify(snap, client)
            if len(self._groups) > 65536:
                self._groups.clear()
            self._groups[client] = group
        return group

    def admit(self, client: str) -> bool:
        """Count the query for the relay watch; False when the client's rate limit says drop it.
        Every served query passes here once (the answer memo calls it too)."""
        self.relays.see(client)
        if self.buckets is not None and not (self.exempt and self._is_exempt(client)) \
                and not self.buckets.allow(client):
            self.limited += 1
            return False
        return True

    def before(self, req: Request):
        group = self.group_of(req.client)
        if group is None:
            self.refused += 1
            return answers.error(req.query, REFUSED)
        req.group = group
        return None if self.admit(req.client) else DROP
