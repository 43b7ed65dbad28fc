"""The one translation of pydantic's validation errors into :class:`~canalflow.yamlines.Problem` s.

Every file the project reads through a pydantic model — district, meter profile, scenario, edge
config — reports its structural errors through :func:`validation_problems` (or
:func:`validation_issues` when the caller adds the file and line itself), so the same mistake gets
the same message and hint in every file: an unknown key or a misspelled choice gets "did you
mean ...?" from the model's own field names or allowed values (difflib), a missing key "add
`key:` here", a bad number or time the form to write.
"""

from __future__ import annotations

import difflib
import re
import types
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from canalflow.yamlines import Locator, Problem, dotted_path

PathT = tuple[str | int, ...]
_QUOTED = re.compile(r"'([^']*)'")


@dataclass(frozen=True)
class Issue:
    """One problem before it has a file and line: where (a path of keys and indexes), what, how to fix."""

    path: PathT
    message: str
    hint: str = ""
    severity: Literal["error", "warning"] = "error"

    def at(self, file: Path, locate: Locator) -> Problem:
        return Problem(file, locate(self.path), dotted_path(self.path), self.message, self.hint, self.severity)


def suggest(value: object, choices: Iterable[object]) -> str:
    """``did you mean 'x'?; one of: a, b, c`` (the listing only when it is short)."""
    options = [str(c) for c in choices]
    close = difflib.get_close_matches(str(value), options, n=1, cutoff=0.5)
    guess = f"did you mean {close[0]!r}?" if close else ""
    listing = f"one of: {', '.join(options)}" if options and len(options) <= 16 else ""
    return "; ".join(part for part in (guess, listing) if part)


def validation_problems(exc: ValidationError, model: type[BaseModel], file: Path, locate: Locator,
                        *, docs: str = "") -> list[Problem]:
    """Each error of ``exc`` (raised validating ``model``) as a Problem naming file, line and field."""
    return [issue.at(file, locate) for issue in validation_issues(exc, model, docs=docs)]


def validation_issues(exc: ValidationError, model: type[BaseModel], *, docs: str = "") -> list[Issue]:
    """Each error of ``exc`` as an :class:`Issue`; ``docs`` (e.g. ``docs/edge.md``) is named in
    the hint of an unknown field and of an error that has no more specific hint."""
    return [_issue(err, model, docs) for err in exc.errors()]


def _issue(err: Any, model: type[BaseModel], docs: str) -> Issue:
    path, parent = _walk(model, err["loc"])
    kind, ctx = err["type"], err.get("ctx") or {}
    key = next((p for p in reversed(path) if isinstance(p, str)), "")
    if kind == "extra_forbidden":
        fields = _fields(parent)
        see = f"; see {docs}" if docs else ""
        return Issue(path, f"unknown field {path[-1]!r}", f"remove it, or {suggest(path[-1], fields)}{see}")
    if kind == "missing":
        return Issue(path, "required field is missing", f"add `{path[-1]}:` here")
    if kind in ("literal_error", "enum"):
        return Issue(path, f"{err['input']!r} is not a valid {key}", suggest(err["input"], _choices(ctx.get("expected", ""))))
    if kind == "union_tag_invalid":
        name = _QUOTED.sub(r"\1", str(ctx.get("discriminator", "type")))
        return Issue((*path, name), f"{ctx.get('tag')!r} is not a valid {name}",
                     suggest(ctx.get("tag"), _choices(ctx.get("expected_tags", ""))))
    if kind == "union_tag_not_found":
        name = _QUOTED.sub(r"\1", str(ctx.get("discriminator", "type")))
        return Issue((*path, name), "required field is missing", f"add `{name}:` here")
    message = str(err["msg"]).removeprefix("Value error, ")
    return Issue(path, message, _hint_of(kind, ctx) or (f"see {docs}" if docs else ""))


def _hint_of(kind: str, ctx: dict[str, Any]) -> str:
    error = ctx.get("error")
    if kind == "value_error" and getattr(error, "hint", ""):
        return str(error.hint)  # a validator's ValueError that carries its own hint
    if kind.startswith(("datetime", "date", "time")):
        return "write an ISO time like 2026-03-12T02:00:00+08:00 (a date alone: 2026-03-12)"
    if kind.startswith("bool"):
        return "write true or false"
    if kind.startswith(("int", "float", "decimal")):
        return "write a plain number (0x.. hex is fine for integers)"
    return ""


def _choices(expected: str) -> list[str]:
    """``"'a', 'b' or 'c'"`` (pydantic's ctx) -> ``['a', 'b', 'c']``; unquoted ``0 or 1`` too."""
    quoted = _QUOTED.findall(expected)
    return quoted or [w for w in re.split(r",\s*|\s+or\s+", expected) if w]


def _fields(model: Any) -> list[str]:
    return list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []


# ---- following pydantic's error location through the model ------------------------------------


def _walk(model: type[BaseModel], loc: Sequence[Any]) -> tuple[PathT, Any]:
    """The file path of ``loc`` (without union tags, up to a dict key's ``[key]``) and the type
    that holds its last part (the model of an unknown field)."""
    path: list[str | int] = []
    current: Any = model
    holder: Any = model
    for part in loc:
        if part == "[key]" or not isinstance(part, str | int):
            break
        current, is_tag = _select_member(current, part)
        if is_tag:
            continue
        holder = current
        current = _child(current, part)
        path.append(part)
    return tuple(path), holder


def _unwrap(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def _members(tp: Any) -> list[Any]:
    tp = _unwrap(tp)
    if get_origin(tp) in (Union, types.UnionType):
        return [_unwrap(a) for a in get_args(tp) if a is not type(None)]
    return [tp]


def _select_member(tp: Any, part: str | int) -> tuple[Any, bool]:
    """In a union, the member named by ``part`` (a tag or class name: pydantic's loc has it, the
    file does not) -> (member, True); else the only model member, or ``tp`` -> (it, False)."""
    members = _members(tp)
    if len(members) == 1:
        return members[0], False
    for member in members:
        if isinstance(part, str) and (getattr(member, "__name__", None) == part or part in _tags(member)):
            return member, True
    models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
    return (models[0] if len(models) == 1 else tp), False


def _tags(member: Any) -> set[str]:
    if not (isinstance(member, type) and issubclass(member, BaseModel)):
        return set()
    tags: set[str] = set()
    for info in member.model_fields.values():
        if get_origin(info.annotation) is Literal:
            tags.update(str(a) for a in get_args(info.annotation))
    return tags


def _child(tp: Any, part: str | int) -> Any:
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        info = tp.model_fields.get(str(part))
        return info.annotation if info is not None else Any
    origin, args = get_origin(tp), get_args(tp)
    if origin in (list, tuple, set, frozenset) and args:
        return args[0]
    if origin is dict and len(args) == 2:
        return args[1]
    return Any
