"""/metrics of a real gateway: anonymous, small bands merged, access controlled, workers summed."""

from __future__ import annotations

import base64
import http.client
import re
import time

import pytest
from fakeupstream import FakeUpstream
from gatewayproc import DNS_LISTS, GatewayProcess

from gateway.metrics import SUPPRESSED, publish_map

SCHOOL = """\
school: {id: HN-MET-1, name: Metrics school, ward: Phường Thử, levels: [thcs, thpt]}
groups:
  thcs: {band: thcs, clients: [127.0.1.0/24]}
  tieu_hoc: {band: tieu_hoc, clients: [127.0.2.0/24]}
  staff: {band: staff, clients: [127.0.3.0/24]}
  mam_non: {band: mam_non, clients: [127.0.4.0/24]}
  local: {band: thpt, clients: [127.0.0.1]}
serve: [127.0.0.0/16]
"""

NAMES = ["example.com", "casino.example", "facebook.com", "www.google.com", "use-application-dns.net"]
RECORDS = {("example.com", "A"): ["192.0.2.1"], ("facebook.com", "A"): ["192.0.2.2"],
           ("forcesafesearch.google.com", "A"): ["216.239.38.120"]}


def test_publish_map_merges_smallest_first():
    counts = {"mam_non": 0, "tieu_hoc": 12, "thcs": 30, "thpt": 4, "staff": 3}
    m = publish_map(counts, 10)
    assert m["thcs"] == "thcs"
    # staff (3) + thpt (4) = 7 < 10, so tieu_hoc (next smallest) joins them
    assert m["staff"] == m["thpt"] == m["tieu_hoc"] == SUPPRESSED
    assert m["mam_non"] is None
    assert publish_map({"a": 3, "b": 2}, 10) == {"a": None, "b": None}  # never big enough: withheld
    assert publish_map({"a": 12, "b": 0}, 10) == {"a": "a", "b": None}  # an unseen band drags no one in
    assert publish_map({"a": 10, "b": 11}, 10) == {"a": "a", "b": "b"}


def _series(text: str, name: str) -> dict[tuple, float]:
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            labels = tuple(sorted(re.findall(r'(\w+)="([^"]*)"', line)))
            out[labels] = float(line.rsplit(" ", 1)[1])
    return out


def _wait_for(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)  # polling a scrape for the next flush, not waiting for readiness
    raise AssertionError("condition not met in time")


@pytest.fixture(scope="module")
def upstream():
    with FakeUpstream(dict(RECORDS)) as fake:
        yield fake


def test_metrics_are_anonymous_and_small_bands_suppressed(tmp_path, upstream):
    top = "privacy: {min_group_size: 10, decision_interval: 1}\n"
    with GatewayProcess(tmp_path, [upstream.spec()], school=SCHOOL, lists=DNS_LISTS, top_extra=top) as g:
        senders = ([f"127.0.1.{i}" for i in range(1, 13)] + [f"127.0.2.{i}" for i in range(1, 16)]
                   + ["127.0.3.1", "127.0.3.2", "127.0.4.1"])
        # the first decision (at start) saw nobody; wait for one that sees these clients
        for src in senders:
            g.ask("example.com", source=src)

        def decided():
            text = g.scrape()
            return text if 'band="suppressed"' in text or 'band="tieu_hoc"' in text else None

        _wait_for(decided)
        sent = 0
        for src in senders:
            for name in NAMES:
                g.ask(name, source=src)
                sent += 1

        def flushed():
            text = g.scrape()
            total = sum(_series(text, "schoolgw_dns_queries_total").values())
            return text if total >= sent else None

        text = _wait_for(flushed)
    # no client address, no queried name anywhere in what leaves the box
    for src in senders:
        assert src not in text
    for name in NAMES:
        assert name not in text and name.split(".")[0] + "." not in text.replace("schoolgw_", "")
    bands = {dict(k).get("band") for k in _series(text, "schoolgw_dns_queries_total")}
    # staff (2 clients) and mam_non (1) are merged with the next smallest (thcs, 12) under "suppressed"
    assert bands == {"tieu_hoc", SUPPRESSED}
    assert "staff" not in bands and "mam_non" not in bands and "thcs" not in bands
    blocks = _series(text, "schoolgw_dns_blocks_total")
    assert {dict(k)["band"] for k in blocks} <= {"tieu_hoc", SUPPRESSED}
    assert any(dict(k)["category"] == "gambling" for k in blocks)
    bypass = _series(text, "schoolgw_bypass_attempts_total")
    assert any(dict(k)["kind"] == "doh_canary" for k in bypass)
    assert _series(text, "schoolgw_school_info") == {(("level", "thcs;thpt"), ("school_id", "HN-MET-1"),
                                                     ("ward", "Phường Thử")): 1.0}
    assert _series(text, "schoolgw_protection_enabled") == {(): 1.0}


def _get(port, path="/metrics", source="127.0.0.1", headers=None, tls_context=None):
    if tls_context is not None:
        conn = http.client.HTTPSConnection("127.0.0.1", port, source_address=(source, 0), context=tls_context,
                                           timeout=5)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, source_address=(source, 0), timeout=5)
    conn.request("GET", path, headers=headers or {})
    r = conn.getresponse()
    r.read()
    conn.close()
    return r.status


def test_metrics_allowlist_and_basic_auth(tmp_path, upstream):
    (tmp_path / "pw").write_text("s3cret\n")
    with GatewayProcess(tmp_path, [upstream.spec()]) as probe:
        port = probe.metrics_port
    top = (f"metrics:\n  listen: \"127.0.0.1:{port}\"\n  allow: [127.0.0.7/32]\n"
           f"  basic_auth: {{username: so, password_file: {tmp_path / 'pw'}}}\n")
    g = GatewayProcess(tmp_path, [upstream.spec()], top_extra=top)
    g.config.write_text(re.sub(r"metrics:\n  listen: \"127.0.0.1:\d+\"\n", "", g.config.read_text(), count=1))
    g.metrics_port = port
    with g:
        assert _get(port, source="127.0.0.1") == 403  # not the Department's scraper
        assert _get(port, source="127.0.0.7") == 401  # right address, no password
        good = {"Authorization": "Basic " + base64.b64encode(b"so:s3cret").decode()}
        bad = {"Authorization": "Basic " + base64.b64encode(b"so:wrong").decode()}
        assert _get(port, source="127.0.0.7", headers=bad) == 401
        assert _get(port, source="127.0.0.7", headers=good) == 200


def test_workers_add_up_on_one_endpoint(tmp_path, upstream):
    top = "privacy: {min_group_size: 1, decision_interval: 1}\n"
    with GatewayProcess(tmp_path, [upstream.spec()], workers=2, top_extra=top) as g:
        for _ in range(10):
            g.ask("example.com")

        def decided():
            return 'band="thcs"' in g.scrape()

        _wait_for(decided)
        before = sum(v for k, v in _series(g.scrape(), "schoolgw_dns_queries_total").items()
                     if dict(k).get("band") == "thcs")
        for _ in range(60):
            g.ask("example.com")

        def counted():
            now = sum(v for k, v in _series(g.scrape(), "schoolgw_dns_queries_total").items()
                      if dict(k).get("band") == "thcs")
            return now - before >= 60

        _wait_for(counted)


def test_response_times_reach_the_histogram_in_bulk_as_if_observed_one_by_one():
    from types import SimpleNamespace

    from prometheus_client import CollectorRegistry, Histogram

    from gateway.metrics import RESPONSE_BUCKETS, Metrics, add_to_histogram

    samples = [0.0001, 0.0005, 0.0007, 0.003, 0.003, 0.2, 2.5, 7.0]
    one_by_one = Histogram("t", "t", ["p"], buckets=RESPONSE_BUCKETS, registry=CollectorRegistry())
    for s in samples:
        one_by_one.labels("udp").observe(s)
    m = Metrics(min_group_size=1)
    for s in samples:
        m.observe(SimpleNamespace(decision=None, group=None, proto="udp", client=None,
                                  query=SimpleNamespace(qname="x.test")), s)
    bulk = Histogram("t", "t", ["p"], buckets=RESPONSE_BUCKETS, registry=CollectorRegistry())
    add_to_histogram(bulk.labels("udp"), m.latencies["udp"])
    want = {s.name + str(s.labels): s.value for s in one_by_one.collect()[0].samples if "created" not in s.name}
    got = {s.name + str(s.labels): s.value for s in bulk.collect()[0].samples if "created" not in s.name}
    assert got == pytest.approx(want)


def test_distinct_clients_count_a_returning_client_again_on_a_new_day():
    from gateway.metrics import DistinctClients

    now = [86400.0 * 100 + 10]
    clients = DistinctClients(clock=lambda: now[0], key=b"k" * 16)
    for _ in range(3):
        clients.see("thcs", "10.0.0.1")
    clients.see("thcs", "10.0.0.2")
    clients.see("staff", "10.0.0.1")
    assert {d: {b: len(s) for b, s in bands.items()} for d, bands in clients.days.items()} == {
        100: {"thcs": 2, "staff": 1}}
    now[0] += 86400
    clients.see("thcs", "10.0.0.1")  # seen yesterday: counted again for today
    assert len(clients.days[101]["thcs"]) == 1
    assert len(clients.week()["thcs"]) == 2
