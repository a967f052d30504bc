"""One exception tree for the gateway; every user-facing problem names its file and line."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.i18n import tr


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding in a policy or config file, renderable in Vietnamese or English."""

    file: str
    line: int | None
    key: str
    args: dict = field(default_factory=dict)
    warning: bool = False

    def render(self, lang: str = "vi") -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {tr(self.key, lang, **self.args)}"


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """A policy or settings file is invalid; carries every problem found, not only the first."""

    def __init__(self, problems: list[Problem]):
        self.problems = [p for p in problems if not p.warning]
        self.warnings = [p for p in problems if p.warning]
        super().__init__("\n".join(p.render("en") for p in self.problems))

    def render(self, lang: str = "vi") -> str:
        return "\n".join(p.render(lang) for p in self.problems)


class BundleError(GatewayError):
    """A policy bundle failed verification or could not be applied."""


class UpstreamError(GatewayError):
    """No upstream resolver gave a usable answer."""
