"""A throwaway Debian root for the playbook: a cached debootstrap under an overlay, used through chroot."""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

CACHE = Path(os.environ.get("SCHOOL_GATEWAY_TEST_CACHE", "/var/cache/school-gateway-tests"))
SUITE = "bookworm"
# What a real Debian target already has (python3 for Ansible, python3-apt for the apt module, systemd
# for systemctl/systemd-analyze); everything the gateway needs beyond that the role installs itself.
INCLUDE = ("python3", "python3-apt", "systemd", "systemd-sysv")
DEFAULT_MIRROR = "http://deb.debian.org/debian"


def debian_mirror(sources: tuple[Path, ...] = (Path("/etc/apt/sources.list"),
                                               *sorted(Path("/etc/apt/sources.list.d").glob("*")))) -> str:
    """The Debian archive this machine's apt uses (one-line or deb822 format), so the root uses the same."""
    for path in sources:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            one = re.match(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line)
            uri = one.group(1) if one and one.group(2) == SUITE else None
            if uri is None and line.startswith("URIs:") and re.search(rf"^Suites:.*\b{SUITE}\b", text, re.M):
                uri = line.split(None, 1)[1].split()[0]
            if uri and "debian-security" not in uri and "/debian" in uri:
                return uri.rstrip("/")
    return DEFAULT_MIRROR


def base_root(mirror: str | None = None) -> Path:
    """The cached debootstrap root (read-only lower layer), built on first use.

    Built beside its final name and renamed, so an interrupted build never leaves a half root in the cache.
    """
    mirror = mirror or debian_mirror()
    key = hashlib.sha256(f"{SUITE} {mirror} {' '.join(INCLUDE)}".encode()).hexdigest()[:12]
    root = CACHE / f"root-{SUITE}-{key}"
    if (root / "usr/bin/python3").exists():
        return root
    CACHE.mkdir(parents=True, exist_ok=True)
    debs = CACHE / "debs"
    debs.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=CACHE))
    try:
        subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(INCLUDE)}",
                        f"--cache-dir={debs}", SUITE, str(tmp), mirror],
                       check=True, capture_output=True, text=True, timeout=1500)
        # No package script may start a service inside the root: it would run on this machine.
        policy = tmp / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        os.rename(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


class TargetRoot:
    """A fresh, writable view of the cached root (overlayfs), entered by commands run in a private mount
    namespace: every mount disappears with the command, even if the test is killed."""

    def __init__(self, work: Path, lower: Path) -> None:
        self.lower = lower
        self.upper = work / "upper"
        self.workdir = work / "work"
        self.path = work / "root"
        for p in (self.upper, self.workdir, self.path):
            p.mkdir(parents=True, exist_ok=True)
        # The apt package cache is shared between runs (and with debootstrap): warm runs download nothing.
        self.apt_cache = CACHE / "apt-archives"
        self.apt_cache.mkdir(parents=True, exist_ok=True)
        (self.apt_cache / "partial").mkdir(exist_ok=True)
        # A new root resolves names (apt) as this machine does now; later the role may replace the file.
        etc = self.upper / "etc"
        etc.mkdir(exist_ok=True)
        if not any(etc.iterdir()):
            shutil.copyfile("/etc/resolv.conf", etc / "resolv.conf")

    def mount_script(self) -> str:
        r = shlex.quote(str(self.path))
        return " && ".join([
            "set -e",
            f"mount -t overlay overlay -o lowerdir={shlex.quote(str(self.lower))},"
            f"upperdir={shlex.quote(str(self.upper))},workdir={shlex.quote(str(self.workdir))} {r}",
            f"mount -t proc proc {r}/proc",
            f"mount --rbind /dev {r}/dev",
            f"mount -t tmpfs tmpfs {r}/run",
            # What systemd-resolved keeps there on a running box: the real upstream servers.
            f"mkdir -p {r}/run/systemd/resolve",
            f"cp /etc/resolv.conf {r}/run/systemd/resolve/resolv.conf",
            f"mount --bind {shlex.quote(str(self.apt_cache))} {r}/var/cache/apt/archives",
        ])

    def command(self, argv: list[str]) -> list[str]:
        """argv run on the host with the root mounted at self.path (e.g. ansible-playbook)."""
        script = self.mount_script() + " && exec " + " ".join(shlex.quote(a) for a in argv)
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]

    def inside(self, argv: list[str]) -> list[str]:
        """argv run inside the root (chroot)."""
        return self.command(["chroot", str(self.path), *argv])

    def run(self, argv: list[str], *, inside: bool = True, timeout: float = 300, check: bool = True,
            env: dict | None = None) -> subprocess.CompletedProcess:
        cmd = self.inside(argv) if inside else self.command(argv)
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        if check and done.returncode != 0:
            raise AssertionError(f"{argv} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done

    def file(self, path: str) -> Path:
        """Where a file of the root is on the host: the overlay's upper layer if it was written, else the base."""
        rel = path.lstrip("/")
        upper = self.upper / rel
        return upper if upper.exists() or upper.is_symlink() else self.lower / rel

    def read(self, path: str) -> str:
        return self.file(path).read_text(encoding="utf-8")
