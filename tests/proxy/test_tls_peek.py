"""The ClientHello peek: real hellos, every fragmentation, and garbage that must never raise."""

from __future__ import annotations

import functools
import ssl

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.proxy.tls import HelloReader, Peek, alert, looks_like_tls, peek_client_hello


@functools.lru_cache(maxsize=16)
def client_hello(server_name: str | None, alpn: tuple[str, ...] | None = None) -> bytes:
    """The ClientHello Python's own TLS client sends (OpenSSL), captured through memory BIOs."""
    ctx = ssl.create_default_context()
    if server_name is None:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def refragment(hello: bytes, size: int) -> bytes:
    """The same handshake message re-cut into records of `size` bytes (RFC 8446 5.1 allows it)."""
    assert hello[0] == 22
    body = hello[5:5 + int.from_bytes(hello[3:5], "big")]
    out = b""
    for i in range(0, len(body), size):
        part = body[i:i + size]
        out += b"\x16\x03\x01" + len(part).to_bytes(2, "big") + part
    return out


def test_real_hello_gives_its_sni():
    assert peek_client_hello(client_hello("www.example.com")) == (Peek.HELLO, "www.example.com")


def test_hello_without_sni():
    assert peek_client_hello(client_hello(None)) == (Peek.HELLO, None)


def test_every_split_point_needs_more_then_completes():
    hello = client_hello("split.example", ("h2", "http/1.1"))
    for cut in range(len(hello)):
        reader = HelloReader()
        assert reader.feed(hello[:cut]) is Peek.MORE, cut
        assert reader.feed(hello[cut:]) is Peek.HELLO
        assert reader.sni == "split.example"
        assert bytes(reader.raw) == hello  # every byte kept, to be forwarded unchanged


def test_hello_fragmented_over_many_records():
    hello = client_hello("frag.example")
    for size in (1, 2, 3, 7, 64, 255):
        data = refragment(hello, size)
        assert peek_client_hello(data) == (Peek.HELLO, "frag.example"), size
        reader = HelloReader()
        for i in range(0, len(data), 5):  # and each record split across reads
            state = reader.feed(data[i:i + 5])
        assert state is Peek.HELLO and reader.sni == "frag.example"


def test_not_tls():
    for data in (b"GET / HTTP/1.1\r\n", b"SSH-2.0-OpenSSH\r\n", b"\x16\x02\x00", b"\x17\x03\x03\x00\x10",
                 b"\x16\x03\x01\x00\x00", b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00"):
        assert peek_client_hello(data)[0] is Peek.NOT_TLS, data


def test_truncated_inner_lengths_are_not_tls():
    hello = bytearray(client_hello("len.example"))
    hello[5 + 4 + 34] = 200  # session-id length running past the message
    assert peek_client_hello(bytes(hello))[0] is Peek.NOT_TLS


def test_looks_like_tls():
    assert looks_like_tls(b"\x16\x03")
    assert not looks_like_tls(b"GE")


def test_alert_is_a_fatal_alert_record():
    assert alert() == b"\x15\x03\x03\x00\x02\x02\x31"


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_garbage_never_raises(data):
    state, sni = peek_client_hello(data)
    assert state in (Peek.MORE, Peek.HELLO, Peek.NOT_TLS)
    assert sni is None or isinstance(sni, str)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=2000), st.integers(min_value=0, max_value=255))
def test_corrupted_hello_never_raises(position, value):
    hello = bytearray(client_hello("fuzz.example"))
    hello[position % len(hello)] = value
    state, _sni = peek_client_hello(bytes(hello))
    assert state in (Peek.MORE, Peek.HELLO, Peek.NOT_TLS)
