"""The proof's pytest setup: tests marked ``e2e`` (the full season; the marker is declared in
pyproject.toml) are deselected unless ``-m e2e`` asks for them.

``make test`` runs the reduced season and the chaos tests; ``make e2e`` runs ``pytest -m e2e tests/proof``.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "e2e" in (config.getoption("markexpr", "") or ""):
        return
    deselected = [item for item in items if item.get_closest_marker("e2e")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker("e2e")]
