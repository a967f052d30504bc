"""Test helper: a small fleet's daily query answers, for the pure computation and rendering tests."""

from __future__ import annotations

import datetime as dt

from gateway.report.compute import TZ, QueryResults, parse_period
from gateway.report.inventory import School

PERIOD = parse_period("2026-01-01", "2026-01-10")
GENERATED = dt.datetime(2026, 1, 11, 8, 0, tzinfo=TZ)
INVENTORY = [
    School("A", "Trường A", "W1", ("thcs",), "a:1"),
    School("B", "Trường B", "W1", ("tieu_hoc",), "b:1"),
    School("C", "Trường C", "W2", ("thcs", "thpt"), "c:1"),
    School("D", "Trường D", "W2", ("thpt",), None),
    School("E", "Trường E", "W2", ("thpt",), "e:1"),
]


def labels_of(school: str, **extra: str) -> dict:
    ward = {"A": "W1", "B": "W1", "C": "W2", "D": "W2", "E": "W2", "X": "W9"}[school]
    return {"school_id": school, "school_name": f"Trường {school}", "ward": ward, "level": "thcs", **extra}


def days_at(values: dict[int, float]) -> list[tuple[float, float]]:
    """day index (0-based) -> value, at that day's end."""
    ends = PERIOD.day_ends()
    return [(ends[k], v) for k, v in sorted(values.items())]


def every_day(value: float, days: range = range(10)) -> list[tuple[float, float]]:
    return days_at({k: value for k in days})


RESULTS = QueryResults(
    up=[(labels_of("A"), every_day(1)), (labels_of("B"), every_day(1)),
        (labels_of("C"), days_at({0: 1, 1: 1, 2: 0})),            # silent since day 3: not reporting at the end
        (labels_of("E"), every_day(1, range(5, 10))),
        (labels_of("X"), every_day(1))],                        # not in the inventory
    protection_min=[(labels_of("A"), every_day(1)),
                    (labels_of("B"), days_at({k: 0 if k == 4 else 1 for k in range(10)})),
                    (labels_of("C"), days_at({0: 1, 1: 1})), (labels_of("E"), every_day(1, range(5, 10)))],
    protection_last=[(labels_of("A"), every_day(1)), (labels_of("B"), days_at({**{k: 1 for k in range(9)}, 9: 0})),
                     (labels_of("C"), days_at({0: 1, 1: 1})), (labels_of("E"), every_day(1, range(5, 10)))],
    bundle_version=[(labels_of("A"), every_day(42)), (labels_of("B"), every_day(42)),
                    (labels_of("C"), days_at({0: 43, 1: 43})),    # newest, but C is not reporting: ignored
                    (labels_of("E"), every_day(41, range(5, 10)))],
    policy_info=[({"school_id": "A", "version": "2026.1.1"}, days_at({0: 1, 1: 1})),
                 ({"school_id": "A", "version": "2026.1.2"}, days_at({k: 1 for k in range(2, 10)}))],
    blocks=[({"ward": "W1", "band": "thcs", "category": "adult"}, every_day(10.4)),
            ({"ward": "W2", "band": "thpt", "category": "adult"}, days_at({0: 5})),
            ({"ward": "W1", "band": "thcs", "category": "social"}, days_at({0: 3.2, 1: float("nan")}))],
    queries=[({"ward": "W1", "band": "thcs", "action": "allow"}, every_day(100))],
    bypass=[({"ward": "W1", "band": "thcs", "kind": "doh_canary"}, days_at({9: 7}))],
)
