"""YAML loading that remembers where every key and list item stood in the file.

Validation errors must name the file and line of the offending field. PyYAML knows the line of
every node while it composes the document; we keep that knowledge in a side table keyed by the
path of keys and indexes from the root, e.g. ``("points", 3, "profile")``.

Hostile files are refused before they cost memory: a file larger than ``MAX_FILE_BYTES``, and
aliases that would expand the document beyond ``MAX_ALIAS_GROWTH`` times its own nodes (plus
``ALIAS_ALLOWANCE``) — the nine-line "billion laughs" — are refused, naming the file and line,
from the composed node graph (shared nodes are counted, never expanded).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from canalflow.errors import CanalflowError

PathKey = tuple[str | int, ...]
MAX_FILE_BYTES = 32 * 1024 * 1024  # a 10,000-point district file is about 3 MB
MAX_ALIAS_GROWTH = 2  # aliases may at most double the nodes the file writes out...
ALIAS_ALLOWANCE = 10_000  # ...plus this many (merge keys of a few shared defaults)
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


# Constructs whose error PyYAML reports where it gave up (often the end of the file), while the
# mistake is where they opened: an unclosed [ or { or quote.
_OPENED = {"while parsing a flow sequence": "'['", "while parsing a flow mapping": "'{'",
           "while scanning a quoted scalar": "quote"}


def _syntax_error(exc: yaml.MarkedYAMLError, file: Path) -> YamlSyntaxError:
    opened = _OPENED.get(exc.context or "")
    if opened and exc.context_mark is not None:
        found = f" ({exc.problem} at line {exc.problem_mark.line + 1})" if exc.problem_mark else ""
        return YamlSyntaxError(file, exc.context_mark.line + 1, f"the {opened} opened on this line is never closed{found}",
                               f"fix the YAML syntax: close the {opened} (or quote a value that contains it)")
    mark = exc.problem_mark or exc.context_mark
    return YamlSyntaxError(file, mark.line + 1 if mark else None, f"{exc.problem or exc}")


def _check_aliases(root: yaml.Node, file: Path) -> None:
    """Refuse aliases that would expand the document far beyond what the file writes out.

    The composed graph shares one node per anchor; its expanded size is counted bottom-up with a
    memo, so a billion-laughs file is measured in microseconds, never expanded."""
    expanded: dict[int, int] = {}
    unique = 0
    visiting: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        children = _children(node)
        if done:
            visiting.discard(key)
            expanded[key] = 1 + sum(expanded[id(c)] for c in children)
            continue
        if key in expanded:
            continue
        if key in visiting:
            raise YamlSyntaxError(file, node.start_mark.line + 1, "an alias refers to the node that contains it",
                                  "a district file needs no recursive anchors: write the value out")
        visiting.add(key)
        unique += 1
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in expanded)
    total = expanded[id(root)]
    if total > MAX_ALIAS_GROWTH * unique + ALIAS_ALLOWANCE:
        line = _first_alias_line(root)
        raise YamlSyntaxError(file, line, f"refused as an alias bomb: aliases (*name) would expand this file's {unique:,} "
                              f"YAML nodes to {total:,}", "write the values out, or use fewer nested aliases")


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _first_alias_line(root: yaml.Node) -> int | None:
    """The line of the first collection, in file order, that refers to a node seen before (an alias)."""
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, yaml.Node]] = [(root, root)]
    while stack:
        node, parent = stack.pop()
        if id(node) in seen:
            return parent.start_mark.line + 1
        seen.add(id(node))
        stack.extend((child, node) for child in reversed(_children(node)))
    return None


def _load(text: str, file: Path) -> Any:
    """Compose, check the aliases, construct: what ``yaml.load`` does, with the alias check between."""
    if len(text) > MAX_FILE_BYTES:
        raise YamlSyntaxError(file, None, f"{len(text):,} characters: larger than the limit of {MAX_FILE_BYTES:,} bytes",
                              "is this the right file? A district file of 10,000 points is about 3 MB")
    loader = _Loader(text)  # a safe loader: CSafeLoader or SafeLoader
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if "&" in text:  # no anchor, no alias
            _check_aliases(node, file)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def load_yaml_data(path: Path | str) -> Any:
    """The plain data of a YAML file, with the size and alias limits, and errors naming the line."""
    file = Path(path)
    return _parse(_read(file), file)


def _parse(text: str, file: Path) -> Any:
    try:
        return _load(text, file)
    except yaml.MarkedYAMLError as exc:
        raise _syntax_error(exc, file) from exc
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(file, None, str(exc)) from exc


def _read(file: Path) -> str:
    try:
        size = file.stat().st_size
        if size > MAX_FILE_BYTES:
            raise YamlSyntaxError(file, None, f"{size:,} bytes: larger than the limit of {MAX_FILE_BYTES:,}",
                                  "is this the right file? A district file of 10,000 points is about 3 MB")
        return file.read_text(encoding="utf-8")
    except OSError as exc:
        raise YamlSyntaxError(file, None, f"cannot read file: {exc.strerror}",
                              "check the path, and that the file is readable") from exc


def load_yaml_text(text: str, file: Path) -> tuple[Any, Locator]:
    """Parse YAML text; return the plain data and a locator for line numbers.

    The node tree that knows the lines is built only when a line is first asked for (that is,
    when there is a problem to report): a valid 10,000-point district file loads without it.
    """
    data = _parse(text, file)
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
    return load_yaml_text(_read(file), file)
