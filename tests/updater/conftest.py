"""Fixtures for the updater tests: signing keys, a loopback mirror, and a box (Updater) factory."""

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

# updaterkit.py and crashchild.py sit beside this file; tests/ has no packages on purpose.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from updaterkit import NOW, SCHOOL, Mirror, Recorder

from gateway.updater import Updater, UpdaterSettings, make_validator
from gateway.updater.keys import public_b64


@pytest.fixture(scope="session")
def keys():
    dept, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    return SimpleNamespace(dept=dept, other=other, dept_b64=public_b64(dept.public_key()),
                           other_b64=public_b64(other.public_key()))


@pytest.fixture
def mirror(tmp_path):
    m = Mirror(tmp_path / "www")
    yield m
    m.close()


@pytest.fixture
def box(tmp_path, mirror, keys):
    """make(**overrides) -> (Updater, Recorder) on tmp_path/state, trusting the Department key."""

    def make(*, mirrors=None, timeout=5.0, max_bytes=200 * 1024 * 1024, trusted=None, state_dir=None,
             clock=None, clock_synced=None, **kw):
        recorder = kw.pop("observer", None) or Recorder()
        settings = UpdaterSettings(mirrors=tuple(mirrors or (mirror.url,)), interval=kw.pop("interval", 900.0),
                                   timeout=timeout, max_bytes=max_bytes,
                                   trusted_keys=tuple(trusted or (keys.dept_b64,)),
                                   state_dir=Path(state_dir or tmp_path / "state"))
        updater = Updater(settings, validate=kw.pop("validate", make_validator(SCHOOL, tmp_path / "cache")),
                          observer=recorder, clock=clock or (lambda: NOW.timestamp()),
                          clock_synced=clock_synced or (lambda: True), lang="en", **kw)
        return updater, recorder

    return make
