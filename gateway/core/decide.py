"""decide(snapshot, group, name, now) -> Decision: the only home of policy semantics.

Precedence, first match wins (README "Precedence"):
 1 Department mandatory category  2 never-block list  3 school deny  4 school allow
 5 walled garden (outside -> block)  6 band's blocked categories  7 time-restricted categories in
 their window  8 safe-search rewrite  9 allow.
A school allow lifts blocks (3-7) but never safe search (8).
"""

from __future__ import annotations

import datetime as dt

from gateway.core.model import Action, Decision, Reason, SafeSearch
from gateway.core.snapshot import GroupPolicy, Snapshot


def identify(snapshot: Snapshot, address) -> GroupPolicy | None:
    """The client's group, or None when the address is not served (the DNS server answers REFUSED)."""
    gid = snapshot.classifier.classify(address)
    return snapshot.groups.get(gid) if gid is not None else None


def decide(snapshot: Snapshot, group: GroupPolicy, name: str, now: dt.datetime,
           clock_trusted: bool = True) -> Decision:
    """Judge normalised `name` for a client of `group` at aware time `now`.

    With `clock_trusted` False (clock not yet synchronised) every time restriction is treated as
    in force: the safe side. Any internal error blocks (fail closed).
    """
    try:
        return _decide(snapshot, group, name, now, clock_trusted)
    except Exception as exc:
        return Decision(Action.BLOCK, Reason.ERROR, group.id, group.band.id, rule=f"{type(exc).__name__}: {exc}",
                        response=group.band.response)


def _decide(snap: Snapshot, group: GroupPolicy, name: str, now: dt.datetime, clock_trusted: bool) -> Decision:
    band = group.band
    gid, bid = group.id, band.id
    hits = snap.index.hits(name)
    categories = snap.categories

    for hit in hits:
        cat = categories[hit.category]
        if cat.mandatory and cat.kind == "block":
            return Decision(Action.BLOCK, Reason.MANDATORY, gid, bid, cat.id, cat.rule,
                            f"{hit.source}:{hit.line}", hit.suffix, response=cat.block_response or band.response,
                            garden=group.garden is not None)

    found = snap.never_block.get(name)
    if found is not None:
        return Decision(Action.ALLOW, Reason.NEVER_BLOCK, gid, bid, None, "never_block", found[1], found[0],
                        garden=group.garden is not None)

    found = group.deny.get(name)
    if found is not None:
        return Decision(Action.BLOCK, Reason.SCHOOL_DENY, gid, bid, None, found[1], None, found[0],
                        response=band.response, garden=group.garden is not None)

    found = group.allow.get(name)
    if found is not None:
        return _safe_search(snap, group, name) or Decision(
            Action.ALLOW, Reason.SCHOOL_ALLOW, gid, bid, None, found[1], None, found[0],
            garden=group.garden is not None)

    if group.garden is not None:
        for hit in hits:
            if hit.category in group.garden:
                return _safe_search(snap, group, name) or Decision(
                    Action.ALLOW, Reason.GARDEN_ALLOW, gid, bid, hit.category, f"walled_garden: {hit.category}",
                    f"{hit.source}:{hit.line}", hit.suffix, garden=True)
        return Decision(Action.BLOCK, Reason.WALLED_GARDEN, gid, bid, None, f"bands.{bid}.walled_garden",
                        response=band.response, garden=True)

    if hits:
        blocked = band.blocked
        for hit in hits:
            rule = blocked.get(hit.category)
            if rule is not None:
                cat = categories[hit.category]
                return Decision(Action.BLOCK, Reason.CATEGORY, gid, bid, cat.id, rule, f"{hit.source}:{hit.line}",
                                hit.suffix, response=cat.block_response or band.response)
        if band.restricted:
            local = None
            for restriction in band.restricted:
                for hit in hits:
                    if hit.category not in restriction.categories:
                        continue
                    if clock_trusted:
                        if local is None:
                            local = now.astimezone(snap.tz)
                        if not restriction.schedule.active(local, snap.holidays):
                            continue
                    cat = categories[hit.category]
                    return Decision(Action.BLOCK, Reason.SCHEDULE, gid, bid, cat.id, restriction.rule,
                                    f"{hit.source}:{hit.line}", hit.suffix,
                                    response=cat.block_response or band.response)

    return _safe_search(snap, group, name) or Decision(Action.ALLOW, Reason.DEFAULT, gid, bid)


def _safe_search(snap: Snapshot, group: GroupPolicy, name: str) -> Decision | None:
    engine = snap.safe_search.get(name)
    if engine is None:
        return None
    mode = group.band.safe_search
    if mode is SafeSearch.OFF:
        return None
    target = engine.targets.get(mode)
    if target is None or target == name:
        return None
    return Decision(Action.REWRITE, Reason.SAFE_SEARCH, group.id, group.band.id, None,
                    f"bands.{group.band.id}.safe_search: {mode.value}", None, name, rewrite_to=target,
                    engine=engine.id, garden=group.garden is not None)
