"""Policy YAML -> validated spec dataclasses; every problem is collected with its file and line."""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.core.model import BlockResponse, SafeSearch, Text
from gateway.core.names import NameError_, normalize
from gateway.errors import Problem
from gateway.policy.source import YList, YMap, load_file

BAND_IDS = ("mam_non", "tieu_hoc", "thcs", "thpt", "staff")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_ID = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
_TIME = re.compile(r"^([01]?\d|2[0-4]):([0-5]\d)$")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Where:
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class CategorySpec:
    id: str
    name: Text
    description: Text
    lists: tuple[tuple[str, Where], ...]
    mandatory: bool
    kind: str  # "block" or "allow"
    hotline: bool  # block page shows the child-protection hotline 111
    block_response: BlockResponse | None
    where: Where


@dataclass(frozen=True, slots=True)
class Restriction:
    categories: tuple[str, ...]
    schedule: str
    where: Where


@dataclass(frozen=True, slots=True)
class NameEntry:
    name: str
    where: Where


@dataclass(frozen=True, slots=True)
class BandSpec:
    id: str
    name: Text
    block: tuple[tuple[str, Where], ...]
    restrict: tuple[Restriction, ...]
    safe_search: SafeSearch | None
    block_response: BlockResponse | None
    walled_garden: bool | None
    garden: tuple[tuple[str, Where], ...]  # allow categories forming the garden
    where: Where
    # school-layer only:
    unblock: tuple[tuple[str, Where], ...] = ()
    allow: tuple[NameEntry, ...] = ()
    deny: tuple[NameEntry, ...] = ()


@dataclass(frozen=True, slots=True)
class Window:
    days: frozenset[int]  # 0 = Monday
    start: int  # minutes after midnight
    end: int  # minutes after midnight; end <= start means the window runs past midnight
    where: Where


@dataclass(frozen=True, slots=True)
class Holiday:
    first: dt.date
    last: dt.date
    name: str


@dataclass(frozen=True, slots=True)
class EngineSpec:
    id: str
    hosts: tuple[str, ...]
    targets: dict  # SafeSearch -> host
    where: Where


@dataclass(frozen=True, slots=True)
class DepartmentSpec:
    version: str
    lists_dir: Path
    never_block: tuple[tuple[str, Where], ...]
    schedules: dict  # id -> tuple[Window, ...]
    engines: tuple[EngineSpec, ...]
    categories: dict  # id -> CategorySpec (insertion order kept)
    bands: dict  # id -> BandSpec
    files: tuple[Path, ...]


@dataclass(frozen=True, slots=True)
class GroupSpec:
    id: str
    band: str | None
    clients: tuple[tuple[Network, Where], ...]
    allow: tuple[NameEntry, ...]
    deny: tuple[NameEntry, ...]
    walled_garden: bool | None
    inspect_tls: bool
    where: Where


@dataclass(frozen=True, slots=True)
class SchoolSpec:
    id: str
    name: str
    ward: str
    levels: tuple[str, ...]
    timezone: str
    contact: dict
    schedules: dict  # id -> tuple[Window, ...]
    holidays: tuple[Holiday, ...]
    groups: dict  # id -> GroupSpec
    unknown_group: str | None
    serve: tuple[tuple[Network, Where], ...]
    bands: dict  # id -> BandSpec (overrides)
    file: Path
    where: Where = field(default=Where("", 0))


class FieldReader:
    """Reads one file's values, appending problems instead of raising."""

    def __init__(self, file: str, problems: list[Problem]):
        self.file = file
        self.problems = problems

    def problem(self, line: int | None, message: str, /, warning: bool = False, **args) -> None:
        self.problems.append(Problem(self.file, line, message, args, warning))

    def where(self, line: int) -> Where:
        return Where(self.file, line)

    def keys(self, m: YMap, where: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> None:
        for key in m:
            if key not in allowed:
                self.problem(m.line_of(key), "schema.unknown_key", key=key, where=where, allowed=", ".join(allowed))
        for key in required:
            if key not in m:
                self.problem(m.line, "schema.missing_key", key=key, where=where)

    def typed(self, m: YMap, key: str, types, expected: str, default=None):
        if key not in m or m[key] is None:
            return default
        value = m[key]
        if types is str and isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, types) or (types is int and isinstance(value, bool)):
            self.problem(m.line_of(key), "schema.type", key=key, expected=expected, got=_kind(value))
            return default
        return value

    def mapping(self, m: YMap, key: str) -> YMap | None:
        value = self.typed(m, key, YMap, "a mapping (key: value)")
        return value

    def str_list(self, m: YMap, key: str) -> list[tuple[str, Where]]:
        if key not in m or m[key] is None:
            return []
        value = m[key]
        if isinstance(value, str):
            return [(value, self.where(m.line_of(key)))]
        if not isinstance(value, YList):
            self.problem(m.line_of(key), "schema.type", key=key, expected="a list", got=_kind(value))
            return []
        out = []
        for i, item in enumerate(value):
            if isinstance(item, (YMap, YList)) or item is None:
                self.problem(value.line_of(i), "schema.type", key=key, expected="a list of text", got=_kind(item))
                continue
            out.append((str(item), self.where(value.line_of(i))))
        return out

    def choice(self, m: YMap, key: str, enum_type, default=None):
        raw = self.typed(m, key, str, "text")
        if raw is None:
            return default
        try:
            return enum_type(raw.lower())
        except ValueError:
            allowed = ", ".join(e.value for e in enum_type)
            self.problem(m.line_of(key), "schema.choice", key=key, allowed=allowed, got=raw)
            return default

    def text(self, m: YMap, key: str, where: str, required: bool = True) -> Text:
        value = m.get(key)
        if isinstance(value, str):
            return Text(value, value)
        if isinstance(value, YMap):
            self.keys(value, f"{where}.{key}", ("vi", "en"), ("vi", "en") if required else ())
            vi = self.typed(value, "vi", str, "text", "")
            en = self.typed(value, "en", str, "text", "")
            return Text(vi or en, en or vi)
        if value is None and not required:
            return Text("", "")
        if value is None:
            self.problem(m.line, "schema.missing_key", key=key, where=where)
        else:
            self.problem(m.line_of(key), "schema.type", key=key, expected="{vi: ..., en: ...}", got=_kind(value))
        return Text("", "")

    def ident(self, value: str, line: int) -> bool:
        if not _ID.match(value):
            self.problem(line, "schema.bad_id", id=value)
            return False
        return True

    def names(self, m: YMap, key: str) -> tuple[NameEntry, ...]:
        out = []
        for raw, where in self.str_list(m, key):
            text = raw[2:] if raw.startswith("*.") else raw
            try:
                out.append(NameEntry(normalize(text), where))
            except NameError_ as exc:
                self.problem(where.line, "policy.bad_name", value=raw, why=str(exc))
        return tuple(out)

    def networks(self, m: YMap, key: str) -> tuple[tuple[Network, Where], ...]:
        out = []
        for raw, where in self.str_list(m, key):
            try:
                out.append((ipaddress.ip_network(raw.strip(), strict=False), where))
            except ValueError:
                self.problem(where.line, "policy.bad_network", value=raw)
        return tuple(out)

    def windows(self, value, key: str, line: int) -> tuple[Window, ...]:
        if not isinstance(value, YList):
            self.problem(line, "schema.type", key=key, expected="a list of {days, from, to}", got=_kind(value))
            return ()
        out = []
        for i, item in enumerate(value):
            if not isinstance(item, YMap):
                self.problem(value.line_of(i), "schema.type", key=key, expected="{days, from, to}", got=_kind(item))
                continue
            self.keys(item, f"schedules.{key}", ("days", "from", "to"), ("days", "from", "to"))
            days = set()
            for day, where in self.str_list(item, "days"):
                if day.lower() not in DAYS:
                    self.problem(where.line, "policy.bad_day", value=day)
                else:
                    days.add(DAYS.index(day.lower()))
            start = self.clock(item, "from")
            end = self.clock(item, "to")
            if start is None or end is None:
                continue
            if start == end:
                self.problem(item.line, "policy.empty_window", start=item.get("from"), end=item.get("to"))
                continue
            out.append(Window(frozenset(days), start, end, self.where(item.line)))
        return tuple(out)

    def clock(self, m: YMap, key: str) -> int | None:
        raw = m.get(key)
        if isinstance(raw, int) and not isinstance(raw, bool):
            # YAML 1.1 reads an unquoted 7:30 as sexagesimal 450 (minutes); accept it as such.
            if 0 <= raw <= 24 * 60:
                return raw
        if isinstance(raw, str):
            match = _TIME.match(raw.strip())
            if match:
                minutes = int(match.group(1)) * 60 + int(match.group(2))
                if minutes <= 24 * 60:
                    return minutes
        if key in m:
            self.problem(m.line_of(key), "policy.bad_time", value=raw)
        return None

    def date(self, raw, line: int) -> dt.date | None:
        if isinstance(raw, dt.date) and not isinstance(raw, dt.datetime):
            return raw
        if isinstance(raw, str):
            try:
                return dt.date.fromisoformat(raw.strip())
            except ValueError:
                pass
        self.problem(line, "policy.bad_date", value=raw)
        return None


def _kind(value) -> str:
    if isinstance(value, YMap):
        return "a mapping"
    if isinstance(value, YList):
        return "a list"
    if isinstance(value, bool):
        return "yes/no"
    if value is None:
        return "empty"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    return f"'{value}'"


def _document(r: FieldReader, value, what: str) -> YMap | None:
    if value is None:
        r.problem(None, "schema.empty_document", what=what)
        return None
    if not isinstance(value, YMap):
        r.problem(1, "schema.type", key="(document)", expected="a mapping", got=_kind(value))
        return None
    return value


def _schedules(r: FieldReader, m: YMap | None) -> dict:
    out: dict = {}
    if m is None:
        return out
    for sid, value in m.items():
        if r.ident(sid, m.line_of(sid)):
            out[sid] = r.windows(value, sid, m.line_of(sid))
    return out


def _band(r: FieldReader, bid: str, m: YMap, school: bool) -> BandSpec:
    where = f"bands.{bid}"
    common = ("name", "block", "restrict", "safe_search", "block_response", "walled_garden")
    allowed = (*common, "unblock", "allow", "deny") if school else (*common, "ages")
    r.keys(m, where, allowed, () if school else ("name", "safe_search"))
    name = r.text(m, "name", where, required=not school)
    restrict = []
    raw = m.get("restrict")
    if raw is not None:
        if not isinstance(raw, YList):
            r.problem(m.line_of("restrict"), "schema.type", key="restrict",
                      expected="a list of {categories, during}", got=_kind(raw))
        else:
            for i, item in enumerate(raw):
                if not isinstance(item, YMap):
                    r.problem(raw.line_of(i), "schema.type", key="restrict", expected="{categories, during}",
                              got=_kind(item))
                    continue
                r.keys(item, f"{where}.restrict", ("categories", "during"), ("categories", "during"))
                cats = tuple(c for c, _ in r.str_list(item, "categories"))
                during = r.typed(item, "during", str, "a schedule name", "")
                restrict.append(Restriction(cats, during, r.where(item.line)))
    garden_flag = None
    garden: list[tuple[str, Where]] = []
    wg = m.get("walled_garden")
    if isinstance(wg, bool):
        garden_flag = wg
    elif isinstance(wg, YMap):
        r.keys(wg, f"{where}.walled_garden", ("allow_categories",))
        garden_flag = True
        garden = r.str_list(wg, "allow_categories")
    elif wg is not None:
        r.problem(m.line_of("walled_garden"), "schema.type", key="walled_garden",
                  expected="yes/no or {allow_categories: [...]}", got=_kind(wg))
    return BandSpec(
        id=bid,
        name=name,
        block=tuple(r.str_list(m, "block")),
        restrict=tuple(restrict),
        safe_search=r.choice(m, "safe_search", SafeSearch),
        block_response=r.choice(m, "block_response", BlockResponse),
        walled_garden=garden_flag,
        garden=tuple(garden),
        where=r.where(m.line),
        unblock=tuple(r.str_list(m, "unblock")) if school else (),
        allow=r.names(m, "allow") if school else (),
        deny=r.names(m, "deny") if school else (),
    )


def read_department(directory: Path, display_root: Path | None = None) -> tuple[DepartmentSpec | None, list[Problem]]:
    """Read baseline.yaml, categories.yaml and bands.yaml from the Department layer `directory`."""
    problems: list[Problem] = []
    files = {name: directory / f"{name}.yaml" for name in ("baseline", "categories", "bands")}
    docs = {}
    for name, path in files.items():
        display = _display(path, display_root)
        value, found = load_file(path, display)
        problems += found
        r = FieldReader(display, problems)
        docs[name] = (_document(r, value, name) if not found else None, r)

    version, lists_dir, never_block, schedules, engines = "0", directory, (), {}, []
    base, r = docs["baseline"]
    if base is not None:
        r.keys(base, "baseline", ("version", "lists_dir", "never_block", "schedules", "safe_search"), ("version",))
        version = r.typed(base, "version", str, "text", "0")
        lists_dir = (directory / r.typed(base, "lists_dir", str, "a folder path", ".")).resolve()
        never_block = tuple(r.str_list(base, "never_block"))
        schedules = _schedules(r, r.mapping(base, "schedules"))
        ss = r.mapping(base, "safe_search") or YMap()
        for eid, em in ss.items():
            if not isinstance(em, YMap):
                r.problem(ss.line_of(eid), "schema.type", key=eid, expected="{hosts, strict, moderate}", got=_kind(em))
                continue
            r.keys(em, f"safe_search.{eid}", ("hosts", "strict", "moderate"), ("hosts", "strict"))
            hosts = []
            for host, where in r.str_list(em, "hosts"):
                try:
                    hosts.append(normalize(host))
                except NameError_ as exc:
                    r.problem(where.line, "policy.bad_name", value=host, why=str(exc))
            targets = {}
            for mode in (SafeSearch.STRICT, SafeSearch.MODERATE):
                target = r.typed(em, mode.value, str, "a host name")
                if target:
                    targets[mode] = normalize(target)
            if SafeSearch.MODERATE not in targets and SafeSearch.STRICT in targets:
                targets[SafeSearch.MODERATE] = targets[SafeSearch.STRICT]
            engines.append(EngineSpec(eid, tuple(hosts), targets, r.where(em.line)))

    categories: dict = {}
    cats, r = docs["categories"]
    if cats is not None:
        r.keys(cats, "categories.yaml", ("categories",), ("categories",))
        for cid, cm in (r.mapping(cats, "categories") or {}).items():
            line = cats["categories"].line_of(cid)
            if not r.ident(cid, line):
                continue
            if not isinstance(cm, YMap):
                r.problem(line, "schema.type", key=cid, expected="a mapping", got=_kind(cm))
                continue
            where = f"categories.{cid}"
            r.keys(cm, where, ("name", "description", "lists", "mandatory", "kind", "hotline", "block_response"),
                   ("name",))
            kind = r.typed(cm, "kind", str, "block or allow", "block")
            if kind not in ("block", "allow"):
                r.problem(cm.line_of("kind"), "schema.choice", key="kind", allowed="block, allow", got=kind)
                kind = "block"
            categories[cid] = CategorySpec(
                id=cid,
                name=r.text(cm, "name", where),
                description=r.text(cm, "description", where, required=False),
                lists=tuple(r.str_list(cm, "lists")),
                mandatory=bool(r.typed(cm, "mandatory", bool, "yes/no", False)),
                kind=kind,
                hotline=bool(r.typed(cm, "hotline", bool, "yes/no", False)),
                block_response=r.choice(cm, "block_response", BlockResponse),
                where=r.where(line),
            )

    bands: dict = {}
    bdoc, r = docs["bands"]
    if bdoc is not None:
        r.keys(bdoc, "bands.yaml", ("bands",), ("bands",))
        bm = r.mapping(bdoc, "bands") or {}
        for bid, m in bm.items():
            line = bm.line_of(bid)
            if bid not in BAND_IDS:
                r.problem(line, "policy.unknown_band", band=bid, known=", ".join(BAND_IDS))
                continue
            if not isinstance(m, YMap):
                r.problem(line, "schema.type", key=bid, expected="a mapping", got=_kind(m))
                continue
            bands[bid] = _band(r, bid, m, school=False)
        for bid in BAND_IDS:
            if bm and bid not in bands and bid not in bm:
                r.problem(bm.line, "schema.missing_key", key=bid, where="bands")

    spec = DepartmentSpec(version, lists_dir, never_block, schedules, tuple(engines), categories, bands,
                          tuple(files.values()))
    return spec, problems


def read_school(path: Path, display_root: Path | None = None) -> tuple[SchoolSpec | None, list[Problem]]:
    """Read the school layer: identity, schedules, holidays, client groups and band overrides."""
    display = _display(path, display_root)
    value, problems = load_file(path, display)
    r = FieldReader(display, problems)
    if problems:
        return None, problems
    doc = _document(r, value, "school")
    if doc is None:
        return None, problems
    r.keys(doc, "school file", ("school", "schedules", "holidays", "groups", "unknown_group", "serve", "bands"),
           ("school", "groups"))
    info = r.mapping(doc, "school") or YMap()
    if isinstance(info, YMap) and info:
        r.keys(info, "school", ("id", "name", "ward", "levels", "timezone", "contact"), ("id",))
    tz = r.typed(info, "timezone", str, "a time zone name", "Asia/Ho_Chi_Minh")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        r.problem(info.line_of("timezone"), "policy.bad_timezone", value=tz)
        tz = "Asia/Ho_Chi_Minh"
    contact = r.mapping(info, "contact") or {}
    if isinstance(contact, YMap):
        r.keys(contact, "school.contact", ("name", "phone", "email", "room", "note"))
    holidays = []
    raw_h = doc.get("holidays")
    if isinstance(raw_h, YList):
        for i, item in enumerate(raw_h):
            line = raw_h.line_of(i)
            if isinstance(item, YMap):
                r.keys(item, "holidays", ("from", "to", "name"), ("from",))
                first = r.date(item.get("from"), item.line_of("from"))
                last = r.date(item.get("to", item.get("from")), item.line_of("to"))
                name = str(item.get("name") or "")
            else:
                first = last = r.date(item, line)
                name = ""
            if first and last:
                holidays.append(Holiday(min(first, last), max(first, last), name))
    elif raw_h is not None:
        r.problem(doc.line_of("holidays"), "schema.type", key="holidays", expected="a list of dates",
                  got=_kind(raw_h))

    groups: dict = {}
    gm = r.mapping(doc, "groups") or YMap()
    for gid, m in gm.items():
        line = gm.line_of(gid)
        if not r.ident(gid, line):
            continue
        if not isinstance(m, YMap):
            r.problem(line, "schema.type", key=gid, expected="a mapping", got=_kind(m))
            continue
        r.keys(m, f"groups.{gid}", ("band", "clients", "allow", "deny", "walled_garden", "inspect_tls", "note"),
               ("band",))
        wg = m.get("walled_garden")
        if wg is not None and not isinstance(wg, bool):
            r.problem(m.line_of("walled_garden"), "schema.type", key="walled_garden", expected="yes/no",
                      got=_kind(wg))
            wg = None
        groups[gid] = GroupSpec(
            id=gid,
            band=r.typed(m, "band", str, "an age band"),
            clients=r.networks(m, "clients"),
            allow=r.names(m, "allow"),
            deny=r.names(m, "deny"),
            walled_garden=wg,
            inspect_tls=bool(r.typed(m, "inspect_tls", bool, "yes/no", False)),
            where=r.where(line),
        )
    unknown = r.typed(doc, "unknown_group", str, "a group name")
    if unknown is not None and unknown not in groups:
        r.problem(doc.line_of("unknown_group"), "policy.unknown_group_default", group=unknown)
        unknown = None

    bands: dict = {}
    bm = r.mapping(doc, "bands") or YMap()
    for bid, m in bm.items():
        if not isinstance(m, YMap):
            r.problem(bm.line_of(bid), "schema.type", key=bid, expected="a mapping", got=_kind(m))
            continue
        bands[bid] = _band(r, bid, m, school=True)

    levels = tuple(level for level, _ in r.str_list(info, "levels"))
    spec = SchoolSpec(
        id=r.typed(info, "id", str, "text", ""),
        name=r.typed(info, "name", str, "text", ""),
        ward=r.typed(info, "ward", str, "text", ""),
        levels=levels,
        timezone=tz,
        contact=dict(contact) if isinstance(contact, dict) else {},
        schedules=_schedules(r, r.mapping(doc, "schedules")),
        holidays=tuple(holidays),
        groups=groups,
        unknown_group=unknown,
        serve=r.networks(doc, "serve"),
        bands=bands,
        file=path,
        where=r.where(doc.line),
    )
    return spec, problems


def _display(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return str(path.resolve().relative_to(root.resolve()))
        except ValueError:
            pass
    return str(path)
