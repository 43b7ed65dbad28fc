"""Synthetic districts of any size, for benchmarks and scale tests (written as ordinary district files).

One main canal feeds ``branches`` branch canals; each branch feeds ``laterals_per_branch`` laterals;
intakes (one billing unit each) fill the laterals until the district has ``meters`` metering points.
Branch heads are area-velocity stations, lateral heads radar levels at Parshall flumes, intakes
alternate between EM pipe meters and TUF-2000M ultrasonic meters. Points are put on gateways in
order, at most ``units_per_gateway`` each (Modbus allows 247 unit ids on a bus).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

MAX_UNITS = 247


def synthetic_district(meters: int = 10_000, *, branches: int = 40, laterals_per_branch: int = 8,
                       units_per_gateway: int = 244) -> dict[str, Any]:
    """A district mapping with exactly ``meters`` metering points."""
    if not 1 <= units_per_gateway <= MAX_UNITS:
        raise ValueError(f"units_per_gateway must be 1..{MAX_UNITS}")
    laterals = branches * laterals_per_branch
    intakes = meters - 1 - branches - laterals
    if intakes < laterals:
        raise ValueError(f"{meters} meters cannot fill {laterals} laterals with at least one intake each")
    canals: list[dict[str, Any]] = [{"id": "M1", "name": "main", "level": "main", "source": "HW",
                                     "length_km": float(branches + 1), "soil": "loam", "lining_factor": 0.25,
                                     "width_m": 20, "velocity_ms": 1.0}]
    points: list[dict[str, Any]] = [{"id": "M1-HEAD", "role": "diversion", "canal": "M1", "km": 0, "profile": "av-station",
                                     "ratings": [{"type": "area_velocity", "bottom_width_m": 12, "side_slope": 1.5}]}]
    units: list[dict[str, Any]] = []
    per_lateral = [intakes // laterals + (1 if i < intakes % laterals else 0) for i in range(laterals)]
    for b in range(branches):
        branch = f"B{b + 1:03d}"
        canals.append({"id": branch, "name": branch, "level": "branch", "source": "M1", "offtake_km": float(b + 1),
                       "length_km": float(laterals_per_branch + 1), "soil": "loam", "lining_factor": 0.4,
                       "width_m": 6, "velocity_ms": 0.7})
        points.append({"id": f"{branch}-HEAD", "role": "diversion", "canal": "M1", "km": float(b + 1), "feeds": branch,
                       "profile": "av-station"})
        for lat in range(laterals_per_branch):
            lateral = f"{branch}L{lat + 1:02d}"
            count = per_lateral[b * laterals_per_branch + lat]
            length = math.ceil(count * 0.2) + 1.0
            canals.append({"id": lateral, "name": lateral, "level": "lateral", "source": branch,
                           "offtake_km": float(lat + 1), "length_km": length, "soil": "loam", "width_m": 2.5,
                           "velocity_ms": 0.5})
            points.append({"id": f"{lateral}-HEAD", "role": "diversion", "canal": branch, "km": float(lat + 1),
                           "feeds": lateral, "profile": "radar-parshall", "ratings": [{"type": "parshall", "throat_mm": 610}]})
            for i in range(count):
                point_id = f"{lateral}-I{i + 1:02d}"
                points.append({"id": point_id, "role": "intake", "canal": lateral, "km": round(0.2 * (i + 1), 3),
                               "profile": "em-pipe" if i % 2 == 0 else "tuf2000m"})
                units.append({"id": f"U-{point_id}", "name": point_id, "kind": "village", "township": "T1",
                              "charging_points": [point_id], "crops": [{"crop": "wheat", "area_mu": 300 + 10 * (i % 7)}]})
    gateways = []
    for index, point in enumerate(points):
        gateway = f"GW{index // units_per_gateway + 1:03d}"
        if not gateways or gateways[-1]["id"] != gateway:
            gateways.append({"id": gateway, "transport": "tcp", "host": "127.0.0.1", "port": 15000 + len(gateways)})
        point["gateway"] = gateway
        point["unit_id"] = index % units_per_gateway + 1
    return {
        "version": 1,
        "district": {"id": "synthetic", "name": f"synthetic district, {meters} meters"},
        "soils": {"loam": {"A": 1.9, "m": 0.4}},
        "headworks": [{"id": "HW", "name": "headworks", "capacity_m3s": 500}],
        "canals": canals,
        "gateways": gateways,
        "points": points,
        "townships": [{"id": "T1", "name": "township"}],
        "crops": [{"id": "wheat", "crop_class": "grain", "quotas": [{"season_kind": "spring", "m3_per_mu": 120}]}],
        "units": units,
        "seasons": [{"id": "spring", "kind": "spring", "start": "2026-03-01", "end": "2026-05-31", "tariff": "T",
                     "rounds": [{"id": "S1", "start": "2026-03-10T06:00:00+08:00", "days": 10}]}],
        "tariffs": [{"id": "T", "prices": {"grain": {"backbone": "0.08", "terminal": "0.03"}},
                     "bands": [{"multiplier": "1.0"}]}],
    }


def write_synthetic_district(path: Path | str, meters: int = 10_000, **kwargs: Any) -> Path:
    target = Path(path)
    target.write_text(yaml.safe_dump(synthetic_district(meters, **kwargs), allow_unicode=True, sort_keys=False))
    return target
