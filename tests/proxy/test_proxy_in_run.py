"""The proxy started by `school-gateway run` beside DNS, on the same policy: a block page, counted."""

from __future__ import annotations

import http.client
import re
import subprocess
import sys
import time

from fakeupstream import FakeUpstream
from gatewayproc import GatewayProcess, free_port


def test_run_starts_the_proxy_on_the_same_policy(tmp_path):
    port = free_port()
    top = (f"proxy:\n  listen: \"127.0.0.1:{port}\"\n  ref_key: {tmp_path / 'ref.key'}\n"
           "privacy: {min_group_size: 1, decision_interval: 1}\n")
    with FakeUpstream() as up, GatewayProcess(tmp_path, [up.spec()], top_extra=top,
                                              env={"SCHOOL_GATEWAY_STATE_DIR": str(tmp_path / "state")}) as g:
        deadline = time.monotonic() + 20
        while True:  # the proxy starts right after DNS is ready: poll its port
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "http://casino.example/", headers={"Host": "casino.example"})
                r = conn.getresponse()
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline, "".join(g.lines)
                time.sleep(0.1)
        body = r.read().decode()
        assert r.status == 403
        assert "Trang web này đã bị chặn" in body
        code = re.search(r"<code>([0-9A-Z-]+)</code>", body)
        assert code, body
        deadline = time.monotonic() + 20
        while "schoolgw_proxy_blocks_total{" not in g.scrape():
            assert time.monotonic() < deadline, g.scrape()
            time.sleep(0.2)  # the next metrics flush (1 s)
        assert 'category="gambling"' in g.scrape()
    out = subprocess.run([sys.executable, "-m", "gateway.cli", "explain", "--ref", code.group(1), "--config",
                          str(g.config), "--school", str(g.paths.school), "--department", str(g.paths.department),
                          "--lang", "en"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "gambling" in out.stdout
