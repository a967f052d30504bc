"""Safe search in the HTTP request itself: YouTube-Restrict header, Google safe=active, Bing adlt=strict."""

from __future__ import annotations

import re

from gateway.core.model import SafeSearch

YOUTUBE_HOSTS = frozenset({"youtube.com", "www.youtube.com", "m.youtube.com", "music.youtube.com",
                           "youtubei.googleapis.com", "youtube.googleapis.com", "www.youtube-nocookie.com"})
BING_HOSTS = frozenset({"bing.com", "www.bing.com", "cn.bing.com"})
DUCKDUCKGO_HOSTS = frozenset({"duckduckgo.com", "www.duckduckgo.com", "html.duckduckgo.com", "start.duckduckgo.com"})
# www.google.<tld> and google.<tld>: the search front doors (not mail., docs., accounts. ...)
_GOOGLE = re.compile(r"^(?:www\.)?google\.(?:com|[a-z]{2}|co\.[a-z]{2}|com\.[a-z]{2})$")
_GOOGLE_PATHS = ("/search", "/webhp", "/imghp", "/images", "/complete/search", "/videohp", "/m/search")
_BING_PATHS = ("/search", "/images", "/videos", "/news", "/shop")


def engine_for(host: str) -> str | None:
    """Which engine's request rules apply to `host` (normalised), or None."""
    if host in YOUTUBE_HOSTS:
        return "youtube"
    if host in BING_HOSTS:
        return "bing"
    if host in DUCKDUCKGO_HOSTS:
        return "duckduckgo"
    if _GOOGLE.match(host):
        return "google"
    return None


def _path_is(path: str, prefixes: tuple[str, ...]) -> bool:
    bare = path.split("?", 1)[0]
    return bare == "/" or bare == "" or any(bare == p or bare.startswith(p + "/") for p in prefixes)


def enforce(request, engine: str, mode: SafeSearch) -> bool:
    """Rewrite a mitmproxy `http.Request` so the engine serves only safe results; True when changed.

    A client's own setting (safe=off, adlt=off, its own YouTube-Restrict) is replaced, not kept.
    """
    if mode is SafeSearch.OFF:
        return False
    if engine == "youtube":
        request.headers["YouTube-Restrict"] = "Strict" if mode is SafeSearch.STRICT else "Moderate"
        return True
    if engine == "google" and _path_is(request.path, _GOOGLE_PATHS):
        request.query["safe"] = "active"
        return True
    if engine == "bing" and _path_is(request.path, _BING_PATHS):
        request.query["adlt"] = "strict"
        return True
    if engine == "duckduckgo":
        request.query["kp"] = "1"  # DuckDuckGo's "strict" safe-search parameter
        return True
    return False


def _set_param(path: str, name: str, value: str) -> str:
    # Textual, so every other parameter keeps its exact encoding: drop `name=...`, append ours.
    bare, sep, query = path.partition("?")
    kept = [part for part in query.split("&") if part and part.split("=", 1)[0] != name] if sep else []
    return bare + "?" + "&".join([*kept, f"{name}={value}"])


def enforce_head(path: str, engine: str, mode: SafeSearch) -> tuple[str, list[tuple[str, str]]]:
    """The relay's form of `enforce` for a raw request: (new path, headers to set)."""
    if mode is SafeSearch.OFF:
        return path, []
    if engine == "youtube":
        return path, [("YouTube-Restrict", "Strict" if mode is SafeSearch.STRICT else "Moderate")]
    if engine == "google" and _path_is(path, _GOOGLE_PATHS):
        return _set_param(path, "safe", "active"), []
    if engine == "bing" and _path_is(path, _BING_PATHS):
        return _set_param(path, "adlt", "strict"), []
    if engine == "duckduckgo":
        return _set_param(path, "kp", "1"), []
    return path, []
