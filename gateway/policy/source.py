"""YAML text -> plain values that remember their line numbers, NFC-normalised, duplicates rejected."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import yaml

from gateway.errors import Problem


class YMap(dict):
    """A mapping from a YAML file; `line` is where it starts, `key_lines` where each key is."""

    line: int
    key_lines: dict
    file: str

    def line_of(self, key: str) -> int:
        return self.key_lines.get(key, self.line)


class YList(list):
    """A sequence from a YAML file; `item_lines[i]` is the line of item i."""

    line: int
    item_lines: list
    file: str

    def line_of(self, index: int) -> int:
        return self.item_lines[index] if index < len(self.item_lines) else self.line


def _convert(node: yaml.Node, file: str, problems: list[Problem]):
    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out = YMap()
        out.line, out.key_lines, out.file = line, {}, file
        for key_node, value_node in node.value:
            key = _convert(key_node, file, problems)
            if isinstance(key, (YMap, YList)):
                problems.append(Problem(file, key_node.start_mark.line + 1, "yaml.key_not_scalar"))
                continue
            key = str(key) if key is not None else ""
            if key in out:
                problems.append(
                    Problem(file, key_node.start_mark.line + 1, "yaml.duplicate_key",
                            {"key": key, "first": out.key_lines[key]})
                )
                continue
            out[key] = _convert(value_node, file, problems)
            out.key_lines[key] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        out = YList()
        out.line, out.item_lines, out.file = line, [], file
        for item in node.value:
            out.append(_convert(item, file, problems))
            out.item_lines.append(item.start_mark.line + 1)
        return out
    if node.tag == "tag:yaml.org,2002:str":
        value = node.value
    else:
        try:
            value = yaml.SafeLoader.construct_object(_LOADER, node)
        except (ValueError, yaml.YAMLError):
            value = node.value  # e.g. 2026-13-45 looks like a date but is not one: the reader reports it
    if isinstance(value, str):
        value = unicodedata.normalize("NFC", value)
    return value


class _ScalarLoader(yaml.SafeLoader):
    pass


_LOADER = _ScalarLoader("")
# libyaml's parser where PyYAML was built with it (Debian's and the wheels are): the same nodes and
# line marks, several times faster on the Department layer at every start.
_COMPOSER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_text(text: str, file: str) -> tuple[object, list[Problem]]:
    """Parse one YAML document; return (value, problems). A syntax error is a problem with its line."""
    problems: list[Problem] = []
    try:
        node = yaml.compose(text, Loader=_COMPOSER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problems.append(Problem(file, line, "yaml.syntax", {"detail": exc.problem or str(exc)}))
        return None, problems
    except yaml.YAMLError as exc:
        problems.append(Problem(file, None, "yaml.syntax", {"detail": str(exc)}))
        return None, problems
    if node is None:
        return None, problems
    return _convert(node, file, problems), problems


def load_file(path: Path, display: str | None = None) -> tuple[object, list[Problem]]:
    display = display or str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, [Problem(display, None, "file.missing")]
    except OSError as exc:
        return None, [Problem(display, None, "file.unreadable", {"detail": exc.strerror or str(exc)})]
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        return None, [Problem(display, line, "file.not_utf8")]
    return load_text(text, display)
