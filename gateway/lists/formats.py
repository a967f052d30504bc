"""Readers for block/allow list files: plain domains, hosts, AdBlock DNS rules, wildcards, UT1 folders."""

from __future__ import annotations

import contextlib
import errno
import functools
import ipaddress
import re
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from gateway.core.names import NameError_, normalize

# DomainSet's flag bits, so compile_lists can pass columns through unchanged.
from gateway.lists.domainset import FLAG_EXCEPTION, FLAG_SUBDOMAINS_ONLY

MAX_ERRORS = 5

# Names that hosts files carry for the machine itself; listing them is convention, not intent.
_HOSTS_SKIP = frozenset(
    {
        "localhost",
        "localhost.localdomain",
        "localhost4",
        "localhost4.localdomain4",
        "localhost6",
        "localhost6.localdomain6",
        "broadcasthost",
        "local",
        "0.0.0.0",
    }
)

# Bytes a canonical ASCII host name is made of; anything else leaves the fast path.
_NAME_BYTES = b"abcdefghijklmnopqrstuvwxyz0123456789-_."
_DIRTY = re.compile(rb"[^a-z0-9._\n-]")
_BOM = b"\xef\xbb\xbf"
_REGEX_WHY = "a regular expression, which DNS filtering cannot apply; list the host names instead"


@dataclass(frozen=True, slots=True)
class ListEntry:
    """One listed name; `exception` and `subdomains_only` come from AdBlock '@@' and '*.' syntax."""

    name: str
    line: int
    exception: bool = False
    subdomains_only: bool = False


@dataclass(frozen=True, slots=True)
class LineError:
    """A rejected line, printed as `file:line: why` so IT staff can jump to it."""

    path: str
    line: int
    why: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.why}"


@dataclass(slots=True)
class ParsedList:
    """Every accepted entry of one file, and a bounded account of the rejected lines."""

    path: str
    entries: list[ListEntry]
    lines: int
    bad_lines: int
    first_errors: list[LineError]


@dataclass(slots=True)
class ListColumns:
    """The same result as ParsedList, column-wise: millions of names without one object each.

    `names` are the normalized names as ASCII bytes (what DomainSet hashes); `flags` uses the
    DomainSet bits (FLAG_EXCEPTION, FLAG_SUBDOMAINS_ONLY). Numbers are arrays: a list would hold an
    int object per line number (36 MB for 1M lines) at the compile's memory peak.
    """

    path: str
    names: list[bytes] = field(default_factory=list)
    line_numbers: array = field(default_factory=lambda: array("I"))
    flags: array = field(default_factory=lambda: array("B"))
    lines: int = 0
    bad_lines: int = 0
    first_errors: list[LineError] = field(default_factory=list)

    def entries(self) -> list[ListEntry]:
        """One ListEntry per name (what read_list returns)."""
        entry = ListEntry
        # Most entries carry no flags; the two-argument call is the cheaper one.
        return [
            entry(name, line) if not f else entry(name, line, bool(f & FLAG_EXCEPTION), bool(f & FLAG_SUBDOMAINS_ONLY))
            for name, line, f in zip(map(bytes.decode, self.names), self.line_numbers, self.flags, strict=True)
        ]


def resolve_list_file(path: Path, display: str | None = None) -> tuple[Path, str]:
    """Return the file to read and its display path; a UT1 category folder means its `domains` file."""
    shown = display if display is not None else str(path)
    if path.is_dir():
        # UT1 ships `urls` and `expressions` beside `domains`; only host names are DNS-expressible.
        return path / "domains", f"{shown.rstrip('/')}/domains"
    return path, shown


def read_columns(path: Path, display: str | None = None) -> ListColumns:
    """Read a list file (or UT1 folder) into columns; raises FileNotFoundError if it is missing."""
    file, shown = resolve_list_file(path, display)
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, f"list file not found: {shown}", str(file)) from None
    return _scan_bytes(data, shown)


def read_list(path: Path, display: str | None = None) -> ParsedList:
    """Read a list file (or UT1 folder); bad lines are counted and the first few described."""
    return _to_parsed(read_columns(path, display))


def parse_lines(lines: Iterable[str], display: str) -> ParsedList:
    """Parse already-split text lines (no line endings needed), numbered from 1."""
    cols = ListColumns(display)
    for number, text in enumerate(lines, 1):
        cols.lines = number
        if number == 1:
            text = text.removeprefix("\ufeff")
        _parse_text_line(cols, text, number)
    return _to_parsed(cols)


def _to_parsed(cols: ListColumns) -> ParsedList:
    return ParsedList(cols.path, cols.entries(), cols.lines, cols.bad_lines, cols.first_errors)


def _scan_bytes(data: bytes, display: str) -> ListColumns:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        # Windows Notepad's "Unicode" is UTF-16 with a BOM; accept it rather than reject every line.
        with contextlib.suppress(UnicodeError):
            data = data.decode("utf-16").encode("utf-8")
    data = data.removeprefix(_BOM)
    # Normalise line endings once in C rather than stripping '\r' from every line.
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    # Work on bytes: canonical names are ASCII, so they never need decoding (DomainSet hashes
    # bytes), and undecodable bytes only ever reject their own line.
    lines = data.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    cols = ListColumns(display, lines=len(lines))

    # One C-speed scan finds the lines holding any byte outside a canonical name (comments, hosts
    # lines, AdBlock rules, upper case, Unicode). They are set aside and blanked so the loop below
    # needs only cheap structural checks on every other line.
    dirty: dict[int, bytes] = {}
    search = _DIRTY.search
    index = 0
    counted = 0
    found = search(data)
    while found is not None:
        at = found.start()
        index += data.count(b"\n", counted, at)
        counted = at
        dirty[index] = lines[index]
        lines[index] = b""
        end = data.find(b"\n", at)
        if end < 0:
            break
        found = search(data, end)

    add_name = cols.names.append
    add_number = cols.line_numbers.append
    add_flags = cols.flags.append
    for number, line in enumerate(lines, 1):
        # The structural checks make a clean line exactly what normalize() would return: no empty
        # label, every label <= 63 (the whole name is), ending in a letter (so no trailing dot and
        # no all-digit last label, which is how IP addresses look).
        if line and len(line) <= 63 and line[-1] >= 0x61 and line[0] != 0x2E and b".." not in line:
            add_name(line)
            add_number(number)
            add_flags(0)
        elif line:
            _parse_raw_line(cols, line, number)
        elif dirty:
            held = dirty.pop(number - 1, None)
            if held is not None:
                _parse_raw_line(cols, held, number)
    return cols


def _parse_raw_line(cols: ListColumns, raw: bytes, number: int) -> None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        _reject(cols, number, f"not valid UTF-8 (byte {exc.start + 1}); save the file as UTF-8")
        return
    _parse_text_line(cols, text, number)


def _reject(cols: ListColumns, number: int, why: str) -> None:
    cols.bad_lines += 1
    if len(cols.first_errors) < MAX_ERRORS:
        cols.first_errors.append(LineError(cols.path, number, why))


def _add(cols: ListColumns, name: str, number: int, flags: int) -> None:
    cols.names.append(name.encode("ascii"))
    cols.line_numbers.append(number)
    cols.flags.append(flags)


def _parse_text_line(cols: ListColumns, text: str, number: int) -> None:
    """Classify one decoded line; on success add its entries, else record why it was rejected."""
    s = text.strip()
    if not s or s[0] in "#!;":
        return
    if s[0] == "[" and s[-1] == "]":
        return  # "[Adblock Plus 2.0]" header
    hash_at = s.find("#")
    if hash_at > 0 and s[hash_at - 1] in " \t":
        s = s[:hash_at].rstrip()
    elif hash_at >= 0 and ("##" in s or "#@#" in s or "#?#" in s or "#$#" in s):
        _reject(cols, number, "an AdBlock element-hiding rule, which DNS filtering cannot apply; remove it")
        return

    if len(s) > 2 and s[0] == "/" and s[-1] == "/":
        result: tuple[str, int] | str = _REGEX_WHY
    elif s.startswith(("||", "@@", "|")) or "^" in s or "$" in s:
        result = _parse_adblock(s)
    elif s.startswith(("address=/", "server=/", "local=/")):
        result = "dnsmasq syntax is not supported; use the domains, hosts or AdBlock version of this list"
    else:
        words = s.split()
        if len(words) > 1:
            if _is_ip(words[0]):
                _parse_hosts(cols, words[1:], number)
                return
            result = (
                "several words on one line; write one domain per line, or a hosts line that starts with an IP address"
            )
        else:
            result = _parse_plain(s)
    if isinstance(result, str):
        _reject(cols, number, result)
    else:
        _add(cols, result[0], number, result[1])


def _parse_hosts(cols: ListColumns, words: list[str], number: int) -> None:
    first_error = None
    for word in words:
        lowered = word.lower()
        if lowered in _HOSTS_SKIP or lowered.startswith("ip6-"):
            continue
        result = _parse_plain(word)
        if isinstance(result, str):
            # Keep the line's other names: one bad name should not unlist its neighbours.
            if first_error is None:
                first_error = f"{word!r}: {result}"
        else:
            _add(cols, result[0], number, result[1])
    if first_error is not None:
        _reject(cols, number, first_error)


def _parse_adblock(s: str) -> tuple[str, int] | str:
    flags = 0
    body = s
    if body.startswith("@@"):
        flags |= FLAG_EXCEPTION
        body = body[2:]
    if body.startswith("||"):
        body = body[2:]
    elif body.startswith("|"):
        return "an address-anchored AdBlock rule ('|...'); DNS filtering needs '||name^'"
    elif not flags:
        # Without '||' an AdBlock pattern matches any part of an address, not a host and its subdomains.
        return "an AdBlock pattern without '||'; DNS filtering needs '||name^'"
    dollar = body.find("$")
    if dollar >= 0:
        options = body[dollar:]
        if len(options) > 30:
            options = options[:27] + "..."
        return (
            f"an AdBlock rule with options ({options}), which DNS filtering cannot apply;"
            " remove the options or the line"
        )
    if len(body) > 2 and body[0] == "/" and body[-1] == "/":
        return _REGEX_WHY
    if body.endswith("^|"):
        body = body[:-2]
    elif body.endswith("^"):
        body = body[:-1]
    if "/" in body or ":" in body:
        return "an AdBlock rule with a path or port, which DNS filtering cannot apply; keep only '||name^'"
    if "^" in body:
        return "'^' may only end an AdBlock rule ('||name^')"
    result = _parse_plain(body)
    if isinstance(result, str):
        return result
    return result[0], result[1] | flags


def _is_canonical(word: str) -> bool:
    """True when normalize(word) == word is certain without calling it (see _scan_bytes)."""
    return (
        len(word) <= 63
        and word[-1] >= "a"
        and word[0] != "."
        and ".." not in word
        and word.isascii()
        and not word.encode().translate(None, _NAME_BYTES)
    )


def _parse_plain(s: str) -> tuple[str, int] | str:
    if _is_canonical(s):
        return s, 0
    if "://" in s or "/" in s:
        return "a URL, not a domain: write just the host name"
    if _is_ip(s):
        return "an IP address, not a domain name; lists hold host names"
    flags = 0
    if s.startswith("*."):
        flags = FLAG_SUBDOMAINS_ONLY
        s = s[2:]
    if "*" in s:
        return "a wildcard is only allowed as a leading '*.' (as in '*.example.com')"
    try:
        name = normalize(s)
    except NameError_ as exc:
        return str(exc)
    last = name.rpartition(".")[2]
    if last.isdigit():
        return "the last label is all digits, so this is not a host name (an IP address?)"
    return name, flags


def _is_ip(word: str) -> bool:
    # ipaddress is slow; the pre-check keeps ordinary names away from it, and the cache serves
    # hosts files, which repeat one or two addresses on every line.
    if ":" not in word and not word[-1:].isdigit():
        return False
    return _is_ip_literal(word)


@functools.lru_cache(maxsize=64)
def _is_ip_literal(word: str) -> bool:
    try:
        ipaddress.ip_address(word)
    except ValueError:
        return False
    return True
