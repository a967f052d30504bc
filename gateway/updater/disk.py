"""Crash-safe file writes: fsync of files and their folders, atomic replace, and telling a full disk apart."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from pathlib import Path

_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in _FULL


def fsync_dir(path: Path) -> None:
    """Make a folder's entries (creates, renames, deletes) durable; a rename is not until this."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def token() -> str:
    return secrets.token_hex(4)


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace `path` with `data`: a reader, or a box after power loss, sees the old bytes or the new."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{token()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
