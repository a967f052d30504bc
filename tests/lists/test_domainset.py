"""DomainSet: suffix matching agrees with a naive model; the compiled file round-trips and fails loudly."""

from __future__ import annotations

import hashlib
import json
import os
import random
import string
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.lists.domainset import FORMAT_VERSION, MAGIC, DomainSet, DomainSetFormatError, Match, name_key

EXC = 1
SUB = 2


def sample() -> DomainSet:
    return DomainSet.build(
        [
            ("example.com", 0, 1, 0),
            ("ok.example.com", 0, 2, EXC),
            ("wild.org", 1, 3, SUB),
            ("example.com", 2, 9, 0),  # the same name from another source: both kept
            ("com", 3, 4, 0),
        ]
    )


def test_matches_most_specific_first_with_every_source() -> None:
    got = sample().matches("a.ok.example.com")
    assert got == (
        Match(1, "ok.example.com", 0, 2, True, False),
        Match(2, "example.com", 0, 1, False, False),
        Match(2, "example.com", 2, 9, False, False),
        Match(3, "com", 3, 4, False, False),
    )


def test_name_itself_is_depth_zero() -> None:
    assert sample().matches("example.com")[0] == Match(0, "example.com", 0, 1, False, False)


def test_subdomains_only_does_not_match_the_name_itself() -> None:
    dset = sample()
    assert dset.matches("wild.org") == ()
    assert dset.matches("x.wild.org") == (Match(1, "wild.org", 1, 3, False, True),)
    assert "wild.org" not in dset
    assert "x.wild.org" in dset


def test_miss_returns_empty_tuple() -> None:
    dset = sample()
    assert dset.matches("example.net") == ()
    assert dset.matches("xample.com.evil") == ()
    assert "example.net" not in dset


def test_contains_ignores_exception_entries() -> None:
    dset = DomainSet.build([("ok.example.com", 0, 1, EXC)])
    assert dset.matches("ok.example.com")
    assert "ok.example.com" not in dset
    # Membership is "some non-exception entry covers it", not the exception's override semantics.
    both = DomainSet.build([("ok.example.com", 0, 1, EXC), ("example.com", 0, 2, 0)])
    assert "ok.example.com" in both


def test_empty_set() -> None:
    empty = DomainSet.build([])
    assert len(empty) == 0
    assert empty.matches("a.b.c") == ()
    assert "a.b.c" not in empty


def test_label_bounds_skip_nothing_that_matters() -> None:
    # Entries of 3 labels only: longer names must still reach their 3-label suffix.
    dset = DomainSet.build([("a.b.c", 0, 1, 0)])
    assert dset.matches("x.y.z.a.b.c") == (Match(3, "a.b.c", 0, 1, False, False),)
    assert dset.matches("b.c") == ()
    assert dset.matches("c") == ()


def test_len_and_nbytes() -> None:
    dset = sample()
    assert len(dset) == 5
    assert dset.nbytes() > 5 * 14


def test_build_rejects_out_of_range_payload() -> None:
    with pytest.raises(ValueError, match="line numbers"):
        DomainSet.build([("a.com", 0, 1 << 30, 0)])
    with pytest.raises(ValueError, match="source ids"):
        DomainSet.build([("a.com", 70000, 1, 0)])
    with pytest.raises(ValueError, match="flags"):
        DomainSet.build([("a.com", 0, 1, 4)])


def test_key_is_crc32_and_adler32() -> None:
    # Pinned: the key must never depend on Python's per-process hash().
    assert name_key(b"example.com") == (0xB6FA4EB9 << 32) | 0x1AA0045A


# -- property: agree with a naive suffix walk over a dict ---------------------------------------

labels = st.sampled_from(["a", "b", "c", "ab"])
names = st.lists(labels, min_size=1, max_size=4).map(".".join)
entries = st.lists(
    st.tuples(names, st.integers(0, 3), st.integers(1, 50), st.integers(0, 3)),
    max_size=40,
)


def naive(entries: list[tuple[str, int, int, int]], name: str) -> tuple[Match, ...]:
    labels = name.split(".")
    found = []
    for depth in range(len(labels)):
        suffix = ".".join(labels[depth:])
        for listed, source, line, flags in entries:
            if listed == suffix and (depth or not flags & SUB):
                found.append(Match(depth, suffix, source, line, bool(flags & EXC), bool(flags & SUB)))
    return tuple(found)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entries=entries, queries=st.lists(names, min_size=1, max_size=20))
def test_matches_agree_with_naive_suffix_walk(entries, queries) -> None:
    dset = DomainSet.build(entries)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "set.bin"
        dset.save(path, {"n": len(entries)})
        loaded, meta = DomainSet.load(path)
        assert meta == {"n": len(entries)}
        for query in queries:
            expected = naive(entries, query)
            assert dset.matches(query) == expected
            assert loaded.matches(query) == expected
            member = any(not m.exception for m in expected)
            assert (query in dset) is member
            assert (query in loaded) is member
            raw = dset.raw_matches(query)
            assert [(d, s, src) for d, s, src, _ in raw] == [(m.depth, m.suffix, m.source) for m in expected]


# -- the compiled file ------------------------------------------------------------------------


def test_save_load_round_trip_is_zero_copy(tmp_path: Path) -> None:
    dset = sample()
    path = tmp_path / "lists.sgwset"
    meta = {"sources": [{"path": "blocklists/adult.txt", "size": 10}], "note": "học"}
    dset.save(path, meta)
    loaded, got = DomainSet.load(path)
    assert got == meta
    assert len(loaded) == len(dset)
    assert loaded.nbytes() == dset.nbytes()
    for query in ["a.ok.example.com", "example.com", "x.wild.org", "wild.org", "nothing.net"]:
        assert loaded.matches(query) == dset.matches(query)
    # Zero-copy: the arrays are views over the mapped file, not copies.
    assert isinstance(loaded._records, memoryview)
    assert loaded._records.obj is not None
    assert isinstance(loaded._groups, memoryview)


def test_file_layout_is_portable_and_deterministic(tmp_path: Path) -> None:
    # Same input, same bytes: nothing depends on the platform, the process or the Python version.
    # If this digest changes, the format changed: bump FORMAT_VERSION.
    path = tmp_path / "golden.sgwset"
    sample().save(path, {"golden": True})
    data = path.read_bytes()
    assert data[:8] == MAGIC
    assert int.from_bytes(data[8:12], "little") == FORMAT_VERSION == 2
    assert hashlib.sha256(data).hexdigest() == GOLDEN_SHA256


GOLDEN_SHA256 = "82e9c32eeb6b0e04da88d52178c4deb9bd54675e483678c393a9dcdfeb5c5bea"


def saved(tmp_path: Path) -> Path:
    path = tmp_path / "lists.sgwset"
    sample().save(path, {"k": 1})
    return path


def test_flipped_byte_fails_checksum(tmp_path: Path) -> None:
    path = saved(tmp_path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(DomainSetFormatError, match="checksum"):
        DomainSet.load(path)


def test_truncated_file(tmp_path: Path) -> None:
    path = saved(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:-8])
    with pytest.raises(DomainSetFormatError, match="truncated"):
        DomainSet.load(path)
    path.write_bytes(data[:20])
    with pytest.raises(DomainSetFormatError, match="truncated"):
        DomainSet.load(path)
    path.write_bytes(b"")
    with pytest.raises(DomainSetFormatError, match="truncated"):
        DomainSet.load(path)


def test_wrong_magic(tmp_path: Path) -> None:
    path = saved(tmp_path)
    data = bytearray(path.read_bytes())
    data[:8] = b"NOTASET\0"
    path.write_bytes(bytes(data))
    with pytest.raises(DomainSetFormatError, match="magic"):
        DomainSet.load(path)
    text = tmp_path / "list.txt"
    text.write_text("example.com\n" * 20)
    with pytest.raises(DomainSetFormatError, match="magic"):
        DomainSet.load(text)


def test_other_version(tmp_path: Path) -> None:
    path = saved(tmp_path)
    data = bytearray(path.read_bytes())
    data[8:12] = (99).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(DomainSetFormatError, match="version 99"):
        DomainSet.load(path)


def test_version_1_file_is_rejected_with_a_recompile_hint(tmp_path: Path) -> None:
    # Version 1 (separate key, line and source arrays) is not read: the caller recompiles.
    path = saved(tmp_path)
    data = bytearray(path.read_bytes())
    data[8:12] = (1).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(DomainSetFormatError, match="format version 1, this program reads version 2; recompile"):
        DomainSet.load(path)


def test_format_error_is_a_value_error() -> None:
    assert issubclass(DomainSetFormatError, ValueError)


def test_failed_save_leaves_previous_file_intact(tmp_path: Path) -> None:
    path = saved(tmp_path)
    before = path.read_bytes()
    with pytest.raises(TypeError):
        DomainSet.build([("other.net", 0, 1, 0)]).save(path, {"bad": object()})
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["lists.sgwset"]


def test_failure_after_writing_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = saved(tmp_path)
    before = path.read_bytes()

    def fail(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="No space"):
        DomainSet.build([("other.net", 0, 1, 0)]).save(path, {"k": 2})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["lists.sgwset"]
    assert DomainSet.load(path)[1] == {"k": 1}


def test_replacing_a_mapped_file_keeps_the_old_mapping_valid(tmp_path: Path) -> None:
    # Workers may still map the previous compiled file while a reload writes the next one.
    path = saved(tmp_path)
    old, _ = DomainSet.load(path)
    DomainSet.build([("other.net", 0, 1, 0)]).save(path, {"k": 2})
    new, meta = DomainSet.load(path)
    assert old.matches("x.example.com")
    assert not new.matches("x.example.com")
    assert new.matches("other.net")
    assert meta == {"k": 2}


def test_meta_must_be_json(tmp_path: Path) -> None:
    path = tmp_path / "m.sgwset"
    DomainSet.build([]).save(path, {"list": [1, 2], "text": "x"})
    assert DomainSet.load(path)[1] == json.loads('{"list": [1, 2], "text": "x"}')


def test_from_columns_takes_bytes_or_str() -> None:
    names = ["a.example", "b.a.example", "c.org"]
    as_str = DomainSet.from_columns(names, [0, 1, 2], [1, 2, 3], [0, EXC, SUB])
    as_bytes = DomainSet.from_columns([n.encode() for n in names], [0, 1, 2], [1, 2, 3], [0, EXC, SUB])
    for query in ["x.b.a.example", "c.org", "x.c.org", "a.example"]:
        assert as_str.matches(query) == as_bytes.matches(query)
    assert DomainSet.from_columns(["one.example"], [0], [7]).matches("one.example") == (
        Match(0, "one.example", 0, 7, False, False),
    )


def test_a_loaded_set_saves_again(tmp_path: Path) -> None:
    first = tmp_path / "one.sgwset"
    sample().save(first, {"k": 1})
    loaded, _ = DomainSet.load(first)
    second = tmp_path / "two.sgwset"
    loaded.save(second, {"k": 2})
    again, meta = DomainSet.load(second)
    assert meta == {"k": 2}
    for query in ["a.ok.example.com", "x.wild.org", "nothing.net"]:
        assert again.matches(query) == sample().matches(query)


# -- a seeded list against a plain Python set ------------------------------------------------


def seeded_names(rng: random.Random, n: int) -> list[str]:
    tlds = ["com", "net", "vn", "edu.vn", "io"]

    def label() -> str:
        return "".join(rng.choices(string.ascii_lowercase + string.digits, k=rng.randint(1, 6)))

    return list({".".join([label() for _ in range(rng.randint(1, 4))] + [rng.choice(tlds)]) for _ in range(n)})


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_seeded_set_agrees_with_a_python_set(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    names = seeded_names(rng, 5000)
    listed = set(names)
    dset = DomainSet.from_columns(names, [i % 7 for i in range(len(names))], list(range(1, len(names) + 1)))
    dset.save(tmp_path / "s.sgwset", {})
    loaded, _ = DomainSet.load(tmp_path / "s.sgwset")
    line_of = {name: i + 1 for i, name in enumerate(names)}
    # Hits: subdomains of listed names and the names themselves; misses: random names, and
    # parents of listed names that are not listed themselves.
    queries = [rng.choice(names) for _ in range(500)]
    queries += [f"x{i}.{rng.choice(names)}" for i in range(500)]
    queries += [".".join(rng.choice(names).split(".")[1:]) for _ in range(500)]
    queries += [f"q{i}.nothing{i}.{rng.choice(['com', 'org', 'vn'])}" for i in range(500)]
    hits = 0
    for query in queries:
        labels = query.split(".")
        expected = [(d, ".".join(labels[d:])) for d in range(len(labels)) if ".".join(labels[d:]) in listed]
        for found in (dset.matches(query), loaded.matches(query)):
            assert [(m.depth, m.suffix) for m in found] == expected, query
            assert [m.line for m in found] == [line_of[suffix] for _, suffix in expected]
            assert [m.source for m in found] == [(line_of[suffix] - 1) % 7 for _, suffix in expected]
        assert (query in loaded) is bool(expected)
        assert [(d, s) for d, s, _, _ in loaded.raw_matches(query)] == expected
        hits += bool(expected)
    assert 1000 <= hits < len(queries)  # both paths exercised


def test_ancestors_of_deep_entries_are_walked() -> None:
    # The walk stops at the first suffix that is no entry's ancestor: every level in between
    # must be marked, however deep the entry and whatever else is listed.
    deep = "a.b.c.d.e.f.example.com"
    dset = DomainSet.build([(deep, 0, 1, 0), ("other.org", 0, 2, 0)])
    assert dset.matches("x." + deep) == (Match(1, deep, 0, 1, False, False),)
    assert dset.matches(deep)[0].depth == 0
    for cut in range(1, deep.count(".")):
        assert dset.matches(deep.split(".", cut)[-1]) == ()
    assert "y.other.org" in dset


def test_single_label_entries_are_probed_first() -> None:
    dset = DomainSet.build([("localhost", 0, 1, 0), ("ads.example.com", 0, 2, 0)])
    assert dset.matches("localhost") == (Match(0, "localhost", 0, 1, False, False),)
    assert dset.matches("a.ads.example.com") == (Match(1, "ads.example.com", 0, 2, False, False),)
    assert dset.matches("example.com") == ()
    assert dset.matches("host") == ()


def test_match_is_an_immutable_record() -> None:
    match = sample().matches("a.example.com")[0]
    assert (match.depth, match.suffix, match.source, match.line) == (1, "example.com", 0, 1)
    assert type(match) is Match
    with pytest.raises(AttributeError):
        match.depth = 5  # type: ignore[misc]
    assert hash(match) == hash(Match(1, "example.com", 0, 1, False, False))


def test_many_entries_in_one_group_and_duplicates_keep_build_order() -> None:
    # A set of 3 entries has a single group: every entry shares it, so bisect, the adler32 run
    # and the crc check all run against neighbours.
    entries = [("b.example", 2, 5, 0), ("a.example", 0, 1, 0), ("b.example", 1, 3, 0)]
    dset = DomainSet.build(entries)
    assert [(m.source, m.line) for m in dset.matches("x.b.example")] == [(2, 5), (1, 3)]
    assert [(m.source, m.line) for m in dset.matches("a.example")] == [(0, 1)]
