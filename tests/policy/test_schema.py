"""Bad policy files: every error names its file and line and says how to fix it, in vi and en."""

import unicodedata

import pytest
from policyfactory import SCHOOL, build, write_policy

from gateway.core.decide import decide, identify
from gateway.core.model import Action
from gateway.errors import ConfigError
from gateway.policy.compile import load_policy


def errors_of(tmp_path, **kw) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        build(tmp_path, **kw)
    return info.value


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    bad = SCHOOL.replace("groups:\n", "groups:\n  broken: [1\n", 1)
    err = errors_of(tmp_path, school=bad)
    text = err.render("en")
    assert "school.yaml:" in text and "YAML syntax error" in text
    assert "lỗi cú pháp YAML" in err.render("vi")


def test_unknown_key_and_bad_values_all_reported(tmp_path):
    bad = SCHOOL.replace("  thcs: {band: thcs, clients: [10.3.0.0/16, \"fd00:3::/48\"]}",
                         "  thcs: {band: thcs, clients: [10.3.0.0/33, 300.1.1.1], colour: red}")
    bad = bad.replace("  - 2026-12-25", "  - 2026-13-45")
    err = errors_of(tmp_path, school=bad)
    lines = {(p.key, p.line) for p in err.problems}
    line = bad.splitlines().index(next(x for x in bad.splitlines() if "colour" in x)) + 1
    assert ("schema.unknown_key", line) in lines
    assert sum(1 for p in err.problems if p.key == "policy.bad_network") == 2
    assert any(p.key == "policy.bad_date" for p in err.problems)
    text = err.render("en")
    assert "allowed keys:" in text and "10.3.0.0/33" in text


def test_duplicate_key_is_an_error(tmp_path):
    bad = SCHOOL.replace("unknown_group: khach", "unknown_group: khach\nunknown_group: staff")
    err = errors_of(tmp_path, school=bad)
    assert any(p.key == "yaml.duplicate_key" for p in err.problems)


def test_group_with_unknown_band_is_an_error(tmp_path):
    bad = SCHOOL.replace("band: thpt,", "band: dai_hoc,")
    err = errors_of(tmp_path, school=bad)
    assert [p.key for p in err.problems] == ["policy.unknown_band"]
    assert "mam_non" in err.render("en")


def test_missing_list_file_named(tmp_path):
    paths = write_policy(tmp_path)
    (tmp_path / "lists" / "games.txt").unlink()
    with pytest.raises(ConfigError) as info:
        load_policy(paths)
    assert "games.txt" in info.value.render("en")
    assert "categories.yaml:" in info.value.render("en")


def test_bad_time_and_unknown_schedule(tmp_path):
    bad = SCHOOL + "schedules:\n  school_hours:\n    - {days: [mon, funday], from: '25:00', to: '10:00'}\n"
    err = errors_of(tmp_path, school=bad)
    keys = [p.key for p in err.problems]
    assert "policy.bad_day" in keys and "policy.bad_time" in keys


def test_stale_school_entries_are_warnings_not_errors(tmp_path):
    stale = SCHOOL.replace("unblock: [gambling, adult]", "unblock: [gambling, old_category]\n    block: [renamed]")
    stale += "  old_band:\n    block: [gambling]\n"
    snap = build(tmp_path, school=stale)
    keys = sorted(w.key for w in snap.warnings)
    assert keys.count("policy.unknown_category") == 2
    assert "policy.unknown_band_stale" in keys
    # the school's valid entries keep working
    d = decide(snap, identify(snap, "10.4.0.1"), "casino.example", __import__("datetime").datetime.now(
        __import__("datetime").UTC))
    assert d.action is Action.ALLOW


def test_decomposed_vietnamese_matches_precomposed(tmp_path):
    nfd = unicodedata.normalize("NFD", "trường-học.vn")
    school = SCHOOL.replace("deny: [bad.example, captive.apple.com]", f"deny: [bad.example, {nfd}]")
    snap = build(tmp_path, school=school)
    group = identify(snap, "10.3.0.1")
    import datetime as dt

    from gateway.core.names import normalize

    d = decide(snap, group, normalize("trường-học.vn"), dt.datetime.now(dt.UTC))
    assert d.action is Action.BLOCK


def test_empty_school_file(tmp_path):
    err = errors_of(tmp_path, school="")
    assert err.problems[0].key == "schema.empty_document"
