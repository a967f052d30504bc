"""The Department's school inventory: schools.csv -> validated School rows -> Prometheus file_sd JSON."""

from __future__ import annotations

import csv
import io
import ipaddress
import json
import os
import re
import tempfile
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from gateway.report.messages import tr

# School levels the Department registers, in teaching order (a multi-level school is written in
# this order so "thpt;thcs" and "thcs;thpt" become one label value).
LEVELS = ("mam_non", "tieu_hoc", "thcs", "thpt")

# What people type in the level column, after lower-casing and NFC: ids, short forms, Vietnamese.
_LEVEL_ALIASES = {
    "mam_non": "mam_non", "mn": "mam_non", "mầm non": "mam_non", "mam non": "mam_non",
    "tieu_hoc": "tieu_hoc", "th": "tieu_hoc", "tiểu học": "tieu_hoc", "tieu hoc": "tieu_hoc",
    "thcs": "thcs", "trung học cơ sở": "thcs", "trung hoc co so": "thcs",
    "thpt": "thpt", "trung học phổ thông": "thpt", "trung hoc pho thong": "thpt",
}
_LEVEL_SPLIT = re.compile(r"\s*[;,+/|]\s*")

COLUMNS = ("id", "name", "ward", "level", "address")
# A school whose box cannot be reached (behind NAT) sends its metrics by remote write instead of
# being scraped; the inventory still registers it, with this word in the address column.
AGENT_ADDRESS = "agent"
_AGENT_WORDS = {"agent", "remote_write", "remote-write"}

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}"
                       r"[A-Za-z0-9])?)*$")


@dataclass(frozen=True, slots=True)
class School:
    """One registered school: the labels Prometheus attaches to its box's series."""

    id: str
    name: str
    ward: str
    levels: tuple[str, ...]
    address: str | None  # None: the box sends by remote write (agent mode), nothing to scrape
    line: int = 0

    @property
    def level(self) -> str:
        return ";".join(self.levels)

    def labels(self) -> dict[str, str]:
        return {"school_id": self.id, "school_name": self.name, "ward": self.ward, "level": self.level}


@dataclass(frozen=True, slots=True)
class RowProblem:
    """One bad row (or header) of the inventory, renderable as `file:line: what is wrong`."""

    file: str
    line: int
    key: str
    args: dict = field(default_factory=dict)

    def render(self, lang: str = "vi") -> str:
        return f"{self.file}:{self.line}: {tr(self.key, lang, **self.args)}"


class InventoryError(ValueError):
    """The inventory has bad rows; carries all of them."""

    def __init__(self, problems: list[RowProblem]):
        self.problems = problems
        super().__init__("\n".join(p.render("en") for p in problems))


def clean_text(value: str) -> str:
    """NFC-normalise and collapse whitespace: an NFD 'Đình' from a Mac must equal the NFC one."""
    return " ".join(unicodedata.normalize("NFC", value).split())


def parse_levels(value: str) -> tuple[str, ...] | None:
    """'THCS; thpt' -> ('thcs', 'thpt') in teaching order; None if any part is unknown or none given."""
    parts = [p for p in _LEVEL_SPLIT.split(clean_text(value).lower()) if p]
    found = set()
    for part in parts:
        level = _LEVEL_ALIASES.get(part)
        if level is None:
            return None
        found.add(level)
    return tuple(level for level in LEVELS if level in found) or None


def _address_problem(address: str) -> tuple[str, dict] | None:
    if "://" in address or "/" in address:
        return "inventory.address_url", {"value": address}
    host, sep, port = address.rpartition(":")
    if not sep or not host:
        return "inventory.address_port", {"value": address}
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        return "inventory.address_port", {"value": address}
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return "inventory.address_host", {"value": address}
        return None
    if ":" in host:  # a bare IPv6 address: Prometheus needs the brackets
        return "inventory.address_ipv6", {"value": address}
    try:
        ipaddress.IPv4Address(host)
        return None
    except ValueError:
        pass
    if host.replace(".", "").isdigit() or not _HOSTNAME.match(host):
        return "inventory.address_host", {"value": address}
    return None


def _delimiter(first_line: str) -> str:
    # Excel in a Vietnamese locale (decimal comma) saves "CSV" with semicolons; accept either, and tabs.
    counts = {d: first_line.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def read_inventory(text: str, file: str = "schools.csv") -> list[School]:
    """Parse the inventory CSV text (BOM already removed or not); raise InventoryError listing every bad row."""
    text = text.removeprefix("\ufeff")
    problems: list[RowProblem] = []
    lines = text.splitlines()
    header_index = next((i for i, line in enumerate(lines) if line.strip()), None)
    if header_index is None:
        raise InventoryError([RowProblem(file, 1, "inventory.empty")])
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(lines[header_index]))
    header: list[str] | None = None
    index: dict[str, int] = {}
    schools: list[School] = []
    seen_ids: dict[str, int] = {}
    seen_addresses: dict[str, int] = {}
    previous_end = 0
    for row in reader:
        line = previous_end + 1  # a quoted field may span lines: report where the row starts
        previous_end = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if header is None:
            header = [clean_text(cell).lower() for cell in row]
            missing = [c for c in COLUMNS if c not in header]
            if missing:
                problems.append(RowProblem(file, line, "inventory.missing_columns",
                                           {"missing": ", ".join(missing), "expected": ", ".join(COLUMNS)}))
                break
            index = {c: header.index(c) for c in COLUMNS}
            continue
        if len(row) < len(header):
            problems.append(RowProblem(file, line, "inventory.short_row", {"got": len(row), "want": len(header)}))
            continue
        values = {c: clean_text(row[i]) for c, i in index.items()}
        row_problems: list[RowProblem] = []
        for column in COLUMNS:
            if not values[column]:
                row_problems.append(RowProblem(file, line, "inventory.empty_cell", {"column": column}))
        school_id = values["id"]
        if school_id and not _ID.match(school_id):
            row_problems.append(RowProblem(file, line, "inventory.bad_id", {"value": school_id}))
        elif school_id in seen_ids:
            row_problems.append(RowProblem(file, line, "inventory.duplicate_id",
                                           {"value": school_id, "first": seen_ids[school_id]}))
        levels = parse_levels(values["level"]) if values["level"] else ()
        if levels is None:
            row_problems.append(RowProblem(file, line, "inventory.bad_level",
                                           {"value": values["level"], "allowed": ", ".join(LEVELS)}))
        address: str | None = values["address"]
        if address and address.lower() in _AGENT_WORDS:
            address = None
        elif address:
            bad = _address_problem(address)
            if bad:
                row_problems.append(RowProblem(file, line, bad[0], bad[1]))
            elif address.lower() in seen_addresses:
                row_problems.append(RowProblem(file, line, "inventory.duplicate_address",
                                               {"value": address, "first": seen_addresses[address.lower()]}))
        if row_problems:
            problems.extend(row_problems)
            continue
        seen_ids[school_id] = line
        if address:
            seen_addresses[address.lower()] = line
        schools.append(School(school_id, values["name"], values["ward"], levels or (), address, line))
    if header is None and not problems:
        problems.append(RowProblem(file, 1, "inventory.empty"))
    elif header is not None and not schools and not problems:
        problems.append(RowProblem(file, previous_end or 1, "inventory.no_rows"))
    if problems:
        raise InventoryError(problems)
    return schools


def load_inventory(path: Path, display: str | None = None) -> list[School]:
    """Read and parse an inventory CSV file (UTF-8, with or without BOM)."""
    name = display or str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InventoryError([RowProblem(name, 1, "inventory.unreadable", {"detail": exc.strerror or str(exc)})]) \
            from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise InventoryError([RowProblem(name, line, "inventory.not_utf8")]) from exc
    return read_inventory(text, name)


def to_file_sd(schools: Iterable[School]) -> list[dict]:
    """One file_sd target group per school; a remote-write school has no target but keeps its labels."""
    return [{"targets": [s.address] if s.address else [], "labels": s.labels()} for s in schools]


def write_file_sd(schools: Iterable[School], path: Path) -> None:
    """Write targets JSON atomically: Prometheus re-reads the file on change and must never see half of it."""
    text = json.dumps(to_file_sd(schools), ensure_ascii=False, indent=2) + "\n"
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_targets(path: Path) -> list[School]:
    """Read a file_sd targets JSON written by `department targets` back into School rows."""
    data = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of target groups")
    schools: list[School] = []
    for number, group in enumerate(data, 1):
        if not isinstance(group, dict):
            raise ValueError(f"{path}: target group {number} is not an object")
        labels = group.get("labels") or {}
        school_id = labels.get("school_id")
        if not school_id:
            raise ValueError(f"{path}: target group {number} has no school_id label")
        targets = group.get("targets") or []
        levels = parse_levels(labels.get("level", "")) or ()
        schools.append(School(school_id, labels.get("school_name", school_id), labels.get("ward", ""),
                              levels, targets[0] if targets else None, number))
    return schools
