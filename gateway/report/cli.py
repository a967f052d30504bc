"""`school-gateway report` and `school-gateway department ...`: the Department's commands."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import ssl
import sys
from pathlib import Path

from gateway.report.compute import PeriodError, build_report, parse_period
from gateway.report.inventory import InventoryError, load_inventory, load_targets, to_file_sd, write_file_sd
from gateway.report.messages import tr
from gateway.report.queries import DEFAULT_JOB, fetch
from gateway.report.render import FORMATS, render

DEFAULT_GUARD_LISTEN = "127.0.0.1:9201"
DEFAULT_GUARD_UPSTREAM = "http://127.0.0.1:9090/api/v1/write"


def _lang_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lang", choices=("vi", "en"), default="vi", help="language (default vi)")


def cmd_targets(args: argparse.Namespace) -> int:
    lang = args.lang
    try:
        schools = load_inventory(Path(args.csv), args.csv)
    except InventoryError as exc:
        for problem in exc.problems:
            print("  ✗ " + problem.render(lang), file=sys.stderr)
        print(tr("targets.failed", lang, count=len(exc.problems)), file=sys.stderr)
        return 1
    agents = sum(1 for s in schools if s.address is None)
    if args.output:
        write_file_sd(schools, Path(args.output))
        print(tr("targets.written", lang, count=len(schools), agents=agents, path=args.output), file=sys.stderr)
    else:
        sys.stdout.write(json.dumps(to_file_sd(schools), ensure_ascii=False, indent=2) + "\n")
    return 0


def _format(args: argparse.Namespace) -> str:
    if args.format:
        return args.format
    suffix = Path(args.output).suffix.lower().lstrip(".") if args.output else ""
    return suffix if suffix in FORMATS else "html"


def cmd_report(args: argparse.Namespace) -> int:
    from gateway.report.prometheus import PrometheusClient, PrometheusError

    lang = args.lang
    try:
        period = parse_period(args.from_, args.to)
    except PeriodError as exc:
        print(tr(exc.key, lang, **exc.params), file=sys.stderr)
        return 2
    inventory = None
    if args.targets:
        try:
            inventory = load_targets(Path(args.targets))
        except (OSError, ValueError) as exc:
            print(tr("targets.bad_file", lang, path=args.targets, detail=str(exc)), file=sys.stderr)
            return 2
    try:
        client = PrometheusClient(args.prometheus, timeout=args.timeout)
        results = fetch(client, period, args.job)
    except PrometheusError as exc:
        print(tr("cli.prometheus_failed", lang, url=args.prometheus.split("@")[-1], detail=str(exc)),
              file=sys.stderr)
        return 1
    report = build_report(period, results, inventory=inventory, generated_at=dt.datetime.now(dt.UTC),
                          source=client.base, min_bundle_version=args.min_bundle_version)
    text = render(report, _format(args), lang)
    if args.output:
        # newline="" keeps the CSV's CRLF rows exactly as written
        Path(args.output).write_text(text, encoding="utf-8", newline="")
        print(tr("cli.written", lang, path=args.output), file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def cmd_credential(args: argparse.Namespace) -> int:
    from gateway.report.receiver_guard import set_credential

    password = set_credential(Path(args.credentials), args.school_id)
    print(tr("credential.created", args.lang, school=args.school_id), file=sys.stderr)
    print(password)
    return 0


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def cmd_guard(args: argparse.Namespace) -> int:
    from gateway.report.receiver_guard import CredentialsError, Guard, load_credentials, serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        credentials = load_credentials(Path(args.credentials), args.lang)
        inventory = load_targets(Path(args.targets)) if args.targets else None
    except (OSError, ValueError, CredentialsError) as exc:
        print(str(exc), file=sys.stderr)
        return 2
    tls = None
    if args.tls_cert:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.minimum_version = ssl.TLSVersion.TLSv1_2
        tls.load_cert_chain(args.tls_cert, args.tls_key)
    server = serve(_host_port(args.listen), Guard(credentials, inventory), args.upstream, tls=tls)
    host, port = server.server_address[:2]
    print(tr("guard.listening", args.lang, address=f"{host}:{port}", upstream=args.upstream,
             schools=len(credentials)), file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def add_commands(subparsers) -> None:
    """Register `report` and `department` on the `school-gateway` parser's subparsers object."""
    p = subparsers.add_parser("report", help="compliance report from the Department's Prometheus (HTML, CSV, JSON)")
    p.add_argument("--prometheus", required=True, metavar="URL",
                   help="Prometheus-compatible API base URL, e.g. http://127.0.0.1:9090 (user:pass@ for basic auth)")
    p.add_argument("--from", dest="from_", required=True, metavar="DATE", help="first day, YYYY-MM-DD (Vietnam time)")
    p.add_argument("--to", required=True, metavar="DATE", help="last day, YYYY-MM-DD, included to its end")
    p.add_argument("--format", choices=FORMATS, help="output format (default: from -o's suffix, else html)")
    p.add_argument("--targets", metavar="FILE", help="inventory targets.json: the registered schools "
                                                    "(default: the schools found in Prometheus)")
    p.add_argument("-o", "--output", metavar="FILE", help="write here instead of standard output")
    p.add_argument("--job", default=DEFAULT_JOB, help=f"scrape job of the boxes (default {DEFAULT_JOB})")
    p.add_argument("--min-bundle-version", type=float, metavar="N",
                   help="a bundle at least this new counts as current even if a newer one runs somewhere")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per query (default 120)")
    _lang_arg(p)
    p.set_defaults(func=cmd_report)

    d = subparsers.add_parser("department", help="Department tools: inventory targets, remote-write guard")
    dsub = d.add_subparsers(dest="department_command", required=True)
    t = dsub.add_parser("targets", help="schools.csv -> Prometheus file_sd targets JSON; exit 1 on any bad row")
    t.add_argument("csv", help="inventory CSV: id,name,ward,level,address (UTF-8, BOM allowed)")
    t.add_argument("-o", "--output", metavar="FILE", help="targets.json to write (atomically); default stdout")
    _lang_arg(t)
    t.set_defaults(func=cmd_targets)

    c = dsub.add_parser("credential", help="create or replace a school's remote-write password")
    c.add_argument("school_id")
    c.add_argument("--credentials", required=True, metavar="FILE", help="the guard's credentials file")
    _lang_arg(c)
    c.set_defaults(func=cmd_credential)

    g = dsub.add_parser("receiver-guard", help="accept remote write from schools' agents, each for its own school")
    g.add_argument("--listen", default=DEFAULT_GUARD_LISTEN, help=f"HOST:PORT (default {DEFAULT_GUARD_LISTEN})")
    g.add_argument("--upstream", default=DEFAULT_GUARD_UPSTREAM,
                   help=f"the real receiver's write URL (default {DEFAULT_GUARD_UPSTREAM})")
    g.add_argument("--credentials", required=True, metavar="FILE", help="school_id:hash lines (see `credential`)")
    g.add_argument("--targets", metavar="FILE", help="inventory targets.json: series must agree with it")
    g.add_argument("--tls-cert", metavar="PEM")
    g.add_argument("--tls-key", metavar="PEM")
    _lang_arg(g)
    g.set_defaults(func=cmd_guard)


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (`python -m gateway.report.cli`) until gateway/cli.py calls add_commands."""
    parser = argparse.ArgumentParser(prog="school-gateway")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
