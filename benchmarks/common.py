"""Helpers shared by the benchmark modules."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any


def wait_for_manifest(path: Path, process: subprocess.Popen[Any], timeout: float) -> dict[str, Any]:
    """The fleet manifest a starting fleet process writes, once `fleet ready` would accept it; fail if
    the process dies or time runs out."""
    from canalflow.manifest import readiness

    deadline = time.monotonic() + timeout
    while not readiness(path):
        if process.poll() is not None:
            stderr = process.stderr.read() if process.stderr else ""
            raise RuntimeError(f"{process.args[:3]} exited with {process.returncode}: {stderr}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {path.name} after {timeout:.0f} s")
        time.sleep(0.2)
    return json.loads(path.read_text())


def stop_process(process: subprocess.Popen[Any], timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout``."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
