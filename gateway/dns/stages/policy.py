"""Policy stage: asks the decision core, answers blocks itself, turns safe-search rewrites into a CNAME
answer, and on the way back re-checks CNAME targets, drops DNS-rebinding answers and strips ECH."""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import time
from collections.abc import Callable

from gateway.core.decide import decide
from gateway.core.model import Action, BlockResponse, Decision, Reason
from gateway.dns import answers
from gateway.dns.stages import INF, Request, Stage
from gateway.dns.wire import name_to_wire

log = logging.getLogger("gateway.dns")
HTTPS_TYPE = 65
WALL_EVERY = 0.25  # seconds; schedules are in minutes


def _wall_clock() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def lookup_packet(name_wire: bytes, qtype: int, do: bool, edns: bool = True) -> bytes:
    """A clean upstream query (RD, one question, EDNS 1232 with the client's DO bit): the client's own
    EDNS options (client subnet, cookies) never leave the school. A client that sent no EDNS gets an
    answer without OPT (RFC 6891 section 7), so its lookups go upstream without EDNS too."""
    if not edns:
        return b"\x00\x00\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + name_wire + qtype.to_bytes(2, "big") + b"\x00\x01"
    header = b"\x00\x00\x01\x00\x00\x01\x00\x00\x00\x00\x00\x01"
    opt = b"\x00\x00\x29\x04\xd0\x00\x00" + (b"\x80\x00" if do else b"\x00\x00") + b"\x00\x00"
    return header + name_wire + qtype.to_bytes(2, "big") + b"\x00\x01" + opt


# Where a public name must never point (DNS rebinding): the LAN's own ranges, not every "reserved" block.
_REBIND = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.168.0.0/16", "::/128", "::1/128", "fc00::/7", "fe80::/10"))


def _private(address: bytes, _seen: dict = {}) -> bool:  # noqa: B006 — a bounded memo of answer addresses
    found = _seen.get(address)
    if found is None:
        ip = ipaddress.ip_address(address)
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        found = any(ip in net for net in _REBIND)
        if len(_seen) > 65536:
            _seen.clear()
        _seen[address] = found
    return found


class PolicyStage(Stage):
    name = "policy"

    def __init__(self, holder, block_ttl: int = 60, blockpage: tuple[list, list] = ([], []),
                 rebinding_protection: bool = True, clock: Callable[[], dt.datetime] = _wall_clock,
                 clock_trusted: Callable[[], bool] = lambda: True):
        self.holder = holder
        self.block_ttl = block_ttl
        self.blockpage = blockpage
        self.rebinding_protection = rebinding_protection
        self.clock = clock
        self.clock_trusted = clock_trusted
        # The wall clock read at most every WALL_EVERY seconds (a datetime per query costs more than
        # the rest of a block's decision); a clock passed in (tests) is read every time.
        self._cached_wall = clock is _wall_clock
        self._wall, self._wall_until = None, 0.0
        self.on_decision: list[Callable[[Request, Decision], None]] = []  # observers (metrics)

    def block_answer(self, req: Request, decision: Decision) -> bytes:
        q = req.query
        mode = decision.response
        if mode is BlockResponse.NULL:
            return answers.null_answer(q, self.block_ttl)
        if mode is BlockResponse.BLOCKPAGE and (self.blockpage[0] or self.blockpage[1]):
            return answers.address_answer(q, self.blockpage[0], self.blockpage[1], self.block_ttl)
        if mode is BlockResponse.BLOCKPAGE:
            return answers.null_answer(q, self.block_ttl)
        return answers.nxdomain(q, answers.soa_zone_for(q.qname), self.block_ttl)

    def now(self) -> dt.datetime:
        if not self._cached_wall:
            return self.clock()
        t = time.monotonic()
        if t >= self._wall_until:
            self._wall, self._wall_until = self.clock(), t + WALL_EVERY
        return self._wall

    def before(self, req: Request):
        q = req.query
        d = decide(self.holder.current, req.group, q.qname, self.now(), self.clock_trusted())
        req.decision = d
        for observe in self.on_decision:
            observe(req, d)
        action = d.action
        if action is Action.BLOCK:
            req.until = INF  # the same for this snapshot (a schedule's is limited by the memo: d.timed)
            return self.block_answer(req, d)
        if action is Action.REWRITE:
            target = name_to_wire(d.rewrite_to)
            req.lookup_key = (target, q.qtype, q.qclass, q.do, q.edns)
            req.lookup_packet = lookup_packet(target, q.qtype, q.do, q.edns)
            return None
        req.lookup_key = (q.qname_wire, q.qtype, q.qclass, q.do, q.edns)
        req.lookup_packet = None  # built by the upstream stage only on a cache miss
        return None

    def after(self, req: Request, response: bytes) -> bytes:
        d = req.decision
        if d is None:
            return response
        if d.action is Action.REWRITE:
            return answers.cname_answer(req.query, d.rewrite_to, response, self.block_ttl)
        meta = req.meta
        if meta is None:
            return response
        if meta.cname_targets and not d.garden:
            snap = self.holder.current
            now = self.now()
            for target in meta.cname_targets:
                t = decide(snap, req.group, target, now, self.clock_trusted())
                if t.action is Action.BLOCK:
                    blocked = Decision(t.action, t.reason, t.group, t.band, t.category, t.rule, t.source,
                                       t.matched, response=t.response, garden=t.garden)
                    req.decision = blocked
                    for observe in self.on_decision:
                        observe(req, blocked)
                    return self.block_answer(req, blocked)
        if self.rebinding_protection and meta.addresses and not req.local and d.reason is not Reason.SCHOOL_ALLOW:
            if any(_private(addr) for _, addr in meta.addresses):
                log.info("dropped an answer pointing a public name at a private address (DNS rebinding)")
                return answers.nxdomain(req.query, answers.soa_zone_for(req.query.qname), self.block_ttl)
        if req.query.qtype == HTTPS_TYPE and d.band != "staff":
            return strip_ech(response)
        return response


def strip_ech(response: bytes) -> bytes:
    """Remove the `ech` SvcParam (key 5) from HTTPS records so browsers send a visible SNI (slow path)."""
    if b"\x00\x05" not in response:
        return response
    from dnslib import DNSRecord

    try:
        record = DNSRecord.parse(response)
    except Exception:
        return response
    changed = False
    for rr in record.rr:
        if rr.rtype == HTTPS_TYPE and hasattr(rr.rdata, "params"):
            kept = [p for p in rr.rdata.params if p[0] != 5]  # (key, value) pairs; 5 = ech
            if len(kept) != len(rr.rdata.params):
                rr.rdata.params = kept
                changed = True
    return bytes(record.pack()) if changed else response
