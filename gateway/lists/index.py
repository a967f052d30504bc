"""ListIndex: all category lists of a policy in one DomainSet, per-category exceptions, a disk cache."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.lists.domainset import (
    FLAG_EXCEPTION,
    MAX_LINE,
    MAX_SOURCE,
    DomainSet,
    DomainSetFormatError,
    mutable_twin,
)
from gateway.lists.formats import LineError, read_columns, resolve_list_file

# Bumped whenever the meaning of a cached index changes (not its byte layout: DomainSet versions that).
CACHE_FORMAT = "gateway.lists.index/1"

# raw_matches packs line | flags << 30.
_EXCEPTION_BIT = FLAG_EXCEPTION << 30
_LINE_MASK = MAX_LINE
_NO_HITS: tuple[Hit, ...] = ()


@dataclass(frozen=True, slots=True)
class ListSource:
    """One list file (or UT1 folder) feeding a category; `kind` is "block" or "allow"."""

    category: str
    path: str
    kind: str


@dataclass(frozen=True, slots=True)
class Hit:
    """A category that matches a name, with the list entry that decided it."""

    category: str
    source: str
    line: int
    suffix: str


_HitDraft = mutable_twin(Hit)


def _hit(category: str, source: str, line: int, suffix: str) -> Hit:
    draft = _HitDraft(category, source, line, suffix)
    draft.__class__ = Hit
    return draft  # type: ignore[return-value]


@dataclass
class CompileReport:
    """What compile_lists did, for logs and `validate`; `errors` holds the first few per file."""

    entries: int
    bad_lines: int
    errors: list[LineError]
    from_cache: bool
    seconds: float
    cache_error: str | None = field(default=None)  # why the compiled form could not be saved


class ListIndex:
    """All category lists of a policy; `hits(name)` says which categories cover a name."""

    __slots__ = ("_categories", "_category_of", "_rank_of", "_show", "set", "sources")

    sources: tuple[ListSource, ...]
    set: DomainSet

    def __init__(self, sources: Sequence[ListSource], domains: DomainSet) -> None:
        self.sources = tuple(sources)
        self.set = domains
        categories: dict[str, int] = {}
        for source in self.sources:
            categories.setdefault(source.category, len(categories))
        self._categories = tuple(categories)
        # Per source id, so a hit costs list indexing rather than dict lookups.
        self._category_of = tuple(source.category for source in self.sources)
        self._rank_of = tuple(categories[source.category] for source in self.sources)
        self._show = tuple(source.path for source in self.sources)

    def hits(self, name: str) -> tuple[Hit, ...]:
        """One Hit per category covering `name` (normalized), most specific first.

        Within a category the most specific matching entry decides: an exception there means the
        category does not match. At equal depth an exception beats a block entry, as '@@' rules do
        in AdBlock. Ties in depth between categories follow the categories' order in `sources`.
        """
        raw = self.set.raw_matches(name)
        if not raw:
            return _NO_HITS
        category_of = self._category_of
        if len(raw) == 1:  # the common hit: one entry, one category
            _depth, suffix, source, packed = raw[0]
            if packed & _EXCEPTION_BIT:
                return _NO_HITS
            return (_hit(category_of[source], self._show[source], packed & _LINE_MASK, suffix),)
        # raw comes most specific first, so the first entry seen per category is at its deciding
        # depth; a later entry at that same depth can only matter if it is an exception.
        deciding: dict[str, tuple[int, str, int, int]] = {}
        for entry in raw:
            category = category_of[entry[2]]
            best = deciding.get(category)
            if best is None or (best[0] == entry[0] and entry[3] & _EXCEPTION_BIT):
                deciding[category] = entry
        rank_of = self._rank_of
        show = self._show
        found = sorted(
            (entry for entry in deciding.values() if not entry[3] & _EXCEPTION_BIT),
            key=lambda entry: (entry[0], rank_of[entry[2]]),
        )
        if not found:
            return _NO_HITS
        return tuple(
            _hit(category_of[source], show[source], packed & _LINE_MASK, suffix)
            for _depth, suffix, source, packed in found
        )

    def categories(self) -> tuple[str, ...]:
        """Category ids in order of first appearance in `sources`."""
        return self._categories

    def __len__(self) -> int:
        return len(self.set)


def compile_lists(
    sources: Sequence[tuple[ListSource, Path]], cache_path: Path | None = None
) -> tuple[ListIndex, CompileReport]:
    """Read every list into one ListIndex (source id = position in `sources`).

    With `cache_path`, an unchanged set of lists (same sources, and each file's size and mtime_ns)
    is mapped from the compiled file instead of parsed; otherwise the lists are parsed and the
    compiled file rewritten atomically. A corrupt or stale cache is rebuilt, never reported as an
    error; failing to write it is noted in CompileReport.cache_error. Raises FileNotFoundError
    naming the display path of a missing list.
    """
    started = time.perf_counter()
    if len(sources) > MAX_SOURCE + 1:
        raise ValueError(f"at most {MAX_SOURCE + 1} list files, got {len(sources)}")
    if cache_path is None:
        return _compile(sources, None, started)
    with _compiling(Path(cache_path)):
        return _compile(sources, Path(cache_path), started)


@contextlib.contextmanager
def _compiling(cache_path: Path) -> Iterator[None]:
    """One compile of a cache file at a time, across processes. Every worker reloads on the same
    SIGHUP or file change, and compiling 1M names peaks at ~400 MB: four at once would not fit a
    Raspberry Pi. Whoever comes second waits here, then finds the cache fresh and only maps it."""
    try:
        fd = os.open(cache_path.with_name(cache_path.name + ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError:  # a read-only cache dir: the cache cannot be written either, nothing to guard
        fd = -1
    if fd < 0:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _compile(sources: Sequence[tuple[ListSource, Path]], cache_path: Path | None, started: float
             ) -> tuple[ListIndex, CompileReport]:
    list_sources = tuple(source for source, _ in sources)
    # Stat before reading: a file changed after this point has a newer stamp than the one the
    # cache records, so the next compile rebuilds instead of trusting a stale cache.
    fingerprint = [_fingerprint(source, path) for source, path in sources]

    if cache_path is not None:
        cached = _load_cache(cache_path, fingerprint)
        if cached is not None:
            domains, meta = cached
            errors = [LineError(str(p), int(n), str(why)) for p, n, why in meta["errors"]]
            report = CompileReport(len(domains), int(meta["bad_lines"]), errors, True, time.perf_counter() - started)
            return ListIndex(list_sources, domains), report

    names: list[bytes] = []
    ids = array("H")  # arrays, as in ListColumns: no int object per entry at the memory peak
    lines = array("I")
    flags = array("B")
    errors = []
    bad_lines = 0
    for source_id, (source, path) in enumerate(sources):
        columns = read_columns(Path(path), source.path)
        names += columns.names
        lines += columns.line_numbers
        flags += columns.flags
        ids += array("H", [source_id]) * len(columns.names)
        bad_lines += columns.bad_lines
        errors += columns.first_errors
    domains = DomainSet.from_columns(names, ids, lines, flags)
    del names, ids, lines, flags

    cache_error = None
    if cache_path is not None:
        meta = {
            "format": CACHE_FORMAT,
            "sources": fingerprint,
            "entries": len(domains),
            "bad_lines": bad_lines,
            "errors": [[e.path, e.line, e.why] for e in errors],
        }
        try:
            domains.save(cache_path, meta)
        except OSError as exc:
            cache_error = f"cannot write {cache_path}: {exc.strerror or exc}"
    report = CompileReport(len(domains), bad_lines, errors, False, time.perf_counter() - started, cache_error)
    return ListIndex(list_sources, domains), report


def _fingerprint(source: ListSource, path: Path) -> dict[str, Any]:
    file, shown = resolve_list_file(Path(path), source.path)
    try:
        stat = file.stat()
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, f"list file not found: {shown}", str(file)) from None
    return {
        "category": source.category,
        "path": source.path,
        "kind": source.kind,
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
    }


def _load_cache(path: Path, fingerprint: list[dict[str, Any]]) -> tuple[DomainSet, dict[str, Any]] | None:
    try:
        domains, meta = DomainSet.load(path)
    except (OSError, DomainSetFormatError):
        return None
    try:
        if meta["format"] != CACHE_FORMAT or meta["sources"] != fingerprint:
            return None
        if meta["entries"] != len(domains) or not isinstance(meta["bad_lines"], int):
            return None
        if not all(isinstance(e, list) and len(e) == 3 for e in meta["errors"]):
            return None
    except (KeyError, TypeError):
        return None
    return domains, meta
