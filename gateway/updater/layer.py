"""Compiling a Department layer that came in a bundle: PolicyPaths for it, seeded with its compiled lists."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from gateway.core.snapshot import Snapshot
from gateway.policy.compile import PolicyPaths, load_policy
from gateway.updater.disk import token
from gateway.updater.manifest import COMPILED, MANIFEST

CACHE_NAME = "lists.sgwset"  # the file name gateway.policy.compile uses inside cache_dir


def bundle_root(department: Path) -> Path | None:
    """The bundle folder holding `department` (…/<bundle>/policies/department), or None if it is not one."""
    root = Path(department).parent.parent
    return root if (root / MANIFEST).is_file() else None


def policy_paths(department: Path, school: Path, cache_dir: Path | None = None) -> PolicyPaths:
    """PolicyPaths for a Department layer; for a bundle, its compiled list form seeds `cache_dir`.

    The compiled form is only ever copied out, never used in place: the list compiler rewrites its
    cache when the fingerprint differs, and a bundle's files must stay exactly as the manifest says.
    A stale or foreign compiled form is simply rebuilt by the compiler (its fingerprint covers every
    list's path, size and mtime; the box restores the mtimes the Department built it with).
    """
    department = Path(department)
    root = bundle_root(department)
    if root is None:
        return PolicyPaths(department, Path(school), cache_dir, None)
    compiled = root / COMPILED
    if cache_dir is not None and compiled.is_file():
        _seed(compiled, Path(cache_dir) / CACHE_NAME)
    # Display paths relative to the bundle make the fingerprint's paths match the Department's build.
    return PolicyPaths(department, Path(school), cache_dir, root)


def _seed(source: Path, target: Path) -> None:
    try:
        src = source.stat()
        try:
            dst = target.stat()
            if (dst.st_size, dst.st_mtime_ns) == (src.st_size, src.st_mtime_ns):
                return
        except FileNotFoundError:
            pass
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{token()}.tmp")
        shutil.copy2(source, tmp)
        os.replace(tmp, target)  # a snapshot still mapping the old file keeps its inode
    except OSError:
        pass  # only a cache: the compiler parses the lists instead


def make_validator(school: Path, cache_dir: Path | None = None) -> Callable[[Path], Snapshot]:
    """The `validate` an Updater needs: compile a candidate Department folder with this box's school file."""

    def validate(department: Path) -> Snapshot:
        return load_policy(policy_paths(department, school, cache_dir))

    return validate
