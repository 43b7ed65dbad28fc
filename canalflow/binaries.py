"""Find the system executables canalflow runs (``openssl`` for credentials; the test servers too).

Debian installs some of them (mosquitto, ``mosquitto_passwd``) in /usr/sbin, which is not on a
normal user's PATH, so that is searched after PATH.  A missing one raises :class:`BinaryMissing`
with the command that installs it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from canalflow.errors import CanalflowError

__all__ = ["SYSTEM_DIRS", "BinaryMissing", "find_binary"]

# Directories searched after PATH.  Tests set this to () to simulate a machine without the packages.
SYSTEM_DIRS: tuple[str, ...] = ("/usr/sbin", "/usr/bin")


class BinaryMissing(CanalflowError, RuntimeError):
    """An executable is not installed; the message says how to install it."""


def find_binary(name: str, package: str) -> str:
    """Return the path of executable ``name`` from PATH or SYSTEM_DIRS, else raise BinaryMissing."""
    found = shutil.which(name)
    if found:
        return found
    for directory in SYSTEM_DIRS:
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    searched = ", ".join(["PATH", *SYSTEM_DIRS])
    raise BinaryMissing(
        f"{name} not found (searched {searched}). Install it with "
        f"`sudo apt-get install {package}` (or run `make deps`), then retry."
    )
