"""Canal water balance and efficiency on the canal graph (domain.md section 2).

Figures, each with its method, the data coverage behind it, and its target where there is one:

- **Reach balance**: in, out, loss = in − out, expected seepage loss, η = out / in. Out includes
  outfalls (water returned to a drain is not lost in the reach). A loss above
  ``tolerances.loss_anomaly_factor`` × the expected one is an anomaly (leak, breach, unmetered
  withdrawal); η > 1 is flagged as a data error, never reported as a gain.
- **Canal η**: Σ outflows (lower canals, intakes, outfalls) / diversion into the canal.
- **Level η**: Σ outflows / Σ inflows over the canals of one level (main, branch, lateral, farm).
- **Canal-system η**, three ways:
  ``graph`` (path-weighted): delivered / (diverted − Σ outfall / Π η along the outfall's path);
  every delivery's water is traced up its own path, so a skip-level offtake is counted right;
  ``level_product``: Π level η — equal to the graph figure only for series or equivalent-parallel
  layouts, shown with a warning naming the skip-level canals when there are any;
  ``delivered_over_diverted``: the plain ratio (an outfall spill counts as loss).
- **Field and whole district**: η_f weighted by delivered volume from the units'
  ``field_efficiency``; η = η_sys × η_f (``field_coefficients``) and by the head-tail method
  Σ w_k·A_k / W_gross with the crops' typical net depths (``head_tail``; meaningful over a season).

A figure whose inputs are missing or cover less than ``tolerances.min_coverage`` of the window is
reported incomplete, with no number.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from billing.allocation import units_by_point
from billing.volumes import volume_source
from canalflow.contract import M, line
from canalflow.district import CanalLevel, District, Point, PointRole
from canalflow.influx import InfluxV1
from canalflow.seepage import headworks_travel_ms as travel_ms
from canalflow.seepage import judge_reach, reach_expected_seepage_m3
from canalflow.volume import VolumeResult

M2_PER_MU = 10_000 / 15


@dataclass(frozen=True)
class Figure:
    name: str
    value: float | None  # None when incomplete
    method: str
    coverage: float
    incomplete: bool
    target: float | None = None
    flags: tuple[str, ...] = ()
    note: str = ""

    @property
    def meets_target(self) -> bool | None:
        if self.value is None or self.target is None:
            return None
        return self.value >= self.target - 1e-9  # a figure equal to its target meets it despite float noise

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"meets_target": self.meets_target}


@dataclass(frozen=True)
class ReachBalance:
    canal: str
    reach: str
    inflow_points: tuple[str, ...]
    outflow_points: tuple[str, ...]
    in_m3: float
    out_m3: float
    loss_m3: float
    expected_loss_m3: float
    eta: float | None
    coverage: float
    incomplete: bool
    anomaly: bool
    flags: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class EfficiencyReport:
    district_id: str
    t0_ms: int
    t1_ms: int
    reaches: tuple[ReachBalance, ...]
    canals: dict[str, Figure]
    levels: dict[str, Figure]
    system: dict[str, Figure]  # graph, level_product, delivered_over_diverted
    field: Figure
    whole: dict[str, Figure]  # field_coefficients, head_tail
    warnings: tuple[str, ...] = field(default=())
    canal_volumes: dict[str, tuple[float, float]] = field(default_factory=dict)  # canal -> (in, out) m3

    def to_dict(self) -> dict[str, Any]:
        return {
            "district": self.district_id,
            "window": {"t0_ms": self.t0_ms, "t1_ms": self.t1_ms},
            "reaches": [r.to_dict() for r in self.reaches],
            "canals": {k: v.to_dict() for k, v in self.canals.items()},
            "levels": {k: v.to_dict() for k, v in self.levels.items()},
            "system": {k: v.to_dict() for k, v in self.system.items()},
            "field": self.field.to_dict(),
            "whole": {k: v.to_dict() for k, v in self.whole.items()},
            "warnings": list(self.warnings),
        }


# ---------------------------------------------------------------------------------------------
# Volumes per point


@dataclass
class _Sum:
    volume: float = 0.0
    coverage: float = 1.0
    incomplete: bool = False
    missing: list[str] = field(default_factory=list)

    def add(self, point_id: str, result: VolumeResult | None) -> None:
        if result is None or result.method == "none":
            self.missing.append(point_id)
            self.incomplete = True
            self.coverage = 0.0
            return
        self.volume += result.volume_m3
        self.coverage = min(self.coverage, result.coverage)
        self.incomplete = self.incomplete or result.incomplete


def _sum(points: Iterable[Point], volumes: Mapping[str, VolumeResult]) -> _Sum:
    total = _Sum()
    for p in points:
        total.add(p.id, volumes.get(p.id))
    return total


# ---------------------------------------------------------------------------------------------
# Reaches and canals


def reach_balances(district: District, volumes: Mapping[str, VolumeResult], seconds: float) -> list[ReachBalance]:
    factor = district.spec.tolerances.loss_anomaly_factor
    out: list[ReachBalance] = []
    for ref in district.reaches:
        ins, outs = district.reach_balance_points(ref.canal, ref.reach.id)
        vin, vout = _sum(ins, volumes), _sum(outs, volumes)
        incomplete = vin.incomplete or vout.incomplete or not ins
        flags: list[str] = []
        if not ins:
            flags.append("no_inflow_meter")
        flags += [f"missing:{p}" for p in vin.missing + vout.missing]
        loss = vin.volume - vout.volume
        expected = reach_expected_seepage_m3(district, ref.canal, ref.reach.id, {p.id: volumes[p.id].volume_m3 for p in outs if p.id in volumes}, seconds)
        eta = vout.volume / vin.volume if vin.volume > 0 and not incomplete else None
        verdict = judge_reach(vin.volume, vout.volume, expected, incomplete=incomplete, anomaly_factor=factor)
        if verdict.data_error:
            flags.append("eta_above_1")  # more out than in (or out with nothing in): a meter error
        anomaly = verdict.anomaly
        if anomaly:
            flags.append("loss_anomaly")
        out.append(ReachBalance(
            ref.canal, ref.reach.id, tuple(p.id for p in ins), tuple(p.id for p in outs), vin.volume, vout.volume,
            loss, expected, eta, min(vin.coverage, vout.coverage), incomplete, anomaly, tuple(flags),
        ))
    return out


def canal_outflow_points(district: District, canal_id: str) -> list[Point]:
    """Points taking water out of a canal: diversions into canals it feeds, intakes and outfalls on it."""
    pts: list[Point] = []
    for p in district.spec.points:
        fed = district.fed_canal(p)
        if fed is not None:
            if district.canals[fed].source == canal_id:
                pts.append(p)
        elif p.role in (PointRole.intake, PointRole.outfall) and p.canal == canal_id and p.below is None:
            pts.append(p)
    return pts


@dataclass(frozen=True)
class _CanalFlow:
    inflow: _Sum
    outflow: _Sum

    @property
    def eta(self) -> float | None:
        if self.inflow.incomplete or self.outflow.incomplete or self.inflow.volume <= 0:
            return None
        return self.outflow.volume / self.inflow.volume


def _canal_flows(district: District, volumes: Mapping[str, VolumeResult]) -> dict[str, _CanalFlow]:
    flows: dict[str, _CanalFlow] = {}
    for canal_id in district.canals:
        head = district.diversion_point(canal_id)
        inflow = _sum([head] if head else [], volumes)
        if head is None:
            inflow.incomplete, inflow.coverage = True, 0.0
            inflow.missing.append(f"{canal_id}:no diversion point")
        flows[canal_id] = _CanalFlow(inflow, _sum(canal_outflow_points(district, canal_id), volumes))
    return flows


def _figure(name: str, num: float, den: float, method: str, parts: Iterable[_Sum], target: float | None = None, note: str = "") -> Figure:
    parts = list(parts)
    coverage = min((p.coverage for p in parts), default=0.0)
    incomplete = any(p.incomplete for p in parts) or den <= 0
    missing = [m for p in parts for m in p.missing]
    value = None if incomplete else num / den
    flags = tuple(["eta_above_1"] if value is not None and value > 1 else []) + tuple(f"missing:{m}" for m in missing)
    if incomplete and not note:
        note = "incomplete: " + (f"no data for {', '.join(missing)}" if missing else f"coverage {coverage:.0%} below the minimum" if den > 0 else "no inflow")
    return Figure(name, value, method, coverage, incomplete, target, flags, note)


# ---------------------------------------------------------------------------------------------
# System


def _path_product(district: District, canal_id: str, etas: Mapping[str, float | None]) -> float | None:
    product = 1.0
    node: str | None = canal_id
    while node in district.canals:
        eta = etas.get(node)
        if eta is None or eta <= 0:
            return None
        product *= eta
        node = district.canals[node].source
    return product


def system_figures(district: District, volumes: Mapping[str, VolumeResult], flows: Mapping[str, _CanalFlow], levels: Mapping[str, Figure]) -> tuple[dict[str, Figure], list[str]]:
    target = district.spec.targets.canal_system
    warnings: list[str] = []
    mains = [c for c in district.spec.canals if c.source in district.headworks]
    diverted = _Sum()
    for canal in mains:
        f = flows[canal.id].inflow
        diverted.volume += f.volume
        diverted.coverage = min(diverted.coverage, f.coverage)
        diverted.incomplete |= f.incomplete
        diverted.missing += f.missing
    intakes = district.canal_intakes
    outfalls = [p for p in district.spec.points if p.role is PointRole.outfall]
    delivered, returned = _sum(intakes, volumes), _sum(outfalls, volumes)
    etas = {c: f.eta for c, f in flows.items()}
    returned_gross = 0.0
    path_ok = True
    for p in outfalls:
        res = volumes.get(p.id)
        prod = _path_product(district, p.canal, etas)
        if res is None or prod is None:
            path_ok = False
            continue
        returned_gross += res.volume_m3 / prod
    graph_parts = [diverted, delivered, returned] + [flows[c].inflow for c in district.canals] + [flows[c].outflow for c in district.canals]
    graph = _figure("canal_system", delivered.volume, diverted.volume - returned_gross, "graph", graph_parts, target,
                    "" if path_ok else "incomplete: a canal on an outfall's path has no efficiency")
    if not path_ok and graph.value is not None:
        graph = Figure(graph.name, None, graph.method, graph.coverage, True, target, graph.flags, graph.note)
    product_value: float | None = 1.0
    product_incomplete = False
    for fig in levels.values():
        if fig.value is None:
            product_incomplete = True
            product_value = None
            break
        product_value *= fig.value  # type: ignore[operator]
    skip = district.skip_level_canals
    note = ""
    if skip:
        names = ", ".join(f"{c.id} ({c.level.value} from {c.source})" for c in skip)
        note = f"invalid for this network: skip-level offtakes {names} bypass a level, so the product under-estimates; use the graph figure"
        warnings.append(f"level product of efficiencies is not valid here: {note}")
    flags = (("skip_level",) if skip else ()) + (("eta_above_1",) if product_value is not None and product_value > 1 else ())
    product = Figure("canal_system", product_value, "level_product", min((f.coverage for f in levels.values()), default=0.0),
                     product_incomplete, target, flags, note)
    plain = _figure("canal_system", delivered.volume, diverted.volume, "delivered_over_diverted", [diverted, delivered], target,
                    "outfall spill counted as loss")
    return {"graph": graph, "level_product": product, "delivered_over_diverted": plain}, warnings


def level_figures(district: District, flows: Mapping[str, _CanalFlow]) -> dict[str, Figure]:
    out: dict[str, Figure] = {}
    for level in CanalLevel:
        canals = [c.id for c in district.spec.canals if c.level is level]
        if not canals:
            continue
        num = sum(flows[c].outflow.volume for c in canals)
        den = sum(flows[c].inflow.volume for c in canals)
        parts = [flows[c].inflow for c in canals] + [flows[c].outflow for c in canals]
        out[level.value] = _figure(f"level:{level.value}", num, den, "volume_ratio", parts)
    return out


def field_and_whole(district: District, volumes: Mapping[str, VolumeResult], system: Figure, diverted_m3: float, season_kind: str | None) -> tuple[Figure, dict[str, Figure]]:
    targets = district.spec.targets
    weighted = 0.0
    total = 0.0
    parts: list[_Sum] = []
    sharing = units_by_point(district)
    for point in district.canal_intakes:
        s = _sum([point], volumes)
        parts.append(s)
        units = sharing.get(point.id, [])
        area = sum(float(u.area_mu) for u in units)
        eff = sum(float(u.area_mu) * u.field_efficiency for u in units) / area if area > 0 else 1.0
        weighted += s.volume * eff
        total += s.volume
    field_fig = _figure("field", weighted, total, "units_field_efficiency", parts, targets.field)
    whole_target = targets.canal_system * targets.field
    coeff_value = system.value * field_fig.value if system.value is not None and field_fig.value is not None else None
    coeff = Figure("whole", coeff_value, "field_coefficients", min(system.coverage, field_fig.coverage),
                   coeff_value is None, whole_target, note="" if coeff_value is not None else "incomplete: canal-system or field figure missing")
    head_tail = _head_tail(district, diverted_m3, season_kind, system, whole_target)
    return field_fig, {"field_coefficients": coeff, "head_tail": head_tail}


def _head_tail(district: District, diverted_m3: float, season_kind: str | None, system: Figure, target: float) -> Figure:
    if season_kind is None:
        return Figure("whole", None, "head_tail", system.coverage, True, target, note="needs a whole-season window (--season): net depths are per season")
    net = 0.0
    missing = []
    for unit in district.spec.units:
        for crop_area in unit.crops:
            depth = district.crops[crop_area.crop].net_depth_mm.get(season_kind)
            if depth is None:
                missing.append(crop_area.crop)
                continue
            net += depth / 1000.0 * float(crop_area.area_mu) * M2_PER_MU
    incomplete = system.incomplete or diverted_m3 <= 0
    note = "season net depths against the season's diversion"
    if missing:
        note += f"; no {season_kind} net depth for {', '.join(sorted(set(missing)))} (counted as 0)"
    value = None if incomplete else net / diverted_m3
    return Figure("whole", value, "head_tail", system.coverage, incomplete, target,
                  ("eta_above_1",) if value is not None and value > 1 else (), note)


# ---------------------------------------------------------------------------------------------
# The report


def efficiency_report(
    district: District, volumes: Mapping[str, VolumeResult], t0_ms: int, t1_ms: int, *, season_kind: str | None = None
) -> EfficiencyReport:
    """Every balance and efficiency figure of a window from the points' window volumes."""
    seconds = (t1_ms - t0_ms) / 1000.0
    reaches = reach_balances(district, volumes, seconds)
    flows = _canal_flows(district, volumes)
    canals = {
        c: _figure(f"canal:{c}", f.outflow.volume, f.inflow.volume, "volume_ratio", [f.inflow, f.outflow])
        for c, f in flows.items()
    }
    levels = level_figures(district, flows)
    system, warnings = system_figures(district, volumes, flows, levels)
    diverted = sum(flows[c.id].inflow.volume for c in district.spec.canals if c.source in district.headworks)
    field_fig, whole = field_and_whole(district, volumes, system["graph"], diverted, season_kind)
    warnings += [f"reach {r.canal}/{r.reach}: loss {r.loss_m3:.0f} m3 is {r.loss_m3 / r.expected_loss_m3:.1f}x the expected seepage {r.expected_loss_m3:.0f} m3" for r in reaches if r.anomaly]
    warnings += [f"reach {r.canal}/{r.reach}: {r.out_m3:.0f} m3 out for {r.in_m3:.0f} m3 in is a data error (check the meters {', '.join(r.inflow_points + r.outflow_points)})"
                 for r in reaches if "eta_above_1" in r.flags]
    canal_volumes = {c: (f.inflow.volume, f.outflow.volume) for c, f in flows.items()}
    return EfficiencyReport(district.id, t0_ms, t1_ms, tuple(reaches), canals, levels, system, field_fig, whole, tuple(warnings), canal_volumes)


def kpi_lines(report: EfficiencyReport, ts_ms: int | None = None) -> list[str]:
    """Line protocol for Grafana, measurement ``efficiency`` (tags as dashboards/kpis.py reads them).

    scope ``system`` is the graph (path-weighted) figure; ``system_level_product`` and
    ``system_delivered_over_diverted`` the other methods; ``canal`` (tag canal), ``level`` (tag
    level), ``field`` and ``whole`` (tag method). Incomplete figures carry no ``eta`` field.
    """
    ts = ts_ms if ts_ms is not None else report.t1_ms
    lines = []

    def add(tags: dict[str, str], fig: Figure, in_m3: float | None = None, out_m3: float | None = None) -> None:
        fields: dict[str, float | int | bool | str] = {"coverage": float(fig.coverage), "incomplete": fig.incomplete, "method": fig.method}
        if fig.value is not None and math.isfinite(fig.value):
            fields["eta"] = float(fig.value)
        if fig.target is not None:
            fields["target"] = float(fig.target)
        if in_m3 is not None and out_m3 is not None:
            fields["in_m3"], fields["out_m3"] = float(in_m3), float(out_m3)
        lines.append(line(M.efficiency, {"district": report.district_id, **tags}, fields, ts))

    for canal, fig in report.canals.items():
        add({"scope": "canal", "canal": canal}, fig, *report.canal_volumes.get(canal, (None, None)))
    for level, fig in report.levels.items():
        add({"scope": "level", "level": level}, fig)
    for method, fig in report.system.items():
        add({"scope": "system" if method == "graph" else f"system_{method}"}, fig)
    add({"scope": "field"}, report.field)
    for method, fig in report.whole.items():
        add({"scope": "whole", "method": method}, fig)
    return lines


def efficiency_from_influx(
    district: District, influx: InfluxV1, t0_ms: int, t1_ms: int, *, season_kind: str | None = None, write_kpis: bool = False,
    travel_time: bool = False, source: str = "readings",
) -> EfficiencyReport:
    """Read every metering point's volumes for the window and build the report (optionally write KPIs).

    ``source``: ``readings`` (raw, re-rated; ``travel_time`` shifts each point's window by the
    travel time from the headworks) or ``rollups`` (the daily ``volume`` rollups, whole days);
    the same volumes as billing's (:mod:`billing.volumes`).
    """
    lag = {p: travel_ms(district, p) for p in district.points} if travel_time else None
    measured = volume_source(source, district, influx).measure(list(district.points), t0_ms, t1_ms, by_month=False, lag_ms=lag)
    volumes = measured.results()
    report = efficiency_report(district, volumes, t0_ms, t1_ms, season_kind=season_kind)
    if write_kpis:
        influx.write_lines(kpi_lines(report))
    return report


def format_report(report: EfficiencyReport) -> str:
    """A plain-text summary: each figure, its method, coverage and target."""

    def show(label: str, fig: Figure) -> str:
        value = "incomplete" if fig.value is None else f"{fig.value:.3f}"
        target = "" if fig.target is None else f"  target {fig.target:.2f} {'ok' if fig.meets_target else 'MISSED' if fig.meets_target is False else ''}"
        note = f"  ({fig.note})" if fig.note else ""
        return f"  {label:28} {value:>10}  {fig.method:24} coverage {fig.coverage:4.0%}{target}{note}"

    out = [f"efficiency of district {report.district_id}"]
    out.append("reaches:")
    for r in report.reaches:
        eta = "incomplete" if r.eta is None else f"{r.eta:.3f}"
        flags = f"  [{', '.join(r.flags)}]" if r.flags else ""
        out.append(f"  {r.canal + '/' + r.reach:28} {eta:>10}  in {r.in_m3:12.0f}  out {r.out_m3:12.0f}  loss {r.loss_m3:10.0f}  expected {r.expected_loss_m3:10.0f}{flags}")
    out.append("canals:")
    out += [show(c, f) for c, f in report.canals.items()]
    out.append("levels:")
    out += [show(level, f) for level, f in report.levels.items()]
    out.append("canal system:")
    out += [show(m, f) for m, f in report.system.items()]
    out.append("field and whole district:")
    out.append(show("field", report.field))
    out += [show(m, f) for m, f in report.whole.items()]
    out += [f"warning: {w}" for w in report.warnings]
    return "\n".join(out)
