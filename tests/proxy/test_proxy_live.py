"""The real proxy (relay + mitmproxy + block-page server) on loopback against a local HTTP/HTTPS origin."""

from __future__ import annotations

import ssl

import pytest

pytest.importorskip("mitmproxy")

from proxyrig import (
    BIG,
    LAB,
    OUTSIDE,
    PLAIN,
    PRIMARY,
    SCHOOL,
    STAFF,
    ProxyRig,
    build_holder,
    connect,
    https_get,
    proxy_get,
    read_response,
    snapshot_for,
    tls_client,
    tunnel,
)

from gateway.proxy.ca import create_ca
from gateway.proxy.ref import decode_ref


@pytest.fixture(scope="module")
def rig(tmp_path_factory, origin):
    tmp = tmp_path_factory.mktemp("proxy")
    create_ca(tmp / "ca", common_name="Test school CA", organisation="Trường Thử", key_size=2048)
    holder = build_holder(tmp / "policy")
    proxy = ProxyRig(tmp, holder, origin)
    yield proxy
    proxy.stop()


def _closed_or_alert(tls_sock_factory) -> str:
    try:
        tls_sock_factory()
    except ssl.SSLError as exc:
        return f"tls-error: {exc}"
    except (ConnectionError, OSError) as exc:
        return f"closed: {exc}"
    return "handshake completed"


# -- plain HTTP (explicit proxy, handled by mitmproxy) -------------------------------------------------

def test_plain_http_allowed_reaches_origin(rig, origin):
    status, _, body = proxy_get(rig, "http://allowed.test/hello")
    assert status == 200
    assert body == b"origin allowed.test/hello\n"


def test_plain_http_blocked_gets_block_page(rig, origin):
    before = len(origin.requests)
    status, headers, body = proxy_get(rig, "http://casino.example/win", headers={"Accept-Language": "vi"})
    assert status == 403
    page = body.decode()
    assert "Trang web này đã bị chặn" in page and '<html lang="vi">' in page
    assert "Cờ bạc" in page and "casino.example" in page
    assert "default-src 'none'" in headers["content-security-policy"]
    assert len(origin.requests) == before  # nothing reached the blocked site


def test_plain_http_block_page_in_english_by_accept_language(rig):
    status, _, body = proxy_get(rig, "http://casino.example/", headers={"Accept-Language": "en-GB,en;q=0.9,vi;q=0.5"})
    assert status == 403
    assert b"This website is blocked" in body and b'<html lang="en">' in body


def test_plain_http_safe_search_params_added(rig, origin):
    status, _, _ = proxy_get(rig, "http://www.google.com/search?q=cats&safe=off")
    assert status == 200
    request = origin.requests[-1]
    assert request["host"] == "www.google.com" and "safe=active" in request["path"] and "safe=off" not in \
        request["path"]
    proxy_get(rig, "http://www.bing.com/search?q=cats&adlt=off")
    assert "adlt=strict" in origin.requests[-1]["path"]
    proxy_get(rig, "http://www.youtube.com/watch?v=1", source=PRIMARY)
    assert origin.requests[-1]["headers"].get("YouTube-Restrict") == "Strict"
    proxy_get(rig, "http://www.youtube.com/watch?v=1", source=PLAIN)
    assert origin.requests[-1]["headers"].get("YouTube-Restrict") == "Moderate"
    proxy_get(rig, "http://www.youtube.com/watch?v=1", source=STAFF)  # staff: safe search off
    assert "YouTube-Restrict" not in origin.requests[-1]["headers"]


def _raw(rig, data: bytes, source: str = PLAIN) -> tuple[int, dict, bytes]:
    with connect(rig.explicit, source) as sock:
        sock.sendall(data)
        return read_response(sock)


def test_plain_post_body_is_forwarded(rig, origin):
    status, _, body = _raw(rig, b"POST http://allowed.test/form HTTP/1.1\r\nHost: allowed.test\r\n"
                                b"Content-Length: 11\r\n\r\nhello=world")
    assert status == 200 and body == b"posted 11 bytes: hello=world\n"


def test_pipelined_request_after_the_first_never_reaches_origin(rig, origin):
    before = len(origin.requests)
    status, _, body = _raw(rig, b"GET http://allowed.test/first HTTP/1.1\r\nHost: allowed.test\r\n\r\n"
                                b"GET http://casino.example/second HTTP/1.1\r\nHost: allowed.test\r\n\r\n")
    assert status == 200 and body == b"origin allowed.test/first\n"
    assert [r["path"] for r in origin.requests[before:]] == ["/first"]


def test_ambiguous_framing_is_rejected(rig):
    status, _, _ = _raw(rig, b"POST http://allowed.test/ HTTP/1.1\r\nHost: allowed.test\r\nContent-Length: 3\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    assert status == 400


def test_chunked_upload_is_forwarded_by_mitmproxy(rig, origin):
    status, _, body = _raw(rig, b"POST http://allowed.test/up HTTP/1.1\r\nHost: allowed.test\r\n"
                                b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    assert status == 200 and body == b"posted 5 bytes: hello\n"


def test_expect_continue(rig, origin):
    with connect(rig.explicit, PLAIN) as sock:
        sock.sendall(b"POST http://allowed.test/e HTTP/1.1\r\nHost: allowed.test\r\nContent-Length: 2\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(b"ok")
        status, _, body = read_response(sock)
    assert status == 200 and body == b"posted 2 bytes: ok\n"


def test_unserved_client_is_refused(rig):
    status, _, _ = proxy_get(rig, "http://allowed.test/", source=OUTSIDE)
    assert status == 403
    status, sock = tunnel(rig, "allowed.test", source=OUTSIDE)
    sock.close()
    assert status == 403


# -- CONNECT pass-through (the relay's fast path) ---------------------------------------------------------

def test_connect_allowed_passes_through_with_origin_certificate(rig, origin):
    status, sock = tunnel(rig, "allowed.test")
    assert status == 200
    with tls_client(sock, "allowed.test", origin.ca) as tls:
        assert tls.getpeercert(binary_form=True) == origin.leaf_der  # the origin's own certificate
        status, _, body = https_get(tls, "allowed.test", "/tls")
    assert status == 200 and body == b"origin allowed.test/tls\n"
    assert origin.requests[-1]["tls"] is True


def test_connect_blocked_host_gets_403(rig):
    status, sock = tunnel(rig, "casino.example")
    body = sock.recv(4096)
    sock.close()
    assert status == 403
    assert "bị chặn".encode() in body


def test_connect_to_other_port_refused(rig):
    status, sock = tunnel(rig, "allowed.test", port=22)
    sock.close()
    assert status == 403


def test_connect_allowed_host_with_blocked_sni_is_closed(rig, origin):
    status, sock = tunnel(rig, "allowed.test")
    assert status == 200
    outcome = _closed_or_alert(lambda: tls_client(sock, "casino.example", origin.ca))
    sock.close()
    assert outcome != "handshake completed"


def test_passthrough_is_counted_by_band_without_addresses(rig, origin):
    before = dict(rig.service.stats.connections)
    _status, sock = tunnel(rig, "allowed.test")
    with tls_client(sock, "allowed.test", origin.ca) as tls:
        https_get(tls, "allowed.test")
    after = rig.service.stats.connections
    assert after[("thcs", "allow", "passthrough")] == before.get(("thcs", "allow", "passthrough"), 0) + 1
    for key in after:
        assert all("127.0." not in str(part) for part in key)


def test_passthrough_safe_search_dials_the_restricted_host(rig, origin):
    # The DNS filter answers www.youtube.com with a CNAME to restrict(moderate).youtube.com; the explicit
    # proxy resolves names itself, so for a pass-through it must connect there instead.
    status, sock = tunnel(rig, "www.youtube.com", source=PLAIN)
    assert status == 200
    assert origin.dialed[-1] == "restrictmoderate.youtube.com"
    with tls_client(sock, "www.youtube.com", origin.ca) as tls:
        assert tls.getpeercert(binary_form=True) == origin.leaf_der  # still not decrypted
    status, sock = tunnel(rig, "www.youtube.com", source=PRIMARY)
    sock.close()
    assert status == 200 and origin.dialed[-1] == "restrict.youtube.com"
    status, sock = tunnel(rig, "www.youtube.com", source=STAFF)  # staff: safe search off
    sock.close()
    assert status == 200 and origin.dialed[-1] == "www.youtube.com"


# -- transparent style (SNI peek, origin from the resolver instead of SO_ORIGINAL_DST) ---------------

def test_transparent_sni_allowed_passes_through(rig, origin):
    with tls_client(connect(rig.transparent, PLAIN), "allowed.test", origin.ca) as tls:
        assert tls.getpeercert(binary_form=True) == origin.leaf_der
        status, _, body = https_get(tls, "allowed.test", "/transparent")
    assert status == 200 and body == b"origin allowed.test/transparent\n"


def test_transparent_sni_blocked_is_closed(rig, origin):
    outcome = _closed_or_alert(lambda: tls_client(connect(rig.transparent, PLAIN), "casino.example", origin.ca))
    assert outcome != "handshake completed"
    assert "access denied" in outcome.lower() or "closed" in outcome


def test_transparent_without_sni_is_closed(rig, origin):
    outcome = _closed_or_alert(lambda: tls_client(connect(rig.transparent, PLAIN), None, origin.ca))
    assert outcome != "handshake completed"


def test_transparent_garbage_is_closed(rig):
    with connect(rig.transparent, PLAIN) as sock:
        sock.sendall(b"\x16\x03\x01\x00\x05garbage-not-a-hello" * 3)
        sock.settimeout(5)
        try:
            data = sock.recv(100)
        except ConnectionError:
            data = b""
    assert data == b""


def test_transparent_plain_http_goes_through_filter(rig, origin):
    with connect(rig.transparent, PLAIN) as sock:
        sock.sendall(b"GET /t HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n")
        status, _, body = read_response(sock)
    assert status == 200 and body == b"origin allowed.test/t\n"
    with connect(rig.transparent, PLAIN) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: casino.example\r\nConnection: close\r\n\r\n")
        status, _, body = read_response(sock)
    assert status == 403 and "Trang web này đã bị chặn".encode() in body


# -- interception (inspect_tls group, school CA) ---------------------------------------------------------

def _school_ca(rig):
    return rig.settings.ca_dir / "school-ca.pem"


def test_intercepted_blocked_https_shows_block_page_signed_by_school_ca(rig):
    status, sock = tunnel(rig, "casino.example", source=LAB)
    assert status == 200
    with tls_client(sock, "casino.example", _school_ca(rig)) as tls:
        issuer = dict(x[0] for x in tls.getpeercert()["issuer"])
        assert issuer["commonName"] == "Test school CA"
        status, _, body = https_get(tls, "casino.example", "/", {"Accept-Language": "vi"})
    assert status == 403
    page = body.decode()
    assert "Trang web này đã bị chặn" in page
    code = page.split("<code>")[1].split("</code>")[0]
    info = decode_ref(code, snapshot=rig.holder.current, key_path=rig.settings.ref_key)
    assert info["valid"] is True and info["category"] == "gambling" and info["band"] == "thcs"


def test_intercepted_youtube_gets_restrict_header_upstream(rig, origin):
    status, sock = tunnel(rig, "www.youtube.com", source=LAB)
    assert status == 200
    with tls_client(sock, "www.youtube.com", _school_ca(rig)) as tls:
        status, _, body = https_get(tls, "www.youtube.com", "/watch?v=x", {"YouTube-Restrict": "Off"})
    assert status == 200 and body.startswith(b"origin www.youtube.com")
    request = origin.requests[-1]
    assert request["tls"] and request["headers"]["YouTube-Restrict"] == "Moderate"


def test_intercepted_google_search_gets_safe_param(rig, origin):
    status, sock = tunnel(rig, "www.google.com", source=LAB)
    with tls_client(sock, "www.google.com", _school_ca(rig)) as tls:
        status, _, _ = https_get(tls, "www.google.com", "/search?q=x")
    assert status == 200 and "safe=active" in origin.requests[-1]["path"]


def test_inspect_group_allowed_plain_site_is_not_decrypted(rig, origin):
    # intercept: needed — an ordinary allowed site is passed through even for an inspect_tls group.
    _status, sock = tunnel(rig, "allowed.test", source=LAB)
    with tls_client(sock, "allowed.test", origin.ca) as tls:
        assert tls.getpeercert(binary_form=True) == origin.leaf_der


def test_transparent_intercepted_blocked_page(rig):
    with tls_client(connect(rig.transparent, LAB), "casino.example", _school_ca(rig)) as tls:
        status, _, body = https_get(tls, "casino.example")
    assert status == 403 and "Trang web này đã bị chặn".encode() in body


def test_no_inspection_for_group_without_inspect_tls(rig, origin):
    # The same blocked name from a non-inspect group is closed, never answered with our certificate.
    status, sock = tunnel(rig, "casino.example", source=PLAIN)
    sock.close()
    assert status == 403


# -- block-page server (the DNS filter's `blockpage` answer), PAC, CA download ----------------------------

def _get(address, source, host, path="/", lang="vi"):
    with connect(address, source) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept-Language: {lang}\r\n\r\n".encode())
        return read_response(sock)


def test_blockpage_server_answers_any_host_with_its_decision(rig):
    status, _, body = _get(rig.blockpage, PRIMARY, "selfharm.example", "/x")
    page = body.decode()
    assert status == 403 and "Trang web này đã bị chặn" in page
    assert "Tổng đài 111" in page and 'href="tel:111"' in page  # hotline category
    status, _, body = _get(rig.blockpage, PLAIN, "casino.example")
    assert status == 403 and "111" not in body.decode().split("<main>")[1].split("Mã tham chiếu")[0]
    assert "tel:111" not in body.decode()
    status, _, body = _get(rig.blockpage, PLAIN, "allowed.test")
    assert status == 200 and "không bị chặn".encode() in body


def test_pac_and_wpad_served(rig):
    for path in ("/proxy.pac", "/wpad.dat"):
        status, headers, body = _get(rig.blockpage, PLAIN, "wpad.school.lan", path)
        assert status == 200
        assert headers["content-type"] == "application/x-ns-proxy-autoconfig"
        assert b"function FindProxyForURL" in body
        assert f"PROXY 127.0.0.1:{rig.settings.listen.port}".encode() in body
        assert b"DIRECT\";\n}" not in body  # no fall-back to going direct: that would fail open


def test_ca_certificate_download(rig):
    status, _headers, body = _get(rig.blockpage, LAB, "10.0.0.1", "/school-ca.crt")
    assert status == 200 and body.startswith(b"-----BEGIN CERTIFICATE-----")
    assert b"PRIVATE" not in body


# -- reload and fail-closed -------------------------------------------------------------------------------

def test_policy_reload_applies_without_dropping_open_connections(rig, origin, tmp_path):
    status, sock = tunnel(rig, "reload.test")
    assert status == 200
    tls = tls_client(sock, "reload.test", origin.ca)
    assert https_get(tls, "reload.test", "/1", keep_alive=True)[0] == 200
    old = rig.holder.current
    stricter = SCHOOL.replace("deny: [denied.test]", "deny: [denied.test, reload.test]")
    rig.holder.swap(snapshot_for(tmp_path / "p2", school=stricter))
    try:
        # The open connection keeps working...
        assert https_get(tls, "reload.test", "/2", keep_alive=True)[0] == 200
        assert origin.requests[-1]["path"] == "/2"
        # ...while a new one follows the new policy.
        status, sock2 = tunnel(rig, "reload.test")
        sock2.close()
        assert status == 403
        assert proxy_get(rig, "http://reload.test/")[0] == 403
    finally:
        tls.close()
        rig.holder.swap(old)
    status, sock3 = tunnel(rig, "reload.test")
    sock3.close()
    assert status == 200


class _Broken:
    @property
    def current(self):
        raise RuntimeError("snapshot store is broken")


def test_decision_error_blocks(rig):
    real = rig.holder
    rig.service.judge.holder = _Broken()
    try:
        status, sock = tunnel(rig, "allowed.test")
        sock.close()
        assert status == 403
        status, _, _body = proxy_get(rig, "http://allowed.test/")
        assert status == 403
        with connect(rig.transparent, PLAIN) as raw:
            outcome = _closed_or_alert(lambda: tls_client(raw, "allowed.test", rig.origin.ca))
        assert outcome != "handshake completed"
    finally:
        rig.service.judge.holder = real


def test_addon_hook_exception_blocks_instead_of_passing(rig, origin):
    # mitmproxy's safecall would log the error and let the flow go on; our hooks block instead.
    judge = rig.service.addon.judge

    class Exploding:
        def __init__(self, spare: int):
            self.spare = spare  # calls that still work before it starts raising

        def __getattr__(self, name):
            return getattr(judge, name)

        def verdict(self, *args):
            if self.spare > 0:
                self.spare -= 1
                return judge.verdict(*args)
            raise RuntimeError("boom")

    before = len(origin.requests)
    errors = rig.service.stats.errors[("decision",)]
    try:
        # tls_clienthello fails: the connection is cut, not passed through.
        rig.service.addon.judge = Exploding(0)
        status, sock = tunnel(rig, "www.youtube.com", source=LAB)
        outcome = _closed_or_alert(lambda: https_get(tls_client(sock, "www.youtube.com", _school_ca(rig)),
                                                     "www.youtube.com", "/must-not-arrive"))
        assert outcome != "handshake completed"
        # requestheaders fails: the request gets a 403, the origin never sees it.
        rig.service.addon.judge = Exploding(1)
        status, sock = tunnel(rig, "www.youtube.com", source=LAB)
        with tls_client(sock, "www.youtube.com", _school_ca(rig)) as tls:
            status, _, _body = https_get(tls, "www.youtube.com", "/must-not-arrive")
        assert status == 403
    finally:
        rig.service.addon.judge = judge
    assert all(r["path"] != "/must-not-arrive" for r in origin.requests[before:])
    assert rig.service.stats.errors[("decision",)] >= errors + 2


def test_handoffs_are_forgotten_after_close(rig):
    proxy_get(rig, "http://allowed.test/")
    # The relay's loopback-port -> client map holds only open connections (no address outlives them).
    assert rig.wait_until(lambda: len(rig.service.handoffs) == 0), rig.call(lambda: dict(rig.service.handoffs))


def test_large_bodies_arrive_whole(rig, origin):
    expected = bytes(range(256)) * (BIG // 256)
    status, sock = tunnel(rig, "allowed.test")
    with tls_client(sock, "allowed.test", origin.ca) as tls:
        status, _, body = https_get(tls, "allowed.test", "/big", keep_alive=False)
    assert status == 200 and body == expected  # spliced by the relay
    status, _, body = proxy_get(rig, "http://allowed.test/big")
    assert status == 200 and body == expected  # streamed by mitmproxy (stream_large_bodies)


def test_slow_client_times_out(rig):
    with connect(rig.explicit, PLAIN) as sock:
        sock.sendall(b"CONNECT allowed.test:443 HTTP/1.1\r\n")  # never finishes the head
        sock.settimeout(rig.settings.handshake_timeout + 5)
        try:
            data = sock.recv(100)
        except (TimeoutError, ConnectionError):
            data = b""
    assert data == b""


def test_the_box_itself_is_not_reachable_through_the_proxy(rig, origin):
    # Its loopback services (metrics, admin) are not for pupils: a client-named loopback target is refused.
    status, _, _ = proxy_get(rig, f"http://127.0.0.1:{origin.http_port}/")
    assert status == 403
    status, sock = tunnel(rig, "localhost")
    sock.close()
    assert status == 403
    assert rig.service.stats.errors[("local_destination",)] >= 2
