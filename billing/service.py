"""What the billing API and the web workbench both serve from: the ledger, the district file and InfluxDB."""

from __future__ import annotations

import argparse
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from canalflow.cliopts import DEFAULT_INFLUX_DB


@dataclass(frozen=True)
class ServiceConfig:
    ledger_url: str
    district_path: Path | None = None
    influx_url: str | None = None
    influx_db: str = DEFAULT_INFLUX_DB
    influx_token: str | None = None
    _loaded: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)  # a copy (replace) loads afresh
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ServiceConfig:
        """From ``--ledger``, ``--district`` and ``--influx/--db/--token`` (canalflow.cliopts)."""
        return cls(args.ledger, args.district, args.influx, args.db, args.token)

    def district(self) -> Any:
        """The district, loaded once; None without a district file."""
        if self.district_path is None:
            return None
        with self._lock:
            if "district" not in self._loaded:
                from canalflow.district import load_district

                self._loaded["district"] = load_district(self.district_path)
            return self._loaded["district"]

    def influx(self) -> Any:
        """A new InfluxDB client (use it with ``with``); None without an InfluxDB URL."""
        if not self.influx_url:
            return None
        from canalflow.influx import InfluxV1

        return InfluxV1(self.influx_url, self.influx_db, token=self.influx_token)
