"""The report's figures from query answers: pure, no Prometheus needed."""

from __future__ import annotations

import datetime as dt

import pytest
from report_sample import GENERATED, INVENTORY, PERIOD, RESULTS, every_day, labels_of

from gateway.report.compute import DAY, PeriodError, QueryResults, build_report, parse_period
from gateway.report.inventory import School


def _report(**kw):
    return build_report(PERIOD, RESULTS, inventory=INVENTORY, generated_at=GENERATED, **kw)


def test_period_is_local_days():
    assert PERIOD.start.isoformat() == "2026-01-01T00:00:00+07:00"
    assert PERIOD.end.isoformat() == "2026-01-11T00:00:00+07:00"  # the end of the --to day
    assert PERIOD.days == 10 and len(PERIOD.day_ends()) == 10
    assert PERIOD.day_ends()[0] - PERIOD.start.timestamp() == DAY
    assert PERIOD.end.astimezone(dt.UTC).isoformat() == "2026-01-10T17:00:00+00:00"
    for bad, key in ((("2026-02-30", "2026-03-01"), "cli.bad_date"), (("2026-03-02", "2026-03-01"), "cli.bad_period"),
                     (("2000-01-01", "2026-01-01"), "cli.long_period")):
        with pytest.raises(PeriodError) as exc:
            parse_period(*bad)
        assert exc.value.key == key


def test_school_states_at_the_end_of_the_period():
    schools = {s.id: s for s in _report().schools}
    a, b, c, d, e = (schools[k] for k in "ABCDE")
    assert a.reporting and a.protected and a.current and a.compliant and a.days_reporting == 10
    assert a.policy_version == "2026.1.2" and a.last_day == dt.date(2026, 1, 10)
    assert b.reporting and not b.protected and b.current and b.days_protected == 9  # off on day 4 and at the end
    assert not c.reporting and not c.protected and c.days_reporting == 2 and c.last_day == dt.date(2026, 1, 2)
    assert not d.reporting and d.days_reporting == 0 and d.last_day is None and d.bundle_version is None
    assert e.reporting and e.protected and not e.current and e.days_reporting == 5


def test_groups_levels_and_targets():
    report = _report()
    t = report.total
    assert (t.registered, t.reporting, t.protected, t.current, t.compliant) == (5, 3, 2, 2, 1)
    assert t.targets == (False, False)
    assert t.day_coverage == pytest.approx((10 + 10 + 2 + 0 + 5) / 50)
    wards = {w.key: w for w in report.wards}
    assert (wards["W1"].registered, wards["W1"].compliant, wards["W1"].targets) == (2, 1, (False, False))
    assert (wards["W2"].registered, wards["W2"].reporting) == (3, 1)
    levels = {lv.key: lv.registered for lv in report.levels}
    assert levels == {"tieu_hoc": 1, "thcs": 2, "thpt": 3}
    assert [lv.key for lv in report.levels] == ["tieu_hoc", "thcs", "thpt"]  # teaching order


def test_fleet_newest_and_minimum_version():
    assert _report().fleet_newest_bundle == 42  # C's 43 does not count: C is silent
    relaxed = {s.id: s for s in _report(min_bundle_version=41).schools}
    assert relaxed["E"].current and relaxed["E"].compliant


def test_target_pass_at_the_boundary():
    inventory = [School(str(i), f"S{i}", "W", ("thcs",), f"h:{i}") for i in range(5)]
    results = QueryResults(
        up=[(labels_of("A", school_id=str(i), ward="W"), every_day(1)) for i in range(3)],
        protection_last=[(labels_of("A", school_id=str(i), ward="W"), every_day(1)) for i in range(3)],
        bundle_version=[(labels_of("A", school_id=str(i), ward="W"), every_day(7)) for i in range(3)])
    report = build_report(PERIOD, results, inventory=inventory, generated_at=GENERATED)
    assert report.total.compliant_share == pytest.approx(0.6)
    assert report.total.targets == (True, False)  # exactly 60% meets the 2027 target


def test_unregistered_boxes_are_listed_not_counted():
    report = _report()
    assert [s.id for s in report.unregistered] == ["X"]
    assert report.total.registered == 5


def test_without_inventory_every_seen_school_counts():
    report = build_report(PERIOD, RESULTS, inventory=None, generated_at=GENERATED)
    assert {s.id for s in report.schools} == {"A", "B", "C", "E", "X"} and report.unregistered == ()


def test_counts_are_summed_over_days():
    report = _report()
    assert report.blocks.get("adult", "thcs") == 104 and report.blocks.get("adult", "thpt") == 5
    assert report.blocks.get("social", "thcs") == 3  # NaN days are skipped
    assert report.blocks.rows() == ["adult", "social"] and report.blocks.total == 112
    assert report.blocks_by_ward == {"W1": 107, "W2": 5}
    assert report.queries_total == 1000 and report.bypass.total == 7


def test_points_outside_the_period_are_ignored():
    outside = QueryResults(up=[(labels_of("A"), [(PERIOD.start.timestamp(), 1), (PERIOD.end.timestamp() + DAY, 1)])])
    report = build_report(PERIOD, outside, inventory=INVENTORY[:1], generated_at=GENERATED)
    assert report.schools[0].days_reporting == 0
