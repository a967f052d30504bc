"""The playbook, for real, twice, on a debootstrapped Debian 12 root; then the installed service, asked over DNS."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import dns.message
import dns.query
import dns.rdatatype
import pytest
from conftest import ANSIBLE_DIR, ansible_env
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fakeupstream import FakeUpstream
from netlab import quiet_port, start_process, stop
from targetroot import TargetRoot, base_root

from gateway.updater.keys import public_b64

pytestmark = pytest.mark.slow

UNITS = ("school-gateway.service", "school-gateway-firewall.service", "school-gateway-update.service",
         "school-gateway-update.timer")
# The stand-in for Ubuntu's /etc/systemd/resolved.conf: the role must add a drop-in, not edit this.
RESOLVED_CONF = "# stand-in for Ubuntu's file\n[Resolve]\n#DNSStubListener=yes\n"
RECAP = re.compile(r"^target\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def host_ruleset() -> str:
    return subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout


def playbook(root: TargetRoot, inventory: Path, log: Path) -> dict:
    started = time.monotonic()
    done = subprocess.run(root.command(["ansible-playbook", "-i", str(inventory), str(ANSIBLE_DIR / "site.yml")]),
                          capture_output=True, text=True, env=ansible_env(), timeout=1200)
    log.write_text(done.stdout + done.stderr, encoding="utf-8")
    recap = RECAP.search(done.stdout)
    assert done.returncode == 0 and recap, f"playbook failed (log {log}):\n{done.stdout[-6000:]}\n{done.stderr[-3000:]}"
    ok, changed, unreachable, failed = map(int, recap.groups())
    return {"ok": ok, "changed": changed, "failed": failed, "unreachable": unreachable,
            "seconds": time.monotonic() - started, "log": done.stdout}


@pytest.fixture(scope="module")
def target(deploy_tools, wheel, tmp_path_factory):
    work = tmp_path_factory.mktemp("target")
    # The dependencies as wheels beside the gateway's: the role installs them offline (school_gateway_wheelhouse).
    wheelhouse = work / "wheelhouse"
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "-d", str(wheelhouse), f"{wheel}[proxy]",
                    "scapy>=2.5,<3"], check=True, capture_output=True, timeout=600)
    root = TargetRoot(work / "root", base_root())
    (root.upper / "etc/systemd").mkdir(parents=True, exist_ok=True)
    (root.upper / "etc/systemd/resolved.conf").write_text(RESOLVED_CONF)
    upstream = FakeUpstream({("vnexpress.net", "A"): ["192.0.2.10"]}).start()
    dns_port, metrics_port = quiet_port(), quiet_port()
    key = public_b64(Ed25519PrivateKey.generate().public_key())
    host = {
        "ansible_connection": "community.general.chroot", "ansible_host": str(root.path),
        "ansible_python_interpreter": "/usr/bin/python3",
        "school_gateway_school_id": "HN-THCS-9999", "school_gateway_school_name": "Trường THCS Thử Nghiệm",
        "school_gateway_ward": "Phường Thử", "school_gateway_levels": ["thcs"],
        "school_gateway_client_subnets": {"thcs": ["10.10.0.0/16", "fd00:10::/56"], "staff": ["10.20.0.0/24"]},
        "school_gateway_extra_groups": {"phong_may": {"band": "thcs", "clients": ["10.10.50.0/24"],
                                                      "inspect_tls": True}},
        "school_gateway_bands": {"thcs": {"block": ["shopping"]}},
        "school_gateway_topology": "a", "school_gateway_lan_interface": "lan0", "school_gateway_wan_interface": "wan0",
        "school_gateway_address": "10.10.0.1",
        # A test port on loopback only: the root shares this machine's network.
        "school_gateway_dns_port": dns_port,
        "school_gateway_dns_listen": [f"127.0.0.1:{dns_port}", f"[::1]:{dns_port}"],
        "school_gateway_dns_workers": 1,
        "school_gateway_metrics_port": metrics_port,
        "school_gateway_upstreams": [upstream.spec()],
        "school_gateway_bundle_mirrors": ["http://127.0.0.1:9/dept"], "school_gateway_trusted_keys": [key],
        "school_gateway_update_timer": True,
        "school_gateway_wheel": str(wheel), "school_gateway_wheelhouse": str(wheelhouse),
        "school_gateway_manage_resolved": True,
    }
    inventory = write_inventory(work / "inventory.yml", host)
    before = host_ruleset()
    first = playbook(root, inventory, work / "first.log")
    second = playbook(root, inventory, work / "second.log")
    yield SimpleNamespace(root=root, first=first, second=second, upstream=upstream, host=host, dns_port=dns_port,
                          metrics_port=metrics_port, rules_before=before, rules_after=host_ruleset(), key=key,
                          work=work)
    upstream.stop()


def write_inventory(path: Path, host: dict) -> Path:
    path.write_text(json.dumps({"all": {"children": {"school_gateways": {"hosts": {"target": host}}}}}))  # JSON is YAML
    return path


@pytest.fixture(scope="module")
def proxied(target):
    """The same box, the playbook run again (twice) with the proxy switched on."""
    ports = {"school_gateway_proxy_port": quiet_port(), "school_gateway_proxy_transparent_port": quiet_port(),
             "school_gateway_blockpage_port": quiet_port()}
    host = {**target.host, "school_gateway_proxy": True, "school_gateway_proxy_host": "127.0.0.1", **ports}
    inventory = write_inventory(target.work / "inventory-proxy.yml", host)
    first = playbook(target.root, inventory, target.work / "proxy-first.log")
    second = playbook(target.root, inventory, target.work / "proxy-second.log")
    return SimpleNamespace(first=first, second=second, **ports)


def unit(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            k, _, v = line.partition("=")
            out.setdefault(k.strip(), []).append(v.strip())
    return out


def test_a_second_run_changes_nothing(target):
    assert target.first["changed"] > 10 and target.first["failed"] == 0
    assert target.second["changed"] == 0, re.findall(r"TASK \[(.*?)\].*?\nchanged", target.second["log"], re.S)
    print(f"first run {target.first['seconds']:.0f}s, second {target.second['seconds']:.0f}s")


def test_nothing_was_applied_to_this_machine(target):
    # systemd is not running in a chroot: the role must not load rules into the host's kernel.
    assert target.rules_after == target.rules_before


def test_user_program_and_folders(target):
    root = target.root
    passwd = root.read("/etc/passwd")
    entry = re.search(r"^school-gateway:x:(\d+):(\d+):[^:]*:(.*?):(.*)$", passwd, re.M)
    assert entry and entry.group(3) == "/var/lib/school-gateway" and entry.group(4) == "/usr/sbin/nologin"
    uid, gid = int(entry.group(1)), int(entry.group(2))
    assert uid < 1000  # a system user
    link = root.file("/usr/local/bin/school-gateway")
    assert link.is_symlink() and str(link.readlink()) == "/opt/school-gateway/bin/school-gateway"
    code = next(root.file("/opt/school-gateway/lib").glob("python3*/site-packages/gateway/__init__.py"))
    assert code.stat().st_uid == 0 and not code.stat().st_mode & 0o022  # the service cannot rewrite its code
    conf = root.file("/etc/school-gateway")
    assert (conf.stat().st_uid, conf.stat().st_gid, conf.stat().st_mode & 0o777) == (0, gid, 0o750)
    for name in ("gateway.yaml", "school.yaml"):
        st = (conf / name).stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, gid, 0o640)
    for folder in ("/var/lib/school-gateway", "/var/cache/school-gateway"):
        st = root.file(folder).stat()
        assert (st.st_uid, st.st_mode & 0o777) == (uid, 0o750)
    mp = root.file("/var/lib/school-gateway/metrics-mp")
    assert mp.is_symlink() and str(mp.readlink()) == "/run/school-gateway/metrics-mp"
    journal = root.read("/etc/systemd/journald.conf.d/school-gateway.conf")
    assert "Storage=volatile" in journal and "RuntimeMaxUse=64M" in journal


def test_units_are_hardened_enabled_and_verify(target):
    root = target.root
    paths = [str(root.path / "etc/systemd/system" / u) for u in UNITS]
    done = root.run(["systemd-analyze", "verify", "--root", str(root.path), *paths], inside=False, check=False)
    assert done.returncode == 0 and not done.stderr.strip(), done.stdout + done.stderr
    u = unit(root.read("/etc/systemd/system/school-gateway.service"))
    want = {"Type": "exec", "User": "school-gateway", "AmbientCapabilities": "CAP_NET_BIND_SERVICE",
            "CapabilityBoundingSet": "CAP_NET_BIND_SERVICE", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
            "ProtectHome": "yes", "PrivateTmp": "yes", "Restart": "on-failure", "StateDirectory": "school-gateway",
            "CacheDirectory": "school-gateway", "MemoryMax": "1G",
            "ReadWritePaths": "/var/lib/school-gateway /var/cache/school-gateway",
            "RuntimeDirectory": "school-gateway school-gateway/metrics-mp"}
    assert {k: u.get(k, [None])[0] for k in want} == want
    assert u["ExecStartPost"][0].endswith("doctor --wait-ready 90 --config /etc/school-gateway/gateway.yaml")
    assert "WatchdogSec" not in u  # the gateway sends no watchdog pings
    wants = {"multi-user.target.wants/school-gateway.service", "sysinit.target.wants/school-gateway-firewall.service",
             "timers.target.wants/school-gateway-update.timer"}
    for link in wants:
        assert root.file(f"/etc/systemd/system/{link}").is_symlink(), link


def test_rendered_config_is_what_the_inventory_says(target):
    root = target.root
    venv, etc = "/opt/school-gateway/bin", "/etc/school-gateway"
    done = root.run([f"{venv}/school-gateway", "validate", "--lang", "en", "--school", f"{etc}/school.yaml"])
    assert "5 client groups" in done.stdout, done.stdout
    root.run([f"{venv}/python", "-m", "gateway.doctor", "--config-only", "--config", f"{etc}/gateway.yaml"])
    probe = ("import json; from pathlib import Path; from gateway.settings import load_settings;"
             "s = load_settings(Path('/etc/school-gateway/gateway.yaml'));"
             "print(json.dumps({'listen': [str(x) for x in s.dns.listen], 'upstreams': list(s.dns.upstreams),"
             "'metrics': [s.metrics.host, s.metrics.port], 'mirrors': list(s.updater.mirrors),"
             "'keys': list(s.updater.trusted_keys), 'state': str(s.state_dir), 'school': str(s.policy.school)}))")
    got = json.loads(root.run([f"{venv}/python", "-c", probe]).stdout)
    port = target.dns_port
    assert got == {"listen": [f"127.0.0.1:{port}", f"[::1]:{port}"], "upstreams": [target.upstream.spec()],
                   "metrics": ["127.0.0.1", target.metrics_port], "mirrors": ["http://127.0.0.1:9/dept"],
                   "keys": [target.key], "state": "/var/lib/school-gateway",
                   "school": "/etc/school-gateway/school.yaml"}
    school = root.read("/etc/school-gateway/school.yaml")
    assert 'name: "Trường THCS Thử Nghiệm"' in school and 'clients: ["10.10.0.0/16", "fd00:10::/56"]' in school


def test_firewall_rules_pass_nft_check(target, netns_ok):
    rules = target.root.file("/etc/school-gateway/nftables.nft")
    text = rules.read_text()
    assert f'iifname {{ "lan0" }} udp dport 53 redirect to :{target.dns_port}' in text
    ns = "sgwt-nftcheck"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        done = subprocess.run(["ip", "netns", "exec", ns, "nft", "-c", "-f", str(rules)], capture_output=True,
                              text=True)
        assert done.returncode == 0, done.stderr
    finally:
        subprocess.run(["ip", "netns", "del", ns])


def test_resolved_stub_listener_is_turned_off(target):
    root = target.root
    assert "DNSStubListener=no" in root.read("/etc/systemd/resolved.conf.d/school-gateway.conf")
    link = root.file("/etc/resolv.conf")
    assert link.is_symlink() and str(link.readlink()) == "/run/systemd/resolve/resolv.conf"
    assert root.read("/etc/systemd/resolved.conf") == RESOLVED_CONF


def test_the_installed_service_starts_and_answers(target):
    root = target.root
    u = unit(root.read("/etc/systemd/system/school-gateway.service"))
    user = u["User"][0]
    env = [e for line in u["Environment"] for e in shlex.split(line)]
    runtime = [f"/run/{d}" for d in u["RuntimeDirectory"][0].split()]
    # What systemd would do before ExecStart: make RuntimeDirectory= for the user, drop to the user with
    # no new privileges, set Environment=. The port is a test port, so no capability is needed.
    as_user = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--no-new-privs", "env", *env]
    script = (f"mkdir -p {' '.join(runtime)} && chown {user}: {' '.join(runtime)} && "
              f"exec {shlex.join(as_user)} {u['ExecStart'][0]}")
    proc = start_process(root.inside(["sh", "-c", script]), "school-gateway ready", timeout=120)
    try:
        ready = root.run(["sh", "-c", f"exec {shlex.join(as_user)} {u['ExecStartPost'][0]}"], timeout=120)
        assert "school-gateway trả lời DNS ở 127.0.0.1:" in ready.stdout  # Vietnamese, the default
        for host in ("127.0.0.1", "::1"):
            q = dns.message.make_query("vnexpress.net", "A")
            r = dns.query.udp(q, host, port=target.dns_port, timeout=5)
            assert [rr.to_text() for rrset in r.answer for rr in rrset] == ["192.0.2.10"]
        r = dns.query.tcp(dns.message.make_query("pornhub.com", "A"), "127.0.0.1", port=target.dns_port, timeout=5)
        soa = [str(rr.mname) for rrset in r.authority if rrset.rdtype == dns.rdatatype.SOA for rr in rrset]
        assert (r.rcode(), soa) == (dns.rcode.NXDOMAIN, ["ns.school-gateway.invalid."])
        doc = root.run(["env", "SCHOOL_GATEWAY_CLOCK=synced", "/opt/school-gateway/bin/school-gateway", "doctor",
                        "--json", "--lang", "en", "--timeout", "1"], check=False, timeout=120)
        found = {c["id"]: c["status"] for c in json.loads(doc.stdout)["checks"]}
        for cid in ("config", "policy", f"listen:127.0.0.1:{target.dns_port}", f"upstream:{target.upstream.spec()}",
                    "metrics", "policy_current", "single_source", "clock"):
            assert found[cid] == "pass", (cid, doc.stdout)
        # No Department bundle can be installed from this test's mirror (nothing listens there).
        assert found["bundle"] == "fail"
    finally:
        code = stop(proc)
    assert code == 0 and any("school-gateway stopped" in line for line in proc.lines), "".join(proc.lines)


def test_the_proxy_variant_installs_and_serves(target, proxied):
    """Run last: it switches the box of the other tests to the proxy configuration."""
    root = target.root
    assert proxied.first["changed"] > 0 and proxied.second["changed"] == 0, proxied.second["log"][-3000:]
    done = root.run(["systemd-analyze", "verify", "--root", str(root.path),
                     str(root.path / "etc/systemd/system/school-gateway-proxy.service")], inside=False, check=False)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
    assert root.file("/etc/systemd/system/multi-user.target.wants/school-gateway-proxy.service").is_symlink()
    rules = root.read("/etc/school-gateway/nftables.nft")
    assert f"tcp dport {{ 80, 443 }} redirect to :{proxied.school_gateway_proxy_transparent_port}" in rules
    assert f"ip daddr 10.10.0.1 tcp dport 80 redirect to :{proxied.school_gateway_blockpage_port}" in rules
    u = unit(root.read("/etc/systemd/system/school-gateway-proxy.service"))
    user = u["User"][0]
    as_user = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--no-new-privs", "env",
               *[e for line in u["Environment"] for e in shlex.split(line)]]
    proc = start_process(root.inside(["sh", "-c", f"exec {shlex.join(as_user)} {u['ExecStart'][0]}"]),
                         "Proxy running", timeout=120)
    try:
        got = subprocess.run([sys.executable, "-c", "import sys, urllib.request; print(urllib.request.urlopen("
                              f"'http://127.0.0.1:{proxied.school_gateway_blockpage_port}/proxy.pac', timeout=5)"
                              ".read().decode())"], capture_output=True, text=True, timeout=30)
        assert f"PROXY 10.10.0.1:{proxied.school_gateway_proxy_port}" in got.stdout, got.stdout + got.stderr
    finally:
        stop(proc)
