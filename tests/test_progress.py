"""Progress output: a bar on a terminal (a real pty), one line per 10 % in a file, nothing when quiet."""

from __future__ import annotations

import io
import os
from pathlib import Path

from canalflow.progress import Progress


def test_a_file_gets_one_line_per_tenth_and_a_new_run_starts_again(tmp_path: Path) -> None:
    log = tmp_path / "demo.log"
    with log.open("w") as stream:
        bar = Progress("[demo] simulating", stream=stream)
        for i in range(1001):
            bar(i / 1000, f"step {i}")
        bar(0.0)
        bar(0.55)
    lines = log.read_text().splitlines()
    assert lines[:10] == [f"[demo] simulating {p}% step {p * 10}" for p in range(10, 101, 10)]
    assert lines[10:] == ["[demo] simulating 50%"]
    assert "\r" not in log.read_text()


def test_a_terminal_gets_a_bar_redrawn_in_place() -> None:
    master, slave = os.openpty()
    try:
        with os.fdopen(slave, "w", closefd=False) as tty:
            bar = Progress("scanning", stream=tty, width=10)
            assert bar.terminal
            bar(0.5, "5/10")
            bar(1.0, "10/10")
        out = os.read(master, 4096).decode()
    finally:
        os.close(master)
        os.close(slave)
    assert "\rscanning [#####.....]  50% 5/10" in out and "\rscanning [##########] 100% 10/10" in out


def test_quiet_writes_nothing() -> None:
    stream = io.StringIO()
    bar = Progress("scanning", stream=stream, quiet=True)
    for i in range(11):
        bar(i / 10)
    assert stream.getvalue() == ""
