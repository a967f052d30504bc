"""DomainSet: a compact, mmap-shareable set of domain names answering "is this name or a parent listed?".

Hashes. A name is hashed over its ASCII bytes by zlib's crc32 and adler32: deterministic and
identical on every platform and Python version (never the salted hash()). `name_key` is the pair
as one 64-bit number, crc32 << 32 | adler32.

Layout (format version 2). The crc32's top `bits` bits pick one of 2**bits groups (three to six
entries a group). The entries are sorted by (group, adler32) into one `array('I')` of records,
three 32-bit fields an entry, so a hit reads one place in memory:

- adler32, what a probe bisects within its group;
- crc32 & 0xFFFF << 16 | source id: the low crc bits are a second check;
- line | exception << 30 | subdomains-only << 31.

A second `array('I')` holds two words per group (and an end marker): a filter word, and where
the group's records start. The filter word's bit `sel`, picked by the four crc bits below the
group bits, is set if some entry of the group has that selector, bit 16 + `sel` if some *ancestor*
has. An ancestor is a proper suffix of an entry with at least as many labels as the shortest
entry: "example.com" for "ads.example.com". Ancestors cost nothing but filter bits: they are not
stored.

Lookup walks a name's suffixes from the shortest that an entry can be (often the two-label one)
towards the name itself, and stops at the first suffix that is not an ancestor, since no longer
suffix can then be listed. A four-label name that is not listed usually costs one suffix: a slice,
a crc32, one filter word. Only a suffix whose entry bit is set (about one in five absent ones)
computes adler32 and bisects the group's records. The interpreter's per-operation cost and cache
misses dominate a lookup, so the layout is chosen for the fewest Python operations and the fewest
distinct memory places touched: a miss reads one word, a hit that word, its neighbour and one run
of records. About 14 bytes an entry; names themselves are not stored (the matching suffix is a
slice of the queried name).

Building sorts one 20-byte big-endian row an entry (group, adler32, input position, the two
payload fields) as bytes and slices the joined rows with strided memoryviews, so no step runs in
Python per entry; the filters are set through one byte a bit and packed with big-int shifts.

False positives. Names are not stored, so two names that agree in group, adler32 and low crc32
bits are indistinguishable. For a probe of a name that is not listed this has probability about
n / 2**64 once the group bits and the 16 low bits cover the whole crc32 (65,536 groups, some
256K entries), and about 2**-46 below that (about four entries a group, each to be matched in
48 bits): for 5 million entries ~3e-13 a probe, about once in a trillion lookups. That is
acceptable because the error only goes one way: a collision can make an allowed name look listed
(over-blocking, visible to staff through `explain`, whose file:line then shows a different name,
and fixable with an allow rule), but it can never hide a listed name, whose own hashes are always
present. A wrongly set filter bit only costs time.

On disk. `save` writes a portable little-endian file: magic b"SGWDSET\\0", format version, SHA-256
of the body, then the caller's JSON metadata and the arrays, each 8-byte aligned so `load` can mmap
the file and wrap the arrays with memoryview.cast without copying; several worker processes then
share one copy in the page cache. No pickle: a file written on x86-64 Python 3.13 loads on arm64
Python 3.11. A file of another format version (version 1 kept separate key, line and source arrays
and a separate filter) is rejected with DomainSetFormatError, so ListIndex recompiles it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import mmap
import os
import struct
import sys
import tempfile
from array import array
from bisect import bisect_left
from collections import deque
from collections.abc import Iterable, Sequence
from itertools import compress, repeat
from operator import and_, ge, itemgetter, lshift, or_, rshift
from pathlib import Path
from typing import Any, NamedTuple
from zlib import adler32, crc32

MAGIC = b"SGWDSET\0"
FORMAT_VERSION = 2

FLAG_EXCEPTION = 1
FLAG_SUBDOMAINS_ONLY = 2
MAX_LINE = (1 << 30) - 1
MAX_SOURCE = (1 << 16) - 1

_LINE_MASK = MAX_LINE
_EXCEPTION_BIT = 1 << 30
_SUBDOMAINS_BIT = 1 << 31
_TAG_MASK = 0xFFFF  # the crc32 bits in a record's second field (shifted left 16)
_SELECTOR_BITS = 4  # crc32 bits below the group bits that pick a filter bit: 16 a filter
_MAX_GROUP_BITS = 32 - _SELECTOR_BITS
_ANCESTOR_BIT = 1 << 16  # in a filter word shifted right by the selector

# magic, version, reserved, body length, SHA-256 of the body
_HEADER = struct.Struct("<8sIIQ32s")
_HEADER_SIZE = 64
# entries, group bits, selector bits, metadata length, fewest labels, most labels
_BODY_HEADER = struct.Struct("<QIIIHH")
# A build row: group, adler32, input position, line | flags << 30, crc32 & 0xFFFF << 16 | source
_ROW = struct.Struct(">IIIII")

_LITTLE = sys.byteorder == "little"

for _code, _size in (("Q", 8), ("I", 4), ("H", 2)):
    if array(_code).itemsize != _size:  # pragma: no cover - no supported platform differs
        raise ImportError(f"array({_code!r}) is not {_size} bytes on this platform")


class DomainSetFormatError(ValueError):
    """A compiled DomainSet file that cannot be used: wrong magic, version, checksum or size."""


class Match(NamedTuple):
    """One listed entry that covers a queried name.

    A NamedTuple (immutable, compared and hashed by value, like the frozen dataclass it was):
    a lookup builds it with one C-level tuple.__new__ instead of six attribute stores.
    """

    depth: int
    suffix: str
    source: int
    line: int
    exception: bool
    subdomains_only: bool


def mutable_twin(cls: type) -> type:
    """A plain slotted dataclass with the fields of frozen dataclass `cls`, for building it fast.

    A frozen dataclass's __init__ calls object.__setattr__ once per field, which made building
    ListIndex's Hit objects the most expensive step of a hit. A twin with the same slots is filled
    with ordinary attribute stores and then retyped (`obj.__class__ = cls`, which CPython allows
    between identical slot layouts); the result is an ordinary frozen `cls` at about a third of
    the cost.
    """
    fields = dataclasses.fields(cls)
    twin = dataclasses.make_dataclass(f"_{cls.__name__}Draft", [(f.name, f.type) for f in fields], slots=True)
    # Fail at import, not on the first hit, should the layouts ever stop matching.
    probe = twin(*(None for _ in fields))
    probe.__class__ = cls
    return twin


_tuple_new = tuple.__new__


def name_key(name_bytes: bytes) -> int:
    """The 64-bit key of a normalized name's ASCII bytes: crc32 << 32 | adler32."""
    return crc32(name_bytes) << 32 | adler32(name_bytes)


def _group_bits(n: int) -> int:
    # The power of two nearest n / 4 groups: 2.8-5.7 entries a group, 1.4-2.8 bytes an entry
    # for the group words, and a 16-bit filter that a missing name passes 16-30% of the time.
    return min(_MAX_GROUP_BITS, max(0, round(math.log2(n / 4)))) if n else 0


class DomainSet:
    """Suffix-match set of normalized names with (source, line, flags) per entry."""

    __slots__ = (
        "_bits",
        "_checks",
        "_fields",
        "_filters",
        "_groups",
        "_max_labels",
        "_min_labels",
        "_mmap",
        "_packs",
        "_records",
        "_selector_shift",
        "_shift",
        "_skip",
        "_starts",
        "_tags",
        "_walk",
    )

    def __init__(
        self,
        groups: Sequence[int],
        records: Any,
        bits: int,
        labels: tuple[int, int],
        backing: mmap.mmap | None = None,
    ) -> None:
        # Private: use build() or load(); the arrays must already satisfy the layout invariants.
        self._groups = groups
        pairs = groups if isinstance(groups, memoryview) else memoryview(groups)
        self._filters = pairs[0::2]
        self._starts = pairs[1::2]
        self._records = records
        # Strided views over the one records array: indexing them reads the interleaved fields.
        view = records if isinstance(records, memoryview) else memoryview(records)
        self._checks = view[0::3]
        self._tags = view[1::3]
        self._packs = view[2::3]
        self._bits = bits
        self._shift = 32 - bits
        self._selector_shift = 32 - bits - _SELECTOR_BITS
        self._min_labels, self._max_labels = labels
        self._skip = max(0, self._min_labels - 1)  # labels a lookup skips before its first probe
        self._mmap = backing
        # What a lookup needs, as one attribute load each: for every probe, and on a filter pass.
        self._walk = (self._filters, self._shift, self._selector_shift, self._skip)
        self._fields = (self._checks, self._starts, self._tags, self._packs)

    # -- building ---------------------------------------------------------------------------

    @classmethod
    def build(cls, entries: Iterable[tuple[str, int, int, int]]) -> DomainSet:
        """Build from (normalized name, source id, line, flags); flags bit0 exception, bit1 subdomains_only.

        Every entry is kept, duplicates too; entries sharing a name keep their input order, so
        feeding sources in order, each in line order (as compile_lists does), gives (source, line).
        """
        names: list[str] = []
        sources: list[int] = []
        lines: list[int] = []
        flags: list[int] = []
        for name, source, line, flag in entries:
            names.append(name)
            sources.append(source)
            lines.append(line)
            flags.append(flag)
        return cls.from_columns(names, sources, lines, flags)

    @classmethod
    def from_columns(
        cls,
        names: Sequence[str] | Sequence[bytes],
        sources: Sequence[int],
        lines: Sequence[int],
        flags: Sequence[int] | None = None,
    ) -> DomainSet:
        """Same as build(), from parallel sequences: no tuple per entry for multi-million lists.

        `names` are normalized names, all str or all ASCII bytes (as formats.read_columns gives).
        """
        n = len(names)
        if flags is None:
            flags = [0] * n
        if not (len(sources) == len(lines) == len(flags) == n):
            raise ValueError("names, sources, lines and flags must have the same length")
        if n:
            if min(lines) < 0 or max(lines) > MAX_LINE:
                raise ValueError(f"line numbers must be between 0 and {MAX_LINE}")
            if min(sources) < 0 or max(sources) > MAX_SOURCE:
                raise ValueError(f"source ids must be between 0 and {MAX_SOURCE}")
            if min(flags) < 0 or max(flags) > 3:
                raise ValueError("flags must be between 0 and 3")
        # Whole-column passes through map() run in C; a Python-level loop per entry would cost
        # several times more for multi-million lists.
        encoded = names if n and isinstance(names[0], bytes) else list(map(str.encode, names))  # type: ignore[arg-type]
        # Arrays, not lists: a list of 1M 32-bit values holds 1M int objects (~40 MB, not 4 MB), and
        # the compile's peak is what a Raspberry Pi must fit next to its serving workers.
        crcs = array("I", map(crc32, encoded))
        adlers = array("I", map(adler32, encoded))
        dots = list(map(bytes.count, encoded, repeat(b".")))  # type: ignore[arg-type]
        labels = (min(dots) + 1, max(dots) + 1) if n else (1, 0)
        ancestors = _ancestor_crcs(encoded, dots, labels[0])  # type: ignore[arg-type]
        del encoded, dots
        bits = _group_bits(n)
        shift = 32 - bits
        tags: Iterable[int] = map(lshift, map(and_, crcs, repeat(_TAG_MASK)), repeat(16))
        if any(sources):
            tags = map(or_, tags, sources)
        packed = map(or_, lines, map(lshift, flags, repeat(30))) if any(flags) else lines
        # One bytes row an entry, big-endian so that bytes order is number order: group, adler32,
        # input position (so entries sharing a name keep their input order), then the record's
        # other two fields. Sorting bytes and slicing the joined rows with strided memoryviews
        # puts the records in order without a Python step, or a gather, per entry.
        rows = list(map(_ROW.pack, map(rshift, crcs, repeat(shift)), adlers, range(n), packed, tags))
        del adlers
        rows.sort()
        fields = array("I")
        fields.frombytes(b"".join(rows))
        del rows
        if _LITTLE:
            fields.byteswap()
        view = memoryview(fields)
        records = array("I", bytes(12 * n))
        out = memoryview(records)
        out[0::3] = view[1::5]  # adler32
        out[1::3] = view[4::5]  # crc32 & 0xFFFF << 16 | source
        out[2::3] = view[3::5]  # line | flags << 30
        out.release()
        groups = _group_words(view[0::5], crcs, ancestors, bits)
        return cls(groups, records, bits, labels)

    # -- lookup -----------------------------------------------------------------------------

    def matches(self, name: str) -> tuple[Match, ...]:
        """Every entry equal to `name` (already normalized) or a parent of it, most specific first.

        An entry flagged subdomains_only covers only proper subdomains. Within one depth, entries
        keep their build order. Returns () on a miss.
        """
        # matches(), raw_matches() and __contains__ repeat one walk rather than share a helper:
        # at well under 2 us a lookup, one more Python call, or attribute load, shows. Suffixes
        # are walked shortest first; `data[j + 1:]` is the current one (j == -1: the whole name).
        # The loop body up to the ancestor test is the miss path: keep it to the fewest operations.
        data = name.encode()
        j = data.rfind(b".")
        filters, shift, selector, skip = self._walk
        if skip:  # start at the suffix with as many labels as the shortest entry
            if j < 0:
                return ()
            j = data.rfind(b".", 0, j)
            if skip > 1:
                j = self._start(data, j)
                if j is None:
                    return ()
        found: tuple[Match, ...] = ()
        while True:
            part = data[j + 1 :]
            check = crc32(part)
            group = check >> shift
            bits = filters[group] >> (check >> selector & 15)
            if bits & 1:
                second = adler32(part)
                checks, starts, tags, packs = self._fields
                hi = starts[group + 1]
                i = bisect_left(checks, second, starts[group], hi)
                if i < hi and checks[i] == second:
                    tag = check & _TAG_MASK
                    here: tuple[Match, ...] = ()
                    # Equal adler32s sit together in a group, so `hi` also bounds their run.
                    while True:
                        both = tags[i]
                        if both >> 16 == tag:
                            packed = packs[i]
                            if j >= 0 or packed < _SUBDOMAINS_BIT:
                                fields = (
                                    data.count(b".", 0, j + 1),
                                    part.decode(),
                                    both & MAX_SOURCE,
                                    packed & _LINE_MASK,
                                    packed & _EXCEPTION_BIT != 0,
                                    packed >= _SUBDOMAINS_BIT,
                                )
                                here += (_tuple_new(Match, fields),)
                        i += 1
                        if i == hi or checks[i] != second:
                            break
                    # Walking shortest first: this depth goes before those found so far.
                    found = here + found
            if j < 0 or not bits & _ANCESTOR_BIT:
                return found
            j = data.rfind(b".", 0, j)

    def raw_matches(self, name: str) -> Sequence[tuple[int, str, int, int]]:
        """matches() without Match objects: (depth, suffix, source, line | flags << 30) tuples.

        For ListIndex, which turns them straight into its own answers; () on a miss.
        """
        data = name.encode()
        j = data.rfind(b".")
        filters, shift, selector, skip = self._walk
        if skip:
            if j < 0:
                return ()
            j = data.rfind(b".", 0, j)
            if skip > 1:
                j = self._start(data, j)
                if j is None:
                    return ()
        found: tuple[tuple[int, str, int, int], ...] = ()
        while True:
            part = data[j + 1 :]
            check = crc32(part)
            group = check >> shift
            bits = filters[group] >> (check >> selector & 15)
            if bits & 1:
                second = adler32(part)
                checks, starts, tags, packs = self._fields
                hi = starts[group + 1]
                i = bisect_left(checks, second, starts[group], hi)
                if i < hi and checks[i] == second:
                    tag = check & _TAG_MASK
                    here: tuple[tuple[int, str, int, int], ...] = ()
                    while True:
                        both = tags[i]
                        if both >> 16 == tag:
                            packed = packs[i]
                            if j >= 0 or packed < _SUBDOMAINS_BIT:
                                here += ((data.count(b".", 0, j + 1), part.decode(), both & MAX_SOURCE, packed),)
                        i += 1
                        if i == hi or checks[i] != second:
                            break
                    found = here + found
            if j < 0 or not bits & _ANCESTOR_BIT:
                return found
            j = data.rfind(b".", 0, j)

    def __contains__(self, name: object) -> bool:
        """True if a non-exception entry covers `name` (exceptions are ignored, not applied)."""
        if not isinstance(name, str):
            return False
        data = name.encode()
        j = data.rfind(b".")
        filters, shift, selector, skip = self._walk
        if skip:
            if j < 0:
                return False
            j = data.rfind(b".", 0, j)
            if skip > 1:
                j = self._start(data, j)
                if j is None:
                    return False
        while True:
            part = data[j + 1 :]
            check = crc32(part)
            group = check >> shift
            bits = filters[group] >> (check >> selector & 15)
            if bits & 1:
                second = adler32(part)
                checks, starts, tags, packs = self._fields
                tag = check & _TAG_MASK
                end = starts[group + 1]
                i = bisect_left(checks, second, starts[group], end)
                while i < end and checks[i] == second:
                    if tags[i] >> 16 == tag:
                        packed = packs[i]
                        if not packed & _EXCEPTION_BIT and (j >= 0 or packed < _SUBDOMAINS_BIT):
                            return True
                    i += 1
            if j < 0 or not bits & _ANCESTOR_BIT:
                return False
            j = data.rfind(b".", 0, j)

    def _start(self, data: bytes, j: int) -> int | None:
        # The rest of the walk to the first probe when the shortest entry has three labels or more:
        # `j` is the dot before the two-label suffix; None if the name has too few labels.
        for _ in range(self._skip - 1):
            if j < 0:
                return None
            j = data.rfind(b".", 0, j)
        return j

    def __len__(self) -> int:
        return len(self._checks)

    def nbytes(self) -> int:
        """Bytes held by the arrays (mapped or in memory)."""
        return sum(len(a) * _itemsize(a) for a in self._arrays())

    def _arrays(self) -> tuple[Any, ...]:
        # File order; each array starts 8-byte aligned.
        return (self._groups, self._records)

    # -- disk -------------------------------------------------------------------------------

    def save(self, path: Path, meta: dict[str, Any]) -> None:
        """Write the portable compiled form atomically: a reader sees the old file or the new, never half."""
        meta_bytes = json.dumps(meta, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()
        parts: list[Any] = [
            _BODY_HEADER.pack(
                len(self),
                self._bits,
                _SELECTOR_BITS,
                len(meta_bytes),
                self._min_labels,
                self._max_labels,
            ),
            meta_bytes,
        ]
        length = _BODY_HEADER.size + len(meta_bytes)
        for arr in self._arrays():
            pad = -length % 8
            if pad:
                parts.append(bytes(pad))
                length += pad
            parts.append(_little_endian(arr))
            length += len(arr) * _itemsize(arr)
        digest = hashlib.sha256()
        for part in parts:
            digest.update(part)
        header = _HEADER.pack(MAGIC, FORMAT_VERSION, 0, length, digest.digest()).ljust(_HEADER_SIZE, b"\0")

        path = Path(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            # mkstemp makes the file private; worker processes (perhaps another user) must read it.
            os.fchmod(fd, 0o644)
            with os.fdopen(fd, "wb") as out:
                out.write(header)
                for part in parts:
                    out.write(part)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        _fsync_dir(path.parent)

    @classmethod
    def load(cls, path: Path) -> tuple[DomainSet, dict[str, Any]]:
        """Map a file written by save(); raises DomainSetFormatError if it is not exactly that."""
        where = str(path)
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < _HEADER_SIZE:
                raise DomainSetFormatError(f"{where}: truncated ({size} bytes, shorter than the header)")
            backing = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        view = memoryview(backing)
        try:
            magic, version, _reserved, length, checksum = _HEADER.unpack_from(view, 0)
            if magic != MAGIC:
                raise DomainSetFormatError(f"{where}: not a compiled domain list (wrong magic bytes)")
            if version != FORMAT_VERSION:
                raise DomainSetFormatError(
                    f"{where}: format version {version}, this program reads version {FORMAT_VERSION};"
                    " recompile the lists"
                )
            if length != size - _HEADER_SIZE:
                raise DomainSetFormatError(
                    f"{where}: truncated or padded ({size - _HEADER_SIZE} body bytes, header says {length})"
                )
            body = view[_HEADER_SIZE:]
            if hashlib.sha256(body).digest() != checksum:
                raise DomainSetFormatError(f"{where}: checksum mismatch (corrupted file)")
            return cls._from_body(body, backing, where)
        except DomainSetFormatError:
            raise
        except (ValueError, struct.error) as exc:  # json and UnicodeDecodeError are ValueErrors
            raise DomainSetFormatError(f"{where}: malformed body ({exc})") from None

    @classmethod
    def _from_body(cls, body: memoryview, backing: mmap.mmap, where: str) -> tuple[DomainSet, dict[str, Any]]:
        n, bits, selector_bits, meta_len, min_labels, max_labels = _BODY_HEADER.unpack_from(body, 0)
        if bits > _MAX_GROUP_BITS or selector_bits != _SELECTOR_BITS:
            raise DomainSetFormatError(f"{where}: table sizes out of range")
        offset = _BODY_HEADER.size
        meta = json.loads(bytes(body[offset : offset + meta_len]).decode())
        if not isinstance(meta, dict):
            raise DomainSetFormatError(f"{where}: metadata is not a JSON object")
        offset += meta_len
        arrays = []
        for code, count in (("I", 2 * ((1 << bits) + 1)), ("I", 3 * n)):
            offset += -offset % 8
            size = count * array(code).itemsize
            if offset + size > len(body):
                raise DomainSetFormatError(f"{where}: truncated (arrays run past the end)")
            chunk = body[offset : offset + size]
            if _LITTLE:
                arrays.append(chunk.cast(code))
            else:  # pragma: no cover - exercised only on big-endian hosts
                copy = array(code, bytes(chunk))
                copy.byteswap()
                arrays.append(copy)
            offset += size
        if offset != len(body):
            raise DomainSetFormatError(f"{where}: {len(body) - offset} unexpected bytes after the arrays")
        groups, records = arrays
        if groups[1] != 0 or groups[-1] != n:
            raise DomainSetFormatError(f"{where}: group table does not cover the entries")
        return cls(groups, records, bits, (min_labels, max_labels), backing), meta


def _ancestor_crcs(encoded: Sequence[bytes], dots: list[int], min_labels: int) -> array:
    """crc32 of every proper suffix of an entry that has at least `min_labels` labels (repeats kept)."""
    found = array("I")
    level: Iterable[bytes] = encoded
    level_dots: Iterable[int] = dots  # each name's entry's dot count
    need = min_labels
    while True:
        # An entry with d dots has a parent of d labels, a grandparent of d - 1, ...: the names
        # of this level whose parent is long enough are those whose entry has `need` dots or more.
        keep = list(map(ge, level_dots, repeat(need)))
        if not any(keep):
            return found
        level = list(map(itemgetter(2), map(bytes.partition, compress(level, keep), repeat(b"."))))
        level_dots = list(compress(level_dots, keep))
        need += 1
        found.extend(map(crc32, level))


def _group_words(sorted_groups: Sequence[int], entry_crcs: Sequence[int], ancestor_crcs: Sequence[int],
                 bits: int) -> array:
    """Two words per group and an end marker: ancestor filter << 16 | entry filter, records start."""
    size = 1 << bits
    shift = 32 - bits
    # One C-level bisect per group instead of a Python step per entry (a list bisects fastest).
    group_list = sorted_groups.tolist() if isinstance(sorted_groups, memoryview) else list(sorted_groups)
    starts = array("I", list(map(bisect_left, repeat(group_list), range(size))))
    starts.append(len(group_list))
    del group_list
    filters = []
    for crcs in (entry_crcs, ancestor_crcs):
        # One byte a filter bit, group-major: byte 16 * group + selector is `crc >> (shift - 4)`,
        # set by C-level map() calls; then the sixteen selector planes (every 16th byte) are
        # packed into 16-bit words as big-int shifts, with no Python step per group.
        flags = bytearray(size << _SELECTOR_BITS)
        deque(map(flags.__setitem__, map(rshift, crcs, repeat(shift - _SELECTOR_BITS)), repeat(1)), maxlen=0)
        packed = 0
        for sel in range(1 << _SELECTOR_BITS):
            plane = bytearray(2 * size)
            plane[sel >> 3 :: 2] = flags[sel :: 1 << _SELECTOR_BITS]
            packed |= int.from_bytes(plane, "little") << (sel & 7)
        filters.append(packed.to_bytes(2 * size, "little"))
    # Interleave with memoryview copies: word 2g = ancestor << 16 | entry filter, 2g + 1 = start.
    words = array("I", bytes(8 * (size + 1)))  # the end marker has no filter bits
    view = memoryview(words)
    halves = view.cast("B").cast("H")
    low, high = (0, 1) if _LITTLE else (1, 0)
    for half, data in zip((low, high), filters, strict=True):
        plane = array("H")
        plane.frombytes(data)
        if not _LITTLE:  # pragma: no cover - exercised only on big-endian hosts
            plane.byteswap()
        halves[half : 4 * size : 4] = plane
    halves.release()
    view[1::2] = starts
    view.release()
    return words


def _itemsize(arr: Any) -> int:
    return arr.itemsize


def _little_endian(arr: Any) -> memoryview | array:
    if _LITTLE or _itemsize(arr) == 1:
        return memoryview(arr)
    copy = array(getattr(arr, "typecode", None) or arr.format, arr)  # pragma: no cover
    copy.byteswap()  # pragma: no cover
    return copy  # pragma: no cover


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable across a power cut; not all platforms can open a directory.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
