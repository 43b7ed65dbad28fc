"""YAML loading that remembers where every key and list item stood in the file.

Validation errors must name the file and line of the offending field. PyYAML knows the line of
every node while it composes the document; we keep that knowledge in a side table keyed by the
path of keys and indexes from the root, e.g. ``("points", 3, "profile")``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from canalflow.errors import CanalflowError

PathKey = tuple[str | int, ...]
# libyaml's C loader when PyYAML was built with it (10x faster on large district files).
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
Locator = Callable[[Sequence[str | int]], int | None]


@dataclass(frozen=True)
class Problem:
    """One problem in a data file (district, meter profile, scenario), printable as
    ``FILE:LINE: severity: field: message (hint: ...)``."""

    file: Path
    line: int | None
    field: str
    message: str
    hint: str = ""
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else str(self.file)
        text = f"{where}: {self.severity}: {self.field}: {self.message}" if self.field else f"{where}: {self.severity}: {self.message}"
        return f"{text} (hint: {self.hint})" if self.hint else text


class YamlSyntaxError(CanalflowError, ValueError):
    """The file is not valid YAML, or cannot be read; carries the file, the line and what to do."""

    def __init__(self, file: Path, line: int | None, message: str, hint: str = "fix the YAML syntax") -> None:
        self.file = file
        self.line = line
        self.message = message
        self.hint = hint
        where = f"{file}:{line}" if line else str(file)
        super().__init__(f"{where}: {message}")

    def problem(self) -> Problem:
        """This error as the first (and only) problem of its file."""
        return Problem(self.file, self.line, "(file)", self.message, self.hint)


def _walk(node: yaml.Node, path: PathKey, lines: dict[PathKey, int]) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            child = (*path, key)
            _walk(value_node, child, lines)
            # The key's own line is more useful than the value's (a nested block starts below it).
            lines[child] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*path, index), lines)


def dotted_path(path: Sequence[str | int]) -> str:
    """``("points", 3, "profile")`` -> ``points[3].profile``, the way problems name a field."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(file)"


def make_locator(lines: dict[PathKey, int]) -> Locator:
    """A function that finds the line of a path, falling back to its nearest known ancestor."""

    def locate(path: Sequence[str | int]) -> int | None:
        probe = tuple(path)
        while probe:
            if probe in lines:
                return lines[probe]
            probe = probe[:-1]
        return lines.get(())

    return locate


def load_yaml_text(text: str, file: Path) -> tuple[Any, Locator]:
    """Parse YAML text; return the plain data and a locator for line numbers.

    The node tree that knows the lines is built only when a line is first asked for (that is,
    when there is a problem to report): a valid 10,000-point district file loads without it.
    """
    try:
        data = yaml.load(text, Loader=_Loader)  # a safe loader: CSafeLoader or SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise YamlSyntaxError(file, line, f"{exc.problem or exc}") from exc
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(file, None, str(exc)) from exc
    lines: dict[PathKey, int] | None = None

    def locate(path: Sequence[str | int]) -> int | None:
        nonlocal lines
        if lines is None:
            lines = {}
            node = yaml.compose(text, Loader=_Loader)
            if node is not None:
                _walk(node, (), lines)
        return make_locator(lines)(path)

    return data, locate


def load_yaml_with_lines(path: Path | str) -> tuple[Any, Locator]:
    """Read a YAML file; return the plain data and a locator ``locate(path) -> line``."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise YamlSyntaxError(file, None, f"cannot read file: {exc.strerror}",
                              "check the path, and that the file is readable") from exc
    return load_yaml_text(text, file)
