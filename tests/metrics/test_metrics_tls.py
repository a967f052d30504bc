"""/metrics over TLS and mutual TLS (the Department's scraper presents its client certificate)."""

from __future__ import annotations

import datetime as dt
import http.client
import ipaddress
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.metrics import MetricsServer


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject, issuer, key, issuer_key, *, ca=False, server=False):
    now = dt.datetime.now(dt.UTC)
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                            critical=False)
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    elif not ca:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _write(path, cert, key=None):
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        kpath = path.with_suffix(".key")
        kpath.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
        return kpath
    return None


@pytest.fixture
def pki(tmp_path):
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("Department CA", "Department CA", ca_key, ca_key, ca=True)
    srv_key = ec.generate_private_key(ec.SECP256R1())
    cli_key = ec.generate_private_key(ec.SECP256R1())
    files = {"ca": tmp_path / "ca.pem", "cert": tmp_path / "box.pem", "client": tmp_path / "scraper.pem"}
    _write(files["ca"], ca)
    files["key"] = _write(files["cert"], _cert("box", "Department CA", srv_key, ca_key, server=True), srv_key)
    files["client_key"] = _write(files["client"], _cert("scraper", "Department CA", cli_key, ca_key), cli_key)
    return files


def _status(port, ctx):
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=5)
    conn.request("GET", "/metrics")
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r.status, body


def test_tls_and_mutual_tls(pki):
    tls = {"cert": str(pki["cert"]), "key": str(pki["key"]), "client_ca": str(pki["ca"])}
    server = MetricsServer(lambda: b"schoolgw_up 1\n", "127.0.0.1", 0, ["127.0.0.0/8"], None, tls).start()
    try:
        trusting = ssl.create_default_context(cafile=str(pki["ca"]))
        with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
            _status(server.port, trusting)  # no client certificate: the handshake is refused
        trusting.load_cert_chain(str(pki["client"]), str(pki["client_key"]))
        assert _status(server.port, trusting) == (200, b"schoolgw_up 1\n")
        stranger = ssl.create_default_context()  # does not trust the box's certificate
        with pytest.raises(ssl.SSLError):
            _status(server.port, stranger)
    finally:
        server.stop()


def test_tls_without_client_certificates(pki):
    tls = {"cert": str(pki["cert"]), "key": str(pki["key"])}
    server = MetricsServer(lambda: b"ok\n", "127.0.0.1", 0, ["127.0.0.0/8"], None, tls).start()
    try:
        assert _status(server.port, ssl.create_default_context(cafile=str(pki["ca"])))[0] == 200
    finally:
        server.stop()
