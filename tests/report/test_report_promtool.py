"""promtool: every shipped Prometheus config is valid, and the rule unit tests pass."""

from __future__ import annotations

import subprocess

import pytest
from report_promproc import DEPLOY, PROMTOOL

pytestmark = pytest.mark.skipif(not PROMTOOL, reason="needs promtool (apt-get install -y prometheus)")


def _promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], cwd=DEPLOY, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("config", ["prometheus.yml", "long-term/remote-write.yml", "long-term/federation.yml"])
def test_check_config(config):
    done = _promtool("check", "config", config)
    assert done.returncode == 0, done.stdout + done.stderr


def test_check_agent_config():
    done = _promtool("check", "config", "--agent", "agent/prometheus-agent.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_check_rules():
    done = _promtool("check", "rules", "rules/recording.yml", "rules/alerts.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_rule_unit_tests():
    tests = sorted(str(p.relative_to(DEPLOY)) for p in (DEPLOY / "tests").glob("*.yml"))
    assert len(tests) >= 3
    done = _promtool("test", "rules", *tests)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("SUCCESS") == len(tests)
