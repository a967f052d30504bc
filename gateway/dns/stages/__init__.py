"""The DNS path as a chain of small stages; `build_chain` is the one place their order is set."""

from __future__ import annotations

from collections.abc import Coroutine, Sequence
from typing import Any

from gateway.dns import answers
from gateway.dns.wire import Query

DROP = b""  # a stage answering DROP means: send nothing
INF = float("inf")


class Request:
    """One client query on its way through the chain; lives only while the query is served."""

    __slots__ = ("client", "decision", "from_upstream", "group", "local", "lookup_key", "lookup_packet", "meta",
                 "port", "proto", "query", "started", "until", "upstreams")

    def __init__(self, query: Query, client: str, port: int, proto: str):
        self.query = query
        self.client = client  # the address: only in memory, for the time this query is served
        self.port = port
        self.proto = proto  # "udp" | "tcp"
        self.group = None  # GroupPolicy, set by the access stage
        self.decision = None  # Decision, set by the policy stage
        self.lookup_key = None  # cache / in-flight key of what is resolved below the policy stage
        self.lookup_packet = None  # the query sent upstream (may differ from the client's: safe search)
        self.meta = None  # ResponseInfo-like facts of the answer coming back up (cnames, addresses)
        self.from_upstream = False
        self.local = False  # a school-internal name (local record / forward zone): no rebinding check
        self.upstreams = None  # a forward zone's upstreams, set by the local stage
        self.started = 0.0
        # Until when (the cache's clock) this query's answer stays exactly right, so the answer memo may
        # replay it: 0 = never (upstream round trips, stale answers, errors, drops). Set by the stage
        # that answers; a stage whose answer is deterministic for the snapshot sets INF.
        self.until = 0.0


class Stage:
    """A stage answers (bytes, DROP, or a coroutine giving bytes) or returns None to pass the query on;
    `after` sees every answer that came from below it, on the way back up."""

    name = "stage"

    def before(self, req: Request) -> bytes | Coroutine[Any, Any, bytes] | None:
        return None

    def after(self, req: Request, response: bytes) -> bytes:
        return response


class Chain:
    """Runs stages in order. The sync part runs inline (cache hits and blocks never create a task);
    only a stage that must wait (the upstream) hands back a coroutine."""

    def __init__(self, stages: Sequence[Stage]):
        self.stages = tuple(stages)
        self.names = tuple(s.name for s in self.stages)
        # Only the stages that override `after` are called on the way back up (most do not).
        self._afters = tuple(s.after if type(s).after is not Stage.after else None for s in self.stages)

    def run(self, req: Request) -> bytes | Coroutine[Any, Any, bytes]:
        try:
            index, result = 0, None
            for stage in self.stages:
                result = stage.before(req)
                if result is not None:
                    break
                index += 1
            if result is None:  # the last stage always answers; reaching here is a bug: fail closed
                req.until = 0.0
                return answers.error(req.query, 2)
            if type(result) is bytes:
                return self._unwind(req, result, index)
            return self._finish(req, result, index)
        except Exception:
            req.until = 0.0
            return answers.error(req.query, 2)

    async def _finish(self, req: Request, pending, index: int) -> bytes:
        try:
            result = await pending
        except Exception:
            return answers.error(req.query, 2)
        return self._unwind(req, result, index)

    def _unwind(self, req: Request, response: bytes, index: int) -> bytes:
        try:
            afters = self._afters
            for i in range(index - 1, -1, -1):
                if not response:
                    break
                after = afters[i]
                if after is not None:
                    response = after(req, response)
            return response
        except Exception:
            req.until = 0.0
            return answers.error(req.query, 2)
