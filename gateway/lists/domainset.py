"""DomainSet: a compact, mmap-shareable set of domain names answering "is this name or a parent listed?".

Layout. Each entry is a 64-bit key, (crc32(name) << 32) | adler32(name) over the name's ASCII bytes:
deterministic and identical on every platform and Python version (never the salted hash()). Keys are
sorted into one `array('Q')`; parallel arrays hold the payload, `array('H')` source id and
`array('I')` line number with the exception flag in bit 30 and subdomains-only in bit 31. A lookup
probes the name and each parent, most specific first, skipping parents with fewer (or more) labels
than any entry has. A probe is one crc32 and one bit test in a filter (a bitmap of about eight bits
an entry: byte `crc & mask`, bit `crc >> 29`; ~11% of absent names pass); only passing probes
compute adler32 and bisect a bucket of the sorted keys, bounded by a table `array('I')` indexed by
the crc32's top bits (about eight entries a bucket). The filter exists because on a miss, the
common case, the interpreter's per-operation cost dominates: skipping the bucket search on ~90% of
probes is worth more than any memory layout trick. About 15.6 bytes an entry; names themselves are
not stored (the matching suffix is a slice of the queried name).

False positives. Names are not stored, so two different names with the same 64-bit key are
indistinguishable. For a name that is not listed, each probe wrongly hits with probability about
n / 2**64 (n entries): for 5 million entries ~3e-13 a probe, ~1e-12 for a four-label name (four
probes), i.e. about once in a trillion lookups. That is acceptable because the error only goes one
way: a collision can make an allowed name look listed (over-blocking, visible to staff through
`explain`, whose file:line then shows a different name, and fixable with an allow rule), but it can
never hide a listed name, whose own key is always present.

On disk. `save` writes a portable little-endian file: magic b"SGWDSET\\0", format version, SHA-256
of the body, then the caller's JSON metadata and the arrays, each 8-byte aligned so `load` can mmap
the file and wrap the arrays with memoryview.cast without copying; several worker processes then
share one copy in the page cache. No pickle: a file written on x86-64 Python 3.13 loads on arm64
Python 3.11.
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
from dataclasses import dataclass
from itertools import islice, repeat
from operator import and_, itemgetter, lshift, or_
from pathlib import Path
from typing import Any
from zlib import adler32, crc32

MAGIC = b"SGWDSET\0"
FORMAT_VERSION = 1

FLAG_EXCEPTION = 1
FLAG_SUBDOMAINS_ONLY = 2
MAX_LINE = (1 << 30) - 1
MAX_SOURCE = (1 << 16) - 1

_LINE_MASK = MAX_LINE
_EXCEPTION_BIT = 1 << 30
_SUBDOMAINS_BIT = 1 << 31

# magic, version, reserved, body length, SHA-256 of the body
_HEADER = struct.Struct("<8sIIQ32s")
_HEADER_SIZE = 64
# entries, bucket bits, filter bits, metadata length, fewest labels, most labels
_BODY_HEADER = struct.Struct("<QIIIHH")

_LITTLE = sys.byteorder == "little"

for _code, _size in (("Q", 8), ("I", 4), ("H", 2), ("B", 1)):
    if array(_code).itemsize != _size:  # pragma: no cover - no supported platform differs
        raise ImportError(f"array({_code!r}) is not {_size} bytes on this platform")


class DomainSetFormatError(ValueError):
    """A compiled DomainSet file that cannot be used: wrong magic, version, checksum or size."""


@dataclass(frozen=True, slots=True)
class Match:
    """One listed entry that covers a queried name."""

    depth: int
    suffix: str
    source: int
    line: int
    exception: bool
    subdomains_only: bool


def mutable_twin(cls: type) -> type:
    """A plain slotted dataclass with the fields of frozen dataclass `cls`, for building it fast.

    A frozen dataclass's __init__ calls object.__setattr__ once per field, which made building
    Match and Hit objects the most expensive step of a hit. A twin with the same slots is filled
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


_MatchDraft = mutable_twin(Match)


def name_key(name_bytes: bytes) -> int:
    """The 64-bit key of a normalized name's ASCII bytes."""
    return crc32(name_bytes) << 32 | adler32(name_bytes)


def _bucket_bits(n: int) -> int:
    # About eight entries a bucket: half a byte an entry, and bisect stays at three comparisons.
    return max(0, (n // 8).bit_length())


def _filter_bits(n: int) -> int:
    # log2 of the filter's size in bytes: the power of two nearest n, so 6-11 bits an entry.
    return max(3, round(math.log2(n))) if n else 3


class DomainSet:
    """Suffix-match set of normalized names with (source, line, flags) per entry."""

    __slots__ = (
        "_bucket_bits",
        "_filter",
        "_filter_bits",
        "_filter_mask",
        "_keys",
        "_lines",
        "_max_labels",
        "_min_labels",
        "_mmap",
        "_shift",
        "_sources",
        "_table",
    )

    def __init__(
        self,
        keys: Sequence[int],
        table: Sequence[int],
        sources: Sequence[int],
        lines: Sequence[int],
        bloom: Sequence[int],
        bucket_bits: int,
        filter_bits: int,
        labels: tuple[int, int],
        backing: mmap.mmap | None = None,
    ) -> None:
        # Private: use build() or load(); the arrays must already satisfy the layout invariants.
        self._keys = keys
        self._table = table
        self._sources = sources
        self._lines = lines
        self._filter = bloom
        self._bucket_bits = bucket_bits
        self._filter_bits = filter_bits
        self._shift = 32 - bucket_bits
        self._filter_mask = (1 << filter_bits) - 1
        self._min_labels, self._max_labels = labels
        self._mmap = backing

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
        keys = list(map(or_, map(lshift, map(crc32, encoded), repeat(32)), map(adler32, encoded)))
        dots = list(map(bytes.count, encoded, repeat(b".")))  # type: ignore[arg-type]
        labels = (min(dots) + 1, max(dots) + 1) if n else (1, 0)
        del encoded, dots
        packed = list(map(or_, lines, map(lshift, flags, repeat(30)))) if any(flags) else lines
        # sorted() is stable: entries sharing a name keep their input order.
        order = sorted(range(n), key=keys.__getitem__)
        gather = _gatherer(order)
        key_array = array("Q", gather(keys))
        del keys
        # The crc32 halves as small ints, read straight out of the array (no per-key shift).
        halves = memoryview(key_array).cast("B").cast("I")
        sorted_checks = (halves[1::2] if _LITTLE else halves[0::2]).tolist()
        halves.release()
        bucket_bits = _bucket_bits(n)
        filter_bits = _filter_bits(n)
        return cls(
            key_array,
            _bucket_table(sorted_checks, bucket_bits),
            array("H", gather(sources)),
            array("I", gather(packed)),
            _filter(sorted_checks, filter_bits),
            bucket_bits,
            filter_bits,
            labels,
        )

    # -- lookup -----------------------------------------------------------------------------

    def matches(self, name: str) -> tuple[Match, ...]:
        """Every entry equal to `name` (already normalized) or a parent of it, most specific first.

        An entry flagged subdomains_only covers only proper subdomains. Within one depth, entries
        keep their build order. Returns () on a miss.
        """
        found = self._probe(name, True)
        return tuple(found) if found else ()

    def raw_matches(self, name: str) -> Sequence[tuple[int, str, int, int]]:
        """matches() without Match objects: (depth, suffix, source, line | flags << 30) tuples.

        For ListIndex, which turns them straight into its own answers; () on a miss.
        """
        return self._probe(name, False) or ()

    def _probe(self, name: str, as_match: bool) -> list[Any] | None:
        # One loop serves matches() (Match objects) and raw_matches() (tuples).
        # The loop body up to the filter test is the miss path: keep it to the fewest operations.
        data = name.encode()
        labels = data.count(b".") + 1
        last = labels - self._min_labels
        if last < 0:
            return None
        depth = labels - self._max_labels
        if depth > last:  # only when the set is empty
            return None
        part = data
        if depth > 0:
            for _ in range(depth):
                part = part.partition(b".")[2]
        else:
            depth = 0
        bloom = self._filter
        fmask = self._filter_mask
        found: list[Any] | None = None
        while True:
            check = crc32(part)
            if bloom[check & fmask] >> (check >> 29) & 1:
                table = self._table
                bucket = check >> self._shift
                key = check << 32 | adler32(part)
                keys = self._keys
                hi = table[bucket + 1]
                i = bisect_left(keys, key, table[bucket], hi)
                if i < hi and keys[i] == key:
                    suffix = part.decode()
                    lines = self._lines
                    sources = self._sources
                    if found is None:
                        found = []
                    # Equal keys share a bucket, so `hi` also bounds the run of duplicates.
                    while True:
                        packed = lines[i]
                        if depth or packed < _SUBDOMAINS_BIT:
                            if as_match:
                                # See mutable_twin: this is the costliest step of a hit.
                                match = _MatchDraft(
                                    depth,
                                    suffix,
                                    sources[i],
                                    packed & _LINE_MASK,
                                    (packed & _EXCEPTION_BIT) != 0,
                                    packed >= _SUBDOMAINS_BIT,
                                )
                                match.__class__ = Match  # type: ignore[assignment]
                                found.append(match)
                            else:
                                found.append((depth, suffix, sources[i], packed))
                        i += 1
                        if i == hi or keys[i] != key:
                            break
            if depth == last:
                return found
            depth += 1
            part = part.partition(b".")[2]

    def __contains__(self, name: object) -> bool:
        """True if a non-exception entry covers `name` (exceptions are ignored, not applied)."""
        if not isinstance(name, str):
            return False
        data = name.encode()
        labels = data.count(b".") + 1
        last = labels - self._min_labels
        if last < 0:
            return False
        depth = labels - self._max_labels
        if depth > last:  # only when the set is empty
            return False
        part = data
        if depth > 0:
            for _ in range(depth):
                part = part.partition(b".")[2]
        else:
            depth = 0
        bloom = self._filter
        fmask = self._filter_mask
        while True:
            check = crc32(part)
            if bloom[check & fmask] >> (check >> 29) & 1:
                table = self._table
                bucket = check >> self._shift
                key = check << 32 | adler32(part)
                keys = self._keys
                lines = self._lines
                end = table[bucket + 1]
                i = bisect_left(keys, key, table[bucket], end)
                while i < end and keys[i] == key:
                    packed = lines[i]
                    if not packed & _EXCEPTION_BIT and (depth or not packed & _SUBDOMAINS_BIT):
                        return True
                    i += 1
            if depth == last:
                return False
            depth += 1
            part = part.partition(b".")[2]

    def __len__(self) -> int:
        return len(self._keys)

    def nbytes(self) -> int:
        """Bytes held by the arrays (mapped or in memory)."""
        return sum(len(a) * _itemsize(a) for a in self._arrays())

    def _arrays(self) -> tuple[Any, ...]:
        # File order; each array starts 8-byte aligned.
        return (self._keys, self._table, self._lines, self._sources, self._filter)

    # -- disk -------------------------------------------------------------------------------

    def save(self, path: Path, meta: dict[str, Any]) -> None:
        """Write the portable compiled form atomically: a reader sees the old file or the new, never half."""
        meta_bytes = json.dumps(meta, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()
        parts: list[Any] = [
            _BODY_HEADER.pack(
                len(self._keys),
                self._bucket_bits,
                self._filter_bits,
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
        n, bucket_bits, filter_bits, meta_len, min_labels, max_labels = _BODY_HEADER.unpack_from(body, 0)
        if bucket_bits > 32 or not 3 <= filter_bits <= 32:
            raise DomainSetFormatError(f"{where}: table sizes out of range")
        offset = _BODY_HEADER.size
        meta = json.loads(bytes(body[offset : offset + meta_len]).decode())
        if not isinstance(meta, dict):
            raise DomainSetFormatError(f"{where}: metadata is not a JSON object")
        offset += meta_len
        arrays = []
        layout = (("Q", n), ("I", (1 << bucket_bits) + 1), ("I", n), ("H", n), ("B", 1 << filter_bits))
        for code, count in layout:
            offset += -offset % 8
            size = count * array(code).itemsize
            if offset + size > len(body):
                raise DomainSetFormatError(f"{where}: truncated (arrays run past the end)")
            chunk = body[offset : offset + size]
            if _LITTLE or code == "B":
                arrays.append(chunk.cast(code))
            else:  # pragma: no cover - exercised only on big-endian hosts
                copy = array(code, bytes(chunk))
                copy.byteswap()
                arrays.append(copy)
            offset += size
        if offset != len(body):
            raise DomainSetFormatError(f"{where}: {len(body) - offset} unexpected bytes after the arrays")
        keys, table, lines, sources, bloom = arrays
        if table[0] != 0 or table[-1] != n:
            raise DomainSetFormatError(f"{where}: bucket table does not cover the entries")
        labels = (min_labels, max_labels)
        return cls(keys, table, sources, lines, bloom, bucket_bits, filter_bits, labels, backing), meta


def _gatherer(order: list[int]) -> Any:
    """A function returning `column` permuted by `order`, as a sequence array() accepts quickly."""
    if len(order) < 2:  # itemgetter() needs an argument, and returns a bare item for one
        return lambda column: [column[i] for i in order]
    # itemgetter walks the indices in C; faster than map(column.__getitem__, order), and array()
    # is built far faster from a tuple or list than from an iterator.
    return itemgetter(*order)


def _bucket_table(sorted_checks: list[int], bits: int) -> array:
    # One C-level bisect per bucket (n/8 of them) instead of a Python step per key.
    starts = map(lshift, range(1 << bits), repeat(32 - bits))
    table = array("I", list(map(bisect_left, repeat(sorted_checks), starts)))
    table.append(len(sorted_checks))
    return table


def _filter(sorted_checks: list[int], bits: int) -> array:
    """The probe filter: byte `crc & mask`, bit `crc >> 29` (the crc's top three bits)."""
    # The crcs are sorted, so those with top bits b form one slice: each of the eight bit planes
    # is built by C-level map() calls rather than a Python loop over every key.
    mask = (1 << bits) - 1
    planes = 0
    for bit in range(8):
        lo = bisect_left(sorted_checks, bit << 29)
        hi = bisect_left(sorted_checks, (bit + 1) << 29)
        plane = bytearray(1 << bits)
        offsets = map(and_, islice(sorted_checks, lo, hi), repeat(mask))
        deque(map(plane.__setitem__, offsets, repeat(1)), maxlen=0)
        planes |= int.from_bytes(plane, "little") << bit
    return array("B", planes.to_bytes(1 << bits, "little"))


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
