"""Bundle files (tar.gz): build and publish on the Department side, verify and unpack safely on a box."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway import __version__
from gateway.errors import BundleError
from gateway.i18n import tr
from gateway.policy.compile import PolicyPaths, load_policy
from gateway.updater.disk import disk_full, fsync_dir, write_atomic
from gateway.updater.keys import key_id, verify_any
from gateway.updater.manifest import (
    COMPILED,
    FORMAT,
    MANIFEST,
    MAX_MANIFEST,
    MAX_SIGNATURE,
    POINTER,
    SIGNATURE,
    canonical,
    check_path,
    decode_signature,
    iso,
    parse_manifest,
    pointer_body,
)
from gateway.updater.reasons import UpdateFailure

CHUNK = 1 << 16
DEFAULT_VALID = dt.timedelta(days=30)
_READ_ERRORS = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, UnicodeError)


class BundleRefused(BundleError):
    """The Department side refuses to build or publish; renders in Vietnamese or English."""

    def __init__(self, key: str, /, **args: object) -> None:
        self.key, self.args_ = key, args
        super().__init__(tr(key, "en", **args))

    def render(self, lang: str = "vi") -> str:
        return tr(self.key, lang, **self.args_)


def bundle_name(version: int) -> str:
    return f"school-gateway-bundle-{version}.tar.gz"


def _sha256_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


# -- Department side ------------------------------------------------------------------------------

def _collect(source: Path, prefix: str) -> list[tuple[str, Path]]:
    """Regular files under `source` as bundle paths; hidden files and editor backups stay behind."""
    out = []
    for path in sorted(source.rglob("*")):
        rel = path.relative_to(source)
        if any(part.startswith(".") for part in rel.parts) or path.name.endswith("~") or not path.is_file():
            continue
        name = f"{prefix}/{rel.as_posix()}"
        try:
            check_path(name)
        except ValueError:
            raise BundleRefused("bundle.bad_file", path=path) from None
        out.append((name, path))
    return out


def build_bundle(department: Path, blocklists: Path, key: Ed25519PrivateKey, version: int, out: Path, *,
                 school: Path | None, created: dt.datetime | None = None, expires: dt.datetime | None = None,
                 min_gateway: str = __version__, compiled: bool = True) -> tuple[Path, dict]:
    """Pack the Department layer into a signed bundle; returns (bundle path, manifest).

    The layer is compiled as the box will see it (the bundle's own layout, with `school`) and a layer
    that does not compile raises ConfigError: no bundle is written. school=None skips that check
    (tests use it to make a broken bundle on purpose). `out` may be a folder.
    """
    created = (created or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    expires = expires or created + DEFAULT_VALID
    if expires <= created:
        raise BundleRefused("bundle.bad_expiry", value=iso(expires))
    files = _collect(Path(department), "policies/department") + _collect(Path(blocklists), "blocklists")
    stamp = int(created.timestamp())
    with tempfile.TemporaryDirectory(prefix="sgw-bundle-") as tmp:
        stage = Path(tmp)
        for name, path in files:
            target = stage / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            # One fixed mtime, restored on the box, so the compiled list form's fingerprint matches there.
            os.utime(target, (stamp, stamp))
        policy_version = "?"
        if school is not None:
            cache = stage / "compiled"
            if compiled:
                cache.mkdir()
            snapshot = load_policy(PolicyPaths(stage / "policies/department", Path(school),
                                               cache if compiled else None, stage))
            policy_version = snapshot.version
            if compiled and (stage / COMPILED).is_file():
                files.append((COMPILED, stage / COMPILED))
                os.utime(stage / COMPILED, (stamp, stamp))
        entries = []
        for name, _ in files:
            sha, size = _sha256_file(stage / name)
            entries.append({"path": name, "size": size, "sha256": sha})
        manifest = {
            "format": FORMAT,
            "version": int(version),
            "created": iso(created),
            "expires": iso(expires),
            "min_gateway": min_gateway,
            "policy_version": policy_version,
            "files": entries,
        }
        manifest_bytes = json.dumps(manifest, indent=1, sort_keys=True, ensure_ascii=True).encode() + b"\n"
        signature = base64.b64encode(key.sign(manifest_bytes)) + b"\n"
        out = Path(out)
        if out.is_dir():
            out = out / bundle_name(version)
        tmp_out = out.with_name(f".{out.name}.tmp")
        with open(tmp_out, "wb") as raw:
            # mtime=0 and fixed tar headers: the same inputs give the same bytes (reproducible bundles).
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz, \
                    tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for name, data in ((MANIFEST, manifest_bytes), (SIGNATURE, signature)):
                    tar.addfile(_info(name, len(data), stamp), io.BytesIO(data))
                for name, _ in files:
                    with open(stage / name, "rb") as f:
                        tar.addfile(_info(name, os.fstat(f.fileno()).st_size, stamp), f)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp_out, out)
    return out, manifest


def _info(name: str, size: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.type = size, mtime, 0o644, tarfile.REGTYPE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def publish(bundle: Path, directory: Path, key: Ed25519PrivateKey) -> dict:
    """Lay `bundle` and a signed latest.json out in `directory` for a static web server; returns the pointer.

    The bundle file lands first and latest.json last, each by atomic rename, so a box never sees a
    pointer to a file that is not there yet.
    """
    manifest, _ = inspect_bundle(bundle, (key.public_key(),))
    version = manifest["version"]
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    pointer_path = directory / POINTER
    if pointer_path.exists():
        try:
            current = int(json.loads(pointer_path.read_text("utf-8")).get("version", 0))
        except (OSError, ValueError, TypeError, AttributeError):
            current = 0
        if current >= version:
            raise BundleRefused("bundle.not_newer", pointer=pointer_path, current=current)
    name = bundle_name(version)
    write_atomic(directory / name, Path(bundle).read_bytes())
    sha, size = _sha256_file(directory / name)
    body = pointer_body(version, name, sha, size, manifest["created"], key_id(key.public_key()))
    doc = dict(body, signature=base64.b64encode(key.sign(canonical(body))).decode("ascii"))
    write_atomic(pointer_path, json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n")
    return doc


# -- reading (both sides) -------------------------------------------------------------------------

class _Capped(io.RawIOBase):
    """Decompressed bytes with a ceiling: a gzip bomb stops at the limit instead of filling memory/disk."""

    def __init__(self, inner: io.BufferedIOBase, limit: int, shown_limit: int) -> None:
        self.inner, self.left, self.shown_limit = inner, limit, shown_limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.inner.read(min(len(buffer), self.left + 1))
        if len(data) > self.left:
            raise UpdateFailure("size", "updater.too_large", limit=self.shown_limit)
        self.left -= len(data)
        buffer[: len(data)] = data
        return len(data)


@dataclass
class Unpacked:
    manifest: dict
    manifest_bytes: bytes
    signature: bytes
    key: Ed25519PublicKey


def _members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    while True:
        try:
            member = tar.next()
        except _READ_ERRORS as exc:
            raise UpdateFailure("malformed", "updater.malformed", detail=f"not a readable tar.gz ({exc})") from None
        if member is None:
            return
        yield member


def _read_small(tar: tarfile.TarFile, member: tarfile.TarInfo | None, name: str, limit: int) -> bytes:
    if member is None or member.name != name or member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
        raise UpdateFailure("malformed", "updater.malformed", detail=f"the bundle must start with {MANIFEST} "
                                                                     f"and {SIGNATURE}")
    if member.size > limit:
        raise UpdateFailure("malformed", "updater.malformed", detail=f"{name} is larger than {limit} bytes")
    try:
        return tar.extractfile(member).read()
    except _READ_ERRORS as exc:
        raise UpdateFailure("malformed", "updater.malformed", detail=f"not a readable tar.gz ({exc})") from None


def read_bundle(path: Path, keys: tuple[Ed25519PublicKey, ...], *, gateway_version: str | None,
                max_unpacked: int, dest: Path | None = None, check: Callable[[dict], None] | None = None,
                on_file: Callable[[str], None] | None = None) -> Unpacked:
    """Verify a bundle and, with `dest`, write its files there (an empty staging folder).

    Order matters: manifest.sig is verified against the trusted keys over the exact manifest bytes
    before the manifest is parsed; `check` (rollback, expiry) runs before any file is written; every
    member must be a regular file (or a folder) listed in the manifest, with its size and SHA-256.
    Links, devices, absolute paths and '..' never get as far as the disk. Raises UpdateFailure.
    """
    with open(path, "rb") as raw:
        gz = gzip.GzipFile(fileobj=raw, mode="rb")
        # Tar headers and padding on top of the declared sizes, before the real check below.
        capped = _Capped(gz, max_unpacked + MAX_MANIFEST + (16 << 20), max_unpacked)
        try:
            tar = tarfile.open(fileobj=io.BufferedReader(capped, CHUNK), mode="r|")  # noqa: SIM115 (closed below)
        except _READ_ERRORS as exc:
            raise UpdateFailure("malformed", "updater.malformed", detail=f"not a readable tar.gz ({exc})") from None
        with tar:
            members = _members(tar)
            manifest_bytes = _read_small(tar, next(members, None), MANIFEST, MAX_MANIFEST)
            sig_bytes = _read_small(tar, next(members, None), SIGNATURE, MAX_SIGNATURE)
            signer = verify_any(keys, decode_signature(sig_bytes), manifest_bytes)
            if signer is None:
                raise UpdateFailure("signature", "updater.manifest_signature")
            manifest = parse_manifest(manifest_bytes, gateway_version)
            if check is not None:
                check(manifest)
            expected = {e["path"]: e for e in manifest["files"]}
            if sum(e["size"] for e in expected.values()) > max_unpacked:
                raise UpdateFailure("size", "updater.too_large", limit=max_unpacked)
            stamp = int(manifest["_created"])
            folders = {"/".join(p.split("/")[:i]) for p in expected for i in range(1, p.count("/") + 1)}
            if dest is not None:
                _free_space(dest, sum(e["size"] for e in expected.values()))
            seen: set[str] = set()
            made: set[Path] = set()
            for member in members:
                name = member.name
                if member.type == tarfile.DIRTYPE and name.rstrip("/") in folders:
                    continue
                if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE) or name not in expected or name in seen:
                    raise UpdateFailure("malformed", "updater.malformed",
                                        detail=f"member {name!r} is not a file listed in the manifest "
                                               "(or is a link, a device, or a repeat)")
                entry = expected[name]
                if member.size != entry["size"]:
                    raise UpdateFailure("hash", "updater.file_hash", path=name)
                seen.add(name)
                source = tar.extractfile(member)
                digest = _copy_member(source, dest / name if dest is not None else None, made, dest, stamp)
                if digest != entry["sha256"]:
                    raise UpdateFailure("hash", "updater.file_hash", path=name)
                if on_file is not None:
                    on_file(name)
            missing = sorted(set(expected) - seen)
            if missing:
                raise UpdateFailure("malformed", "updater.malformed",
                                    detail=f"{len(missing)} listed files are missing, e.g. {missing[0]}")
    if dest is not None:
        _write_meta(dest, manifest_bytes, sig_bytes, made)
    return Unpacked(manifest, manifest_bytes, sig_bytes, signer)


def _free_space(dest: Path, need: int) -> None:
    try:
        stat = os.statvfs(dest)
    except OSError:
        return
    if stat.f_bavail * stat.f_frsize < need:
        raise UpdateFailure("disk_full", "updater.disk_full", path=dest.parent)


def _copy_member(source, target: Path | None, made: set[Path], root: Path | None, stamp: int) -> str:
    digest = hashlib.sha256()
    fd = None
    try:
        if target is not None:
            _mkdirs(target.parent, root, made)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        while True:
            try:
                chunk = source.read(CHUNK)
            except _READ_ERRORS as exc:
                raise UpdateFailure("malformed", "updater.malformed", detail=f"not a readable tar.gz ({exc})") \
                    from None
            if not chunk:
                break
            digest.update(chunk)
            if fd is not None:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
        if fd is not None:
            # The mtime the Department compiled the list form with, so the box can use it (docs/bundles.md).
            os.utime(fd, (stamp, stamp))
            os.fsync(fd)
    except OSError as exc:
        if disk_full(exc):
            raise UpdateFailure("disk_full", "updater.disk_full", path=root.parent if root else "?") from None
        raise
    finally:
        if fd is not None:
            os.close(fd)
    return digest.hexdigest()


def _mkdirs(folder: Path, root: Path, made: set[Path]) -> None:
    missing = []
    while folder != root and folder not in made:
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o755)
        made.add(path)


def _write_meta(dest: Path, manifest_bytes: bytes, sig_bytes: bytes, made: set[Path]) -> None:
    try:
        for name, data in ((MANIFEST, manifest_bytes), (SIGNATURE, sig_bytes)):
            fd = os.open(dest / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
        # Deepest first: each folder's entry in its parent is durable only after the parent is synced.
        for folder in sorted(made, key=lambda p: len(p.parts), reverse=True):
            fsync_dir(folder)
        fsync_dir(dest)
    except OSError as exc:
        if disk_full(exc):
            raise UpdateFailure("disk_full", "updater.disk_full", path=dest.parent) from None
        raise


def inspect_bundle(path: Path, keys: tuple[Ed25519PublicKey, ...], *, gateway_version: str | None = None,
                   max_unpacked: int = 1 << 34) -> tuple[dict, Ed25519PublicKey]:
    """Verify a bundle without unpacking it (`bundle verify`, `publish`); returns (manifest, signing key)."""
    result = read_bundle(Path(path), keys, gateway_version=gateway_version, max_unpacked=max_unpacked)
    return result.manifest, result.key


def verify_tree(root: Path) -> str | None:
    """Is an unpacked bundle whole? None if every listed file is there with its size and SHA-256, else why."""
    try:
        manifest = json.loads((root / MANIFEST).read_bytes())
        files = manifest["files"]
        for entry in files:
            path = root / check_path(entry["path"])
            if path.is_symlink() or not path.is_file():
                return f"{entry['path']} is missing"
            sha, size = _sha256_file(path)
            if size != entry["size"] or sha != entry["sha256"]:
                return f"{entry['path']} differs from the manifest"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"unreadable manifest ({exc})"
    return None
