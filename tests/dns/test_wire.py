"""gateway.dns.wire: the client-packet gate, the upstream-answer scanner and the byte helpers."""

import contextlib
import struct
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dnslib
import pytest
from dnslib import AAAA, CNAME, EDNS0, QTYPE, RCODE, SOA, A, DNSRecord
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.dns import DNS, DNSQR, DNSRR, DNSRROPT, EDNS0TLV

from gateway.dns import wire
from gateway.dns.wire import (
    BADVERS,
    FORMERR,
    NOTIMP,
    REFUSED,
    Query,
    ResponseInfo,
    WireError,
    name_to_wire,
    parse_query,
    patch_ttls,
    question_matches,
    read_name,
    scan_response,
    truncate_for_udp,
    with_id,
)

HEADER = struct.Struct("!6H")


def header(id=0x1234, flags=0x0100, qd=1, an=0, ns=0, ar=0) -> bytes:
    return HEADER.pack(id, flags, qd, an, ns, ar)


def qname(*labels: bytes) -> bytes:
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\x00"


def question(name: bytes = qname(b"www", b"example", b"com"), qtype=1, qclass=1) -> bytes:
    return name + struct.pack("!HH", qtype, qclass)


def opt(size=1232, ext=0, version=0, flags=0, rdata=b"", rdlen=None) -> bytes:
    return b"\x00" + struct.pack("!HHBBHH", 41, size, ext, version, flags,
                                 len(rdata) if rdlen is None else rdlen) + rdata


def scapy_query(name="www.example.com", qtype="A", edns=None, qclass="IN", **kw) -> bytes:
    qd = DNSQR(qname=name, qtype=qtype, qclass=qclass)
    packet = DNS(id=kw.pop("id", 0x4242), rd=kw.pop("rd", 1), qd=qd, **kw)
    if edns is not None:
        packet.ar = edns
    return bytes(packet)


# ---------------------------------------------------------------------------------------------------
# parse_query: good queries


def test_plain_query_without_edns():
    raw = scapy_query("www.example.com", "A", id=0xBEEF)
    q = parse_query(raw)
    assert isinstance(q, Query)
    assert q.raw == raw
    assert q.id == 0xBEEF
    assert q.flags == 0x0100
    assert q.qname == "www.example.com"
    assert q.qname_wire == b"\x03www\x07example\x03com\x00"
    assert (q.qtype, q.qclass) == (1, 1)
    assert q.question_end == len(raw)
    assert (q.edns, q.udp_size, q.do, q.rd, q.cd) == (False, 512, False, True, False)


def test_edns_query_with_do_bit():
    raw = scapy_query("example.org", "AAAA", edns=DNSRROPT(rclass=4096, z=0x8000))
    q = parse_query(raw)
    assert isinstance(q, Query)
    assert (q.edns, q.udp_size, q.do) == (True, 4096, True)
    assert q.qtype == 28
    assert q.question_end == 12 + len(b"\x07example\x03org\x00") + 4
    assert raw[q.question_end] == 0  # the OPT owner follows the question


def test_edns_query_without_do_bit_and_small_size():
    q = parse_query(scapy_query(edns=DNSRROPT(rclass=200, z=0)))
    assert isinstance(q, Query)
    assert (q.edns, q.udp_size, q.do) == (True, 512, False)


def test_edns_options_are_accepted():
    cookie = EDNS0TLV(optcode=10, optdata=b"\x01" * 8)
    padding = EDNS0TLV(optcode=12, optdata=b"\x00" * 20)
    q = parse_query(scapy_query(edns=DNSRROPT(rclass=1232, z=0, rdata=[cookie, padding])))
    assert isinstance(q, Query) and q.edns


def test_dnslib_query_with_edns():
    record = DNSRecord.question("Mail.Example.COM", "MX")
    record.add_ar(EDNS0(udp_len=1400, flags="do"))
    q = parse_query(bytes(record.pack()))
    assert isinstance(q, Query)
    assert (q.qname, q.qtype, q.udp_size, q.do) == ("mail.example.com", 15, 1400, True)


def test_uppercase_is_lowered_but_raw_kept():
    raw = scapy_query("WwW.ExAmPlE.CoM")
    q = parse_query(raw)
    assert q.qname == "www.example.com"
    assert q.qname_wire == b"\x03www\x07example\x03com\x00"
    assert b"ExAmPlE" in q.raw


def test_root_name():
    raw = header() + question(b"\x00", qtype=2)
    q = parse_query(raw)
    assert isinstance(q, Query)
    assert (q.qname, q.qname_wire, q.qtype, q.question_end) == ("", b"\x00", 2, 17)


@pytest.mark.parametrize("qtype", ["A", "AAAA", "MX", "TXT", "PTR", "SRV", "HTTPS", "SVCB", "SOA", "NS",
                                   "ANY", "CAA", "DS", "DNSKEY"])
def test_various_qtypes(qtype):
    number = dns.rdatatype.from_text(qtype)
    q = parse_query(scapy_query("example.com", number))
    assert isinstance(q, Query)
    assert q.qtype == number


def test_flags_rd_cd():
    q = parse_query(header(flags=0x0010) + question())
    assert (q.rd, q.cd) == (False, True)
    q = parse_query(header(flags=0x0110) + question())
    assert (q.rd, q.cd) == (True, True)


def test_underscore_and_hyphen_names_stay_plain():
    q = parse_query(scapy_query("_dns.resolver.arpa", "SVCB"))
    assert q.qname == "_dns.resolver.arpa"
    q = parse_query(scapy_query("xn--bcher-kva.example"))
    assert q.qname == "xn--bcher-kva.example"


@pytest.mark.parametrize(("labels", "text"), [
    ((b"evil.example", b"com"), "evil\\.example.com"),
    ((b"a\\b", b"com"), "a\\\\b.com"),
    ((b"*", b"example", b"com"), "\\042.example.com"),
    ((b"a\x00b", b"com"), "a\\000b.com"),
    ((b"caf\xc3\xa9", b"fr"), "caf\\195\\169.fr"),
    ((b"A B",), "a\\032b"),
    ((b"x/y", b"Org"), "x\\047y.org"),
])
def test_odd_bytes_are_escaped_and_round_trip(labels, text):
    q = parse_query(header() + question(qname(*labels)))
    assert isinstance(q, Query)
    assert q.qname == text
    assert name_to_wire(q.qname) == q.qname_wire


def test_accepts_bytearray_and_memoryview():
    raw = scapy_query()
    for data in (bytearray(raw), memoryview(raw)):
        q = parse_query(data)
        assert isinstance(q, Query) and type(q.raw) is bytes and q.raw == raw


def test_longest_name_is_accepted_and_one_more_octet_is_not():
    # 3 labels of 63 + 1 label of 61 = 4*1 + 250 + 1 (root) = 255 octets.
    longest = qname(b"a" * 63, b"b" * 63, b"c" * 63, b"d" * 61)
    assert len(longest) == 255
    q = parse_query(header() + question(longest))
    assert isinstance(q, Query) and len(q.qname_wire) == 255
    too_long = qname(b"a" * 63, b"b" * 63, b"c" * 63, b"d" * 62)
    assert parse_query(header() + question(too_long)) == FORMERR
    # Also when the packet is long enough to hold more (the cut-off copy must not hide it).
    assert parse_query(header() + question(too_long) + b"\x00" * 300) == FORMERR


def test_tcp_flag_is_accepted():
    assert isinstance(parse_query(scapy_query(), tcp=True), Query)


# ---------------------------------------------------------------------------------------------------
# parse_query: rejected packets


@pytest.mark.parametrize("size", range(12))
def test_shorter_than_header_is_dropped(size):
    assert parse_query(scapy_query()[:size]) is None


def test_response_sent_as_query_is_dropped():
    assert parse_query(scapy_query(qr=1)) is None
    assert parse_query(header(flags=0x8100) + question()) is None


@pytest.mark.parametrize("opcode", [1, 2, 4, 5, 3, 15])
def test_other_opcodes_are_notimp(opcode):
    assert parse_query(scapy_query(opcode=opcode)) == NOTIMP


def test_qdcount_zero_and_two():
    assert parse_query(header(qd=0)) == FORMERR
    assert parse_query(header(qd=0) + question()) == FORMERR
    two = bytes(DNS(id=1, qd=[DNSQR(qname="a.com"), DNSQR(qname="b.com")]))
    assert parse_query(two) == FORMERR


def test_answer_or_authority_records_in_query():
    answer = DNSRR(rrname="a.com", type="A", rdata="1.2.3.4")
    assert parse_query(bytes(DNS(id=1, qd=DNSQR(qname="a.com"), an=answer))) == FORMERR
    assert parse_query(bytes(DNS(id=1, qd=DNSQR(qname="a.com"), ns=answer))) == FORMERR
    assert parse_query(header(an=1) + question()) == FORMERR
    assert parse_query(header(ns=1) + question()) == FORMERR


def test_two_opt_records():
    raw = header(ar=2) + question() + opt() + opt()
    assert parse_query(raw) == FORMERR


def test_pointer_in_question():
    raw = header() + b"\x03www\xc0\x0c" + struct.pack("!HH", 1, 1)
    assert parse_query(raw) == FORMERR
    # A pointer that would loop forever on a naive decoder.
    assert parse_query(header() + b"\xc0\x0c" + struct.pack("!HH", 1, 1)) == FORMERR


def test_compression_loop_in_question():
    # Two pointers pointing at each other.
    raw = header() + b"\xc0\x0e\xc0\x0c" + struct.pack("!HH", 1, 1)
    assert parse_query(raw) == FORMERR


@pytest.mark.parametrize("kind", [0x40, 0x80, 0x7F, 0xBF])
def test_reserved_label_types(kind):
    assert parse_query(header() + bytes([kind]) + b"x" * 70 + b"\x00" + struct.pack("!HH", 1, 1)) == FORMERR


def test_label_of_64():
    raw = header() + b"\x40" + b"a" * 64 + b"\x03com\x00" + struct.pack("!HH", 1, 1)
    assert parse_query(raw) == FORMERR


def test_name_of_256_octets():
    name = qname(*([b"a" * 50] * 5)) [:-1] + b"\x00"  # 5*51 + 1 = 256
    assert len(name) == 256
    assert parse_query(header() + question(name)) == FORMERR


@pytest.mark.parametrize("cut", range(12, 33))
def test_truncated_question(cut):
    raw = header() + question()  # 12 + 17 + 4 = 33 bytes
    assert parse_query(raw[:cut]) == FORMERR


def test_truncated_opt():
    raw = header(ar=1) + question() + opt()
    for cut in range(len(raw) - 11, len(raw)):
        assert parse_query(raw[:cut]) == FORMERR


def test_trailing_garbage():
    assert parse_query(header() + question() + b"\x00") == FORMERR
    assert parse_query(header(ar=1) + question() + opt() + b"junk") == FORMERR
    assert parse_query(scapy_query() + b"\x00\x00") == FORMERR


def test_additional_record_that_is_not_opt():
    a = DNSRR(rrname="x.com", type="A", rdata="1.2.3.4")
    assert parse_query(bytes(DNS(id=1, qd=DNSQR(qname="a.com"), ar=a))) == FORMERR
    root_a = b"\x00" + struct.pack("!HHIH", 1, 1, 0, 4) + b"\x01\x02\x03\x04"
    assert parse_query(header(ar=1) + question() + root_a) == FORMERR


def test_opt_with_non_root_owner():
    raw = header(ar=1) + question() + b"\x01a\x00" + opt()[1:]
    assert parse_query(raw) == FORMERR
    raw = header(ar=1) + question() + b"\xc0\x0c" + opt()[1:]
    assert parse_query(raw) == FORMERR


def test_opt_with_bad_option_length():
    # Option claims 8 bytes, only 4 follow within rdata.
    bad = struct.pack("!HH", 10, 8) + b"\x01\x02\x03\x04"
    assert parse_query(header(ar=1) + question() + opt(rdata=bad)) == FORMERR
    # Option header itself cut short.
    assert parse_query(header(ar=1) + question() + opt(rdata=b"\x00\x0a\x00")) == FORMERR
    # rdlength larger than what is left of the packet.
    assert parse_query(header(ar=1) + question() + opt(rdata=b"", rdlen=4)) == FORMERR
    # rdlength smaller than its option: the rest becomes trailing garbage.
    good = struct.pack("!HH", 10, 8) + b"\x01" * 8
    assert parse_query(header(ar=1) + question() + opt(rdata=good, rdlen=4)) == FORMERR
    # The same option, well formed, is fine.
    assert isinstance(parse_query(header(ar=1) + question() + opt(rdata=good)), Query)


def test_opt_with_bad_option_length_from_scapy():
    tlv = EDNS0TLV(optcode=10, optlen=12, optdata=b"12345678")
    assert parse_query(scapy_query(edns=DNSRROPT(rclass=1232, rdata=[tlv]))) == FORMERR


def test_edns_version_1_is_badvers():
    assert parse_query(scapy_query(edns=DNSRROPT(rclass=1232, version=1))) == BADVERS
    assert parse_query(header(ar=1) + question() + opt(version=255)) == BADVERS


@pytest.mark.parametrize(("qclass", "rcode"), [(3, REFUSED), (255, NOTIMP), (254, NOTIMP), (2, REFUSED),
                                               (4, REFUSED), (0, REFUSED), (4096, REFUSED)])
def test_classes(qclass, rcode):
    assert parse_query(header() + question(qclass=qclass)) == rcode


def test_chaos_version_bind_is_refused():
    assert parse_query(scapy_query("version.bind", "TXT", qclass="CH")) == REFUSED


@pytest.mark.parametrize("tcp", [False, True])
@pytest.mark.parametrize("qtype", ["AXFR", "IXFR"])
def test_zone_transfers_are_refused(qtype, tcp):
    assert parse_query(scapy_query("example.com", qtype), tcp=tcp) == REFUSED


@pytest.mark.parametrize(("qtype", "rcode"), [(0, FORMERR), (41, FORMERR), (250, FORMERR), (249, REFUSED),
                                              (253, NOTIMP), (254, NOTIMP)])
def test_meta_qtypes(qtype, rcode):
    assert parse_query(header() + question(qtype=qtype)) == rcode


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=600))
def test_parse_query_never_raises_on_arbitrary_bytes(data):
    result = parse_query(data)
    assert result is None or isinstance(result, Query | int)


@settings(max_examples=500, deadline=None)
@given(st.integers(0, 0xFFFF), st.sampled_from([0, 0x0100, 0x0110, 0x8000, 0x0900]),
       st.integers(0, 2), st.integers(0, 1), st.integers(0, 2), st.binary(max_size=300))
def test_parse_query_never_raises_past_the_header(id_, flags, qd, an, ar, tail):
    data = header(id_, flags, qd, an, 0, ar) + tail
    result = parse_query(data)
    assert result is None or isinstance(result, Query | int)
    if isinstance(result, Query):
        assert name_to_wire(result.qname) == result.qname_wire
        assert result.question_end <= len(data)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=20), min_size=0, max_size=6))
def test_any_label_bytes_round_trip_through_the_text_form(labels):
    q = parse_query(header() + question(qname(*labels)))
    assert isinstance(q, Query)
    # The text form reads back into exactly the wire labels: no label can split or merge.
    assert name_to_wire(q.qname) == q.qname_wire == qname(*labels).lower()


# ---------------------------------------------------------------------------------------------------
# scan_response


def reply(name="www.example.com", qtype="A", rcode=0) -> DNSRecord:
    record = DNSRecord.question(name, qtype).reply()
    record.header.rcode = rcode
    return record


def soa(name="example.com", ttl=3600, minimum=300) -> dnslib.RR:
    return dnslib.RR(name, QTYPE.SOA, ttl=ttl, rdata=SOA("ns1.example.com", "admin.example.com",
                                                           (2024010101, 7200, 900, 1209600, minimum)))


def ttl_at(packet: bytes, offset: int) -> int:
    return struct.unpack_from("!I", packet, offset)[0]


def test_scan_a_answer():
    r = reply()
    r.add_answer(dnslib.RR("www.example.com", QTYPE.A, ttl=300, rdata=A("93.184.216.34")))
    r.add_answer(dnslib.RR("www.example.com", QTYPE.A, ttl=60, rdata=A("93.184.216.35")))
    packet = bytes(r.pack())
    info = scan_response(packet)
    assert isinstance(info, ResponseInfo)
    assert info.id == r.header.id
    assert (info.rcode, info.tc, info.qtype, info.qclass) == (0, False, 1, 1)
    assert info.qname_wire == b"\x03www\x07example\x03com\x00"
    assert info.question_end == 12 + 17 + 4
    assert info.addresses == (("www.example.com", bytes([93, 184, 216, 34])),
                              ("www.example.com", bytes([93, 184, 216, 35])))
    assert info.cname_targets == ()
    assert info.ttl == 60
    assert [ttl_at(packet, off) for off in info.ttl_offsets] == [300, 60]
    assert [rr.section for rr in info.records] == [0, 0]
    rr = info.records[0]
    assert (rr.name, rr.type, rr.cls, rr.ttl, rr.rdlength) == ("www.example.com", 1, 1, 300, 4)
    assert packet[rr.rdata_offset:rr.rdata_offset + 4] == bytes([93, 184, 216, 34])
    assert rr.ttl_offset == rr.rdata_offset - 6


def test_scan_aaaa_answer():
    r = reply(qtype="AAAA")
    r.add_answer(dnslib.RR("www.example.com", QTYPE.AAAA, ttl=120, rdata=AAAA("2001:db8::1")))
    info = scan_response(bytes(r.pack()))
    assert info.addresses == (("www.example.com", bytes.fromhex("20010db8000000000000000000000001")),)
    assert info.ttl == 120


def test_scan_cname_chain():
    r = reply("www.shop.example")
    r.add_answer(dnslib.RR("www.shop.example", QTYPE.CNAME, ttl=600, rdata=CNAME("shop.cdn.example.net")))
    r.add_answer(dnslib.RR("shop.cdn.example.net", QTYPE.CNAME, ttl=30, rdata=CNAME("edge7.cdn.example.net")))
    r.add_answer(dnslib.RR("edge7.cdn.example.net", QTYPE.A, ttl=20, rdata=A("192.0.2.7")))
    packet = bytes(r.pack())
    assert b"\xc0" in packet[40:]  # dnslib compressed the names
    info = scan_response(packet)
    assert info.cname_targets == ("shop.cdn.example.net", "edge7.cdn.example.net")
    assert info.addresses == (("edge7.cdn.example.net", bytes([192, 0, 2, 7])),)
    assert [rr.name for rr in info.records] == ["www.shop.example", "shop.cdn.example.net",
                                                "edge7.cdn.example.net"]
    assert info.ttl == 20
    assert [ttl_at(packet, off) for off in info.ttl_offsets] == [600, 30, 20]


def test_scan_nxdomain_with_soa():
    r = reply("nope.example.com", rcode=RCODE.NXDOMAIN)
    r.add_auth(soa(ttl=3600, minimum=300))
    packet = bytes(r.pack())
    info = scan_response(packet)
    assert info.rcode == 3
    assert info.ttl == 300
    assert info.records[0].section == 1 and info.records[0].type == 6
    assert [ttl_at(packet, off) for off in info.ttl_offsets] == [3600]
    r = reply("nope.example.com", rcode=RCODE.NXDOMAIN)
    r.add_auth(soa(ttl=120, minimum=900))
    assert scan_response(bytes(r.pack())).ttl == 120


def test_scan_nodata_with_soa():
    r = reply("example.com", qtype="AAAA")
    r.add_auth(soa(ttl=1800, minimum=600))
    info = scan_response(bytes(r.pack()))
    assert (info.rcode, info.ttl, info.addresses) == (0, 600, ())


def test_scan_negative_without_soa_has_no_ttl():
    assert scan_response(bytes(reply(rcode=RCODE.NXDOMAIN).pack())).ttl is None
    assert scan_response(bytes(reply().pack())).ttl is None


def test_scan_nxdomain_after_cname_uses_the_shorter_lifetime():
    r = reply("www.example.com", rcode=RCODE.NXDOMAIN)
    r.add_answer(dnslib.RR("www.example.com", QTYPE.CNAME, ttl=50, rdata=CNAME("gone.example.net")))
    r.add_auth(soa("example.net", ttl=3600, minimum=300))
    info = scan_response(bytes(r.pack()))
    assert info.cname_targets == ("gone.example.net",)
    assert info.ttl == 50


def test_scan_servfail_has_no_ttl():
    info = scan_response(bytes(reply(rcode=RCODE.SERVFAIL).pack()))
    assert (info.rcode, info.ttl, info.records) == (2, None, [])


def test_scan_opt_is_not_a_record_and_carries_extended_rcode():
    r = reply()
    r.add_answer(dnslib.RR("www.example.com", QTYPE.A, ttl=300, rdata=A("192.0.2.1")))
    r.add_ar(EDNS0(udp_len=1232, flags="do"))
    info = scan_response(bytes(r.pack()))
    assert [rr.type for rr in info.records] == [1]
    assert len(info.ttl_offsets) == 1
    # BADVERS: header rcode 0, OPT extended rcode 1 -> 16.
    packet = header(flags=0x8180, ar=1) + question() + opt(ext=1)
    assert scan_response(packet).rcode == BADVERS


def test_scan_uppercase_question_and_owner():
    r = DNSRecord.question("WWW.Example.COM", "A").reply()
    r.add_answer(dnslib.RR("WWW.Example.COM", QTYPE.A, ttl=5, rdata=A("192.0.2.1")))
    info = scan_response(bytes(r.pack()))
    assert info.qname_wire == b"\x03www\x07example\x03com\x00"
    assert info.records[0].name == "www.example.com"
    assert question_matches(info, b"\x03WWW\x07example\x03com\x00", 1, 1)
    assert not question_matches(info, b"\x03www\x07example\x03com\x00", 28, 1)
    assert not question_matches(info, b"\x03www\x07example\x03org\x00", 1, 1)
    assert not question_matches(info, b"\x03www\x07example\x03com\x00", 1, 3)


def test_scan_pointer_whose_low_byte_is_an_ascii_capital():
    # The owner name sits at offset 0x41 ('A'): lower-casing the packet must not move the pointer.
    filler = b"\x00" * (0x41 - (12 + 21 + 12) - 12)  # so the CNAME's rdata starts at 0x41
    null_rr = b"\xc0\x0c" + struct.pack("!HHIH", 10, 1, 0, len(filler)) + filler
    cname_rr = b"\xc0\x0c" + struct.pack("!HHIH", 5, 1, 10, 7) + b"\x01x\x01y\x01z\x00"
    a_rr = b"\xc0\x41" + struct.pack("!HHIH", 1, 1, 10, 4) + b"\x01\x02\x03\x04"
    packet = header(flags=0x8180, an=3) + question() + null_rr + cname_rr + a_rr
    assert packet[0x41:0x48] == b"\x01x\x01y\x01z\x00"
    info = scan_response(packet)
    assert info.addresses == (("x.y.z", b"\x01\x02\x03\x04"),)
    assert dns.message.from_wire(packet).answer[2].name.to_text() == "x.y.z."


def test_scan_ttl_with_top_bit_counts_as_zero():
    rr = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 0x80000010, 4) + b"\x01\x02\x03\x04"
    info = scan_response(header(flags=0x8180, an=1) + question() + rr)
    assert info.ttl == 0 and info.records[0].ttl == 0


def test_scan_response_without_question():
    info = scan_response(header(flags=0x8181, qd=0))
    assert (info.qname_wire, info.qtype, info.rcode, info.question_end) == (b"", 0, 1, 12)


def a_rr(owner=b"\xc0\x0c", ttl=60, rdata=b"\x01\x02\x03\x04", rtype=1) -> bytes:
    return owner + struct.pack("!HHIH", rtype, 1, ttl, len(rdata)) + rdata


@pytest.mark.parametrize("packet", [
    b"",
    b"\x00" * 11,
    header(flags=0x0100) + question(),                               # QR clear
    header(flags=0x8180, qd=2) + question() + question(),            # two questions
    header(flags=0x8180, an=1) + question(),                         # promised record missing
    header(flags=0x8180, an=1) + question() + a_rr()[:-1],            # rdata cut short
    header(flags=0x8180, an=1) + question() + a_rr()[:8],             # fixed part cut short
    header(flags=0x8180) + question() + b"x",                        # trailing garbage
    header(flags=0x8180, an=1) + question() + a_rr() + b"\x00",      # trailing garbage after a record
    header(flags=0x8180, an=1) + question() + a_rr(rdata=b"\x01\x02\x03\x04\x05"),  # A of 5 bytes
    header(flags=0x8180, an=1) + question() + a_rr(rtype=28),        # AAAA of 4 bytes
    header(flags=0x8180, an=1) + question() + a_rr(owner=b"\xc0\x30"),  # forward pointer
    header(flags=0x8180, an=1) + question() + a_rr(owner=b"\xc0\x02"),  # pointer into the header
    header(flags=0x8180, an=1) + question() + a_rr(owner=b"\xc0\x21"),  # pointer to itself
    header(flags=0x8180, an=1) + question() + a_rr(owner=b"\x41" + b"a" * 65 + b"\x00"),  # reserved label
    header(flags=0x8180) + b"\x03www\xc0\x0c" + b"\x00\x01\x00\x01",  # pointer in the question
    header(flags=0x8180) + b"\x03www\x07exam",                       # question cut short
    header(flags=0x8180) + qname(b"a") + b"\x00\x01",                # question type/class cut short
    header(flags=0x8180, an=1) + question() + opt(),                 # OPT in the answer section
    header(flags=0x8180, ar=2) + question() + opt() + opt(),         # two OPTs
    header(flags=0x8180, ar=1) + question() + b"\x01a\x00" + opt()[1:],  # OPT not owned by the root
    header(flags=0x8180, an=1) + question() + a_rr(rtype=5, rdata=b"\x01a\x00\x00"),  # CNAME rdata too long
    header(flags=0x8180, an=1) + question() + a_rr(rtype=5, rdata=b"\x05ab"),  # CNAME rdata cut short
    header(flags=0x8180, ns=1) + question() + a_rr(rtype=6, rdata=b"\x00\x00" + b"\x00" * 19),  # SOA short
])
def test_scan_rejects_malformed(packet):
    with pytest.raises(WireError):
        scan_response(packet)


def test_scan_rejects_compression_loop():
    # The CNAME target is "x" followed by a pointer back to its own start: x.x.x.x... forever.
    start = 12 + 17 + 4 + 12
    rdata = b"\x01x" + struct.pack("!H", 0xC000 | start)
    packet = header(flags=0x8180, an=1) + question() + a_rr(rtype=5, rdata=rdata)
    with pytest.raises(WireError):
        scan_response(packet)
    # Two names pointing at each other.
    rdata = b"\x01x" + struct.pack("!H", 0xC000 | (start + 4)) + b"\x01y" + struct.pack("!H", 0xC000 | start)
    packet = header(flags=0x8180, an=1) + question() + a_rr(rtype=10, rdata=rdata)
    cname = a_rr(rtype=5, rdata=struct.pack("!H", 0xC000 | start))
    with pytest.raises(WireError):
        scan_response(packet[:6] + b"\x00\x02" + packet[8:] + cname)


def _pointer_chain(jumps: int) -> bytes:
    """A response whose CNAME target needs `jumps` pointer jumps, each to an earlier pointer."""
    base = 12 + 17 + 4 + 12  # where the NULL record's rdata starts
    chain = bytearray(b"\x01z\x00")  # the name everything finally resolves to: "z"
    for i in range(jumps - 1):
        target = base if i == 0 else base + 3 + 2 * (i - 1)
        chain += struct.pack("!H", 0xC000 | target)
    null = a_rr(rtype=10, rdata=bytes(chain))
    last = base if jumps == 1 else base + 3 + 2 * (jumps - 2)
    cname = a_rr(rtype=5, rdata=struct.pack("!H", 0xC000 | last))
    return header(flags=0x8180, an=2) + question() + null + cname


def test_scan_pointer_chain_limit():
    assert scan_response(_pointer_chain(128)).cname_targets == ("z",)
    with pytest.raises(WireError):
        scan_response(_pointer_chain(129))


def test_scan_rejects_name_over_255_octets_built_with_pointers():
    base = 12 + 17 + 4 + 12
    long_name = qname(b"a" * 63, b"b" * 63, b"c" * 63)  # 193 octets
    null = a_rr(rtype=10, rdata=long_name)
    ok = a_rr(rtype=5, rdata=b"\x3d" + b"d" * 61 + struct.pack("!H", 0xC000 | base))  # 62 + 193 = 255
    assert len(scan_response(header(flags=0x8180, an=2) + question() + null + ok).cname_targets[0]) == 253
    too_long = a_rr(rtype=5, rdata=b"\x3e" + b"d" * 62 + struct.pack("!H", 0xC000 | base))
    with pytest.raises(WireError):
        scan_response(header(flags=0x8180, an=2) + question() + null + too_long)


def test_scan_tolerates_cut_records_when_truncated():
    r = reply()
    for i in range(5):
        r.add_answer(dnslib.RR("www.example.com", QTYPE.A, ttl=60, rdata=A(f"192.0.2.{i}")))
    packet = bytes(r.pack())
    cut = packet[:-6]
    with pytest.raises(WireError):
        scan_response(cut)
    flags = struct.unpack_from("!H", cut, 2)[0] | 0x0200
    info = scan_response(cut[:2] + struct.pack("!H", flags) + cut[4:])
    assert info.tc and len(info.addresses) == 4


def test_scan_escapes_odd_owner_bytes():
    owner = qname(b"a.b", b"example")
    packet = header(flags=0x8180, an=1) + question() + a_rr(owner=owner)
    assert scan_response(packet).records[0].name == "a\\.b.example"


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=600))
def test_scan_response_raises_only_wire_error(data):
    with contextlib.suppress(WireError):
        scan_response(data)


def _sample_response() -> bytes:
    r = reply("www.shop.example")
    r.add_answer(dnslib.RR("www.shop.example", QTYPE.CNAME, ttl=600, rdata=CNAME("shop.cdn.example.net")))
    r.add_answer(dnslib.RR("shop.cdn.example.net", QTYPE.A, ttl=20, rdata=A("192.0.2.7")))
    r.add_auth(soa("example.net"))
    r.add_ar(EDNS0(udp_len=1232))
    return bytes(r.pack())


@settings(max_examples=800, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), min_size=1, max_size=6),
       st.integers(0, 200))
def test_scan_response_on_mutated_answers_raises_only_wire_error(flips, cut):
    packet = bytearray(_sample_response())
    for pos, value in flips:
        if pos < len(packet):
            packet[pos] = value
    data = bytes(packet[: len(packet) - cut]) if cut < len(packet) else bytes(packet)
    try:
        info = scan_response(data)
    except WireError:
        return
    for off in info.ttl_offsets:
        assert 12 <= off <= len(data) - 4


# ---------------------------------------------------------------------------------------------------
# Byte helpers


def test_with_id():
    packet = _sample_response()
    changed = with_id(packet, 0xABCD)
    assert dns.message.from_wire(changed).id == 0xABCD
    assert changed[2:] == packet[2:]
    assert type(changed) is bytes


def test_patch_ttls():
    packet = _sample_response()
    info = scan_response(packet)
    patched = patch_ttls(packet, info.ttl_offsets, 100, 0x0102)
    msg = dns.message.from_wire(patched)
    assert msg.id == 0x0102
    assert [rrset.ttl for rrset in msg.answer] == [500, 0]  # 600 - 100, and 20 - 100 floored at 0
    assert msg.authority[0].ttl == 3500
    assert msg.edns == 0 and msg.payload == 1232  # the OPT pseudo-TTL is not a TTL
    assert len(patched) == len(packet)
    assert patch_ttls(packet, info.ttl_offsets, 0, info.id) == packet


def test_patch_ttls_top_bit_ttl_goes_to_zero():
    packet = header(flags=0x8180, an=1) + question() + a_rr(ttl=0x80000010)
    patched = patch_ttls(packet, scan_response(packet).ttl_offsets, 0, 1)
    assert dns.message.from_wire(patched).answer[0].ttl == 0


def test_name_to_wire():
    assert name_to_wire("www.Example.com") == b"\x03www\x07example\x03com\x00"
    assert name_to_wire("www.example.com.") == b"\x03www\x07example\x03com\x00"
    assert name_to_wire("") == b"\x00"
    assert name_to_wire(".") == b"\x00"
    assert name_to_wire("a\\.b.com") == b"\x03a.b\x03com\x00"
    assert name_to_wire("a\\\\b.com.") == b"\x03a\\b\x03com\x00"
    assert name_to_wire("\\042.x") == b"\x01*\x01x\x00"
    assert name_to_wire("a\\000b") == b"\x03a\x00b\x00"
    assert name_to_wire("trail\\.") == b"\x06trail.\x00"
    assert name_to_wire("x" * 63 + ".com") == b"\x3f" + b"x" * 63 + b"\x03com\x00"


@pytest.mark.parametrize("bad", ["a..b", ".a", "x" * 64 + ".com", ".".join(["a" * 63] * 4), "bücher.de",
                                 "a\\", "a\\256.com", "a..b\\.c"])
def test_name_to_wire_rejects(bad):
    with pytest.raises(ValueError):
        name_to_wire(bad)


def test_read_name_decompresses():
    r = reply()
    r.add_answer(dnslib.RR("www.example.com", QTYPE.CNAME, ttl=5, rdata=CNAME("mail.Example.com")))
    packet = bytes(r.pack())
    info = scan_response(packet)
    name, end = read_name(packet, info.records[0].rdata_offset)
    assert name == b"\x04mail\x07example\x03com\x00"
    assert end == len(packet)


def test_truncate_for_udp_keeps_question_and_opt():
    r = reply()
    for i in range(100):
        r.add_answer(dnslib.RR("www.example.com", QTYPE.A, ttl=60, rdata=A(f"10.0.{i // 250}.{i % 250}")))
    r.add_ar(EDNS0(udp_len=1232, flags="do"))
    packet = bytes(r.pack())
    assert len(packet) > 1232
    small = truncate_for_udp(packet, 512)
    assert len(small) <= 512
    msg = dns.message.from_wire(small)
    assert msg.flags & dns.flags.TC
    assert msg.id == r.header.id
    assert msg.answer == [] and msg.authority == []
    assert msg.question[0].name.to_text() == "www.example.com."
    assert msg.edns == 0 and msg.payload == 1232 and msg.ednsflags & dns.flags.DO
    assert HEADER.unpack_from(small)[2:] == (1, 0, 0, 1)


def test_truncate_for_udp_without_opt_and_when_it_fits():
    r = reply()
    for i in range(60):
        r.add_answer(dnslib.RR("www.example.com", QTYPE.A, ttl=60, rdata=A(f"10.0.0.{i}")))
    packet = bytes(r.pack())
    assert truncate_for_udp(packet, 4096) is packet
    small = truncate_for_udp(packet, 512)
    msg = dns.message.from_wire(small)
    assert msg.flags & dns.flags.TC and msg.edns == -1
    assert HEADER.unpack_from(small)[2:] == (1, 0, 0, 0)
    assert msg.rcode() == dns.rcode.NOERROR


def test_truncate_for_udp_on_unreadable_question_gives_a_header():
    junk = header(flags=0x8180) + b"\x3f" + b"x" * 600
    small = truncate_for_udp(junk, 512)
    assert len(small) == 12
    assert HEADER.unpack_from(small)[1] & 0x0200
    assert HEADER.unpack_from(small)[2:] == (0, 0, 0, 0)


def test_wire_module_does_not_use_dnslib():
    # Principle 4: the fast path never builds dnslib objects.
    source = Path(wire.__file__).read_text(encoding="utf-8")
    assert "import dnslib" not in source and "from dnslib" not in source


def test_truncate_for_udp_sheds_opt_options_that_do_not_fit():
    padding = struct.pack("!HH", 12, 600) + bytes(600)
    packet = header(flags=0x8180, an=1, ar=1) + question() + a_rr() + opt(size=4096, flags=0x8000, rdata=padding)
    small = truncate_for_udp(packet, 512)
    assert len(small) <= 512
    msg = dns.message.from_wire(small)
    assert msg.flags & dns.flags.TC and msg.edns == 0 and msg.payload == 4096 and msg.options == ()
    assert msg.ednsflags & dns.flags.DO


def test_truncate_for_udp_leaves_runts_alone():
    assert truncate_for_udp(b"\x00" * 5, 2) == b"\x00" * 5
