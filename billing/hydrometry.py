"""Versioned ratings: billing recomputes flow from the stored raw levels with the rating in force.

The edge publishes a provisional rated flow (flag ``rated``) beside the raw level. Billing does
not trust it: for a point with ``ratings`` in the district file, every reading with a level is
re-rated with the version valid on its local date (``valid_from``), so a new rating recomputes
the history it covers as soon as it is in the district file. Readings where the structure is
submerged (free-flow formula over-reads) or the stage is beyond a curve's calibration become
``suspect``. The versions used, with the span and count of readings each rated, are recorded on
the derived volume.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import numpy as np

from canalflow import ratings
from canalflow.contract import Quality
from canalflow.district import District
from canalflow.volume import Series

SUSPECT = Quality.suspect.code
GOOD = Quality.good.code


@dataclass(frozen=True)
class RatingUse:
    """One rating version applied to a span of a point's readings."""

    version: int  # index in the point's ratings list
    label: str
    valid_from: str | None
    first_ms: int
    last_ms: int
    readings: int
    submerged: int
    extrapolated: int

    def to_dict(self) -> dict[str, object]:
        return {"version": self.version, "rating": self.label, "valid_from": self.valid_from, "first_ms": self.first_ms,
                "last_ms": self.last_ms, "readings": self.readings, "submerged": self.submerged, "extrapolated": self.extrapolated}


def rating_label(spec: object) -> str:
    data = spec.model_dump(exclude_none=True)  # type: ignore[attr-defined]
    kind = data.pop("type")
    data.pop("valid_from", None)
    details = ", ".join(f"{k} {v}" for k, v in data.items() if k != "segments")
    if "segments" in data:
        details = (details + ", " if details else "") + f"{len(data['segments'])} segment(s)"
    return f"{kind} ({details})" if details else kind


def version_starts_ms(district: District, point_id: str) -> list[int]:
    """Epoch ms at which each rating version of a point starts (local midnight of valid_from)."""
    tz = ZoneInfo(district.spec.district.timezone)
    starts = []
    for spec in district.points[point_id].ratings:
        if spec.valid_from is None:
            starts.append(-(2**62))
        else:
            starts.append(int(dt.datetime.combine(spec.valid_from, dt.time(), tzinfo=tz).timestamp() * 1000))
    return starts


def rerate(district: District, point_id: str, series: Series) -> tuple[Series, list[RatingUse]]:
    """The series with flow recomputed from level by the rating versions in force (unchanged if the
    point has no rating or the series no level)."""
    specs = district.points[point_id].ratings
    level = series.values.get("level")
    if not specs or level is None or not np.any(np.isfinite(level)):
        return series, []
    models = [ratings.parse_rating(s.model_dump()) for s in specs]
    starts = np.array(version_starts_ms(district, point_id), dtype=np.int64)
    version = np.searchsorted(starts, series.ts_ms, side="right") - 1
    flow = series.values.get("flow", np.full(len(series), np.nan)).copy()
    qcode = series.qcode.copy()
    down = series.values.get("downstream_level")
    velocity = series.values.get("velocity")
    uses: list[RatingUse] = []
    for index, model in enumerate(models):
        rows = np.flatnonzero((version == index) & np.isfinite(level))
        if len(rows) == 0:
            continue
        valid_from = specs[index].valid_from
        try:
            rated = ratings.flow_array(model, level[rows], None if down is None else down[rows],
                                       velocity_ms=None if velocity is None else velocity[rows])
        except ratings.RatingError as exc:
            # e.g. an area-velocity rating without velocity readings: keep the edge's flow, as suspect
            qcode[rows] = np.maximum(qcode[rows], SUSPECT)
            uses.append(RatingUse(index, f"{rating_label(specs[index])} NOT APPLIED: {exc}", valid_from.isoformat() if valid_from else None,
                                  int(series.ts_ms[rows[0]]), int(series.ts_ms[rows[-1]]), 0, 0, 0))
            continue
        flow[rows] = rated.flow_m3s
        doubtful = rated.submerged | rated.extrapolated
        qcode[rows] = np.where(doubtful & (qcode[rows] == GOOD), SUSPECT, qcode[rows])
        uses.append(RatingUse(index, rating_label(specs[index]), valid_from.isoformat() if valid_from else None,
                              int(series.ts_ms[rows[0]]), int(series.ts_ms[rows[-1]]), len(rows),
                              int(np.count_nonzero(rated.submerged)), int(np.count_nonzero(rated.extrapolated))))
    before_first = np.flatnonzero(version < 0)
    if len(before_first):
        qcode[before_first] = np.maximum(qcode[before_first], SUSPECT)  # no rating in force: keep the edge's flow, as suspect
    values = dict(series.values)
    values["flow"] = flow
    return Series(series.ts_ms, values, qcode), uses
