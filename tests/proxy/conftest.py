"""Fixtures for the proxy tests: the helper modules beside this file, a local origin, the live proxy."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from proxyrig import Origin


@pytest.fixture(scope="module")
def origin(tmp_path_factory):
    server = Origin(tmp_path_factory.mktemp("origin"))
    yield server
    server.close()
