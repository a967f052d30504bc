"""Is the system clock synchronised? (A Raspberry Pi has no real-time clock.)"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path

_TIME_ERROR = 5  # adjtimex(2): clock not synchronised


class _Timex(ctypes.Structure):
    _fields_ = [("modes", ctypes.c_uint), ("_pad", ctypes.c_byte * 204)]


def clock_synchronised() -> bool:
    """True when the kernel says the clock is synchronised (NTP), or when that cannot be asked.

    A box that cannot tell (no adjtimex, e.g. inside some containers) is assumed synchronised, unless
    SCHOOL_GATEWAY_CLOCK=unsynced says otherwise (tests and the deployment use it).
    """
    forced = os.environ.get("SCHOOL_GATEWAY_CLOCK")
    if forced in ("synced", "unsynced"):
        return forced == "synced"
    if Path("/run/systemd/timesync/synchronized").exists():
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        buf = _Timex()
        state = libc.adjtimex(ctypes.byref(buf))
    except (OSError, AttributeError):
        return True
    return state != _TIME_ERROR and state != -1
