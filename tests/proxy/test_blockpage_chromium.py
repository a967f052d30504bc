"""The block page in a real browser: headless Chromium through the proxy, DOM checked, phone-sized screenshot kept."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("mitmproxy")

from proxyrig import ProxyRig, build_holder

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")


@pytest.fixture(scope="module")
def rig(tmp_path_factory, origin):
    tmp = tmp_path_factory.mktemp("chromium")
    proxy = ProxyRig(tmp, build_holder(tmp / "policy"), origin, mode="explicit")
    yield proxy
    proxy.stop()


def _chromium(rig, tmp_path: Path, url: str, *extra: str) -> subprocess.CompletedProcess:
    host, port = rig.explicit
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", "--lang=vi", "--accept-lang=vi",
           f"--user-data-dir={tmp_path / 'profile'}", f"--proxy-server=http://{host}:{port}", *extra, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90)


def test_block_page_in_chromium(rig, tmp_path):
    # The client is 127.0.0.1 (thcs). casino.example is blocked for it; Chromium sends it to the
    # proxy (only loopback names bypass a configured proxy), which never resolves it.
    done = _chromium(rig, tmp_path, "http://casino.example/choi", "--dump-dom")
    dom = done.stdout
    assert '<html lang="vi">' in dom, done.stderr[-2000:]
    assert "Trang web này đã bị chặn" in dom
    assert "Trang này thuộc danh mục «Cờ bạc»." in dom
    assert "Mã tham chiếu" in dom


def test_hotline_and_screenshot(rig, tmp_path):
    # self-harm has `hotline: true`: the page shows 111. 127.0.0.1 is thcs, which blocks self_harm.
    done = _chromium(rig, tmp_path, "http://selfharm.example/", "--dump-dom")
    assert "Tổng đài 111" in done.stdout and 'href="tel:111"' in done.stdout, done.stderr[-2000:]
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "blockpage.png"
    shot.unlink(missing_ok=True)
    done = _chromium(rig, tmp_path, "http://selfharm.example/", f"--screenshot={shot}", "--window-size=412,915",
                     "--hide-scrollbars")
    assert shot.exists() and shot.stat().st_size > 5000, done.stderr[-2000:]
