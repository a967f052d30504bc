"""The compiled policy as one immutable Snapshot, and the holder that swaps it in one assignment."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from gateway.core.identify import Classifier
from gateway.core.model import BlockResponse, SafeSearch, Text
from gateway.core.names import SuffixMap


@dataclass(frozen=True, slots=True)
class Category:
    id: str
    name: Text
    description: Text
    mandatory: bool
    kind: str  # "block" | "allow"
    hotline: bool
    block_response: BlockResponse | None
    rule: str = ""  # where it is declared, e.g. "policies/department/categories.yaml:12 categories.adult"


@dataclass(frozen=True, slots=True)
class Schedule:
    """Weekly windows in the school's local time; inactive on holidays."""

    id: str
    windows: tuple[tuple[frozenset, int, int], ...]  # (weekdays, start minute, end minute)

    def active(self, local: dt.datetime, holidays: tuple[tuple[dt.date, dt.date], ...]) -> bool:
        minute = local.hour * 60 + local.minute
        day = local.weekday()
        today = local.date()
        for days, start, end in self.windows:
            if start < end:
                if day in days and start <= minute < end and not _holiday(today, holidays):
                    return True
            else:  # runs past midnight: the part after midnight belongs to the day it started
                if day in days and minute >= start and not _holiday(today, holidays):
                    return True
                yesterday = today - dt.timedelta(days=1)
                if (day - 1) % 7 in days and minute < end and not _holiday(yesterday, holidays):
                    return True
        return False


def _holiday(day: dt.date, holidays) -> bool:
    return any(first <= day <= last for first, last in holidays)


@dataclass(frozen=True, slots=True)
class Restriction:
    categories: frozenset
    schedule: Schedule
    rule: str


@dataclass(frozen=True, slots=True)
class BandPolicy:
    id: str
    name: Text
    blocked: dict  # category id -> rule text (where the block was declared)
    restricted: tuple[Restriction, ...]
    safe_search: SafeSearch
    response: BlockResponse
    garden: frozenset | None  # allow categories forming the walled garden, or None


@dataclass(frozen=True, slots=True)
class GroupPolicy:
    id: str
    band: BandPolicy
    allow: SuffixMap  # group and band allow entries: payload = rule text
    deny: SuffixMap
    garden: frozenset | None
    inspect_tls: bool


@dataclass(frozen=True, slots=True)
class SchoolInfo:
    id: str
    name: str
    ward: str
    levels: tuple[str, ...]
    timezone: str
    contact: dict


@dataclass(frozen=True, slots=True)
class Engine:
    id: str
    targets: dict  # SafeSearch -> host


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything `decide` needs, compiled once; never mutated after construction."""

    school: SchoolInfo
    tz: ZoneInfo
    categories: dict  # id -> Category
    bands: dict  # id -> BandPolicy
    groups: dict  # id -> GroupPolicy
    classifier: Classifier
    index: object  # gateway.lists.index.ListIndex
    never_block: SuffixMap  # payload = "file:line"
    safe_search: dict  # exact host -> Engine
    holidays: tuple[tuple[dt.date, dt.date], ...]
    version: str  # Department baseline version
    fingerprint: str  # sha256 over every policy and list file
    files: tuple[str, ...] = ()
    warnings: tuple = field(default=())


class SnapshotHolder:
    """Holds the current Snapshot. Readers take `.current` once per query; `swap` is one assignment,
    so a reload never blocks or tears a query in flight."""

    __slots__ = ("current",)

    def __init__(self, snapshot: Snapshot):
        self.current = snapshot

    def swap(self, snapshot: Snapshot) -> Snapshot:
        old, self.current = self.current, snapshot
        return old
