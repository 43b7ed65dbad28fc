"""Progress of a long command: a bar on a terminal, one line per 10 % in a file, nothing when quiet.

    bar = Progress("scanning", stream=sys.stderr, quiet=args.quiet)
    for i, unit in enumerate(units, 1):
        bar(i / len(units), f"{i}/{len(units)} unit {unit}")

A log (``make demo > log``, systemd's journal) gets ten short lines, not hundreds of carriage returns.
"""

from __future__ import annotations

import sys
from typing import TextIO

STEPS = 10  # lines written to a file over a whole run


class Progress:
    def __init__(self, label: str, *, stream: TextIO | None = None, quiet: bool = False, width: int = 30) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.width = width
        self.terminal = _is_terminal(self.stream)
        self._step = -1  # the last tenth written to a file
        self._fraction = 0.0

    def __call__(self, fraction: float, detail: str = "") -> None:
        """Report ``fraction`` (0..1) done; ``detail`` says what is being done now."""
        if self.quiet:
            return
        fraction = min(max(fraction, 0.0), 1.0)
        if fraction < self._fraction:  # a new run through the same bar
            self._step = -1
        self._fraction = fraction
        tail = f" {detail}" if detail else ""
        if self.terminal:
            filled = int(fraction * self.width)
            end = "\n" if fraction >= 1 else ""
            self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (self.width - filled)}] {fraction:4.0%}{tail}{end}")
            self.stream.flush()
            return
        step = int(fraction * STEPS + 1e-9)
        if step > self._step and step > 0:
            self._step = step
            self.stream.write(f"{self.label} {step * 100 // STEPS}%{tail}\n")
            self.stream.flush()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed, or a stream without a file behind it
        return False
