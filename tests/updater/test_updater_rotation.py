"""Key rotation: boxes trust old and new keys during the overlap, then only the new one."""

from updaterkit import make_bundle, serve

V1, V2 = 2026120101, 2026120102


def test_rotation_with_overlap(tmp_path, mirror, box, keys):
    old, new = keys.dept, keys.other
    serve(mirror.root, make_bundle(tmp_path, old, V1), old)
    updater, _ = box(trusted=(keys.dept_b64,))
    assert updater.poll_once() == "updated"

    # 1. The new public key reaches every box (config/Ansible) while bundles are still signed with the old.
    overlap, _ = box(trusted=(keys.dept_b64, keys.other_b64))
    assert overlap.poll_once() == "unchanged"
    # 2. The Department signs with the new key.
    (tmp_path / "n").mkdir()
    serve(mirror.root, make_bundle(tmp_path / "n", new, V2), new)
    assert overlap.poll_once() == "updated"
    # 3. The old key is removed from the boxes.
    after, rec = box(trusted=(keys.other_b64,))
    assert after.poll_once() == "unchanged"
    assert rec.failures == []


def test_dropping_the_old_key_too_early_is_a_signature_failure_not_a_stuck_cache(tmp_path, mirror, box, keys):
    serve(mirror.root, make_bundle(tmp_path, keys.dept, V1), keys.dept)
    updater, _ = box()
    assert updater.poll_once() == "updated"
    early, rec = box(trusted=(keys.other_b64,))
    assert early.poll_once() == "signature"  # the remembered (304) pointer no longer verifies
    assert early.poll_once() == "signature"
    last = [h for n, h, _ in mirror.requests if n == "latest.json"][-1]
    assert "If-None-Match" not in last  # asked afresh, not stuck on the stale cached answer
    (tmp_path / "n").mkdir()
    serve(mirror.root, make_bundle(tmp_path / "n", keys.other, V2), keys.other)
    assert early.poll_once() == "updated"
    assert early.department_dir() is not None
    assert rec.failures == ["signature", "signature"]
