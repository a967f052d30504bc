"""One poll against a real loopback mirror: good bundles install, every bad one leaves the old policy serving."""

import hashlib
import json
import logging
import tarfile

import pytest
from updaterkit import (
    DAY,
    NOW,
    SCHOOL,
    assert_whole,
    compiles,
    department_copy,
    make_bundle,
    member,
    retar,
    serve,
)

from gateway.policy.compile import load_policy
from gateway.updater import policy_paths
from gateway.updater.store import BundleStore

V1, V2 = 2026113001, 2026120101


@pytest.fixture
def installed(tmp_path, mirror, box, keys):
    """A box with bundle V1 installed from the mirror; returns (updater, recorder, department dir)."""
    serve(mirror.root, make_bundle(tmp_path, keys.dept, V1), keys.dept)
    updater, rec = box()
    updater.recover()
    assert updater.poll_once() == "updated"
    department = updater.department_dir()
    assert department is not None and department.name == "department"
    rec.failures.clear()
    rec.successes.clear()
    return updater, rec, department


def test_good_bundle_installs_and_compiles(tmp_path, mirror, box, keys):
    serve(mirror.root, make_bundle(tmp_path, keys.dept, V1), keys.dept)
    applied = []
    updater, rec = box(on_applied=applied.append)
    updater.recover()
    assert updater.department_dir() is None  # nothing installed yet: the app uses the shipped baseline
    assert updater.poll_once() == "updated"
    department = updater.department_dir()
    assert applied == [department]
    assert department.parent.parent.name == str(V1)
    assert assert_whole(tmp_path / "state") == V1
    assert updater.installed()["version"] == V1
    snapshot = load_policy(policy_paths(department, SCHOOL))
    assert snapshot.version == "2026.12.1"
    assert rec.failures == [] and rec.successes[0][0]["version"] == V1
    assert rec.stale == [0] and rec.untrusted == [False]


def test_etag_makes_the_next_poll_a_304(installed, mirror):
    updater, rec, department = installed
    bundle_gets = mirror.count(f"school-gateway-bundle-{V1}.tar.gz")
    assert updater.poll_once() == "unchanged"
    _, headers, status = [r for r in mirror.requests if r[0] == "latest.json"][-1]
    assert headers.get("If-None-Match") and headers.get("Cache-Control") == "no-cache"
    assert status == 304
    assert mirror.count(f"school-gateway-bundle-{V1}.tar.gz") == bundle_gets
    assert updater.department_dir() == department
    assert rec.successes and rec.failures == []


def test_newer_bundle_replaces_the_department_layer_whole(installed, tmp_path, mirror, keys):
    updater, _, old = installed

    def edit(root):
        (root / "blocklists" / "gambling.txt").write_text("new-casino.example\n", encoding="utf-8")

    department, lists = department_copy(tmp_path, edit)
    serve(mirror.root, make_bundle(tmp_path, keys.dept, V2, department=department, blocklists=lists), keys.dept)
    assert updater.poll_once() == "updated"
    new = updater.department_dir()
    assert new != old and old.is_dir()  # the old bundle is kept to fall back to
    assert (new.parent.parent / "blocklists" / "gambling.txt").read_text() == "new-casino.example\n"
    assert SCHOOL.read_text(encoding="utf-8")  # the school's own layer is never touched
    assert assert_whole(tmp_path / "state") == V2


def _tamper_list(members):
    entry = member(members, "blocklists/adult.txt")
    entry[1] = entry[1].replace(b"\n", b"\n", 1) + b"sneaky.example\n"


def _tamper_manifest(members):
    entry = member(members, "manifest.json")
    doc = json.loads(entry[1])
    doc["expires"] = "2099-01-01T00:00:00Z"
    entry[1] = json.dumps(doc).encode()


def _unlisted(members):
    info = tarfile.TarInfo("blocklists/extra.txt")
    members.append([info, b"x.example\n"])


def _symlink(members):
    info = tarfile.TarInfo("blocklists/link.txt")
    info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
    members.append([info, b""])


def _traversal(members):
    entry = member(members, "blocklists/adult.txt")
    entry[0].name = "blocklists/../../../evil.txt"


CASES = {
    # name: (how the mirror is set up, expected reason)
    "tampered list, pointer unchanged": ("tamper_list", "hash"),
    "tampered list, pointer re-signed": ("tamper_list_resigned", "hash"),
    "tampered manifest": ("tamper_manifest", "signature"),
    "unknown key": ("unknown_key", "signature"),
    "unknown key, pointer from trusted": ("unknown_key_bundle", "signature"),
    "expired": ("expired", "expired"),
    "older version": ("older", "rollback"),
    "truncated download": ("truncate", "network"),
    "short file on the mirror": ("short", "size"),
    "larger than max_bytes": ("too_large", "size"),
    "HTTP 500": ("500", "http_status"),
    "stalled server": ("stall", "network"),
    "does not compile": ("broken", "compile"),
    "gateway too old": ("too_old", "gateway_too_old"),
    "unlisted member": ("unlisted", "malformed"),
    "symlink member": ("symlink", "malformed"),
    "path traversal": ("traversal", "malformed"),
    "not a tarball": ("garbage", "malformed"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_update_keeps_the_installed_policy(case, installed, tmp_path, mirror, keys, box):
    updater, rec, department = installed
    how, reason = CASES[case]
    root = mirror.root
    good = make_bundle(tmp_path, keys.dept, V2)
    kwargs = {}
    if how == "tamper_list":
        doc = serve(root, good, keys.dept)
        tampered = retar(good, tmp_path / "t.tar.gz", _tamper_list).read_bytes()
        # Same length as the signed pointer says, so it is the SHA-256 that catches it.
        (root / doc["file"]).write_bytes(tampered[: doc["size"]].ljust(doc["size"], b"\0"))
    elif how == "tamper_list_resigned":
        serve(root, retar(good, tmp_path / "t.tar.gz", _tamper_list), keys.dept, version=V2)
    elif how == "tamper_manifest":
        serve(root, retar(good, tmp_path / "t.tar.gz", _tamper_manifest), keys.dept, version=V2)
    elif how == "unknown_key":
        (tmp_path / "o").mkdir()
        serve(root, make_bundle(tmp_path / "o", keys.other, V2), keys.other)
    elif how == "unknown_key_bundle":
        (tmp_path / "o").mkdir()
        serve(root, make_bundle(tmp_path / "o", keys.other, V2), keys.dept)
    elif how == "expired":
        serve(root, make_bundle(tmp_path, keys.dept, V2, created=NOW - 40 * DAY, valid=30 * DAY), keys.dept)
    elif how == "older":
        serve(root, make_bundle(tmp_path, keys.dept, V1 - 1), keys.dept)
    elif how == "truncate":
        doc = serve(root, good, keys.dept)
        mirror.faults[doc["file"]] = "truncate"
    elif how == "short":
        doc = serve(root, good, keys.dept)
        data = (root / doc["file"]).read_bytes()
        (root / doc["file"]).write_bytes(data[:-100])
    elif how == "too_large":
        serve(root, good, keys.dept)
        kwargs["max_bytes"] = 1000
    elif how == "500":
        serve(root, good, keys.dept)
        mirror.faults["latest.json"] = "500"
    elif how == "stall":
        doc = serve(root, good, keys.dept)
        mirror.faults[doc["file"]] = "stall"
        kwargs["timeout"] = 0.3
    elif how == "broken":
        department_src, lists = department_copy(tmp_path, lambda r: (r / "policies/department/bands.yaml")
                                                .write_text("bands: [oops\n", encoding="utf-8"))
        serve(root, make_bundle(tmp_path, keys.dept, V2, department=department_src, blocklists=lists, school=None),
              keys.dept)
    elif how == "too_old":
        serve(root, make_bundle(tmp_path, keys.dept, V2, min_gateway="99.0"), keys.dept)
    elif how == "unlisted":
        serve(root, retar(good, tmp_path / "t.tar.gz", _unlisted), keys.dept, version=V2)
    elif how == "symlink":
        serve(root, retar(good, tmp_path / "t.tar.gz", _symlink), keys.dept, version=V2)
    elif how == "traversal":
        serve(root, retar(good, tmp_path / "t.tar.gz", _traversal), keys.dept, version=V2)
    elif how == "garbage":
        junk = tmp_path / "junk.tar.gz"
        junk.write_bytes(b"\x1f\x8b not really gzip" * 10)
        serve(root, junk, keys.dept, version=V2)
    if kwargs:
        updater, rec = box(**kwargs)
    assert updater.poll_once() == reason
    assert rec.failures == [reason]
    assert rec.successes == []
    assert updater.department_dir() == department
    assert updater.installed()["version"] == V1
    compiles(department)
    assert assert_whole(tmp_path / "state") == V1
    assert not (tmp_path / "evil.txt").exists()
    assert BundleStore(tmp_path / "state").versions() == [V1]


def test_failure_is_logged_with_its_reason(installed, tmp_path, mirror, keys, caplog):
    updater, _, _ = installed
    serve(mirror.root, make_bundle(tmp_path, keys.dept, V2, created=NOW - 40 * DAY, valid=30 * DAY), keys.dept)
    with caplog.at_level(logging.WARNING, "gateway.updater"):
        assert updater.poll_once() == "expired"
    assert "[expired]" in caplog.text and str(V2) in caplog.text


def test_rejected_bundle_is_not_downloaded_every_poll(installed, tmp_path, mirror, keys):
    updater, rec, department = installed
    department_src, lists = department_copy(tmp_path, lambda r: (r / "policies/department/bands.yaml")
                                            .write_text("bands: {}\n", encoding="utf-8"))
    doc = serve(mirror.root, make_bundle(tmp_path, keys.dept, V2, department=department_src, blocklists=lists,
                                         school=None), keys.dept)
    assert updater.poll_once() == "compile"
    assert updater.poll_once() == "compile"  # still reported, so the metric shows a lasting failure
    assert mirror.count(doc["file"]) == 1
    assert rec.failures == ["compile", "compile"]
    assert updater.department_dir() == department


def test_next_mirror_is_tried(tmp_path, mirror, box, keys):
    from updaterkit import Mirror

    good = Mirror(tmp_path / "www2")
    try:
        serve(good.root, make_bundle(tmp_path, keys.dept, V1), keys.dept)
        mirror.faults["latest.json"] = "500"
        updater, rec = box(mirrors=(mirror.url, good.url))
        assert updater.poll_once() == "updated"
        assert rec.failures == []
        assert mirror.count("latest.json") == 1
    finally:
        good.close()


def test_every_mirror_down_reports_the_most_telling_reason(tmp_path, mirror, box, keys):
    (tmp_path / "o").mkdir()
    serve(mirror.root, make_bundle(tmp_path / "o", keys.other, V1), keys.other)
    updater, rec = box(mirrors=(mirror.url, "http://127.0.0.1:9/nothing"), timeout=1.0)
    assert updater.poll_once() == "signature"
    assert rec.failures == ["signature"]
    assert updater.department_dir() is None


def test_stale_school_entries_are_applied_with_warnings(installed, tmp_path, mirror, keys, caplog):
    """The Department drops `shopping`; the school file still blocks it: applied, and the stale entry reported."""
    updater, rec, _ = installed

    def drop_shopping(root):
        cats = root / "policies/department/categories.yaml"
        text = cats.read_text(encoding="utf-8")
        start = text.index("  shopping:")
        end = text.index("  ai_chat:")
        cats.write_text(text[:start] + text[end:], encoding="utf-8")
        bands = root / "policies/department/bands.yaml"
        bands.write_text(bands.read_text(encoding="utf-8").replace("\n            shopping, ", "\n            ")
                         .replace(", shopping]", "]").replace(" shopping,", ""), encoding="utf-8")

    department_src, lists = department_copy(tmp_path, drop_shopping)
    assert "shopping" not in (department_src / "bands.yaml").read_text(encoding="utf-8")
    serve(mirror.root, make_bundle(tmp_path, keys.dept, V2, department=department_src, blocklists=lists), keys.dept)
    with caplog.at_level(logging.WARNING, "gateway.updater"):
        assert updater.poll_once() == "updated"
    assert rec.stale and rec.stale[-1] >= 1
    assert "shopping" in caplog.text
    snapshot = load_policy(policy_paths(updater.department_dir(), SCHOOL))
    assert "shopping" not in snapshot.categories
    assert any(w.key == "policy.unknown_category" for w in snapshot.warnings)


def test_installed_bundle_expiry_is_reported_not_enforced(installed, tmp_path, mirror, keys, box):
    updater, rec, department = installed
    later = NOW + 60 * DAY
    updater, rec = box(clock=lambda: later.timestamp())
    assert updater.poll_once() == "expired"
    assert rec.failures == ["expired"]
    assert rec.successes  # the check itself worked: the mirror simply has nothing newer
    assert updater.department_dir() == department  # still filtering with it
    compiles(department)


def test_prune_keeps_the_last_three(tmp_path, mirror, box, keys):
    updater, _ = box()
    versions = [V1 + i for i in range(5)]
    for v in versions:
        serve(mirror.root, make_bundle(tmp_path, keys.dept, v, compiled=False), keys.dept)
        assert updater.poll_once() == "updated"
    assert BundleStore(tmp_path / "state").versions() == versions[-3:]
    assert assert_whole(tmp_path / "state") == versions[-1]


def test_compiled_list_form_is_used_from_the_bundle(installed, tmp_path):
    _, _, department = installed
    cache = tmp_path / "cache2"
    paths = policy_paths(department, SCHOOL, cache)
    seeded = cache / "lists.sgwset"
    bundled = department.parent.parent / "compiled" / "lists.sgwset"
    assert hashlib.sha256(seeded.read_bytes()).digest() == hashlib.sha256(bundled.read_bytes()).digest()
    inode = seeded.stat().st_ino
    load_policy(paths)
    assert seeded.stat().st_ino == inode  # a cache miss would have rewritten it
    assert verify_tree_ok(department)


def verify_tree_ok(department):
    from gateway.updater.bundle import verify_tree

    return verify_tree(department.parent.parent) is None


def test_another_process_installing_is_noticed(installed, tmp_path, mirror, keys, box):
    updater, _, _ = installed
    applied = []
    daemon, _ = box(on_applied=applied.append)
    serve(mirror.root, make_bundle(tmp_path, keys.dept, V2), keys.dept)
    assert updater.poll_once() == "updated"  # e.g. cron's `update --once`
    assert daemon.poll_once() == "unchanged"
    assert applied == [daemon.department_dir()]
    assert daemon.department_dir().parent.parent.name == str(V2)


def test_busy_when_another_updater_holds_the_lock(installed, tmp_path):
    updater, rec, _ = installed
    with BundleStore(tmp_path / "state").lock() as held:
        assert held
        assert updater.poll_once() == "busy"
    assert rec.failures == []
