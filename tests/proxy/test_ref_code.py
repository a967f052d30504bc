"""Reference codes: round trip, HMAC check, hand-copying tolerance, no personal data inside."""

from __future__ import annotations

import datetime as dt
import stat

import pytest
from proxyrig import PLAIN, PRIMARY, build_holder

from gateway.core.decide import decide, identify
from gateway.proxy.ref import CODE_CHARS, decode_ref, format_ref, load_key, make_ref

NOW = dt.datetime(2026, 11, 3, 3, 21, 40, tzinfo=dt.UTC)  # a Tuesday, 10:21 in Hanoi


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("refpolicy")


@pytest.fixture(scope="module")
def snap(root):
    return build_holder(root).current


def _decision(snap, client, name):
    return decide(snap, identify(snap, client), name, NOW)


def test_round_trip_gives_time_rule_category_and_list_line(snap, root, tmp_path):
    key = load_key(tmp_path / "ref.key")
    d = _decision(snap, PLAIN, "www.casino.example")
    code = make_ref(d, snap, NOW, key)
    assert len(code.replace("-", "")) == CODE_CHARS == 20
    info = decode_ref(code, snapshot=snap, key=key, root=root)
    assert info["valid"] is True
    assert info["time"] == "2026-11-03T03:21:00+00:00"
    assert info["time_local"].startswith("2026-11-03 10:21")
    assert info["reason"] == "category" and info["category"] == "gambling" and info["band"] == "thcs"
    assert info["file"].endswith("gambling.txt") and info["line"] == 1 and info["list_line"] == "casino.example"
    assert "bands.thcs.block: gambling" in info["rule"]
    assert info["policy_changed"] is False


def test_school_deny_points_at_the_school_file_line(snap, root, tmp_path):
    key = load_key(tmp_path / "ref.key")
    d = _decision(snap, PLAIN, "denied.test")
    info = decode_ref(make_ref(d, snap, NOW, key), snapshot=snap, key=key, root=root)
    assert info["reason"] == "school_deny"
    assert info["file"].endswith("school.yaml") and "denied.test" in info["list_line"]


def test_code_carries_no_address_or_name(snap, tmp_path):
    key = load_key(tmp_path / "ref.key")
    a = make_ref(_decision(snap, PLAIN, "casino.example"), snap, NOW, key)
    b = make_ref(_decision(snap, "127.0.0.1", "bet.example"), snap, NOW, key)
    # Same category, band and minute; only the list line differs: nothing about who or which host.
    info_a, info_b = decode_ref(a, key=key), decode_ref(b, key=key)
    assert {k: v for k, v in info_a.items() if k not in ("code", "line")} == \
        {k: v for k, v in info_b.items() if k not in ("code", "line")}


def test_wrong_key_or_typo_is_invalid(snap, tmp_path):
    key = load_key(tmp_path / "ref.key")
    code = make_ref(_decision(snap, PRIMARY, "facebook.com"), snap, NOW, key)
    assert decode_ref(code, key=b"another box key, 32 bytes long!!")["valid"] is False
    typo = ("1" if code[0] != "1" else "2") + code[1:]
    assert decode_ref(typo, key=key)["valid"] is False
    assert decode_ref(code, key_path=tmp_path / "missing.key")["valid"] is None


def test_hand_copied_code_still_decodes(snap, tmp_path):
    key = load_key(tmp_path / "ref.key")
    code = make_ref(_decision(snap, PLAIN, "casino.example"), snap, NOW, key)
    sloppy = code.lower().replace("-", " ").replace("0", "o").replace("1", "l")
    assert decode_ref(sloppy, key=key)["valid"] is True


def test_not_a_code():
    for text in ("", "HELLO", "0" * 19, "U" * 20):
        with pytest.raises(ValueError):
            decode_ref(text, key=b"k" * 32)


def test_key_file_is_private_and_stable(tmp_path):
    path = tmp_path / "state" / "ref.key"
    first = load_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_key(path) == first and len(first) == 32


def test_format_ref_rows_in_both_languages(snap, tmp_path):
    key = load_key(tmp_path / "ref.key")
    info = decode_ref(make_ref(_decision(snap, PLAIN, "casino.example"), snap, NOW, key), snapshot=snap, key=key)
    vi = dict(format_ref(info, "vi"))
    en = dict(format_ref(info, "en"))
    assert vi["Danh mục"] == "gambling" and en["Category"] == "gambling"
    assert "hợp lệ" in vi["Chữ ký mã"] and en["Code signature"].startswith("valid")
