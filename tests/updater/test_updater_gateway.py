"""The updater inside `school-gateway run`: a signed bundle from a loopback mirror changes live answers."""

from __future__ import annotations

import re
import time

import dns.rcode
from fakeupstream import FakeUpstream
from gatewayproc import GatewayProcess
from updaterkit import Mirror, department_copy, make_bundle, serve

SCHOOL = """\
school: {id: HN-UPD-1, name: Update school, ward: Phường Thử, levels: [thcs]}
groups:
  hoc_sinh: {band: thcs, clients: [127.0.0.1]}
serve: [127.0.0.0/24]
"""


def _metric(text: str, name: str) -> float | None:
    m = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def _until(check, timeout=40.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)  # polls the gateway for the next bundle poll's effect; not a readiness wait
    return False


def test_bundle_applied_live_and_bad_bundle_rejected(tmp_path, keys):
    mirror = Mirror(tmp_path / "www")

    def add_name(root):
        with open(root / "blocklists" / "adult.txt", "a", encoding="utf-8") as fh:
            fh.write("newly-blocked.test\n")

    department, blocklists = department_copy(tmp_path, add_name)
    good = make_bundle(tmp_path, keys.dept, 2026120101, department=department, blocklists=blocklists)
    top = (f"updater:\n  mirrors: [\"{mirror.url}\"]\n  interval: 2\n  timeout: 5\n"
           f"  trusted_keys: [\"{keys.dept_b64}\"]\n  state_dir: {tmp_path / 'state'}\n")
    try:
        with FakeUpstream({("newly-blocked.test", "A"): ["192.0.2.9"]}) as up, \
                GatewayProcess(tmp_path / "box", [up.spec()], school=SCHOOL, top_extra=top) as g:
            assert g.ask("newly-blocked.test").rcode() == dns.rcode.NOERROR  # not in the config's lists
            serve(mirror.root, good, keys.dept)
            assert _until(lambda: g.ask("newly-blocked.test").rcode() == dns.rcode.NXDOMAIN), "".join(g.lines)
            assert _until(lambda: _metric(g.scrape(), "schoolgw_bundle_version") == 2026120101)
            # a newer bundle signed by a key the box does not trust: refused, the installed one keeps serving
            (tmp_path / "evil").mkdir()
            evil = make_bundle(tmp_path / "evil", keys.other, 2026120102, department=department,
                               blocklists=blocklists)
            serve(mirror.root, evil, keys.other)
            assert _until(lambda: 'reason="signature"' in g.scrape()), g.scrape()
            assert g.ask("newly-blocked.test").rcode() == dns.rcode.NXDOMAIN
            assert _metric(g.scrape(), "schoolgw_bundle_version") == 2026120101
    finally:
        mirror.close()
