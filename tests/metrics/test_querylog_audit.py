"""Local query log (SQLite, privacy levels, retention) and the audit trail of policy changes."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time

import pytest
from fakeupstream import FakeUpstream
from gatewayproc import GatewayProcess
from policyfactory import build

from gateway.audit import AuditTrail
from gateway.querylog import QueryLog


class Clock:
    now = 1_800_000_000.0

    def __call__(self):
        return self.now


@pytest.mark.parametrize(("level", "client", "name"), [("full", "10.0.0.5", "example.com"),
                                                       ("hide_names", "10.0.0.5", None),
                                                       ("hide_clients", None, "example.com")])
def test_query_log_levels(tmp_path, level, client, name):
    log = QueryLog(tmp_path / "q.sqlite", level, 7, Clock())
    log.add("10.0.0.5", "example.com", 1, "thcs", "allow", "default", None)
    assert log.flush() == 1
    rows = log.search()
    assert rows == [(1_800_000_000, client, name, 1, "thcs", "allow", "default", None)]


def test_query_log_counts_only_and_retention(tmp_path):
    clock = Clock()
    log = QueryLog(tmp_path / "q.sqlite", "counts", 2, clock)
    for _ in range(3):
        log.add("10.0.0.5", "casino.example", 1, "thcs", "block", "category", "gambling")
    log.flush()
    assert log.search() == []  # no rows at all at this level
    assert [r[1:] for r in log.counts()] == [("thcs", "block", "gambling", 3)]
    clock.now += 3 * 86400
    log.flush()
    assert log.counts() == []  # past retention: deleted


def test_audit_trail_records_changes(tmp_path):
    trail = AuditTrail(tmp_path / "audit.jsonl")
    snap = build(tmp_path / "a")
    first = trail.record(snap)
    assert first["changes"] == ["first policy recorded"]
    assert trail.record(snap) is None  # same fingerprint: nothing new
    thcs = snap.bands["thcs"]
    stricter = dataclasses.replace(thcs, blocked={**thcs.blocked, "social": "test"})
    changed = dataclasses.replace(snap, bands={**snap.bands, "thcs": stricter}, fingerprint="f" * 64)
    entry = trail.record(changed)
    assert "band thcs: blocked + social" in entry["changes"]
    assert [r["fingerprint"] for r in trail.records()] == [snap.fingerprint, "f" * 64]
    (tmp_path / "audit.jsonl").open("a").write('{"torn')  # a power cut mid-write
    assert len(trail.records()) == 2


def test_gateway_writes_query_log_and_audit(tmp_path):
    top = ("log:\n  query_log: {enabled: true, privacy: hide_clients, retention_days: 3}\n"
           f"state_dir: {tmp_path / 'state'}\n")
    with FakeUpstream({("example.com", "A"): ["192.0.2.1"]}) as up, \
            GatewayProcess(tmp_path, [up.spec()], top_extra=top) as g:
        g.ask("example.com")
        g.ask("casino.example")
        school = g.paths.school
        school.write_text(school.read_text().replace("deny: [denied.test]", "deny: [denied.test, more.test]"))
        g.reload()
        deadline = time.monotonic() + 30
        while not any("audit trail" in line and "more.test" in line for line in g.lines):
            assert time.monotonic() < deadline, "".join(g.lines)
            g.ask("example.com")
            time.sleep(0.05)  # bounds the polling of the log for the reload; not a readiness wait
    cli = [sys.executable, "-m", "gateway.cli"]
    out = subprocess.run([*cli, "log", "--config", str(g.config), "--action", "block"], capture_output=True,
                         text=True, check=True).stdout
    assert "casino.example" in out and "127.0.0.1" not in out
    audit = subprocess.run([*cli, "audit", "--config", str(g.config)], capture_output=True, text=True,
                           check=True).stdout
    assert "first policy recorded" in audit and "group thcs: deny + more.test" in audit
