"""Rejected station frames, kept with their raw bytes: one JSON object per line, bounded in size."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class DeadLetters:
    """Append-only JSON lines; past ``max_bytes`` the file is moved to ``<name>.1`` (one generation kept)."""

    def __init__(self, path: Path | str, *, max_bytes: int = 20_000_000, max_raw: int = 4200) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.max_raw = max_raw
        self.written = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def add(self, *, ts_ms: int, peer: str, protocol: str | None, station: str | None, reason: str,
            message: str, raw: bytes) -> None:
        record: dict[str, Any] = {"ts": ts_ms, "peer": peer, "protocol": protocol, "station": station,
                                  "reason": reason, "message": message, "raw": raw[: self.max_raw].hex(),
                                  "raw_bytes": len(raw)}
        line = json.dumps(record, ensure_ascii=False) + "\n"
        if self.path.exists() and self.path.stat().st_size + len(line) > self.max_bytes:
            os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        with self.path.open("a", encoding="utf-8") as out:
            out.write(line)
        self.written += 1

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line]
