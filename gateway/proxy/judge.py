"""Client address + host name -> Verdict (decision, and whether to decrypt), from the current snapshot; errors block."""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gateway.core.decide import decide, identify
from gateway.core.model import Action, Decision, Reason, SafeSearch
from gateway.core.names import NameError_, SuffixMap, normalize
from gateway.lists.formats import read_list
from gateway.proxy.safesearch import engine_for

log = logging.getLogger("gateway.proxy")


def _wall_clock() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the proxy does with one (client, host): the core's Decision plus the proxy's own choices."""

    decision: Decision
    host: str  # normalised host name or IP literal ("" when it could not be read)
    snapshot: object | None  # the Snapshot that decided (block page texts come from the same one)
    served: bool  # False: the address is in no served network (the DNS server would answer REFUSED)
    intercept: bool  # decrypt: inspect_tls group, a CA to sign with, not on the never-intercept list, needed
    now: dt.datetime

    @property
    def blocked(self) -> bool:
        return self.decision.action is Action.BLOCK


@functools.lru_cache(maxsize=8192)  # popular names repeat: skip the per-character checks
def host_name(raw: str) -> str:
    """A CONNECT host, SNI or Host header -> the form decide() takes; raises NameError_ when it is no host.

    IP literals (v4, or v6 with or without brackets) come back in their compressed form: the DNS side
    never sees them, so no list names them, but they are judged like any name (school deny, walled garden).
    """
    text = raw.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if ":" in text or text.replace(".", "").isdigit():
        try:
            return str(ipaddress.ip_address(text.split("%", 1)[0]))
        except ValueError:
            raise NameError_(f"{raw!r} is not an IP address") from None
    return normalize(text)


def split_authority(target: str, default_port: int) -> tuple[str, int]:
    """'host:port', '[v6]:port' or 'host' -> (host, port); ValueError when malformed."""
    target = target.strip()
    if target.startswith("["):
        host, sep, rest = target[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(target)
        port = int(rest[1:]) if rest else default_port
    elif target.count(":") == 1:
        host, _, port_text = target.partition(":")
        port = int(port_text)
    elif ":" in target:
        raise ValueError(target)  # a bare IPv6 address needs brackets here
    else:
        host, port = target, default_port
    if not host or not 0 < port < 65536:
        raise ValueError(target)
    return host, port


def load_never_intercept(paths: tuple[Path, ...], names: tuple[str, ...] = ()) -> SuffixMap:
    """The never-intercept lists (one domain a line, subdomains included) and extra names -> SuffixMap."""
    entries: dict[str, str] = {}
    for path in paths:
        try:
            parsed = read_list(path, str(path))
        except OSError as exc:
            log.error("never-intercept list %s cannot be read (%s): its hosts may be decrypted", path, exc)
            continue
        for entry in parsed.entries:
            if not entry.exception:
                entries.setdefault(entry.name, f"{parsed.path}:{entry.line}")
    for name in names:
        entries.setdefault(name, "proxy.never_intercept.names")
    return SuffixMap(entries)


class _CachedFlag:
    """clock_trusted() costs a syscall and a stat: ask it at most every `every` seconds."""

    __slots__ = ("_at", "_every", "_fn", "_value")

    def __init__(self, fn: Callable[[], bool], every: float = 5.0):
        self._fn, self._every, self._at, self._value = fn, every, -1e18, True

    def __call__(self) -> bool:
        now = time.monotonic()
        if now - self._at >= self._every:
            try:
                self._value = bool(self._fn())
            except Exception:
                self._value = False  # cannot tell: treat time restrictions as in force
            self._at = now
        return self._value


class Judge:
    """Reads `holder.current` once per verdict, so a policy reload applies to the next connection or
    request while connections already spliced keep running. Any exception becomes a block."""

    def __init__(self, holder, never_intercept: SuffixMap | None = None, *, ca_ready: bool = False,
                 intercept_all: bool = False, clock: Callable[[], dt.datetime] = _wall_clock,
                 clock_trusted: Callable[[], bool] = lambda: True):
        self.holder = holder
        self.never_intercept = never_intercept or SuffixMap()
        self.ca_ready = ca_ready
        self.intercept_all = intercept_all
        self.clock = clock
        self.clock_trusted = _CachedFlag(clock_trusted)

    def verdict(self, client: str, host: str) -> Verdict:
        now = _wall_clock()
        snapshot = None
        try:
            now = self.clock()
            snapshot = self.holder.current
            group = identify(snapshot, client)
            if group is None:
                return Verdict(Decision(Action.BLOCK, Reason.ERROR, "none", "none", rule="client not served"),
                               host, snapshot, False, False, now)
            try:
                name = host_name(host)
            except NameError_ as exc:
                d = Decision(Action.BLOCK, Reason.ERROR, group.id, group.band.id, rule=f"invalid host name: {exc}",
                             response=group.band.response)
                return Verdict(d, "", snapshot, True, self._intercept(group, d, ""), now)
            d = decide(snapshot, group, name, now, self.clock_trusted())
            return Verdict(d, name, snapshot, True, self._intercept(group, d, name), now)
        except Exception as exc:  # fail closed: whatever went wrong, the answer is a block
            log.error("proxy decision failed, blocking: %s: %s", type(exc).__name__, exc)
            d = Decision(Action.BLOCK, Reason.ERROR, "none", "none", rule=f"{type(exc).__name__}: {exc}")
            return Verdict(d, "", snapshot, True, False, now)

    def _intercept(self, group, decision: Decision, name: str) -> bool:
        if not self.ca_ready or not group.inspect_tls:
            return False
        if name and self.never_intercept.get(name) is not None:
            return False
        if decision.action is not Action.ALLOW:
            return True  # a block shows the page; a safe-search rewrite is enforced in the request
        if self.intercept_all:
            return True
        return group.band.safe_search is not SafeSearch.OFF and engine_for(name) is not None


@functools.lru_cache(maxsize=4096)
def is_ip(host: str) -> bool:
    """An IP literal (a client that names no host: judged by the no-SNI rule, not by a list)."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


@functools.lru_cache(maxsize=4096)  # asked once a connection, for a few distinct addresses
def is_local(host: str) -> bool:
    """The box itself (loopback or unspecified): never a destination a pupil may reach."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or ip.is_unspecified
