"""The answer memo in front of the chain: a real UdpProtocol, real stages, a real upstream on loopback,
a fake clock; every replayed answer is compared with what the full chain says."""

from __future__ import annotations

import asyncio

import dns.message
import dns.rcode
from fakeupstream import FakeUpstream
from gatewayproc import DNS_LISTS, DNS_SCHOOL
from policyfactory import write_policy

from gateway.app import build_components
from gateway.dns.memo import HORIZON, RETIRE_SECONDS
from gateway.dns.server import UdpProtocol
from gateway.dns.stages.access import RelayWatch
from gateway.policy.compile import load_policy
from gateway.settings import DnsSettings, PolicySettings, RateLimit, Settings

RECORDS = {("example.com", "A"): ["93.184.216.34"], ("www.example.org", "A"): ["93.184.216.35"]}


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Transport:
    def __init__(self):
        self.sent: list[tuple[bytes, tuple]] = []

    def sendto(self, data, addr):
        self.sent.append((data, addr))

    def is_closing(self):
        return False


class Box:
    """A UdpProtocol wired as `run` wires it, plus a listener that records what metrics would see."""

    def __init__(self, tmp_path, upstream, trusted=True, **dns_kw):
        self.paths = write_policy(tmp_path, school=DNS_SCHOOL, lists=DNS_LISTS)
        dns_kw.setdefault("rate_limit", RateLimit(qps=0))
        self.settings = Settings(DnsSettings(upstreams=(upstream.spec(),), timeout=0.5, **dns_kw),
                                 PolicySettings(self.paths.department, self.paths.school, None))
        self.clock = Clock()
        self.comps = build_components(self.settings, load_policy(self.paths), clock_trusted=lambda: trusted,
                                      cache_clock=self.clock, cache_tick_phase=lambda: 0.0)  # exact TTLs
        self.memo = self.comps.memo
        self.seen: list[tuple[str | None, str, str]] = []  # (client, name, action)
        self.comps.observe.listeners.append(
            lambda req, s: self.seen.append((req.client, req.query.qname,
                                             req.decision.action.value if req.decision else "none")))
        self.transport = Transport()
        self.udp = UdpProtocol(self.comps.chain, self.memo)
        self.udp.connection_made(self.transport)

    async def ask(self, name, rtype="A", client="127.0.0.1", qid=None, wire=None) -> dns.message.Message:
        msg = dns.message.make_query(name, rtype, use_edns=0)
        if qid is not None:
            msg.id = qid
        data = wire or msg.to_wire()
        before = len(self.transport.sent)
        self.udp.datagram_received(data, (client, 5300))
        for _ in range(200):
            if len(self.transport.sent) > before:
                break
            await asyncio.sleep(0.005)
        assert len(self.transport.sent) == before + 1, "no answer sent"
        reply, addr = self.transport.sent[-1]
        assert addr == (client, 5300)
        return dns.message.from_wire(reply)


def run(coro):
    return asyncio.run(coro)


def test_a_cached_answer_is_replayed_with_the_clients_id_and_counted(tmp_path):
    with FakeUpstream(RECORDS) as up:
        box = Box(tmp_path, up)

        async def scenario():
            first = await box.ask("example.com", qid=1)  # upstream round trip: never memoised
            assert len(box.memo) == 0
            second = await box.ask("example.com", qid=2)  # a cache hit through the chain: memoised
            assert len(box.memo) == 1 and box.memo.hits == 0
            third = await box.ask("example.com", qid=3)  # replayed by the memo
            assert box.memo.hits == 1
            assert third.id == 3 and second.id == 2
            assert third.answer == second.answer == first.answer
            assert third.answer[0].ttl == second.answer[0].ttl
            await box.comps.upstreams.close()

        run(scenario())
        assert len(up.received) == 1
    # every query reached the listeners, memo hits included, with the address set while it is served
    assert box.seen == [("127.0.0.1", "example.com", "allow")] * 3


def test_ttls_still_count_down_through_the_memo(tmp_path):
    with FakeUpstream(RECORDS) as up:
        box = Box(tmp_path, up)

        async def scenario():
            await box.ask("example.com")
            await box.ask("example.com")
            box.clock.now += 0.5  # the same second of the cache entry's life: the memo's answer is right
            assert (await box.ask("example.com")).answer[0].ttl == 300
            hits = box.memo.hits
            box.clock.now += 0.6  # a TTL tick: the memo entry has expired, the chain answers 299
            assert (await box.ask("example.com")).answer[0].ttl == 299
            assert box.memo.hits == hits
            assert (await box.ask("example.com")).answer[0].ttl == 299  # and that is memoised again
            assert box.memo.hits == hits + 1
            box.clock.now += 120
            assert (await box.ask("example.com")).answer[0].ttl == 179
            await box.comps.upstreams.close()

        run(scenario())


def test_blocks_are_memoised_for_their_group_only(tmp_path):
    with FakeUpstream(RECORDS) as up:
        box = Box(tmp_path, up)

        async def scenario():
            up.records[("facebook.com", "A")] = ["157.240.1.35"]
            for _ in range(3):
                r = await box.ask("facebook.com", client="127.0.0.2")  # primary: social blocked (null answer)
                assert [a.to_text() for a in r.answer[0]] == ["0.0.0.0"]
            assert box.memo.hits == 1  # kept on its second answer (the first only marks it as asked)
            for _ in range(3):  # staff: the same query bytes, another group: never the primary's answer
                r = await box.ask("facebook.com", client="127.0.0.4")
                assert [a.to_text() for a in r.answer[0]] == ["157.240.1.35"]
            assert box.memo.hits == 2  # staff's own cached answer, memoised on its second ask
            box.clock.now += HORIZON + 1  # even a fixed block is re-judged now and then
            await box.ask("facebook.com", client="127.0.0.2")
            assert box.memo.hits == 2
            await box.comps.upstreams.close()

        run(scenario())


def test_a_schedule_block_is_rejudged_every_second(tmp_path):
    with FakeUpstream(RECORDS) as up:
        box = Box(tmp_path, up, trusted=False)  # clock not trusted: every restriction is in force

        async def scenario():
            await box.ask("facebook.com")  # thcs restricts social during school hours
            await box.ask("facebook.com")
            r = await box.ask("facebook.com")
            assert r.rcode() == dns.rcode.NXDOMAIN and box.memo.hits == 1
            box.clock.now += 1.01
            await box.ask("facebook.com")
            assert box.memo.hits == 1  # judged afresh
            await box.comps.upstreams.close()

        run(scenario())


def test_a_new_policy_retires_every_memoised_answer_within_a_second(tmp_path):
    with FakeUpstream(RECORDS) as up:
        box = Box(tmp_path, up)

        async def scenario():
            await box.ask("www.example.org")
            await box.ask("www.example.org")
            await box.ask("www.example.org")
            assert box.memo.hits == 1
            (box.paths.school).write_text(DNS_SCHOOL.replace("deny: [denied.test]",
                                                             "deny: [denied.test, www.example.org]"))
            box.comps.holder.swap(load_policy(box.paths))
            box.clock.now += RETIRE_SECONDS
            r = await box.ask("www.example.org")
            assert r.rcode() == dns.rcode.NXDOMAIN  # the school's new deny, not the memoised answer
            assert box.memo.hits == 1
            await box.comps.upstreams.close()

        run(scenario())


def test_after_a_swap_the_previous_entries_retire_one_by_one(tmp_path):
    """Every popular name going back through the chain at the swap was the one stall left in a reload
    under load: the previous snapshot's entries retire over RETIRE_SECONDS, each at its own moment."""
    names = [f"n{i}.example.org" for i in range(40)]
    with FakeUpstream(RECORDS) as up:
        box = Box(tmp_path, up)
        up.records.update({(name, "A"): ["192.0.2.9"] for name in names})  # allowed, they resolve
        denied = DNS_SCHOOL.replace("deny: [denied.test]", f"deny: [denied.test, {', '.join(names)}]")
        box.paths.school.write_text(denied)
        box.comps.holder.swap(load_policy(box.paths))

        async def scenario():
            for name in names:
                for _ in range(2):
                    assert (await box.ask(name)).rcode() == dns.rcode.NXDOMAIN  # the school's deny: memoised
            box.paths.school.write_text(DNS_SCHOOL)  # the deny is lifted
            box.comps.holder.swap(load_policy(box.paths))
            first = [(await box.ask(name)).rcode() for name in names]  # noticed here: retirement starts
            box.clock.now += RETIRE_SECONDS / 2
            half = [(await box.ask(name)).rcode() for name in names]
            box.clock.now += RETIRE_SECONDS / 2
            after = [(await box.ask(name)).rcode() for name in names]
            await box.comps.upstreams.close()
            return first, half, after

        first, half, after = run(scenario())
    old = dns.rcode.NXDOMAIN
    assert first.count(old) >= half.count(old)  # retiring, never coming back
    assert 5 <= half.count(old) <= 35  # about half are still the old answer halfway through
    assert old not in after  # all retired: the lifted deny is in force for every name
    assert all(a == old or b != old for a, b in zip(first, half, strict=True))  # retired stays retired


def test_the_rate_limit_still_applies_to_memo_hits(tmp_path):
    with FakeUpstream(RECORDS) as up:
        box = Box(tmp_path, up, rate_limit=RateLimit(qps=0.001, burst=4))

        async def scenario():
            for _ in range(4):
                await box.ask("porn.example")
            assert box.memo.hits == 2  # a block is memoised on its second answer
            sent = len(box.transport.sent)
            box.udp.datagram_received(dns.message.make_query("porn.example", "A", use_edns=0).to_wire(),
                                      ("127.0.0.1", 5300))
            assert len(box.transport.sent) == sent  # dropped, like the chain drops it
            assert box.comps.access.limited == 1
            await box.comps.upstreams.close()

        run(scenario())


def test_spelling_and_edns_are_part_of_the_key(tmp_path):
    with FakeUpstream(RECORDS) as up:
        box = Box(tmp_path, up)

        async def scenario():
            await box.ask("example.com")
            await box.ask("example.com")
            mixed = await box.ask("ExAmPle.CoM")  # 0x20: its own entry, its own spelling back
            assert mixed.question[0].name.to_text() == "ExAmPle.CoM."
            plain = dns.message.make_query("example.com", "A", use_edns=False)
            r = await box.ask("example.com", wire=plain.to_wire())
            assert r.edns == -1  # no OPT for a client that sent none, never the memoised EDNS answer
            assert box.memo.hits == 0
            await box.comps.upstreams.close()

        run(scenario())


def test_failures_and_stale_answers_are_never_memoised(tmp_path):
    with FakeUpstream(RECORDS) as up:
        box = Box(tmp_path, up)

        async def scenario():
            up.mode = "stall"
            assert (await box.ask("example.com")).rcode() == dns.rcode.SERVFAIL
            assert (await box.ask("example.com")).rcode() == dns.rcode.SERVFAIL
            assert len(box.memo) == 0
            up.mode = "answer"
            await box.ask("example.com")
            await box.ask("example.com")
            assert len(box.memo) == 1
            box.clock.now += 400  # expired in cache and memo; the upstream is down: stale is served
            up.mode = "stall"
            stale = await box.ask("example.com")
            assert stale.answer[0].ttl == 30
            await box.ask("example.com")
            assert box.memo.hits == 0
            await box.comps.upstreams.close()

        run(scenario())


def test_the_memo_is_bounded(tmp_path):
    with FakeUpstream(RECORDS) as up:
        box = Box(tmp_path, up)
        box.memo.max_entries = 5

        async def scenario():
            for i in range(20):
                await box.ask(f"x{i}.porn.example")
                await box.ask(f"x{i}.porn.example")  # asked again: kept
            assert 0 < len(box.memo) <= 5
            await box.comps.upstreams.close()

        run(scenario())


def test_names_asked_again_survive_a_flood_of_names_asked_once(tmp_path):
    """Eviction gives replayed entries a second chance: one-off names (a scan of a block list, random
    tracker subdomains) must not push out what devices keep asking for."""
    with FakeUpstream(RECORDS) as up:
        box = Box(tmp_path, up)
        box.memo.max_entries = 40
        popular = [f"p{i}.porn.example" for i in range(8)]

        async def scenario():
            for name in popular:
                await box.ask(name)
                await box.ask(name)
            before = box.memo.hits
            for i in range(200):
                for _ in range(2):  # asked twice (so memoised), never again: never replayed
                    await box.ask(f"once{i}.porn.example")
                await box.ask(popular[i % len(popular)])
            assert box.memo.hits - before == 200  # every popular query was a replay, none re-judged
            assert len(box.memo) <= 40
            await box.comps.upstreams.close()

        run(scenario())


def test_an_eviction_always_makes_room_even_when_everything_was_replayed(tmp_path):
    with FakeUpstream(RECORDS) as up:
        box = Box(tmp_path, up)
        box.memo.max_entries = 8

        async def scenario():
            for i in range(40):
                name = f"n{i}.porn.example"
                await box.ask(name)
                await box.ask(name)  # every entry replayed before the next insert
                assert len(box.memo) <= 8
            await box.comps.upstreams.close()

        run(scenario())


def test_the_relay_watch_still_notices_a_single_source():
    clock = Clock()
    watch = RelayWatch(window=10, min_queries=500, clock=clock)
    for i in range(2000):
        watch.see("192.168.1.1")
        if i % 100 == 0:
            clock.now += 1
    assert watch.single_source
    for i in range(2000):
        watch.see(f"192.168.1.{i % 50}")
        if i % 100 == 0:
            clock.now += 1
    assert not watch.single_source


def test_a_replay_shows_listeners_the_decision_the_chain_made(tmp_path):
    fields = ("action", "reason", "group", "band", "category", "rule", "source", "matched", "rewrite_to", "engine",
              "response", "garden")
    with FakeUpstream(RECORDS) as up:
        box = Box(tmp_path, up)
        seen = []
        box.comps.observe.listeners.append(
            lambda req, s: seen.append((req.group.id, req.query.qname, req.query.qtype,
                                        tuple(getattr(req.decision, f) for f in fields))))

        async def scenario():
            for _ in range(3):
                await box.ask("x.casino.example", client="127.0.0.2")  # a block (null answer for primary)
                await box.ask("www.google.com", "AAAA")  # safe search rewrite, once cached
            await box.comps.upstreams.close()

        up.records[("forcesafesearch.google.com", "AAAA")] = ["2001:db8::1"]
        up.records[("restrictmoderate.youtube.com", "A")] = ["192.0.2.1"]
        run(scenario())
    assert box.memo.hits >= 2
    blocks = [s for s in seen if s[1] == "x.casino.example"]
    rewrites = [s for s in seen if s[1] == "www.google.com"]
    assert len(blocks) == 3 and blocks[1] == blocks[2] and blocks[1][3][0].value == "block"
    assert len(rewrites) == 3 and rewrites[1] == rewrites[2] and rewrites[1][3][0].value == "rewrite"


def test_entries_are_atoms_the_collector_lets_go_of(tmp_path):
    """Memo churn must not fill the oldest generation: an entry keeps no object alive."""
    import gc

    with FakeUpstream(RECORDS) as up:
        box = Box(tmp_path, up)

        async def scenario():
            for i in range(10):
                await box.ask(f"n{i}.porn.example")
                await box.ask(f"n{i}.porn.example")
            await box.comps.upstreams.close()

        gc.collect()
        gc.freeze()  # what the chain made while answering sits where no collection looks
        try:
            run(scenario())
            gc.collect(0)  # one young collection must let go of every entry
            entries = [e for table in box.memo._by_group.values() for e in table.values()]
            tracked = [e for e in entries if gc.is_tracked(e)]
        finally:
            gc.unfreeze()
    assert len(entries) == 10
    assert not tracked


def test_an_answer_is_kept_only_when_its_query_comes_again(tmp_path):
    """The doorkeeper: most names are asked once, and storing each of them would cost more than the
    memo saves. An upstream round trip counts as having been asked."""
    with FakeUpstream(RECORDS) as up:
        box = Box(tmp_path, up)

        async def scenario():
            await box.ask("once.porn.example")
            assert len(box.memo) == 0  # a block asked once: judged, answered, not kept
            await box.ask("twice.porn.example")
            await box.ask("twice.porn.example")
            assert len(box.memo) == 1 and box.memo.hits == 0
            await box.ask("twice.porn.example")
            assert box.memo.hits == 1
            await box.ask("example.com")  # the upstream round trip marks it
            await box.ask("example.com")  # so its first cache hit is kept
            assert len(box.memo) == 2
            await box.comps.upstreams.close()

        run(scenario())


def test_entries_remembered_together_expire_apart(tmp_path):
    """After a reload the memo refills in one burst; were every block to expire HORIZON later at one
    instant, all of them would go back through the chain at once. A random part of the last quarter
    of the horizon is cut off each entry (never added)."""
    with FakeUpstream(RECORDS) as up:
        box = Box(tmp_path, up)

        async def scenario():
            for i in range(20):
                for _ in range(2):
                    await box.ask(f"b{i}.porn.example")
            await box.comps.upstreams.close()

        run(scenario())
    untils = [e[1] for table in box.memo._by_group.values() for e in table.values()]
    assert len(untils) == 20 and len(set(untils)) > 10
    assert all(box.clock.now + 0.75 * HORIZON <= u <= box.clock.now + HORIZON for u in untils)
