"""The box's poll loop: fetch latest.json, verify, download, verify again, compile, switch; keep the last good."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.client
import logging
import os
import random
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from gateway import __version__
from gateway.clock import clock_synchronised
from gateway.errors import ConfigError, Problem
from gateway.i18n import tr
from gateway.updater.bundle import CHUNK, read_bundle
from gateway.updater.disk import disk_full
from gateway.updater.fetch import Fetch, join, urllib_fetch
from gateway.updater.keys import KeyFormatError, load_trusted_keys, verify_any
from gateway.updater.manifest import MAX_POINTER, POINTER, check_pointer, iso, parse_pointer, parse_time, public
from gateway.updater.reasons import TRY_NEXT_MIRROR, UpdateFailure, most_telling
from gateway.updater.settings import UpdaterSettings
from gateway.updater.store import BundleStore

log = logging.getLogger("gateway.updater")

# Named points of an install, in order; `fault(step)` is called at each (tests crash the updater there).
STEPS = ("pointer", "downloading", "downloaded", "unpacking", "unpacked", "validated", "committed", "linked",
         "switched", "recorded", "pruning", "pruned")
# A bundle rejected for what it *is* (its bytes matched the signed pointer) is not downloaded again
# for this long, so a bad publication does not make every box fetch it every poll.
REJECTED_FOR = 6 * 3600.0
_CONTENT_REASONS = frozenset({"signature", "hash", "malformed", "expired", "rollback", "gateway_too_old",
                              "compile", "size"})
_NET_ERRORS = (OSError, http.client.HTTPException, ValueError)


class UpdateObserver(Protocol):
    """Metrics hooks (gateway.metrics implements them); called from the polling thread."""

    def failure(self, reason: str) -> None: ...

    def success(self, manifest: dict, at: float) -> None: ...

    def clock_untrusted(self, untrusted: bool) -> None: ...

    def stale_entries(self, count: int) -> None: ...


class _NoObserver:
    def failure(self, reason: str) -> None:
        pass

    def success(self, manifest: dict, at: float) -> None:
        pass

    def clock_untrusted(self, untrusted: bool) -> None:
        pass

    def stale_entries(self, count: int) -> None:
        pass


def _no_fault(step: str) -> None:
    pass


class Updater:
    """Keeps state_dir/bundles/current at the newest valid Department bundle; never leaves a box without one.

    Thread use: poll_once() and recover() take a lock on state_dir (one updater per box, across
    processes); run_forever() runs polls in one worker thread, so on_applied and the observer are
    called from that thread.
    """

    def __init__(self, settings: UpdaterSettings, *, validate: Callable[[Path], object],
                 on_applied: Callable[[Path], None] | None = None, observer: UpdateObserver | None = None,
                 clock: Callable[[], float] = time.time, clock_synced: Callable[[], bool] = clock_synchronised,
                 fetch: Fetch | None = None, fault: Callable[[str], None] | None = None,
                 gateway_version: str = __version__, lang: str = "vi") -> None:
        problems = []
        try:
            self._keys = load_trusted_keys(settings.trusted_keys)
        except KeyFormatError as exc:
            problems.append(Problem("updater.trusted_keys", None, "updater.bad_key", {"value": "", "why": str(exc)}))
        if not settings.trusted_keys:
            problems.append(Problem("updater", None, "schema.missing_key", {"key": "trusted_keys", "where": "updater"}))
        if not settings.mirrors:
            problems.append(Problem("updater", None, "schema.missing_key", {"key": "mirrors", "where": "updater"}))
        if problems:
            raise ConfigError(problems)
        self.settings = settings
        self._validate = validate
        self._on_applied = on_applied
        self._observer = observer or _NoObserver()
        self._clock = clock
        self._clock_synced = clock_synced
        self._fetch = fetch or urllib_fetch
        self._fault = fault or _no_fault
        self._gateway_version = gateway_version
        self._lang = lang
        self._store = BundleStore(settings.state_dir)
        self._known = self._store.current_version()  # what this process's app is serving
        self._trusted_before: bool | None = None

    # -- what the app reads ----------------------------------------------------------------------
    def department_dir(self) -> Path | None:
        """The installed bundle's Department folder, or None (the app then uses the shipped baseline).

        The path goes through bundles/<version>, not through the `current` link: a policy load that
        reads several files must not see half of one bundle and half of the next if a switch happens
        meanwhile. The folder stays on disk until two more bundles have been installed.
        """
        folder = self._store.current_dir()
        if folder is None:
            return None
        department = folder / "policies" / "department"
        return department if department.is_dir() else None

    def installed(self) -> dict | None:
        """The installed bundle's manifest (version, created, expires, min_gateway, files), or None."""
        return self._store.current_manifest()

    # -- one poll --------------------------------------------------------------------------------
    def poll_once(self) -> str:
        """One poll; returns "updated", "unchanged", "busy" (another updater holds the lock) or a reason.

        Expected failures are logged and reported, never raised. An exception that is not an
        Exception (a simulated crash in tests, KeyboardInterrupt) passes through untouched.
        """
        try:
            with self._store.lock() as held:
                if not held:
                    log.info(tr("updater.busy", self._lang, path=self._store.state_dir))
                    return "busy"
                return self._poll()
        except Exception as exc:  # a bug or an odd OS error must not stop the loop, and must be counted
            if disk_full(exc):
                log.warning(tr("updater.disk_full", self._lang, path=self._store.state_dir))
                self._observer.failure("disk_full")
                return "disk_full"
            log.exception(tr("updater.internal", self._lang, detail=f"{type(exc).__name__}: {exc}"))
            self._observer.failure("internal")
            return "internal"

    def _poll(self) -> str:
        installed = self._store.current_manifest()
        self._notice(installed)
        state = self._store.read_state("state.json")
        now, trusted, floor = self._now(installed, state)
        failures: list[UpdateFailure] = []
        mirrors = self.settings.mirrors
        for i, mirror in enumerate(mirrors):
            try:
                outcome = self._from_mirror(mirror, installed, state, now, trusted, floor)
            except UpdateFailure as failure:
                log.warning("%s: %s", mirror, failure.render(self._lang))
                failures.append(failure)
                if failure.reason in TRY_NEXT_MIRROR and i + 1 < len(mirrors):
                    log.info(tr("updater.mirror_failed", self._lang, url=mirror))
                    continue
                break
            except OSError as exc:
                if not disk_full(exc):
                    raise
                failures.append(UpdateFailure("disk_full", "updater.disk_full", path=self._store.state_dir))
                log.warning(failures[-1].render(self._lang))
                break
            if outcome == "unchanged":
                log.info(tr("updater.unchanged", self._lang, version=installed.get("version")))
                self._observer.success(installed, now)
                if self._report_expiry(installed, now, trusted):
                    return "expired"
            return outcome
        failure = most_telling(failures)
        self._observer.failure(failure.reason)
        self._report_expiry(installed, now, trusted)
        return failure.reason

    def _from_mirror(self, mirror: str, installed: dict | None, state: dict, now: float, trusted: bool,
                     floor: float) -> str:
        pointer = self._fetch_pointer(mirror)
        version = pointer["version"]
        current = _version(installed)
        highest = max(current, int(state.get("highest_version", 0) or 0))
        if installed is not None and version == current:
            return "unchanged"
        if version <= current or version < highest:
            # A stale mirror or a replayed pointer: never go back to an older policy.
            raise UpdateFailure("rollback", "updater.rollback", version=version, installed=max(current, highest))
        rejected = self._store.read_state("rejected.json")
        age = self._clock() - float(rejected.get("at", 0) or 0)
        if rejected.get("sha256") == pointer["sha256"] and rejected.get("gateway") == self._gateway_version \
                and 0 <= age < REJECTED_FOR and rejected.get("reason") in _CONTENT_REASONS:
            raise UpdateFailure(rejected["reason"], "updater.known_bad", reason=rejected["reason"], version=version)
        part = self._download(mirror, pointer)
        try:
            return self._install(part, pointer, installed, state, now, trusted, floor)
        except UpdateFailure as failure:
            if failure.reason in _CONTENT_REASONS:
                with contextlib.suppress(OSError):
                    self._store.write_state("rejected.json", {
                        "sha256": pointer["sha256"], "gateway": self._gateway_version, "reason": failure.reason,
                        "version": version, "at": self._clock()})
            raise
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(part)

    # -- fetching ---------------------------------------------------------------------------------
    def _fetch_pointer(self, mirror: str) -> dict:
        url = join(mirror, POINTER)
        http = self._store.read_state("http.json")
        cached = http.get(mirror) if isinstance(http.get(mirror), dict) else {}
        headers = {"Cache-Control": "no-cache"}  # a school's caching proxy must revalidate, not replay
        if cached.get("body"):
            if cached.get("etag"):
                headers["If-None-Match"] = cached["etag"]
            if cached.get("last_modified"):
                headers["If-Modified-Since"] = cached["last_modified"]
        try:
            response = self._fetch(url, headers, self.settings.timeout)
        except _NET_ERRORS as exc:
            raise UpdateFailure("network", "updater.network", url=url, detail=_why(exc)) from None
        try:
            if response.status == 304 and cached.get("body"):
                body, fresh = cached["body"].encode("utf-8"), False
            elif response.status == 200:
                body, fresh = self._read_all(response, url, MAX_POINTER + 1), True
            else:
                raise UpdateFailure("http_status", "updater.http_status", url=url, status=response.status)
            etag, modified = response.headers.get("ETag"), response.headers.get("Last-Modified")
        finally:
            response.close()
        try:
            doc, signed, signature = parse_pointer(body)
            if verify_any(self._keys, signature, signed) is None:
                raise UpdateFailure("signature", "updater.pointer_signature", url=url)
            pointer = check_pointer(doc, self._gateway_version)
        except UpdateFailure:
            if not fresh:  # a remembered answer that no longer verifies (its key was retired): ask afresh
                http.pop(mirror, None)
                self._store.write_state("http.json", http)
            raise
        entry = {"etag": etag, "last_modified": modified, "body": body.decode("utf-8")}
        if fresh and http.get(mirror) != entry:
            # Saved only now that it is verified: a forged answer must not poison the next poll's 304.
            # Unchanged entries are not rewritten: an SD card should not take a write every poll.
            http[mirror] = entry
            self._store.write_state("http.json", http)
        self._fault("pointer")
        return pointer

    def _read_all(self, response, url: str, limit: int) -> bytes:
        out = bytearray()
        while len(out) < limit:
            try:
                chunk = response.read(min(CHUNK, limit - len(out)))
            except _NET_ERRORS as exc:
                raise UpdateFailure("network", "updater.network", url=url, detail=_why(exc)) from None
            if not chunk:
                break
            out += chunk
        return bytes(out)

    def _download(self, mirror: str, pointer: dict) -> Path:
        size = pointer["size"]
        if size > self.settings.max_bytes:
            raise UpdateFailure("size", "updater.too_large", limit=self.settings.max_bytes)
        url = join(mirror, pointer["file"])
        try:
            response = self._fetch(url, {}, self.settings.timeout)
        except _NET_ERRORS as exc:
            raise UpdateFailure("network", "updater.network", url=url, detail=_why(exc)) from None
        part = self._store.new_download()
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        digest = hashlib.sha256()
        got = 0
        try:
            if response.status != 200:
                raise UpdateFailure("http_status", "updater.http_status", url=url, status=response.status)
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > size:
                raise UpdateFailure("size", "updater.size_mismatch", got=int(length), expected=size)
            while True:
                try:
                    chunk = response.read(CHUNK)
                except _NET_ERRORS as exc:
                    raise UpdateFailure("network", "updater.network", url=url, detail=_why(exc)) from None
                if not chunk:
                    break
                got += len(chunk)
                if got > size:  # enforced while streaming: a lying server cannot fill the disk
                    raise UpdateFailure("size", "updater.size_mismatch", got=f"> {size}", expected=size)
                digest.update(chunk)
                try:
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view):]
                except OSError as exc:
                    if disk_full(exc):
                        raise UpdateFailure("disk_full", "updater.disk_full", path=part.parent) from None
                    raise
                if got == len(chunk):
                    self._fault("downloading")
            if length and length.isdigit() and got < int(length):
                # The server promised more and hung up: a dropped connection, not a wrong file.
                raise UpdateFailure("network", "updater.network", url=url,
                                    detail=f"connection closed after {got} of {length} bytes")
            if got != size:
                raise UpdateFailure("size", "updater.size_mismatch", got=got, expected=size)
            if digest.hexdigest() != pointer["sha256"]:
                raise UpdateFailure("hash", "updater.bundle_hash", file=pointer["file"])
        except Exception:
            os.close(fd)
            response.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(part)
            raise
        os.close(fd)
        response.close()
        self._fault("downloaded")
        return part

    # -- installing -------------------------------------------------------------------------------
    def _install(self, part: Path, pointer: dict, installed: dict | None, state: dict, now: float, trusted: bool,
                 floor: float) -> str:
        version = pointer["version"]
        current = _version(installed)

        def check(manifest: dict) -> None:
            if manifest["version"] != version:
                raise UpdateFailure("malformed", "updater.malformed",
                                    detail=f"manifest version {manifest['version']} but latest.json says {version}")
            if manifest["version"] <= current:
                raise UpdateFailure("rollback", "updater.rollback", version=manifest["version"], installed=current)
            # Untrusted clock: only what is certainly past (before a bundle we already accepted) counts.
            if manifest["_expires"] <= (now if trusted else floor):
                raise UpdateFailure("expired", "updater.expired", version=version, expires=manifest["expires"])

        first = []

        def on_file(name: str) -> None:
            if not first:
                first.append(name)
                self._fault("unpacking")

        staging = self._store.new_staging(version)
        try:
            unpacked = read_bundle(part, self._keys, gateway_version=self._gateway_version,
                                   max_unpacked=4 * self.settings.max_bytes, dest=staging, check=check,
                                   on_file=on_file)
            self._fault("unpacked")
            snapshot = self._compile(staging / "policies" / "department", version)
            self._fault("validated")
        except Exception as exc:
            shutil.rmtree(staging, ignore_errors=True)
            if disk_full(exc):
                raise UpdateFailure("disk_full", "updater.disk_full", path=self._store.state_dir) from None
            raise
        manifest = unpacked.manifest
        try:
            final = self._store.commit(staging, version)
            self._fault("committed")
            self._store.switch(version, self._fault)
            self._fault("switched")
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            if disk_full(exc):
                raise UpdateFailure("disk_full", "updater.disk_full", path=self._store.state_dir) from None
            raise
        self._known = version
        state = dict(state, highest_version=max(version, int(state.get("highest_version", 0) or 0)),
                     highest_created=max(manifest["_created"], float(state.get("highest_created", 0) or 0)),
                     applied_at=self._clock())
        try:
            self._store.write_state("state.json", state)
            self._fault("recorded")
            self._store.prune(self._fault)
            self._fault("pruned")
        except OSError as exc:  # the switch is done; bookkeeping is redone by recover() and the next poll
            log.warning(tr("updater.internal", self._lang, detail=str(exc)))
        warnings = list(getattr(snapshot, "warnings", ()) or ())
        if warnings:
            log.warning(tr("updater.stale_entries", self._lang, count=len(warnings)) + "".join(
                "\n  ⚠ " + (w.render(self._lang) if hasattr(w, "render") else str(w)) for w in warnings))
        self._observer.stale_entries(len(warnings))
        log.info(tr("updater.applied", self._lang, version=version, created=manifest["created"],
                    expires=manifest["expires"]))
        self._observer.success(public(manifest), now)
        self._applied(final / "policies" / "department")
        return "updated"

    def _applied(self, department: Path) -> None:
        if self._on_applied is None:
            return
        try:
            self._on_applied(department)
        except Exception as exc:  # the bundle is in place either way; the app's own reload logs its reason
            log.exception(tr("updater.internal", self._lang, detail=f"on_applied({department}): {exc!r}"))

    def _compile(self, department: Path, version: int) -> object:
        try:
            return self._validate(department)
        except ConfigError as exc:
            first = exc.problems[0].render(self._lang) if exc.problems else str(exc)
            raise UpdateFailure("compile", "updater.compile", version=version, count=len(exc.problems),
                                first=first) from None
        except Exception as exc:
            if disk_full(exc):
                raise
            raise UpdateFailure("compile", "updater.compile", version=version, count=1,
                                first=f"{type(exc).__name__}: {exc}") from None

    # -- time ---------------------------------------------------------------------------------------
    def _now(self, installed: dict | None, state: dict) -> tuple[float, bool, float]:
        """(now, trusted, floor). A Pi has no RTC: before NTP it may think it is 1970, or last boot's time.

        `floor` is the latest creation time of any bundle accepted: real time cannot be earlier, so
        `now` is never below it. The clock is trusted only when synchronised and not below the floor.
        """
        raw = self._clock()
        floor = max(_created(installed), float(state.get("highest_created", 0) or 0))
        synced = self._clock_synced()
        trusted = synced and raw >= floor
        now = max(raw, floor)
        if trusted != self._trusted_before:
            if not synced:
                log.warning(tr("updater.clock_unsynced", self._lang, now=iso(now)))
            elif not trusted:
                log.warning(tr("updater.clock_behind", self._lang, clock=iso(max(raw, 0)), created=iso(floor)))
            self._trusted_before = trusted
        self._observer.clock_untrusted(not trusted)
        return now, trusted, floor

    def _report_expiry(self, installed: dict | None, now: float, trusted: bool) -> bool:
        """Report (never act on) an expired installed bundle: the box keeps filtering with it."""
        if installed is None or not trusted:
            return False
        try:
            expires = parse_time(installed.get("expires"))
        except ValueError:
            return False
        if now < expires:
            return False
        log.warning(tr("updater.installed_expired", self._lang, version=installed.get("version"),
                       expires=installed.get("expires")))
        self._observer.failure("expired")
        return True

    def _notice(self, installed: dict | None) -> None:
        """Another process (cron's `update --once`) may have switched bundles: tell the app to reload."""
        version = _version(installed) or None
        if version == self._known:
            return
        self._known = version
        if version is not None:
            log.info(tr("updater.noticed", self._lang, version=version))
            self._observer.success(installed, self._clock())
            department = self.department_dir()
            if department is not None:
                self._applied(department)

    # -- start-up and loop --------------------------------------------------------------------------
    def recover(self) -> None:
        """At start: sweep half-written installs and make `current` a whole bundle (or none at all)."""
        try:
            self._recover()
        except Exception as exc:  # start-up goes on: the app then serves what department_dir() says
            log.exception(tr("updater.internal", self._lang, detail=f"{type(exc).__name__}: {exc}"))

    def _recover(self) -> None:
        with self._store.lock() as held:
            if not held:
                log.info(tr("updater.busy", self._lang, path=self._store.state_dir))
            else:
                for key, args in self._store.recover():
                    level = logging.INFO if key in ("updater.removed_partial", "updater.pruned") else logging.WARNING
                    log.log(level, tr(key, self._lang, **args))
            installed = self._store.current_manifest()
            self._known = _version(installed) or None
            state = self._store.read_state("state.json")
            if installed is not None and held:
                merged = dict(state, highest_version=max(_version(installed),
                                                         int(state.get("highest_version", 0) or 0)),
                              highest_created=max(_created(installed), float(state.get("highest_created", 0) or 0)))
                if merged != state:
                    with contextlib.suppress(OSError):
                        self._store.write_state("state.json", merged)
                    state = merged
        if installed is None:
            log.info(tr("updater.none_installed", self._lang))
            return
        now, trusted, _ = self._now(installed, state)
        self._report_expiry(installed, now, trusted)

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Poll until `stop` is set. Polls run in a worker thread, so the DNS loop never waits on them.

        The first poll comes after a random 0-20% of the interval, the next ones every interval ±20%:
        boxes powered on together (a district's power cut) do not all hit the mirror at once.
        """
        loop = asyncio.get_running_loop()
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="updater")
        interval = self.settings.interval
        delay = random.uniform(0, 0.2 * interval)
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                if stop.is_set():
                    break
                poll = loop.run_in_executor(executor, self.poll_once)
                stopping = asyncio.ensure_future(stop.wait())
                done, _ = await asyncio.wait({poll, stopping}, return_when=asyncio.FIRST_COMPLETED)
                stopping.cancel()
                if poll not in done:
                    break  # the poll finishes in its thread; every step of it is crash-safe anyway
                try:
                    poll.result()
                except Exception as exc:
                    log.exception(tr("updater.internal", self._lang, detail=repr(exc)))
                delay = interval * random.uniform(0.8, 1.2)
        finally:
            executor.shutdown(wait=False, cancel_futures=True)


def _version(manifest: dict | None) -> int:
    value = manifest.get("version") if isinstance(manifest, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _created(manifest: dict | None) -> float:
    try:
        return parse_time(manifest.get("created")) if isinstance(manifest, dict) else 0.0
    except ValueError:
        return 0.0


def _why(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 200 else text[:200] + "…"
