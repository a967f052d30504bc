"""Rendering: HTML sections and escaping, CSV for Excel, JSON, both languages."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json

from report_sample import GENERATED, INVENTORY, PERIOD, RESULTS

from gateway.report.compute import build_report
from gateway.report.inventory import School
from gateway.report.render import render


def _report(inventory=INVENTORY):
    return build_report(PERIOD, RESULTS, inventory=inventory, generated_at=GENERATED, source="http://127.0.0.1:9090")


def test_html_sections_in_order_and_self_contained():
    html = render(_report(), "html", "vi")
    order = ["cover", "by-ward", "by-level", "plan", "blocks", "bypass", "schools", "anonymity"]
    positions = [html.index(f'id="{section}"') for section in order]
    assert positions == sorted(positions)
    for text in ("Báo cáo tuân thủ lọc nội dung", "Kỳ báo cáo", "01/01/2026 – 10/01/2026 (10 ngày)",
                 "11/01/2026 08:00 (Giờ Việt Nam (UTC+7))", "Trường / Mã trường", "Số lượt chặn theo danh mục",
                 "Tổng số truy vấn", "Tỷ lệ chặn", "Số liệu đã ẩn danh hoá theo Luật Bảo vệ dữ liệu cá nhân 2025",
                 "Mục tiêu 2027 (≥60%)", "Mục tiêu 2030 (≥100%)", "Chưa đạt", "Khiêu dâm", "1.000", "40,0%",
                 "@media print", "<svg"):
        assert text in html, text
    assert "<script" not in html and "<link" not in html and "src=" not in html


def test_html_escapes_inventory_text():
    evil = [School("A", "<script>alert(1)</script>", "W1 & <b>", ("thcs",), "a:1")]
    html = render(_report(evil), "html", "en")
    assert "<script>alert" not in html and "&lt;script&gt;" in html and "W1 &amp; &lt;b&gt;" in html


def test_english():
    html = render(_report(), "html", "en")
    assert "Content-filtering compliance report" in html and "2026-01-01 – 2026-01-10 (10 days)" in html
    assert "Adult content" in html and "Target 2027 (≥60%)" in html and "1,000" in html


def test_csv_for_excel():
    text = render(_report(), "csv", "vi")
    assert text.startswith("\ufeff") and "\r\n" in text
    rows = list(csv.reader(io.StringIO(text[1:])))
    assert rows[0] == ["Báo cáo tuân thủ lọc nội dung"]
    header = next(i for i, r in enumerate(rows) if r and r[0] == "Phường/xã")
    assert rows[header + 1][:6] == ["W1", "2", "2", "1", "2", "1"]
    assert ["Khiêu dâm", "adult", "104", "5", "109"] in rows  # bands ordered by their totals: thcs, thpt
    assert any(r[:2] == ["Trường A", "A"] for r in rows)


def test_json_is_plain_data():
    data = json.loads(render(_report(), "json", "en"))
    assert data["period"] == {"from": "2026-01-01", "to": "2026-01-10", "days": 10, "timezone": "Asia/Ho_Chi_Minh",
                              "start": "2026-01-01T00:00:00+07:00", "end": "2026-01-11T00:00:00+07:00"}
    assert data["total"]["registered"] == 5 and data["total"]["targets"][0] == {"year": 2027, "share": 0.6,
                                                                                 "met": False}
    assert data["blocks_by_category"][0] == {"category": "adult", "total": 109, "by_band": {"thcs": 104, "thpt": 5}}
    assert data["names"]["categories"]["adult"] == "Adult content"
    assert dt.datetime.fromisoformat(data["generated_at"]).utcoffset() == dt.timedelta(hours=7)


def test_empty_report_renders():
    from gateway.report.compute import QueryResults

    report = build_report(PERIOD, QueryResults(), inventory=[], generated_at=GENERATED)
    for fmt in ("html", "csv", "json"):
        assert render(report, fmt, "vi")
    assert "Không có số liệu trong kỳ báo cáo." in render(report, "html", "vi")
