"""The one base of the errors canalflow reports to an operator.

Every component's error class derives from :class:`CanalflowError` (keeping its old built-in base
too, e.g. ``class DistrictError(CanalflowError, ValueError)``, so existing ``except ValueError``
still catches it). ``canalflow.cli.main`` turns any of them into
``canalflow <command>: error: <message>`` (and the hint) on stderr and exit code ``exit_code``;
any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class CanalflowError(Exception):
    """An error an operator can fix: the message names the file, line, field, topic or register;
    ``hint`` says what to do when the message does not already say it."""

    hint: str = ""
    exit_code: int = 1

    def __init__(self, *args: object, hint: str | None = None, exit_code: int | None = None) -> None:
        super().__init__(*args)
        if hint is not None:
            self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code


def report(error: CanalflowError, command: str) -> str:
    """The text ``canalflow.cli`` prints for ``error`` raised by ``command`` (e.g. ``billing run``)."""
    message = str(error).strip()
    text = f"{' '.join(('canalflow', command)).strip()}: error: {message}"
    hint = str(error.hint or "")
    if hint and hint not in message:
        text += f"\n  hint: {hint}"
    return text


@contextmanager
def reported_as_errors(*types: type[Exception]) -> Iterator[None]:
    """Inside, a plain exception of ``types`` (from code that does not raise a CanalflowError for
    an operator's mistake, e.g. ``ValueError("use 1h and/or 1d")``) is reported like one."""
    try:
        yield
    except CanalflowError:
        raise
    except types as exc:
        raise CanalflowError(str(exc)) from exc
