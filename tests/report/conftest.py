"""Fixtures for the Department-side tests: fake boxes scraped by a real Prometheus on loopback."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report_fakebox import BLOCKS, BYPASS, QUERIES, WARD_1, WARD_2, FakeBox
from report_promproc import DEPLOY, PROMETHEUS, PrometheusProcess, free_port, wait_for


@dataclass
class Fleet:
    prometheus: PrometheusProcess
    boxes: dict[str, FakeBox]
    csv: Path
    targets: Path
    workdir: Path
    notes: dict = field(default_factory=dict)


def _config(targets: Path) -> str:
    return f"""
global:
  scrape_interval: 1s
  scrape_timeout: 900ms
  evaluation_interval: 1s
rule_files:
  - {DEPLOY / 'rules' / 'recording.yml'}
  - {DEPLOY / 'rules' / 'alerts.yml'}
scrape_configs:
  - job_name: school-gateways
    honor_labels: false
    file_sd_configs:
      - files: [{targets}]
    metric_relabel_configs:
      - source_labels: [__name__]
        regex: schoolgw_.*
        action: keep
"""


@pytest.fixture(scope="session")
def fleet(tmp_path_factory) -> Iterator[Fleet]:
    """Boxes A (protected, bundle 42) and B (unprotected, bundle 41) in one ward, C (unreachable) in another."""
    if not PROMETHEUS:
        pytest.skip("needs the prometheus binary (apt-get install -y prometheus)")
    from gateway.report.cli import main

    workdir = tmp_path_factory.mktemp("fleet")
    now = time.time()
    boxes = {
        "A": FakeBox(says_school_id="A", ward=WARD_1, level="thcs", protection=1, bundle_version=42,
                     policy_version="2026.12.1", loaded_at=now - 3600, expires_at=now + 60 * 86400),
        # B's box claims another school's id: the inventory's school_id must still win
        "B": FakeBox(says_school_id="SPOOFED", ward="elsewhere", level="thpt", protection=0, bundle_version=41,
                     policy_version="2026.11.2", loaded_at=now - 40 * 86400, expires_at=now + 3 * 86400),
    }
    for key, box in boxes.items():
        box.declare(BLOCKS[key], QUERIES[key], BYPASS[key])
    addresses = {key: box.start() for key, box in boxes.items()}
    dead = f"127.0.0.1:{free_port()}"  # nothing listens here: C is registered but never reports
    csv = workdir / "schools.csv"
    csv.write_text("\ufeffid,name,ward,level,address\n"
                   f"A,Trường THCS Chu Văn An,{WARD_1},thcs,{addresses['A']}\n"
                   f"B,Trường Tiểu học Nguyễn Trãi,{WARD_1},tieu_hoc,{addresses['B']}\n"
                   f'C,Trường THCS và THPT Sóc Sơn,{WARD_2},"thpt;thcs",{dead}\n', encoding="utf-8")
    targets = workdir / "targets.json"
    assert main(["department", "targets", str(csv), "-o", str(targets), "--lang", "en"]) == 0
    prom = PrometheusProcess(workdir, _config(targets))
    fleet = Fleet(prom, boxes, csv, targets, workdir)
    try:
        # every counter series has at least two samples at zero before anything is counted
        wait_for(lambda: (prom.value('min(count_over_time(schoolgw_dns_blocks_total{job="school-gateways"}[1h]))')
                          or 0) >= 2 and len(prom.query('up{job="school-gateways"}')) == 3,
                 "first scrapes of all boxes", timeout=30)
        for key, box in boxes.items():
            for labels, n in BLOCKS[key].items():
                box.blocks.labels(*labels).inc(n)
            for labels, n in QUERIES[key].items():
                box.queries.labels(*labels).inc(n)
            for labels, n in BYPASS[key].items():
                box.bypass.labels(*labels).inc(n)
        total = sum(sum(v.values()) for v in BLOCKS.values())
        wait_for(lambda: prom.value('sum(schoolgw_dns_blocks_total{job="school-gateways"})') == total,
                 "the increments to be scraped", timeout=30)
        fleet.notes["increment_seen_at"] = time.time()
        # a few samples after the increment bound increase()'s extrapolation (see the integration test)
        wait_for(lambda: (prom.value('min(count_over_time(schoolgw_dns_blocks_total{job="school-gateways"}[1h]))')
                          or 0) >= 12, "twelve samples per counter", timeout=30)
        yield fleet
    finally:
        prom.stop()
        for box in boxes.values():
            box.stop()
