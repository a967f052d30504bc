"""Prometheus remote-write 1.0 wire format: the WriteRequest protobuf and its snappy block framing."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

# Remote write bodies are snappy *block* format (not the framed stream format), per the 1.0 spec.
CONTENT_TYPE = "application/x-protobuf"
CONTENT_ENCODING = "snappy"
PROTOCOL_VERSION = "0.1.0"

# A WriteRequest that inflates past this is refused before it is decompressed (a snappy bomb would
# otherwise cost the guard memory); Prometheus' own batches are well under 1 MiB.
MAX_DECODED_BYTES = 64 * 1024 * 1024


class WireError(ValueError):
    """The body is not a valid snappy-compressed WriteRequest."""


@dataclass(frozen=True, slots=True)
class Sample:
    value: float
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class TimeSeries:
    labels: tuple[tuple[str, str], ...]
    samples: tuple[Sample, ...] = ()

    def label(self, name: str) -> str | None:
        """Value of label `name`; None if absent (a repeated label answers its first value)."""
        for key, value in self.labels:
            if key == name:
                return value
        return None


@dataclass(frozen=True, slots=True)
class WriteRequest:
    timeseries: tuple[TimeSeries, ...] = field(default_factory=tuple)
    # Metadata entries (field 3) carry metric names and help text only; kept as a count.
    metadata_count: int = 0


# -- protobuf primitives ---------------------------------------------------------------------------

def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise WireError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 64:
            raise WireError("varint too long")


def _fields(data: bytes):
    """Yield (field number, wire type, value) where value is an int for varints, else bytes."""
    pos, end = 0, len(data)
    while pos < end:
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise WireError("field number 0")
        if wire == 0:
            value, pos = _varint(data, pos)
            yield number, wire, value
        elif wire == 1:
            if pos + 8 > end:
                raise WireError("truncated fixed64")
            yield number, wire, data[pos:pos + 8]
            pos += 8
        elif wire == 2:
            length, pos = _varint(data, pos)
            if pos + length > end:
                raise WireError("truncated length-delimited field")
            yield number, wire, data[pos:pos + length]
            pos += length
        elif wire == 5:
            if pos + 4 > end:
                raise WireError("truncated fixed32")
            yield number, wire, data[pos:pos + 4]
            pos += 4
        else:
            raise WireError(f"unsupported wire type {wire}")


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WireError("label is not UTF-8") from exc


def _label(data: bytes) -> tuple[str, str]:
    name = value = ""
    for number, wire, raw in _fields(data):
        if wire != 2:
            continue
        if number == 1:
            name = _text(raw)
        elif number == 2:
            value = _text(raw)
    return name, value


def _sample(data: bytes) -> Sample:
    value, timestamp = 0.0, 0
    for number, wire, raw in _fields(data):
        if number == 1 and wire == 1:
            value = struct.unpack("<d", raw)[0]
        elif number == 2 and wire == 0:
            # int64 on the wire is two's complement in a 64-bit varint
            timestamp = raw - (1 << 64) if raw >= 1 << 63 else raw
    return Sample(value, timestamp)


def _series(data: bytes) -> TimeSeries:
    labels: list[tuple[str, str]] = []
    samples: list[Sample] = []
    for number, wire, raw in _fields(data):
        if wire != 2:
            continue
        if number == 1:
            labels.append(_label(raw))
        elif number == 2:
            samples.append(_sample(raw))
        # 3 exemplars, 4 native histograms: their labels are the series' labels, so nothing to check
    return TimeSeries(tuple(labels), tuple(samples))


def decode_write_request(data: bytes) -> WriteRequest:
    """Parse an uncompressed WriteRequest (timeseries=1 {labels=1 {name=1, value=2}, samples=2})."""
    series: list[TimeSeries] = []
    metadata = 0
    for number, wire, raw in _fields(data):
        if number == 1 and wire == 2:
            series.append(_series(raw))
        elif number == 3 and wire == 2:
            metadata += 1
    return WriteRequest(tuple(series), metadata)


def _put_varint(out: bytearray, value: int) -> None:
    value &= (1 << 64) - 1
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return


def _put_bytes(out: bytearray, number: int, payload: bytes) -> None:
    _put_varint(out, number << 3 | 2)
    _put_varint(out, len(payload))
    out += payload


def encode_write_request(request: WriteRequest) -> bytes:
    """Serialise a WriteRequest to protobuf bytes (uncompressed)."""
    out = bytearray()
    for ts in request.timeseries:
        body = bytearray()
        for name, value in ts.labels:
            label = bytearray()
            _put_bytes(label, 1, name.encode())
            _put_bytes(label, 2, value.encode())
            _put_bytes(body, 1, bytes(label))
        for sample in ts.samples:
            raw = bytearray()
            _put_varint(raw, 1 << 3 | 1)
            raw += struct.pack("<d", sample.value)
            _put_varint(raw, 2 << 3 | 0)
            _put_varint(raw, sample.timestamp_ms)
            _put_bytes(body, 2, bytes(raw))
        _put_bytes(out, 1, bytes(body))
    return bytes(out)


# -- snappy ----------------------------------------------------------------------------------------

def compress(data: bytes) -> bytes:
    """Snappy block-compress `data` (what a remote-write sender does)."""
    import cramjam

    return bytes(cramjam.snappy.compress_raw(data))


def decompress(body: bytes, limit: int = MAX_DECODED_BYTES) -> bytes:
    """Snappy block-decompress `body`, refusing output larger than `limit` before inflating it."""
    import cramjam

    # The block format starts with the uncompressed length as a varint: check it first.
    declared, _ = _varint(body, 0) if body else (0, 0)
    if declared > limit:
        raise WireError(f"decompressed size {declared} exceeds the limit {limit}")
    try:
        return bytes(cramjam.snappy.decompress_raw(body))
    except Exception as exc:  # cramjam raises its own DecompressionError
        raise WireError(f"not snappy data: {exc}") from exc


def parse_body(body: bytes, limit: int = MAX_DECODED_BYTES) -> WriteRequest:
    """Decompress and decode one remote-write HTTP body."""
    return decode_write_request(decompress(body, limit))
