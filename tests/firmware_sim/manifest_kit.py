"""Fleet manifests as an earlier run leaves them, for the start-up tests (test_manifest_ready,
test_compose_startup)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from canalflow.district import District
from testbed.services import free_port

ROOT = Path(__file__).resolve().parents[2]


def stale_manifest(path: Path, district: District) -> dict[str, Any]:
    """A manifest as an earlier fleet left it: written by a process that has exited, its ports closed."""
    manifest = {"district": district.id, "district_path": str(district.path), "seed": 0, "scenario": None,
                "clock": {"sim_start_ms": 1_700_000_000_000, "wall_start_s": time.time() - 3600, "speed": 60.0},
                "gateways": {g: {"transport": "tcp", "host": "127.0.0.1", "port": free_port(),
                                 "units": {str(p.unit_id): p.id for p in district.points_of_gateway(g)}}
                             for g in district.gateways}}
    write_from_an_exited_process(path, manifest)
    return json.loads(path.read_text())


def write_from_an_exited_process(path: Path, manifest: dict[str, Any]) -> None:
    code = "import json, sys; from canalflow.manifest import write_manifest; write_manifest(sys.argv[1], json.loads(sys.argv[2]))"
    subprocess.run([sys.executable, "-c", code, str(path), json.dumps(manifest)], check=True, cwd=ROOT, timeout=30)
