"""Remote-write wire format and the guard's policy, without any server."""

from __future__ import annotations

import base64
import math
import struct

import pytest

from gateway.report.inventory import School
from gateway.report.receiver_guard import (
    CredentialsError,
    Guard,
    hash_password,
    load_credentials,
    set_credential,
)
from gateway.report.remote_write import (
    Sample,
    TimeSeries,
    WireError,
    WriteRequest,
    decode_write_request,
    encode_write_request,
)

SERIES = TimeSeries((("__name__", "schoolgw_protection_enabled"), ("school_id", "S1"), ("ward", "Phường Ba Đình")),
                    (Sample(1.0, 1767225600000), Sample(math.inf, -5)))


def test_round_trip():
    request = WriteRequest((SERIES, TimeSeries((("__name__", "up"),), ())))
    assert decode_write_request(encode_write_request(request)) == request


def test_known_bytes():
    # WriteRequest{timeseries: [{labels: [{name: "a", value: "b"}], samples: [{value: 1, timestamp: 2}]}]}
    label = b"\x0a\x01a\x12\x01b"
    sample = b"\x09" + struct.pack("<d", 1.0) + b"\x10\x02"
    ts = b"\x0a" + bytes([len(label)]) + label + b"\x12" + bytes([len(sample)]) + sample
    wire = b"\x0a" + bytes([len(ts)]) + ts
    assert encode_write_request(WriteRequest((TimeSeries((("a", "b"),), (Sample(1.0, 2),)),))) == wire
    assert decode_write_request(wire).timeseries[0].label("a") == "b"


def test_unknown_fields_and_metadata_are_skipped():
    ts = encode_write_request(WriteRequest((SERIES,)))
    # field 3 (metadata, length-delimited), field 9 varint, field 10 fixed32, field 11 fixed64
    extra = b"\x1a\x03abc" + b"\x48\x96\x01" + b"\x55abcd" + b"\x59" + b"12345678"
    decoded = decode_write_request(ts + extra)
    assert decoded.timeseries == (SERIES,) and decoded.metadata_count == 1


@pytest.mark.parametrize("raw", [b"\x0a\x05ab", b"\x0a", b"\x0b", b"\x00\x01", b"\x0a\x03\x0a\x01\xff",
                                 b"\xff" * 11])
def test_malformed_bodies_raise_wire_error(raw):
    with pytest.raises(WireError):
        decode_write_request(raw)


def test_snappy_round_trip_and_bomb_limit():
    pytest.importorskip("cramjam", reason="snappy needs cramjam — pip install cramjam")
    from gateway.report.remote_write import compress, decompress, parse_body

    body = compress(encode_write_request(WriteRequest((SERIES,))))
    assert parse_body(body).timeseries == (SERIES,)
    big = compress(b"\0" * 100_000)
    with pytest.raises(WireError, match="exceeds"):
        decompress(big, limit=1000)
    with pytest.raises(WireError):
        decompress(b"\x10garbage")


def _auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_guard_authentication():
    guard = Guard({"S1": hash_password("pw1", iterations=1000)})
    assert guard.authenticate(_auth("S1", "pw1")) == "S1"
    assert guard.authenticate(_auth("S1", "pw1")) == "S1"  # second time from the cache
    for header in (_auth("S1", "pw2"), _auth("S2", "pw1"), "Bearer x", "Basic !!!", None, "Basic " +
                   base64.b64encode(b"no-colon").decode()):
        assert guard.authenticate(header) is None


def test_guard_series_policy():
    inventory = [School("S1", "Trường 1", "Phường Ba Đình", ("thcs",), None)]
    guard = Guard({}, inventory)
    assert guard.check("S1", WriteRequest((SERIES,))).status == 200
    assert guard.check("S1", WriteRequest()).status == 200  # metadata-only requests carry no series
    other = TimeSeries((("__name__", "up"), ("school_id", "S2")))
    assert guard.check("S1", WriteRequest((SERIES, other))).status == 403
    twice = TimeSeries((("__name__", "up"), ("school_id", "S1"), ("school_id", "S2")))
    assert guard.check("S1", WriteRequest((twice,))).status == 403
    moved = TimeSeries((("__name__", "up"), ("school_id", "S1"), ("level", "thpt")))
    assert "level" in guard.check("S1", WriteRequest((moved,))).reason
    assert guard.check("S9", WriteRequest()).status == 403  # credentials without an inventory row
    assert Guard({}).check("S9", WriteRequest()).status == 200  # no inventory: only school_id is checked


def test_credentials_file(tmp_path):
    path = tmp_path / "remote-write.credentials"
    first = set_credential(path, "S1")
    second = set_credential(path, "S2", "chosen")
    replaced = set_credential(path, "S1")
    assert second == "chosen" and first != replaced
    stored = load_credentials(path)
    assert set(stored) == {"S1", "S2"}
    guard = Guard(stored)
    assert guard.authenticate(_auth("S1", replaced)) == "S1" and guard.authenticate(_auth("S1", first)) is None
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    path.write_text("# comment\nS3:plaintext\n", encoding="utf-8")
    with pytest.raises(CredentialsError, match=":2:"):
        load_credentials(path, "en")
