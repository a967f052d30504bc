import struct
from collections import OrderedDict

import dns.flags
import dns.message
import dns.rcode
import pytest
from dnslib import CNAME, EDNS0, QTYPE, RCODE, RR, SOA, A, DNSRecord
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.dns.cache import Cache, CacheHit, Freshness


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _skip_name(wire: bytes, pos: int) -> int:
    while True:
        length = wire[pos]
        if length & 0xC0 == 0xC0:
            return pos + 2
        pos += 1 + length
        if length == 0:
            return pos


def ttl_offsets(wire: bytes) -> list[int]:
    """Offsets of every RR TTL field, skipping OPT (its TTL field carries EDNS flags)."""
    qd, an, ns, ar = struct.unpack_from(">4H", wire, 4)
    pos = 12
    for _ in range(qd):
        pos = _skip_name(wire, pos) + 4
    offsets = []
    for _ in range(an + ns + ar):
        pos = _skip_name(wire, pos)
        rtype, _rclass, _ttl, rdlength = struct.unpack_from(">HHIH", wire, pos)
        if rtype != QTYPE.OPT:
            offsets.append(pos + 4)
        pos += 10 + rdlength
    assert pos == len(wire)
    return offsets


def a_answer(name: str = "example.com", ttls: tuple[int, ...] = (300, 300), qid: int = 7) -> bytes:
    reply = DNSRecord.question(name, "A").reply()
    reply.header.id = qid
    for i, ttl in enumerate(ttls):
        reply.add_answer(RR(name, QTYPE.A, rdata=A(f"192.0.2.{i + 1}"), ttl=ttl))
    return reply.pack()


def cname_answer() -> bytes:
    reply = DNSRecord.question("www.example.com", "A").reply()
    reply.add_answer(RR("www.example.com", QTYPE.CNAME, rdata=CNAME("cdn.example.net"), ttl=3600))
    reply.add_answer(RR("cdn.example.net", QTYPE.A, rdata=A("198.51.100.9"), ttl=300))
    return reply.pack()


def nxdomain_answer() -> bytes:
    reply = DNSRecord.question("nope.example.com", "A").reply()
    reply.header.rcode = RCODE.NXDOMAIN
    soa = SOA("ns1.example.com", "hostmaster.example.com", (2024010101, 7200, 900, 1209600, 3600))
    reply.add_auth(RR("example.com", QTYPE.SOA, rdata=soa, ttl=3600))
    return reply.pack()


def ttls_of(packet: bytes) -> list[int]:
    """Every TTL as dnspython reads it, answer section then authority."""
    msg = dns.message.from_wire(packet)
    return [rrset.ttl for rrset in msg.answer + msg.authority]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_offsets_walker_finds_every_ttl():
    wire = cname_answer()
    assert [struct.unpack_from(">I", wire, off)[0] for off in ttl_offsets(wire)] == [3600, 300]


def test_ttls_count_down_and_id_is_set_per_request(clock):
    cache = Cache(clock=clock)
    wire = a_answer(ttls=(300, 300), qid=7)
    cache.put("k", wire, ttl_offsets(wire), 300)
    hit = cache.get("k", 0x1234)
    assert isinstance(hit, CacheHit) and hit.freshness is Freshness.FRESH and not hit.prefetch
    msg = dns.message.from_wire(hit.packet)
    assert msg.id == 0x1234
    assert [str(r) for r in msg.answer[0]] == ["192.0.2.1", "192.0.2.2"]
    assert ttls_of(hit.packet) == [300]
    clock.advance(10.7)  # whole seconds only: 10 s spent
    hit = cache.get("k", 0xBEEF)
    assert dns.message.from_wire(hit.packet).id == 0xBEEF
    assert ttls_of(hit.packet) == [290]
    clock.advance(289)
    assert ttls_of(cache.get("k", 1).packet) == [1]


def test_stored_packet_is_not_modified_by_hits(clock):
    cache = Cache(clock=clock)
    wire = a_answer()
    cache.put("k", wire, ttl_offsets(wire), 300)
    clock.advance(100)
    cache.get("k", 1)
    clock.advance(-100)
    assert ttls_of(cache.get("k", 2).packet) == [300]
    clock.advance(-50)  # a clock stepping back never raises TTLs above the stored ones
    assert ttls_of(cache.get("k", 3).packet) == [300]


def test_only_id_and_ttl_bytes_change(clock):
    request = DNSRecord.question("example.com", "A")
    reply = request.reply()
    reply.add_answer(RR("example.com", QTYPE.A, rdata=A("192.0.2.1"), ttl=300))
    reply.add_ar(EDNS0(udp_len=1232, flags="do"))
    wire = reply.pack()
    offsets = ttl_offsets(wire)
    assert len(offsets) == 1  # the OPT record is left out
    cache = Cache(clock=clock)
    cache.put("k", wire, offsets, 300)
    clock.advance(42)
    out = cache.get("k", 0xABCD).packet
    assert len(out) == len(wire)
    changed = {i for i in range(len(wire)) if out[i] != wire[i]}
    assert changed <= {0, 1, *range(offsets[0], offsets[0] + 4)}
    msg = dns.message.from_wire(out)
    assert msg.edns == 0 and msg.payload == 1232 and msg.ednsflags & dns.flags.DO
    assert msg.answer[0].ttl == 258


def test_no_ttl_outlives_the_entry(clock):
    cache = Cache(clock=clock)
    wire = cname_answer()
    # The caller passes the answer's lowest TTL: the CNAME's 3600 is cut to the entry's lifetime.
    cache.put("k", wire, ttl_offsets(wire), 300)
    clock.advance(100)
    assert ttls_of(cache.get("k", 1).packet) == [200, 200]


def test_max_ttl_clamps(clock):
    cache = Cache(max_ttl=100, clock=clock)
    wire = a_answer(ttls=(300,))
    cache.put("k", wire, ttl_offsets(wire), 300)
    assert ttls_of(cache.get("k", 1).packet) == [100]
    clock.advance(90)
    assert ttls_of(cache.get("k", 1).packet) == [10]
    clock.advance(10)
    assert cache.get("k", 1) is None


def test_min_ttl_raises_lifetime_and_reports_remaining_lifetime(clock):
    cache = Cache(min_ttl=600, stale_for=0, clock=clock)
    wire = a_answer(ttls=(300,))
    cache.put("k", wire, ttl_offsets(wire), 300)
    assert ttls_of(cache.get("k", 1).packet) == [600]
    clock.advance(400)  # past the record's own 300 s: still served, with the lifetime left, not 0
    hit = cache.get("k", 1)
    assert hit.freshness is Freshness.FRESH and ttls_of(hit.packet) == [200]
    clock.advance(200)
    assert cache.get("k", 1) is None


def test_min_ttl_also_raises_zero_ttl(clock):
    cache = Cache(min_ttl=30, clock=clock)
    wire = a_answer(ttls=(0,))
    cache.put("k", wire, ttl_offsets(wire), 0)
    assert ttls_of(cache.get("k", 1).packet) == [30]


def test_negative_answers_are_capped(clock):
    cache = Cache(negative_ttl=300, stale_for=0, clock=clock)
    wire = nxdomain_answer()
    cache.put("nx", wire, ttl_offsets(wire), 3600, negative=True)
    hit = cache.get("nx", 9)
    msg = dns.message.from_wire(hit.packet)
    assert msg.rcode() == dns.rcode.NXDOMAIN
    assert ttls_of(hit.packet) == [300]  # the SOA's 3600 cut to the negative lifetime
    clock.advance(299)
    assert ttls_of(cache.get("nx", 9).packet) == [1]
    clock.advance(1)
    assert cache.get("nx", 9) is None


def test_negative_ttl_none_uses_negative_ttl_and_lower_ttl_is_kept(clock):
    cache = Cache(negative_ttl=300, min_ttl=600, clock=clock)
    wire = nxdomain_answer()
    cache.put("a", wire, ttl_offsets(wire), None, negative=True)
    cache.put("b", wire, ttl_offsets(wire), 60, negative=True)  # min_ttl is not applied to negatives
    assert ttls_of(cache.get("a", 1).packet) == [300]
    assert ttls_of(cache.get("b", 1).packet) == [60]


def test_ttl_zero_is_not_stored_and_drops_an_older_copy(clock):
    cache = Cache(clock=clock)
    wire = a_answer()
    cache.put("k", a_answer(ttls=(0,)), ttl_offsets(a_answer(ttls=(0,))), 0)
    assert len(cache) == 0 and cache.get("k", 1) is None
    cache.put("k", wire, ttl_offsets(wire), 300)
    cache.put("k", wire, ttl_offsets(wire), 0)
    assert len(cache) == 0
    cache.put("n", nxdomain_answer(), ttl_offsets(nxdomain_answer()), 0, negative=True)
    cache.put("p", wire, ttl_offsets(wire), None)  # a positive answer without a TTL is not cacheable
    assert len(cache) == 0
    assert cache.stats()["inserts"] == 1


def test_top_bit_ttl_counts_as_zero(clock):
    wire = bytearray(a_answer(ttls=(300, 300)))
    offsets = ttl_offsets(bytes(wire))
    struct.pack_into(">I", wire, offsets[1], 0x80000000)
    cache = Cache(clock=clock)
    cache.put("k", bytes(wire), offsets, 300)
    out = cache.get("k", 1).packet
    assert [struct.unpack_from(">I", out, off)[0] for off in offsets] == [300, 0]


def test_expiry_without_allow_stale(clock):
    cache = Cache(clock=clock)
    wire = a_answer()
    cache.put("k", wire, ttl_offsets(wire), 300)
    clock.advance(299.9)
    assert cache.get("k", 1).freshness is Freshness.FRESH
    clock.advance(0.1)
    assert cache.get("k", 1) is None
    assert len(cache) == 1  # kept: it may still be served stale


def test_stale_served_within_window_and_not_after(clock):
    cache = Cache(stale_for=86400, stale_answer_ttl=30, clock=clock)
    wire = cname_answer()
    cache.put("k", wire, ttl_offsets(wire), 300)
    clock.advance(300)
    hit = cache.get("k", 0x4242, allow_stale=True)
    assert hit.freshness is Freshness.STALE and not hit.prefetch
    assert dns.message.from_wire(hit.packet).id == 0x4242
    assert ttls_of(hit.packet) == [30, 30]
    clock.advance(86399)
    assert cache.get("k", 1, allow_stale=True).freshness is Freshness.STALE
    clock.advance(1)
    assert cache.get("k", 1, allow_stale=True) is None
    assert len(cache) == 0
    assert cache.stats()["expired"] == 1


def test_stale_disabled(clock):
    cache = Cache(stale_for=0, clock=clock)
    wire = a_answer()
    cache.put("k", wire, ttl_offsets(wire), 300)
    clock.advance(300)
    assert cache.get("k", 1, allow_stale=True) is None
    assert len(cache) == 0


def test_prefetch_raised_once_for_popular_entry_near_expiry(clock):
    cache = Cache(prefetch_hits=3, prefetch_ratio=0.1, clock=clock)
    wire = a_answer()
    cache.put("k", wire, ttl_offsets(wire), 300)
    assert [cache.get("k", 1).prefetch for _ in range(3)] == [False] * 3  # popular, but not near expiry
    clock.advance(269)
    assert cache.get("k", 1).prefetch is False
    clock.advance(1)  # last 10 % of 300 s
    assert cache.get("k", 1).prefetch is True
    assert [cache.get("k", 1).prefetch for _ in range(3)] == [False] * 3
    cache.put("k", wire, ttl_offsets(wire), 300)  # the refresh starts a new entry
    clock.advance(280)
    assert [cache.get("k", 1).prefetch for _ in range(3)] == [False, False, True]


def test_no_prefetch_for_unpopular_entry(clock):
    cache = Cache(prefetch_hits=3, clock=clock)
    wire = a_answer()
    cache.put("k", wire, ttl_offsets(wire), 300)
    clock.advance(290)
    assert cache.get("k", 1).prefetch is False
    clock.advance(10)
    assert cache.get("k", 1, allow_stale=True).prefetch is False


def test_lru_eviction_order(clock):
    cache = Cache(max_entries=2, clock=clock)
    wire = a_answer()
    offsets = ttl_offsets(wire)
    cache.put("a", wire, offsets, 300)
    cache.put("b", wire, offsets, 300)
    assert cache.get("a", 1) is not None  # "a" is now the most recently used
    cache.put("c", wire, offsets, 300)
    assert cache.get("b", 1) is None
    assert cache.get("a", 1) is not None and cache.get("c", 1) is not None
    cache.put("a", wire, offsets, 300)  # re-putting refreshes recency too
    cache.put("d", wire, offsets, 300)
    assert cache.get("c", 1) is None and cache.get("a", 1) is not None
    assert len(cache) == 2
    assert cache.stats()["evictions"] == 2


def test_stats_and_clear(clock):
    cache = Cache(clock=clock)
    wire = a_answer()
    offsets = ttl_offsets(wire)
    cache.put("a", wire, offsets, 300)
    cache.put("b", wire, offsets, 300)
    cache.get("a", 1)
    cache.get("a", 1)
    cache.get("zzz", 1)
    clock.advance(300)
    cache.get("b", 1)
    cache.get("b", 1, allow_stale=True)
    assert cache.stats() == {"hits": 2, "misses": 2, "stale_hits": 1, "entries": 2, "evictions": 0,
                             "expired": 0, "inserts": 2}
    cache.clear()
    assert len(cache) == 0 and cache.stats()["entries"] == 0 and cache.stats()["hits"] == 2


def test_rejects_bad_offsets_and_settings(clock):
    cache = Cache(clock=clock)
    wire = a_answer()
    for bad in ([0], [len(wire) - 3], [-1]):
        with pytest.raises(ValueError):
            cache.put("k", wire, bad, 300)
    with pytest.raises(ValueError):
        cache.put("k", b"\x00" * 11, [], 300)
    for kwargs in ({"max_entries": 0}, {"min_ttl": 10, "max_ttl": 5}, {"stale_for": -1},
                   {"prefetch_ratio": 1.5}):
        with pytest.raises(ValueError):
            Cache(**kwargs)


# Property: a reference model of presence (LRU, expiry, stale window) and bounds on every TTL.
_KEYS = st.sampled_from(["a", "b", "c"])
_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("put"), _KEYS, st.lists(st.integers(0, 4000), min_size=1, max_size=3),
                  st.one_of(st.none(), st.integers(-5, 4000)), st.booleans()),
        st.tuples(st.just("get"), _KEYS, st.integers(0, 0xFFFF), st.booleans()),
        # Whole seconds land on expiry and stale-window boundaries exactly; floats cover the rest.
        st.tuples(st.just("advance"), st.one_of(st.sampled_from([1, 59, 60, 120, 300, 500]),
                                                st.floats(0, 2000, allow_nan=False, allow_infinity=False))),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(min_ttl=st.sampled_from([0, 60]), max_ttl=st.sampled_from([120, 86400]),
       negative_ttl=st.sampled_from([0, 300]), stale_for=st.sampled_from([0, 500]),
       max_entries=st.integers(1, 3), ops=_OPS)
def test_property_never_fresh_when_expired_never_above_original(min_ttl, max_ttl, negative_ttl, stale_for,
                                                                 max_entries, ops):
    clock = FakeClock(0.0)
    cache = Cache(max_entries=max_entries, min_ttl=min_ttl, max_ttl=max_ttl, negative_ttl=negative_ttl,
                  stale_for=stale_for, clock=clock)
    model: OrderedDict[str, tuple[list[int], list[int], float, int, bool]] = OrderedDict()
    for op in ops:
        if op[0] == "advance":
            clock.advance(op[1])
        elif op[0] == "put":
            _, key, record_ttls, ttl, negative = op
            wire = a_answer(ttls=tuple(record_ttls))
            offsets = ttl_offsets(wire)
            cache.put(key, wire, offsets, ttl, negative)
            if negative:
                lifetime = min(negative_ttl if ttl is None else max(ttl, 0), negative_ttl)
            else:
                lifetime = 0 if ttl is None else min(max(ttl, min_ttl), max_ttl)
            model.pop(key, None)
            if lifetime > 0:
                model[key] = (record_ttls, offsets, clock.now, lifetime, negative)
                if len(model) > max_entries:
                    model.popitem(last=False)
        else:
            _, key, qid, allow_stale = op
            hit = cache.get(key, qid, allow_stale)
            if key not in model:
                assert hit is None
                continue
            record_ttls, offsets, stored, lifetime, negative = model[key]
            elapsed = clock.now - stored
            if elapsed >= lifetime + stale_for:
                assert hit is None
                del model[key]
                continue
            if elapsed >= lifetime and not allow_stale:
                assert hit is None
                continue
            model.move_to_end(key)
            assert hit is not None
            assert struct.unpack_from(">H", hit.packet, 0)[0] == qid
            got = [struct.unpack_from(">I", hit.packet, off)[0] for off in offsets]
            if elapsed >= lifetime:
                assert hit.freshness is Freshness.STALE and got == [30] * len(offsets)
                continue
            assert hit.freshness is Freshness.FRESH
            floor = 0 if negative else min_ttl
            for original, reported in zip(record_ttls, got, strict=True):
                assert reported <= max(original, floor)
                assert reported <= lifetime - int(elapsed)
                if min_ttl == 0:
                    assert reported <= original
    assert len(cache) == len(model)


def test_entries_are_untracked_by_the_first_collection_that_sees_them():
    """20,000 cached answers must not lengthen garbage collections: an entry holds only atoms (no
    nested container), so the first collection that looks at it stops tracking it, even when parts of
    the parsed answer sit in a generation that collection does not look at. With nested tuples, such
    entries stayed tracked and filled the oldest generation (full collections of 15-20 ms)."""
    import gc

    from gateway.dns.stages.cache import kept, unkept
    from gateway.dns.wire import scan_response

    cache = Cache(clock=lambda: 100.0)
    packet = cname_answer()
    info = scan_response(packet)
    gc.collect()
    gc.freeze()  # the parse's own objects now sit where no collection looks (as after `run`'s freeze)
    try:
        cache.put(("www.example.com", 1), packet, info.ttl_offsets, info.ttl, meta=kept(info))
        gc.collect(0)
        assert not any(gc.is_tracked(entry) for entry in cache._entries.values())
    finally:
        gc.unfreeze()
    meta = unkept(cache.get(("www.example.com", 1), 9).meta)
    assert meta.cname_targets == ("cdn.example.net",)
    assert [address for _, address in meta.addresses] == [b"\xc6\x33\x64\x09"]


@pytest.mark.parametrize("cnames, addresses", [
    ((), ()),
    (("cdn.example.net",), ()),
    ((), (b"\x7f\x00\x00\x01", b"\x00" * 15 + b"\x01")),
    (("a.example", "b\\.odd\\010label.example"), (b"\x0a\x00\x00\x01",)),
])
def test_kept_round_trip(cnames, addresses):
    from types import SimpleNamespace

    from gateway.dns.stages.cache import kept, unkept

    info = SimpleNamespace(cname_targets=cnames, addresses=tuple(("owner", a) for a in addresses))
    meta = kept(info)
    assert type(meta) is bytes
    back = unkept(meta)
    assert back.cname_targets == cnames
    assert tuple(a for _, a in back.addresses) == addresses


def test_entries_stored_together_tick_at_phases_of_their_own():
    """A hit is exact until the entry's next whole-second tick (the answer memo keeps it that long).
    Entries stored in one burst must not all tick at one instant, or every popular name goes back
    through the chain at once each second: each entry counts from its own phase, up to a second
    before the store, so a TTL reads at most one second low and never high."""
    clock = FakeClock(1000.0)
    phases = iter([0.0, 0.25, 0.5, 0.75])
    cache = Cache(clock=clock, tick_phase=lambda: next(phases))
    packet = a_answer(ttls=(300,))
    for i in range(4):
        cache.put(("k", i), packet, ttl_offsets(packet), 300)
    clock.advance(0.6)  # exactly: 0.6 s elapsed, TTL 300
    hits = [cache.get(("k", i), 1) for i in range(4)]
    assert [ttls_of(h.packet) for h in hits] == [[300], [300], [299], [299]]
    assert [h.until for h in hits] == [1001.0, 1000.75, 1001.5, 1001.25]  # four different instants
    clock.advance(299.3)  # 299.9 s elapsed: the last second of the entry's life
    assert [ttls_of(cache.get(("k", i), 1).packet) for i in range(4)] == [[1], [0], [0], [0]]
    clock.advance(0.1)
    assert all(cache.get(("k", i), 1) is None for i in range(4))  # expiry itself is exact


def test_the_gateway_gives_each_cache_entry_a_random_phase(tmp_path):
    from policyfactory import write_policy

    from gateway.app import build_components
    from gateway.policy.compile import load_policy
    from gateway.settings import DnsSettings, PolicySettings, Settings

    paths = write_policy(tmp_path)
    settings = Settings(DnsSettings(upstreams=("udp://127.0.0.1:9",)),
                        PolicySettings(paths.department, paths.school, None))
    clock = FakeClock(1000.0)
    cache = build_components(settings, load_policy(paths), cache_clock=clock).cache
    packet = a_answer(ttls=(300,))
    for i in range(20):
        cache.put(("k", i), packet, ttl_offsets(packet), 300)
    assert len({cache.get(("k", i), 1).until for i in range(20)}) > 10  # stored at one instant, ticking apart
