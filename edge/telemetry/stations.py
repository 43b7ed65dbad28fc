"""From a decoded station frame to wire readings, per the station's mapping in the district file.

A station's ``elements`` say which SL 651 element identifier (``"39"``, ``"FF01"``) or which
SZY 206 field (``"flow"``, ``"volume.1"`` for the second meter's) is which wire quantity. Times:
SL 651 observation times are on the station clock (the station's zone); SZY 206-2016 time labels hold
only day and time of day, so the month and year are the receiver's (the latest such day not after
it); SL/T 427-2021 labels have the whole date. Values are scaled to the wire's SI units with the station's ``scale``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from canalflow.station_elements import SZY206_REF, element_problem
from edge.telemetry import sl651, szy206

__all__ = ["Mapped", "element_problem", "sl651_values", "szy206_values"]

@dataclass(frozen=True)
class Mapped:
    """One timestamped set of wire values from a frame."""

    ts_ms: int
    values: dict[str, float]


def sl651_values(station: Any, report: sl651.Report, zone: ZoneInfo) -> list[Mapped]:
    """The mapped quantities of a report, one :class:`Mapped` per observation time (``zone``: the station clock's)."""
    by_code = {int(ref, 16): quantity for quantity, ref in station.elements.items()}
    out: dict[int, dict[str, float]] = {}
    for element in report.elements:
        quantity = by_code.get(element.code)
        if quantity is None or element.observed is None:
            continue
        series = element.values if element.values else (element.value,)
        for index, value in enumerate(series):
            if value is None:
                continue
            when = element.observed + dt.timedelta(seconds=(element.step_s or 0) * index)
            out.setdefault(_ms(when, zone), {})[quantity] = float(value) * station.scale.get(quantity, 1.0)
    return [Mapped(ts, values) for ts, values in sorted(out.items())]


def szy206_values(station: Any, frame: szy206.Frame, zone: ZoneInfo, now_ms: int) -> list[Mapped]:
    """The mapped quantities of a C0/B0 frame, stamped with its time label (or ``now_ms`` without one)."""
    wanted = {}
    for quantity, ref in station.elements.items():
        match = SZY206_REF.match(ref)
        if match:
            wanted[(match.group(1), int(match.group(2) or 0))] = quantity
    values = {wanted[(v.name, v.index)]: float(v.value) * station.scale.get(wanted[(v.name, v.index)], 1.0)
              for v in frame.values if (v.name, v.index) in wanted}
    if not values:
        return []
    ts = now_ms if frame.tp is None else _tp_ms(frame.tp, zone, now_ms)
    return [Mapped(ts, values)]


def _tp_ms(tp: szy206.TimeLabel, zone: ZoneInfo, now_ms: int) -> int:
    if tp.month is not None and tp.year is not None:  # SL/T 427-2021: a whole date
        try:
            return int(dt.datetime(tp.year, tp.month, tp.day, tp.hour, tp.minute, tp.second,
                                   tzinfo=zone).timestamp() * 1000)
        except ValueError:
            return now_ms
    now = dt.datetime.fromtimestamp(now_ms / 1000, zone)
    year, month = now.year, now.month
    for _ in range(3):  # this month, else the one before (a day 31 may skip a month)
        try:
            when = dt.datetime(year, month, tp.day, tp.hour, tp.minute, tp.second, tzinfo=zone)
        except ValueError:
            when = None
        if when is not None and when <= now + dt.timedelta(days=1):
            return int(when.timestamp() * 1000)
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return now_ms


def _ms(when: dt.datetime, zone: ZoneInfo) -> int:
    return int(when.replace(tzinfo=zone).timestamp() * 1000)


def station_time_ms(when: dt.datetime, zone: ZoneInfo) -> int:
    """A naive station-clock time (SL 651 send time) as epoch ms."""
    return _ms(when, zone)
