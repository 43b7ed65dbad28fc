"""Run every benchmark module and print one table of figures and ratios (also written as JSON).

Each ``benchmarks/bench_<part>.py`` has ``run() -> list[dict]`` returning rows with ``name``,
``value``, ``unit`` and optionally ``ratio`` (to a raw limit measured in the same run), ``goal``
and ``note``. Figures move with machine load; ratios measured side by side are what to compare.

    python -m benchmarks                 # all
    python -m benchmarks edge ingest     # some
    python -m benchmarks --json out/bench.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import pkgutil
import sys
import time
import traceback
from pathlib import Path

import benchmarks


def discover() -> list[str]:
    return sorted(m.name.removeprefix("bench_") for m in pkgutil.iter_modules(benchmarks.__path__) if m.name.startswith("bench_"))


def fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
    return "" if value is None else str(value)


def print_table(rows: list[dict]) -> None:
    headers = ["part", "name", "value", "unit", "ratio", "goal", "note"]
    table = [[fmt(row.get(h)) for h in headers] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in table)) if table else len(h) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("parts", nargs="*", help=f"parts to run (default all: {', '.join(discover())})")
    parser.add_argument("--json", type=Path, default=Path("out/bench.json"), help="where to write the rows as JSON")
    args = parser.parse_args(argv)
    rows: list[dict] = []
    failed = 0
    for part in args.parts or discover():
        started = time.monotonic()
        print(f"[bench] {part} ...", file=sys.stderr, flush=True)
        try:
            module = importlib.import_module(f"benchmarks.bench_{part}")
            for row in module.run():
                rows.append({"part": part, **row})
        except Exception:  # one broken benchmark must not hide the figures of the others
            failed += 1
            traceback.print_exc()
            rows.append({"part": part, "name": "FAILED", "note": "see the traceback above"})
        print(f"[bench] {part} done in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    print_table(rows)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"when": dt.datetime.now(dt.UTC).isoformat(), "rows": rows}, indent=2, default=str))
    print(f"\nwritten to {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
