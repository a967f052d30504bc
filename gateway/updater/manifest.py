"""The signed documents of a bundle: manifest.json (what it holds) and latest.json (where the newest is)."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
from typing import Any

from gateway.updater.reasons import UpdateFailure

FORMAT = 1  # manifest and pointer format this gateway reads and writes
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
POINTER = "latest.json"
MAX_MANIFEST = 1 << 20  # a manifest lists a few hundred files at most; anything bigger is not one
MAX_POINTER = 64 << 10
MAX_SIGNATURE = 1024
# Everything a bundle may carry lives under one of these; the school's layer never comes from a bundle.
ROOTS = ("policies/department/", "blocklists/", "compiled/")
REQUIRED = "policies/department/baseline.yaml"
COMPILED = "compiled/lists.sgwset"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_BUNDLE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\.tar\.gz$")
_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+-]{0,254}$")


def canonical(obj: Any) -> bytes:
    """The one byte form that is signed: sorted keys, no spaces, ASCII (so re-encoding cannot drift)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def iso(moment: dt.datetime | float) -> str:
    if not isinstance(moment, dt.datetime):
        moment = dt.datetime.fromtimestamp(moment, dt.UTC)
    return moment.astimezone(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: object) -> float:
    """UTC ISO time -> Unix seconds; raises ValueError (a time without a zone is refused: ambiguous)."""
    if not isinstance(value, str):
        raise ValueError("not text")
    moment = dt.datetime.fromisoformat(value.strip())
    if moment.tzinfo is None:
        raise ValueError("no time zone (use ...Z)")
    return moment.timestamp()


def version_tuple(text: str) -> tuple[int, ...]:
    """'0.10.2' -> (0, 10, 2); a pre-release tail ('0.2.0rc1') counts as its release (leading digits only)."""
    out = []
    for part in str(text).strip().split("."):
        digits = re.match(r"\d*", part).group()
        if not digits:
            break
        out.append(int(digits))
    if not out:
        raise ValueError(f"not a version: {text!r}")
    while len(out) > 1 and out[-1] == 0:
        out.pop()
    return tuple(out)


def check_path(path: object) -> str:
    """A file path a bundle may carry: relative, '/'-separated, under ROOTS, no '..', '.', links or oddities."""
    if not isinstance(path, str) or not path or len(path) > 512:
        raise ValueError(f"bad path {path!r}")
    if path.startswith("/") or "\\" in path or "\0" in path:
        raise ValueError(f"bad path {path!r}")
    parts = path.split("/")
    if any(not _PART.match(p) or p in (".", "..") for p in parts):
        raise ValueError(f"bad path {path!r}")
    if not path.startswith(ROOTS) or len(parts) < 2:
        raise ValueError(f"path {path!r} is outside {', '.join(ROOTS)}")
    return path


def _malformed(detail: str) -> UpdateFailure:
    return UpdateFailure("malformed", "updater.malformed", detail=detail)


def _int(doc: dict, key: str, minimum: int = 0) -> int:
    value = doc.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise _malformed(f"'{key}' must be a whole number ≥ {minimum}")
    return value


def _load_json(data: bytes, what: str) -> dict:
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _malformed(f"{what} is not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise _malformed(f"{what} is not a JSON object")
    return doc


def parse_manifest(data: bytes, gateway_version: str | None) -> dict:
    """Check a manifest whose signature has already been verified; return it as a dict.

    A newer format or min_gateway than this gateway understands is gateway_too_old, not malformed:
    the fix is to upgrade the box, and the metric should say so. gateway_version None skips the
    min_gateway check (the Department's `bundle verify` is not the box that will run it).
    """
    doc = _load_json(data, MANIFEST)
    fmt = _int(doc, "format", 1)
    version = _int(doc, "version", 1)
    if fmt > FORMAT:
        raise UpdateFailure("gateway_too_old", "updater.gateway_too_old", version=version,
                            need=f"format {fmt}", have=gateway_version or "?")
    try:
        created = parse_time(doc.get("created"))
        expires = parse_time(doc.get("expires"))
    except ValueError as exc:
        raise _malformed(f"'created'/'expires' must be UTC ISO times ({exc})") from None
    if expires <= created:
        raise _malformed("'expires' is not after 'created'")
    need = doc.get("min_gateway", "0")
    try:
        too_old = gateway_version is not None and version_tuple(gateway_version) < version_tuple(str(need))
    except ValueError as exc:
        raise _malformed(str(exc)) from None
    if too_old:
        raise UpdateFailure("gateway_too_old", "updater.gateway_too_old", version=version, need=need,
                            have=gateway_version)
    files = doc.get("files")
    if not isinstance(files, list) or not files:
        raise _malformed("'files' must be a non-empty list")
    seen: set[str] = set()
    dirs: set[str] = set()
    for entry in files:
        if not isinstance(entry, dict):
            raise _malformed("every entry of 'files' must be an object")
        try:
            path = check_path(entry.get("path"))
        except ValueError as exc:
            raise _malformed(str(exc)) from None
        if path in seen or path in dirs:
            raise _malformed(f"{path} is listed twice, or is both a file and a folder")
        _int(entry, "size")
        if not isinstance(entry.get("sha256"), str) or not _HEX64.match(entry["sha256"]):
            raise _malformed(f"{path}: 'sha256' must be 64 lower-case hex digits")
        seen.add(path)
        parts = path.split("/")
        dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
    if seen & dirs:
        raise _malformed("a path is both a file and a folder")
    if REQUIRED not in seen:
        raise _malformed(f"the bundle has no {REQUIRED}")
    doc["_created"], doc["_expires"] = created, expires  # parsed once; stripped before anything is written
    return doc


def public(manifest: dict) -> dict:
    """The manifest without the parsed helper fields (for observers and logs)."""
    return {k: v for k, v in manifest.items() if not k.startswith("_")}


def decode_signature(data: bytes) -> bytes:
    """manifest.sig holds base64 text (what `bundle build` writes) or the raw 64 bytes."""
    if len(data) == 64:
        return data
    try:
        raw = base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise UpdateFailure("signature", "updater.manifest_signature") from None
    if len(raw) != 64:
        raise UpdateFailure("signature", "updater.manifest_signature")
    return raw


def pointer_body(version: int, file: str, sha256: str, size: int, created: str, key: str) -> dict:
    return {"format": FORMAT, "version": version, "file": file, "sha256": sha256, "size": size,
            "created": created, "key": key}


def parse_pointer(data: bytes) -> tuple[dict, bytes, bytes]:
    """latest.json -> (pointer, signed bytes, signature). The shape is checked here, the signature by the caller.

    JSON must be parsed to find the signature; it is small (MAX_POINTER) and nothing is acted on before
    the signature over its canonical bytes is verified.
    """
    if len(data) > MAX_POINTER:
        raise _malformed(f"{POINTER} is larger than {MAX_POINTER} bytes")
    doc = _load_json(data, POINTER)
    sig = doc.pop("signature", None)
    try:
        signature = base64.b64decode(str(sig), validate=True) if isinstance(sig, str) else b""
    except (binascii.Error, ValueError):
        signature = b""
    if len(signature) != 64:
        raise UpdateFailure("signature", "updater.pointer_signature", url=POINTER)
    return doc, canonical(doc), signature


def check_pointer(doc: dict, gateway_version: str) -> dict:
    """Shape of a pointer whose signature is verified."""
    fmt = _int(doc, "format", 1)
    version = _int(doc, "version", 1)
    if fmt > FORMAT:
        raise UpdateFailure("gateway_too_old", "updater.gateway_too_old", version=version,
                            need=f"format {fmt}", have=gateway_version)
    _int(doc, "size", 1)
    if not isinstance(doc.get("file"), str) or not _BUNDLE_NAME.match(doc["file"]):
        raise _malformed("'file' must be a plain file name ending in .tar.gz")
    if not isinstance(doc.get("sha256"), str) or not _HEX64.match(doc["sha256"]):
        raise _malformed("'sha256' must be 64 lower-case hex digits")
    return doc
