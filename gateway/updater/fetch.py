"""HTTP transport for the updater: one injectable function, urllib by default; the content is never trusted."""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from gateway import __version__

USER_AGENT = f"school-gateway/{__version__} (updater)"
SCHEMES = ("https", "http", "file")


class Response(Protocol):
    """What the updater needs from a response; `read(n)` returns b"" at the end."""

    status: int
    headers: Mapping[str, str]

    def read(self, n: int) -> bytes: ...

    def close(self) -> None: ...


# fetch(url, request headers, timeout in seconds) -> Response; raises OSError (incl. timeouts) on
# transport failure. Any status is returned, not raised: 304 and 5xx are answers the updater handles.
Fetch = Callable[[str, Mapping[str, str], float], Response]


@dataclass
class _Wrapped:
    status: int
    headers: Mapping[str, str]
    body: object = field(repr=False)

    def read(self, n: int) -> bytes:
        return self.body.read(n) if self.body is not None else b""

    def close(self) -> None:
        if self.body is not None:
            self.body.close()


class _NoHeaders(dict):
    def get(self, key, default=None):
        return super().get(key.lower(), default)


def urllib_fetch(url: str, headers: Mapping[str, str], timeout: float) -> Response:
    """GET with urllib; the timeout bounds connecting and every read, so a stalled server fails."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **headers})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # scheme checked by valid_mirror
    except urllib.error.HTTPError as exc:  # 304, 404, 500...: an answer, not a transport failure
        return _Wrapped(exc.code, exc.headers or _NoHeaders(), exc)
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, OSError):
            raise reason from None
        raise OSError(str(reason)) from None
    status = getattr(response, "status", None) or 200  # file:// answers have no status
    return _Wrapped(status, response.headers, response)


def join(base: str, name: str) -> str:
    """URL of `name` (a plain file name, checked by the caller) in the mirror folder `base`."""
    return base.rstrip("/") + "/" + urllib.parse.quote(name)


def valid_mirror(url: str) -> bool:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in SCHEMES:
        return False
    return bool(parts.path) if parts.scheme == "file" else bool(parts.netloc)
