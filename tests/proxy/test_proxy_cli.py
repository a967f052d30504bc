"""`school-gateway ca init` and the proxy's command registration."""

from __future__ import annotations

import argparse
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from gateway.proxy.cli import add_commands, build_parser


def _run(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


def test_add_commands_registers_proxy_and_ca():
    parser = argparse.ArgumentParser(prog="school-gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    add_commands(sub)
    args = parser.parse_args(["proxy", "--listen", "127.0.0.1:3128", "--mode", "transparent"])
    assert args.command == "proxy" and args.mode == "transparent" and callable(args.func)
    args = parser.parse_args(["ca", "init", "--dir", "/tmp/x", "--force"])
    assert args.ca_command == "init" and args.force


def test_ca_init_with_passphrase(tmp_path, capsys):
    secret = tmp_path / "pass"
    secret.write_text("đúng-mật-khẩu\n", encoding="utf-8")
    folder = tmp_path / "ca"
    assert _run(["ca", "init", "--dir", str(folder), "--passphrase-file", str(secret), "--key-size", "2048",
                 "--name", "Trường Thử CA", "--lang", "en"]) == 0
    out = capsys.readouterr().out
    for platform in ("Windows", "macOS", "ChromeOS", "Android", "iOS"):
        assert platform in out
    key_file = folder / "mitmproxy-ca.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    raw = key_file.read_bytes()
    assert b"ENCRYPTED PRIVATE KEY" in raw
    with pytest.raises((TypeError, ValueError)):
        load_pem_private_key(raw, None)
    load_pem_private_key(raw, "đúng-mật-khẩu".encode())
    cert = x509.load_pem_x509_certificate((folder / "school-ca.pem").read_bytes())
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert "Trường Thử CA" in cert.subject.rfc4514_string()
    assert (folder / "school-ca.cer").read_bytes()[:1] == b"\x30"  # DER
    # A second run refuses to replace the CA (devices trust it) unless told to.
    assert _run(["ca", "init", "--dir", str(folder), "--key-size", "2048"]) == 1
    assert _run(["ca", "init", "--dir", str(folder), "--key-size", "2048", "--force"]) == 0
    assert b"ENCRYPTED" not in key_file.read_bytes()


def test_ca_init_vietnamese_instructions(tmp_path, capsys):
    assert _run(["ca", "init", "--dir", str(tmp_path / "ca"), "--key-size", "2048"]) == 0
    out = capsys.readouterr().out
    assert "Đã tạo CA của trường" in out and "Cài đặt tin cậy chứng nhận" in out and "certutil" in out


def test_mitmproxy_loads_the_encrypted_ca(tmp_path):
    pytest.importorskip("mitmproxy")
    from mitmproxy.certs import CertStore

    secret = tmp_path / "pass"
    secret.write_text("pw\n")
    folder = tmp_path / "ca"
    assert _run(["ca", "init", "--dir", str(folder), "--passphrase-file", str(secret), "--key-size", "2048"]) == 0
    store = CertStore.from_store(folder, "mitmproxy", 2048, passphrase=b"pw")
    entry = store.get_cert("school.example", [])
    assert entry.cert.issuer == store.default_ca.subject


def test_proxy_command_serves_and_stops(tmp_path):
    pytest.importorskip("mitmproxy")
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from policyfactory import write_policy
    from proxyrig import BANDS, CATEGORIES, LISTS, SCHOOL, connect, read_response

    paths = write_policy(tmp_path / "policy", categories=CATEGORIES, bands=BANDS, school=SCHOOL, lists=LISTS)
    config = tmp_path / "gateway.yaml"
    config.write_text(f"""\
policy: {{department: {paths.department}, school: {paths.school}}}
proxy:
  listen: 127.0.0.1:0
  blockpage_listen: "off"
  ref_key: {tmp_path / 'ref.key'}
  ca: {{dir: {tmp_path / 'ca'}}}
""", encoding="utf-8")
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-m", "gateway.proxy.cli", "proxy", "--config", str(config),
                             "--lang", "en"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=repo, env=dict(os.environ, PYTHONPATH=str(repo)))
    try:
        address = None
        for line in proc.stdout:  # readiness: the line it prints once it listens
            if line.startswith("Proxy running: "):
                host, port = line.split("explicit ", 1)[1].split(",")[0].strip().rsplit(":", 1)
                address = (host, int(port))
                break
        assert address is not None, "the proxy never said it was running"
        with connect(address, "127.0.0.1") as sock:
            sock.sendall(b"GET http://casino.example/ HTTP/1.1\r\nHost: casino.example\r\n\r\n")
            status, _, body = read_response(sock)
        assert status == 403 and b"This website is blocked" not in body  # Vietnamese by default
        proc.send_signal(signal.SIGHUP)  # reload: keeps serving
        with connect(address, "127.0.0.1") as sock:
            sock.sendall(b"GET http://casino.example/ HTTP/1.1\r\nHost: casino.example\r\n\r\n")
            assert read_response(sock)[0] == 403
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        proc.stdout.close()
