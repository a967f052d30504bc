"""The assembled DNS chain in-process (real stages, a real upstream on loopback, a fake clock)."""

from __future__ import annotations

import asyncio
import dataclasses

import dns.message
import dns.rcode
import dns.rdatatype
import pytest
from fakeupstream import FakeUpstream
from gatewayproc import DNS_LISTS, DNS_SCHOOL
from policyfactory import write_policy

from gateway.app import CHAIN_ORDER, build_components
from gateway.dns.stages import Request
from gateway.dns.wire import parse_query
from gateway.policy.compile import load_policy
from gateway.settings import DnsSettings, PolicySettings, Settings


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def make(tmp_path, upstream_specs, bootstrap=(), trusted=True, **dns_kw):
    paths = write_policy(tmp_path, school=DNS_SCHOOL, lists=DNS_LISTS)
    settings = Settings(DnsSettings(upstreams=tuple(upstream_specs), bootstrap=tuple(bootstrap), timeout=0.3,
                                    **dns_kw),
                        PolicySettings(paths.department, paths.school, None))
    clock = Clock()
    comps = build_components(settings, load_policy(paths), clock_trusted=lambda: trusted, cache_clock=clock)
    return comps, clock


async def ask(comps, name, rtype="A", client="127.0.0.1", edns=True):
    wire = dns.message.make_query(name, rtype, use_edns=0 if edns else False).to_wire()
    q = parse_query(wire)
    result = comps.chain.run(Request(q, client, 5300, "udp"))
    if not isinstance(result, bytes):
        result = await result
    return dns.message.from_wire(result)


def run(coro):
    return asyncio.run(coro)


def test_chain_order_is_pinned(tmp_path):
    with FakeUpstream() as up:
        comps, _ = make(tmp_path, [up.spec()])
        assert comps.chain.names == CHAIN_ORDER == ("observe", "access", "local", "policy", "cache", "upstream")


def test_serve_stale_while_upstreams_are_down_then_servfail(tmp_path):
    with FakeUpstream({("example.com", "A"): ["93.184.216.34"]}) as up:
        comps, clock = make(tmp_path, [up.spec()])

        async def scenario():
            first = await ask(comps, "example.com")
            assert first.answer[0].ttl == 300
            clock.now += 100
            assert (await ask(comps, "example.com")).answer[0].ttl == 200  # counts down in the cache
            clock.now += 400  # expired
            up.mode = "stall"
            stale = await ask(comps, "example.com")
            assert [r.to_text() for r in stale.answer[0]] == ["93.184.216.34"]
            assert stale.answer[0].ttl == 30  # RFC 8767 stale answer TTL
            clock.now += 86400 + 10  # past the serve-stale window
            assert (await ask(comps, "example.com")).rcode() == dns.rcode.SERVFAIL
            await comps.upstreams.close()

        run(scenario())
    assert comps.upstream.stale_served == 1


def test_no_opt_for_clients_without_edns(tmp_path):
    with FakeUpstream({("example.com", "A"): ["93.184.216.34"]}) as up:
        comps, _ = make(tmp_path, [up.spec()])

        async def scenario():
            plain = await ask(comps, "example.com", edns=False)
            assert plain.edns == -1 and plain.answer
            with_edns = await ask(comps, "example.com")
            assert with_edns.answer
            await comps.upstreams.close()

        run(scenario())


def test_ech_removed_for_children_kept_for_staff(tmp_path):
    records = {("ech.test", "HTTPS"): ["1 . alpn=h2 echconfig=AAT+DQAA"]}
    with FakeUpstream(records) as up:
        comps, _ = make(tmp_path, [up.spec()])

        async def scenario():
            child = await ask(comps, "ech.test", "HTTPS")
            staff = await ask(comps, "ech.test", "HTTPS", client="127.0.0.4")
            await comps.upstreams.close()
            return child, staff

        child, staff = run(scenario())
    assert child.answer and "echconfig" not in child.answer[0].to_text() and "ech=" not in child.answer[0].to_text()
    assert "alpn" in child.answer[0].to_text()
    assert "ech" in staff.answer[0].to_text()


def test_time_servers_use_plain_bootstrap_until_clock_is_synchronised(tmp_path):
    with FakeUpstream({("pool.ntp.org", "A"): ["192.0.2.123"]}) as main, \
            FakeUpstream({("pool.ntp.org", "A"): ["192.0.2.123"]}) as boot:
        comps, _ = make(tmp_path, [main.spec()], bootstrap=[boot.spec()], trusted=False)

        async def scenario():
            r = await ask(comps, "pool.ntp.org")
            assert r.answer
            await ask(comps, "other.test")
            await comps.upstreams.close()
            for extra in comps.extra_upstreams:
                await extra.close()

        run(scenario())
    assert [q[0] for q in boot.queries] == ["pool.ntp.org"]
    assert [q[0] for q in main.queries] == ["other.test"]


def test_prefetch_refreshes_popular_names(tmp_path):
    with FakeUpstream({("popular.test", "A"): ["192.0.2.5"]}) as up:
        comps, clock = make(tmp_path, [up.spec()])

        async def scenario():
            for _ in range(4):
                await ask(comps, "popular.test")
            clock.now += 280  # within the last 10% of the TTL
            await ask(comps, "popular.test")
            await asyncio.gather(*comps.upstream._background)
            await comps.upstreams.close()

        run(scenario())
    assert len(up.queries) == 2  # the first miss and one background refresh


def test_in_flight_queries_are_merged(tmp_path):
    with FakeUpstream({("slow.test", "A"): ["192.0.2.6"]}) as up:
        up.delay = 0.1
        comps, _ = make(tmp_path, [up.spec()])

        async def scenario():
            results = await asyncio.gather(*(ask(comps, "slow.test") for _ in range(10)))
            await comps.upstreams.close()
            return results

        results = run(scenario())
    assert all(r.answer for r in results)
    assert len(up.queries) == 1


@pytest.mark.parametrize("mode", ["nxdomain", "null", "blockpage"])
def test_block_response_modes(tmp_path, mode):
    with FakeUpstream() as up:
        comps, _ = make(tmp_path, [up.spec()], blockpage_v4="10.0.0.80", blockpage_v6="fd00::80")
        snap = comps.holder.current
        from gateway.core.model import BlockResponse

        band = dataclasses.replace(snap.bands["thcs"], response=BlockResponse(mode))
        groups = {gid: dataclasses.replace(g, band=band) if g.band.id == "thcs" else g
                  for gid, g in snap.groups.items()}
        comps.holder.swap(dataclasses.replace(snap, groups=groups))

        async def scenario():
            r = await ask(comps, "casino.example")
            await comps.upstreams.close()
            return r

        r = run(scenario())
    if mode == "nxdomain":
        assert r.rcode() == dns.rcode.NXDOMAIN and r.authority[0].rdtype == dns.rdatatype.SOA
    elif mode == "null":
        assert [x.to_text() for x in r.answer[0]] == ["0.0.0.0"]
    else:
        assert [x.to_text() for x in r.answer[0]] == ["10.0.0.80"]
    assert up.queries == []


def test_failed_lookups_leave_no_reference_cycles(tmp_path):
    """An exception kept alive by a future in its own traceback's frame makes a cycle per failed query;
    under an upstream outage the collector would then pause serving to clear thousands of them."""
    import gc

    with FakeUpstream() as up:
        comps, _ = make(tmp_path, [up.spec()])
        up.mode = "refused"

        async def scenario():
            for i in range(20):
                assert (await ask(comps, f"n{i}.example.net")).rcode() == dns.rcode.SERVFAIL
            await comps.upstreams.close()

        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            run(scenario())
            gc.collect()
            cyclic = [o for o in gc.garbage if type(o).__name__ in ("UpstreamError", "Request", "Future")]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
        assert cyclic == []
