"""The box's bundles on disk: staging, atomic `current` switch, pruning, recovery after a crash, small state."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from gateway.updater.bundle import verify_tree
from gateway.updater.disk import fsync_dir, token, write_atomic
from gateway.updater.manifest import MANIFEST

log = logging.getLogger("gateway.updater")

KEEP = 3  # bundles kept on disk: the current one and the two before it, to fall back to
_VERSION_DIR = re.compile(r"^[1-9][0-9]{0,18}$")
# Names only this module creates; anything else found in bundles/ is left alone.
STAGING, TRASH, LINK_TMP, PART = ".staging-", ".trash-", ".current-", "download-"


class BundleStore:
    """state_dir/bundles/<version>/ (whole bundles), bundles/current -> <version>, state_dir/updater/ (state).

    Every change is made beside the live data and put in place by one rename, so after a crash at any
    point the box has the old bundle or the new one, and `recover` only has to sweep up leftovers.
    """

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.bundles = self.state_dir / "bundles"
        self.current = self.bundles / "current"
        self.work = self.state_dir / "updater"

    def ensure(self) -> None:
        for path in (self.state_dir, self.bundles, self.work):
            path.mkdir(parents=True, exist_ok=True)

    # -- locking: one updater per state_dir (the daemon and a cron `update --once` may both run) --
    @contextlib.contextmanager
    def lock(self) -> Iterator[bool]:
        """Yields True with the lock held, False if another process holds it (never waits)."""
        self.ensure()
        fd = os.open(self.work / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True  # the kernel drops the lock when the process dies, even by SIGKILL
        finally:
            os.close(fd)

    # -- reading ---------------------------------------------------------------------------------
    def current_version(self) -> int | None:
        try:
            target = os.readlink(self.current)
        except OSError:
            return None
        if not _VERSION_DIR.match(target) or not (self.bundles / target).is_dir():
            return None
        return int(target)

    def current_dir(self) -> Path | None:
        version = self.current_version()
        return self.bundles / str(version) if version is not None else None

    def current_manifest(self) -> dict | None:
        folder = self.current_dir()
        if folder is None:
            return None
        try:
            doc = json.loads((folder / MANIFEST).read_bytes())
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None

    def versions(self) -> list[int]:
        try:
            names = os.listdir(self.bundles)
        except OSError:
            return []
        return sorted(int(n) for n in names if _VERSION_DIR.match(n) and (self.bundles / n).is_dir()
                      and not (self.bundles / n).is_symlink())

    # -- installing ------------------------------------------------------------------------------
    def new_staging(self, version: int) -> Path:
        self.ensure()
        path = self.bundles / f"{STAGING}{version}-{token()}"
        path.mkdir(mode=0o755)
        return path

    def new_download(self) -> Path:
        self.ensure()
        return self.work / f"{PART}{token()}.part"

    def commit(self, staging: Path, version: int) -> Path:
        """Rename a whole, verified staging folder to bundles/<version> (replacing a leftover copy)."""
        final = self.bundles / str(version)
        if final.exists() or final.is_symlink():
            if self.current_version() == version:
                raise RuntimeError(f"bundle {version} is current; it is never replaced in place")
            self._discard(final)
        os.rename(staging, final)
        fsync_dir(self.bundles)
        return final

    def switch(self, version: int, fault: Callable[[str], None]) -> None:
        """Point `current` at bundles/<version>: a new symlink under a temporary name, then one rename."""
        tmp = self.bundles / f"{LINK_TMP}{token()}"
        os.symlink(str(version), tmp)  # relative: the state folder can be moved or mounted elsewhere
        fault("linked")
        os.replace(tmp, self.current)
        fsync_dir(self.bundles)

    def prune(self, fault: Callable[[str], None], keep: int = KEEP) -> list[int]:
        current = self.current_version()
        versions = self.versions()
        kept = set(versions[-keep:]) | ({current} if current is not None else set())
        removed = []
        for version in versions:
            if version not in kept:
                self._discard(self.bundles / str(version))
                removed.append(version)
                fault("pruning")
        return removed

    def _discard(self, path: Path) -> None:
        # Renamed first, then deleted: a crash mid-delete leaves a .trash-* folder, never a half bundle
        # under a version name that recovery could mistake for a real one.
        trash = self.bundles / f"{TRASH}{path.name}-{token()}"
        os.rename(path, trash)
        fsync_dir(self.bundles)
        shutil.rmtree(trash, ignore_errors=True)

    # -- state (written only after a bundle is fully verified and switched) -----------------------
    def read_state(self, name: str) -> dict:
        try:
            doc = json.loads((self.work / name).read_bytes())
        except (OSError, ValueError):
            return {}
        return doc if isinstance(doc, dict) else {}

    def write_state(self, name: str, doc: dict) -> None:
        self.ensure()
        write_atomic(self.work / name, json.dumps(doc, sort_keys=True, indent=1).encode() + b"\n")

    # -- recovery --------------------------------------------------------------------------------
    def recover(self) -> list[tuple[str, dict]]:
        """Sweep leftovers of an interrupted install and make `current` name a whole bundle.

        Returns what was done as (message key, args) for the caller to log. Falls back to the newest
        whole bundle when `current` is missing, dangling or damaged; with none left, removes `current`
        (the app then serves the shipped baseline rather than a mix).
        """
        self.ensure()
        done: list[tuple[str, dict]] = []
        for name in sorted(os.listdir(self.bundles)):
            path = self.bundles / name
            if name.startswith((STAGING, TRASH)):
                shutil.rmtree(path, ignore_errors=True)
                done.append(("updater.removed_partial", {"name": name}))
            elif name.startswith(LINK_TMP):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                done.append(("updater.removed_partial", {"name": name}))
        for name in sorted(os.listdir(self.work)):
            if name.startswith(PART) or (name.startswith(".") and name.endswith(".tmp")):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.work / name)
                done.append(("updater.removed_partial", {"name": name}))

        current = self.current_version()
        bad = None
        if current is not None:
            why = verify_tree(self.bundles / str(current))
            if why is None:
                # A crash between the switch and pruning leaves one bundle too many.
                for version in self.prune(lambda step: None):
                    done.append(("updater.pruned", {"name": version}))
                fsync_dir(self.bundles)
                return done
            bad = str(current)
            done.append(("updater.damaged", {"name": current, "detail": why}))
        elif self.current.is_symlink() or self.current.exists():
            bad = "current"
            done.append(("updater.damaged", {"name": "current", "detail": "not a link to a bundle"}))
            if not self.current.is_symlink():
                self._discard(self.current)  # a real folder there would block the symlink switch
        else:
            # Nothing was ever switched in; a committed-but-unswitched bundle stays unused on purpose:
            # it was never in force, so the next poll installs (and re-validates) it properly.
            fsync_dir(self.bundles)
            return done

        for version in reversed(self.versions()):
            if version == current:
                continue
            why = verify_tree(self.bundles / str(version))
            if why is None:
                self.switch(version, lambda step: None)
                done.append(("updater.fell_back", {"bad": bad, "version": version}))
                break
            done.append(("updater.damaged", {"name": version, "detail": why}))
            self._discard(self.bundles / str(version))
        else:
            if self.current.is_symlink():
                os.unlink(self.current)
            fsync_dir(self.bundles)
            done.append(("updater.no_whole_bundle", {}))
        if current is not None and self.current_version() != current:
            self._discard(self.bundles / str(current))
        return done
