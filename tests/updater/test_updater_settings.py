"""gateway.yaml's `updater:` section: defaults, paths, and every mistake named with its line."""

import textwrap
from pathlib import Path

from gateway.errors import ConfigError
from gateway.policy.schema import FieldReader
from gateway.policy.source import load_text
from gateway.updater import UpdaterSettings, read_updater_settings


def _read(text: str, base: Path):
    doc, problems = load_text(textwrap.dedent(text), "gateway.yaml")
    assert problems == []
    reader = FieldReader("gateway.yaml", problems)
    return read_updater_settings(doc.get("updater"), reader, base), problems


def test_full_section(tmp_path, keys):
    settings, problems = _read(f"""\
        updater:
          mirrors: [https://so.example.vn/bundles/, http://mirror.local/b]
          interval: 600
          timeout: 10
          max_bytes: 1000000
          trusted_keys: ["{keys.dept_b64}"]
          state_dir: state
        """, tmp_path)
    assert problems == []
    assert settings == UpdaterSettings(mirrors=("https://so.example.vn/bundles/", "http://mirror.local/b"),
                                       interval=600.0, timeout=10.0, max_bytes=1000000,
                                       trusted_keys=(keys.dept_b64,), state_dir=(tmp_path / "state").resolve())


def test_key_file_paths_are_resolved(tmp_path, keys):
    from gateway.updater.keys import write_key_pair

    write_key_pair(tmp_path / "k.key", tmp_path / "k.pub")
    settings, problems = _read("""\
        updater:
          mirrors: [https://so.example.vn/bundles]
          trusted_keys: [k.pub]
        """, tmp_path)
    assert problems == []
    assert settings.trusted_keys == (str(tmp_path / "k.pub"),)
    assert settings.state_dir == Path("/var/lib/school-gateway") and settings.interval == 900.0


def test_absent_or_disabled_is_none(tmp_path):
    assert _read("dns: {}\n", tmp_path) == (None, [])
    assert _read("updater:\n  enabled: false\n", tmp_path) == (None, [])


def test_mistakes_are_listed_with_lines(tmp_path):
    settings, problems = _read("""\
        updater:
          mirrors: [ftp://old.example/x]
          trusted_keys: [not-a-key]
          interval: -5
          colour: blue
        """, tmp_path)
    assert settings is None
    found = {(p.key, p.line) for p in problems}
    assert ("updater.bad_mirror", 2) in found
    assert ("updater.bad_key", 3) in found
    assert ("updater.positive", 4) in found
    assert ("schema.unknown_key", 5) in found
    text = ConfigError(problems).render("vi")
    assert "gateway.yaml:5" in text and "colour" in text
    assert "khoá công khai" in text  # Vietnamese by default
    assert "public key" in ConfigError(problems).render("en")


def test_required_keys(tmp_path):
    settings, problems = _read("updater:\n  interval: 60\n", tmp_path)
    assert settings is None
    assert {p.args.get("key") for p in problems if p.key == "schema.missing_key"} == {"mirrors", "trusted_keys"}
