"""End to end for the Department: real gateways on loopback -> real Prometheus -> `school-gateway report`."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from fakeupstream import FakeUpstream
from gatewayproc import DNS_LISTS, GatewayProcess
from report_promproc import PROMETHEUS, PrometheusProcess, wait_for

from gateway.report.cli import main
from gateway.report.compute import TZ

SCHOOL = """\
school: {{id: {id}, name: Trường {id}, ward: {ward}, levels: [thcs]}}
groups:
  hoc_sinh: {{band: thcs, clients: [127.0.0.0/24]}}
serve: [127.0.0.0/24]
"""
TOP = "privacy: {min_group_size: 3, decision_interval: 1}\n"
SENDS = {"A": {"casino.example": 7, "porn.example": 4, "example.com": 5},
         "B": {"casino.example": 2, "example.com": 3}}


@pytest.mark.skipif(PROMETHEUS is None, reason="needs the prometheus binary (apt-get install -y prometheus)")
def test_report_figures_match_queries_sent_through_real_gateways(tmp_path):
    with FakeUpstream({("example.com", "A"): ["192.0.2.1"]}) as up:
        boxes = {}
        try:
            for sid, ward in (("A", "Phường Ba Đình"), ("B", "Xã Sóc Sơn")):
                boxes[sid] = GatewayProcess(tmp_path / sid, [up.spec()], school=SCHOOL.format(id=sid, ward=ward),
                                            lists=DNS_LISTS, top_extra=TOP).start()
            csv = tmp_path / "schools.csv"
            csv.write_text("id,name,ward,level,address\n" + "".join(
                f"{sid},Trường {sid},{'Phường Ba Đình' if sid == 'A' else 'Xã Sóc Sơn'},thcs,"
                f"127.0.0.1:{g.metrics_port}\n" for sid, g in boxes.items()), encoding="utf-8")
            targets = tmp_path / "targets.json"
            assert main(["department", "targets", str(csv), "-o", str(targets)]) == 0
            prom = PrometheusProcess(tmp_path, f"""
global: {{scrape_interval: 1s, scrape_timeout: 900ms}}
scrape_configs:
  - job_name: school-gateways
    honor_labels: false
    file_sd_configs: [{{files: ["{targets}"]}}]
""")
            try:
                # warm up from enough distinct clients that the band is published, and let Prometheus see
                # every series before the counted queries (increase() ignores a series' first sample)
                for g in boxes.values():
                    for i in range(1, 5):
                        for name in ("casino.example", "porn.example", "example.com"):
                            g.ask(name, source=f"127.0.0.{i}")

                def seen_twice():
                    rows = prom.query('count_over_time(schoolgw_dns_blocks_total{band="thcs"}[1h])')
                    return len(rows) >= 3 and min(float(r["value"][1]) for r in rows) >= 2

                wait_for(seen_twice, "the first scrapes of the block counters", timeout=60)
                base = {r["metric"]["school_id"] + r["metric"]["category"]: float(r["value"][1])
                        for r in prom.query("schoolgw_dns_blocks_total")}
                for sid, sends in SENDS.items():
                    for name, n in sends.items():
                        for i in range(n):
                            boxes[sid].ask(name, source=f"127.0.0.{1 + i % 4}")
                expected = {"Agambling": 7, "Aadult": 4, "Bgambling": 2}

                def counted():
                    now = {r["metric"]["school_id"] + r["metric"]["category"]: float(r["value"][1])
                           for r in prom.query("schoolgw_dns_blocks_total")}
                    return all(now.get(k, 0) - base.get(k, 0) >= v for k, v in expected.items())

                wait_for(counted, "the counted queries to be scraped", timeout=60)
                wait_for(lambda: len(prom.query("count_over_time(schoolgw_dns_blocks_total[1h]) > 8")) >= 3,
                         "a few more samples", timeout=30)
                today = dt.datetime.now(TZ).date()
                out = tmp_path / "report.json"
                assert main(["report", "--prometheus", prom.url, "--from", str(today - dt.timedelta(days=1)),
                             "--to", str(today), "--format", "json", "--targets", str(targets),
                             "-o", str(out)]) == 0
                report = json.loads(out.read_text(encoding="utf-8"))
            finally:
                prom.stop()
        finally:
            for g in boxes.values():
                g.stop()
    total = report["total"]
    assert (total["registered"], total["reporting"], total["protected"]) == (2, 2, 2)
    blocks = {row["category"]: row["total"] for row in report["blocks_by_category"]}
    # the counted queries, and nothing invented: increase() may overshoot by its extrapolation only
    assert 9 <= blocks["gambling"] <= 9 * 1.2 + 1
    assert 4 <= blocks["adult"] <= 4 * 1.2 + 1
    assert set(report["blocks_by_ward"]) == {"Phường Ba Đình", "Xã Sóc Sơn"}
