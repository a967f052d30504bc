"""Crashes at every step of an install (a fault hook, and a real SIGKILL): recover() always finds a whole bundle."""

import os
import select
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from updaterkit import NOW, assert_whole, compiles, make_bundle, serve

from gateway.updater import STEPS
from gateway.updater.store import BundleStore

V = [2026120101, 2026120102, 2026120103, 2026120104]
CHILD = Path(__file__).resolve().parent / "crashchild.py"
REPO = Path(__file__).resolve().parents[2]
# Up to and including "linked" the old bundle is still current; from "switched" on, the new one is.
SWITCHED_AT = STEPS.index("switched")


class Crash(BaseException):
    """Not an Exception: the updater's own error handling must not see it, as with a power cut."""


@pytest.fixture
def three_installed(tmp_path, mirror, box, keys):
    """A state folder with V[0..2] installed (so the next install prunes), and V[3] on the mirror."""
    updater, _ = box(state_dir=tmp_path / "base")
    for v in V[:3]:
        serve(mirror.root, make_bundle(tmp_path, keys.dept, v, compiled=v == V[2]), keys.dept)
        assert updater.poll_once() == "updated"
    serve(mirror.root, make_bundle(tmp_path, keys.dept, V[3]), keys.dept)
    return tmp_path / "base"


def _copy_state(base: Path, dest: Path) -> Path:
    shutil.copytree(base, dest, symlinks=True)
    return dest


@pytest.mark.parametrize("step", STEPS)
def test_crash_at_each_step_leaves_old_or_new_whole(step, three_installed, tmp_path, box):
    state = _copy_state(three_installed, tmp_path / f"state-{step}")
    seen = []

    def fault(name):
        seen.append(name)
        if name == step:
            raise Crash(name)

    crashing, _ = box(state_dir=state, fault=fault)
    with pytest.raises(Crash):
        crashing.poll_once()
    assert seen[-1] == step

    restarted, _ = box(state_dir=state)
    restarted.recover()
    version = assert_whole(state)
    assert version == (V[3] if STEPS.index(step) >= SWITCHED_AT else V[2])
    compiles(restarted.department_dir())
    assert restarted.poll_once() in ("updated", "unchanged")
    assert assert_whole(state) == V[3]
    assert BundleStore(state).versions() == V[1:]


@pytest.mark.parametrize("step", ["downloading", "unpacking", "committed", "linked", "recorded"])
def test_sigkill_at_a_step(step, three_installed, tmp_path, mirror, keys, box):
    state = _copy_state(three_installed, tmp_path / f"killed-{step}")
    read_end, write_end = os.pipe()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, str(CHILD), str(state), mirror.url, keys.dept_b64, step,
                             str(write_end), str(NOW.timestamp())], pass_fds=(write_end,), env=env, cwd=REPO)
    os.close(write_end)
    try:
        # The child reports when it is parked at the step (or EOF if it died first): no sleeping.
        ready, _, _ = select.select([read_end], [], [], 30)
        assert ready, "the child never reached the step"
        line = os.read(read_end, 200).decode()
        assert line == f"at {step}\n", line
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(read_end)

    restarted, _ = box(state_dir=state)
    restarted.recover()
    version = assert_whole(state)
    assert version == (V[3] if STEPS.index(step) >= SWITCHED_AT else V[2])
    compiles(restarted.department_dir())
    assert restarted.poll_once() in ("updated", "unchanged")
    assert assert_whole(state) == V[3]


def test_recover_falls_back_when_current_is_damaged(three_installed, tmp_path, box):
    state = _copy_state(three_installed, tmp_path / "damaged")
    current = state / "bundles" / str(V[2])
    (current / "blocklists" / "adult.txt").write_text("half a file", encoding="utf-8")
    updater, _ = box(state_dir=state)
    updater.recover()
    assert assert_whole(state) == V[1]
    assert not current.exists()
    compiles(updater.department_dir())


def test_recover_with_no_whole_bundle_leaves_none(three_installed, tmp_path, box):
    state = _copy_state(three_installed, tmp_path / "ruined")
    for v in V[:3]:
        folder = state / "bundles" / str(v)
        if folder.exists():
            (folder / "policies" / "department" / "baseline.yaml").unlink()
    updater, _ = box(state_dir=state)
    updater.recover()
    assert updater.department_dir() is None  # the app serves the shipped baseline, never a mix
    assert not (state / "bundles" / "current").is_symlink()


def test_recover_never_goes_back_below_the_highest_version(three_installed, tmp_path, mirror, keys, box):
    """After falling back to V1, a replayed pointer for V1's predecessor is still a rollback."""
    state = _copy_state(three_installed, tmp_path / "fellback")
    (state / "bundles" / str(V[2]) / "manifest.json").write_text("{}", encoding="utf-8")
    updater, _ = box(state_dir=state)
    updater.recover()
    assert assert_whole(state) == V[1]
    serve(mirror.root, make_bundle(tmp_path, keys.dept, V[1] + 0), keys.dept)
    assert updater.poll_once() == "unchanged"
    serve(mirror.root, make_bundle(tmp_path, keys.dept, V[1] - 5), keys.dept)
    assert updater.poll_once() == "rollback"
