"""Reading a bundle safely: signature before parsing, only listed regular files, limits, reproducible builds."""

import tarfile

import pytest
from updaterkit import make_bundle, member, retar

from gateway.updater.bundle import read_bundle
from gateway.updater.reasons import UpdateFailure


def _read(path, keys, **kw):
    kw.setdefault("max_unpacked", 1 << 30)
    return read_bundle(path, (keys.dept.public_key(),), gateway_version="0.1.0", **kw)


def _reason(path, keys, **kw) -> str:
    with pytest.raises(UpdateFailure) as info:
        _read(path, keys, **kw)
    return info.value.reason


@pytest.fixture
def good(tmp_path, keys):
    return make_bundle(tmp_path, keys.dept, 7)


def test_build_is_reproducible(tmp_path, keys, good):
    (tmp_path / "again").mkdir()
    again = make_bundle(tmp_path / "again", keys.dept, 7)
    assert again.read_bytes() == good.read_bytes()


def test_unpacks_exactly_the_listed_files(tmp_path, keys, good):
    dest = tmp_path / "dest"
    dest.mkdir()
    result = _read(good, keys, dest=dest)
    listed = {e["path"] for e in result.manifest["files"]}
    on_disk = {str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()}
    assert on_disk == listed | {"manifest.json", "manifest.sig"}


def test_manifest_is_checked_before_anything_is_written(tmp_path, keys, good):
    dest = tmp_path / "dest"
    dest.mkdir()
    seen = []

    def check(manifest):
        seen.append(manifest["version"])
        raise UpdateFailure("rollback", "updater.rollback", version=manifest["version"], installed=9)

    with pytest.raises(UpdateFailure):
        _read(good, keys, dest=dest, check=check)
    assert seen == [7] and list(dest.iterdir()) == []


def _odd(kind):
    def edit(members):
        if kind == "manifest_not_first":
            members.reverse()
            return
        info = tarfile.TarInfo({"abs": "/etc/cron.d/evil", "dotdot": "blocklists/../../x",
                                "device": "blocklists/dev", "hardlink": "blocklists/hl",
                                "fifo": "blocklists/fifo", "dup": "blocklists/adult.txt"}[kind])
        if kind == "device":
            info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
        elif kind == "hardlink":
            info.type, info.linkname = tarfile.LNKTYPE, "blocklists/adult.txt"
        elif kind == "fifo":
            info.type = tarfile.FIFOTYPE
        data = member(members, "blocklists/adult.txt")[1] if kind == "dup" else b"x"
        members.append([info, data])
    return edit


@pytest.mark.parametrize("kind", ["manifest_not_first", "abs", "dotdot", "device", "hardlink", "fifo", "dup"])
def test_odd_members_are_refused(kind, tmp_path, keys, good):
    odd = retar(good, tmp_path / "odd.tar.gz", _odd(kind))
    dest = tmp_path / "dest"
    dest.mkdir()
    assert _reason(odd, keys, dest=dest) == "malformed"
    assert not (tmp_path / "x").exists()


def test_unpacked_size_limit(tmp_path, keys, good):
    assert _reason(good, keys, max_unpacked=1000) == "size"


def test_wrong_key_and_missing_signature(tmp_path, keys, good):
    with pytest.raises(UpdateFailure) as info:
        read_bundle(good, (keys.other.public_key(),), gateway_version=None, max_unpacked=1 << 30)
    assert info.value.reason == "signature"

    def drop_sig(members):
        member(members, "manifest.sig")[1] = b"not a signature"

    assert _reason(retar(good, tmp_path / "nosig.tar.gz", drop_sig), keys) == "signature"
