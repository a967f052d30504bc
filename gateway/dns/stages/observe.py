"""Observe stage (first in the chain): sees every answer on its way out, for anonymous counters.
It never stores a client address or a name."""

from __future__ import annotations

import time
from collections.abc import Callable

from gateway.dns.stages import Request, Stage


class ObserveStage(Stage):
    name = "observe"

    def __init__(self, clock: Callable[[], float] = time.perf_counter):
        self.clock = clock
        self.listeners: list[Callable[[Request, float], None]] = []  # (request, seconds to answer)

    def before(self, req: Request):
        req.started = self.clock()
        return None

    def after(self, req: Request, response: bytes) -> bytes:
        if self.listeners:
            seconds = self.clock() - req.started
            for listener in self.listeners:
                listener(req, seconds)
        return response
