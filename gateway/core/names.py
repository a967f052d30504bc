"""Domain-name normalisation (case, trailing dot, Unicode NFC, IDNA) and parent-suffix iteration."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator

MAX_NAME = 253
MAX_LABEL = 63


class NameError_(ValueError):
    """A string that cannot be a domain name; the message says why (English)."""


def normalize(name: str) -> str:
    """Return the canonical form of `name`: lower-case ASCII (punycode), no trailing dot.

    Raises NameError_ with a reason when the text cannot be a host name.
    """
    text = name.strip()
    if text.endswith("."):
        text = text[:-1]
    if not text:
        raise NameError_("empty name")
    if text.isascii():
        text = text.lower()
        labels = text.split(".")
        for label in labels:
            _check_ascii_label(label)
    else:
        text = unicodedata.normalize("NFC", text).lower()
        labels = []
        for label in text.split("."):
            if label.isascii():
                _check_ascii_label(label)
                labels.append(label)
                continue
            try:
                encoded = label.encode("idna").decode("ascii")
            except UnicodeError as exc:
                raise NameError_(f"label {label!r} is not a valid internationalised name ({exc})") from None
            _check_ascii_label(encoded)
            labels.append(encoded)
        text = ".".join(labels)
    if len(text) > MAX_NAME:
        raise NameError_(f"name is {len(text)} characters long, the limit is {MAX_NAME}")
    return text


def _check_ascii_label(label: str) -> None:
    if not label:
        raise NameError_("empty label (two dots in a row, or a leading dot)")
    if len(label) > MAX_LABEL:
        raise NameError_(f"label {label[:20]!r}... is {len(label)} characters, the limit is {MAX_LABEL}")
    for ch in label:
        if not (ch.isalnum() or ch in "-_"):
            raise NameError_(f"character {ch!r} is not allowed in a host name")


def suffixes(name: str) -> Iterator[str]:
    """Yield `name` and each parent, most specific first: a.b.c -> a.b.c, b.c, c."""
    yield name
    start = name.find(".")
    while start != -1:
        yield name[start + 1 :]
        start = name.find(".", start + 1)


class SuffixMap:
    """A small name -> payload map matched on the name or any parent (school allow/deny, never-block).

    Big category lists live in a DomainSet; this is for lists of tens to thousands of entries.
    """

    __slots__ = ("_entries", "_tops")

    def __init__(self, entries: dict[str, object] | None = None):
        self._entries = dict(entries or {})
        # The last labels ("com", "vn") entries end in: a name under none of them is a miss at once.
        self._tops = frozenset(e[e.rfind(".") + 1:] for e in self._entries)

    def get(self, name: str) -> tuple[str, object] | None:
        """(listed name, payload) of the most specific entry covering `name`, or None."""
        entries = self._entries
        if not entries or name[name.rfind(".") + 1:] not in self._tops:
            return None
        payload = entries.get(name)
        if payload is not None:
            return name, payload
        start = name.find(".")
        while start != -1:  # parents, most specific first (suffixes(), inlined: this runs per query)
            start += 1
            payload = entries.get(name[start:])
            if payload is not None:
                return name[start:], payload
            start = name.find(".", start)
        return None

    def __contains__(self, name: str) -> bool:
        return self.get(name) is not None

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self):
        return iter(self._entries)

    def items(self):
        return self._entries.items()
