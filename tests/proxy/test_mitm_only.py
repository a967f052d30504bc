"""`fast_path: false`: mitmproxy alone (the addon) gives the same decisions as the relay."""

from __future__ import annotations

import ssl

import pytest

pytest.importorskip("mitmproxy")

from proxyrig import PLAIN, ProxyRig, build_holder, https_get, proxy_get, tls_client, tunnel


@pytest.fixture(scope="module")
def rig(tmp_path_factory, origin):
    tmp = tmp_path_factory.mktemp("mitmonly")
    proxy = ProxyRig(tmp, build_holder(tmp / "policy"), origin, fast_path=False, mode="explicit")
    yield proxy
    proxy.stop()


def test_passthrough_keeps_origin_certificate(rig, origin):
    status, sock = tunnel(rig, "allowed.test")
    assert status == 200
    with tls_client(sock, "allowed.test", origin.ca) as tls:
        assert tls.getpeercert(binary_form=True) == origin.leaf_der
        assert https_get(tls, "allowed.test", "/m")[2] == b"origin allowed.test/m\n"
    assert rig.service.stats.connections[("thcs", "allow", "passthrough")] >= 1


def test_blocked_connect_and_blocked_sni(rig, origin):
    status, sock = tunnel(rig, "casino.example")
    sock.close()
    assert status == 403
    status, sock = tunnel(rig, "allowed.test")
    assert status == 200
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        tls_client(sock, "casino.example", origin.ca).close()


def test_passthrough_safe_search_dials_the_restricted_host(rig, origin):
    status, sock = tunnel(rig, "www.youtube.com")
    assert status == 200
    with tls_client(sock, "www.youtube.com", origin.ca) as tls:
        assert tls.getpeercert(binary_form=True) == origin.leaf_der
    assert "restrictmoderate.youtube.com" in origin.dialed


def test_plain_http_block_page(rig):
    status, _, body = proxy_get(rig, "http://casino.example/", source=PLAIN)
    assert status == 403 and "Trang web này đã bị chặn".encode() in body
