"""A full disk (a real, small tmpfs the test mounts) fails the update as disk_full and keeps the old bundle."""

import os
import subprocess

import pytest
from updaterkit import assert_whole, compiles, department_copy, make_bundle, serve

V1, V2 = 2026120101, 2026120102


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs for the state folder; skipped where mounting is not allowed (not root, no CAP_SYS_ADMIN)."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip() or done.returncode}); "
                    "the disk-full test needs root or CAP_SYS_ADMIN")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _random_names(count: int) -> str:
    # Random hex labels do not compress below ~10 bytes a line: the bundle file itself outgrows the disk.
    blob = os.urandom(10 * count).hex()
    return "".join(f"{blob[i:i + 20]}.example\n" for i in range(0, len(blob), 20))


@pytest.mark.parametrize("where", ["download", "unpack", "unpack-write"])
def test_full_disk_is_disk_full_and_keeps_the_old_bundle(where, small_disk, tmp_path, mirror, keys, box):
    state = small_disk / "state"
    updater, rec = box(state_dir=state)
    serve(mirror.root, make_bundle(tmp_path, keys.dept, V1, compiled=False), keys.dept)
    assert updater.poll_once() == "updated"
    department = updater.department_dir()

    if where == "download":  # ~3 MB of random names: the compressed bundle alone does not fit
        text = _random_names(120000)
    elif where == "unpack":  # compresses to almost nothing, unpacks to ~2 MB: refused before writing
        text = "same-name.example\n" * 120000
    else:  # 400 tiny files: the free-space estimate passes, but each takes a 4 KiB page on tmpfs
        text = ""

    def add_big_list(root):
        if text:
            (root / "blocklists" / "big.txt").write_text(text, encoding="ascii")
        else:
            extra = root / "blocklists" / "extra"
            extra.mkdir()
            for i in range(400):
                (extra / f"f{i}.txt").write_text("x.example\n", encoding="ascii")

    src, lists = department_copy(tmp_path, add_big_list)
    serve(mirror.root, make_bundle(tmp_path, keys.dept, V2, department=src, blocklists=lists, compiled=False),
          keys.dept)
    assert updater.poll_once() == "disk_full"
    assert rec.failures == ["disk_full"]
    assert updater.department_dir() == department
    assert assert_whole(state) == V1
    compiles(department)
