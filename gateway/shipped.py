"""Where the shipped default policy and lists are: inside the wheel, or beside the package in a clone."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def shipped(name: str) -> Path:
    """Path of a shipped folder or file: `policies`, `blocklists`, `policies/school.example.yaml`..."""
    for base in (_PACKAGE / "_shipped", _PACKAGE.parent):
        candidate = base / name
        if candidate.exists():
            return candidate
    return _PACKAGE.parent / name


def project_root() -> Path:
    """Root that shipped paths are shown relative to in messages."""
    inside = _PACKAGE / "_shipped"
    return inside if inside.exists() else _PACKAGE.parent
