"""ListIndex: per-category exception semantics, hit order, and the compiled cache's reuse and rebuild."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.lists.domainset import FORMAT_VERSION
from gateway.lists.index import CompileReport, Hit, ListIndex, ListSource, compile_lists


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def lists(tmp_path: Path) -> list[tuple[ListSource, Path]]:
    a = write(tmp_path / "a.txt", "||a.com^\n@@||x.a.com^\nshared.net\n")
    b = write(tmp_path / "b.txt", "# category B\n@@||z.a.com^\nb.org\nshared.net\n")
    games = write(tmp_path / "ut1" / "games" / "domains", "play.a.com\ngames.vn\n")
    write(tmp_path / "ut1" / "games" / "urls", "games.vn/path\n")
    allow = write(tmp_path / "edu.txt", "0.0.0.0 school.edu.vn\n")
    return [
        (ListSource("adult", "lists/a.txt", "block"), a),
        (ListSource("social", "lists/b.txt", "block"), b),
        (ListSource("games", "lists/ut1/games", "block"), games.parent),
        (ListSource("education", "lists/edu.txt", "allow"), allow),
    ]


def test_exception_covers_its_subdomains_within_its_category(lists) -> None:
    index, _ = compile_lists(lists)
    assert index.hits("a.com") == (Hit("adult", "lists/a.txt", 1, "a.com"),)
    assert index.hits("x.a.com") == ()
    assert index.hits("y.x.a.com") == ()
    assert index.hits("z.a.com") == (Hit("adult", "lists/a.txt", 1, "a.com"),)


def test_exception_in_another_category_does_not_unlist(lists) -> None:
    index, _ = compile_lists(lists)
    # social's '@@||z.a.com^' covers z.a.com, but social never listed it; adult still does.
    assert [h.category for h in index.hits("deep.z.a.com")] == ["adult"]


def test_hits_most_specific_first_then_category_order(lists) -> None:
    index, _ = compile_lists(lists)
    assert index.hits("www.play.a.com") == (
        Hit("games", "lists/ut1/games", 1, "play.a.com"),
        Hit("adult", "lists/a.txt", 1, "a.com"),
    )
    # Same depth in two categories: the order of first appearance in sources.
    assert index.hits("shared.net") == (
        Hit("adult", "lists/a.txt", 3, "shared.net"),
        Hit("social", "lists/b.txt", 4, "shared.net"),
    )


def test_allow_lists_are_indexed_like_any_category(lists) -> None:
    index, _ = compile_lists(lists)
    assert index.hits("www.school.edu.vn") == (Hit("education", "lists/edu.txt", 1, "school.edu.vn"),)


def test_miss_is_the_shared_empty_tuple(lists) -> None:
    index, _ = compile_lists(lists)
    assert index.hits("unlisted.example") == ()
    assert index.hits("unlisted.example") is index.hits("other.example")


def test_exception_beats_block_at_equal_depth(tmp_path: Path) -> None:
    one = write(tmp_path / "1.txt", "||ads.net^\n")
    two = write(tmp_path / "2.txt", "@@||ads.net^\n")
    index, _ = compile_lists([(ListSource("ads", "1.txt", "block"), one), (ListSource("ads", "2.txt", "block"), two)])
    assert index.hits("ads.net") == ()
    assert index.hits("x.ads.net") == ()


def test_more_specific_block_beats_broader_exception(tmp_path: Path) -> None:
    path = write(tmp_path / "l.txt", "@@||a.com^\n||bad.a.com^\n")
    index, _ = compile_lists([(ListSource("c", "l.txt", "block"), path)])
    assert index.hits("a.com") == ()
    assert index.hits("ok.a.com") == ()
    assert index.hits("x.bad.a.com") == (Hit("c", "l.txt", 2, "bad.a.com"),)


def test_subdomains_only_entries(tmp_path: Path) -> None:
    path = write(tmp_path / "w.txt", "*.cdn.net\n")
    index, _ = compile_lists([(ListSource("c", "w.txt", "block"), path)])
    assert index.hits("cdn.net") == ()
    assert index.hits("a.cdn.net") == (Hit("c", "w.txt", 1, "cdn.net"),)


def test_categories_len_and_sources(lists) -> None:
    index, report = compile_lists(lists)
    assert index.categories() == ("adult", "social", "games", "education")
    assert len(index) == 9  # 3 + 3 + 2 + 1
    assert index.sources == tuple(s for s, _ in lists)
    assert isinstance(index, ListIndex)
    assert report.entries == 9
    assert report.from_cache is False


def test_bad_lines_reported_with_display_paths(tmp_path: Path) -> None:
    path = write(tmp_path / "x.txt", "ok.com\nhttp://bad.com/\n||y.com^$third-party\n")
    folder = write(tmp_path / "ut1" / "adult" / "domains", "1.2.3.4\n").parent
    _, report = compile_lists(
        [(ListSource("a", "lists/x.txt", "block"), path), (ListSource("b", "ut1/adult", "block"), folder)]
    )
    assert report.bad_lines == 3
    assert [str(e).split(": ")[0] for e in report.errors] == ["lists/x.txt:2", "lists/x.txt:3", "ut1/adult/domains:1"]


def test_missing_source_names_its_display_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"lists/gone\.txt"):
        compile_lists([(ListSource("a", "lists/gone.txt", "block"), tmp_path / "gone.txt")])
    (tmp_path / "emptycat").mkdir()
    with pytest.raises(FileNotFoundError, match="emptycat/domains"):
        compile_lists([(ListSource("a", "emptycat", "block"), tmp_path / "emptycat")])


def answers(index: ListIndex) -> dict[str, tuple[Hit, ...]]:
    queries = ["a.com", "x.a.com", "y.x.a.com", "z.a.com", "www.play.a.com", "shared.net", "games.vn", "b.org", "no.pe"]
    return {q: index.hits(q) for q in queries}


def test_cache_is_reused_when_nothing_changed(lists, tmp_path: Path) -> None:
    cache = tmp_path / "cache" / "lists.sgwset"
    cache.parent.mkdir()
    first, report1 = compile_lists(lists, cache)
    assert (report1.from_cache, cache.exists()) == (False, True)
    second, report2 = compile_lists(lists, cache)
    assert report2.from_cache is True
    assert answers(second) == answers(first)
    assert (report2.entries, report2.bad_lines, report2.errors) == (report1.entries, report1.bad_lines, report1.errors)
    assert second.categories() == first.categories()


def test_cache_keeps_bad_line_reports(tmp_path: Path) -> None:
    path = write(tmp_path / "x.txt", "ok.com\nhttp://bad.com/\n")
    cache = tmp_path / "c.sgwset"
    sources = [(ListSource("a", "x.txt", "block"), path)]
    _, first = compile_lists(sources, cache)
    _, again = compile_lists(sources, cache)
    assert again.from_cache
    assert again.errors == first.errors
    assert again.bad_lines == 1


def test_cache_invalidated_when_a_list_changes(lists, tmp_path: Path) -> None:
    cache = tmp_path / "lists.sgwset"
    compile_lists(lists, cache)
    path = lists[0][1]
    stat = path.stat()
    write(path, "||new.com^\n")
    # Same size is possible; a different mtime must still invalidate.
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    index, report = compile_lists(lists, cache)
    assert report.from_cache is False
    assert index.hits("new.com") == (Hit("adult", "lists/a.txt", 1, "new.com"),)
    assert index.hits("a.com") == ()
    again, report = compile_lists(lists, cache)
    assert report.from_cache is True
    assert again.hits("new.com")


def test_cache_invalidated_when_a_ut1_domains_file_changes(lists, tmp_path: Path) -> None:
    cache = tmp_path / "lists.sgwset"
    compile_lists(lists, cache)
    write(lists[2][1] / "domains", "play.a.com\ngames.vn\nmore.games.io\n")
    index, report = compile_lists(lists, cache)
    assert report.from_cache is False
    assert index.hits("more.games.io")


def test_cache_invalidated_when_sources_change(lists, tmp_path: Path) -> None:
    cache = tmp_path / "lists.sgwset"
    compile_lists(lists, cache)
    renamed = [(ListSource("porn", s.path, s.kind) if s.category == "adult" else s, p) for s, p in lists]
    index, report = compile_lists(renamed, cache)
    assert report.from_cache is False
    assert index.hits("a.com")[0].category == "porn"
    _, report = compile_lists(lists[:2], cache)
    assert report.from_cache is False


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage", "empty", "old_version"])
def test_corrupt_cache_is_rebuilt(lists, tmp_path: Path, damage: str) -> None:
    cache = tmp_path / "lists.sgwset"
    first, _ = compile_lists(lists, cache)
    data = bytearray(cache.read_bytes())
    if damage == "flip":
        data[-3] ^= 0xFF
    elif damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "garbage":
        data = bytearray(b"not a compiled list at all" * 10)
    elif damage == "old_version":  # left by a previous release: format version 1
        data[8:12] = (1).to_bytes(4, "little")
    else:
        data = bytearray()
    cache.write_bytes(bytes(data))
    index, report = compile_lists(lists, cache)
    assert report.from_cache is False
    assert answers(index) == answers(first)
    # ...and the rebuilt cache is good again, in the current format.
    assert int.from_bytes(cache.read_bytes()[8:12], "little") == FORMAT_VERSION
    _, report = compile_lists(lists, cache)
    assert report.from_cache is True


def test_unwritable_cache_is_noted_not_raised(lists, tmp_path: Path) -> None:
    cache = tmp_path / "no-such-dir" / "lists.sgwset"
    index, report = compile_lists(lists, cache)
    assert isinstance(report, CompileReport)
    assert report.from_cache is False
    assert report.cache_error and "no-such-dir" in report.cache_error
    assert index.hits("a.com")


def test_no_sources(tmp_path: Path) -> None:
    index, report = compile_lists([], tmp_path / "c.sgwset")
    assert index.hits("a.com") == ()
    assert (len(index), index.categories(), report.entries) == (0, (), 0)
    _, report = compile_lists([], tmp_path / "c.sgwset")
    assert report.from_cache is True


_RACER = """
import sys
from pathlib import Path
from gateway.lists.index import ListSource, compile_lists
sys.stdin.readline()  # the start signal: both racers begin together
_, report = compile_lists([(ListSource("gambling", "big.txt", "block"), Path(sys.argv[1]))], Path(sys.argv[2]))
print("cache" if report.from_cache else "compiled", flush=True)
"""


def test_two_processes_compiling_one_cache_compile_once(tmp_path: Path) -> None:
    # Every worker reloads on the same SIGHUP; a compile of 1M names peaks at ~400 MB, so they take turns
    # and the second one finds the first one's cache. 200,000 names take ~0.5 s to compile: without the
    # lock both racers check the (missing) cache long before either has written it.
    big = write(tmp_path / "big.txt", "".join(f"n{i}.example.com\n" for i in range(200_000)))
    cache = tmp_path / "lists.sgwset"
    racers = [subprocess.Popen([sys.executable, "-c", _RACER, str(big), str(cache)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2]) for _ in range(2)]
    for racer in racers:
        racer.stdin.write("go\n")
    for racer in racers:
        racer.stdin.flush()
    outcomes = sorted(racer.communicate(timeout=120)[0].strip() for racer in racers)
    assert outcomes == ["cache", "compiled"]
