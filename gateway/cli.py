"""`school-gateway`: the one entry point (validate, explain, run, ...)."""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import sys
from pathlib import Path

from gateway import __version__
from gateway.core.decide import decide, identify
from gateway.core.model import Action
from gateway.core.names import NameError_, normalize
from gateway.errors import ConfigError
from gateway.i18n import tr
from gateway.lists.formats import read_list
from gateway.policy.compile import PolicyPaths, load_policy
from gateway.shipped import shipped

DEFAULT_SCHOOL = Path("/etc/school-gateway/school.yaml")


def _default_school() -> Path:
    return DEFAULT_SCHOOL if DEFAULT_SCHOOL.exists() else shipped("policies/school.example.yaml")


def _paths(args) -> PolicyPaths:
    department = Path(args.department) if args.department else shipped("policies/department")
    school = Path(args.school) if args.school else _default_school()
    return PolicyPaths(department, school, None, Path.cwd())


def _print_problems(problems, lang: str, out=None) -> None:
    out = out or sys.stdout
    for p in problems:
        print(("  ⚠ " if p.warning else "  ✗ ") + p.render(lang), file=out)


def cmd_validate(args) -> int:
    lang = args.lang
    paths = _paths(args)
    failed = False
    for raw in args.paths:
        path = Path(raw)
        if path.is_dir() and (path / "baseline.yaml").exists():
            paths = PolicyPaths(path, paths.school, None, paths.display_root)
        elif path.suffix in (".yaml", ".yml"):
            paths = PolicyPaths(paths.department, path, None, paths.display_root)
        elif path.exists():
            parsed = read_list(path, raw)
            print(f"{raw}: {len(parsed.entries)} / {parsed.lines}")
            for err in parsed.first_errors:
                print(f"  ✗ {err}")
            failed |= parsed.bad_lines > 0
        else:
            print(f"  ✗ {raw}: {tr('file.missing', lang)}")
            failed = True
    try:
        snap = load_policy(paths)
    except ConfigError as exc:
        _print_problems(exc.problems, lang)
        if exc.warnings:
            print(tr("validate.warnings", lang, count=len(exc.warnings)))
            _print_problems(exc.warnings, lang)
        print(tr("validate.failed", lang, count=len(exc.problems)))
        return 1
    if snap.warnings:
        print(tr("validate.warnings", lang, count=len(snap.warnings)))
        _print_problems(snap.warnings, lang)
    print(tr("validate.ok", lang, files=len(snap.files), categories=len(snap.categories),
             entries=len(snap.index), groups=len(snap.groups)))
    return 1 if failed else 0


def _parse_at(text: str | None, tz) -> dt.datetime:
    if not text:
        return dt.datetime.now(dt.UTC)
    value = dt.datetime.fromisoformat(text.strip())
    if value.tzinfo is None:
        value = value.replace(tzinfo=tz)
    return value


def cmd_explain(args) -> int:
    lang = args.lang
    try:
        snap = load_policy(_paths(args))
    except ConfigError as exc:
        _print_problems(exc.problems, lang, sys.stderr)
        return 1
    if args.ref:
        return _explain_ref(args, snap)
    if not args.name or not args.client:
        print(tr("explain.usage", lang), file=sys.stderr)
        return 2
    try:
        name = normalize(args.name)
    except NameError_ as exc:
        print(tr("policy.bad_name", lang, value=args.name, why=str(exc)), file=sys.stderr)
        return 2
    try:
        now = _parse_at(args.at, snap.tz)
    except ValueError:
        print(tr("policy.bad_date", lang, value=args.at), file=sys.stderr)
        return 2
    group = identify(snap, args.client)
    rows = [(tr("explain.name", lang), name), (tr("explain.client", lang), args.client)]
    if group is None:
        for label, value in rows:
            print(f"{label:18} {value}")
        print(tr("explain.not_served", lang, client=args.client))
        return 0
    d = decide(snap, group, name, now, clock_trusted=not args.clock_untrusted)
    band = snap.bands[d.band]
    local = now.astimezone(snap.tz)
    rows += [
        (tr("explain.time", lang), local.strftime("%Y-%m-%d %H:%M %Z") +
         (" " + tr("explain.clock_untrusted", lang) if args.clock_untrusted else "")),
        (tr("explain.group", lang), d.group),
        (tr("explain.band", lang), f"{band.name.get(lang)} ({d.band})"),
        (tr("explain.decision", lang),
         f"{tr('action.' + d.action.value, lang)} — {tr('reason.' + d.reason.value, lang)}"),
    ]
    if d.category:
        rows.append((tr("explain.category", lang), f"{snap.categories[d.category].name.get(lang)} ({d.category})"))
    if d.rule:
        rows.append((tr("explain.rule", lang), d.rule))
    if d.source:
        line = _list_line(d.source)
        rows.append((tr("explain.source", lang), d.source + (f"  «{line}»" if line else "")))
    if d.action is Action.REWRITE:
        rows.append((tr("explain.rewrite", lang), f"{d.rewrite_to} ({d.engine})"))
    for label, value in rows:
        print(f"{label:18} {value}")
    return 0


def _explain_ref(args, snap) -> int:
    """A block page's reference code -> the time, rule, category and list line that decided."""
    from gateway.proxy.ref import decode_ref, format_ref

    key_path = None
    if getattr(args, "config", None):
        settings = _settings(args)
        if settings.proxy is not None:
            key_path = settings.proxy.ref_key
    try:
        info = decode_ref(args.ref, snapshot=snap, key_path=key_path, root=Path.cwd())
    except ValueError:
        print(tr("proxy.ref.bad", args.lang, code=args.ref), file=sys.stderr)
        return 2
    for label, value in format_ref(info, args.lang):
        print(f"{label:18} {value}")
    return 0


def _list_line(source: str) -> str | None:
    path, _, line = source.rpartition(":")
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as fh:
            for number, text in enumerate(fh, 1):
                if number == int(line):
                    return text.strip()
    except (OSError, ValueError):
        return None
    return None


def cmd_run(args) -> int:
    from gateway.app import run
    from gateway.settings import defaults, load_settings

    try:
        settings = load_settings(Path(args.config)) if args.config else defaults()
    except ConfigError as exc:
        _print_problems(exc.problems, args.lang, sys.stderr)
        return 2
    if args.no_proxy and settings.proxy is not None:
        import dataclasses

        settings = dataclasses.replace(settings, proxy=None)  # the proxy runs as its own service
    if settings.embedded:
        print("school-gateway: no --config given: using the embedded default configuration (DNS on "
              "127.0.0.1:1053, the shipped policy, upstreams from /etc/resolv.conf)", flush=True)
    return run(settings)


def _settings(args):
    from gateway.settings import defaults, load_settings

    return load_settings(Path(args.config)) if getattr(args, "config", None) else defaults()


def cmd_log(args) -> int:
    from gateway.app import query_log_path
    from gateway.querylog import QueryLog

    settings = _settings(args)
    path = query_log_path(settings)
    if not path.exists():
        print(tr("log.none", args.lang, path=str(path)))
        return 1
    qlog = QueryLog(path, settings.query_log.privacy, settings.query_log.retention_days)
    since = None
    if args.since:
        since = dt.datetime.fromisoformat(args.since).replace(tzinfo=dt.timezone(dt.timedelta(hours=7))).timestamp()
    if settings.query_log.privacy == "counts":
        for hour, band, action, category, n in qlog.counts():
            print(f"{dt.datetime.fromtimestamp(hour, dt.UTC).isoformat()} {band} {action} {category} {n}")
        return 0
    for ts, client, name, qtype, band, action, reason, category in qlog.search(
            client=args.client, name=args.name, action=args.action, since=since, limit=args.limit):
        when = dt.datetime.fromtimestamp(ts, dt.UTC).astimezone(dt.timezone(dt.timedelta(hours=7)))
        print(f"{when:%Y-%m-%d %H:%M:%S} {client or '-':15} {band:9} {action:8} {category or reason or '-':14} "
              f"{name or '-'} ({qtype})")
    return 0


def cmd_audit(args) -> int:
    from gateway.app import state_dir
    from gateway.audit import AuditTrail

    records = AuditTrail(state_dir(_settings(args)) / "audit.jsonl").records()
    if not records:
        print(tr("audit.none", args.lang))
        return 0
    for r in records:
        print(f"{r['time']}  {(r.get('old_fingerprint') or '-')[:12]} -> {r['fingerprint'][:12]}")
        for change in r.get("changes", []):
            print(f"    {change}")
    return 0


BUILT_IN = ("validate", "explain", "run", "log", "audit")
EXTRA_COMMANDS = ("gateway.report.cli", "gateway.updater.cli", "gateway.proxy.cli", "gateway.doctor")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; given a built-in `command`, the other parts' modules are not imported
    (a gateway's start should not pay for the report's and updater's imports)."""
    parser = argparse.ArgumentParser(prog="school-gateway", description="School network-safety gateway")
    parser.add_argument("--version", action="version", version=f"school-gateway {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def policy_args(p):
        p.add_argument("--school", help="school policy file (default /etc/school-gateway/school.yaml, "
                                        "else the shipped example)")
        p.add_argument("--department", help="Department layer folder (default: the shipped baseline)")
        p.add_argument("--lang", choices=("vi", "en"), default="vi", help="message language (default vi)")

    p = sub.add_parser("validate", help="check policy files and lists; exit 1 on any error")
    p.add_argument("paths", nargs="*", help="school YAML, Department folder, or list files")
    policy_args(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("explain", help="why is NAME allowed or blocked for a client? (or: --ref CODE)")
    p.add_argument("name", nargs="?")
    p.add_argument("--client", help="client IP address")
    p.add_argument("--ref", help="a block page's reference code")
    p.add_argument("--config", help="gateway.yaml (for the reference-code key)")
    p.add_argument("--at", help='time, e.g. "2026-12-01 10:00" (school time zone); default now')
    p.add_argument("--clock-untrusted", action="store_true", help="decide as if the clock were not synchronised")
    policy_args(p)
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("run", help="serve DNS (UDP and TCP) with the policy")
    p.add_argument("--config", help="gateway.yaml (default: the embedded default configuration)")
    p.add_argument("--no-proxy", action="store_true",
                   help="do not start the proxy of the proxy: section (it runs as `school-gateway proxy`)")
    p.add_argument("--lang", choices=("vi", "en"), default="vi")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("log", help="search the local query log (when enabled in gateway.yaml)")
    p.add_argument("--config")
    p.add_argument("--client")
    p.add_argument("--name", help="part of a domain name")
    p.add_argument("--action", choices=("allow", "block", "rewrite", "refused", "local"))
    p.add_argument("--since", help='e.g. "2026-12-01 07:00" (Hanoi time)')
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--lang", choices=("vi", "en"), default="vi")
    p.set_defaults(func=cmd_log)

    p = sub.add_parser("audit", help="list recorded policy changes (what was blocked or allowed, and when)")
    p.add_argument("--config")
    p.add_argument("--lang", choices=("vi", "en"), default="vi")
    p.set_defaults(func=cmd_audit)

    for module in () if command in BUILT_IN else EXTRA_COMMANDS:
        try:
            add = importlib.import_module(module).add_commands
        except (ImportError, AttributeError):
            continue  # an optional part that is not installed (e.g. the proxy extra)
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    command = next((w for w in words if not w.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
