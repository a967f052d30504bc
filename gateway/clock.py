"""Is the system clock synchronised? (A Raspberry Pi has no real-time clock.)"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import time
from pathlib import Path

_TIME_ERROR = 5  # adjtimex(2): clock not synchronised
_REFRESH = 10.0  # seconds a reading is reused: the DNS path asks on every query


class _Timex(ctypes.Structure):
    _fields_ = [("modes", ctypes.c_uint), ("_pad", ctypes.c_byte * 204)]


def _load_libc():
    # find_library forks `ldconfig -p`: do it once at import, never on the query path.
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


_LIBC = _load_libc()
_cache: list = [None, 0.0]  # [last answer, monotonic time it was read]


def _read() -> bool:
    forced = os.environ.get("SCHOOL_GATEWAY_CLOCK")
    if forced in ("synced", "unsynced"):
        return forced == "synced"
    if Path("/run/systemd/timesync/synchronized").exists():
        return True
    if _LIBC is None or not hasattr(_LIBC, "adjtimex"):
        return True
    state = _LIBC.adjtimex(ctypes.byref(_Timex()))
    return state not in (_TIME_ERROR, -1)


def clock_synchronised() -> bool:
    """True when the kernel says the clock is synchronised (NTP), or when that cannot be asked.

    A box that cannot tell (no adjtimex, e.g. inside some containers) is assumed synchronised, unless
    SCHOOL_GATEWAY_CLOCK=unsynced says otherwise (tests and the deployment use it). The answer is
    read at most every few seconds, so asking on every query costs a comparison.
    """
    now = time.monotonic()
    if _cache[0] is None or now - _cache[1] >= _REFRESH:
        _cache[0], _cache[1] = _read(), now
    return _cache[0]
