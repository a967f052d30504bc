"""`report` and `department` argument handling and failures, and the fake box matches the catalogue."""

from __future__ import annotations

import argparse

from report_fakebox import FakeBox, documented_metric_names
from report_promproc import free_port

from gateway.report.cli import add_commands, main


def test_add_commands_registers_both_subcommands():
    parser = argparse.ArgumentParser(prog="school-gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    add_commands(sub)
    args = parser.parse_args(["report", "--prometheus", "http://127.0.0.1:9090", "--from", "2026-01-01",
                              "--to", "2026-12-31"])
    assert args.func.__name__ == "cmd_report" and args.lang == "vi" and args.job == "school-gateways"
    args = parser.parse_args(["department", "targets", "schools.csv", "-o", "t.json", "--lang", "en"])
    assert args.func.__name__ == "cmd_targets"
    args = parser.parse_args(["department", "receiver-guard", "--credentials", "c"])
    assert args.listen == "127.0.0.1:9201"


def test_bad_dates(capsys):
    assert main(["report", "--prometheus", "http://127.0.0.1:1", "--from", "2026-13-01", "--to", "2026-12-31"]) == 2
    assert "ngày '2026-13-01' không hợp lệ" in capsys.readouterr().err
    assert main(["report", "--prometheus", "http://127.0.0.1:1", "--from", "2026-12-31", "--to", "2026-01-01",
                 "--lang", "en"]) == 2
    assert "the start 2026-12-31 is after the end 2026-01-01" in capsys.readouterr().err


def test_prometheus_unreachable(capsys):
    url = f"http://user:secret@127.0.0.1:{free_port()}"
    assert main(["report", "--prometheus", url, "--from", "2026-01-01", "--to", "2026-01-31", "--lang", "en"]) == 1
    err = capsys.readouterr().err
    assert "querying Prometheus at 127.0.0.1" in err and "secret" not in err


def test_bad_targets_file(tmp_path, capsys):
    bad = tmp_path / "targets.json"
    bad.write_text('[{"targets": [], "labels": {}}]', encoding="utf-8")
    assert main(["report", "--prometheus", "http://127.0.0.1:1", "--from", "2026-01-01", "--to", "2026-01-02",
                 "--targets", str(bad), "--lang", "en"]) == 2
    assert "no school_id label" in capsys.readouterr().err


def test_fake_box_serves_exactly_the_documented_metrics():
    # the integration tests stand in for the real box; they must not drift from docs/metrics.md
    box = FakeBox(says_school_id="X", ward="W", level="thcs", protection=1, bundle_version=1, policy_version="1",
                  loaded_at=0, expires_at=0)
    # the proxy is optional on a box: its metrics are documented but the report does not rely on them
    documented = {n for n in documented_metric_names() if not n.startswith("schoolgw_proxy_")}
    assert len(documented) >= 20
    assert box.exported_names() == documented


def test_credential_and_receiver_guard_commands(tmp_path, capsys):
    import base64
    import http.client
    import subprocess
    import sys

    from report_promproc import REPO, wait_for

    credentials = tmp_path / "remote-write.credentials"
    assert main(["department", "credential", "01003001", "--credentials", str(credentials), "--lang", "en"]) == 0
    captured = capsys.readouterr()
    password = captured.out.strip()
    assert "shown once" in captured.err and len(password) >= 24 and password not in credentials.read_text()
    port = free_port()
    guard = subprocess.Popen([sys.executable, "-m", "gateway.report.cli", "department", "receiver-guard",
                              "--listen", f"127.0.0.1:{port}", "--upstream", f"http://127.0.0.1:{free_port()}/w",
                              "--credentials", str(credentials), "--lang", "en"],
                             cwd=REPO, stderr=subprocess.PIPE)
    try:
        def status(path: str, method: str = "GET", **headers: str) -> int:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            try:
                conn.request(method, path, body=b"" if method == "POST" else None, headers=headers)
                return conn.getresponse().status
            finally:
                conn.close()

        wait_for(lambda: status("/-/ready") == 200, "receiver-guard /-/ready")
        assert status("/api/v1/write", "POST", **{"Content-Length": "0"}) == 401
        token = base64.b64encode(f"01003001:{password}".encode()).decode()
        # authenticated, but the body is not snappy
        assert status("/api/v1/write", "POST", Authorization=f"Basic {token}", **{"Content-Length": "0"}) == 415
    finally:
        guard.terminate()
        guard.wait(timeout=10)
        guard.stderr.close()
