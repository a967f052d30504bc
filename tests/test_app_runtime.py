"""What `run` does around serving: the reload's list compiler child (spawned without forking the
worker, under SCHED_IDLE from its first instruction, waited for without blocking the event loop, killed at
its deadline or when the wait is cancelled) and the young-generation collector."""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import time

import pytest

from gateway.app import collect_young, run_low_priority
from gateway.dns.cache import Cache


def run(coro):
    return asyncio.run(coro)


def test_exit_status_and_idle_policy_seen_by_the_child(tmp_path):
    out = tmp_path / "policy"
    code = f"import os, sys; open({str(out)!r}, 'w').write(str(os.sched_getscheduler(0))); sys.exit(3)"
    assert run(run_low_priority([sys.executable, "-c", code], timeout=30)) == 3
    assert int(out.read_text()) == os.SCHED_IDLE


def test_the_serving_thread_keeps_its_policy():
    """The child inherits SCHED_IDLE from a thread made for the spawn; the loop's thread never changes."""
    assert os.sched_getscheduler(0) == os.SCHED_OTHER
    assert run(run_low_priority([sys.executable, "-c", "pass"], timeout=30)) == 0
    assert os.sched_getscheduler(0) == os.SCHED_OTHER


def test_a_child_spawned_after_its_wait_was_cancelled_is_killed_and_reaped():
    import threading

    from gateway.app import _kill_spawned, _spawn_idle

    result = []
    spawner = threading.Thread(target=lambda: result.append(_spawn_idle([sys.executable, "-c",
                                                                         "import time; time.sleep(60)"])))
    spawner.start()
    spawner.join()
    (pid, inherited), = result
    assert inherited and os.sched_getscheduler(pid) == os.SCHED_IDLE

    async def cancelled_wait():
        done = asyncio.get_running_loop().create_future()
        done.set_result((pid, inherited))  # what the spawn thread reports after the wait was cancelled
        _kill_spawned(done)

    run(cancelled_wait())
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # killed and already reaped


def test_a_starved_child_is_moved_to_the_normal_policy_at_nice_19(tmp_path):
    out = tmp_path / "policy"
    code = ("import os, time; time.sleep(1.0); "
            f"open({str(out)!r}, 'w').write(f'{{os.sched_getscheduler(0)}} {{os.getpriority(os.PRIO_PROCESS, 0)}}')")
    assert run(run_low_priority([sys.executable, "-c", code], timeout=30, escalate_after=0.2)) == 0
    assert out.read_text() == f"{os.SCHED_OTHER} 19"


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
            assert not task.done(), task  # failed to start: would wait for ever
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


def test_young_generation_stays_small_when_cpython_does_not_collect():
    """While serving, a full cache or memo makes one entry and frees one per answer, so CPython's own
    trigger (700 more made than freed) rarely fires and unexamined entries pile up. The automatic
    trigger is switched off here to stand for that: collect_young alone must bound the young
    generation by time."""

    async def churn(collector: bool) -> int:
        cache = Cache(max_entries=20000, clock=lambda: 100.0)
        task = asyncio.get_running_loop().create_task(collect_young(0.01)) if collector else None
        peak = 0
        for chunk in range(40):  # fills the cache, then churns it
            for i in range(1000):
                cache.put((f"n{chunk}-{i}.example", 1), bytes(12), (), 300)
            await asyncio.sleep(0.03)
            peak = max(peak, len(gc.get_objects(0)))
        if task is not None:
            task.cancel()
        return peak

    gc.collect()
    gc.disable()
    try:
        without = asyncio.run(churn(False))
        gc.collect()
        with_collector = asyncio.run(churn(True))
    finally:
        gc.enable()
    assert without > 20000  # the pile-up the collector is there for
    assert with_collector < 5000  # one chunk's worth at most
