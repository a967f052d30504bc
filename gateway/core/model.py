"""Values the decision core speaks in: actions, reasons and the Decision they form (frozen)."""

from __future__ import annotations

import enum
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Text:
    """A user-facing string in both languages."""

    vi: str
    en: str

    def get(self, lang: str) -> str:
        return self.en if lang == "en" else self.vi


class _Member(enum.Enum):
    """An Enum hashed by identity, in C. Enum's own __hash__ is a Python function (hash of the name), and
    the hot path keys dicts by members (the memo stores a Decision's fields as positions): a member is
    equal only to itself, so identity is the same equality, and the hash is never stored anywhere."""

    __hash__ = object.__hash__


class Action(_Member):
    ALLOW = "allow"
    BLOCK = "block"
    REWRITE = "rewrite"  # safe search: answer with the engine's restricted host instead


class Reason(_Member):
    """Which rule of the precedence decided; ordered as the precedence table in the README."""

    MANDATORY = "mandatory"
    NEVER_BLOCK = "never_block"
    SCHOOL_DENY = "school_deny"
    SCHOOL_ALLOW = "school_allow"
    WALLED_GARDEN = "walled_garden"
    GARDEN_ALLOW = "garden_allow"
    CATEGORY = "category"
    SCHEDULE = "schedule"
    SAFE_SEARCH = "safe_search"
    DEFAULT = "default"
    ERROR = "error"


class SafeSearch(_Member):
    OFF = "off"
    MODERATE = "moderate"
    STRICT = "strict"

    @property
    def rank(self) -> int:
        return _SAFE_RANK[self]


_SAFE_RANK = {SafeSearch.OFF: 0, SafeSearch.MODERATE: 1, SafeSearch.STRICT: 2}


class BlockResponse(_Member):
    NXDOMAIN = "nxdomain"
    NULL = "null"
    BLOCKPAGE = "blockpage"


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome for one (client, name, time): what to do and exactly which rule said so."""

    action: Action
    reason: Reason
    group: str
    band: str
    category: str | None = None
    rule: str = ""  # the policy entry that decided, e.g. "bands.thcs.block: social"
    source: str | None = None  # "file:line" of the list entry that matched, if a list decided
    matched: str | None = None  # the listed name that matched (the name itself or a parent)
    rewrite_to: str | None = None  # safe-search target host for REWRITE
    engine: str | None = None  # safe-search engine id for REWRITE
    response: BlockResponse = BlockResponse.NXDOMAIN  # how a BLOCK is answered
    garden: bool = False  # the client's band/group is a walled garden (DNS follows CNAMEs of allowed names)

    @property
    def blocked(self) -> bool:
        return self.action is Action.BLOCK
