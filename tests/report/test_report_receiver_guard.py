"""The remote-write guard in front of a real Prometheus receiver: own school accepted, others refused."""

from __future__ import annotations

import base64
import http.client
import threading
import time

import pytest
import yaml
from report_fakebox import FakeBox
from report_promproc import DEPLOY, PrometheusProcess, wait_for

from gateway.report.inventory import School
from gateway.report.receiver_guard import Guard, hash_password, serve

pytest.importorskip("cramjam", reason="the guard needs cramjam (snappy) — pip install cramjam")

from gateway.report.remote_write import (
    CONTENT_ENCODING,
    CONTENT_TYPE,
    PROTOCOL_VERSION,
    Sample,
    TimeSeries,
    WriteRequest,
    compress,
    encode_write_request,
)

JOB = "remote-write-test"  # not the boxes' job, so the report tests never see these series
INVENTORY = [School("RW1", "Trường Tiểu học Vân Nội", "Xã Đông Anh", ("tieu_hoc",), None),
             School("RW2", "Trường THCS Kim Chung", "Xã Đông Anh", ("thcs",), None)]
PASSWORDS = {"RW1": "mật-khẩu-rw1", "RW2": "secret-rw2"}


@pytest.fixture(scope="module")
def guard(fleet):
    credentials = {k: hash_password(v, iterations=1000) for k, v in PASSWORDS.items()}
    server = serve(("127.0.0.1", 0), Guard(credentials, INVENTORY), fleet.prometheus.url + "/api/v1/write")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    wait_for(lambda: _get(server.server_address[1], "/-/ready") == 200, "guard /-/ready")
    yield server
    server.shutdown()
    server.server_close()


def _get(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


def _series(school_id: str, metric: str, value: float, **labels: str) -> TimeSeries:
    pairs = {"__name__": metric, "job": JOB, "instance": school_id, "school_id": school_id, **labels}
    return TimeSeries(tuple(sorted(pairs.items())), (Sample(value, int(time.time() * 1000)),))


def _post(server, body: bytes, user: str | None, password: str | None = None,
          encoding: str = CONTENT_ENCODING) -> tuple[int, str]:
    headers = {"Content-Type": CONTENT_TYPE, "Content-Encoding": encoding,
               "X-Prometheus-Remote-Write-Version": PROTOCOL_VERSION}
    if user is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
    try:
        conn.request("POST", "/api/v1/write", body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def _body(*series: TimeSeries) -> bytes:
    return compress(encode_write_request(WriteRequest(series)))


def test_own_school_is_accepted_and_queryable(fleet, guard):
    status, text = _post(guard, _body(_series("RW1", "schoolgw_protection_enabled", 1, ward="Xã Đông Anh"),
                                      _series("RW1", "schoolgw_bundle_version", 42)), "RW1", PASSWORDS["RW1"])
    assert status == 204, text
    found = wait_for(lambda: fleet.prometheus.query(f'schoolgw_protection_enabled{{job="{JOB}", school_id="RW1"}}'),
                     "the remote-written series in Prometheus")
    assert found[0]["metric"]["ward"] == "Xã Đông Anh" and found[0]["value"][1] == "1"


def test_other_schools_series_are_refused_whole(fleet, guard):
    mixed = _body(_series("RW1", "schoolgw_dns_cache_entries", 5), _series("RW2", "schoolgw_dns_cache_entries", 7))
    status, text = _post(guard, mixed, "RW1", PASSWORDS["RW1"])
    assert status == 403 and "RW2" in text
    status, _ = _post(guard, _body(_series("RW2", "schoolgw_dns_cache_entries", 7)), "RW1", PASSWORDS["RW1"])
    assert status == 403
    # nothing of a refused request reaches Prometheus, not even the sender's own series in it
    assert fleet.prometheus.query(f'schoolgw_dns_cache_entries{{job="{JOB}"}}') == []


def test_labels_must_agree_with_the_inventory(guard):
    status, text = _post(guard, _body(_series("RW1", "schoolgw_protection_enabled", 1, ward="Phường Ba Đình")),
                         "RW1", PASSWORDS["RW1"])
    assert status == 403 and "ward" in text
    status, _ = _post(guard, _body(TimeSeries((("__name__", "up"), ("job", JOB)), (Sample(1, 0),))),
                      "RW1", PASSWORDS["RW1"])
    assert status == 403  # a series without school_id is nobody's


@pytest.mark.parametrize(("user", "password"), [("RW1", "wrong"), ("nobody", "x"), (None, None), ("RW1", "")])
def test_bad_credentials_are_refused(guard, user, password):
    status, _ = _post(guard, _body(_series("RW1", "schoolgw_protection_enabled", 1)), user, password)
    assert status == 401


def test_garbage_and_wrong_encoding(guard):
    assert _post(guard, b"\xff\xff\xff\xff\x0f not snappy", "RW1", PASSWORDS["RW1"])[0] == 400
    assert _post(guard, encode_write_request(WriteRequest()), "RW1", PASSWORDS["RW1"], encoding="gzip")[0] == 415
    assert _get(guard.server_address[1], "/api/v1/query") == 404


def test_agent_mode_box_behind_nat_writes_through_the_guard(fleet, guard, tmp_path):
    """The shipped agent config, pointed at loopback: box -> agent -> guard -> Department Prometheus."""
    box = FakeBox(says_school_id="RW1", ward="Xã Đông Anh", level="tieu_hoc", protection=1, bundle_version=42,
                  policy_version="2026.12.1", loaded_at=time.time(), expires_at=time.time() + 86400)
    address = box.start()
    config = yaml.safe_load((DEPLOY / "agent" / "prometheus-agent.yml").read_text(encoding="utf-8"))
    config["global"].update(scrape_interval="1s", scrape_timeout="900ms")
    job = config["scrape_configs"][0]
    job["job_name"] = JOB
    job["static_configs"] = [{"targets": [address], "labels": {
        "school_id": "RW1", "school_name": "Trường Tiểu học Vân Nội", "ward": "Xã Đông Anh", "level": "tieu_hoc"}}]
    (tmp_path / "password").write_text(PASSWORDS["RW1"], encoding="utf-8")
    writer = config["remote_write"][0]
    writer["url"] = f"http://127.0.0.1:{guard.server_address[1]}/api/v1/write"
    writer["basic_auth"] = {"username": "RW1", "password_file": str(tmp_path / "password")}
    writer.pop("tls_config")
    writer["queue_config"].update(batch_send_deadline="1s", min_backoff="100ms", max_backoff="1s")
    agent = PrometheusProcess(tmp_path, yaml.safe_dump(config, allow_unicode=True), agent=True)
    try:
        found = wait_for(lambda: fleet.prometheus.query(
            f'schoolgw_bundle_version{{job="{JOB}", school_id="RW1", instance="RW1"}}'),
            "the agent's samples at the Department", timeout=45)
        assert found[0]["value"][1] == "42"
        info = wait_for(lambda: fleet.prometheus.query(f'schoolgw_school_info{{job="{JOB}", school_id="RW1"}}'),
                        "school_info")
        assert info[0]["metric"]["exported_ward"] == "Xã Đông Anh"  # the box's own label, kept aside
        assert fleet.prometheus.query(f'up{{job="{JOB}", school_id="RW1"}}')
    finally:
        agent.stop()
        box.stop()
