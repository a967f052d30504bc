"""Observe stage (first in the chain): sees every answer on its way out, for anonymous counters.
It never stores a client address or a name."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

from gateway.dns.stages import Request, Stage


class ObserveStage(Stage):
    name = "observe"

    def __init__(self, clock: Callable[[], float] = time.perf_counter):
        self.clock = clock
        self.counts: Counter = Counter()  # (band, action, proto) -> queries
        self.listeners: list[Callable[[Request, bytes], None]] = []

    def after(self, req: Request, response: bytes) -> bytes:
        d = req.decision
        band = d.band if d is not None else (req.group.band.id if req.group is not None else "none")
        action = d.action.value if d is not None else ("refused" if req.group is None else "local")
        self.counts[(band, action, req.proto)] += 1
        for listener in self.listeners:
            listener(req, response)
        return response
