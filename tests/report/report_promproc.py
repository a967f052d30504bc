"""Test helper: a real Prometheus (the Debian binary) on a loopback port, and bounded polling."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy" / "prometheus"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check: Callable[[], object], what: str, timeout: float = 30.0, interval: float = 0.1):
    """Poll `check` until it returns something truthy; fail after `timeout` seconds saying `what`."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # not ready yet: keep polling until the deadline
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f" ({last_error})" if last_error else ""))


class PrometheusProcess:
    """`prometheus` with its data in a temporary folder, the remote-write receiver on, on 127.0.0.1."""

    def __init__(self, workdir: Path, config: str, *, agent: bool = False):
        self.workdir = workdir
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(config, encoding="utf-8")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(workdir / "prometheus.log", "wb")  # noqa: SIM115 - closed in stop()
        # Prometheus 2.x spells agent mode as a feature flag; 3.x has --agent
        mode = ([f"--storage.agent.path={workdir / 'agent'}", "--enable-feature=agent"] if agent else
                [f"--storage.tsdb.path={workdir / 'data'}", "--web.enable-remote-write-receiver"])
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={self.config_path}", f"--web.listen-address=127.0.0.1:{self.port}",
             "--log.level=warn", *mode],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=workdir)
        try:
            wait_for(self._ready, "Prometheus /-/ready", timeout=30)
        except AssertionError as exc:
            self.stop()
            log = (workdir / "prometheus.log").read_text()[-3000:]
            raise AssertionError(f"Prometheus did not start:\n{log}") from exc

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError("Prometheus exited")
        with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as r:
            return r.status == 200

    def api(self, path: str, **params) -> dict:
        data = urllib.parse.urlencode(params).encode()
        with urllib.request.urlopen(self.url + path, data=data, timeout=10) as r:
            return json.loads(r.read())

    def query(self, expr: str) -> list[dict]:
        answer = self.api("/api/v1/query", query=expr)
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
