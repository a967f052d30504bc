"""Why an update did not happen: the bounded reason words (metric labels) and the failure carrying one."""

from __future__ import annotations

from gateway.errors import BundleError
from gateway.i18n import tr
from gateway.updater import messages as _messages  # noqa: F401  (registers the updater's messages)

# Every reason observer.failure() can receive; bounded on purpose: they become a metric label.
# "internal" is for bugs and unexpected OS errors (e.g. permission denied), so they are counted too.
REASONS = ("network", "http_status", "signature", "hash", "size", "expired", "rollback", "gateway_too_old",
           "compile", "disk_full", "malformed", "internal")

# A mirror failing for one of these may be a stale or broken mirror: the next mirror is tried.
TRY_NEXT_MIRROR = frozenset({"network", "http_status", "signature", "hash", "size", "malformed", "rollback"})

# When several mirrors fail, the poll reports the most telling reason (tampering before outages).
SEVERITY = ("signature", "hash", "size", "malformed", "rollback", "expired", "gateway_too_old", "compile",
            "disk_full", "http_status", "network", "internal")


class UpdateFailure(BundleError):
    """One failed step of an update; `reason` is one of REASONS, `key`/`args` the vi/en message."""

    def __init__(self, reason: str, key: str, /, **args: object) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown update failure reason {reason!r}")
        self.reason = reason
        self.key = key
        self.args_ = args
        super().__init__(self.render("en"))

    def render(self, lang: str = "vi") -> str:
        return tr(self.key, lang, **self.args_)


def most_telling(failures: list[UpdateFailure]) -> UpdateFailure:
    """The failure to report when every mirror failed."""
    return min(failures, key=lambda f: SEVERITY.index(f.reason))
