"""run_forever polls in a worker thread (the event loop stays free) and stops when asked."""

import asyncio
import threading

from updaterkit import SCHOOL, make_bundle, serve

from gateway.updater import make_validator


def test_run_forever_polls_off_the_event_loop_and_stops(tmp_path, mirror, box, keys):
    serve(mirror.root, make_bundle(tmp_path, keys.dept, 2026120101), keys.dept)
    entered, gate = threading.Event(), threading.Event()
    real = make_validator(SCHOOL)

    def slow_validate(department):
        entered.set()
        assert gate.wait(10), "the test never opened the gate"
        return real(department)

    updater, rec = box(validate=slow_validate, interval=0.05)

    async def scenario():
        stop = asyncio.Event()
        task = asyncio.create_task(updater.run_forever(stop))
        loop = asyncio.get_running_loop()
        # If the poll ran on the loop thread, this coroutine could not run until it finished: deadlock.
        assert await loop.run_in_executor(None, entered.wait, 10)
        ticks = 0
        for _ in range(3):
            await asyncio.sleep(0)
            ticks += 1
        gate.set()
        assert await loop.run_in_executor(None, rec.polled.wait, 10)
        stop.set()
        await asyncio.wait_for(task, 10)
        return ticks

    assert asyncio.run(scenario()) == 3
    assert updater.installed()["version"] == 2026120101
    assert rec.successes
