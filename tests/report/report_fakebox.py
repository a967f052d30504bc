"""Test helper: a fake school box exporting the metric catalogue of docs/metrics.md with known values."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

WARD_1 = "Phường Ba Đình"
WARD_2 = "Xã Sóc Sơn"

# Counter increases each box makes once Prometheus has seen them at zero.
BLOCKS = {
    "A": {("thcs", "adult"): 120, ("thcs", "social"): 45},
    "B": {("tieu_hoc", "adult"): 30, ("tieu_hoc", "gambling"): 15},
}
QUERIES = {
    "A": {("thcs", "allow", "udp"): 1000, ("thcs", "block", "udp"): 165},
    "B": {("tieu_hoc", "allow", "udp"): 500, ("tieu_hoc", "block", "udp"): 45},
}
BYPASS = {"A": {("thcs", "doh_canary"): 12}, "B": {("tieu_hoc", "resolver_discovery"): 8}}

METRICS_DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


def documented_metric_names() -> set[str]:
    """Every `schoolgw_...` name in the first column of the table in docs/metrics.md."""
    return set(re.findall(r"^\| `(schoolgw_[a-z_]+)` \|", METRICS_DOC.read_text(encoding="utf-8"), re.M))


class FakeBox:
    """One school's box: a registry on its own loopback port, counters starting at zero."""

    def __init__(self, *, says_school_id: str, ward: str, level: str, protection: int, bundle_version: int,
                 policy_version: str, loaded_at: float, expires_at: float):
        r = self.registry = CollectorRegistry()
        g = lambda name, doc, labels=(): Gauge(name, doc, labels, registry=r)  # noqa: E731
        c = lambda name, doc, labels=(): Counter(name, doc, labels, registry=r)  # noqa: E731
        g("schoolgw_build_info", "version", ["version"]).labels("0.1.0").set(1)
        # what the box says it is; the Department's inventory labels must win over this
        g("schoolgw_school_info", "school", ["school_id", "ward", "level"]).labels(says_school_id, ward, level).set(1)
        g("schoolgw_protection_enabled", "protection").set(protection)
        g("schoolgw_policy_info", "policy", ["version", "fingerprint"]).labels(policy_version, "ab12cd").set(1)
        g("schoolgw_policy_loaded_timestamp_seconds", "loaded").set(loaded_at)
        g("schoolgw_policy_warnings", "warnings").set(0)
        c("schoolgw_policy_reloads", "reloads", ["outcome"]).labels("ok")
        g("schoolgw_bundle_version", "bundle").set(bundle_version)
        g("schoolgw_bundle_expiry_timestamp_seconds", "expiry").set(expires_at)
        c("schoolgw_update_failures", "failures", ["reason"]).labels("fetch")
        g("schoolgw_update_last_success_timestamp_seconds", "update").set(loaded_at)
        g("schoolgw_clock_synchronised", "clock").set(1)
        self.queries = c("schoolgw_dns_queries", "queries", ["band", "action", "protocol"])
        self.blocks = c("schoolgw_dns_blocks", "blocks", ["band", "category"])
        c("schoolgw_safe_search_rewrites", "rewrites", ["band", "engine"]).labels("thcs", "google")
        self.bypass = c("schoolgw_bypass_attempts", "bypass", ["band", "kind"])
        Histogram("schoolgw_dns_response_seconds", "latency", ["protocol"], registry=r).labels("udp").observe(0.002)
        g("schoolgw_dns_cache_entries", "cache").set(10)
        c("schoolgw_dns_cache_lookups", "lookups", ["result"]).labels("hit")
        g("schoolgw_upstream_up", "upstream", ["upstream"]).labels("127.0.0.53:53").set(1)
        g("schoolgw_upstream_latency_seconds", "latency", ["upstream"]).labels("127.0.0.53:53").set(0.01)
        c("schoolgw_dns_rate_limited", "rate limited")
        g("schoolgw_dns_single_source", "single source").set(0)
        self.server = None

    def declare(self, blocks=(), queries=(), bypass=()) -> None:
        """Create counter children at 0, so Prometheus' first sample of each is 0."""
        for labels in blocks:
            self.blocks.labels(*labels)
        for labels in queries:
            self.queries.labels(*labels)
        for labels in bypass:
            self.bypass.labels(*labels)

    def exported_names(self) -> set[str]:
        names = set()
        for family in self.registry.collect():
            names.add(family.name + ("_total" if family.type == "counter" else ""))
        return names

    def start(self) -> str:
        self.server, self.thread = start_http_server(0, addr="127.0.0.1", registry=self.registry)
        return f"127.0.0.1:{self.server.server_port}"

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
