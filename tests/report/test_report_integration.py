"""End to end: fake boxes -> real Prometheus -> `school-gateway report` -> figures, HTML in Chromium."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path

import pytest
from report_fakebox import BLOCKS, BYPASS, QUERIES, WARD_1, WARD_2
from report_promproc import CHROMIUM, REPO

from gateway.report.cli import main
from gateway.report.compute import TZ


def _period() -> tuple[str, str]:
    # yesterday..tomorrow (Vietnam days): the data is "now", wherever the test clock is around midnight
    today = dt.datetime.now(TZ).date()
    return (today - dt.timedelta(days=1)).isoformat(), (today + dt.timedelta(days=1)).isoformat()


def _run_report(fleet, tmp_path: Path, fmt: str, lang: str = "vi", targets: bool = True) -> Path:
    first, last = _period()
    out = tmp_path / f"report-{lang}{'' if targets else '-noinv'}.{fmt}"
    argv = ["report", "--prometheus", fleet.prometheus.url, "--from", first, "--to", last, "--format", fmt,
            "--lang", lang, "-o", str(out)]
    if targets:
        argv += ["--targets", str(fleet.targets)]
    assert main(argv) == 0
    return out


def _close(got: int, expected: int) -> bool:
    # increase() extrapolates past the last sample by half a scrape interval: with n >= 12 samples per
    # series the overshoot is at most 1/(2(n-1)) = 1/22 (plus rounding), and never an undercount
    # since each counter's first sample is 0
    return expected <= got <= expected * (1 + 1 / 22) + 1


@pytest.fixture(scope="module")
def report_json(fleet, tmp_path_factory) -> dict:
    path = _run_report(fleet, tmp_path_factory.mktemp("report"), "json")
    return json.loads(path.read_text(encoding="utf-8"))


def test_schools_reporting_protection_and_policy(report_json):
    total = report_json["total"]
    assert (total["registered"], total["reporting"], total["protected"], total["current_policy"],
            total["compliant"]) == (3, 2, 1, 1, 1)
    assert total["shares"]["protected"] == pytest.approx(1 / 3)
    assert [(t["year"], t["met"]) for t in total["targets"]] == [(2027, False), (2030, False)]
    wards = {w["key"]: w for w in report_json["wards"]}
    assert (wards[WARD_1]["registered"], wards[WARD_1]["reporting"], wards[WARD_1]["protected"]) == (2, 2, 1)
    assert (wards[WARD_2]["registered"], wards[WARD_2]["reporting"]) == (1, 0)
    levels = {lv["key"]: lv["registered"] for lv in report_json["levels"]}
    assert levels == {"tieu_hoc": 1, "thcs": 2, "thpt": 1}  # C teaches thcs and thpt: counted in both
    assert report_json["definitions"]["fleet_newest_bundle"] == 42


def test_schools_are_the_inventory_not_what_boxes_claim(report_json):
    schools = {s["school_id"]: s for s in report_json["schools"]}
    assert set(schools) == {"A", "B", "C"}
    assert report_json["unregistered"] == []  # B's box says "SPOOFED": honor_labels false keeps it "B"
    assert schools["A"]["protected"] and schools["A"]["current_policy"] and schools["A"]["bundle_version"] == 42
    assert schools["B"]["policy_version"] == "2026.11.2" and not schools["B"]["protected"]
    assert schools["B"]["ward"] == WARD_1
    assert not schools["C"]["reporting"] and schools["C"]["days_reporting"] == 0
    assert schools["A"]["days_reporting"] >= 1


def test_blocks_queries_and_bypass_match_what_boxes_counted(report_json):
    expected: dict[str, int] = {}
    for per_box in BLOCKS.values():
        for (_, category), n in per_box.items():
            expected[category] = expected.get(category, 0) + n
    got = {row["category"]: row["total"] for row in report_json["blocks_by_category"]}
    assert set(got) == set(expected)
    for category, n in expected.items():
        assert _close(got[category], n), (category, got[category], n)
    adult = next(r for r in report_json["blocks_by_category"] if r["category"] == "adult")
    assert set(adult["by_band"]) == {"thcs", "tieu_hoc"}
    assert _close(report_json["queries_total"], sum(sum(v.values()) for v in QUERIES.values()))
    kinds = {row["kind"]: row["total"] for row in report_json["bypass_by_kind"]}
    assert _close(kinds["doh_canary"], BYPASS["A"][("thcs", "doh_canary")])
    assert _close(kinds["resolver_discovery"], BYPASS["B"][("tieu_hoc", "resolver_discovery")])
    assert set(report_json["blocks_by_ward"]) == {WARD_1}


def test_without_inventory_schools_come_from_prometheus(fleet, tmp_path):
    data = json.loads(_run_report(fleet, tmp_path, "json", targets=False).read_text(encoding="utf-8"))
    # C never answered, but its target labels are on its up == 0 series
    assert {s["school_id"] for s in data["schools"]} == {"A", "B", "C"}
    assert data["total"]["reporting"] == 2 and not data["inventory_used"]


def test_csv_has_bom_and_vietnamese(fleet, tmp_path):
    raw = _run_report(fleet, tmp_path, "csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    text = raw.decode("utf-8-sig")
    assert "Báo cáo tuân thủ lọc nội dung" in text and WARD_1 in text and "\r\n" in text


def _chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", *args], capture_output=True, timeout=90, check=False)


@pytest.mark.skipif(not CHROMIUM, reason="needs chromium (apt-get install -y chromium)")
@pytest.mark.parametrize("lang", ["vi", "en"])
def test_html_report_in_headless_chromium(fleet, tmp_path, lang):
    html = _run_report(fleet, tmp_path, "html", lang)
    artifacts = REPO / "artifacts"
    artifacts.mkdir(exist_ok=True)
    shot = artifacts / f"report-{lang}.png"
    shot.unlink(missing_ok=True)
    done = _chromium(f"--screenshot={shot}", "--window-size=1280,2000", html.as_uri(), profile=tmp_path / "p1")
    assert shot.exists() and shot.stat().st_size > 10_000, done.stderr.decode(errors="replace")[-2000:]
    dom = _chromium("--dump-dom", html.as_uri(), profile=tmp_path / "p2").stdout.decode("utf-8")
    assert 'id="ward-table"' in dom and 'id="chart-ward"' in dom and "<svg" in dom
    assert 'id="blocks-table"' in dom and 'id="chart-blocks"' in dom and 'id="school-table"' in dom
    title = "Báo cáo tuân thủ lọc nội dung" if lang == "vi" else "Content-filtering compliance report"
    assert title in dom and WARD_1 in dom
    assert ("Số liệu đã ẩn danh hoá" if lang == "vi" else "anonymised") in dom
    assert "http://" not in html.read_text(encoding="utf-8").replace(fleet.prometheus.url, "").replace(
        "http://www.w3.org/2000/svg", "")  # no external resources
