"""Block reference codes: what decided, packed with a per-box HMAC into 20 base32 characters, no personal data.

A code carries only: the minute (UTC), the reason, the age band, the category, which policy or list
file and which line of it decided, six bits of the policy fingerprint, and a 30-bit HMAC keyed by a
secret that never leaves the box. No address, device, user or host name: the code can be read aloud
or written on paper by a child and still says nothing about who was blocked or where they went.
School IT turns it back with `school-gateway explain --ref CODE` (decode_ref below).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from gateway.core.model import Decision, Reason
from gateway.proxy import messages as _messages  # noqa: F401  (registers proxy.ref.* strings)

# Crockford's base32: no I, L, O, U, so a code read aloud or copied by hand survives (I/L -> 1, O -> 0).
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_DECODE = {c: i for i, c in enumerate(ALPHABET)}
_DECODE.update({"O": 0, "I": 1, "L": 1})

EPOCH = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
REASONS = tuple(Reason)  # index = position in the precedence table; stable because the enum is ordered
# field widths in bits, most significant first; 100 bits = 20 characters
_FIELDS = (("minute", 24), ("reason", 4), ("band", 3), ("category", 6), ("file", 5), ("line", 22),
           ("policy", 6))
_MAC_BITS = 30
_PAYLOAD_BITS = sum(w for _, w in _FIELDS)
CODE_CHARS = (_PAYLOAD_BITS + _MAC_BITS) // 5


def load_key(path: Path, create: bool = True) -> bytes:
    """The box's reference-code key: 32 random bytes in a 0600 file, made on first use."""
    try:
        data = path.read_bytes()
        if len(data) >= 16:
            return data
    except FileNotFoundError:
        if not create:
            raise
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
    try:
        os.link(tmp, path)  # never replaces a key another process made meanwhile
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_bytes()


def _index(items, value) -> int:
    """1-based position of `value` in `items`, 0 when absent (so 0 always means "none")."""
    for i, item in enumerate(items):
        if item == value:
            return i + 1
    return 0


def _file_and_line(decision: Decision, files: tuple[str, ...]) -> tuple[int, int]:
    # The list line that matched, else the policy line of the rule ("school.yaml:23 bands...").
    where = decision.source
    if not where and decision.rule and ":" in decision.rule.split(" ", 1)[0]:
        where = decision.rule.split(" ", 1)[0]
    if not where:
        return 0, 0
    path, _, line = where.rpartition(":")
    try:
        number = int(line)
    except ValueError:
        return 0, 0
    index = 0
    for i, name in enumerate(files):
        if name == path or name.startswith(path + "/"):
            index = i + 1
            break
    return min(index, 31), min(number, (1 << 22) - 1)


def make_ref(decision: Decision, snapshot, now: dt.datetime, key: bytes) -> str:
    """The reference code for a block shown at `now` (aware)."""
    minute = max(0, int((now - EPOCH).total_seconds() // 60)) & ((1 << 24) - 1)
    file, line = _file_and_line(decision, tuple(snapshot.files))
    values = {
        "minute": minute,
        "reason": REASONS.index(decision.reason),
        "band": min(_index(list(snapshot.bands), decision.band), 7),
        "category": min(_index(list(snapshot.categories), decision.category), 63),
        "file": file,
        "line": line,
        "policy": int(snapshot.fingerprint[:2] or "0", 16) & 0x3F,
    }
    payload = 0
    for name, width in _FIELDS:
        payload = (payload << width) | (values[name] & ((1 << width) - 1))
    value = (payload << _MAC_BITS) | _mac(key, payload)
    chars = []
    for _ in range(CODE_CHARS):
        chars.append(ALPHABET[value & 31])
        value >>= 5
    code = "".join(reversed(chars))
    return "-".join(code[i:i + 5] for i in range(0, CODE_CHARS, 5))


def _mac(key: bytes, payload: int) -> int:
    digest = hmac.new(key, payload.to_bytes((_PAYLOAD_BITS + 7) // 8, "big"), hashlib.sha256).digest()
    return int.from_bytes(digest[:4], "big") >> (32 - _MAC_BITS)


def decode_ref(code: str, *, snapshot=None, key: bytes | None = None, key_path: Path | None = None,
               root: Path | None = None) -> dict:
    """Turn a reference code back into what decided. Raises ValueError when it is not a code.

    With `key` (or `key_path`, default the box's key file) the HMAC is checked: `valid` is True,
    False (forged or mistyped) or None (no key to check with). With `snapshot` the indexes become
    names: band, category, the file and the text of the list line, the rule; `policy_changed` says
    whether the policy in force is the one that made the code (else indexes may point elsewhere).
    Snapshot file names are relative to the policy's display root: `root` (default: the working folder).
    """
    text = "".join(ch for ch in code.upper() if ch not in "- \t")
    if len(text) != CODE_CHARS or any(ch not in _DECODE for ch in text):
        raise ValueError(f"not a reference code: {code!r} (expected {CODE_CHARS} letters and digits)")
    value = 0
    for ch in text:
        value = (value << 5) | _DECODE[ch]
    mac = value & ((1 << _MAC_BITS) - 1)
    payload = value >> _MAC_BITS
    fields = {}
    rest = payload
    for name, width in reversed(_FIELDS):
        fields[name] = rest & ((1 << width) - 1)
        rest >>= width
    if key is None:
        if key_path is None:
            from gateway.proxy.config import state_dir
            key_path = state_dir() / "ref.key"
        try:
            key = load_key(key_path, create=False)
        except OSError:
            key = None
    valid = None if key is None else hmac.compare_digest(_mac(key, payload).to_bytes(4, "big"),
                                                         mac.to_bytes(4, "big"))
    if fields["reason"] >= len(REASONS):
        raise ValueError(f"not a reference code: {code!r} (unknown reason)")
    when = EPOCH + dt.timedelta(minutes=fields["minute"])
    out: dict = {
        "code": "-".join(text[i:i + 5] for i in range(0, CODE_CHARS, 5)),
        "valid": valid,
        "time": when.isoformat(),
        "reason": REASONS[fields["reason"]].value,
        "band_index": fields["band"],
        "category_index": fields["category"],
        "file_index": fields["file"],
        "line": fields["line"] or None,
        "policy_bits": fields["policy"],
    }
    if snapshot is not None:
        out["time_local"] = when.astimezone(snapshot.tz).strftime("%Y-%m-%d %H:%M %Z")
        out["policy_changed"] = (int(snapshot.fingerprint[:2] or "0", 16) & 0x3F) != fields["policy"]
        bands = list(snapshot.bands)
        cats = list(snapshot.categories)
        band = bands[fields["band"] - 1] if 0 < fields["band"] <= len(bands) else None
        cat = cats[fields["category"] - 1] if 0 < fields["category"] <= len(cats) else None
        out["band"] = band
        out["category"] = cat
        files = tuple(snapshot.files)
        file = files[fields["file"] - 1] if 0 < fields["file"] <= len(files) else None
        out["file"] = file
        if file and fields["line"]:
            full = Path(file) if root is None or Path(file).is_absolute() else root / file
            out["list_line"] = _line_text(str(full), fields["line"])
        out["rule"] = _rule(snapshot, REASONS[fields["reason"]], band, cat)
    return out


def _line_text(path: str, number: int) -> str | None:
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as fh:
            for i, text in enumerate(fh, 1):
                if i == number:
                    return text.strip()
    except OSError:
        return None
    return None


def _rule(snapshot, reason: Reason, band: str | None, category: str | None) -> str | None:
    policy = snapshot.bands.get(band) if band else None
    if reason is Reason.MANDATORY and category:
        return f"categories.{category} (mandatory)"
    if reason is Reason.CATEGORY and policy is not None and category:
        return policy.blocked.get(category)
    if reason is Reason.SCHEDULE and policy is not None and category:
        for restriction in policy.restricted:
            if category in restriction.categories:
                return restriction.rule
    if reason is Reason.WALLED_GARDEN and band:
        return f"bands.{band}.walled_garden"
    return None


def format_ref(info: dict, lang: str = "vi") -> list[tuple[str, str]]:
    """(label, value) rows for `school-gateway explain --ref`, in the explain command's style."""
    from gateway.i18n import tr

    rows = [(tr("proxy.ref.code", lang), info["code"]),
            (tr("proxy.ref.valid", lang), tr({True: "proxy.ref.valid_yes", False: "proxy.ref.valid_no",
                                             None: "proxy.ref.valid_unknown"}[info["valid"]], lang)),
            (tr("explain.time", lang), info.get("time_local") or info["time"]),
            (tr("explain.decision", lang), f"{tr('action.block', lang)} — {tr('reason.' + info['reason'], lang)}")]
    if info.get("band"):
        rows.append((tr("explain.band", lang), info["band"]))
    if info.get("category"):
        rows.append((tr("explain.category", lang), info["category"]))
    if info.get("rule"):
        rows.append((tr("explain.rule", lang), info["rule"]))
    if info.get("file"):
        line = f":{info['line']}" if info.get("line") else ""
        text = f"  «{info['list_line']}»" if info.get("list_line") else ""
        rows.append((tr("explain.source", lang), f"{info['file']}{line}{text}"))
    elif info.get("line"):
        rows.append((tr("explain.source", lang), f"#{info['file_index']}:{info['line']}"))
    if info.get("policy_changed"):
        rows.append(("⚠", tr("proxy.ref.policy_changed", lang)))
    return rows
