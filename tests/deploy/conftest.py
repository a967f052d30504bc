"""Fixtures for the deployment tests: the `slow` marker, the Debian tools they drive, and the wheel."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# Helpers beside this file (targetroot, netlab) and the updater tests' kit (a loopback mirror, bundle
# makers); tests/ has no packages on purpose.
sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1] / "updater")]

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "deploy" / "ansible"
ROLE = ANSIBLE_DIR / "roles" / "school_gateway"

# Debian packages these tests run for real, by the command that shows each is there.
TOOLS = {"ansible-playbook": "ansible", "ansible-lint": "ansible-lint", "debootstrap": "debootstrap",
         "nft": "nftables", "ip": "iproute2", "systemd-analyze": "systemd", "unshare": "util-linux"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: builds a Debian root and runs the playbook (minutes; CI runs it too)")


def _install_missing() -> list[str]:
    """Install what is missing with apt-get (as README's test script does for its own tools); return what
    is still missing afterwards."""
    missing = sorted({pkg for cmd, pkg in TOOLS.items() if shutil.which(cmd) is None})
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], env=env, capture_output=True, timeout=1200)
    return sorted({pkg for cmd, pkg in TOOLS.items() if shutil.which(cmd) is None})


@pytest.fixture(scope="session")
def deploy_tools() -> None:
    if os.geteuid() != 0:
        pytest.skip("the deployment tests need root (chroot, mount and network namespaces, nftables)")
    missing = _install_missing()
    if missing:
        pytest.skip(f"Debian packages not installable here: {', '.join(missing)}")


@pytest.fixture(scope="session")
def netns_ok(deploy_tools) -> None:
    probe = "sgwt-probe"
    done = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot create network namespaces here: {done.stderr.strip()}")
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    """The gateway wheel, built from this checkout exactly as the guide says (no build isolation: hatchling
    is already in the venv, and no index is needed)."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(REPO)], check=True, capture_output=True, timeout=300)
    (found,) = out.glob("school_gateway-*.whl")
    return found


def ansible_env(**extra: str) -> dict:
    return {**os.environ, "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
            "ANSIBLE_ROLES_PATH": str(ANSIBLE_DIR / "roles"), "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0",
            **extra}


@pytest.fixture(scope="session")
def lab(netns_ok, tmp_path_factory):
    """The namespaces with the outside servers and the real gateway running; the rules rendered by the role."""
    import netlab

    folder = tmp_path_factory.mktemp("lab")
    with netlab.Lab() as lab:
        lab.start_outside()
        config = netlab.write_gateway(folder / "gateway")
        lab.gateway = lab.start(lab.gw, [sys.executable, "-m", "gateway.cli", "run", "--config", str(config)],
                                "school-gateway ready", env=netlab.gateway_env(), cwd=folder)
        lab.rules = render_rules(lab, folder / "rules.nft")
        yield lab


def render_rules(lab, dest: Path, **variables) -> Path:
    """The role's nftables template rendered by Ansible with the role's defaults and vars, for the lab's
    school: topology a between lan0 and wan0, the outside resolver as the Department's scraper and as a
    known DoH address. Runs in the gateway namespace, where the template task's `nft -c` checks it."""
    import netlab

    extra = {"school_gateway_topology": "a", "school_gateway_lan_interface": netlab.LAN_IF,
             "school_gateway_wan_interface": netlab.WAN_IF, "school_gateway_address": netlab.GW_LAN4,
             "school_gateway_lan_address": netlab.GW_LAN4,
             "school_gateway_metrics_scrapers": [netlab.OUTSIDE4 + "/32"],
             "school_gateway_doh_addresses4": [netlab.OUTSIDE4], "school_gateway_doh_addresses6": [netlab.OUTSIDE6],
             "school_gateway_nft_file": str(dest), "school_gateway_systemd_running": False, **variables}
    done = lab.run(lab.gw, ["ansible-playbook", "-i", "localhost,", str(Path(__file__).parent / "render_firewall.yml"),
                            "-e", json.dumps(extra)], env=ansible_env(), timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return dest


@pytest.fixture
def enforced(lab):
    """The lab with the gateway's rules loaded in the gateway namespace."""
    lab.load_rules(lab.rules)
    yield lab
    lab.flush_rules()


@pytest.fixture
def unenforced(lab):
    """The lab with no rules at all: what a school router that forwards everything looks like."""
    lab.flush_rules()
    yield lab
