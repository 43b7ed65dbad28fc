"""The gateway install's shipped files: the systemd unit passes `systemd-analyze verify` and keeps
the user's own group; the example config names absolute paths inside what the unit allows."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "edge" / "canalflow-edge.service"
EXAMPLE = ROOT / "edge" / "edge.example.yaml"


def unit_service() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text(encoding="utf-8"))
    return parser["Service"]


def test_the_unit_adds_dialout_without_replacing_the_users_group() -> None:
    service = unit_service()
    assert "Group" not in service  # the config is 640 root:canalflow: the user's group must stay
    assert service["SupplementaryGroups"] == "dialout"
    assert service["StateDirectory"] == "canalflow"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    # the gateway's venv python does not exist here: stand in this interpreter for it, change nothing else
    text = UNIT.read_text(encoding="utf-8").replace("/opt/canalflow/.venv/bin/python", sys.executable)
    unit = tmp_path / "canalflow-edge.service"
    unit.write_text(text, encoding="utf-8")
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_the_example_config_uses_absolute_paths_the_unit_allows() -> None:
    config = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    assert config["district"].startswith("/etc/canalflow/")
    writable = unit_service()["ReadWritePaths"]
    assert Path(config["buffer"]["path"]).is_absolute() and config["buffer"]["path"].startswith(writable + "/")
