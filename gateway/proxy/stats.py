"""Anonymous proxy counters (plain dicts on the hot path); the metrics layer exports them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

# Connection kinds, a bounded label set:
#   passthrough  TLS or CONNECT judged on its name (SNI / CONNECT host) and spliced or closed, never decrypted
#   intercepted  one HTTP request inside a decrypted TLS connection (inspect_tls groups)
#   plain        one plain-HTTP request
#   blockpage    one request to the block-page server (the DNS filter's `blockpage` answer)
KINDS = ("passthrough", "intercepted", "plain", "blockpage")


class ProxyStats:
    """Counters keyed by bounded labels only: band, action, kind, category, engine, error kind.

    No address, device or host name is ever a key. `take()` hands the deltas to the exporter (as the
    DNS side's Metrics.flush does) and starts new counters; `open` is the number of spliced
    connections right now. `client_seen(band, address)`, when set, lets the metrics layer count
    distinct clients per band for its small-cell suppression; nothing is kept here.
    """

    def __init__(self) -> None:
        self.connections: Counter = Counter()  # (band, action, kind)
        self.blocks: Counter = Counter()  # (band, category or reason)
        self.rewrites: Counter = Counter()  # (band, engine): safe search enforced in a request
        self.errors: Counter = Counter()  # (kind,): decision, handoff, upstream, bad_hello, timeout, no_sni...
        self.open = 0
        self.client_seen: Callable[[str, str], None] | None = None

    def count(self, band: str, action: str, kind: str, decision=None, client: str | None = None) -> None:
        self.connections[(band, action, kind)] += 1
        if decision is not None and action == "block":
            self.blocks[(band, decision.category or decision.reason.value)] += 1
        if client is not None and self.client_seen is not None:
            self.client_seen(band, client)

    def rewrite(self, band: str, engine: str) -> None:
        self.rewrites[(band, engine)] += 1

    def error(self, kind: str) -> None:
        self.errors[(kind,)] += 1

    def take(self) -> dict[str, Counter]:
        """The counts since the last take (connections, blocks, rewrites, errors), then start afresh."""
        out = {"connections": self.connections, "blocks": self.blocks, "rewrites": self.rewrites,
               "errors": self.errors}
        self.connections, self.blocks, self.rewrites, self.errors = Counter(), Counter(), Counter(), Counter()
        return out

    def snapshot(self) -> dict[str, dict]:
        """A copy of the counts so far, without resetting them (tests, `doctor`)."""
        return {"connections": dict(self.connections), "blocks": dict(self.blocks),
                "rewrites": dict(self.rewrites), "errors": dict(self.errors), "open": self.open}
