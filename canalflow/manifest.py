"""THE fleet manifest's life cycle: who wrote it, and when a reader may trust it.

``canalflow fleet run`` writes a manifest (JSON: its Modbus endpoints and its clock) that edge agents
read with ``--endpoints`` / ``--clock-from``. The file outlives its writer (a volume survives a
``docker compose down``/``up``, a killed fleet leaves it behind), so its existence proves nothing:

- the fleet removes a stale manifest when it starts (:func:`clear_stale`) and writes the new one
  atomically (:func:`write_manifest`: temp file + rename), with a ``writer`` record (pid, process
  start, pid namespace, boot);
- :func:`readiness` is the one answer to "may I read it now?", asked by ``canalflow fleet ready``
  (the compose healthcheck, and so the test harness), by the edge agent before it reads, and by
  ``fleet run`` before it removes a file another live fleet still serves.

Ready means: the file parses as a whole manifest; its writer is not provably gone (same boot, and
where we share its pid namespace, the same process still runs); and every endpoint answers (TCP
connects, a pty path exists). Linux ``/proc`` gives the writer checks; without it they are skipped.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from canalflow.errors import CanalflowError

CONNECT_TIMEOUT_S = 1.0
_PROC = Path("/proc")


class ManifestNotReady(CanalflowError, RuntimeError):
    """The manifest is missing, incomplete, stale or its endpoints do not answer (exit 1)."""


@dataclass(frozen=True)
class Readiness:
    ready: bool
    reason: str  # why not, naming the file; or what is ready

    def __bool__(self) -> bool:
        return self.ready


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _process_start(pid: int | str) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (``/proc/PID/stat`` field 22)."""
    stat = _read(_PROC / str(pid) / "stat")
    return None if stat is None else stat.rsplit(")", 1)[1].split()[19]


def _pid_namespace() -> str | None:
    try:
        return os.readlink(_PROC / "self" / "ns" / "pid")
    except OSError:
        return None


def writer_record() -> dict[str, Any]:
    """Who is writing: this process (pid and start, pid namespace, boot) and when."""
    return {"pid": os.getpid(), "process_start": _process_start("self"), "pid_namespace": _pid_namespace(),
            "boot_id": _read(_PROC / "sys" / "kernel" / "random" / "boot_id"), "written_at": time.time()}


def writer_gone(writer: Mapping[str, Any]) -> str | None:
    """Why the process that wrote a manifest is provably not running any more, or None."""
    boot = _read(_PROC / "sys" / "kernel" / "random" / "boot_id")
    if boot and writer.get("boot_id") and boot != writer["boot_id"]:
        return "it was written before the machine last booted"
    namespace = _pid_namespace()
    if namespace is None or writer.get("pid_namespace") != namespace:
        return None  # another container's pid (edge agents share only the fleet's network): unknowable
    if _process_start(writer.get("pid", 0)) != writer.get("process_start"):
        return f"its fleet (pid {writer.get('pid')}) is no longer running"
    return None


def write_manifest(path: Path | str, manifest: Mapping[str, Any]) -> Path:
    """Write ``manifest`` with this process's writer record, atomically: a reader sees the old
    file, no file or the whole new one, never half of it."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({**manifest, "writer": writer_record()}, indent=2, ensure_ascii=False))
    tmp.replace(target)
    return target


def clear_stale(path: Path | str) -> bool:
    """Remove a manifest left by an earlier fleet (True if there was one). Refuses, naming the
    process, when a fleet that is still running serves it."""
    target = Path(path)
    state = readiness(target)
    if state.ready:
        raise CanalflowError(f"{target}: {state.reason}",
                             hint="stop that fleet, or give this one another --manifest")
    try:
        target.unlink()
    except FileNotFoundError:
        return False
    return True


def _load(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def readiness(path: Path | str, *, timeout_s: float = CONNECT_TIMEOUT_S) -> Readiness:
    """Whether the manifest at ``path`` is fresh and its endpoints answer (see the module doc)."""
    target = Path(path)
    if not target.exists():
        return Readiness(False, f"{target}: no fleet manifest yet: is `canalflow fleet run --manifest {target}` running?")
    data = _load(target)
    if data is None or not {"clock", "gateways", "writer"} <= set(data):
        return Readiness(False, f"{target}: not a whole fleet manifest (clock, gateways, writer): a half-written "
                                "file or one left by an older canalflow; `canalflow fleet run` rewrites it")
    gone = writer_gone(data["writer"])
    if gone:
        return Readiness(False, f"{target}: stale: {gone}; wait for `canalflow fleet run` to rewrite it")
    for gateway, endpoint in data["gateways"].items():
        silent = _unanswered(endpoint, timeout_s)
        if silent:
            return Readiness(False, f"{target}: gateway {gateway} at {silent} does not answer: the fleet that "
                                    "wrote it is gone or not yet serving")
    pid = data["writer"].get("pid")
    return Readiness(True, f"{target}: ready: {len(data['gateways'])} gateway(s) of fleet pid {pid} answer")


def _unanswered(endpoint: Mapping[str, Any], timeout_s: float) -> str | None:
    """The address of an endpoint that does not answer, or None."""
    if endpoint.get("transport") == "rtu":
        device = str(endpoint.get("path"))
        return None if os.path.exists(device) else device
    address = f"{endpoint.get('host')}:{endpoint.get('port')}"
    try:
        with socket.create_connection((str(endpoint["host"]), int(endpoint["port"])), timeout=timeout_s):
            return None
    except (OSError, KeyError, TypeError, ValueError):
        return address


def wait_ready(path: Path | str, timeout_s: float, *, poll_s: float = 0.2) -> Readiness:
    """:func:`readiness`, asked until ready or ``timeout_s`` has passed; raises
    :class:`ManifestNotReady` with the last reason then."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = readiness(path)
        if state.ready:
            return state
        if time.monotonic() >= deadline:
            raise ManifestNotReady(state.reason + (f" (waited {timeout_s:g} s)" if timeout_s else ""))
        time.sleep(poll_s)
