"""Compliance figures from Prometheus query results: pure functions, no I/O, no clock reads."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from gateway.report.inventory import LEVELS, School, parse_levels

TZ = ZoneInfo("Asia/Ho_Chi_Minh")
DAY = 86400  # Vietnam keeps UTC+7 all year (no DST), so every local day is 86400 s long
MAX_DAYS = 3660  # query_range answers at most 11,000 points per series; ten years is plenty

# The Department's 2026–2030 plan: the share of schools protected by each year.
PLAN_TARGETS: tuple[tuple[int, float], ...] = ((2027, 0.60), (2030, 1.00))

# "Reporting" and the end-of-period state look at the period's last days: a box silent for longer
# than this is not counted as protecting anyone, whatever it said before.
RECENT_DAYS = 7

# labels, [(unix seconds, value)] — one series of a query_range answer
Series = tuple[Mapping[str, str], Sequence[tuple[float, float]]]


@dataclass(frozen=True, slots=True)
class Period:
    """Local calendar days first_day..last_day inclusive, in the report's time zone."""

    first_day: dt.date
    last_day: dt.date
    tz: dt.tzinfo = TZ

    @property
    def start(self) -> dt.datetime:
        return dt.datetime.combine(self.first_day, dt.time(0), self.tz)

    @property
    def end(self) -> dt.datetime:
        """The end of the last day: local midnight after it."""
        return dt.datetime.combine(self.last_day + dt.timedelta(days=1), dt.time(0), self.tz)

    @property
    def days(self) -> int:
        return (self.last_day - self.first_day).days + 1

    def day_ends(self) -> list[float]:
        """Unix times of each day's end: the evaluation points of the daily query_range grid."""
        start = self.start.timestamp()
        return [start + DAY * k for k in range(1, self.days + 1)]

    def day_index(self, timestamp: float) -> int | None:
        """Which day (0-based) a grid point belongs to; None outside the period."""
        k = round((timestamp - self.start.timestamp()) / DAY) - 1
        return k if 0 <= k < self.days else None

    def day(self, index: int) -> dt.date:
        return self.first_day + dt.timedelta(days=index)


class PeriodError(ValueError):
    """A bad --from/--to; `key` and `params` name the message."""

    def __init__(self, key: str, **params):
        super().__init__(key)
        self.key, self.params = key, params


def parse_period(first: str, last: str, tz: dt.tzinfo = TZ) -> Period:
    """'2026-01-01', '2026-12-31' -> the local days between them, both included."""
    days = []
    for text in (first, last):
        try:
            days.append(dt.date.fromisoformat(text.strip()))
        except ValueError as exc:
            raise PeriodError("cli.bad_date", value=text) from exc
    if days[0] > days[1]:
        raise PeriodError("cli.bad_period", start=days[0].isoformat(), end=days[1].isoformat())
    period = Period(days[0], days[1], tz)
    if period.days > MAX_DAYS:
        raise PeriodError("cli.long_period", days=period.days, limit=MAX_DAYS)
    return period


@dataclass(frozen=True, slots=True)
class QueryResults:
    """The daily query_range answers the report is computed from (see gateway.report.queries)."""

    up: Sequence[Series] = ()
    school_info: Sequence[Series] = ()
    protection_min: Sequence[Series] = ()
    protection_last: Sequence[Series] = ()
    bundle_version: Sequence[Series] = ()
    policy_info: Sequence[Series] = ()
    policy_loaded: Sequence[Series] = ()
    bundle_expiry: Sequence[Series] = ()
    blocks: Sequence[Series] = ()
    queries: Sequence[Series] = ()
    bypass: Sequence[Series] = ()


@dataclass(frozen=True, slots=True)
class SchoolStatus:
    id: str
    name: str
    ward: str
    levels: tuple[str, ...]
    registered: bool
    days_reporting: int
    days_protected: int
    last_day: dt.date | None
    reporting: bool
    protected: bool
    current: bool
    protection_last: float | None
    bundle_version: float | None
    policy_version: str | None
    policy_loaded: float | None
    bundle_expiry: float | None

    @property
    def compliant(self) -> bool:
        return self.reporting and self.protected and self.current


@dataclass(frozen=True, slots=True)
class GroupRow:
    """Coverage of one ward, level, or the whole city."""

    key: str
    registered: int
    reporting: int
    protected: int
    current: int
    compliant: int
    day_coverage: float | None
    targets: tuple[bool | None, ...]  # one per PLAN_TARGETS; None when no school is registered

    def share(self, count: int) -> float | None:
        return count / self.registered if self.registered else None

    @property
    def compliant_share(self) -> float | None:
        return self.share(self.compliant)


@dataclass(frozen=True, slots=True)
class CountTable:
    """Counter increases summed over the period: rows (e.g. categories) by columns (e.g. bands)."""

    cells: Mapping[tuple[str, str], int]

    def rows(self) -> list[str]:
        """Row keys, largest total first."""
        totals = self.row_totals()
        return sorted(totals, key=lambda k: (-totals[k], k))

    def columns(self) -> list[str]:
        totals = self.column_totals()
        return sorted(totals, key=lambda k: (-totals[k], k))

    def row_totals(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for (row, _), value in self.cells.items():
            out[row] += value
        return dict(out)

    def column_totals(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for (_, column), value in self.cells.items():
            out[column] += value
        return dict(out)

    @property
    def total(self) -> int:
        return sum(self.cells.values())

    def get(self, row: str, column: str) -> int:
        return self.cells.get((row, column), 0)


@dataclass(frozen=True, slots=True)
class Report:
    period: Period
    generated_at: dt.datetime
    source: str
    inventory_used: bool
    schools: tuple[SchoolStatus, ...]
    unregistered: tuple[SchoolStatus, ...]
    wards: tuple[GroupRow, ...]
    levels: tuple[GroupRow, ...]
    total: GroupRow
    targets: tuple[tuple[int, float], ...]
    fleet_newest_bundle: float | None
    min_bundle_version: float | None
    blocks: CountTable            # (category, band)
    queries_by_ward: Mapping[str, int]
    blocks_by_ward: Mapping[str, int]
    queries_by_band: Mapping[str, int]
    bypass: CountTable            # (kind, band)
    bypass_by_ward: Mapping[str, int]
    recent_days: int = RECENT_DAYS
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def queries_total(self) -> int:
        return sum(self.queries_by_ward.values())


def _daily(period: Period, points: Iterable[tuple[float, float]]) -> dict[int, float]:
    out: dict[int, float] = {}
    for timestamp, value in points:
        index = period.day_index(float(timestamp))
        if index is not None and value == value:  # NaN never counts as reported
            out[index] = float(value)
    return out


def _per_school(period: Period, series: Iterable[Series]) -> dict[str, dict[int, float]]:
    """school_id -> day -> value; several series of one school (renamed, moved ward) merge by max."""
    out: dict[str, dict[int, float]] = defaultdict(dict)
    for labels, points in series:
        school_id = labels.get("school_id", "")
        if not school_id:
            continue  # a series Prometheus cannot tie to a school (no inventory, no school_info)
        days = out[school_id]
        for index, value in _daily(period, points).items():
            days[index] = max(days.get(index, value), value)
    return out


def _last(days: Mapping[int, float], upto: int | None = None) -> tuple[int, float] | None:
    keys = [k for k in days if upto is None or k <= upto]
    if not keys:
        return None
    k = max(keys)
    return k, days[k]


def _labels_by_school(*groups: Iterable[Series]) -> dict[str, Mapping[str, str]]:
    """The labels of each school's most recent series, for schools missing from the inventory."""
    best: dict[str, tuple[float, Mapping[str, str]]] = {}
    for series in groups:
        for labels, points in series:
            school_id = labels.get("school_id", "")
            if not school_id or not points:
                continue
            latest = max(float(t) for t, _ in points)
            if school_id not in best or latest >= best[school_id][0]:
                best[school_id] = (latest, labels)
    return {k: v[1] for k, v in best.items()}


def _policy_versions(period: Period, series: Iterable[Series]) -> dict[str, str]:
    latest: dict[str, tuple[int, str]] = {}
    for labels, points in series:
        school_id, version = labels.get("school_id", ""), labels.get("version", "")
        days = _daily(period, points)
        if not school_id or not days:
            continue
        last = max(days)
        if school_id not in latest or last >= latest[school_id][0]:
            latest[school_id] = (last, version)
    return {k: v[1] for k, v in latest.items()}


def _sum_table(period: Period, series: Iterable[Series], row: str, column: str) -> CountTable:
    cells: dict[tuple[str, str], float] = defaultdict(float)
    for labels, points in series:
        total = sum(_daily(period, points).values())
        cells[(labels.get(row, ""), labels.get(column, ""))] += total
    return CountTable({k: round(v) for k, v in cells.items() if round(v) > 0})


def _sum_by(period: Period, series: Iterable[Series], label: str) -> dict[str, int]:
    out: dict[str, float] = defaultdict(float)
    for labels, points in series:
        out[labels.get(label, "")] += sum(_daily(period, points).values())
    return {k: round(v) for k, v in out.items()}


def _group(key: str, schools: Sequence[SchoolStatus], period_days: int,
           targets: Sequence[tuple[int, float]]) -> GroupRow:
    registered = len(schools)
    compliant = sum(s.compliant for s in schools)
    coverage = (sum(s.days_reporting for s in schools) / (registered * period_days)) if registered else None
    share = compliant / registered if registered else None
    # compare in whole permille so 0.6 of 5 schools (3/5) is not judged by float rounding
    passes = tuple(None if share is None else round(share * 1000) >= round(goal * 1000) for _, goal in targets)
    return GroupRow(key, registered, sum(s.reporting for s in schools), sum(s.protected for s in schools),
                    sum(s.current for s in schools), compliant, coverage, passes)


def build_report(period: Period, results: QueryResults, *, inventory: Sequence[School] | None = None,
                 generated_at: dt.datetime, source: str = "", min_bundle_version: float | None = None,
                 targets: Sequence[tuple[int, float]] = PLAN_TARGETS, recent_days: int = RECENT_DAYS) -> Report:
    """Turn the daily query answers into the compliance report's figures."""
    up = _per_school(period, results.up)
    info = _per_school(period, results.school_info)
    reported: dict[str, dict[int, float]] = defaultdict(dict)
    for source_days in (up, info):
        for school_id, days in source_days.items():
            for index, value in days.items():
                # school_info is only there after a successful scrape, so its presence means reported
                ok = 1.0 if (source_days is info or value >= 1) else 0.0
                reported[school_id][index] = max(reported[school_id].get(index, 0.0), ok)
    protection_min = _per_school(period, results.protection_min)
    protection_last = _per_school(period, results.protection_last)
    bundle = _per_school(period, results.bundle_version)
    loaded = _per_school(period, results.policy_loaded)
    expiry = _per_school(period, results.bundle_expiry)
    versions = _policy_versions(period, results.policy_info)
    recent_from = period.days - min(recent_days, period.days)

    def days_ok(school_id: str) -> list[int]:
        return sorted(k for k, v in reported.get(school_id, {}).items() if v >= 1)

    def is_reporting(school_id: str) -> bool:
        ok = days_ok(school_id)
        return bool(ok) and ok[-1] >= recent_from

    # The newest bundle running anywhere at the end of the period (reporting boxes only).
    last_bundles = {k: v[1] for k, d in bundle.items() if is_reporting(k) and (v := _last(d))}
    newest = max(last_bundles.values()) if last_bundles else None
    threshold = newest
    if min_bundle_version is not None:
        threshold = min_bundle_version if threshold is None else min(threshold, min_bundle_version)

    def status(school_id: str, name: str, ward: str, levels: tuple[str, ...], registered: bool) -> SchoolStatus:
        ok = days_ok(school_id)
        reporting = is_reporting(school_id)
        prot = _last(protection_last.get(school_id, {}))
        version = last_bundles.get(school_id)
        protected_days = sum(1 for k, v in protection_min.get(school_id, {}).items()
                             if v >= 1 and reported.get(school_id, {}).get(k, 0) >= 1)
        last_loaded = _last(loaded.get(school_id, {}))
        last_expiry = _last(expiry.get(school_id, {}))
        return SchoolStatus(
            id=school_id, name=name, ward=ward, levels=levels, registered=registered,
            days_reporting=len(ok), days_protected=protected_days,
            last_day=period.day(ok[-1]) if ok else None,
            reporting=reporting,
            protected=reporting and prot is not None and prot[1] >= 1,
            current=reporting and version is not None and threshold is not None and version >= threshold,
            protection_last=prot[1] if prot else None,
            bundle_version=version if version is not None else (b[1] if (b := _last(bundle.get(school_id, {})))
                                                                else None),
            policy_version=versions.get(school_id),
            policy_loaded=last_loaded[1] if last_loaded else None,
            bundle_expiry=last_expiry[1] if last_expiry else None,
        )

    seen_labels = _labels_by_school(results.up, results.school_info, results.protection_last)
    schools: list[SchoolStatus] = []
    unregistered: list[SchoolStatus] = []
    if inventory is not None:
        known = set()
        for s in inventory:
            known.add(s.id)
            schools.append(status(s.id, s.name, s.ward, s.levels, True))
        for school_id in sorted(set(reported) - known):
            if days_ok(school_id):
                labels = seen_labels.get(school_id, {})
                unregistered.append(status(school_id, labels.get("school_name", school_id), labels.get("ward", ""),
                                           parse_levels(labels.get("level", "")) or (), False))
    else:
        for school_id in sorted(set(reported) | set(seen_labels)):
            labels = seen_labels.get(school_id, {})
            schools.append(status(school_id, labels.get("school_name") or school_id, labels.get("ward", ""),
                                  parse_levels(labels.get("level", "")) or (), True))

    by_ward: dict[str, list[SchoolStatus]] = defaultdict(list)
    by_level: dict[str, list[SchoolStatus]] = defaultdict(list)
    for s in schools:
        by_ward[s.ward].append(s)
        for level in s.levels or ("",):
            by_level[level].append(s)
    level_order = {level: i for i, level in enumerate(LEVELS)}
    wards = tuple(_group(w, by_ward[w], period.days, targets) for w in sorted(by_ward))
    levels = tuple(_group(lv, by_level[lv], period.days, targets)
                   for lv in sorted(by_level, key=lambda lv: level_order.get(lv, len(LEVELS))))

    blocks_by_ward = _sum_by(period, results.blocks, "ward")
    queries_by_ward = _sum_by(period, results.queries, "ward")
    return Report(
        period=period, generated_at=generated_at, source=source, inventory_used=inventory is not None,
        schools=tuple(sorted(schools, key=lambda s: (s.ward, s.name, s.id))),
        unregistered=tuple(unregistered), wards=wards, levels=levels,
        total=_group("", schools, period.days, targets), targets=tuple(targets),
        fleet_newest_bundle=newest, min_bundle_version=min_bundle_version,
        blocks=_sum_table(period, results.blocks, "category", "band"),
        queries_by_ward=queries_by_ward, blocks_by_ward=blocks_by_ward,
        queries_by_band=_sum_by(period, results.queries, "band"),
        bypass=_sum_table(period, results.bypass, "kind", "band"),
        bypass_by_ward=_sum_by(period, results.bypass, "ward"),
        recent_days=min(recent_days, period.days),
    )
