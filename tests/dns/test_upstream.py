"""Upstream forwarding against real DNS servers on loopback: answers, spoofing, TCP, DoT, failover, merge."""

from __future__ import annotations

import asyncio
import random
import socket
import ssl
import sys
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.dns.upstream import UpstreamError, Upstreams, UpstreamSpec, _classify, _client_question

# tests/conftest.py puts tests/ on the path, but fakeupstream lives beside this file (and importlib mode
# adds nothing): without this the import fails when this module is run alone.
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from fakeupstream import FakeUpstream

RECORDS = {
    ("example.com", "A"): ["93.184.216.34"],
    ("example.com", "AAAA"): ["2606:2800:220:1:248:1893:25c8:1946"],
    ("alias.test", "CNAME"): ["example.com"],
    ("txt.test", "TXT"): ["hello"],
}
KEY = (b"\x07example\x03com\x00", 1, 1, False)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fakes():
    """Start FakeUpstreams on demand; all are stopped after the test."""
    started: list[FakeUpstream] = []

    def make(mode: str = "answer", **kwargs) -> FakeUpstream:
        fake = FakeUpstream(RECORDS, **kwargs).start()
        fake.mode = mode
        started.append(fake)
        return fake

    yield make
    for fake in started:
        fake.stop()


def specs(*texts: str) -> list[UpstreamSpec]:
    return [UpstreamSpec.parse(t) for t in texts]


def make_query(name: str = "example.com", rdtype: str = "A", qid: int = 0x1234) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype)
    q.id = qid
    return q


async def ask(ups: Upstreams, q: dns.message.Message, key=None) -> dns.message.Message:
    return dns.message.from_wire(await ups.query(q.to_wire(), key))


def rdata(msg: dns.message.Message) -> list[str]:
    return sorted(rr.to_text() for rrset in msg.answer for rr in rrset)


def closed_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def trusting(fake: FakeUpstream) -> ssl.SSLContext:
    assert fake.ca_pem is not None
    return ssl.create_default_context(cadata=fake.ca_pem.decode())


# ---- answers ----


def test_plain_answer_has_client_id_and_content(fakes):
    up = fakes()

    async def main():
        async with Upstreams(specs(up.spec()), timeout=0.5) as ups:
            q = make_query(qid=0x1234)
            r = await ask(ups, q)
            assert r.id == 0x1234 and q.is_response(r)
            assert rdata(r) == ["93.184.216.34"]
            cname = await ask(ups, make_query("alias.test"))
            assert rdata(cname) == ["93.184.216.34", "example.com."]
            nx = await ask(ups, make_query("nowhere.test"))
            assert nx.rcode() == dns.rcode.NXDOMAIN and nx.authority[0].rdtype == dns.rdatatype.SOA
            assert [h.queries for h in ups.health()] == [3]
            assert ups.health()[0].latency is not None

    asyncio.run(main())


def test_upstream_sees_fresh_ids_and_source_ports(fakes):
    up = fakes()

    async def main():
        async with Upstreams(specs(up.spec()), timeout=0.5, rng=random.Random(7)) as ups:
            for _ in range(5):
                assert (await ask(ups, make_query(qid=0x1234))).id == 0x1234

    asyncio.run(main())
    expected = random.Random(7)
    assert [r.id for r in up.received] == [expected.getrandbits(16) for _ in range(5)]
    assert 0x1234 not in {r.id for r in up.received}
    # The kernel picks random ports: a repeat is possible, just unlikely.
    assert len({r.port for r in up.received}) >= 4


def test_client_spelling_of_the_name_is_kept(fakes):
    up = fakes()

    async def main():
        async with Upstreams(specs(up.spec()), timeout=0.5) as ups:
            r = await ask(ups, make_query("ExAmPlE.CoM"))
            assert r.question[0].name.to_text() == "ExAmPlE.CoM."
            assert rdata(r) == ["93.184.216.34"]

    asyncio.run(main())


def test_malformed_client_query_is_a_value_error(fakes):
    up = fakes()

    async def main():
        async with Upstreams(specs(up.spec()), timeout=0.5) as ups:
            for bad in (
                b"",
                b"\x00" * 11,
                b"\x12\x34\x01\x00\x00\x00" + b"\x00" * 6,
                make_query().to_wire()[:15],
            ):
                with pytest.raises(ValueError):
                    await ups.query(bad)

    asyncio.run(main())
    assert up.queries == []


# ---- spoofing ----


def test_spoofed_replies_are_ignored(fakes):
    up = fakes("spoof")

    async def main():
        async with Upstreams(specs(up.spec()), timeout=0.5) as ups:
            r = await ask(ups, make_query())
            assert rdata(r) == ["93.184.216.34"]
            # The off-port forgery never reaches a connected socket; wrong ID and wrong question are counted.
            assert ups.spoofed == 2

    asyncio.run(main())


def test_spoofed_replies_over_tcp_are_ignored(fakes):
    up = fakes("spoof")

    async def main():
        async with Upstreams(specs(up.spec("tcp")), timeout=0.5) as ups:
            r = await ask(ups, make_query())
            assert rdata(r) == ["93.184.216.34"]
            assert ups.spoofed == 2

    asyncio.run(main())


def test_only_spoofed_replies_end_in_upstream_error(fakes):
    up = fakes("spoof_only")

    async def main():
        async with Upstreams(specs(up.spec()), timeout=0.3) as ups:
            with pytest.raises(UpstreamError, match="no answer within"):
                await ups.query(make_query().to_wire())
            assert ups.spoofed == 2
            assert ups.health()[0].failures == 1

    asyncio.run(main())


# ---- TCP and DoT ----


def test_truncated_udp_is_retried_over_tcp(fakes):
    up = fakes("truncate")

    async def main():
        async with Upstreams(specs(up.spec()), timeout=0.5) as ups:
            r = await ask(ups, make_query(qid=77))
            assert r.id == 77 and not r.flags & dns.flags.TC
            assert rdata(r) == ["93.184.216.34"]

    asyncio.run(main())
    assert up.queries == [("example.com", "A", "udp"), ("example.com", "A", "tcp")]


def test_tcp_upstream_pipelines_on_one_connection(fakes):
    up = fakes()
    for i in range(20):
        up.add(f"q{i}.test", "A", [f"10.0.0.{i}"])
    up.delay = 0.05  # so the queries overlap on the connection

    async def main():
        async with Upstreams(specs(up.spec("tcp")), timeout=0.5) as ups:
            answers = await asyncio.gather(*(ask(ups, make_query(f"q{i}.test", qid=i)) for i in range(20)))
            for i, r in enumerate(answers):
                assert r.id == i and rdata(r) == [f"10.0.0.{i}"]

    asyncio.run(main())
    assert {p for _, _, p in up.queries} == {"tcp"}
    assert up.connections == 1


def test_dot_with_trusted_ca_reuses_the_connection(fakes):
    up = fakes(tls=True)

    async def main():
        async with Upstreams(specs(up.spec("tls")), timeout=0.5, ssl_context=trusting(up)) as ups:
            assert rdata(await ask(ups, make_query())) == ["93.184.216.34"]
            assert rdata(await ask(ups, make_query("txt.test", "TXT"))) == ['"hello"']

    asyncio.run(main())
    assert [p for _, _, p in up.queries] == ["tls", "tls"]
    assert up.connections == 1


def test_dot_with_untrusted_certificate_fails(fakes):
    up = fakes(tls=True)

    async def main():
        async with Upstreams(specs(up.spec("tls")), timeout=0.5) as ups:  # system CAs only
            with pytest.raises(UpstreamError, match="certificate verify failed"):
                await ups.query(make_query().to_wire())

    asyncio.run(main())
    assert up.queries == []


def test_dot_with_wrong_certificate_name_fails(fakes):
    up = fakes(tls=True)
    spec = UpstreamSpec("tls", "127.0.0.1", up.tls_port, "other.test")

    async def main():
        async with Upstreams([spec], timeout=0.5, ssl_context=trusting(up)) as ups:
            with pytest.raises(UpstreamError, match="certificate verify failed"):
                await ups.query(make_query().to_wire())

    asyncio.run(main())
    assert up.queries == []


def test_dot_refuses_a_context_that_does_not_verify(fakes):
    up = fakes(tls=True)
    lax = ssl.create_default_context()
    lax.check_hostname = False
    with pytest.raises(ValueError, match="must verify"):
        Upstreams(specs(up.spec("tls")), ssl_context=lax)


def test_dot_reconnects_after_the_server_closes(fakes):
    up = fakes(tls=True)

    async def main():
        async with Upstreams(specs(up.spec("tls")), timeout=0.5, ssl_context=trusting(up)) as ups:
            assert rdata(await ask(ups, make_query())) == ["93.184.216.34"]
            up.drop_connections()
            assert await asyncio.to_thread(up.wait, lambda: up.closed_connections == 1)
            assert rdata(await ask(ups, make_query())) == ["93.184.216.34"]
            assert ups.health()[0].failures == 0

    asyncio.run(main())
    assert up.connections == 2


def test_dot_idle_connection_is_closed(fakes):
    up = fakes(tls=True)

    async def main():
        async with Upstreams(
            specs(up.spec("tls")), timeout=0.5, ssl_context=trusting(up), idle_timeout=0.1
        ) as ups:
            await ask(ups, make_query())
            # The server sees the close while our loop keeps running (the wait is in a thread).
            assert await asyncio.to_thread(up.wait, lambda: up.closed_connections == 1, 2.0)
            assert rdata(await ask(ups, make_query())) == ["93.184.216.34"]

    asyncio.run(main())
    assert up.connections == 2


def test_ipv6_loopback_upstream(fakes):
    try:
        up = fakes(host="::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")

    async def main():
        async with Upstreams(specs(up.spec(), up.spec("tcp")), timeout=0.5) as ups:
            assert rdata(await ask(ups, make_query("example.com", "AAAA"))) == [
                "2606:2800:220:1:248:1893:25c8:1946"
            ]

    asyncio.run(main())
    assert up.queries == [("example.com", "AAAA", "udp")]


# ---- failover and health ----


def test_stalled_first_upstream_fails_over_and_is_demoted(fakes):
    stall, good = fakes("stall"), fakes()

    async def main():
        async with Upstreams(specs(stall.spec(), good.spec()), timeout=0.4, attempts=2) as ups:
            assert rdata(await ask(ups, make_query())) == ["93.184.216.34"]
            first, second = ups.health()
            assert (first.failures, first.errors, second.failures) == (1, 1, 0)
            # One failure already weighs as a whole attempt's time, so the one that answers now goes first.
            for _ in range(3):
                assert rdata(await ask(ups, make_query())) == ["93.184.216.34"]

    asyncio.run(main())
    assert len(stall.queries) == 1 and len(good.queries) == 4


def test_closed_port_fails_over_fast(fakes):
    good = fakes()

    async def main():
        async with Upstreams(
            specs(f"udp://127.0.0.1:{closed_port()}", good.spec()), timeout=0.5, attempts=2
        ) as ups:
            assert rdata(await ask(ups, make_query())) == ["93.184.216.34"]
            assert ups.health()[0].failures == 1

    asyncio.run(main())


def test_unhealthy_after_three_failures_then_backoff_and_probe(fakes):
    a, b = fakes("refused"), fakes("refused")
    clock = FakeClock()
    pkt = make_query().to_wire()

    async def main():
        async with Upstreams(specs(a.spec(), b.spec()), timeout=0.5, attempts=2, clock=clock) as ups:
            for n in range(3):
                assert [h.healthy for h in ups.health()] == [True, True]
                with pytest.raises(UpstreamError, match="refused"):
                    await ups.query(pkt)
                assert [h.failures for h in ups.health()] == [n + 1, n + 1]
            assert [h.healthy for h in ups.health()] == [False, False]

            # All down: both are still tried; b now answers and is healthy again at once.
            b.mode = "answer"
            assert rdata(await ask(ups, make_query())) == ["93.184.216.34"]
            ha, hb = ups.health()
            assert (ha.healthy, ha.failures, hb.healthy, hb.failures) == (False, 4, True, 0)

            # a rests for its backoff (5s doubled to 10s by the failure above): not asked meanwhile.
            asked = len(a.queries)
            a.mode = "answer"
            clock.now += 9
            await ask(ups, make_query())
            assert len(a.queries) == asked

            # Backoff over: the next query probes a first, and a is healthy again.
            clock.now += 1
            await ask(ups, make_query())
            assert len(a.queries) == asked + 1
            assert [h.healthy for h in ups.health()] == [True, True]

    asyncio.run(main())


def test_all_down_raises_upstream_error_naming_each(fakes):
    udp_port, tcp_port = closed_port(), closed_port(socket.SOCK_STREAM)

    async def main():
        async with Upstreams(
            specs(f"udp://127.0.0.1:{udp_port}", f"tcp://127.0.0.1:{tcp_port}"), timeout=0.5
        ) as ups:
            with pytest.raises(UpstreamError) as err:
                await ups.query(make_query().to_wire())
            assert f"udp://127.0.0.1:{udp_port}" in str(err.value)
            assert f"tcp://127.0.0.1:{tcp_port}" in str(err.value)

    asyncio.run(main())


@pytest.mark.parametrize("proto", ["udp", "tcp"])
@pytest.mark.parametrize("mode", ["garbage", "cut", "trailing"])
def test_garbage_response_fails_over(fakes, proto, mode):
    # cut, trailing: header and question match; the flight's scan of the records finds the fault
    bad, good = fakes(mode), fakes()

    async def main():
        async with Upstreams(specs(bad.spec(proto), good.spec()), timeout=0.5) as ups:
            assert rdata(await ask(ups, make_query())) == ["93.184.216.34"]
            assert ups.health()[0].failures == 1

    asyncio.run(main())


def test_tcp_connection_dropped_fails_over(fakes):
    bad, good = fakes("drop_tcp"), fakes()

    async def main():
        async with Upstreams(specs(bad.spec("tcp"), good.spec()), timeout=0.5) as ups:
            assert rdata(await ask(ups, make_query())) == ["93.184.216.34"]
            assert ups.health()[0].failures == 1

    asyncio.run(main())


def test_servfail_is_an_answer_but_counts_as_an_error(fakes):
    up, other = fakes("servfail"), fakes()

    async def main():
        async with Upstreams(specs(up.spec(), other.spec()), timeout=0.5) as ups:
            r = await ask(ups, make_query(qid=9))
            assert r.id == 9 and r.rcode() == dns.rcode.SERVFAIL
            h = ups.health()[0]
            assert (h.healthy, h.failures, h.errors, h.queries) == (True, 0, 1, 1)

    asyncio.run(main())
    assert other.queries == []


def test_refused_fails_over(fakes):
    refusing, good = fakes("refused"), fakes()

    async def main():
        async with Upstreams(specs(refusing.spec(), good.spec()), timeout=0.5) as ups:
            r = await ask(ups, make_query())
            assert r.rcode() == dns.rcode.NOERROR and rdata(r) == ["93.184.216.34"]
            assert ups.health()[0].failures == 1

    asyncio.run(main())


# ---- merging identical queries ----


def test_identical_queries_in_flight_are_merged(fakes):
    up = fakes()
    up.delay = 0.2

    async def main():
        async with Upstreams(specs(up.spec()), timeout=0.5) as ups:
            names = ["example.com", "EXAMPLE.com"] * 5
            queries = [make_query(name, qid=100 + i) for i, name in enumerate(names)]
            answers = await asyncio.gather(*(ask(ups, q, KEY) for q in queries))
            for q, r in zip(queries, answers, strict=True):
                assert q.is_response(r) and r.question[0].name.to_text() == q.question[0].name.to_text()
                assert rdata(r) == ["93.184.216.34"]

    asyncio.run(main())
    assert len(up.queries) == 1


def test_merged_failure_reaches_every_waiter(fakes):
    up = fakes("stall")

    async def main():
        async with Upstreams(specs(up.spec()), timeout=0.3) as ups:
            results = await asyncio.gather(
                *(ups.query(make_query(qid=i).to_wire(), KEY) for i in range(10)), return_exceptions=True
            )
            assert all(isinstance(r, UpstreamError) for r in results)

    asyncio.run(main())
    assert len(up.queries) == 1


def test_different_question_under_one_key_is_not_merged(fakes):
    up = fakes()
    up.delay = 0.1

    async def main():
        async with Upstreams(specs(up.spec()), timeout=0.5) as ups:
            a, aaaa = await asyncio.gather(
                ask(ups, make_query("example.com", "A"), KEY),
                ask(ups, make_query("example.com", "AAAA"), KEY),
            )
            assert rdata(a) == ["93.184.216.34"]
            assert rdata(aaaa) == ["2606:2800:220:1:248:1893:25c8:1946"]

    asyncio.run(main())
    assert len(up.queries) == 2


def test_close_fails_queries_in_flight(fakes):
    up = fakes("stall")

    async def main():
        ups = Upstreams(specs(up.spec(), up.spec("tcp")), timeout=5.0)
        pending = asyncio.ensure_future(ups.query(make_query().to_wire()))
        assert await asyncio.to_thread(up.wait, lambda: len(up.queries) == 1)
        await ups.close()
        with pytest.raises(UpstreamError, match="closed"):
            await pending
        with pytest.raises(UpstreamError, match="closed"):
            await ups.query(make_query().to_wire())

    asyncio.run(main())


# ---- the response check never crashes ----

_GOOD = dns.message.make_response(make_query()).to_wire()
_QUESTION = _client_question(make_query().to_wire())[0]


@given(st.binary(max_size=600))
def test_classify_never_raises_on_random_bytes(data):
    assert _classify(data, 0x1234, _QUESTION, datagram=True) in range(4)
    assert _classify(b"\x12\x34" + data, 0x1234, _QUESTION, datagram=False) in range(4)


@given(st.integers(0, len(_GOOD)), st.binary(max_size=40), st.integers(0, len(_GOOD)))
def test_classify_never_raises_on_damaged_responses(at, junk, cut):
    damaged = (_GOOD[:at] + junk + _GOOD[at + len(junk) :])[: max(cut, 2)]
    assert _classify(damaged, 0x1234, _QUESTION, datagram=True) in range(4)


# ---- UpstreamSpec ----


@pytest.mark.parametrize(
    ("text", "expected", "canonical"),
    [
        ("9.9.9.9", UpstreamSpec("udp", "9.9.9.9", 53), "udp://9.9.9.9:53"),
        ("9.9.9.9:5353", UpstreamSpec("udp", "9.9.9.9", 5353), "udp://9.9.9.9:5353"),
        ("2001:db8::1", UpstreamSpec("udp", "2001:db8::1", 53), "udp://[2001:db8::1]:53"),
        ("udp://1.1.1.1:53", UpstreamSpec("udp", "1.1.1.1", 53), "udp://1.1.1.1:53"),
        ("tcp://[2001:db8::1]:53", UpstreamSpec("tcp", "2001:db8::1", 53), "tcp://[2001:db8::1]:53"),
        (" TCP://[2001:DB8:0::1] ", UpstreamSpec("tcp", "2001:db8::1", 53), "tcp://[2001:db8::1]:53"),
        (
            "tls://1.1.1.1#cloudflare-dns.com",
            UpstreamSpec("tls", "1.1.1.1", 853, "cloudflare-dns.com"),
            "tls://1.1.1.1:853#cloudflare-dns.com",
        ),
        (
            "tls://[2606:4700:4700::1111]:8853#One.One.One.One.",
            UpstreamSpec("tls", "2606:4700:4700::1111", 8853, "one.one.one.one"),
            "tls://[2606:4700:4700::1111]:8853#one.one.one.one",
        ),
    ],
)
def test_spec_parse_round_trips(text, expected, canonical):
    spec = UpstreamSpec.parse(text)
    assert spec == expected and str(spec) == canonical
    assert UpstreamSpec.parse(str(spec)) == spec


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("dns.google", "not an IP address"),
        ("udp://dns.google:53", "not an IP address"),
        ("https://1.1.1.1/dns-query", "DNS-over-HTTPS is not supported"),
        ("quic://1.1.1.1", "unknown scheme"),
        ("tls://1.1.1.1", "needs the name on its certificate"),
        ("tls://1.1.1.1#", "needs the name on its certificate"),
        ("tls://1.1.1.1#bad name", "not a host name"),
        ("udp://1.1.1.1#dns.example", "only applies to tls"),
        ("tcp://1.1.1.1:0", "between 1 and 65535"),
        ("tcp://1.1.1.1:65536", "between 1 and 65535"),
        ("tcp://1.1.1.1:abc", "not a number"),
        ("tcp://1.1.1.1:", "not a number"),
        ("tcp://[2001:db8::1", "missing ']'"),
        ("tcp://[2001:db8::1]53", "unexpected"),
        ("1.1.1.1:53:53", "not an IP address"),
        ("udp://1.1.1.1/x", "not an IP address"),
    ],
)
def test_spec_parse_rejects(text, message):
    with pytest.raises(ValueError, match=message) as err:
        UpstreamSpec.parse(text)
    assert "e.g. 9.9.9.9" in str(err.value)  # every error shows what a good one looks like


def test_spec_constructor_validates():
    with pytest.raises(ValueError, match="not an IP address"):
        UpstreamSpec("udp", "[::1]", 53)
    with pytest.raises(ValueError, match="unknown upstream protocol"):
        UpstreamSpec("doh", "1.1.1.1", 443)
    with pytest.raises(ValueError, match="between 1 and 65535"):
        UpstreamSpec("udp", "1.1.1.1", True)


def test_query_ids_come_from_the_kernel_csprng_buffered():
    from gateway.dns.upstream import _BufferedSystemRandom

    rng = _BufferedSystemRandom()
    ids = [rng.getrandbits(16) for _ in range(3 * 2048 + 5)]  # three refills of the 4 KiB pool, and some
    assert all(0 <= i < 65536 for i in ids)
    assert len(set(ids)) > 5000  # 6,149 draws from 65,536 values: ~5,870 distinct expected
    pools = [tuple(ids[i : i + 2048]) for i in range(0, 3 * 2048, 2048)]
    assert len(set(pools)) == 3  # each refill is fresh bytes, not the same pool again
    assert 0 <= rng.getrandbits(64) < 2**64 and 0.0 <= rng.random() < 1.0  # the rest is SystemRandom's
