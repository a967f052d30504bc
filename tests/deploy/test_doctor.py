"""`school-gateway doctor` against a real gateway on loopback, and its bypass probes from a client namespace."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fakeupstream import FakeUpstream
from gatewayproc import free_port
from netlab import start_process, stop
from updaterkit import BLOCKLISTS, DEPARTMENT, SCHOOL, Mirror

from gateway.doctor import FAIL, PASS, SKIP, WARN, Doctor, check_bundle
from gateway.settings import load_settings
from gateway.updater import Updater, UpdaterSettings, make_validator
from gateway.updater.bundle import build_bundle, publish
from gateway.updater.keys import public_b64

ENV = {**os.environ, "SCHOOL_GATEWAY_CLOCK": "synced"}


def doctor(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway.doctor", *args], capture_output=True, text=True,
                          env=env or ENV, timeout=timeout)


def checks(done: subprocess.CompletedProcess) -> dict[str, dict]:
    return {c["id"]: c for c in json.loads(done.stdout)["checks"]}


class Box:
    """A school box on loopback: a fake upstream, the Department's bundle installed by the real updater,
    and the real gateway (`school-gateway run`) with metrics."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.upstream = FakeUpstream({("vnexpress.net", "A"): ["192.0.2.10"]}).start()
        self.key = Ed25519PrivateKey.generate()
        self.mirror = Mirror(root / "www")
        bundle, _ = build_bundle(DEPARTMENT, BLOCKLISTS, self.key, 1, root, school=SCHOOL)
        publish(bundle, self.mirror.root, self.key)
        self.state = root / "state"
        self.school = root / "school.yaml"
        shutil.copyfile(SCHOOL, self.school)
        updater = Updater(UpdaterSettings(mirrors=(self.mirror.url,), trusted_keys=(self.key_b64,),
                                          state_dir=self.state), validate=make_validator(self.school, root / "cache"))
        assert updater.poll_once() == "updated"
        self.port, self.metrics_port = free_port(), free_port()
        self.config = root / "gateway.yaml"
        self.write_config()
        self.proc: subprocess.Popen | None = None

    @property
    def key_b64(self) -> str:
        return public_b64(self.key.public_key())

    def write_config(self, upstream: str | None = None) -> None:
        self.config.write_text(textwrap.dedent(f"""\
            dns:
              listen: ["127.0.0.1:{self.port}", "[::1]:{self.port}"]
              upstreams: ["{upstream or self.upstream.spec()}"]
              timeout: 0.5
            policy:
              school: {self.school}
              cache_dir: {self.root / "cache"}
              watch: false
            state_dir: {self.state}
            metrics:
              listen: "127.0.0.1:{self.metrics_port}"
            updater:
              mirrors: ["{self.mirror.url}"]
              trusted_keys: ["{self.key_b64}"]
              state_dir: {self.state}
            """), encoding="utf-8")

    def start(self) -> Box:
        self.proc = start_process([sys.executable, "-m", "gateway.cli", "run", "--config", str(self.config)],
                                  "school-gateway ready", env=ENV, cwd=self.root)
        return self

    def close(self) -> None:
        if self.proc is not None:
            stop(self.proc)
        self.upstream.stop()
        self.mirror.close()


@pytest.fixture
def box(tmp_path):
    b = Box(tmp_path).start()
    yield b
    b.close()


def test_every_check_passes_on_a_healthy_box(box):
    done = doctor("--config", str(box.config), "--json", "--lang", "en")
    found = checks(done)
    assert done.returncode == 0, done.stdout
    want = {"config", "policy", f"listen:127.0.0.1:{box.port}", f"listen:[::1]:{box.port}",
            f"upstream:{box.upstream.spec()}", "metrics", "policy_current", "single_source", "clock", "bundle"}
    assert want <= set(found), found.keys()
    assert {cid: found[cid]["status"] for cid in want} == dict.fromkeys(want, PASS)
    assert "version 1" in found["bundle"]["detail"] and "days left" in found["bundle"]["detail"]
    # The rules file only exists on a box installed by Ansible; this one is not.
    assert found["firewall"]["status"] == SKIP


def test_a_stopped_upstream_fails_with_its_fix(box):
    box.upstream.stop()
    done = doctor("--config", str(box.config), "--json", "--lang", "en", "--timeout", "0.5")
    assert done.returncode == 1
    found = checks(done)
    up = found[f"upstream:{box.upstream.spec()}"]
    assert up["status"] == FAIL
    assert "dns.upstreams" in up["fix"] and str(box.config) in up["fix"]
    # The gateway itself still answers: its listeners are checked with names it answers locally.
    assert found[f"listen:127.0.0.1:{box.port}"]["status"] == PASS
    assert [c for c in found.values() if c["status"] == FAIL] == [up]


def test_the_checklist_is_vietnamese_by_default(box):
    box.upstream.stop()
    done = doctor("--config", str(box.config), "--timeout", "0.5")
    assert done.returncode == 1
    assert "✗ [LỖI] Máy chủ DNS cấp trên" in done.stdout
    assert "→ Cách sửa: kiểm tra địa chỉ trong dns.upstreams" in done.stdout
    assert "mục KHÔNG đạt" in done.stdout


def test_a_policy_edited_but_not_reloaded_is_reported(box):
    box.school.write_text(box.school.read_text(encoding="utf-8") + "\n# edited\n", encoding="utf-8")
    found = checks(doctor("--config", str(box.config), "--json", "--lang", "en"))
    assert found["policy_current"]["status"] == FAIL
    assert "systemctl reload school-gateway" in found["policy_current"]["fix"]


def test_wait_ready_returns_when_dns_answers(box, tmp_path):
    done = doctor("--config", str(box.config), "--wait-ready", "10", "--lang", "en")
    assert done.returncode == 0 and "answers DNS on" in done.stdout
    box.config.write_text(box.config.read_text(encoding="utf-8").replace(str(box.port), str(free_port())),
                          encoding="utf-8")
    done = doctor("--config", str(box.config), "--wait-ready", "1", "--lang", "en")
    assert done.returncode == 1 and "does not answer DNS" in done.stderr


def test_config_only_validates_without_network(tmp_path):
    good = tmp_path / "gateway.yaml"
    good.write_text(f'dns:\n  listen: ["127.0.0.1:5399"]\n  upstreams: ["udp://127.0.0.1:5398"]\n'
                    f"policy:\n  school: {SCHOOL}\n", encoding="utf-8")
    done = doctor("--config-only", "--config", str(good), "--lang", "en")
    assert done.returncode == 0, done.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("dns:\n  upstreams: [udp://127.0.0.1:5398]\n  lisen: [x]\n", encoding="utf-8")
    done = doctor("--config-only", "--config", str(bad), "--lang", "en")
    assert done.returncode == 1
    assert f"{bad}:3: unknown key 'lisen'" in done.stderr
    # Forwarding to itself is refused before anything is started.
    loop = tmp_path / "loop.yaml"
    loop.write_text('dns:\n  listen: ["127.0.0.1:5399"]\n  upstreams: ["udp://127.0.0.1:5399"]\n', encoding="utf-8")
    done = doctor("--config-only", "--config", str(loop), "--lang", "en")
    assert done.returncode == 1 and "forward to itself" in done.stderr


def test_bundle_signature_and_expiry(tmp_path):
    b = Box(tmp_path)
    try:
        settings = load_settings(b.config)
        manifest = json.loads((b.state / "bundles/current/manifest.json").read_text())
        from gateway.updater.manifest import parse_time

        expires = parse_time(manifest["expires"])
        for now, status, words in ((expires - 10 * 86400, PASS, "days left"), (expires - 86400, WARN, "expires soon"),
                                   (expires + 1, FAIL, "expired")):
            doc = Doctor("en")
            check_bundle(doc, settings, "gateway.yaml", now=now)
            assert (doc.checks[0].status, words in doc.checks[0].detail) == (status, True), doc.checks[0]
        # A manifest changed on disk no longer matches its signature.
        folder = (b.state / "bundles/current").resolve()
        path = folder / "manifest.json"
        path.chmod(0o644)
        path.write_text(path.read_text().replace('"version": 1', '"version": 9'))
        doc = Doctor("en")
        check_bundle(doc, settings, "gateway.yaml")
        assert doc.checks[0].status == FAIL and "matches no trusted key" in doc.checks[0].detail
        assert "update --once" in doc.checks[0].fix
    finally:
        b.close()


# ---- from the client's side, in namespaces ----

def client_doctor(lab, *targets: str) -> subprocess.CompletedProcess:
    args = [a for t in targets for a in ("--probe-target", t)]
    return lab.run(lab.client, [sys.executable, "-m", "gateway.doctor", "--client", "--json", "--lang", "en",
                                "--timeout", "1", *args], timeout=120)


def test_client_probes_pass_where_the_rules_are_loaded(enforced):
    from netlab import OUTSIDE4, OUTSIDE6

    done = client_doctor(enforced, OUTSIDE4, OUTSIDE6)
    found = checks(done)
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(found) == 10 and {c["status"] for c in found.values()} == {PASS}
    assert "redirected to the gateway" in found[f"probe:dns_udp:{OUTSIDE4}"]["detail"]
    assert "redirected to the gateway" in found[f"probe:dns_tcp:{OUTSIDE6}"]["detail"]


def test_client_probes_fail_without_the_rules(unenforced):
    from netlab import OUTSIDE4

    done = client_doctor(unenforced, OUTSIDE4)
    found = checks(done)
    assert done.returncode == 1
    assert {cid: c["status"] for cid, c in found.items()} == {
        f"probe:{kind}:{OUTSIDE4}": FAIL for kind in ("dns_udp", "dns_tcp", "dot", "doq", "quic")}
    assert "198.18.2.80" in found[f"probe:dns_udp:{OUTSIDE4}"]["detail"]
    assert "853" in found[f"probe:dot:{OUTSIDE4}"]["fix"] and "UDP 443" in found[f"probe:quic:{OUTSIDE4}"]["fix"]
