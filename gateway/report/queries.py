"""The PromQL the report runs, and fetching its answers over the period's local-day grid."""

from __future__ import annotations

import json

from gateway.report.compute import DAY, Period, QueryResults
from gateway.report.prometheus import PrometheusClient

DEFAULT_JOB = "school-gateways"
SCHOOL = "school_id, school_name, ward, level"


def report_queries(job: str = DEFAULT_JOB) -> dict[str, str]:
    """QueryResults field -> PromQL; each is evaluated at every local day's end over that day ([1d])."""
    sel = "{job=" + json.dumps(job) + "}"
    return {
        "up": f"max by ({SCHOOL}) (max_over_time(up{sel}[1d]))",
        "school_info": f"max by ({SCHOOL}) (max_over_time(schoolgw_school_info{sel}[1d]))",
        "protection_min": f"min by ({SCHOOL}) (min_over_time(schoolgw_protection_enabled{sel}[1d]))",
        "protection_last": f"min by ({SCHOOL}) (last_over_time(schoolgw_protection_enabled{sel}[1d]))",
        "bundle_version": f"max by ({SCHOOL}) (last_over_time(schoolgw_bundle_version{sel}[1d]))",
        "policy_info": f"max by (school_id, version) (last_over_time(schoolgw_policy_info{sel}[1d]))",
        "policy_loaded": f"max by (school_id) (last_over_time(schoolgw_policy_loaded_timestamp_seconds{sel}[1d]))",
        "bundle_expiry": f"min by (school_id) (last_over_time(schoolgw_bundle_expiry_timestamp_seconds{sel}[1d]))",
        "blocks": f"sum by (ward, level, band, category) (increase(schoolgw_dns_blocks_total{sel}[1d]))",
        "queries": f"sum by (ward, level, band, action) (increase(schoolgw_dns_queries_total{sel}[1d]))",
        "bypass": f"sum by (ward, level, band, kind) (increase(schoolgw_bypass_attempts_total{sel}[1d]))",
    }


def fetch(client: PrometheusClient, period: Period, job: str = DEFAULT_JOB) -> QueryResults:
    """Run every report query as one query_range over the period, one point per local day."""
    ends = period.day_ends()
    answers = {name: client.query_range(expr, ends[0], ends[-1], DAY)
               for name, expr in report_queries(job).items()}
    return QueryResults(**answers)
