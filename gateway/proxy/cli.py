"""CLI commands of the proxy (`school-gateway proxy`, `school-gateway ca init`), added by `add_commands`."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import signal
import sys
from pathlib import Path

from gateway.errors import ConfigError
from gateway.i18n import tr
from gateway.proxy import messages as _messages  # noqa: F401  (registers proxy.* strings)
from gateway.proxy.config import Address, ProxySettings, read_proxy_settings

log = logging.getLogger("gateway.proxy")


def add_commands(subparsers) -> None:
    """Register `proxy` and `ca init` on the `school-gateway` sub-command parser."""
    p = subparsers.add_parser("proxy", help="run the HTTP(S) filtering proxy on its own")
    p.add_argument("--config", help="gateway.yaml (default: built-in defaults and the shipped policy)")
    p.add_argument("--listen", help="listen address, e.g. 0.0.0.0:3128 (overrides proxy.listen, or "
                                    "proxy.transparent_listen with --mode transparent)")
    p.add_argument("--mode", choices=("explicit", "transparent", "both"), help="overrides proxy.mode")
    p.add_argument("--lang", choices=("vi", "en"), default="vi")
    p.set_defaults(func=cmd_proxy)

    ca = subparsers.add_parser("ca", help="the school CA for TLS inspection")
    ca_sub = ca.add_subparsers(dest="ca_command", required=True)
    init = ca_sub.add_parser("init", help="create this box's CA and print how to install it on devices")
    init.add_argument("--config", help="gateway.yaml (for proxy.ca.dir and the school's name)")
    init.add_argument("--dir", help="CA folder (default: proxy.ca.dir, else /var/lib/school-gateway/ca)")
    init.add_argument("--name", help="name shown in the certificate (default: the school's name)")
    init.add_argument("--days", type=int, default=1826, help="validity in days (default 1826, five years)")
    init.add_argument("--key-size", type=int, default=3072, choices=(2048, 3072, 4096))
    secret = init.add_mutually_exclusive_group()
    secret.add_argument("--passphrase-file", help="encrypt the key with the first line of this file")
    secret.add_argument("--ask-passphrase", action="store_true", help="encrypt the key with a typed passphrase")
    init.add_argument("--force", action="store_true", help="replace an existing CA")
    init.add_argument("--lang", choices=("vi", "en"), default="vi")
    init.set_defaults(func=cmd_ca_init)


def _print_problems(problems, lang: str) -> None:
    for p in problems:
        print(("  ⚠ " if p.warning else "  ✗ ") + p.render(lang), file=sys.stderr)


def load_config(path: Path | None):
    """(PolicyPaths, ProxySettings) from gateway.yaml, or the defaults without one. Raises ConfigError."""
    from gateway.policy.compile import PolicyPaths
    from gateway.settings import defaults, load_settings

    if path is None:
        base = defaults()
        return PolicyPaths(base.policy.department, base.policy.school, base.policy.cache_dir, Path.cwd()), \
            ProxySettings()
    try:
        settings = load_settings(path)
    except ConfigError as exc:
        others = [p for p in exc.problems
                  if not (p.key == "schema.unknown_key" and p.args.get("key") == "proxy")]
        if others or len(others) == len(exc.problems):
            raise
        # gateway.yaml has a proxy section the settings loader does not know yet: read it here.
        return _load_unwired(path)
    paths = PolicyPaths(settings.policy.department, settings.policy.school, settings.policy.cache_dir, Path.cwd())
    return paths, getattr(settings, "proxy", None) or ProxySettings()


def _load_unwired(path: Path):
    # Until settings.py reads `proxy:` itself (the lead wires read_proxy_settings there), the
    # standalone command reads the two sections it needs, with the same file-and-line problems.
    from gateway.policy.compile import PolicyPaths
    from gateway.policy.schema import FieldReader
    from gateway.policy.source import YMap, load_file
    from gateway.settings import defaults

    value, problems = load_file(path, str(path))
    r = FieldReader(str(path), problems)
    doc = value if isinstance(value, YMap) else YMap()
    proxy = read_proxy_settings(doc.get("proxy"), r, path.parent)
    if any(not p.warning for p in problems):
        raise ConfigError(problems)
    base = defaults()
    pol = doc.get("policy") if isinstance(doc.get("policy"), dict) else {}

    def rel(key: str, default):
        raw = pol.get(key)
        return (path.parent / raw).resolve() if raw else default

    paths = PolicyPaths(rel("department", base.policy.department), rel("school", base.policy.school),
                        rel("cache_dir", base.policy.cache_dir), Path.cwd())
    return paths, proxy or ProxySettings()


def cmd_proxy(args) -> int:
    from dataclasses import replace

    from gateway.core.snapshot import SnapshotHolder
    from gateway.policy.compile import load_policy

    lang = args.lang
    try:
        import mitmproxy  # noqa: F401
    except ImportError:
        print(tr("proxy.cli.no_mitmproxy", lang), file=sys.stderr)
        return 2
    try:
        paths, settings = load_config(Path(args.config) if args.config else None)
    except ConfigError as exc:
        _print_problems(exc.problems, lang)
        return 2
    if args.mode:
        settings = replace(settings, mode=args.mode)
    if args.listen:
        try:
            address = Address.parse(args.listen)
        except ValueError:
            print(tr("proxy.bad_address", lang, value=args.listen), file=sys.stderr)
            return 2
        field = "transparent_listen" if settings.mode == "transparent" else "listen"
        settings = replace(settings, **{field: address})
    try:
        snapshot = load_policy(paths)
    except ConfigError as exc:
        _print_problems(exc.problems, lang)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    holder = SnapshotHolder(snapshot)
    release_memory()

    async def main() -> None:
        from gateway.proxy.service import run_proxy

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)

        def reload() -> None:
            # SIGHUP: compile beside the running policy, swap on success; connections stay open.
            try:
                holder.swap(load_policy(paths))
                log.info("policy reloaded")
            except ConfigError as exc:
                log.error("policy reload rejected, the previous policy keeps serving:\n%s", exc.render("en"))

        loop.add_signal_handler(signal.SIGHUP, reload)

        def started(service) -> None:
            what = ", ".join(f"{k} {h}:{p}" for k, (h, p) in service.addresses.items() if k != "mitm")
            print(tr("proxy.cli.listening", lang, what=what), flush=True)

        await run_proxy(settings, holder, stop, started=started)

    try:
        import uvloop  # a faster event loop where it is installed
    except ImportError:
        uvloop = None
    try:
        if uvloop is not None:
            uvloop.run(main())
        else:
            asyncio.run(main())
    except OSError as exc:
        print(f"school-gateway proxy: {exc}", file=sys.stderr)
        return 1
    return 0


def release_memory() -> None:
    """Give the heap that compiling a big list left behind back to the system (glibc keeps it otherwise:
    ~50 MB of a 1M-name compile), so the long-running process holds only what it uses."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to do


def _school_name(paths) -> tuple[str, str]:
    try:
        from gateway.policy.schema import read_school

        spec, _ = read_school(paths.school, paths.display_root)
        if spec is not None:
            return spec.name or "School gateway", spec.id or ""
    except Exception:
        pass
    return "School gateway", ""


def cmd_ca_init(args) -> int:
    from gateway.proxy.ca import CaExists, create_ca, instructions

    lang = args.lang
    try:
        paths, settings = load_config(Path(args.config) if args.config else None)
    except ConfigError as exc:
        _print_problems(exc.problems, lang)
        return 2
    folder = Path(args.dir) if args.dir else settings.ca_dir
    school, school_id = _school_name(paths)
    name = args.name or f"{school} CA" + (f" ({school_id})" if school_id else "")
    passphrase = None
    if args.passphrase_file:
        passphrase = Path(args.passphrase_file).read_text(encoding="utf-8").splitlines()[0].strip().encode()
    elif args.ask_passphrase:
        first = getpass.getpass("Passphrase / Mật khẩu: ")
        second = getpass.getpass("Again / Nhập lại: ")
        if first != second:
            print(tr("proxy.ca.passphrase_mismatch", lang), file=sys.stderr)
            return 2
        passphrase = first.encode()
    try:
        files = create_ca(folder, common_name=name, organisation=school, passphrase=passphrase or None,
                          days=args.days, key_size=args.key_size, force=args.force)
    except CaExists:
        print(tr("proxy.ca.exists", lang, dir=folder), file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"school-gateway ca init: {exc}", file=sys.stderr)
        return 1
    url = None
    if settings.blockpage_listen is not None:
        url = f"http://{settings.blockpage_listen}/school-ca.crt"
    print(instructions(files, lang, url))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """A parser with only the proxy's commands (tests, and `python -m gateway.proxy.cli`)."""
    parser = argparse.ArgumentParser(prog="school-gateway")
    add_commands(parser.add_subparsers(dest="command", required=True))
    return parser


if __name__ == "__main__":
    ns = build_parser().parse_args()
    sys.exit(ns.func(ns) or 0)
