"""`school-gateway bundle keygen|build|verify|publish` (Department) and `update --once` (a box, from cron)."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from pathlib import Path

from gateway import __version__
from gateway.errors import ConfigError
from gateway.i18n import tr
from gateway.shipped import shipped
from gateway.updater.bundle import DEFAULT_VALID, BundleRefused, build_bundle, inspect_bundle, publish
from gateway.updater.keys import KeyFormatError, key_id, load_private_key, parse_public_key, public_b64, write_key_pair
from gateway.updater.manifest import POINTER, parse_time
from gateway.updater.reasons import UpdateFailure

DEFAULT_CONFIG = Path("/etc/school-gateway/gateway.yaml")
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BUSY = 0, 1, 2, 3


def _problems(problems, lang: str) -> None:
    for p in problems:
        print(("  ⚠ " if p.warning else "  ✗ ") + p.render(lang))


def cmd_keygen(args) -> int:
    lang = args.lang
    prefix = Path(args.name)
    private, public = prefix.with_name(prefix.name + ".key"), prefix.with_name(prefix.name + ".pub")
    for path in (private, public):
        if path.exists():
            print(tr("bundle.exists", lang, path=path), file=sys.stderr)
            return EXIT_FAILED
    private.parent.mkdir(parents=True, exist_ok=True)
    key = write_key_pair(private, public)
    print(tr("bundle.keygen_done", lang, private=private, public=public, b64=public_b64(key), key_id=key_id(key)))
    return EXIT_OK


def _private_key(path: str, lang: str):
    try:
        return load_private_key(Path(path))
    except KeyFormatError as exc:
        print(tr("bundle.bad_key_file", lang, path=path, why=exc), file=sys.stderr)
        return None


def cmd_build(args) -> int:
    lang = args.lang
    key = _private_key(args.key, lang)
    if key is None:
        return EXIT_USAGE
    created = dt.datetime.now(dt.UTC).replace(microsecond=0)
    if args.expires:
        try:
            expires = dt.datetime.fromtimestamp(parse_time(args.expires), dt.UTC)
        except ValueError:
            print(tr("bundle.bad_expiry", lang, value=args.expires), file=sys.stderr)
            return EXIT_USAGE
    else:
        expires = created + (dt.timedelta(days=args.valid_days) if args.valid_days else DEFAULT_VALID)
    department = Path(args.department) if args.department else shipped("policies/department")
    blocklists = Path(args.blocklists) if args.blocklists else shipped("blocklists")
    school = Path(args.school) if args.school else shipped("policies/school.example.yaml")
    try:
        path, manifest = build_bundle(department, blocklists, key, args.version, Path(args.out), school=school,
                                      created=created, expires=expires, min_gateway=args.min_gateway,
                                      compiled=not args.no_compiled)
    except ConfigError as exc:
        print(tr("bundle.refused", lang, count=len(exc.problems)))
        _problems(exc.problems, lang)
        return EXIT_FAILED
    except BundleRefused as exc:
        print(exc.render(lang), file=sys.stderr)
        return EXIT_FAILED
    print(tr("bundle.built", lang, path=path, version=manifest["version"], files=len(manifest["files"]),
             size=path.stat().st_size, expires=manifest["expires"]))
    return EXIT_OK


def cmd_verify(args) -> int:
    lang = args.lang
    try:
        keys = tuple(parse_public_key(k, Path.cwd()) for k in args.key)
    except KeyFormatError as exc:
        print(tr("updater.bad_key", lang, value="", why=exc), file=sys.stderr)
        return EXIT_USAGE
    if not Path(args.bundle).is_file():
        print(f"{args.bundle}: {tr('file.missing', lang)}", file=sys.stderr)
        return EXIT_USAGE
    try:
        manifest, key = inspect_bundle(Path(args.bundle), keys)
    except UpdateFailure as exc:
        print(tr("bundle.verify_failed", lang, why=exc.render(lang)))
        return EXIT_FAILED
    files = manifest["files"]
    print(tr("bundle.verify_ok", lang, key_id=key_id(key), version=manifest["version"], created=manifest["created"],
             expires=manifest["expires"], min_gateway=manifest.get("min_gateway", "0"),
             policy=manifest.get("policy_version", "?"), files=len(files), size=sum(f["size"] for f in files)))
    for entry in files:
        print(f"    {entry['sha256'][:16]}  {entry['size']:>10}  {entry['path']}")
    return EXIT_OK


def cmd_publish(args) -> int:
    lang = args.lang
    key = _private_key(args.key, lang)
    if key is None:
        return EXIT_USAGE
    try:
        pointer = publish(Path(args.bundle), Path(args.dir), key)
    except UpdateFailure as exc:
        print(tr("bundle.verify_failed", lang, why=exc.render(lang)), file=sys.stderr)
        return EXIT_FAILED
    except BundleRefused as exc:
        print(exc.render(lang), file=sys.stderr)
        return EXIT_FAILED
    print(tr("bundle.published", lang, version=pointer["version"], bundle=Path(args.dir) / pointer["file"],
             pointer=Path(args.dir) / POINTER, dir=args.dir))
    return EXIT_OK


def _box_config(path: Path, lang: str):
    """(UpdaterSettings | None, school file, list cache dir) from gateway.yaml, or None after printing why."""
    from gateway.policy.schema import FieldReader
    from gateway.policy.source import YMap, load_file
    from gateway.settings import defaults, load_settings
    from gateway.updater.settings import read_updater_settings

    settings = None
    try:
        settings = load_settings(path)
    except ConfigError as exc:
        # Until gateway.settings knows the `updater:` section it rejects it as an unknown key; any
        # other problem is real and stops here.
        rest = [p for p in exc.problems if not (p.key == "schema.unknown_key" and p.args.get("key") == "updater")]
        if rest:
            _problems(exc.problems, lang)
            return None
    if settings is not None and hasattr(settings, "updater"):
        policy = settings.policy
        return settings.updater, policy.school, policy.cache_dir
    value, problems = load_file(path, str(path))
    reader = FieldReader(str(path), problems)
    doc = value if isinstance(value, YMap) else YMap()
    section = doc.get("updater")
    updater = read_updater_settings(section, reader, path.parent)
    if any(not p.warning for p in problems):
        _problems(problems, lang)
        return None
    if settings is not None:
        return updater, settings.policy.school, settings.policy.cache_dir
    base = defaults().policy
    policy = doc.get("policy") if isinstance(doc.get("policy"), YMap) else {}

    def rel(key: str, default):
        raw = policy.get(key)
        return (path.parent / str(raw)).resolve() if raw else default

    return updater, rel("school", base.school), rel("cache_dir", base.cache_dir)


def cmd_update(args) -> int:
    from gateway.updater.layer import make_validator
    from gateway.updater.updater import Updater

    lang = args.lang
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    path = Path(args.config) if args.config else DEFAULT_CONFIG
    if not path.is_file():
        print(f"{path}: {tr('file.missing', lang)}", file=sys.stderr)
        return EXIT_USAGE
    found = _box_config(path, lang)
    if found is None:
        return EXIT_USAGE
    settings, school, cache_dir = found
    if settings is None:
        print(tr("updater.not_configured", lang), file=sys.stderr)
        return EXIT_USAGE
    try:
        updater = Updater(settings, validate=make_validator(school, cache_dir), lang=lang)
    except ConfigError as exc:
        _problems(exc.problems, lang)
        return EXIT_USAGE
    updater.recover()
    outcome = updater.poll_once()
    print(tr("update.outcome", lang, outcome=outcome))
    installed = updater.installed()
    if installed:
        print(tr("updater.unchanged" if outcome != "updated" else "updater.applied", lang,
                 version=installed.get("version"), created=installed.get("created"),
                 expires=installed.get("expires")))
    if outcome in ("updated", "unchanged"):
        return EXIT_OK
    return EXIT_BUSY if outcome == "busy" else EXIT_FAILED


def add_commands(subparsers) -> None:
    """Register `bundle` and `update` on the top-level `school-gateway` subparsers (each sets args.func)."""
    def lang(p):
        p.add_argument("--lang", choices=("vi", "en"), default="vi", help="message language (default vi)")

    bundle = subparsers.add_parser("bundle", help="Department policy bundles: keygen, build, verify, publish")
    sub = bundle.add_subparsers(dest="bundle_command", required=True)

    p = sub.add_parser("keygen", help="write a new Ed25519 key pair NAME.key (0600) and NAME.pub")
    p.add_argument("name", nargs="?", default="department", help="file name prefix (default: department)")
    lang(p)
    p.set_defaults(func=cmd_keygen)

    p = sub.add_parser("build", help="pack and sign the Department layer (refused if it does not compile)")
    p.add_argument("--key", required=True, help="private key file (from `bundle keygen`)")
    p.add_argument("--version", required=True, type=int,
                   help="bundle version, a whole number above every earlier one, e.g. 2026120101")
    p.add_argument("--out", default=".", help="bundle file, or a folder for school-gateway-bundle-VERSION.tar.gz")
    p.add_argument("--department", help="Department layer folder (default: the shipped policies/department)")
    p.add_argument("--blocklists", help="category lists folder (default: the shipped blocklists)")
    p.add_argument("--school", help="school file to test-compile with (default: the shipped example)")
    p.add_argument("--valid-days", type=int, help=f"days until it expires (default {DEFAULT_VALID.days})")
    p.add_argument("--expires", help="expiry as a UTC time, e.g. 2027-01-31T00:00:00Z")
    p.add_argument("--min-gateway", default=__version__, help=f"oldest gateway that may use it (default {__version__})")
    p.add_argument("--no-compiled", action="store_true", help="leave out the compiled list form")
    lang(p)
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("verify", help="check a bundle's signature and files against public keys; show it")
    p.add_argument("bundle")
    p.add_argument("--key", action="append", required=True, help="public key (base64 or .pub file); repeatable")
    lang(p)
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("publish", help="lay out a bundle and a signed latest.json in DIR for a static web server")
    p.add_argument("bundle")
    p.add_argument("dir")
    p.add_argument("--key", required=True, help="private key file that signed the bundle")
    lang(p)
    p.set_defaults(func=cmd_publish)

    p = subparsers.add_parser("update", help="fetch and apply the newest Department bundle once (cron, CI)")
    p.add_argument("--once", action="store_true", required=True, help="one poll, then exit (0 = up to date)")
    p.add_argument("--config", help=f"gateway.yaml (default {DEFAULT_CONFIG})")
    lang(p)
    p.set_defaults(func=cmd_update)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="school-gateway", description="Department policy bundles")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
