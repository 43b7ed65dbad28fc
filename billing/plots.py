"""The typical plots' readings from InfluxDB, as :mod:`canalflow.field` measures them.

Every local day of the window whose whole span lies inside it is looked at, plot by plot:

- the plot inlet meter's volume over the day (:func:`billing.volumes.point_volume`, the same
  volume method as billing's); a day with at least ``MIN_IRRIGATION_MM`` over the plot is an
  irrigation; a day whose inlet readings are incomplete cannot be told and is reported so;
- θ at each depth of the soil-moisture station: its first good reading at or after the day's
  start and the next day's start (within ``max_gap_minutes``), the water content before and
  after the irrigation;
- the rain gauge's ``rain_total`` at the same two moments: the day's rain;
- the reference ET of the day: the plot's declared ``et0_mm_per_day``.

A reading that is missing makes the irrigation unmeasurable (``PlotIrrigation.missing`` says
which), so the field coefficient is reported incomplete rather than guessed.
"""

from __future__ import annotations

import datetime as dt

import numpy as np

from billing.readings import fetch_series
from billing.volumes import point_volume
from canalflow.contract import SOIL_DEPTHS_CM
from canalflow.district import District, Plot
from canalflow.field import PlotIrrigation, mm_per_m3
from canalflow.influx import InfluxV1
from canalflow.volume import Series

MIN_IRRIGATION_MM = 1.0  # less water than this through a plot's inlet in a day is no irrigation
SENSOR_QUANTITIES = (*(f"vwc_{d}cm" for d in SOIL_DEPTHS_CM), "rain_total")
BAD = 3  # canalflow.contract.Quality bad: not a reading to measure with


def whole_days(district: District, t0_ms: int, t1_ms: int) -> list[tuple[dt.date, int, int]]:
    """Local days (day, start ms, end ms) lying wholly inside [t0, t1)."""
    out = []
    day = district.local_date(t0_ms)
    while True:
        start = int(dt.datetime.combine(day, dt.time(0), district.tz).timestamp() * 1000)
        end = int(dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), district.tz).timestamp() * 1000)
        if end > t1_ms:
            return out
        if start >= t0_ms:
            out.append((day, start, end))
        day += dt.timedelta(days=1)


def first_reading(series: Series, t_ms: int, max_gap_ms: int, quantities: list[str]) -> dict[str, float] | None:
    """The quantities of the first good reading in [t, t + max_gap] having all of them; None if there is none."""
    if not len(series) or any(q not in series.values for q in quantities):
        return None
    ok = (series.ts_ms >= t_ms) & (series.ts_ms <= t_ms + max_gap_ms) & (series.qcode != BAD)
    for q in quantities:
        ok &= np.isfinite(series.values[q])
    hits = np.flatnonzero(ok)
    if not len(hits):
        return None
    return {q: float(series.values[q][hits[0]]) for q in quantities}


def plot_irrigations(district: District, influx: InfluxV1, t0_ms: int, t1_ms: int, *, as_of_ms: int | None = None) -> list[PlotIrrigation]:
    """Every typical plot's irrigations on the window's whole local days, from the stored readings."""
    plots = district.spec.plots
    days = whole_days(district, t0_ms, t1_ms)
    if not plots or not days:
        return []
    max_gap = int(district.spec.tolerances.max_gap_minutes * 60_000)
    first, last = days[0][1], days[-1][2]
    inlets = fetch_series(influx, district.id, [p.inlet for p in plots], first, last, margin_ms=max_gap, as_of_ms=as_of_ms)
    sensor_ids = {x for p in plots for x in (p.station, p.rain_gauge) if x is not None}
    sensors = fetch_series(influx, district.id, sensor_ids, first, last, margin_ms=max_gap, as_of_ms=as_of_ms,
                           quantities=SENSOR_QUANTITIES)
    out = []
    for plot in plots:
        for day, start, end in days:
            irrigation = _irrigation(district, plot, day, start, end, inlets[plot.inlet], sensors, max_gap)
            if irrigation is not None:
                out.append(irrigation)
    return out


def _irrigation(district: District, plot: Plot, day: dt.date, start: int, end: int, inlet: Series,
                sensors: dict[str, Series], max_gap: int) -> PlotIrrigation | None:
    volume = point_volume(district, plot.inlet, inlet, start, end, by_month=False).result
    if not volume.incomplete and volume.volume_m3 * mm_per_m3(plot) < MIN_IRRIGATION_MM:
        return None
    missing = "" if not volume.incomplete else f"inlet meter {plot.inlet} readings cover {volume.coverage:.0%} of {day}"
    depths = [f"vwc_{d}cm" for d in plot.depths_cm if d <= plot.wetting_depth_m * 100]
    before = after = None
    if plot.station is not None:
        station = sensors.get(plot.station, Series.empty())
        before, after = (first_reading(station, t, max_gap, depths) for t in (start, end))
    rain_mm = 0.0
    if plot.rain_gauge is not None:
        gauge = sensors.get(plot.rain_gauge, Series.empty())
        totals = [first_reading(gauge, t, max_gap, ["rain_total"]) for t in (start, end)]
        if totals[0] is None or totals[1] is None:
            missing = missing or f"rain gauge {plot.rain_gauge} has no reading at the start of {day} or of the next day"
        else:
            rain_mm = max(0.0, totals[1]["rain_total"] - totals[0]["rain_total"]) * 1000.0
    return PlotIrrigation(plot.id, day, volume.volume_m3, _by_depth(before), _by_depth(after), rain_mm, plot.et0_mm_per_day, missing)


def _by_depth(reading: dict[str, float] | None) -> dict[int, float] | None:
    if reading is None:
        return None
    return {int(q.removeprefix("vwc_").removesuffix("cm")): v for q, v in reading.items()}
