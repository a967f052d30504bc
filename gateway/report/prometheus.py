"""A small client for the Prometheus HTTP query API (Prometheus, Thanos Query, Mimir, VictoriaMetrics)."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable

from gateway.report.compute import Series

# opener(request, timeout) -> response with .read(); injectable so tests can fake faults
Opener = Callable[..., object]


class PrometheusError(RuntimeError):
    """The API could not be reached or answered an error."""


class PrometheusClient:
    """Instant and range queries; `base_url` is where `/api/v1/...` lives (userinfo becomes basic auth)."""

    def __init__(self, base_url: str, *, timeout: float = 120.0, opener: Opener | None = None,
                 headers: dict[str, str] | None = None):
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise PrometheusError(f"not an http(s) URL: {base_url}")
        self.headers = dict(headers or {})
        netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        if parts.port:
            netloc += f":{parts.port}"
        if parts.username is not None:
            token = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
            self.headers["Authorization"] = "Basic " + base64.b64encode(token.encode()).decode()
        self.base = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        self.timeout = timeout
        self._open = opener or urllib.request.urlopen

    def __repr__(self) -> str:  # never shows credentials
        return f"PrometheusClient({self.base!r})"

    def _call(self, path: str, params: dict[str, str]) -> dict:
        # POST keeps long PromQL out of URLs (and out of proxy logs); every compatible API accepts it
        body = urllib.parse.urlencode(params).encode()
        request = urllib.request.Request(self.base + path, data=body, method="POST", headers={
            "Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json", **self.headers})
        try:
            with self._open(request, timeout=self.timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")
            try:
                detail = json.loads(detail).get("error", detail)
            except ValueError:
                pass
            raise PrometheusError(f"HTTP {exc.code}: {detail.strip()[:500]}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise PrometheusError(str(getattr(exc, "reason", exc))) from exc
        try:
            answer = json.loads(payload)
        except ValueError as exc:
            raise PrometheusError("the answer is not JSON — is this the Prometheus URL?") from exc
        if answer.get("status") != "success":
            raise PrometheusError(answer.get("error") or "status is not success")
        return answer["data"]

    def query(self, expr: str, at: float) -> list[Series]:
        """Instant query at Unix time `at`; each series holds one point."""
        data = self._call("/api/v1/query", {"query": expr, "time": f"{at:.3f}"})
        kind, result = data.get("resultType"), data.get("result", [])
        if kind == "vector":
            return [(r["metric"], [(float(r["value"][0]), float(r["value"][1]))]) for r in result]
        if kind == "scalar":
            return [({}, [(float(result[0]), float(result[1]))])]
        if kind == "matrix":
            return [(r["metric"], [(float(t), float(v)) for t, v in r["values"]]) for r in result]
        raise PrometheusError(f"unexpected result type {kind}")

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[Series]:
        """Range query evaluated at start, start+step, ... end."""
        data = self._call("/api/v1/query_range", {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}",
                                                  "step": f"{step:g}"})
        return [(r["metric"], [(float(t), float(v)) for t, v in r.get("values", [])])
                for r in data.get("result", [])]
