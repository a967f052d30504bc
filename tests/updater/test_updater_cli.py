"""The Department's round trip through the CLI: keygen, build, verify, publish; then a box's `update --once`."""

import argparse
import json
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

from updaterkit import SCHOOL, assert_whole, department_copy

from gateway.updater import Updater, UpdaterSettings, make_validator
from gateway.updater.cli import add_commands, cmd_update, cmd_verify, main

REPO = Path(__file__).resolve().parents[2]
VERSION = 2026120101


def _keygen(tmp_path, capsys, name="dept"):
    assert main(["bundle", "keygen", str(tmp_path / "keys" / name), "--lang", "en"]) == 0
    return capsys.readouterr().out


def test_keygen_writes_a_private_key_only_its_owner_can_read(tmp_path, capsys):
    out = _keygen(tmp_path, capsys)
    private, public = tmp_path / "keys" / "dept.key", tmp_path / "keys" / "dept.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    body = private.read_text()
    assert "PRIVATE KEY" in body
    assert "PRIVATE" not in out and body.splitlines()[1] not in out  # never printed
    assert "PUBLIC KEY" in public.read_text()
    assert main(["bundle", "keygen", str(tmp_path / "keys" / "dept")]) == 1  # never overwritten
    assert private.read_text() == body


def test_round_trip_build_verify_publish_and_install(tmp_path, capsys, mirror):
    _keygen(tmp_path, capsys)
    _keygen(tmp_path, capsys, "stranger")
    keys = tmp_path / "keys"
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    # Defaults: the shipped policies/department and blocklists, test-compiled with the shipped example school.
    assert main(["bundle", "build", "--key", str(keys / "dept.key"), "--version", str(VERSION),
                 "--out", str(out_dir), "--lang", "en"]) == 0
    assert "Built" in capsys.readouterr().out
    bundle = out_dir / f"school-gateway-bundle-{VERSION}.tar.gz"

    assert main(["bundle", "verify", str(bundle), "--key", str(keys / "dept.pub"), "--lang", "en"]) == 0
    shown = capsys.readouterr().out
    assert f"Version: {VERSION}" in shown and "policies/department/baseline.yaml" in shown
    assert "compiled/lists.sgwset" in shown and "blocklists/adult.txt" in shown

    assert main(["bundle", "verify", str(bundle), "--key", str(keys / "stranger.pub"), "--lang", "en"]) == 1
    assert "NOT valid" in capsys.readouterr().out
    assert main(["bundle", "verify", str(bundle), "--key", str(keys / "stranger.pub"),
                 "--key", str(keys / "dept.pub")]) == 0  # any trusted key will do: rotation overlap
    capsys.readouterr()

    assert main(["bundle", "publish", str(bundle), str(mirror.root), "--key", str(keys / "dept.key")]) == 0
    pointer = json.loads((mirror.root / "latest.json").read_text())
    assert pointer["version"] == VERSION and pointer["file"] == bundle.name and len(pointer["sha256"]) == 64
    assert main(["bundle", "publish", str(bundle), str(mirror.root), "--key", str(keys / "dept.key"),
                 "--lang", "en"]) == 1
    assert "must be higher" in capsys.readouterr().err

    settings = UpdaterSettings(mirrors=(mirror.url,), trusted_keys=(str(keys / "dept.pub"),),
                               state_dir=tmp_path / "state")
    updater = Updater(settings, validate=make_validator(SCHOOL), clock_synced=lambda: True)
    assert updater.poll_once() == "updated"
    assert assert_whole(tmp_path / "state") == VERSION


def test_build_refuses_a_department_layer_that_does_not_compile(tmp_path, capsys):
    _keygen(tmp_path, capsys)
    department, lists = department_copy(tmp_path, lambda root: (root / "policies/department/categories.yaml")
                                        .write_text("categories:\n  adult: {lists: [adult.txt]}\n", encoding="utf-8"))
    code = main(["bundle", "build", "--key", str(tmp_path / "keys" / "dept.key"), "--version", "1",
                 "--department", str(department), "--blocklists", str(lists), "--out", str(tmp_path), "--lang", "en"])
    out = capsys.readouterr().out
    assert code == 1
    assert "does not compile" in out and "categories.yaml:2" in out and "'name'" in out
    assert not list(tmp_path.glob("*.tar.gz"))


def test_update_once_reads_the_updater_section_of_gateway_yaml(tmp_path, capsys, mirror):
    _keygen(tmp_path, capsys)
    keys = tmp_path / "keys"
    assert main(["bundle", "build", "--key", str(keys / "dept.key"), "--version", str(VERSION),
                 "--out", str(tmp_path)]) == 0
    assert main(["bundle", "publish", str(tmp_path / f"school-gateway-bundle-{VERSION}.tar.gz"), str(mirror.root),
                 "--key", str(keys / "dept.key")]) == 0
    config = tmp_path / "gateway.yaml"
    config.write_text(textwrap.dedent(f"""\
        policy:
          school: {SCHOOL}
          cache_dir: cache
        updater:
          mirrors: ["{mirror.url}"]
          trusted_keys: [keys/dept.pub]
          state_dir: state
        """), encoding="utf-8")
    capsys.readouterr()
    assert main(["update", "--once", "--config", str(config), "--lang", "en"]) == 0
    assert "Update outcome: updated" in capsys.readouterr().out
    assert assert_whole(tmp_path / "state") == VERSION
    assert main(["update", "--once", "--config", str(config), "--lang", "en"]) == 0
    assert "Update outcome: unchanged" in capsys.readouterr().out

    config.write_text("updater:\n  mirrors: [gopher://x]\n  trusted_keys: [nope]\n", encoding="utf-8")
    assert main(["update", "--once", "--config", str(config), "--lang", "en"]) == 2
    out = capsys.readouterr().out
    assert "gateway.yaml:2" in out and "gateway.yaml:3" in out


def test_module_entry_point_runs(tmp_path):
    done = subprocess.run([sys.executable, "-m", "gateway.updater.cli", "bundle", "verify", str(tmp_path / "none"),
                           "--key", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "--lang", "en"],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 2 and "file not found" in done.stderr


def test_commands_plug_into_the_main_parser():
    """What the lead wires into gateway/cli.py: add_commands(the top-level subparsers)."""
    from gateway.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if "bundle" not in sub.choices:
        add_commands(sub)
    assert parser.parse_args(["bundle", "verify", "b.tar.gz", "--key", "k.pub"]).func.__name__ == cmd_verify.__name__
    assert parser.parse_args(["update", "--once"]).func.__name__ == cmd_update.__name__
