"""Answers built as bytes from a parsed Query: errors, NXDOMAIN/NODATA with SOA, null, addresses, CNAME."""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Sequence

from gateway.dns.wire import (
    TYPE_A,
    TYPE_AAAA,
    TYPE_CNAME,
    Query,
    WireError,
    name_to_wire,
    question_matches,
    read_name,
    scan_response,
)

EDNS_SIZE = 1232  # DNS flag day 2020: fits the common path MTU without IP fragmentation

NOERROR = 0
FORMERR = 1
SERVFAIL = 2
NXDOMAIN = 3
NOTIMP = 4
REFUSED = 5
BADVERS = 16

SOA_MNAME = "ns.school-gateway.invalid"
SOA_RNAME = "hostmaster.school-gateway.invalid"
SOA_SERIAL, SOA_REFRESH, SOA_RETRY, SOA_EXPIRE = 1, 3600, 600, 86400

_HEADER = struct.Struct("!6H")
_HEADER_TAIL = struct.Struct("!5H")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_RR_FIXED = struct.Struct("!HHIH")

# Every answer here: QR and RA set, AA clear (we forward for the whole namespace and are the
# authority for none of it, blocked names included), opcode QUERY; RD and CD are copied (RFC 4035).
_FLAGS = 0x8080
_COPIED = 0x0110
_MAX_TTL = 0x7FFFFFFF

_QNAME_PTR = b"\xc0\x0c"  # the question name always starts at offset 12, uncompressed


def _opt(do: bool, ext_rcode: int = 0) -> bytes:
    # Root owner, TYPE OPT, CLASS = our UDP size, TTL = ext rcode | version 0 | DO, no options.
    return b"\x00" + struct.pack("!HHBBHH", 41, EDNS_SIZE, ext_rcode, 0, 0x8000 if do else 0, 0)


_OPT = _opt(False)
_OPT_DO = _opt(True)

_SOA_NAMES = name_to_wire(SOA_MNAME) + name_to_wire(SOA_RNAME)
_SOA_TYPE_CLASS = struct.pack("!HH", 6, 1)
# rdlength, mname, rname, serial..expire; MINIMUM (the negative TTL) follows per answer.
_SOA_MIDDLE = (_U16.pack(len(_SOA_NAMES) + 20) + _SOA_NAMES
               + struct.pack("!4I", SOA_SERIAL, SOA_REFRESH, SOA_RETRY, SOA_EXPIRE))
_A_HEAD = struct.pack("!HH", TYPE_A, 1)
_AAAA_HEAD = struct.pack("!HH", TYPE_AAAA, 1)
_CNAME_HEAD = struct.pack("!HH", TYPE_CNAME, 1)
_V4_ZERO = _U16.pack(4) + bytes(4)
_V6_ZERO = _U16.pack(16) + bytes(16)

# Second-level labels under which registrations happen one level deeper (soa_zone_for).
_SECOND_LEVEL = frozenset(
    [f"{sld}.vn" for sld in ("com", "net", "org", "edu", "gov", "int", "ac", "biz", "info", "name",
                             "pro", "health", "mil")]
    + ["co.uk", "org.uk", "ac.uk", "gov.uk", "me.uk", "ltd.uk", "plc.uk", "net.uk",
       "com.au", "net.au", "org.au", "edu.au", "gov.au",
       "co.jp", "ne.jp", "or.jp", "ac.jp", "go.jp",
       "co.kr", "or.kr", "ac.kr", "go.kr",
       "com.cn", "net.cn", "org.cn", "edu.cn", "gov.cn",
       "com.sg", "edu.sg", "gov.sg", "org.sg", "net.sg",
       "com.my", "edu.my", "gov.my", "com.tw", "edu.tw", "com.hk", "edu.hk",
       "co.th", "ac.th", "go.th", "or.th", "in.th",
       "co.id", "ac.id", "go.id", "or.id", "com.ph", "edu.ph",
       "co.nz", "co.in", "com.br", "co.za", "com.tr", "com.mx", "com.ar"]
)

# Rdata layouts whose names may be compressed (RFC 3597 section 4 plus the types receivers are told
# to decompress): "N" is a name, an int a run of fixed bytes. Everything else is copied verbatim.
_NAME_LAYOUTS: dict[int, tuple[int | str, ...]] = {
    2: ("N",), 3: ("N",), 4: ("N",), 5: ("N",), 7: ("N",), 8: ("N",), 9: ("N",), 12: ("N",),
    39: ("N",),  # NS MD MF CNAME MB MG MR PTR DNAME
    6: ("N", "N", 20),  # SOA
    14: ("N", "N"), 17: ("N", "N"),  # MINFO RP
    15: (2, "N"), 18: (2, "N"), 21: (2, "N"), 36: (2, "N"),  # MX AFSDB RT KX
    33: (6, "N"),  # SRV
}


def _ttl(ttl: int) -> int:
    return 0 if ttl < 0 else _MAX_TTL if ttl > _MAX_TTL else ttl


def _build(query: Query, rcode: int, ancount: int, nscount: int, body: bytes) -> bytes:
    if query.edns:
        return b"".join((
            _HEADER.pack(query.id, _FLAGS | (query.flags & _COPIED) | rcode, 1, ancount, nscount, 1),
            query.raw[12:query.question_end], body, _OPT_DO if query.do else _OPT))
    return b"".join((
        _HEADER.pack(query.id, _FLAGS | (query.flags & _COPIED) | rcode, 1, ancount, nscount, 0),
        query.raw[12:query.question_end], body))


def error(query: Query, rcode: int) -> bytes:
    """An answer carrying only the question and `rcode` (extended RCODEs such as BADVERS go in OPT)."""
    if rcode < 16:
        return _build(query, rcode, 0, 0, b"")
    # RFC 6891 section 6.1.3: the upper 8 bits live in the OPT TTL, so an OPT must be present.
    header = _HEADER.pack(query.id, _FLAGS | (query.flags & _COPIED) | (rcode & 0xF), 1, 0, 0, 1)
    return header + query.raw[12:query.question_end] + _opt(query.edns and query.do, rcode >> 4)


def error_from_raw(raw: bytes, rcode: int) -> bytes | None:
    """An error answer for a packet parse_query rejected: its ID, opcode and RD echoed, and its question
    when one can be located without following pointers; None for packets shorter than a header."""
    try:
        if len(raw) < 12:
            return None
        raw = bytes(raw)
        flags = _FLAGS | (_U16.unpack_from(raw, 2)[0] & (0x7800 | _COPIED)) | (rcode & 0xF)
        question = b""
        if _U16.unpack_from(raw, 4)[0] == 1:
            question = _locate_question(raw)
        opt = _opt(False, rcode >> 4) if rcode > 15 else b""
        header = _HEADER_TAIL.pack(flags, 1 if question else 0, 0, 0, 1 if opt else 0)
        return raw[:2] + header + question + opt
    except Exception:  # this runs on garbage by design: dropping one packet beats crashing the listener
        return None


def _locate_question(raw: bytes) -> bytes:
    n = len(raw)
    off = 12
    while off < n and off < 12 + 255:
        length = raw[off]
        if length == 0:
            return raw[12 : off + 5] if off + 5 <= n else b""
        if length > 63:
            return b""
        off += 1 + length
    return b""


def _owner(query: Query, zone: str) -> bytes:
    """Wire form of the SOA owner: a pointer into the question when `zone` is the name or a parent."""
    if zone.endswith(".") and not zone.endswith("\\."):
        zone = zone[:-1]
    zone = zone.lower()
    if not zone:
        return b"\x00"
    qname = query.qname
    if zone == qname:
        return _QNAME_PTR
    if "\\" not in qname and "\\" not in zone:
        # Unescaped, a label's offset in the text equals its offset in the wire form.
        cut = len(qname) - len(zone)
        if cut > 0 and qname[cut - 1] == "." and qname.endswith(zone):
            return _U16.pack(0xC000 | (12 + cut))
    try:
        wire = name_to_wire(zone)
    except ValueError:
        # A zone that is not a name must not turn a block into an error: own the SOA by the question.
        return _QNAME_PTR
    # With escapes the text offsets drift from the wire ones: look for the suffix in the wire form.
    qwire = query.qname_wire
    cut = len(qwire) - len(wire)
    if cut > 0 and qwire.endswith(wire):
        pos = 0
        while pos < cut:
            pos += 1 + qwire[pos]
        if pos == cut:
            return _U16.pack(0xC000 | (12 + cut))
    return wire


def _soa(query: Query, soa_zone: str, ttl: int) -> bytes:
    ttl_b = _U32.pack(_ttl(ttl))
    return b"".join((_owner(query, soa_zone), _SOA_TYPE_CLASS, ttl_b, _SOA_MIDDLE, ttl_b))


def nxdomain(query: Query, soa_zone: str, ttl: int) -> bytes:
    """NXDOMAIN with an SOA for `soa_zone` in the authority section, so clients cache it for `ttl`
    (SOA TTL and MINIMUM both `ttl`, RFC 2308)."""
    return _build(query, NXDOMAIN, 0, 1, _soa(query, soa_zone, ttl))


def nodata(query: Query, soa_zone: str, ttl: int) -> bytes:
    """NOERROR with an empty answer and an SOA for `soa_zone` in the authority section (RFC 2308)."""
    return _build(query, NOERROR, 0, 1, _soa(query, soa_zone, ttl))


def null_answer(query: Query, ttl: int, soa_zone: str | None = None) -> bytes:
    """A -> 0.0.0.0, AAAA -> ::, any other type -> NODATA (SOA owned by `soa_zone`, default the name)."""
    qtype = query.qtype
    if qtype == TYPE_A:
        return _build(query, NOERROR, 1, 0, _QNAME_PTR + _A_HEAD + _U32.pack(_ttl(ttl)) + _V4_ZERO)
    if qtype == TYPE_AAAA:
        return _build(query, NOERROR, 1, 0, _QNAME_PTR + _AAAA_HEAD + _U32.pack(_ttl(ttl)) + _V6_ZERO)
    return nodata(query, query.qname if soa_zone is None else soa_zone, ttl)


def _packed(address: bytes | str, size: int) -> bytes:
    if isinstance(address, str):
        address = ipaddress.ip_address(address).packed
    if len(address) != size:
        raise ValueError(f"address {address!r} is not {size} bytes long")
    return address


def address_answer(query: Query, v4: Sequence[bytes | str], v6: Sequence[bytes | str], ttl: int,
                   soa_zone: str | None = None) -> bytes:
    """A or AAAA records for the question name from `v4` / `v6` (bytes or text); a query of any other
    type, or of a family with no address, gets NODATA (SOA owned by `soa_zone`, default the name)."""
    qtype = query.qtype
    if qtype == TYPE_A and v4:
        head, size, addresses = _A_HEAD, 4, v4
    elif qtype == TYPE_AAAA and v6:
        head, size, addresses = _AAAA_HEAD, 16, v6
    else:
        return nodata(query, query.qname if soa_zone is None else soa_zone, ttl)
    prefix = _QNAME_PTR + head + _U32.pack(_ttl(ttl)) + _U16.pack(size)
    body = b"".join(prefix + _packed(a, size) for a in addresses)
    return _build(query, NOERROR, len(addresses), 0, body)


def cname_answer(query: Query, target: str, target_response: bytes | None, ttl: int) -> bytes:
    """Safe search: CNAME from the question name to `target`, then the answer records (CNAMEs and the
    query type) of `target_response`, an upstream answer for target/qtype, made self-contained.

    The target's rcode is mirrored when it is NOERROR or NXDOMAIN; an unparsable answer, one for
    another question, or any other rcode gives SERVFAIL (the rewrite must never fall back to the
    unfiltered name). With `target_response` None, the CNAME alone.
    """
    target_wire = name_to_wire(target)
    ttl_b = _U32.pack(_ttl(ttl))
    records = [_QNAME_PTR, _CNAME_HEAD, ttl_b, _U16.pack(len(target_wire)), target_wire]
    count = 1
    rcode = NOERROR
    if target_response is not None:
        try:
            info = scan_response(target_response)
        except WireError:
            return error(query, SERVFAIL)
        if not question_matches(info, target_wire, query.qtype, 1) or info.rcode not in (NOERROR, NXDOMAIN):
            return error(query, SERVFAIL)
        rcode = info.rcode
        # Names already written, for compression: the target sits right after the CNAME's fixed part.
        offset = query.question_end + 2 + 10
        written = {target_wire: offset}
        offset += len(target_wire)
        qtype = query.qtype
        for rr in info.records:
            if rr.section != 0 or rr.cls != 1 or (rr.type != qtype and rr.type != TYPE_CNAME):
                continue
            try:
                rdata = _self_contained_rdata(target_response, rr.type, rr.rdata_offset, rr.rdlength)
                owner_wire = name_to_wire(rr.name)
            except (WireError, ValueError):
                continue  # one odd record is left out rather than failing the whole answer
            pointer = written.get(owner_wire)
            if pointer is not None and pointer < 0x4000:
                owner = _U16.pack(0xC000 | pointer)
            else:
                owner = owner_wire
                written[owner_wire] = offset
            piece = owner + _RR_FIXED.pack(rr.type, 1, rr.ttl, len(rdata)) + rdata
            records.append(piece)
            offset += len(piece)
            count += 1
    return _build(query, rcode, count, 0, b"".join(records))


def _self_contained_rdata(packet: bytes, rtype: int, start: int, length: int) -> bytes:
    end = start + length
    layout = _NAME_LAYOUTS.get(rtype)
    if layout is None:
        return packet[start:end]
    out = []
    pos = start
    for field in layout:
        if field == "N":
            name, pos = read_name(packet, pos)
            out.append(name)
        else:
            out.append(packet[pos : pos + field])
            pos += field
    if pos != end:
        raise WireError(f"type {rtype} rdata at offset {start} does not match its layout")
    return b"".join(out)


def soa_zone_for(name: str) -> str:
    """The zone to own a block answer's SOA: the last two labels, three under a registry's second
    level (edu.vn, co.uk, ...); the name itself when it is that short or carries escapes."""
    if name.endswith("."):
        name = name[:-1]
    name = name.lower()
    if "\\" in name:
        return name
    last = name.rfind(".")
    if last < 0:
        return name
    second = name.rfind(".", 0, last)
    if second < 0:
        return name
    zone = name[second + 1 :]
    if zone in _SECOND_LEVEL:
        third = name.rfind(".", 0, second)
        return name[third + 1 :]
    return zone
