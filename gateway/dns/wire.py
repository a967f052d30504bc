"""Raw-bytes DNS wire handling for the hot path: gate client queries, scan upstream answers, patch bytes."""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

# RCODEs parse_query can ask the server to answer with.
FORMERR = 1
NOTIMP = 4
REFUSED = 5
BADVERS = 16

TYPE_A = 1
TYPE_CNAME = 5
TYPE_SOA = 6
TYPE_AAAA = 28
TYPE_OPT = 41
CLASS_IN = 1

_HEADER = struct.Struct("!6H")
_HEADER_TAIL = struct.Struct("!5H")  # flags and the four counts
_unpack_header = _HEADER.unpack_from
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_TWO_U16 = struct.Struct("!HH")
_RR_FIXED = struct.Struct("!HHIH")  # type, class, ttl, rdlength: the 10 bytes after an owner name
# qtype, qclass, then an OPT record: root owner byte, type, udp size, ext rcode, version, flags, rdlength
_QUESTION_OPT = struct.Struct("!HHBHHBBHH")
_unpack_question_opt = _QUESTION_OPT.unpack_from

_QR = 0x8000
_TC = 0x0200

_MAX_NAME = 255  # octets in wire form, terminating zero included
_MAX_JUMPS = 128

# Bytes that may appear verbatim in a presentation-form label; anything else is escaped so that a
# label such as b"evil.example" can never read like two labels of a listed name.
_PLAIN = b"abcdefghijklmnopqrstuvwxyz0123456789-_"
_PLAIN_SET = frozenset(_PLAIN)


class Drop(Exception):
    """A packet that gets no answer at all; parse_query returns None for it rather than raising."""


class WireError(ValueError):
    """A DNS message that is malformed; the message says where (English, for logs)."""


@dataclass(slots=True)
class Query:
    """A client query that passed every wire check; `raw` is the packet exactly as received."""

    raw: bytes
    id: int
    flags: int
    qname: str
    qname_wire: bytes
    qtype: int
    qclass: int
    question_end: int
    edns: bool
    udp_size: int
    do: bool
    rd: bool
    cd: bool


@dataclass(slots=True)
class RR:
    """One resource record located in a packet (offsets let the cache patch TTLs without re-parsing)."""

    name: str
    type: int
    cls: int
    ttl: int
    ttl_offset: int
    rdata_offset: int
    rdlength: int
    section: int  # 0 answer, 1 authority, 2 additional


@dataclass(slots=True)
class ResponseInfo:
    """What the stages above the upstream need to know about an answer, read from its bytes."""

    id: int
    flags: int
    rcode: int
    tc: bool
    qname_wire: bytes
    qtype: int
    qclass: int
    question_end: int
    records: list[RR]
    cname_targets: tuple[str, ...]
    addresses: tuple[tuple[str, bytes], ...]
    ttl: int | None
    ttl_offsets: tuple[int, ...]


def _escape(labels: Iterable[bytes]) -> str:
    """Presentation form of already lower-cased labels that contain bytes outside _PLAIN (slow path)."""
    parts = []
    for label in labels:
        out = []
        for b in label:
            if b in _PLAIN_SET:
                out.append(chr(b))
            elif b == 0x2E:
                out.append("\\.")
            elif b == 0x5C:
                out.append("\\\\")
            else:
                out.append(f"\\{b:03d}")
        parts.append("".join(out))
    return ".".join(parts)


# ---------------------------------------------------------------------------------------------------
# Client queries


def parse_query(data: bytes, tcp: bool = False) -> Query | int | None:
    """Check a client packet: a Query when it is a query we serve, an RCODE to answer with, or None
    to drop it silently. Never raises, whatever the input.

    `tcp` is accepted so the caller never has to special-case transports; zone transfers are
    REFUSED on both, since this resolver is authoritative for nothing.
    """
    if type(data) is not bytes:
        data = bytes(data)
    n = len(data)
    if n < 12:
        return None
    id_, flags, qdcount, ancount, nscount, arcount = _unpack_header(data)
    if flags & 0x8000:  # QR
        # Answering a "response" invites reflection loops between two resolvers.
        return None
    if flags & 0x7800:
        return NOTIMP
    if qdcount != 1 or ancount or nscount or arcount > 1:
        return FORMERR

    # Question name: uncompressed labels only (a pointer has nothing to point back to in a query).
    # Walking a copy cut at 12 + 255 bytes makes "too long" and "runs past the end" the same
    # IndexError, so the loop needs no bounds checks; lower() here once serves both name forms
    # (length bytes are < 64, below "A", so lower() never touches them).
    head = (data if n <= 12 + _MAX_NAME else data[: 12 + _MAX_NAME]).lower()
    labels = []
    off = 12
    try:
        while True:
            length = head[off]
            if not length:
                break
            if length > 63:  # 0x40/0x80 reserved label types and 0xC0 pointers alike
                return FORMERR
            end = off + 1 + length
            labels.append(head[off + 1 : end])
            off = end
    except IndexError:
        return FORMERR
    off += 1

    edns = do = False
    udp_size = 512
    if arcount:
        if off + 15 > n:
            return FORMERR
        qtype, qclass, owner, rtype, size, _ext, version, eflags, rdlen = _unpack_question_opt(data, off)
        if owner or rtype != 41:
            return FORMERR  # an additional record that is not OPT, or OPT not owned by the root
        rdata = off + 15
        end = rdata + rdlen
        if end != n:
            return FORMERR  # runs past the end, or trailing garbage
        if version:
            return BADVERS  # before reading options: another version may lay them out differently
        while rdata < end:
            if rdata + 4 > end:
                return FORMERR
            rdata += 4 + _U16.unpack_from(data, rdata + 2)[0]
        if rdata != end:
            return FORMERR
        edns = True
        do = eflags >= 0x8000  # DO is the top bit
        if size > 512:
            udp_size = size
    else:
        if off + 4 != n:
            return FORMERR
        qtype, qclass = _TWO_U16.unpack_from(data, off)

    if qclass != 1:  # IN
        if qtype == 0:
            return FORMERR
        return NOTIMP if qclass in (254, 255) else REFUSED
    if qtype == 0 or qtype == 41 or qtype >= 249:
        if qtype == 0 or qtype == 41 or qtype == 250:  # OPT, TSIG: meta types, not questions
            return FORMERR
        if qtype in (249, 251, 252):  # TKEY, IXFR, AXFR: nothing here to transfer or key
            return REFUSED
        if qtype in (253, 254):  # MAILB, MAILA: obsolete
            return NOTIMP

    if labels:
        joined = b".".join(labels)
        # Deleting the plain bytes leaves the separators, plus every odd byte (a dot inside a label too).
        if len(joined.translate(None, _PLAIN)) != len(labels) - 1:
            qname = _escape(labels)
        else:
            qname = joined.decode("ascii")
    else:
        qname = ""
    return Query(data, id_, flags, qname, head[12:off], qtype, qclass, off + 4, edns, udp_size, do,
                 flags & 0x0100 != 0, flags & 0x0010 != 0)  # RD, CD


# ---------------------------------------------------------------------------------------------------
# Upstream responses


def _read_name(data: bytes, off: int, n: int) -> tuple[list[bytes], int]:
    """Labels of the (possibly compressed) name at `off` and the offset just after it in place.

    Iterative on purpose: every pointer must point before the previous jump target (so the walk
    always terminates), at most _MAX_JUMPS of them, and the whole name stays within 255 octets.
    """
    labels = []
    after = -1
    lowest = off
    total = 1
    jumps = 0
    while True:
        if off >= n:
            raise WireError(f"name runs past the end of the packet at offset {off}")
        length = data[off]
        if length == 0:
            return labels, (off + 1 if after < 0 else after)
        if length >= 0xC0:
            if off + 1 >= n:
                raise WireError(f"truncated compression pointer at offset {off}")
            target = ((length & 0x3F) << 8) | data[off + 1]
            if after < 0:
                after = off + 2
            if target >= lowest or target < 12:
                raise WireError(f"compression pointer at offset {off} does not point backwards ({target})")
            jumps += 1
            if jumps > _MAX_JUMPS:
                raise WireError("too many compression pointers in one name")
            lowest = off = target
            continue
        if length > 63:
            raise WireError(f"reserved label type {length:#04x} at offset {off}")
        end = off + 1 + length
        total += 1 + length
        if total > _MAX_NAME:
            raise WireError(f"name longer than {_MAX_NAME} octets at offset {off}")
        if end >= n:
            raise WireError(f"label runs past the end of the packet at offset {off}")
        labels.append(data[off + 1 : end])
        off = end


def _name_end(data: bytes, off: int, n: int) -> int:
    """Offset after the name at `off`, validating it fully (SOA names, which only need skipping)."""
    return _read_name(data, off, n)[1]


def _name_text(low: bytes, data: bytes, off: int) -> tuple[str, int]:
    """Presentation text of the name at `off` and the offset after it in place: scan_response's hot
    version of _read_name, with the same pointer rules.

    Labels come from `low`, the whole packet lower-cased once; pointer offsets from `data`, since
    lower() would corrupt an offset byte that happens to be an ASCII capital. Running off the end
    raises IndexError, which the caller reports as a WireError.
    """
    labels = []
    after = -1
    lowest = off
    total = 1
    jumps = 0
    while True:
        length = low[off]
        if length < 64:
            if not length:
                break
            end = off + 1 + length
            total += 1 + length
            if total > _MAX_NAME:
                raise WireError(f"name longer than {_MAX_NAME} octets at offset {off}")
            labels.append(low[off + 1 : end])
            off = end
            continue
        if length < 0xC0:
            raise WireError(f"reserved label type {data[off]:#04x} at offset {off}")
        target = ((length & 0x3F) << 8) | data[off + 1]
        if after < 0:
            after = off + 2
        if target >= lowest or target < 12:
            raise WireError(f"compression pointer at offset {off} does not point backwards ({target})")
        jumps += 1
        if jumps > _MAX_JUMPS:
            raise WireError("too many compression pointers in one name")
        lowest = off = target
    if not labels:
        return "", (off + 1 if after < 0 else after)
    joined = b".".join(labels)
    if len(joined.translate(None, _PLAIN)) != len(labels) - 1:
        return _escape(labels), (off + 1 if after < 0 else after)
    return joined.decode("ascii"), (off + 1 if after < 0 else after)


def read_name(data: bytes, off: int) -> tuple[bytes, int]:
    """The name at `off` decompressed to lower-case wire form, and the offset just after it in place.

    For copying names out of one packet into another (answers.cname_answer); raises WireError.
    """
    labels, end = _read_name(data, off, len(data))
    out = bytearray()
    for label in labels:
        out.append(len(label))
        out += label
    out.append(0)
    return bytes(out).lower(), end


def scan_response(data: bytes) -> ResponseInfo:
    """Locate everything the stages need in an upstream answer; raises WireError if it is malformed.

    With TC set, records that are cut short are tolerated (the ones complete so far are returned):
    the caller retries over TCP and must not cache a truncated answer anyway.
    """
    if type(data) is not bytes:
        data = bytes(data)
    n = len(data)
    if n < 12:
        raise WireError(f"{n} bytes is shorter than a DNS header")
    id_, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(data)
    if not flags & _QR:
        raise WireError("QR bit clear: a query, not a response")
    if qdcount > 1:
        raise WireError(f"QDCOUNT {qdcount}: a response carries at most one question")
    tc = flags & _TC != 0
    rcode = flags & 0xF
    low = data.lower()

    off = 12
    qname_wire = b""
    qtype = qclass = 0
    if qdcount:
        end = 12
        while True:
            if end >= n:
                raise WireError("question name runs past the end of the packet")
            length = data[end]
            if not length:
                break
            if length > 63:  # nothing before offset 12 can hold a name to point to
                raise WireError(f"pointer or reserved label type {length:#04x} in the question")
            end += 1 + length
            if end > 12 + _MAX_NAME - 1:
                raise WireError(f"question name longer than {_MAX_NAME} octets")
        end += 1
        if end + 4 > n:
            raise WireError("question runs past the end of the packet")
        qname_wire = low[12:end]
        qtype, qclass = _TWO_U16.unpack_from(data, end)
        off = end + 4
    question_end = off

    records: list[RR] = []
    cnames: list[str] = []
    addresses: list[tuple[str, bytes]] = []
    ttl_offsets: list[int] = []
    answer_ttl: int | None = None
    soa_ttl: int | None = None
    seen_opt = False
    # Owners are usually a bare pointer to the question name or to a CNAME target: text of names
    # already decoded, by offset, so each is decoded once.
    names: dict[int, str] = {}
    unpack_rr = _RR_FIXED.unpack_from
    an_end = ancount
    ns_end = ancount + nscount

    try:
        for index in range(ns_end + arcount):
            section = 0 if index < an_end else 1 if index < ns_end else 2
            first = data[off]
            if first >= 0xC0:
                target = ((first & 0x3F) << 8) | data[off + 1]
                name = names.get(target)
                if name is None or target >= off:
                    name, end = _name_text(low, data, off)
                    names[target] = name
                else:
                    end = off + 2
            else:
                name, end = _name_text(low, data, off)
            if end + 10 > n:
                raise WireError(f"record fixed part runs past the end at offset {end}")
            rtype, cls, ttl, rdlen = unpack_rr(data, end)
            rdata = end + 10
            off = rdata + rdlen
            if off > n:
                raise WireError(f"rdata runs past the end of the packet at offset {rdata}")
            if rtype == TYPE_OPT:
                if section != 2 or seen_opt or first:
                    raise WireError("OPT record out of place, duplicated, or not owned by the root")
                seen_opt = True
                rcode |= (ttl >> 24) << 4
                continue
            if ttl > 0x7FFFFFFF:  # RFC 2181 section 8
                ttl = 0
            records.append(RR(name, rtype, cls, ttl, end + 4, rdata, rdlen, section))
            ttl_offsets.append(end + 4)
            if section == 0:
                if answer_ttl is None or ttl < answer_ttl:
                    answer_ttl = ttl
                if rtype == TYPE_CNAME:
                    target_name, stop = _name_text(low, data, rdata)
                    if stop != off:
                        raise WireError(f"CNAME rdata at offset {rdata} is not exactly one name")
                    cnames.append(target_name)
                    # The next owner is usually a pointer to this very name.
                    names[rdata] = target_name
                elif cls == CLASS_IN and rtype in (TYPE_A, TYPE_AAAA):
                    if rdlen != (4 if rtype == TYPE_A else 16):
                        raise WireError(f"address record with rdlength {rdlen} at offset {rdata}")
                    addresses.append((name, data[rdata:off]))
            elif section == 1 and rtype == TYPE_SOA:
                stop = _name_end(data, _name_end(data, rdata, n), n)
                if stop + 20 != off:
                    raise WireError(f"SOA rdata at offset {rdata} has the wrong length")
                negative = min(ttl, _U32.unpack_from(data, stop + 16)[0])
                if soa_ttl is None or negative < soa_ttl:
                    soa_ttl = negative
        if off != n:
            raise WireError(f"{n - off} bytes of trailing garbage after the last record")
    except (WireError, IndexError) as exc:
        if not tc:
            if isinstance(exc, IndexError):
                raise WireError(f"record runs past the end of the {n}-byte packet") from None
            raise

    if rcode == 3 or (rcode == 0 and answer_ttl is None):
        # RFC 2308: a negative answer lives as long as its SOA says; without one it cannot be cached.
        # A CNAME chain ending in NXDOMAIN must not outlive its shortest CNAME either.
        ttl_out = soa_ttl
        if soa_ttl is not None and answer_ttl is not None and answer_ttl < soa_ttl:
            ttl_out = answer_ttl
    elif rcode == 0:
        ttl_out = answer_ttl
    else:
        ttl_out = None
    return ResponseInfo(id_, flags, rcode, tc, qname_wire, qtype, qclass, question_end, records,
                        tuple(cnames), tuple(addresses), ttl_out, tuple(ttl_offsets))


# ---------------------------------------------------------------------------------------------------
# Byte helpers


def with_id(packet: bytes, id: int) -> bytes:
    """A copy of `packet` carrying message ID `id`."""
    return _U16.pack(id & 0xFFFF) + packet[2:]


def patch_ttls(packet: bytes, offsets: Iterable[int], elapsed: int, id: int) -> bytes:
    """A copy of `packet` with ID `id` and every TTL at `offsets` lowered by `elapsed` seconds (floor 0)."""
    buf = bytearray(packet)
    _U16.pack_into(buf, 0, id & 0xFFFF)
    unpack = _U32.unpack_from
    pack = _U32.pack_into
    for off in offsets:
        ttl = unpack(buf, off)[0]
        if ttl > 0x7FFFFFFF:
            ttl = 0
        left = ttl - elapsed
        pack(buf, off, left if left > 0 else 0)
    return bytes(buf)


def question_matches(info: ResponseInfo, query_qname_wire: bytes, qtype: int, qclass: int) -> bool:
    """Whether an answer is for this question (names compared case-insensitively, RFC 4343)."""
    return info.qtype == qtype and info.qclass == qclass and info.qname_wire == query_qname_wire.lower()


def name_to_wire(name: str) -> bytes:
    """Presentation form (trailing dot optional, \\. \\\\ \\DDD escapes understood) to lower-case wire form.

    Raises ValueError for empty labels, labels over 63 octets, names over 255 octets or non-ASCII text.
    """
    if "\\" in name:
        labels = _unescape(name)
    else:
        if name.endswith("."):
            name = name[:-1]
        if not name:
            return b"\x00"
        try:
            labels = [label.encode("ascii") for label in name.split(".")]
        except UnicodeEncodeError:
            raise ValueError(f"name {name!r} is not ASCII: use its IDNA (xn--) form") from None
    out = bytearray()
    for label in labels:
        if not label:
            raise ValueError(f"name {name!r} has an empty label")
        if len(label) > 63:
            raise ValueError(f"name {name!r} has a label longer than 63 octets")
        out.append(len(label))
        out += label
    out.append(0)
    if len(out) > _MAX_NAME:
        raise ValueError(f"name {name!r} is longer than {_MAX_NAME} octets in wire form")
    return bytes(out).lower()


def _unescape(name: str) -> list[bytes]:
    labels = []
    current = bytearray()
    i = 0
    size = len(name)
    while i < size:
        ch = name[i]
        if ch == "\\":
            digits = name[i + 1 : i + 4]
            if len(digits) == 3 and digits.isascii() and digits.isdigit():
                value = int(digits)
                if value > 255:
                    raise ValueError(f"escape \\{digits} in {name!r} is over 255")
                current.append(value)
                i += 4
                continue
            if i + 1 >= size:
                raise ValueError(f"name {name!r} ends in a lone backslash")
            ch = name[i + 1]
            i += 2
        else:
            i += 1
            if ch == ".":
                labels.append(bytes(current))
                current = bytearray()
                continue
        if not ch.isascii():
            raise ValueError(f"name {name!r} is not ASCII: use its IDNA (xn--) form")
        current.append(ord(ch))
    if current:
        labels.append(bytes(current))  # no trailing dot: the last label ends with the text
    return labels


def _skip_name(data: bytes, off: int, n: int) -> int:
    """Offset after the name at `off` without following pointers, or -1 if it is cut short."""
    while off < n:
        length = data[off]
        if length == 0:
            return off + 1
        if length >= 0xC0:
            return off + 2 if off + 2 <= n else -1
        if length > 63:
            return -1
        off += 1 + length
    return -1


def truncate_for_udp(packet: bytes, limit: int) -> bytes:
    """`packet` if it fits in `limit` bytes, else its header with TC set, its question and its OPT record
    (RFC 6891 section 7 keeps OPT in a truncated answer), every other record dropped."""
    n = len(packet)
    if n <= limit or n < 12:
        return packet
    _id, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(packet)
    flags |= _TC
    off = 12
    for _ in range(qdcount):
        end = _skip_name(packet, off, n)
        if end < 0 or end + 4 > n:
            # Cannot find the question: a header alone still tells the client to retry over TCP.
            return packet[:2] + _HEADER_TAIL.pack(flags, 0, 0, 0, 0)
        off = end + 4
    question = packet[12:off]
    opt = b""
    pos = off
    for index in range(ancount + nscount + arcount):
        end = _skip_name(packet, pos, n)
        if end < 0 or end + 10 > n:
            break
        rtype = _U16.unpack_from(packet, end)[0]
        stop = end + 10 + _U16.unpack_from(packet, end + 8)[0]
        if stop > n:
            break
        if rtype == TYPE_OPT and index >= ancount + nscount:
            opt = packet[pos:stop]
            if 12 + len(question) + len(opt) > limit:
                opt = packet[pos : end + 8] + b"\x00\x00"  # keep the OPT, shed its options
            break
        pos = stop
    return packet[:2] + _HEADER_TAIL.pack(flags, qdcount, 0, 0, 1 if opt else 0) + question + opt
