"""`proxy:` in gateway.yaml -> ProxySettings; errors name the line."""

from __future__ import annotations

import textwrap
from pathlib import Path

from gateway.errors import Problem
from gateway.policy.schema import FieldReader
from gateway.policy.source import load_file
from gateway.proxy.config import Address, ProxySettings, read_proxy_settings


def _read(tmp_path: Path, text: str) -> tuple[ProxySettings | None, list[Problem]]:
    path = tmp_path / "gateway.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    doc, problems = load_file(path, "gateway.yaml")
    assert not problems
    r = FieldReader("gateway.yaml", problems)
    return read_proxy_settings(doc.get("proxy"), r, tmp_path), problems


def test_absent_or_disabled_is_none(tmp_path):
    assert _read(tmp_path, "dns: {}\n") == (None, [])
    assert _read(tmp_path, "proxy: {enabled: false}\n") == (None, [])


def test_defaults(tmp_path):
    settings, problems = _read(tmp_path, "proxy: {}\n")
    assert problems == []
    assert settings.mode == "explicit" and settings.listen == Address("127.0.0.1", 3128)
    assert settings.connect_ports == (443,) and settings.no_sni == "block" and settings.intercept == "needed"
    assert settings.stream_large_bodies == "1m"
    assert [p.name for p in settings.never_intercept] == ["never_intercept.txt"]


def test_full_section(tmp_path):
    (tmp_path / "extra.txt").write_text("bank.example\n")
    settings, problems = _read(tmp_path, """\
        proxy:
          mode: both
          listen: 0.0.0.0:3128
          transparent_listen: "[::]:3129"
          blockpage_listen: 10.10.0.1:80
          pac: {proxy: "10.10.0.1:3128", direct: [intranet.school.vn], fallback_direct: false}
          intercept: all
          never_intercept: {lists: [extra.txt], names: ["*.hospital.example"]}
          ca: {dir: ca, passphrase_file: ca.pass}
          ref_key: keys/ref.key
          connect_ports: [443, 8443]
          no_sni: allow
          handshake_timeout: 5
          stream_large_bodies: 512k
          transparent_origins: {lab.test: "127.0.0.1:8443"}
        """)
    assert problems == []
    assert settings.transparent_listen == Address("::", 3129)
    assert settings.blockpage_listen == Address("10.10.0.1", 80)
    assert settings.pac_target() == "10.10.0.1:3128" and settings.pac_direct == ("intranet.school.vn",)
    assert settings.never_intercept[-1] == tmp_path / "extra.txt" and len(settings.never_intercept) == 2
    assert settings.never_intercept_names == ("hospital.example",)
    assert settings.ca_dir == tmp_path / "ca" and settings.ca_passphrase_file == tmp_path / "ca.pass"
    assert settings.ref_key == tmp_path / "keys" / "ref.key"
    assert settings.connect_ports == (443, 8443) and settings.no_sni == "allow" and settings.intercept == "all"
    assert settings.transparent_origins == {"lab.test": Address("127.0.0.1", 8443)}
    assert settings.explicit and settings.transparent


def test_errors_name_lines(tmp_path):
    settings, problems = _read(tmp_path, """\
        proxy:
          mode: sideways
          listen: here
          colour: blue
          connect_ports: [443, 0]
          stream_large_bodies: lots
          never_intercept: {lists: [missing.txt]}
        """)
    found = {(p.key, p.line) for p in problems}
    assert ("schema.choice", 2) in found
    assert ("proxy.bad_address", 3) in found
    assert ("schema.unknown_key", 4) in found
    assert ("proxy.config.bad_port", 5) in found
    assert ("proxy.bad_size", 6) in found
    assert ("policy.list_missing", 7) in found
    assert settings.mode == "explicit"  # bad values fall back; the caller rejects the file anyway
    assert "sideways" in problems[0].render("en") or any("sideways" in p.render("en") for p in problems)


def test_blockpage_off(tmp_path):
    settings, _ = _read(tmp_path, "proxy: {blockpage_listen: off}\n")
    assert settings.blockpage_listen is None
