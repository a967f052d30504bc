"""gateway.dns.answers: every built answer is read back with dnspython, an independent decoder."""

import struct

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dnslib
import pytest
from dnslib import CNAME, EDNS0, MX, QTYPE, RCODE, A, DNSRecord
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.dns import answers
from gateway.dns.wire import Query, parse_query, scan_response, truncate_for_udp

HEADER = struct.Struct("!6H")


def query(name="ads.example.com", qtype="A", edns=False, do=False, rd=True, cd=False, id=0x5151) -> Query:
    record = DNSRecord.question(name, qtype)
    record.header.id = id
    record.header.rd = int(rd)
    record.header.cd = int(cd)
    if edns:
        record.add_ar(EDNS0(udp_len=4096, flags="do" if do else ""))
    q = parse_query(bytes(record.pack()))
    assert isinstance(q, Query)
    return q


def read(packet: bytes) -> dns.message.Message:
    return dns.message.from_wire(packet)


def check_common(msg: dns.message.Message, q: Query, *, edns: bool, do: bool = False) -> None:
    assert msg.id == q.id
    assert msg.flags & dns.flags.QR
    assert msg.flags & dns.flags.RA
    assert not msg.flags & dns.flags.AA  # documented choice: AA clear on every answer
    assert bool(msg.flags & dns.flags.RD) == q.rd
    assert bool(msg.flags & dns.flags.CD) == q.cd
    assert msg.opcode() == 0
    assert len(msg.question) == 1
    assert msg.question[0].name == dns.name.from_wire(q.raw, 12)[0]
    assert msg.question[0].rdtype == q.qtype
    if edns:
        assert msg.edns == 0
        assert msg.payload == answers.EDNS_SIZE
        assert bool(msg.ednsflags & dns.flags.DO) == do
        assert msg.options == ()
    else:
        assert msg.edns == -1


def soa_of(msg: dns.message.Message):
    assert len(msg.authority) == 1
    rrset = msg.authority[0]
    assert rrset.rdtype == dns.rdatatype.SOA
    return rrset, rrset[0]


# ---------------------------------------------------------------------------------------------------
# NXDOMAIN / NODATA


@pytest.mark.parametrize(("edns", "do"), [(False, False), (True, False), (True, True)])
def test_nxdomain(edns, do):
    q = query("ads.tracker.example.com", edns=edns, do=do)
    packet = answers.nxdomain(q, "example.com", 60)
    msg = read(packet)
    check_common(msg, q, edns=edns, do=do)
    assert msg.rcode() == dns.rcode.NXDOMAIN
    assert msg.answer == []
    rrset, soa = soa_of(msg)
    assert rrset.name.to_text() == "example.com."
    assert rrset.ttl == 60
    assert soa.mname.to_text() == "ns.school-gateway.invalid."
    assert soa.rname.to_text() == "hostmaster.school-gateway.invalid."
    assert (soa.serial, soa.refresh, soa.retry, soa.expire, soa.minimum) == (1, 3600, 600, 86400, 60)
    # The gateway's own scanner agrees, and a cache would keep it for the block TTL.
    info = scan_response(packet)
    assert (info.rcode, info.ttl) == (3, 60)


def test_nxdomain_soa_owner_is_compressed_into_the_question():
    q = query("ads.example.com")
    packet = answers.nxdomain(q, "example.com", 60)
    owner_at = q.question_end
    assert packet[owner_at:owner_at + 2] == struct.pack("!H", 0xC000 | (12 + 4))
    same = answers.nxdomain(q, "ads.example.com", 60)
    assert same[owner_at:owner_at + 2] == b"\xc0\x0c"
    assert read(same).authority[0].name.to_text() == "ads.example.com."


@pytest.mark.parametrize(("zone", "owner"), [
    ("blocked.school-gateway.invalid", "blocked.school-gateway.invalid."),
    ("ample.com", "ample.com."),  # a string suffix, not a label suffix: written in full
    ("Example.COM.", "example.com."),
    ("", "."),
    (".", "."),
])
def test_soa_owner_forms(zone, owner):
    q = query("ads.example.com")
    rrset, _ = soa_of(read(answers.nxdomain(q, zone, 30)))
    assert rrset.name.to_text().lower() == owner


def test_soa_owner_under_an_escaped_question_name():
    raw = HEADER.pack(7, 0x0100, 1, 0, 0, 0) + b"\x03a.b\x07example\x03com\x00" + struct.pack("!HH", 1, 1)
    q = parse_query(raw)
    assert q.qname == "a\\.b.example.com"
    msg = read(answers.nxdomain(q, answers.soa_zone_for(q.qname), 30))
    assert msg.authority[0].name.to_text() == "a\\.b.example.com."
    msg = read(answers.nxdomain(q, "example.com", 30))
    assert msg.authority[0].name.to_text() == "example.com."
    msg = read(answers.nxdomain(q, "b.example.com", 30))  # not a label boundary of the question
    assert msg.authority[0].name.to_text() == "b.example.com."


def test_nodata():
    q = query("example.com", "MX", edns=True)
    packet = answers.nodata(q, "example.com", 120)
    msg = read(packet)
    check_common(msg, q, edns=True)
    assert msg.rcode() == dns.rcode.NOERROR
    assert msg.answer == []
    rrset, soa = soa_of(msg)
    assert (rrset.ttl, soa.minimum) == (120, 120)
    assert scan_response(packet).ttl == 120


def test_ttl_is_clamped():
    q = query()
    assert soa_of(read(answers.nxdomain(q, "example.com", -5)))[0].ttl == 0
    assert soa_of(read(answers.nxdomain(q, "example.com", 2**40)))[0].ttl == 0x7FFFFFFF


def test_question_keeps_the_clients_case():
    q = query("AdS.ExAmple.CoM")
    msg = read(answers.nxdomain(q, "example.com", 60))
    assert msg.question[0].name.to_text() == "AdS.ExAmple.CoM."


def test_rd_and_cd_are_copied():
    q = query(rd=False, cd=True)
    msg = read(answers.null_answer(q, 10))
    check_common(msg, q, edns=False)
    assert not msg.flags & dns.flags.RD and msg.flags & dns.flags.CD


# ---------------------------------------------------------------------------------------------------
# null and address answers


def test_null_answer_a():
    q = query(edns=True, do=True)
    msg = read(answers.null_answer(q, 45))
    check_common(msg, q, edns=True, do=True)
    assert msg.rcode() == dns.rcode.NOERROR
    (rrset,) = msg.answer
    assert (rrset.name.to_text(), rrset.rdtype, rrset.ttl) == ("ads.example.com.", 1, 45)
    assert [r.address for r in rrset] == ["0.0.0.0"]
    assert msg.authority == []


def test_null_answer_aaaa():
    q = query(qtype="AAAA")
    msg = read(answers.null_answer(q, 45))
    check_common(msg, q, edns=False)
    (rrset,) = msg.answer
    assert rrset.rdtype == dns.rdatatype.AAAA
    assert [r.address for r in rrset] == ["::"]


@pytest.mark.parametrize("qtype", ["MX", "TXT", "HTTPS", "ANY"])
def test_null_answer_other_types_are_nodata(qtype):
    q = query(qtype=qtype, edns=True)
    msg = read(answers.null_answer(q, 45))
    check_common(msg, q, edns=True)
    assert msg.rcode() == dns.rcode.NOERROR and msg.answer == []
    rrset, soa = soa_of(msg)
    assert rrset.name.to_text() == "ads.example.com."
    assert soa.minimum == 45
    rrset, _ = soa_of(read(answers.null_answer(q, 45, soa_zone="example.com")))
    assert rrset.name.to_text() == "example.com."


def test_address_answer_v4_and_v6():
    v4 = ["10.1.2.3", bytes([192, 0, 2, 80])]
    v6 = ["2001:db8::80", bytes(15) + b"\x01"]
    q = query(qtype="A", edns=True)
    msg = read(answers.address_answer(q, v4, v6, 300))
    check_common(msg, q, edns=True)
    (rrset,) = msg.answer
    assert sorted(r.address for r in rrset) == ["10.1.2.3", "192.0.2.80"]
    assert rrset.ttl == 300 and rrset.name.to_text() == "ads.example.com."
    q = query(qtype="AAAA")
    msg = read(answers.address_answer(q, v4, v6, 300))
    (rrset,) = msg.answer
    assert sorted(r.address for r in rrset) == ["2001:db8::80", "::1"]


def test_address_answer_without_addresses_of_that_family_is_nodata():
    q = query(qtype="AAAA")
    msg = read(answers.address_answer(q, ["10.0.0.1"], [], 300))
    assert msg.rcode() == dns.rcode.NOERROR and msg.answer == []
    assert soa_of(msg)[1].minimum == 300
    msg = read(answers.address_answer(query(qtype="MX"), ["10.0.0.1"], ["::1"], 300))
    assert msg.answer == [] and len(msg.authority) == 1


def test_address_answer_rejects_wrong_sizes():
    with pytest.raises(ValueError):
        answers.address_answer(query(), [b"\x01\x02\x03"], [], 10)
    with pytest.raises(ValueError):
        answers.address_answer(query(qtype="AAAA"), [], [b"\x01\x02\x03\x04"], 10)


def test_address_answer_truncation():
    q = query(qtype="A", edns=True, do=True)
    many = [bytes([10, 0, i // 256, i % 256]) for i in range(200)]
    packet = answers.address_answer(q, many, [], 60)
    assert len(packet) > 1232
    assert len(read(packet).answer[0]) == 200
    small = truncate_for_udp(packet, 1232)
    assert len(small) <= 1232
    msg = read(small)
    check_common(msg, q, edns=True, do=True)
    assert msg.flags & dns.flags.TC
    assert msg.answer == []
    # Without EDNS the client gets 512 bytes at most, and no OPT.
    q = query(qtype="A")
    msg = read(truncate_for_udp(answers.address_answer(q, many, [], 60), q.udp_size))
    assert msg.flags & dns.flags.TC and msg.edns == -1


# ---------------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize("rcode", [answers.FORMERR, answers.SERVFAIL, answers.NOTIMP, answers.REFUSED])
@pytest.mark.parametrize("edns", [False, True])
def test_error(rcode, edns):
    q = query(edns=edns, do=edns)
    packet = answers.error(q, rcode)
    msg = read(packet)
    check_common(msg, q, edns=edns, do=edns)
    assert msg.rcode() == rcode
    assert msg.answer == msg.authority == []


@pytest.mark.parametrize("edns", [False, True])
def test_badvers(edns):
    q = query(edns=edns, do=True)
    packet = answers.error(q, answers.BADVERS)
    assert packet[3] & 0x0F == 0  # the header keeps only the low four bits: 16 & 0xF
    msg = read(packet)
    assert msg.rcode() == dns.rcode.BADVERS
    assert msg.edns == 0 and msg.payload == answers.EDNS_SIZE
    assert bool(msg.ednsflags & dns.flags.DO) == edns
    assert scan_response(packet).rcode == 16


def test_error_from_raw_echoes_a_locatable_question():
    raw = HEADER.pack(0x0A0B, 0x0100, 1, 1, 0, 0) + b"\x03www\x07example\x03com\x00\x00\x01\x00\x01"
    assert parse_query(raw) == answers.FORMERR
    msg = read(answers.error_from_raw(raw, answers.FORMERR))
    assert msg.id == 0x0A0B and msg.rcode() == dns.rcode.FORMERR
    assert msg.flags & dns.flags.QR and msg.flags & dns.flags.RD
    assert msg.question[0].name.to_text() == "www.example.com."
    assert msg.answer == [] and msg.edns == -1


@pytest.mark.parametrize("raw", [
    HEADER.pack(1, 0x0100, 1, 0, 0, 0) + b"\x03www\xc0\x0c\x00\x01\x00\x01",     # pointer in the question
    HEADER.pack(1, 0x0100, 2, 0, 0, 0) + b"\x01a\x00\x00\x01\x00\x01" * 2,         # two questions
    HEADER.pack(1, 0x0100, 1, 0, 0, 0) + b"\x05ab",                                # cut short
    HEADER.pack(1, 0x0100, 0, 0, 0, 0),                                            # no question
    HEADER.pack(1, 0x0100, 1, 0, 0, 0) + b"\x3f" * 300,                            # name too long
])
def test_error_from_raw_without_a_question(raw):
    packet = answers.error_from_raw(raw, answers.FORMERR)
    assert HEADER.unpack_from(packet) == (1, 0x8181, 0, 0, 0, 0)
    msg = read(packet)
    assert msg.rcode() == dns.rcode.FORMERR and msg.question == []


def test_error_from_raw_notimp_echoes_opcode():
    raw = HEADER.pack(9, 0x2800 | 0x0100, 1, 0, 0, 0) + b"\x01a\x00\x00\x06\x00\x01"  # UPDATE (5)
    assert parse_query(raw) == answers.NOTIMP
    msg = read(answers.error_from_raw(raw, answers.NOTIMP))
    assert msg.opcode() == 5 and msg.rcode() == dns.rcode.NOTIMP


def test_error_from_raw_badvers_has_opt():
    record = DNSRecord.question("example.com", "A")
    record.add_ar(EDNS0(udp_len=1232, version=1))
    raw = bytes(record.pack())
    assert parse_query(raw) == answers.BADVERS
    packet = answers.error_from_raw(raw, answers.BADVERS)
    msg = read(packet)
    assert msg.rcode() == dns.rcode.BADVERS and msg.edns == 0 and len(msg.question) == 1


def test_error_from_raw_short_packets():
    for size in range(12):
        assert answers.error_from_raw(b"\x01" * size, answers.FORMERR) is None


@settings(max_examples=400, deadline=None)
@given(st.binary(min_size=0, max_size=400), st.sampled_from([1, 4, 5, 16]))
def test_error_from_raw_never_raises(raw, rcode):
    packet = answers.error_from_raw(raw, rcode)
    if len(raw) < 12:
        assert packet is None
        return
    assert packet is not None and packet[:2] == raw[:2]
    msg = read(packet)
    assert msg.rcode() == rcode


# ---------------------------------------------------------------------------------------------------
# safe-search CNAME


def target_response(name="forcesafesearch.google.com", qtype="A", addresses=("216.239.38.120",), rcode=0,
                    chain=()):
    record = DNSRecord.question(name, qtype).reply()
    record.header.rcode = rcode
    owner = name
    for hop in chain:
        record.add_answer(dnslib.RR(owner, QTYPE.CNAME, ttl=200, rdata=CNAME(hop)))
        owner = hop
    for address in addresses:
        if qtype == "A":
            record.add_answer(dnslib.RR(owner, QTYPE.A, ttl=300, rdata=A(address)))
        else:
            record.add_answer(dnslib.RR(owner, QTYPE.AAAA, ttl=300, rdata=dnslib.AAAA(address)))
    return bytes(record.pack())


def test_cname_answer_carries_the_targets_addresses():
    q = query("www.google.com", edns=True, do=True)
    packet = answers.cname_answer(q, "forcesafesearch.google.com", target_response(), 60)
    msg = read(packet)
    check_common(msg, q, edns=True, do=True)
    assert msg.rcode() == dns.rcode.NOERROR
    cname, a = msg.answer
    assert (cname.name.to_text(), cname.rdtype, cname.ttl) == ("www.google.com.", dns.rdatatype.CNAME, 60)
    assert cname[0].target.to_text() == "forcesafesearch.google.com."
    assert (a.name.to_text(), a.rdtype, a.ttl) == ("forcesafesearch.google.com.", dns.rdatatype.A, 300)
    assert [r.address for r in a] == ["216.239.38.120"]
    info = scan_response(packet)
    assert info.cname_targets == ("forcesafesearch.google.com",)
    assert info.addresses == (("forcesafesearch.google.com", bytes([216, 239, 38, 120])),)


def test_cname_answer_copies_a_chain_and_aaaa():
    q = query("www.youtube.com", "AAAA")
    response = target_response("restrict.youtube.com", "AAAA", ("2001:db8::1", "2001:db8::2"),
                               chain=("edge.youtube.example",))
    msg = read(answers.cname_answer(q, "restrict.youtube.com", response, 60))
    first, second, third = msg.answer
    assert first[0].target.to_text() == "restrict.youtube.com."
    assert second.name.to_text() == "restrict.youtube.com."
    assert second[0].target.to_text() == "edge.youtube.example."
    assert third.name.to_text() == "edge.youtube.example."
    assert sorted(r.address for r in third) == ["2001:db8::1", "2001:db8::2"]


def test_cname_answer_decompresses_names_in_rdata():
    q = query("www.example.com", "MX")
    record = DNSRecord.question("safe.example.com", "MX").reply()
    record.add_answer(dnslib.RR("safe.example.com", QTYPE.MX, ttl=90, rdata=MX("mail.safe.example.com", 10)))
    record.add_answer(dnslib.RR("safe.example.com", QTYPE.MX, ttl=90, rdata=MX("mx2.example.com", 20)))
    # Not of the query type: left out.
    record.add_answer(dnslib.RR("other.example.com", QTYPE.A, ttl=90, rdata=A("192.0.2.1")))
    upstream = bytes(record.pack())
    assert upstream.count(b"\xc0") >= 3  # the upstream compressed them
    msg = read(answers.cname_answer(q, "safe.example.com", upstream, 60))
    assert [rrset.rdtype for rrset in msg.answer] == [dns.rdatatype.CNAME, dns.rdatatype.MX]
    assert sorted((r.preference, r.exchange.to_text()) for r in msg.answer[1]) == [
        (10, "mail.safe.example.com."), (20, "mx2.example.com.")]


def test_cname_answer_without_target_response():
    q = query("www.bing.com")
    msg = read(answers.cname_answer(q, "strict.bing.com", None, 60))
    assert msg.rcode() == dns.rcode.NOERROR
    (cname,) = msg.answer
    assert cname[0].target.to_text() == "strict.bing.com."


def test_cname_answer_mirrors_nxdomain():
    q = query("www.bing.com")
    response = target_response("strict.bing.com", addresses=(), rcode=RCODE.NXDOMAIN)
    msg = read(answers.cname_answer(q, "strict.bing.com", response, 60))
    assert msg.rcode() == dns.rcode.NXDOMAIN
    assert len(msg.answer) == 1


@pytest.mark.parametrize("response", [
    target_response(rcode=RCODE.SERVFAIL, addresses=()),
    target_response("www.google.com"),  # an answer for the unfiltered name must never be passed on
    target_response(qtype="AAAA", addresses=("2001:db8::1",)),
    b"\x00\x01garbage",
])
def test_cname_answer_fails_closed(response):
    q = query("www.google.com")
    msg = read(answers.cname_answer(q, "forcesafesearch.google.com", response, 60))
    assert msg.rcode() == dns.rcode.SERVFAIL
    assert msg.answer == []


def test_cname_answer_target_case_and_dot_do_not_matter():
    q = query("www.google.com")
    msg = read(answers.cname_answer(q, "ForceSafeSearch.Google.com.", target_response(), 60))
    assert len(msg.answer) == 2


# ---------------------------------------------------------------------------------------------------
# soa_zone_for


@pytest.mark.parametrize(("name", "zone"), [
    ("ads.tracker.example.com", "example.com"),
    ("example.com", "example.com"),
    ("com", "com"),
    ("", ""),
    ("www.moet.edu.vn", "moet.edu.vn"),
    ("a.b.hanoi.gov.vn", "hanoi.gov.vn"),
    ("shop.com.vn", "shop.com.vn"),
    ("com.vn", "com.vn"),
    ("x.y.bbc.co.uk", "bbc.co.uk"),
    ("WWW.Example.COM.", "example.com"),
    ("cdn.example.vn", "example.vn"),
    ("a\\.b.example.com", "a\\.b.example.com"),
])
def test_soa_zone_for(name, zone):
    assert answers.soa_zone_for(name) == zone


def test_answers_module_does_not_use_dnslib():
    # Principle 4: block answers are bytes, never dnslib objects.
    assert not hasattr(answers, "dnslib")
    assert all(not name.startswith("DNS") for name in vars(answers))


def test_unusable_soa_zone_still_blocks():
    q = query("ads.example.com")
    msg = read(answers.nxdomain(q, "x" * 64 + ".com", 60))
    assert msg.rcode() == dns.rcode.NXDOMAIN
    assert msg.authority[0].name.to_text() == "ads.example.com."


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=12), max_size=5),
       st.sampled_from([1, 28, 15, 16, 65, 255]), st.booleans(), st.booleans(), st.integers(0, 0xFFFF))
def test_every_builder_gives_a_well_formed_answer(labels, qtype, edns, do, id_):
    name = b"".join(bytes([len(label)]) + label for label in labels) + b"\x00"
    raw = HEADER.pack(id_, 0x0100, 1, 0, 0, 1 if edns else 0) + name + struct.pack("!HH", qtype, 1)
    if edns:
        raw += b"\x00" + struct.pack("!HHBBHH", 41, 1232, 0, 0, 0x8000 if do else 0, 0)
    q = parse_query(raw)
    assert isinstance(q, Query)
    built = [
        answers.nxdomain(q, answers.soa_zone_for(q.qname), 60),
        answers.nodata(q, "example.com", 60),
        answers.null_answer(q, 60),
        answers.address_answer(q, ["192.0.2.1"], ["2001:db8::1"], 60),
        answers.cname_answer(q, "safe.example.com", None, 60),
        answers.error(q, answers.REFUSED),
        answers.error(q, answers.BADVERS),
    ]
    for packet in built:
        msg = read(packet)
        assert msg.id == id_
        assert msg.question[0].name == dns.name.from_wire(raw, 12)[0]
        info = scan_response(packet)
        assert info.qname_wire == q.qname_wire
        assert (msg.edns == 0) == (edns or msg.rcode() == dns.rcode.BADVERS)
