"""Answer memo: the final UDP answer for a (group, query bytes) pair, replayed without running the chain.

A cache hit or a block is deterministic for a policy snapshot, a client group and the exact query bytes
after the ID (flags, question spelling, EDNS size and DO bit are all in them), until one of three things
moves: the snapshot (the memo's entries retire within RETIRE_SECONDS of a swap, each at its own
moment), a cached answer's TTL ticking down by a second
(stages say when through `Request.until`), or a schedule boundary (a schedule's block is kept for at
most a second; an answer a schedule let through came from the cache, so it is kept at most a second too).
The memo replays such answers with one dict lookup; admission (rate limit, relay watch) and the observe
listeners (metrics, query log) still run for every query, so counts and limits are the same as on the
full chain.

Only answers the chain produced synchronously are memoised (never an upstream round trip, a stale answer,
an error or a rate-limit drop); the stage that knows an answer is deterministic sets `Request.until`.
And only the second time their query reaches the chain: most names are asked once.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from itertools import islice

from gateway.core.model import Action, BlockResponse, Reason
from gateway.dns.stages import Request

TIMED_SECONDS = 1.0  # a decision that looked at the clock (a schedule) is re-judged at least this often
HORIZON = 60.0  # any other memoised answer is re-derived at least this often
_TIMED = (Reason.SCHEDULE, Reason.ERROR)  # an error block is retried soon, as a schedule's block
# Up to this part of a horizon is cut off at random, so that entries remembered in one burst (the memo
# refills at once after every reload) do not all expire, and go back through the chain, at one instant.
# Cutting only ever shortens an entry's life. (Cache hits are staggered by the cache's tick phases.)
HORIZON_JITTER = 0.25
# After a swap, the previous snapshot's entries retire over this many seconds, each at a moment of its
# own, rather than all at once: the whole memo refilling through the chain at the swap was ~30 ms of
# work in 300 ms, which a worker 90% busy could not absorb (the one stall left in a reload under load).
# So a new policy is in force for every name within RETIRE_SECONDS of its swap.
RETIRE_SECONDS = 1.0
# Enum members by position: an entry stores the position (an int), never the member (an object the
# collector tracks), so the whole entry is a tuple of atoms.
_ACTIONS, _REASONS, _RESPONSES = tuple(Action), tuple(Reason), tuple(BlockResponse)
_ACTION_AT = {m: i for i, m in enumerate(_ACTIONS)}
_REASON_AT = {m: i for i, m in enumerate(_REASONS)}
_RESPONSE_AT = {m: i for i, m in enumerate(_RESPONSES)}


class _Asked:
    """The question as listeners read it (`req.query.qname`, `.qtype`) on a replay."""

    __slots__ = ("qname", "qtype")


class _Decided:
    """A Decision's fields as listeners read them, refilled from an entry's atoms on every hit."""

    __slots__ = ("action", "band", "category", "engine", "garden", "group", "matched", "reason", "response",
                 "rewrite_to", "rule", "source")

    @property
    def blocked(self) -> bool:
        return self.action is Action.BLOCK


def _atoms(d) -> tuple:
    """A Decision as atoms (strings, ints, None, bools), to be spliced into an entry: a nested tuple
    would keep the entry tracked by the collector (see gateway/dns/cache.py)."""
    if d is None:
        return ()
    return (_ACTION_AT[d.action], _REASON_AT[d.reason], d.group, d.band, d.category, d.rule, d.source, d.matched,
            d.rewrite_to, d.engine, _RESPONSE_AT[d.response], d.garden)


class Replay:
    """What the observe listeners see for a replayed answer: the fields of a Request they read, and
    the Decision's. One instance per memo, refilled for every hit, so a replay allocates nothing and
    an entry is a tuple of atoms that keeps nothing alive: the garbage collector stops tracking it,
    so memo churn never fills the oldest generation (which made full collections, 10-80 ms each,
    run every few seconds). A listener must read what it needs during the call and keep nothing."""

    __slots__ = ("_decided", "client", "decision", "group", "port", "proto", "query")

    def __init__(self):
        self.query = _Asked()
        self._decided = _Decided()
        self.proto = "udp"
        self.client = self.decision = self.group = None
        self.port = 0

    def fill(self, client: str, port: int, group, entry: tuple) -> None:
        """From a memo entry: (reply tail, until, qname, qtype, *the decision's atoms)."""
        self.client, self.port, self.group = client, port, group
        asked = self.query
        asked.qname, asked.qtype = entry[2], entry[3]
        if len(entry) == 4:
            self.decision = None
            return
        d = self.decision = self._decided
        (_, _, _, _, action, reason, d.group, d.band, d.category, d.rule, d.source, d.matched, d.rewrite_to,
         d.engine, response, d.garden) = entry
        d.action, d.reason, d.response = _ACTIONS[action], _REASONS[reason], _RESPONSES[response]


class AnswerMemo:
    def __init__(self, holder, access, listeners: list, clock: Callable[[], float] = time.monotonic,
                 max_entries: int = 8192, jitter: Callable[[], float] = random.random):
        self.holder = holder
        self.access = access
        self.listeners = listeners  # the observe stage's list itself: listeners added later are seen
        self.clock = clock  # the cache's clock (entries' `until` is on it); also times the replay
        self.max_entries = max_entries
        self.jitter = jitter  # in [0, 1): how much of HORIZON_JITTER an entry's horizon loses
        self.hits = 0
        self._snap = None
        self._size = 0
        self._replay = Replay()
        # id(group) -> {query[2:]: (reply[2:], until, qname, qtype, *decision atoms)}: atoms only
        self._by_group: dict[int, dict[bytes, tuple]] = {}
        self._by_client: dict[str, tuple] = {}  # address -> (its group's table, the group)
        self._hit: set[bytes] = set()  # keys replayed since the last eviction: they get a second chance
        # Hashes of queries the chain has answered before (the doorkeeper of TinyLFU): an answer is kept
        # only when its query comes a second time. Most names are asked once (random CDN and tracker
        # labels, a scan of a block list); storing each of them cost more than the memo saved, and
        # pushed out the names every device keeps asking for. Not policy state: a swap keeps it.
        self._seen: set[int] = set()
        self._retiring: tuple[dict[str, tuple], float] | None = None  # (previous _by_client, swap noticed at)

    def clear(self) -> None:
        self._by_group = {}
        self._by_client = {}
        self._hit = set()
        self._size = 0
        self._retiring = None

    def answer(self, data: bytes, addr) -> bytes | None:
        """The reply for `data` from `addr` (b"" = drop it), or None when the full chain must run."""
        if self.holder.current is not self._snap:
            previous = self._by_client if self._snap is not None else None
            self._snap = self.holder.current
            self.clear()
            if previous:
                self._retiring = (previous, self.clock())
        client = addr[0]
        mine = self._by_client.get(client)
        if mine is None:
            return None if self._retiring is None else self._retired(data, addr)
        key = data[2:]
        entry = mine[0].get(key)
        if entry is None:
            return None if self._retiring is None else self._retired(data, addr)
        started = self.clock()
        if started >= entry[1]:
            del mine[0][key]
            self._size -= 1
            return None
        return self._play(data, addr, mine, key, entry, started)

    def _retired(self, data: bytes, addr) -> bytes | None:
        """An entry of the previous snapshot, while it has not retired yet (RETIRE_SECONDS)."""
        previous, since = self._retiring
        started = self.clock()
        if started >= since + RETIRE_SECONDS:
            self._retiring = None
            return None
        mine = previous.get(addr[0])
        if mine is None:
            return None
        key = data[2:]
        entry = mine[0].get(key)
        # Its own moment within the retirement, from its key: a popular name retires at one fixed
        # moment, not at the first of its many queries that happens to draw a low number.
        if entry is None or started >= entry[1] or started >= since + RETIRE_SECONDS * (hash(key) & 0xFFFF) / 65536:
            return None
        return self._play(data, addr, mine, key, entry, started)

    def _play(self, data: bytes, addr, mine: tuple, key: bytes, entry: tuple, started: float) -> bytes:
        client = addr[0]
        if not self.access.admit(client):
            return b""
        self.hits += 1
        self._hit.add(key)
        reply = data[:2] + entry[0]
        if self.listeners:
            req = self._replay
            req.fill(client, addr[1], mine[1], entry)
            seconds = self.clock() - started
            for listener in self.listeners:
                listener(req, seconds)
            req.client = None  # the address lives only while its query is served
        return reply

    def saw(self, data: bytes) -> None:
        """The chain is answering `data` the slow way (an upstream round trip): note that it was asked."""
        self._note(hash(data[2:]))

    def _note(self, mark: int) -> None:
        seen = self._seen
        if len(seen) >= self.max_entries:  # bounded: forgetting only delays an entry by one query
            seen.clear()
        seen.add(mark)

    def remember(self, data: bytes, req: Request, reply: bytes) -> None:
        """Keep the chain's final `reply` to `data` when every stage said it is deterministic and its
        query was asked before (see `_seen`)."""
        until = req.until
        group = req.group
        if until <= 0.0 or group is None or len(reply) < 12 or self.holder.current is not self._snap:
            return
        key = data[2:]
        mark = hash(key)
        if mark not in self._seen:
            self._note(mark)
            return
        now = self.clock()
        d = req.decision
        # Only a schedule looks at the clock (decide.py); everything else holds for the whole snapshot.
        horizon = TIMED_SECONDS if d is not None and d.reason in _TIMED else HORIZON
        until = min(until, now + horizon * (1.0 - HORIZON_JITTER * self.jitter()))
        if until <= now:
            return
        table = self._by_group.get(id(group))
        if table is None:
            table = self._by_group[id(group)] = {}
        clients = self._by_client
        mine = clients.get(req.client)
        if mine is None or mine[0] is not table:
            if len(clients) >= 65536:
                clients.clear()
            clients[req.client] = (table, group)
        if key not in table:
            if self._size >= self.max_entries:
                self._evict()
            elif len(self._hit) > self.max_entries:  # keys of expired entries pile up when it never fills
                self._hit.clear()
            self._size += 1
        q = req.query
        table[key] = (reply[2:], until, q.qname, q.qtype, *_atoms(d))

    def _evict(self) -> None:
        # The older half of the largest table at once: deleting one oldest entry per insert would make
        # every `next(iter(table))` step over all the entries deleted before it (dicts compact only
        # when they grow), ~5 µs per query once the memo is full. An entry replayed since the last
        # eviction gets a second chance (moved to the newest end), so a flood of names asked once
        # (random CDN or tracker subdomains, a scan of a block list) cannot push out the names
        # every device keeps asking for. At least a quarter of that half always goes, so an
        # eviction always makes room.
        table = max(self._by_group.values(), key=len)
        old = list(islice(table, max(1, len(table) // 2)))
        hit = self._hit
        keep = [key for key in old if key in hit]
        must_go = max(1, len(old) // 4)
        if len(old) - len(keep) < must_go:
            keep = set(keep[must_go - (len(old) - len(keep)):])  # the oldest of them go as well
        else:
            keep = set(keep)
        for key in old:
            entry = table.pop(key)
            if key in keep:
                table[key] = entry  # to the newest end
        hit.clear()
        self._size -= len(old) - len(keep)

    def __len__(self) -> int:
        return self._size
