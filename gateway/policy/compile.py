"""Department layer + school layer + lists -> one immutable Snapshot (or every problem found)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

from gateway.core.identify import Classifier
from gateway.core.model import BlockResponse, SafeSearch
from gateway.core.names import SuffixMap
from gateway.core.snapshot import (
    BandPolicy,
    Category,
    Engine,
    GroupPolicy,
    Restriction,
    Schedule,
    SchoolInfo,
    Snapshot,
)
from gateway.errors import ConfigError, Problem
from gateway.lists.digests import STORE_NAME, Digests
from gateway.lists.formats import read_list
from gateway.lists.index import ListSource, compile_lists
from gateway.policy.schema import BAND_IDS, DepartmentSpec, SchoolSpec, Where, read_department, read_school


@dataclass(frozen=True, slots=True)
class PolicyPaths:
    department: Path  # folder with baseline.yaml, categories.yaml, bands.yaml
    school: Path  # the school's YAML file
    cache_dir: Path | None = None  # where compiled list forms are kept; None = do not cache
    display_root: Path | None = None  # paths in messages are shown relative to this


def load_policy(paths: PolicyPaths) -> Snapshot:
    """Compile the policy. Raises ConfigError listing every error; warnings ride on the Snapshot."""
    dept, problems = read_department(paths.department, paths.display_root)
    school, school_problems = read_school(paths.school, paths.display_root)
    problems += school_problems
    if dept is None or school is None or any(not p.warning for p in problems):
        raise ConfigError(problems)
    return _compile(dept, school, paths, problems)


def _compile(dept: DepartmentSpec, school: SchoolSpec, paths: PolicyPaths, problems: list[Problem]) -> Snapshot:
    def warn(where: Where, key: str, **args) -> None:
        problems.append(Problem(where.file, where.line, key, args, warning=True))

    def error(where: Where, key: str, **args) -> None:
        problems.append(Problem(where.file, where.line, key, args))

    root = paths.display_root
    categories = {
        c.id: Category(c.id, c.name, c.description, c.mandatory, c.kind, c.hotline, c.block_response,
                       f"{c.where} categories.{c.id}" + (" (mandatory)" if c.mandatory else ""))
        for c in dept.categories.values()
    }
    known = ", ".join(categories)

    # Lists: every category's files, resolved against the Department's lists_dir.
    sources: list[tuple[ListSource, Path]] = []
    hashed: list[Path] = [*dept.files, school.file]
    for c in dept.categories.values():
        for rel, where in c.lists:
            path = (dept.lists_dir / rel)
            if not path.exists():
                error(where, "policy.list_missing", path=rel, category=c.id)
                continue
            sources.append((ListSource(c.id, _show(path, root), c.kind), path))
            hashed.append(path / "domains" if path.is_dir() else path)
    never_block: dict[str, str] = {}
    for rel, where in dept.never_block:
        path = dept.lists_dir / rel
        if not path.exists():
            error(where, "policy.list_missing", path=rel, category="never_block")
            continue
        parsed = read_list(path, _show(path, root))
        hashed.append(path)
        if parsed.bad_lines:
            warn(where, "policy.list_bad_lines", count=parsed.bad_lines, first=str(parsed.first_errors[0]))
        for entry in parsed.entries:
            never_block.setdefault(entry.name, f"{parsed.path}:{entry.line}")
    if any(not p.warning for p in problems):
        raise ConfigError(problems)

    cache = paths.cache_dir / "lists.sgwset" if paths.cache_dir else None
    index, report = compile_lists(sources, cache)
    for err in report.errors[:10]:
        problems.append(Problem(err.path, err.line, "policy.list_bad_lines", {"count": 1, "first": err.why},
                                warning=True))

    for name, source in never_block.items():
        for hit in index.hits(name):
            if categories[hit.category].mandatory and categories[hit.category].kind == "block":
                file, _, line = source.rpartition(":")
                problems.append(Problem(file, int(line), "policy.never_block_mandatory",
                                        {"name": name, "category": hit.category,
                                         "source": f"{hit.source}:{hit.line}"}, warning=True))

    schedules = dict(dept.schedules)
    schedules.update(school.schedules)
    compiled_schedules = {
        sid: Schedule(sid, tuple((w.days, w.start, w.end) for w in windows)) for sid, windows in schedules.items()
    }

    def category_ok(cid: str, where: Where) -> bool:
        if cid not in categories:
            warn(where, "policy.unknown_category", category=cid, known=known)
            return False
        return True

    bands: dict[str, BandPolicy] = {}
    band_extras: dict[str, tuple[dict, dict]] = {}  # school allow/deny per band, merged into groups below
    for bid, spec in dept.bands.items():
        override = school.bands.get(bid)
        blocked: dict[str, str] = {}
        for cid, where in spec.block:
            if category_ok(cid, where):
                blocked[cid] = f"{where} bands.{bid}.block: {cid}"
        restrict_specs = list(spec.restrict)
        safe = spec.safe_search or SafeSearch.STRICT
        response = spec.block_response or BlockResponse.NXDOMAIN
        garden_on = bool(spec.walled_garden)
        garden_cats = [(c, w) for c, w in spec.garden]
        allow: dict[str, str] = {}
        deny: dict[str, str] = {}
        if override is not None:
            for cid, where in override.block:
                if category_ok(cid, where):
                    blocked.setdefault(cid, f"{where} bands.{bid}.block: {cid}")
            restrict_specs += override.restrict
            unblocked = set()
            for cid, where in override.unblock:
                if not category_ok(cid, where):
                    continue
                if categories[cid].mandatory:
                    warn(where, "policy.mandatory_relaxed", category=cid)
                    continue
                unblocked.add(cid)
                blocked.pop(cid, None)
            restrict_specs = [r for r in restrict_specs if not set(r.categories) <= unblocked] if unblocked else \
                restrict_specs
            if override.safe_search is not None:
                if override.safe_search.rank >= safe.rank:
                    safe = override.safe_search
                else:
                    warn(override.where, "policy.safe_search_relaxed", department=safe.value)
            if override.block_response is not None:
                response = override.block_response
            if override.walled_garden is True:
                garden_on = True
                garden_cats += override.garden
            elif override.walled_garden is False and garden_on:
                warn(override.where, "policy.mandatory_relaxed", category=f"bands.{bid}.walled_garden")
            for entry in override.allow:
                allow[entry.name] = f"{entry.where} bands.{bid}.allow: {entry.name}"
            for entry in override.deny:
                deny[entry.name] = f"{entry.where} bands.{bid}.deny: {entry.name}"
        for cid, c in categories.items():
            if c.mandatory and c.kind == "block":
                blocked.setdefault(cid, f"categories.{cid} (mandatory)")
        restrictions = []
        for r in restrict_specs:
            schedule = compiled_schedules.get(r.schedule)
            if schedule is None:
                error(r.where, "policy.unknown_schedule", schedule=r.schedule)
                continue
            cats = frozenset(c for c in r.categories if category_ok(c, r.where) and c not in blocked)
            if cats:
                restrictions.append(Restriction(cats, schedule, f"{r.where} bands.{bid}.restrict during "
                                                f"{r.schedule}: {', '.join(sorted(cats))}"))
        garden = None
        if garden_on:
            garden = frozenset(c for c, w in garden_cats if category_ok(c, w)) or _allow_categories(categories)
        bands[bid] = BandPolicy(bid, spec.name, blocked, tuple(restrictions), safe, response, garden)
        band_extras[bid] = (allow, deny)
    for bid, override in school.bands.items():
        if bid not in dept.bands:
            warn(override.where, "policy.unknown_band_stale", band=bid)

    never_map = SuffixMap(never_block)
    groups: dict[str, GroupPolicy] = {}
    networks = []
    seen: dict = {}
    for gid, g in school.groups.items():
        band = bands.get(g.band or "")
        if band is None:
            error(g.where, "policy.unknown_band", band=g.band, known=", ".join(bands or BAND_IDS))
            continue
        band_allow, band_deny = band_extras[band.id]
        allow = dict(band_allow)
        deny = dict(band_deny)
        for entry in g.allow:
            allow[entry.name] = f"{entry.where} groups.{gid}.allow: {entry.name}"
        for entry in g.deny:
            deny[entry.name] = f"{entry.where} groups.{gid}.deny: {entry.name}"
        for name in deny:
            if never_map.get(name):
                warn(g.where, "policy.never_block_denied", name=name)
        garden = band.garden
        if g.walled_garden is True and garden is None:
            garden = _allow_categories(categories)
        groups[gid] = GroupPolicy(gid, band, SuffixMap(allow), SuffixMap(deny), garden, g.inspect_tls)
        for net, where in g.clients:
            if net in seen:
                error(where, "policy.duplicate_network", network=str(net), other=seen[net])
                continue
            seen[net] = gid
            networks.append((net, gid))
    if any(not p.warning for p in problems):
        raise ConfigError(problems)

    safe_search = {}
    for engine in dept.engines:
        compiled = Engine(engine.id, dict(engine.targets))
        for host in engine.hosts:
            safe_search[host] = compiled

    return Snapshot(
        school=SchoolInfo(school.id, school.name, school.ward, school.levels, school.timezone, school.contact),
        tz=ZoneInfo(school.timezone),
        categories=categories,
        bands=bands,
        groups=groups,
        classifier=Classifier(networks, [n for n, _ in school.serve], school.unknown_group),
        index=index,
        never_block=never_map,
        safe_search=safe_search,
        holidays=tuple((h.first, h.last) for h in school.holidays),
        version=dept.version,
        fingerprint=_fingerprint(hashed, Digests(paths.cache_dir / STORE_NAME if paths.cache_dir else None)),
        files=tuple(_show(p, root) for p in hashed),
        warnings=tuple(p for p in problems if p.warning),
    )


def _allow_categories(categories: dict) -> frozenset:
    return frozenset(cid for cid, c in categories.items() if c.kind == "allow")


def _fingerprint(files: list[Path], digests: Digests) -> str:
    digest = hashlib.sha256()
    for path in sorted(set(files)):
        digest.update(path.name.encode() + b"\0")
        try:
            digest.update(digests.of(path))
        except OSError:
            digest.update(b"missing")
    digests.save()
    return digest.hexdigest()


def _show(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return str(path.resolve().relative_to(root.resolve()))
        except ValueError:
            pass
    return str(path)
