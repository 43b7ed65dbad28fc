"""``python -m edge ...``: the same as ``canalflow edge ...`` (which imports only the edge component)."""

from __future__ import annotations

import sys

from canalflow.cli import main

if __name__ == "__main__":
    sys.exit(main(["edge", *sys.argv[1:]]))
