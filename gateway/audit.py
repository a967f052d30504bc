"""Local audit trail of policy changes: what was blocked or allowed, and since when (kept on the box)."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path


def summary(snapshot) -> dict:
    """What a school must be able to show: per band and group, what is blocked, restricted, allowed."""
    bands = {}
    for bid, band in snapshot.bands.items():
        bands[bid] = {
            "blocked": sorted(band.blocked),
            "restricted": sorted(c for r in band.restricted for c in r.categories),
            "safe_search": band.safe_search.value,
            "walled_garden": sorted(band.garden) if band.garden is not None else None,
        }
    groups = {gid: {"band": g.band.id, "allow": sorted(g.allow), "deny": sorted(g.deny)}
              for gid, g in snapshot.groups.items()}
    return {"version": snapshot.version, "bands": bands, "groups": groups}


def diff(old: dict | None, new: dict) -> list[str]:
    """Human-readable changes between two summaries (English keys, stable order)."""
    if old is None:
        return ["first policy recorded"]
    out = []
    if old.get("version") != new.get("version"):
        out.append(f"Department baseline {old.get('version')} -> {new.get('version')}")
    for bid in sorted(set(old["bands"]) | set(new["bands"])):
        a, b = old["bands"].get(bid, {}), new["bands"].get(bid, {})
        for key in ("blocked", "restricted"):
            added = sorted(set(b.get(key, [])) - set(a.get(key, [])))
            removed = sorted(set(a.get(key, [])) - set(b.get(key, [])))
            if added:
                out.append(f"band {bid}: {key} + {', '.join(added)}")
            if removed:
                out.append(f"band {bid}: {key} - {', '.join(removed)}")
        if a.get("safe_search") != b.get("safe_search"):
            out.append(f"band {bid}: safe_search {a.get('safe_search')} -> {b.get('safe_search')}")
        if a.get("walled_garden") != b.get("walled_garden"):
            out.append(f"band {bid}: walled_garden {a.get('walled_garden')} -> {b.get('walled_garden')}")
    for gid in sorted(set(old["groups"]) | set(new["groups"])):
        a, b = old["groups"].get(gid), new["groups"].get(gid)
        if a is None:
            out.append(f"group {gid} added (band {b['band']})")
            continue
        if b is None:
            out.append(f"group {gid} removed")
            continue
        if a["band"] != b["band"]:
            out.append(f"group {gid}: band {a['band']} -> {b['band']}")
        for key in ("allow", "deny"):
            added = sorted(set(b[key]) - set(a[key]))
            removed = sorted(set(a[key]) - set(b[key]))
            if added:
                out.append(f"group {gid}: {key} + {', '.join(added)}")
            if removed:
                out.append(f"group {gid}: {key} - {', '.join(removed)}")
    return out or ["no change in blocks or allows (files edited)"]


class AuditTrail:
    """Append-only JSON lines; a load that changes the policy fingerprint appends one record."""

    def __init__(self, path: Path):
        self.path = path

    def records(self) -> list[dict]:
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue  # a torn last line after a power cut is skipped, not fatal
        return out

    def record(self, snapshot, now: dt.datetime | None = None) -> dict | None:
        records = self.records()
        last = records[-1] if records else None
        if last is not None and last.get("fingerprint") == snapshot.fingerprint:
            return None
        new = summary(snapshot)
        entry = {
            "time": (now or dt.datetime.now(dt.UTC)).isoformat(timespec="seconds"),
            "old_fingerprint": last.get("fingerprint") if last else None,
            "fingerprint": snapshot.fingerprint,
            "changes": diff(last.get("summary") if last else None, new),
            "summary": new,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return entry
