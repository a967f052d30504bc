"""The reload's list compiler child: spawned without forking the worker, at nice 19 from its first
instruction, waited for without blocking the event loop, killed at its deadline or when the wait is
cancelled."""

from __future__ import annotations

import asyncio
import os
import sys
import time

import pytest

from gateway.app import run_low_priority


def run(coro):
    return asyncio.run(coro)


def test_exit_status_and_priority_seen_by_the_child(tmp_path):
    out = tmp_path / "nice"
    code = f"import os, sys; open({str(out)!r}, 'w').write(str(os.getpriority(os.PRIO_PROCESS, 0))); sys.exit(3)"
    assert run(run_low_priority([sys.executable, "-c", code], timeout=30)) == 3
    assert out.read_text() == "19"


def test_the_loop_keeps_running_while_the_child_works():
    ticks = 0

    async def main():
        nonlocal ticks

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        t = asyncio.get_running_loop().create_task(ticker())
        status = await run_low_priority([sys.executable, "-c", "import time; time.sleep(0.5)"], timeout=30)
        t.cancel()
        return status

    assert run(main()) == 0
    assert ticks >= 10  # a blocking wait would have let through none


def test_killed_at_the_deadline():
    started = time.monotonic()
    assert run(run_low_priority([sys.executable, "-c", "import time; time.sleep(60)"], timeout=0.5)) is None
    assert time.monotonic() - started < 30


def test_cancelled_wait_kills_and_reaps_the_child(tmp_path):
    pidfile = tmp_path / "pid"
    code = f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(60)"

    async def main():
        task = asyncio.get_running_loop().create_task(run_low_priority([sys.executable, "-c", code], timeout=60))
        while not pidfile.exists() or not pidfile.read_text():
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(main())
    with pytest.raises(ProcessLookupError):  # reaped: no zombie left behind
        os.kill(int(pidfile.read_text()), 0)


def test_uvloop_too():
    uvloop = pytest.importorskip("uvloop")
    assert uvloop.run(run_low_priority([sys.executable, "-c", "pass"], timeout=30)) == 0
