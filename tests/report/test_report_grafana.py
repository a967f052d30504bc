"""The Grafana dashboard: provisionable structure, and every panel's PromQL valid on a real Prometheus."""

from __future__ import annotations

import json

import pytest
from report_promproc import DEPLOY

DASHBOARD = DEPLOY / "grafana" / "school-gateways.json"
# Grafana's own variables, replaced as Grafana would before the query reaches Prometheus
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$ward": ".*"}


def _panels():
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"]


def _expand(expr: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, expr
    return expr


def test_dashboard_structure():
    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dash["uid"] == "school-gateways" and dash["title"]
    assert dash["timezone"] == "Asia/Ho_Chi_Minh"
    names = {v["name"] for v in dash["templating"]["list"]}
    assert {"datasource", "ward"} <= names
    panels = dash["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    kinds = {p["type"] for p in panels}
    assert {"table", "barchart", "stat", "timeseries"} <= kinds
    for panel in panels:
        assert panel["datasource"]["type"] == "prometheus", panel["title"]
        assert panel["targets"], panel["title"]
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"])
        for target in panel["targets"]:
            assert target["expr"].strip() and target["refId"], panel["title"]
    exprs = " ".join(t["expr"] for p in panels for t in p["targets"])
    for needed in ("ward:schoolgw_protection_enabled:ratio", "schoolgw_policy_current", "schoolgw_dns_blocks",
                   "schoolgw_bypass_attempts"):
        assert needed in exprs


@pytest.mark.parametrize("panel", _panels(), ids=lambda p: p["title"][:40])
def test_panel_queries_are_valid(fleet, panel):
    for target in panel["targets"]:
        answer = fleet.prometheus.api("/api/v1/query", query=_expand(target["expr"]))
        assert answer["status"] == "success", (panel["title"], answer)


def test_ward_panels_have_data(fleet):
    # the recording rules the dashboard reads are evaluated on the test Prometheus too
    from report_promproc import wait_for

    wait_for(lambda: fleet.prometheus.query("ward:schoolgw_protection_enabled:ratio"), "recorded ward ratios")
    ratios = {r["metric"]["ward"]: float(r["value"][1])
              for r in fleet.prometheus.query("ward:schoolgw_protection_enabled:ratio")}
    assert ratios == {"Phường Ba Đình": 0.5, "Xã Sóc Sơn": 0.0}
