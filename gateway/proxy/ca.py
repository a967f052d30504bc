"""`school-gateway ca init`: the box's own CA for TLS inspection (key 0600, optionally passphrase-encrypted)."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.proxy import messages as _messages  # noqa: F401  (registers proxy.ca.* strings)

KEY_FILE = "mitmproxy-ca.pem"  # private key + certificate, the file mitmproxy's CertStore loads
CERT_PEM = "school-ca.pem"
CERT_DER = "school-ca.cer"
PLATFORMS = ("windows", "macos", "chromeos", "android", "ios")


@dataclass(frozen=True, slots=True)
class CaFiles:
    key: Path
    cert_pem: Path
    cert_der: Path
    fingerprint: str  # SHA-256 of the DER certificate, colon-separated hex


class CaExists(FileExistsError):
    """A CA is already there and `force` was not given."""


def _write(path: Path, data: bytes, mode: int) -> None:
    # Write beside, then rename: a crash never leaves half a key, and the mode is set before any byte.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def create_ca(folder: Path, *, common_name: str, organisation: str, passphrase: bytes | None = None,
              days: int = 1826, key_size: int = 3072, force: bool = False,
              now: dt.datetime | None = None) -> CaFiles:
    """Generate a new CA in `folder` (made 0700). Raises CaExists unless `force`.

    Each box makes its own: a key shared between boxes would let one leaked copy intercept every
    school's traffic (the Superfish / eDellRoot lesson). The key file is 0600 and, with a passphrase,
    encrypted (PKCS#8, the best encryption cryptography offers).
    """
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, 0o700)
    key_path = folder / KEY_FILE
    if key_path.exists() and not force:
        raise CaExists(str(key_path))
    now = now or dt.datetime.now(dt.UTC)
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    name = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64]),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation[:64] or "School gateway"),
    ])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=2))  # a client whose clock lags a little still trusts it
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    encryption = (serialization.BestAvailableEncryption(passphrase) if passphrase
                  else serialization.NoEncryption())
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_der = cert.public_bytes(serialization.Encoding.DER)
    _write(key_path, key_pem + cert_pem, 0o600)
    _write(folder / CERT_PEM, cert_pem, 0o644)
    _write(folder / CERT_DER, cert_der, 0o644)
    digest = cert.fingerprint(hashes.SHA256()).hex().upper()
    return CaFiles(key_path, folder / CERT_PEM, folder / CERT_DER,
                   ":".join(digest[i:i + 2] for i in range(0, len(digest), 2)))


def instructions(files: CaFiles, lang: str, download_url: str | None = None) -> str:
    """What `ca init` prints: where the files are and how to install the certificate on each platform."""
    from gateway.i18n import tr

    lines = [tr("proxy.ca.created", lang),
             f"  {tr('proxy.ca.key', lang)}: {files.key}",
             f"  {tr('proxy.ca.cert', lang)}: {files.cert_pem} , {files.cert_der}",
             f"  {tr('proxy.ca.fingerprint', lang)}: {files.fingerprint}"]
    if download_url:
        lines.append("  " + tr("proxy.ca.download", lang, url=download_url))
    lines += ["", tr("proxy.ca.install", lang)]
    lines += [f"  • {tr('proxy.ca.' + p, lang)}" for p in PLATFORMS]
    lines += ["", tr("proxy.ca.warning", lang)]
    return "\n".join(lines)
