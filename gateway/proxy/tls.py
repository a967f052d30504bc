"""TLS ClientHello peeking: the SNI from the first bytes of a connection, robust to fragments and garbage."""

from __future__ import annotations

import enum

RECORD_HANDSHAKE = 22
HANDSHAKE_CLIENT_HELLO = 1
EXT_SERVER_NAME = 0
MAX_HELLO = 64 * 1024  # a post-quantum ClientHello is ~2 KB; anything far beyond is not a client hello
_MAX_RECORD = (1 << 14) + 2048  # RFC 8446 5.2: the largest record a peer may send


class Peek(enum.Enum):
    MORE = "more"  # not enough bytes yet
    HELLO = "hello"  # a complete, well-formed ClientHello (the SNI may still be absent)
    NOT_TLS = "not_tls"  # the bytes are not the start of a TLS connection, or are malformed


def looks_like_tls(first: bytes | bytearray) -> bool:
    """True when the first bytes could start a TLS handshake record (type 22, version 3.x)."""
    return len(first) >= 1 and first[0] == RECORD_HANDSHAKE and (len(first) < 2 or first[1] == 3)


def peek_client_hello(data: bytes | bytearray) -> tuple[Peek, str | None]:
    """Look for a ClientHello at the start of `data`: (state, SNI host name or None)."""
    reader = HelloReader()
    state = reader.feed(data)
    return state, reader.sni


class HelloReader:
    """Incremental ClientHello reader: feed it each read, it keeps every byte in `raw` (to forward
    unchanged) and says when the hello is complete.

    The handshake message may be split over several records and each record over several reads
    (RFC 8446 5.1 allows a ClientHello fragmented down to one byte per record), so records are
    reassembled as they complete; work is linear in the bytes fed, whatever the fragmentation.
    Every length is checked against its container: garbage gives NOT_TLS, never an exception.
    """

    __slots__ = ("_need", "_pos", "message", "raw", "sni", "state")

    def __init__(self) -> None:
        self.raw = bytearray()
        self.message = bytearray()
        self._pos = 0  # start of the first record not yet reassembled
        self._need: int | None = None  # handshake message length, once its 4-byte header is in
        self.state = Peek.MORE
        self.sni: str | None = None

    def feed(self, data: bytes | bytearray) -> Peek:
        self.raw += data
        if self.state is not Peek.MORE:
            return self.state
        raw = self.raw
        if len(raw) > 2 * MAX_HELLO:
            self.state = Peek.NOT_TLS
            return self.state
        while True:
            pos = self._pos
            if len(raw) - pos < 5:
                if len(raw) > pos and not _record_prefix_ok(raw, pos):
                    self.state = Peek.NOT_TLS
                return self.state
            ctype, major, minor = raw[pos], raw[pos + 1], raw[pos + 2]
            length = (raw[pos + 3] << 8) | raw[pos + 4]
            if ctype != RECORD_HANDSHAKE or major != 3 or minor > 4 or length == 0 or length > _MAX_RECORD:
                self.state = Peek.NOT_TLS
                return self.state
            if len(raw) - pos - 5 < length:
                if self._need is None and len(self.message) + len(raw) - pos - 5 >= 4:
                    # Check the handshake header early, so a non-hello fails before its record is whole.
                    head = (self.message + raw[pos + 5:pos + 9])[:4]
                    if _hello_length(head) is None:
                        self.state = Peek.NOT_TLS
                return self.state
            self.message += raw[pos + 5:pos + 5 + length]
            self._pos = pos + 5 + length
            if self._need is None and len(self.message) >= 4:
                self._need = _hello_length(self.message)
                if self._need is None:
                    self.state = Peek.NOT_TLS
                    return self.state
            if self._need is not None and len(self.message) >= self._need + 4:
                try:
                    self.sni = _sni(memoryview(self.message)[4:4 + self._need])
                except _Malformed:
                    self.state = Peek.NOT_TLS
                    return self.state
                self.state = Peek.HELLO
                return self.state
            if len(self.message) > MAX_HELLO:
                self.state = Peek.NOT_TLS
                return self.state


def _record_prefix_ok(raw: bytearray, pos: int) -> bool:
    if raw[pos] != RECORD_HANDSHAKE:
        return False
    if len(raw) - pos >= 2 and raw[pos + 1] != 3:
        return False
    return not (len(raw) - pos >= 3 and raw[pos + 2] > 4)


def _hello_length(message: bytes | bytearray) -> int | None:
    if message[0] != HANDSHAKE_CLIENT_HELLO:
        return None
    length = (message[1] << 16) | (message[2] << 8) | message[3]
    if length < 38 or length > MAX_HELLO:  # version + random + session-id length + two more lengths
        return None
    return length


class _Malformed(ValueError):
    pass


def _sni(body: memoryview) -> str | None:
    """The host_name entry of the server_name extension (RFC 6066 3) of a ClientHello body."""
    end = len(body)
    pos = 2 + 32  # legacy_version, random
    pos = _skip(body, pos, 1, end)  # legacy_session_id
    pos = _skip(body, pos, 2, end)  # cipher_suites
    pos = _skip(body, pos, 1, end)  # legacy_compression_methods
    if pos == end:
        return None  # no extensions at all (old clients)
    ext_end = _length(body, pos, 2, end)
    pos += 2
    if ext_end + pos != end:
        raise _Malformed("extensions length")
    while pos < end:
        if end - pos < 4:
            raise _Malformed("extension header")
        etype = (body[pos] << 8) | body[pos + 1]
        elen = (body[pos + 2] << 8) | body[pos + 3]
        pos += 4
        if pos + elen > end:
            raise _Malformed("extension length")
        if etype == EXT_SERVER_NAME:
            return _host_name(body[pos:pos + elen])
        pos += elen
    return None


def _host_name(ext: memoryview) -> str | None:
    if len(ext) < 2:
        raise _Malformed("server_name list")
    list_len = (ext[0] << 8) | ext[1]
    if list_len + 2 != len(ext):
        raise _Malformed("server_name list length")
    pos = 2
    while pos < len(ext):
        if len(ext) - pos < 3:
            raise _Malformed("server_name entry")
        kind = ext[pos]
        nlen = (ext[pos + 1] << 8) | ext[pos + 2]
        pos += 3
        if pos + nlen > len(ext):
            raise _Malformed("server_name length")
        if kind == 0:
            raw = bytes(ext[pos:pos + nlen])
            if not raw or not raw.isascii():
                raise _Malformed("host_name is not ASCII")  # RFC 6066: A-labels only
            return raw.decode("ascii")
        pos += nlen
    return None


def _length(body: memoryview, pos: int, size: int, end: int) -> int:
    if pos + size > end:
        raise _Malformed("truncated")
    value = 0
    for i in range(size):
        value = (value << 8) | body[pos + i]
    return value


def _skip(body: memoryview, pos: int, size: int, end: int) -> int:
    length = _length(body, pos, size, end)
    pos += size + length
    if pos > end:
        raise _Malformed("truncated vector")
    return pos


def alert(description: int = 49) -> bytes:
    """A fatal TLS alert record (default access_denied, RFC 8446 6.2): how a blocked handshake ends."""
    return bytes((21, 3, 3, 0, 2, 2, description))
