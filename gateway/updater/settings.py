"""The `updater:` section of gateway.yaml -> frozen UpdaterSettings; every problem names file and line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gateway.policy.schema import FieldReader
from gateway.policy.source import YMap
from gateway.updater import messages as _messages  # noqa: F401  (registers the updater's messages)
from gateway.updater.fetch import valid_mirror
from gateway.updater.keys import KeyFormatError, parse_public_key, public_from_b64

KEYS = ("enabled", "mirrors", "interval", "timeout", "max_bytes", "trusted_keys", "state_dir")


@dataclass(frozen=True, slots=True)
class UpdaterSettings:
    mirrors: tuple[str, ...]  # base URLs; latest.json is fetched from each in order until one works
    interval: float = 900.0  # seconds between polls, jitter ±20% applied
    timeout: float = 30.0  # per connection attempt and per read
    max_bytes: int = 200 * 1024 * 1024  # largest bundle file accepted (and largest unpacked total ×4)
    trusted_keys: tuple[str, ...] = ()  # base64 raw Ed25519 public keys, or absolute paths to key files
    state_dir: Path = Path("/var/lib/school-gateway")


def read_updater_settings(m: YMap | None, r: FieldReader, base_dir: Path) -> UpdaterSettings | None:
    """Read gateway.yaml's `updater:` map; None when it is absent or `enabled: no`.

    Problems go to `r` (the caller raises ConfigError if there are any); relative key and state paths
    are resolved against `base_dir` (the folder of gateway.yaml).
    """
    if m is None:
        return None
    if not isinstance(m, YMap):
        r.problem(None, "schema.type", key="updater", expected="a mapping (key: value)", got=type(m).__name__)
        return None
    before = len([p for p in r.problems if not p.warning])
    enabled = r.typed(m, "enabled", bool, "yes/no", True)
    r.keys(m, "updater", KEYS, ("mirrors", "trusted_keys") if enabled else ())
    if not enabled:
        return None
    mirrors = []
    for url, where in r.str_list(m, "mirrors"):
        url = url.strip()
        if not valid_mirror(url):
            r.problem(where.line, "updater.bad_mirror", value=url)
            continue
        mirrors.append(url)
    keys = []
    for value, where in r.str_list(m, "trusted_keys"):
        value = value.strip()
        try:
            parse_public_key(value, base_dir)
        except KeyFormatError as exc:
            r.problem(where.line, "updater.bad_key", value=value, why=str(exc))
            continue
        # Paths are kept absolute so the Updater does not depend on the working directory.
        keys.append(value if public_from_b64(value) is not None or Path(value).is_absolute() else str(base_dir / value))
    if "mirrors" in m and not mirrors:
        r.problem(m.line_of("mirrors"), "schema.missing_key", key="mirrors", where="updater")
    if "trusted_keys" in m and not keys and len(r.problems) == before:
        r.problem(m.line_of("trusted_keys"), "schema.missing_key", key="trusted_keys", where="updater")
    defaults = UpdaterSettings(mirrors=())

    def positive(key: str, types, default):
        value = r.typed(m, key, types, "a number", default)
        if value is not default and value <= 0:
            r.problem(m.line_of(key), "updater.positive", key=key)
            return default
        return value

    interval = float(positive("interval", (int, float), defaults.interval))
    timeout = float(positive("timeout", (int, float), defaults.timeout))
    max_bytes = int(positive("max_bytes", int, defaults.max_bytes))
    state_raw = r.typed(m, "state_dir", str, "a folder path")
    state_dir = (base_dir / state_raw).resolve() if state_raw else defaults.state_dir
    if len([p for p in r.problems if not p.warning]) > before:
        return None
    return UpdaterSettings(mirrors=tuple(mirrors), interval=interval, timeout=timeout, max_bytes=max_bytes,
                           trusted_keys=tuple(keys), state_dir=state_dir)
