"""The real gateway on loopback, asked by dnspython and dig, forwarding to a real in-test upstream."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
from fakeupstream import FakeUpstream
from gatewayproc import GatewayProcess, rrs

RECORDS = {
    ("example.com", "A"): ["93.184.216.34"],
    ("example.com", "AAAA"): ["2606:2800:220:1:248:1893:25c8:1946"],
    ("example.com", "MX"): ["10 mail.example.com."],
    ("www.google.com", "A"): ["142.250.1.1"],
    ("mail.google.com", "A"): ["142.250.1.2"],
    ("forcesafesearch.google.com", "A"): ["216.239.38.120"],
    ("forcesafesearch.google.com", "AAAA"): ["2001:4860:4802:32::78"],
    ("restrict.youtube.com", "A"): ["216.239.38.120"],
    ("restrictmoderate.youtube.com", "A"): ["216.239.38.119"],
    ("alias.test", "CNAME"): ["badcdn.test"],
    ("badcdn.test", "A"): ["203.0.113.9"],
    ("kidsalias.kids.test", "CNAME"): ["cdn.elsewhere.test"],
    ("cdn.elsewhere.test", "A"): ["203.0.113.10"],
    ("rebind.test", "A"): ["192.168.1.10"],
    ("big.test", "TXT"): ["x" * 200, "y" * 200, "z" * 200],
    ("allowed-by-school.test", "A"): ["203.0.113.11"],
    ("captive.apple.com", "A"): ["17.253.1.1"],
    ("olm.vn", "A"): ["203.0.113.12"],
}


@pytest.fixture(scope="module")
def upstream():
    with FakeUpstream(dict(RECORDS)) as fake:
        yield fake


@pytest.fixture(scope="module")
def gw(upstream, tmp_path_factory):
    extra = """\
      block_ttl: 30
      local_records:
        gateway.school.lan: ["10.0.0.2", "fd00::2"]
      rate_limit: {qps: 100000, burst: 100000}  # this fixture's clients query hard; the limit has its own test
    """
    with GatewayProcess(tmp_path_factory.mktemp("gw"), [upstream.spec("udp")], dns_extra=extra) as g:
        yield g


@pytest.fixture(autouse=True)
def answering(upstream):
    upstream.mode = "answer"
    upstream.delay = 0
    yield


def test_ready_line_and_allowed_answer(gw, upstream):
    assert any("school-gateway ready" in line and f"127.0.0.1:{gw.port}" in line for line in gw.lines)
    r = gw.ask("example.com")
    assert r.rcode() == dns.rcode.NOERROR
    assert rrs(r, "A") == ["93.184.216.34"]
    assert r.flags & dns.flags.RA


def test_cache_answers_repeat_queries(gw, upstream):
    gw.ask("example.com", "AAAA")
    before = len(upstream.queries)
    r = gw.ask("EXAMPLE.com", "AAAA")
    assert rrs(r, "AAAA") == ["2606:2800:220:1:248:1893:25c8:1946"]
    assert len(upstream.queries) == before  # served from the cache
    assert r.question[0].name.to_text() == "EXAMPLE.com."  # the client's spelling comes back


@pytest.mark.parametrize("rtype", ["A", "AAAA", "MX", "TXT", "HTTPS", "SVCB"])
def test_blocked_for_every_type_with_soa(gw, upstream, rtype):
    before = len(upstream.queries)
    r = gw.ask("www.casino.example", rtype)
    assert r.rcode() == dns.rcode.NXDOMAIN
    assert r.authority and r.authority[0].rdtype == dns.rdatatype.SOA
    assert r.authority[0].ttl <= 30
    assert len(upstream.queries) == before  # a blocked name is never forwarded


def test_null_block_mode(gw):
    # tieu_hoc answers blocks with 0.0.0.0 / ::
    assert rrs(gw.ask("casino.example", "A", source="127.0.0.2"), "A") == ["0.0.0.0"]
    assert rrs(gw.ask("casino.example", "AAAA", source="127.0.0.2"), "AAAA") == ["::"]


def test_school_deny_and_allow(gw):
    assert gw.ask("denied.test").rcode() == dns.rcode.NXDOMAIN
    assert rrs(gw.ask("allowed-by-school.test"), "A") == ["203.0.113.11"]


def test_safe_search_cname_with_addresses(gw):
    r = gw.ask("www.google.com", source="127.0.0.2")
    assert rrs(r, "CNAME") == ["forcesafesearch.google.com."]
    assert rrs(r, "A") == ["216.239.38.120"]
    r6 = gw.ask("www.google.com", "AAAA", source="127.0.0.2")
    assert rrs(r6, "CNAME") == ["forcesafesearch.google.com."]
    https = gw.ask("www.google.com", "HTTPS", source="127.0.0.2")
    assert rrs(https, "CNAME") == ["forcesafesearch.google.com."]
    # exact hosts only: mail.google.com keeps working untouched
    assert rrs(gw.ask("mail.google.com", source="127.0.0.2"), "A") == ["142.250.1.2"]
    assert rrs(gw.ask("mail.google.com", source="127.0.0.2"), "CNAME") == []


def test_youtube_mode_follows_band(gw, upstream):
    upstream.add("www.youtube.com", "A", ["142.250.2.2"])
    assert rrs(gw.ask("www.youtube.com", source="127.0.0.2"), "CNAME") == ["restrict.youtube.com."]
    assert rrs(gw.ask("www.youtube.com", source="127.0.0.1"), "CNAME") == ["restrictmoderate.youtube.com."]
    staff = gw.ask("www.youtube.com", source="127.0.0.4")
    assert rrs(staff, "CNAME") == [] and rrs(staff, "A") == ["142.250.2.2"]


@pytest.mark.parametrize("name", ["use-application-dns.net", "mask.icloud.com", "dns.google"])
def test_bypass_names_nxdomain_for_children(gw, name):
    for source in ("127.0.0.1", "127.0.0.2"):
        assert gw.ask(name, source=source).rcode() == dns.rcode.NXDOMAIN


def test_resolver_discovery_answered_locally(gw, upstream):
    before = len(upstream.queries)
    r = gw.ask("_dns.resolver.arpa", "SVCB")
    assert r.rcode() == dns.rcode.NOERROR and not r.answer
    assert len(upstream.queries) == before


def test_not_served_clients_are_refused(gw):
    assert gw.ask("example.com", source="127.0.0.9").rcode() == dns.rcode.REFUSED


def test_cname_to_blocked_name_is_blocked(gw):
    assert gw.ask("alias.test").rcode() == dns.rcode.NXDOMAIN  # alias.test -> badcdn.test (gambling)
    staff = gw.ask("alias.test", source="127.0.0.4")  # staff do not block gambling
    assert rrs(staff, "A") == ["203.0.113.9"]


def test_walled_garden_follows_cname_of_allowed_name(gw):
    assert rrs(gw.ask("kidsalias.kids.test", source="127.0.0.3"), "A") == ["203.0.113.10"]
    assert gw.ask("example.com", source="127.0.0.3").rcode() == dns.rcode.NXDOMAIN


def test_rebinding_dropped_local_records_answered(gw):
    assert gw.ask("rebind.test").rcode() == dns.rcode.NXDOMAIN
    assert rrs(gw.ask("gateway.school.lan"), "A") == ["10.0.0.2"]
    assert rrs(gw.ask("gateway.school.lan", "AAAA"), "AAAA") == ["fd00::2"]


def test_never_block_beats_school_deny(gw):
    assert rrs(gw.ask("captive.apple.com"), "A") == ["17.253.1.1"]


def test_truncation_then_tcp(gw):
    r = gw.ask("big.test", "TXT", payload=512)
    assert r.flags & dns.flags.TC
    full = gw.ask("big.test", "TXT", tcp=True)
    assert len(rrs(full, "TXT")) == 3
    assert not full.flags & dns.flags.TC


def test_edns_advertised_and_do_bit_echoed(gw):
    r = gw.ask("casino.example", "MX", want_dnssec=True)
    assert r.edns == 0 and r.payload == 1232
    assert r.ednsflags & dns.flags.DO
    assert gw.ask("casino.example", "MX", payload=None).edns == -1  # no EDNS asked, none given


def test_ipv6_listener(gw):
    assert rrs(gw.ask("example.com", source="::1"), "A") == ["93.184.216.34"]


@pytest.mark.skipif(shutil.which("dig") is None, reason="dig (dnsutils) not installed")
def test_dig_udp_and_tcp(gw):
    for flag in ("+notcp", "+tcp"):
        out = subprocess.run(["dig", "@127.0.0.1", "-p", str(gw.port), flag, "+short", "example.com", "A"],
                             capture_output=True, text=True, timeout=10).stdout
        assert out.strip() == "93.184.216.34"
    out = subprocess.run(["dig", "@127.0.0.1", "-p", str(gw.port), "casino.example"], capture_output=True,
                         text=True, timeout=10).stdout
    assert "NXDOMAIN" in out


def _raw(gw, packet: bytes, timeout: float = 0.5) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(packet, ("127.0.0.1", gw.port))
        try:
            return s.recv(4096)
        except TimeoutError:
            return None


QUESTION = b"\x07example\x03com\x00\x00\x01\x00\x01"


@pytest.mark.parametrize(
    ("packet", "rcode"),
    [
        (b"\x12\x34\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00", dns.rcode.FORMERR),  # QDCOUNT 0
        (b"\x12\x34\x01\x00\x00\x02\x00\x00\x00\x00\x00\x00" + QUESTION * 2, dns.rcode.FORMERR),
        (b"\x12\x34\x11\x00\x00\x01\x00\x00\x00\x00\x00\x00" + QUESTION, dns.rcode.NOTIMP),  # IQUERY
        (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01", dns.rcode.FORMERR),  # loop
        (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x01" + QUESTION + b"\x00\x00\x29\x04\xd0\x00\x01\x00\x00"
         b"\x00\x00", dns.rcode.BADVERS),
    ],
)
def test_malformed_queries_get_rfc_rcodes(gw, packet, rcode):
    reply = _raw(gw, packet)
    assert reply is not None
    msg_rcode = reply[3] & 0x0F
    if rcode == dns.rcode.BADVERS:
        assert dns.message.from_wire(reply).rcode() == dns.rcode.BADVERS
    else:
        assert msg_rcode == rcode
    assert reply[:2] == b"\x12\x34"
    assert rrs(gw.ask("example.com"), "A") == ["93.184.216.34"]  # still serving


def test_scapy_garbage_never_stops_the_server(gw):
    from scapy.layers.dns import DNS, DNSQR, DNSRR

    bad = [
        b"",
        b"\x00",
        b"\xff" * 11,
        bytes(DNS(id=1, qr=1, qd=DNSQR(qname="example.com"))),  # a response sent as a query: dropped
        bytes(DNS(id=2, qd=DNSQR(qname="example.com"), an=DNSRR(rrname="x.com", rdata="1.2.3.4"))),
        bytes(DNS(id=3, qd=DNSQR(qname="a" * 63 + ".com")))[:-3],  # cut short
        bytes(DNS(id=4, opcode=5, qd=DNSQR(qname="example.com"))),  # UPDATE
        bytes(DNS(id=5, qd=DNSQR(qname="example.com", qclass=3))),  # CHAOS
        b"\x00\x06\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01",  # label 64
    ]
    assert _raw(gw, bad[3]) is None
    for packet in bad:
        _raw(gw, packet, timeout=0.05)
    assert rrs(gw.ask("example.com"), "A") == ["93.184.216.34"]
    assert rrs(gw.ask("example.com", tcp=True), "A") == ["93.184.216.34"]


def test_upstream_down_servfail(gw, upstream):
    upstream.mode = "stall"
    r = gw.ask("never-cached.test", timeout=5)
    assert r.rcode() == dns.rcode.SERVFAIL


def test_spoofed_upstream_answers_are_ignored(gw, upstream):
    upstream.mode = "spoof"
    upstream.add("spoofed.test", "A", ["203.0.113.77"])
    assert rrs(gw.ask("spoofed.test"), "A") == ["203.0.113.77"]


def test_rate_limit_per_client(tmp_path, upstream):
    # each client may send 10 at once, then 5 per second; others are unaffected; the relay is exempt
    extra = "rate_limit: {qps: 5, burst: 10}\nrelays: [127.0.0.4]\n"
    with GatewayProcess(tmp_path, [upstream.spec("udp")], dns_extra=extra) as g:
        answered = 0
        for _ in range(40):
            try:
                g.ask("example.com", source="127.0.0.5", timeout=0.2)
                answered += 1
            except dns.exception.Timeout:
                pass
        assert 10 <= answered < 40
        assert rrs(g.ask("example.com", source="127.0.0.1"), "A") == ["93.184.216.34"]
        for _ in range(30):
            assert rrs(g.ask("example.com", source="127.0.0.4", timeout=2), "A") == ["93.184.216.34"]


def test_reload_while_querying(gw):
    school = gw.paths.school
    failures, blocked_seen = [], threading.Event()
    stop = threading.Event()

    def client():
        while not stop.is_set():
            try:
                r = gw.ask("late-deny.test" if blocked_seen.is_set() else "example.com", source="127.0.0.4",
                           timeout=2)
                if r.rcode() not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
                    failures.append(r.rcode())
            except Exception as exc:
                failures.append(exc)

    t = threading.Thread(target=client)
    t.start()
    try:
        text = school.read_text(encoding="utf-8")
        school.write_text(text.replace("  staff: {band: staff, clients: [127.0.0.4]}",
                                       "  staff: {band: staff, clients: [127.0.0.4], deny: [late-deny.test]}"),
                          encoding="utf-8")
        gw.reload()
        deadline = time.monotonic() + 30
        while gw.ask("late-deny.test", source="127.0.0.4").rcode() != dns.rcode.NXDOMAIN:
            assert time.monotonic() < deadline, "reload did not take effect"
            time.sleep(0.05)  # bounds polling for the reload's effect; not a readiness wait
        blocked_seen.set()
        # a broken file is rejected whole and the running policy keeps serving
        school.write_text("groups: [broken\n", encoding="utf-8")
        gw.reload()
        deadline = time.monotonic() + 30
        while not any("reload rejected" in line for line in gw.lines):
            assert time.monotonic() < deadline, "".join(gw.lines)
            gw.ask("example.com", source="127.0.0.4")
            time.sleep(0.05)
        assert any("reload rejected" in line for line in gw.lines)
        assert gw.ask("late-deny.test", source="127.0.0.4").rcode() == dns.rcode.NXDOMAIN
    finally:
        stop.set()
        t.join()
        school.write_text(text, encoding="utf-8")
        gw.reload()
    assert failures == []


def test_forwarding_to_itself_is_refused(tmp_path):
    g = GatewayProcess(tmp_path, ["udp://127.0.0.1:9"])
    g.config.write_text(g.config.read_text().replace("udp://127.0.0.1:9", f"udp://127.0.0.1:{g.port}"))
    with pytest.raises(RuntimeError) as info:
        g.start(timeout=15)
    assert "forward to itself" in str(info.value)


class Relay:
    """A router that relays DNS to the gateway: the gateway's upstream leads back to it."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.target = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.is_set():
            try:
                data, addr = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
                out.settimeout(2)
                out.sendto(data, self.target)
                try:
                    self.sock.sendto(out.recv(4096), addr)
                except TimeoutError:
                    pass


def test_forwarding_loop_through_a_relay_is_detected(tmp_path):
    relay = Relay()
    g = GatewayProcess(tmp_path, [f"udp://127.0.0.1:{relay.port}"])
    relay.target = ("127.0.0.1", g.port)
    relay.thread.start()
    try:
        with pytest.raises(RuntimeError) as info:
            g.start(timeout=15)
    finally:
        relay.stop.set()
    assert "forwarding loop" in str(info.value)


def test_workers_share_the_port(tmp_path, upstream):
    with GatewayProcess(tmp_path, [upstream.spec("udp")], workers=2) as g:
        for _ in range(20):
            assert rrs(g.ask("example.com"), "A") == ["93.184.216.34"]
        assert sum("school-gateway ready" in line for line in g.lines) >= 1


def test_file_replaced_by_rename_is_reloaded_without_a_signal(tmp_path, upstream):
    with GatewayProcess(tmp_path, [upstream.spec("udp")]) as g:
        school = g.paths.school
        new = school.with_name("school.yaml.new")
        new.write_text(school.read_text(encoding="utf-8").replace(
            "  staff: {band: staff, clients: [127.0.0.4]}",
            "  staff: {band: staff, clients: [127.0.0.4], deny: [renamed-deny.test]}"), encoding="utf-8")
        new.replace(school)  # the safe way to write a policy file: complete, then renamed into place
        for _ in range(100):
            if any("policy reloaded" in line for line in g.lines):
                break
            g.ask("example.com", source="127.0.0.4")
            threading.Event().wait(0.1)  # the watcher polls every 2 s; this loop only bounds the wait
        assert any("policy reloaded" in line for line in g.lines)
        assert g.ask("renamed-deny.test", source="127.0.0.4").rcode() == dns.rcode.NXDOMAIN
