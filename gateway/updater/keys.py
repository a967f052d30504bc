"""Ed25519 keys for bundles: generate, load (base64 or PEM), sign, and verify against a trusted list."""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


class KeyFormatError(ValueError):
    """A key could not be read; the message says why (shown to the operator)."""


def raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_b64(key: Ed25519PublicKey) -> str:
    """The 44-character form an operator pastes into updater.trusted_keys."""
    return base64.b64encode(raw_public(key)).decode("ascii")


def key_id(key: Ed25519PublicKey) -> str:
    """Short, stable name of a public key for logs and `bundle verify` (not a secret, not trusted)."""
    return hashlib.sha256(raw_public(key)).hexdigest()[:16]


def public_from_b64(text: str) -> Ed25519PublicKey | None:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) != 32:
        return None
    return Ed25519PublicKey.from_public_bytes(raw)


def parse_public_key(value: str, base_dir: Path | None = None) -> Ed25519PublicKey:
    """A trusted key as written in gateway.yaml: base64 of the raw 32 bytes, or a path to a PEM/base64 file.

    Base64 is tried first: its alphabet contains '/', so "looks like a path" cannot decide it.
    """
    key = public_from_b64(value)
    if key is not None:
        return key
    path = Path(value)
    if base_dir is not None and not path.is_absolute():
        path = base_dir / path
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise KeyFormatError(f"not base64 of 32 bytes, and no file {path}") from None
    except OSError as exc:
        raise KeyFormatError(f"cannot read {path}: {exc.strerror or exc}") from None
    return load_public_bytes(data, str(path))


def load_public_bytes(data: bytes, where: str = "key") -> Ed25519PublicKey:
    """A public key file's content: PEM (SubjectPublicKeyInfo) or one line of base64."""
    if b"-----BEGIN" in data:
        try:
            key = serialization.load_pem_public_key(data)
        except ValueError as exc:
            raise KeyFormatError(f"{where}: not a PEM public key ({exc})") from None
        if not isinstance(key, Ed25519PublicKey):
            raise KeyFormatError(f"{where}: not an Ed25519 key")
        return key
    key = public_from_b64(data.decode("ascii", "replace"))
    if key is None:
        raise KeyFormatError(f"{where}: neither PEM nor base64 of a 32-byte Ed25519 key")
    return key


def load_trusted_keys(values: Iterable[str], base_dir: Path | None = None) -> tuple[Ed25519PublicKey, ...]:
    return tuple(parse_public_key(v, base_dir) for v in values)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise KeyFormatError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFormatError(f"{path}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFormatError(f"{path}: not an Ed25519 private key")
    return key


def write_key_pair(private_path: Path, public_path: Path) -> Ed25519PublicKey:
    """Create a new key pair; the private file is created 0600 and never overwritten."""
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    # O_EXCL: an existing key is never replaced (that would orphan every box trusting it).
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # the mode argument is filtered by umask; make it exact
        os.write(fd, private_pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    fd = os.open(public_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, public_pem)
    finally:
        os.close(fd)
    return key.public_key()


def sign(key: Ed25519PrivateKey, data: bytes) -> bytes:
    return key.sign(data)


def verify_any(keys: Iterable[Ed25519PublicKey], signature: bytes, data: bytes) -> Ed25519PublicKey | None:
    """The trusted key that made `signature` over `data`, or None. Several keys = rotation overlap."""
    for key in keys:
        try:
            key.verify(signature, data)
        except InvalidSignature:
            continue
        return key
    return None
