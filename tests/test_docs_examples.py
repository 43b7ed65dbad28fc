"""Docs that run: every command example of README.md and docs/*.md is checked, and the marked ones run.

An example is a `canalflow ...` or `make ...` line of a code block (fenced or indented; a trailing
backslash continues it), or an inline code span `canalflow ...` (or `edge scan --host ...` in a table).
Each one's subcommands and flags must exist in the argparse parser `--help` prints (`canalflow.cli`),
`make` targets in the Makefile, and the repository files it names (`examples/...`, `edge/...`) in the tree.

A code block preceded by the HTML comment `<!-- run -->` is run here, each command in turn, from a
scratch directory that sees the repository's top-level folders (so `out/` is the test's own), with the
test harness's Mosquitto and InfluxDB standing in for `mqtt://127.0.0.1:1883` and `http://127.0.0.1:8086`
(also as `$CANALFLOW_INFLUX_URL`/`_DB`); the ledger is the default, `out/ledger.db` there. Each must exit 0.
The documents run side by side, each one's commands in order.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from canalflow.cli import build_parser
from canalflow.influx import InfluxV1

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUN_MARK = "<!-- run -->"
DEFAULT_MQTT = "mqtt://127.0.0.1:1883"
DEFAULT_INFLUX = "http://127.0.0.1:8086"
SHELL_OPERATORS = {"&", "&&", "|", "||", ";", ">", ">>", "2>", "2>&1", "<"}
COMPONENTS = {action for action in build_parser("district")._subparsers._group_actions[0].choices}  # type: ignore[union-attr]


@dataclass(frozen=True)
class Example:
    doc: Path
    line: int
    text: str
    synopsis: bool = False  # placeholders, [optional] parts, a|b, ...: only names and flags are checked
    run: bool = False
    block: bool = True  # in a code block (shell comments and operators), or a span of running text

    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}: {self.text}"


# ---- extraction ---------------------------------------------------------------------------------


def _is_command(text: str) -> bool:
    return text.startswith(("canalflow ", "make ")) or text in ("make", "canalflow")


def _inline_command(span: str) -> bool:
    words = span.split()
    return span.startswith("canalflow ") or (len(words) > 2 and words[0] in COMPONENTS and "--" in span)


def examples_of(doc: Path) -> list[Example]:
    lines = doc.read_text(encoding="utf-8").splitlines()
    found: list[Example] = []
    fence: str | None = None
    marked = run_block = False
    index = 0
    while index < len(lines):
        raw = lines[index]
        stripped = raw.strip()
        if stripped.startswith(("```", "~~~")):
            if fence is None:
                fence, run_block = stripped[:3], marked
            elif stripped.startswith(fence):
                fence, run_block = None, False
            marked = False
            index += 1
            continue
        in_code = fence is not None or (raw.startswith("    ") and not stripped.startswith(("-", "*", "|")))
        command = stripped.removeprefix("$ ")
        if in_code and _is_command(command):
            start = index
            while command.endswith("\\") and index + 1 < len(lines):
                index += 1
                command = command[:-1].rstrip() + " " + lines[index].strip()
            command = re.split(r"\s{3,}(?!#)", command)[0]  # a description column beside the command
            synopsis = bool(re.search(r"\[|\.\.\.|\w\|\w", command))  # [optional], ..., a|b: not one concrete command
            found.append(Example(doc, start + 1, command, synopsis=synopsis, run=run_block))
        elif fence is None:
            for span in re.findall(r"`([^`]+)`", raw.replace("\\|", "|")):
                if _inline_command(span.strip()):
                    found.append(Example(doc, index + 1, span.strip(), synopsis=True, block=False))
        if stripped:
            marked = stripped == RUN_MARK
        index += 1
    return found


# ---- checking against the parser, the Makefile and the tree -----------------------------------


def _words(example: Example) -> list[str]:
    try:
        words = shlex.split(example.text, comments=example.block)
    except ValueError:
        words = example.text.split()
    if example.block:
        cut = next((i for i, w in enumerate(words) if w in SHELL_OPERATORS or w.startswith((">", "2>"))), len(words))
        words = words[:cut]
    return words


def _clean(word: str) -> str:
    return word.strip("[](){}'\",.;:")


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _resolve(words: list[str]) -> tuple[list[argparse.ArgumentParser], list[str], list[str]]:
    """The parsers the words name (several for `a|b`), the remaining words, and problems."""
    if words[0] != "canalflow":  # a table's `edge scan ...` means `canalflow edge scan ...`
        words = ["canalflow", *words]
    first = words[1] if len(words) > 1 else None
    parsers = [build_parser(first if first in COMPONENTS else None)]
    rest = words[1:]
    path = ["canalflow"]
    while rest:
        choices = _subcommands(parsers[0])
        if not choices:
            break
        if rest[0] in ("...", "…"):  # `canalflow fleet ...`: any subcommand
            break
        names = [_clean(n) for n in _clean(rest[0]).split("|")]
        if not all(name in choices for name in names):
            if names[0].startswith("-") or not any(a.required for a in parsers[0]._actions
                                                   if isinstance(a, argparse._SubParsersAction)):
                break
            return parsers, rest, [f"`{' '.join(path)}` has no subcommand {rest[0]!r} (it has: {', '.join(choices)})"]
        parsers = [choices[name] for name in names]
        path.append(rest[0])
        rest = rest[1:]
    return parsers, rest, []


def _flag_problems(parsers: list[argparse.ArgumentParser], words: list[str]) -> list[str]:
    known = {option for p in parsers for action in p._actions for option in action.option_strings}
    problems = []
    for word in words:
        flag = _clean(word).split("=", 1)[0]
        if re.fullmatch(r"--[a-z0-9][a-z0-9-]*|-[a-zA-Z]", flag) and flag not in known:
            name = parsers[0].prog
            problems.append(f"`{name}` has no option {flag} (see `{name} --help`)")
    return problems


def _file_problems(words: list[str]) -> list[str]:
    tops = {p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(".")} - {"out"}
    problems = []
    for word in words:
        part = _clean(word).split("=")[-1]
        named = "/" in part and part.split("/")[0] in tops and not re.search(r"[*<>$]|\.\.\.", part)
        if named and not (ROOT / part).exists():
            problems.append(f"no file {part} in the repository")
    return problems


def _make_problems(words: list[str]) -> list[str]:
    targets = set(re.findall(r"^([A-Za-z][\w-]*):", (ROOT / "Makefile").read_text(encoding="utf-8"), re.M))
    return [f"the Makefile has no target {w!r}" for w in words[1:] if not w.startswith("-") and "=" not in w
            and _clean(w) not in targets]


def _parse_problems(words: list[str]) -> list[str]:
    """What argparse says of a concrete example: a missing required option, a bad choice or number, an extra word."""
    argv = words[1:]
    parser = build_parser(argv[0] if argv and argv[0] in COMPONENTS else None)
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(argv)
    except SystemExit as exc:
        if exc.code:
            return [errors.getvalue().strip().splitlines()[-1]]
    return []


def problems_of(example: Example) -> list[str]:
    words = _words(example)
    if not words:
        return []
    if words[0] == "make":
        return _make_problems(words)
    parsers, rest, problems = _resolve(words)
    problems = problems or [*_flag_problems(parsers, rest), *_file_problems(rest)]
    if not problems and not example.synopsis:
        problems = _parse_problems(words)
    return problems


ALL = [example for doc in DOCS for example in examples_of(doc)]


@pytest.mark.parametrize(("text", "says"), [
    ("canalflow edge probe 0x806B,0x4212", "one of the arguments --words"),  # issue 18: it lacked --words
    ("canalflow edge watch --mqtt mqtt://127.0.0.1:1883", "the following arguments are required: --district"),
    ("canalflow edge run --config x.yaml --bogus", "has no option --bogus"),
    ("canalflow edge frobnicate --host 1.2.3.4:502", "has no subcommand 'frobnicate'"),
    ("canalflow district check examples/no-such-district.yaml", "no file examples/no-such-district.yaml"),
    ("make no-such-target", "no target 'no-such-target'"),
    ("canalflow billing run --district F [--ledger URL] [--no-such]", "has no option --no-such"),
    ("canalflow edge buffer status|replay --buffer edge.db --mqtt URL", ""),  # replay has --mqtt
    ("canalflow edge probe --words 0x806B,0x4212", ""),
])
def test_the_checker_catches_what_an_operator_would_hit(text: str, says: str) -> None:
    doc = ROOT / "docs" / "x.md"
    synopsis = bool(re.search(r"\[|\w\|\w", text))
    problems = problems_of(Example(doc, 1, text, synopsis=synopsis))
    assert (says in " ".join(problems)) if says else not problems, problems


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: str(d.relative_to(ROOT)))
def test_every_example_names_real_subcommands_flags_files_and_targets(doc: Path) -> None:
    problems = [f"{e.where()}\n    -> {p}" for e in ALL if e.doc == doc for p in problems_of(e)]
    assert not problems, "\n".join(problems)


def test_the_examples_are_found_and_some_run() -> None:
    # guard against an extractor that finds nothing (and so checks nothing)
    assert len(ALL) > 100 and sum(not e.synopsis for e in ALL) > 40
    assert len({e.doc for e in ALL if e.run}) >= 2 and sum(e.run for e in ALL) >= 8


# ---- the marked examples run ---------------------------------------------------------------------


def _scratch(work: Path) -> Path:
    work.mkdir()
    for top in ROOT.iterdir():
        if not top.name.startswith(".") and top.name != "out":
            (work / top.name).symlink_to(top)
    return work


def _run_block(block: list[Example], work: Path, env: dict[str, str], mqtt_url: str, influx_url: str) -> list[str]:
    failed = []
    for example in block:  # in order: a block's later commands may read what the earlier ones wrote
        command = example.text.replace(DEFAULT_MQTT, mqtt_url).replace(DEFAULT_INFLUX, influx_url)
        done = subprocess.run(["bash", "-c", command], cwd=work, env=env, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            failed.append(f"{example.where()}\n    -> exit {done.returncode}: {(done.stderr or done.stdout)[-800:]}")
    return failed


def test_the_marked_examples_run(tmp_path: Path, mqtt_url: str, influx: InfluxV1) -> None:
    blocks: dict[Path, list[Example]] = {}
    for example in ALL:
        if example.run:
            blocks.setdefault(example.doc, []).append(example)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "CANALFLOW_INFLUX_URL": influx.url, "CANALFLOW_INFLUX_DB": influx.database}
    env.pop("CANALFLOW_LEDGER", None)  # the documented default: out/ledger.db of the (scratch) working directory
    with concurrent.futures.ThreadPoolExecutor(len(blocks)) as pool:  # one document's blocks after another
        runs = [pool.submit(_run_block, block, _scratch(tmp_path / doc.stem), env, mqtt_url, influx.url)
                for doc, block in blocks.items()]
        failed = [line for run in runs for line in run.result()]
    assert not failed, "\n".join(failed)
