"""The relay's HTTP/1.1 head handling: what it forwards, and what it refuses to guess about."""

from __future__ import annotations

import pytest

from gateway.core.model import SafeSearch
from gateway.proxy.http1 import HeadError, parse_request, response_head, upstream_head
from gateway.proxy.safesearch import enforce_head


def test_absolute_form():
    req = parse_request(b"GET http://user:pw@Example.com:8080/a?b=1 HTTP/1.1\r\nHost: example.com:8080\r\n"
                        b"Proxy-Connection: keep-alive\r\nAccept: */*")
    assert (req.host, req.port, req.path) == ("Example.com", 8080, "/a?b=1")
    head = upstream_head(req, req.path, [])
    assert head.startswith(b"GET /a?b=1 HTTP/1.1\r\n")
    assert b"Proxy-Connection" not in head and b"Connection: close\r\n" in head and b"Accept: */*" in head
    assert b"user:pw" not in head


def test_origin_form_uses_host_header():
    req = parse_request(b"GET /x HTTP/1.1\r\nHost: [2001:db8::1]:81")
    assert (req.host, req.port, req.path) == ("2001:db8::1", 81, "/x")


@pytest.mark.parametrize("head,status", [
    (b"GET http://a.test/ HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked", 400),
    (b"GET http://a.test/ HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2", 400),
    (b"GET http://a.test/ HTTP/1.1\r\nContent-Length: -1", 400),
    (b"GET http://a.test/ HTTP/1.1\r\nTransfer-Encoding: gzip, chunked", 501),
    (b"GET http://a.test/ HTTP/1.1\r\nX: a\r\n folded", 400),
    (b"GET http://a.test/ HTTP/1.1\r\nBad Header: a", 400),
    (b"GET https://a.test/ HTTP/1.1", 400),
    (b"GET / HTTP/1.1", 400),
    (b"GET http://a.test/ HTTP/2", 400),
    (b"G@T http://a.test/ HTTP/1.1", 400),
])
def test_refused(head, status):
    with pytest.raises(HeadError) as info:
        parse_request(head)
    assert info.value.status == status


def test_body_framing_and_upgrade():
    req = parse_request(b"POST http://a.test/ HTTP/1.1\r\nContent-Length: 12")
    assert req.length == 12 and not req.chunked
    req = parse_request(b"POST http://a.test/ HTTP/1.1\r\nTransfer-Encoding: chunked")
    assert req.chunked
    req = parse_request(b"GET http://a.test/ws HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket")
    assert req.upgrade == b"websocket"
    assert b"Connection: Upgrade\r\nUpgrade: websocket" in upstream_head(req, req.path, [])
    req = parse_request(b"GET http://a.test/ HTTP/1.1\r\nUpgrade: websocket")  # not in Connection: ignored
    assert req.upgrade is None


def test_response_head_forces_close():
    status, head = response_head(b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n"
                                 b"Content-Length: 2")
    assert status == 200 and head == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n"
    assert response_head(b"HTTP/1.1 100 Continue")[1] == b"HTTP/1.1 100 Continue\r\n\r\n"
    with pytest.raises(HeadError):
        response_head(b"garbage")


def test_safe_search_on_raw_paths():
    assert enforce_head("/search?q=a+b&safe=off&hl=vi", "google", SafeSearch.MODERATE) == \
        ("/search?q=a+b&hl=vi&safe=active", [])
    assert enforce_head("/maps?q=x", "google", SafeSearch.STRICT) == ("/maps?q=x", [])
    assert enforce_head("/search?q=x&adlt=off", "bing", SafeSearch.STRICT) == ("/search?q=x&adlt=strict", [])
    assert enforce_head("/watch?v=1", "youtube", SafeSearch.STRICT) == ("/watch?v=1", [("YouTube-Restrict", "Strict")])
    assert enforce_head("/search?q=x", "google", SafeSearch.OFF) == ("/search?q=x", [])
