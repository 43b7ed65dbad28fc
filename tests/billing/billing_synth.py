"""Synthetic metered readings for billing tests, written to real InfluxDB with the wire contract."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from billing.bills import BillingRun, build_run
from billing.ledger import Ledger
from billing.volumes import PointVolume, charging_points
from billing.window import season_window
from canalflow.contract import Quality, Reading, ReadingBatch, reading_lines
from canalflow.district import District
from canalflow.influx import InfluxV1
from canalflow.volume import VolumeResult
from testbed.steady import below_meters, steady_share

MIN = 60_000
DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo-district.yaml"


@dataclass(frozen=True)
class Meter:
    """A synthetic meter: flow q(t) = base·(1 + swing·sin(2π(t−t0)/period)); the truth is its integral."""

    base_m3s: float
    swing: float = 0.2
    period_ms: int = 6 * 3_600_000
    totaliser_start: float = 1000.0
    rollover: float | None = None
    integer_totaliser: bool = False

    def flow(self, t_ms: int, t0_ms: int) -> float:
        return self.base_m3s * (1 + self.swing * math.sin(2 * math.pi * (t_ms - t0_ms) / self.period_ms))

    def true_volume(self, a_ms: int, b_ms: int, t0_ms: int) -> float:
        w = 2 * math.pi / self.period_ms
        integral = (b_ms - a_ms) - self.swing / w * (math.cos(w * (b_ms - t0_ms)) - math.cos(w * (a_ms - t0_ms)))
        return self.base_m3s * integral / 1000.0

    def totaliser(self, t_ms: int, t0_ms: int) -> float:
        value = self.totaliser_start + self.true_volume(t0_ms, t_ms, t0_ms)
        if self.rollover:
            value %= self.rollover
        return float(math.floor(value)) if self.integer_totaliser else round(value, 2)


def batches(district: District, point: str, meter: Meter, t0_ms: int, t1_ms: int, step_ms: int,
            skip: Callable[[int], bool] = lambda t: False, quality: Callable[[int], Quality] = lambda t: Quality.good) -> Iterable[ReadingBatch]:
    p = district.points[point]
    readings = []
    for t in range(t0_ms, t1_ms + 1, step_ms):
        if skip(t):
            continue
        values = {"flow": meter.flow(t, t0_ms), "totaliser": meter.totaliser(t, t0_ms)}
        readings.append(Reading(ts=t, values=values, quality=quality(t)))
    for seq, start in enumerate(range(0, len(readings), 1000)):
        yield ReadingBatch(district=district.id, gateway=p.gateway, point=point, seq=seq, readings=tuple(readings[start:start + 1000]))


def write_meter(influx: InfluxV1, district: District, point: str, meter: Meter, t0_ms: int, t1_ms: int, step_ms: int = 5 * MIN, **kw) -> None:
    p = district.points[point]
    lines: list[str] = []
    for batch in batches(district, point, meter, t0_ms, t1_ms, step_ms, **kw):
        lines += reading_lines(batch, p.canal, p.role.value)
    for start in range(0, len(lines), 5000):
        influx.write_lines(lines[start:start + 5000])


def volume_result(volume_m3: float, coverage: float = 1.0) -> VolumeResult:
    return VolumeResult(volume_m3, coverage, 0.0, "flow", [], coverage < 0.9, 100)


def network_volumes(district: District, deliveries: dict[str, float], eta_of_reach: Callable[[str, str], float],
                    outfalls: dict[str, float] | None = None) -> dict[str, float]:
    """Consistent true volumes at every point: each reach passes ``eta`` of its inflow downstream.

    Walks canals from the leaves up: a reach's inflow = (its outflow points + the next reach's
    inflow) / eta; a canal's inflow is what its diversion point measures. Sub-meters get their
    share of their intake's delivery (:func:`testbed.steady.below_meters`).
    """
    outfalls = outfalls or {}
    volumes: dict[str, float] = {**deliveries, **outfalls}

    def canal_inflow(canal_id: str) -> float:
        canal = district.canals[canal_id]
        downstream = 0.0
        for reach in reversed(canal.reach_list):
            _, outs = district.reach_balance_points(canal_id, reach.id)
            total = downstream
            for p in outs:
                if p.role.value == "section":
                    continue  # the next reach's inflow, already in `downstream`
                fed = district.fed_canal(p)
                if fed is not None:
                    volumes[p.id] = canal_inflow(fed)
                total += volumes.setdefault(p.id, 0.0)
            downstream = total / eta_of_reach(canal_id, reach.id)
            section = [p for p in district.spec.points if p.role.value == "section" and p.canal == canal_id and p.km == reach.from_km]
            for p in section:
                volumes[p.id] = downstream
        return downstream

    for canal in district.spec.canals:
        if canal.source in district.headworks:
            head = district.diversion_point(canal.id)
            volumes[head.id] = canal_inflow(canal.id)
    return volumes | below_meters(district, volumes)  # sub-meters: inside their intakes' water


def write_constant_flows(influx: InfluxV1, district: District, volumes: dict[str, float], t0_ms: int, t1_ms: int,
                         margin_ms: int, step_ms: int = 10 * MIN) -> None:
    """Each point flows steadily so that it passes ``volumes[point]`` m3 in [t0, t1]; pipes also report a totaliser."""
    seconds = (t1_ms - t0_ms) / 1000
    lines: list[str] = []
    for point_id, volume in volumes.items():
        p = district.points[point_id]
        meter = Meter(volume / seconds, swing=0.0)
        has_totaliser = district.profile_of(point_id).by_quantity("totaliser") is not None
        readings = []
        for t in range(t0_ms - margin_ms, t1_ms + margin_ms + 1, step_ms):
            values = {"flow": meter.flow(t, t0_ms)}
            if has_totaliser:
                values["totaliser"] = meter.totaliser(t, t0_ms - margin_ms)
            readings.append(Reading(ts=t, values=values))
        batch = ReadingBatch(district=district.id, gateway=p.gateway, point=point_id, seq=0, readings=tuple(readings))
        lines += reading_lines(batch, p.canal, p.role.value)
    influx.write_lines(lines)


DAY_MS = 86_400_000


def fixed_run(district: District, day: int, days: int = 1, volume_m3: float = 123_456.789, **kwargs: Any) -> BillingRun:
    """A run over ``days`` days from the ``day``-th of the spring season, every meter on a canal at ``volume_m3`` (sub-meters: :func:`steady_share`)."""
    t0 = season_window(district, district.seasons["2026-spring"])[0] + day * DAY_MS
    steady = steady_share(district, volume_m3)
    volumes = {p: PointVolume(p, VolumeResult(steady[p], 1.0, 0.0, "flow", [], False, 99)) for p in charging_points(district)}
    kwargs.setdefault("as_of_ms", t0 + days * DAY_MS)
    return build_run(district, volumes, t0, t0 + days * DAY_MS, season=district.seasons["2026-spring"], **kwargs)


def issued(ledger: Ledger, run: BillingRun) -> BillingRun:
    ledger.record_run(run)
    ledger.advance(run.run_id, "approved", "li")
    ledger.advance(run.run_id, "issued", "wang")
    return run
