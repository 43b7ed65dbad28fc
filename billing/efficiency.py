"""Canal water balance and efficiency on the canal graph (domain.md section 2).

Figures, each with its method, the data coverage behind it, and its target where there is one:

- **Reach balance**: in, out, loss = in − out, expected seepage loss, η = out / in. Out includes
  outfalls (water returned to a drain is not lost in the reach). A loss above
  ``tolerances.loss_anomaly_factor`` × the expected one is an anomaly (leak, breach, unmetered
  withdrawal); η > 1 is flagged as a data error, never reported as a gain.
- **Canal η**: Σ outflows (lower canals, intakes, outfalls) / diversion into the canal.
- **Level η**: Σ outflows / Σ inflows over the canals of one level (main, branch, lateral, farm).
- **Canal-system η**: the official figure (``official``, :mod:`canalflow.coefficients`: delivered
  at the intakes ÷ (diversion − outfall water declared ``return``); tail spill is a loss) is the
  headline of the report, the KPIs and the dashboards. Diagnostics, each with its difference from
  the official figure in words:
  ``graph`` (path-weighted): delivered / (diverted − Σ outfall / Π η along the outfall's path);
  every delivery's water is traced up its own path, so a skip-level offtake is counted right, and
  outfall water is left out of the system altogether;
  ``level_product``: Π level η — equal to the graph figure only for series or equivalent-parallel
  layouts, shown with a warning naming the skip-level canals when there are any;
  ``delivered_over_diverted``: the plain ratio (every outfall, returns too, counts as loss).
- **Field and whole district**: η_f weighted by delivered volume from the units'
  ``field_efficiency``; η = η_sys × η_f (``field_coefficients``) and by the head-tail method
  Σ w_k·A_k / W_gross with the crops' typical net depths (``head_tail``; meaningful over a season).

A figure whose inputs are missing or cover less than ``tolerances.min_coverage`` of the window is
reported incomplete, with no number.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from billing.allocation import units_by_point
from billing.edits import Edit
from billing.plots import plot_irrigations
from billing.vee import findings_text, validate_measured
from billing.volumes import volume_source
from billing.window import quota_share
from canalflow.coefficients import DEFINITION, SystemBalance, SystemPoints, system_points
from canalflow.contract import SCOPE_FIELD_UNIT, M, line, policy_of
from canalflow.district import CanalLevel, District, Point, PointRole, Reach, Season
from canalflow.field import M2_PER_MU, PlotIrrigation, PlotResult, aggregate, measure_plot
from canalflow.influx import InfluxV1
from canalflow.seepage import headworks_travel_ms as travel_ms
from canalflow.seepage import judge_reach, reach_expected_seepage_m3
from canalflow.volume import Series, VolumeResult


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
    storage_m3: float | None = None  # ΔS over the window (None: no level to tell); loss = in − out − ΔS

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
    system: dict[str, Figure]  # official (the headline), then the diagnostics graph, level_product, delivered_over_diverted
    field: Figure
    whole: dict[str, Figure]  # field_coefficients, head_tail
    warnings: tuple[str, ...] = field(default=())
    canal_volumes: dict[str, tuple[float, float]] = field(default_factory=dict)  # canal -> (in, out) m3
    balance: SystemBalance | None = None  # the official figure's volumes
    storage_m3: float | None = None  # Σ ΔS of the reaches whose levels tell it
    field_units: dict[str, Figure] = field(default_factory=dict)  # η_f per billing unit (from typical plots)
    plots: tuple[PlotResult, ...] = ()

    @property
    def canal_system(self) -> Figure:
        """The official canal-system coefficient (:mod:`canalflow.coefficients`)."""
        return self.system["official"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "district": self.district_id,
            "window": {"t0_ms": self.t0_ms, "t1_ms": self.t1_ms},
            "reaches": [r.to_dict() for r in self.reaches],
            "canals": {k: v.to_dict() for k, v in self.canals.items()},
            "levels": {k: v.to_dict() for k, v in self.levels.items()},
            "system": {k: v.to_dict() for k, v in self.system.items()},
            "field": self.field.to_dict(),
            "field_units": {k: v.to_dict() for k, v in self.field_units.items()},
            "plots": [asdict(p) for p in self.plots],
            "whole": {k: v.to_dict() for k, v in self.whole.items()},
            "warnings": list(self.warnings),
            "canal_system": self.canal_system.to_dict() | {
                "definition": DEFINITION, "balance": asdict(self.balance) if self.balance else None, "storage_m3": self.storage_m3,
            },
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


Levels = Mapping[str, tuple[float, float]]  # point -> (level at the window's start, at its end), m


def edge_levels(district: District, series: Mapping[str, Series], t0_ms: int, t1_ms: int) -> dict[str, tuple[float, float]]:
    """Each point's measured level at the window's edges (interpolated; none without a reading within ``max_gap``)."""
    max_gap = district.spec.tolerances.max_gap_minutes * 60_000
    out: dict[str, tuple[float, float]] = {}
    for point_id, s in series.items():
        level = s.values.get("level")
        if level is None:
            continue
        ok = np.isfinite(level)
        ts, hs = s.ts_ms[ok], level[ok]
        edges = (t0_ms, t1_ms)
        if len(ts) and all(np.min(np.abs(ts - t)) <= max_gap for t in edges):
            h0, h1 = (float(np.interp(t, ts, hs)) for t in edges)
            out[point_id] = (h0, h1)
    return out


def reach_storage_m3(district: District, canal_id: str, reach: Reach, levels: Levels) -> float | None:
    """ΔS of a reach over the window: from its declared volume–level relation, else canal width ×
    reach length × the mean level change of the meters measuring this canal's water on the reach."""
    if reach.storage is not None:
        edge = levels.get(reach.storage.point)
        return None if edge is None else reach.storage.volume_m3(edge[1]) - reach.storage.volume_m3(edge[0])
    canal = district.canals[canal_id]
    first = reach.from_km == canal.reach_list[0].from_km
    ids = [p.id for p in district.spec.points if (district.fed_canal(p) == canal_id and first) or (
        district.fed_canal(p) is None and p.canal == canal_id and p.role is not PointRole.intake and reach.from_km <= p.km <= reach.to_km)]
    changes = [levels[p][1] - levels[p][0] for p in ids if p in levels]
    if not changes:
        return None
    return canal.width_m * (reach.to_km - reach.from_km) * 1000.0 * sum(changes) / len(changes)


def _storage_dominated(storage: float | None, inflow: float, share: float) -> bool:
    return storage is not None and abs(storage) > share * max(inflow, 0.0)


def _storage_words(storage: float, inflow: float, share: float, what: str) -> str:
    of = f" is {abs(storage) / inflow:.0%} of the {what}" if inflow > 0 else f" with no {what}"
    return (f"window too short for the round: storage change {storage:+,.0f} m3{of} (above {share:.0%}, "
            "tolerances.max_storage_share): canals filling or draining; take whole rounds or days of steady flow")


def reach_balances(district: District, volumes: Mapping[str, VolumeResult], seconds: float, levels: Levels | None = None) -> list[ReachBalance]:
    tol = district.spec.tolerances
    out: list[ReachBalance] = []
    for ref in district.reaches:
        ins, outs = district.reach_balance_points(ref.canal, ref.reach.id)
        vin, vout = _sum(ins, volumes), _sum(outs, volumes)
        incomplete = vin.incomplete or vout.incomplete or not ins
        flags: list[str] = []
        if not ins:
            flags.append("no_inflow_meter")
        flags += [f"missing:{p}" for p in vin.missing + vout.missing]
        storage = reach_storage_m3(district, ref.canal, ref.reach, levels or {})
        loss = vin.volume - vout.volume - (storage or 0.0)
        expected = reach_expected_seepage_m3(district, ref.canal, ref.reach.id, {p.id: volumes[p.id].volume_m3 for p in outs if p.id in volumes}, seconds)
        dominated = _storage_dominated(storage, vin.volume, tol.max_storage_share)
        eta = (vout.volume + (storage or 0.0)) / vin.volume if vin.volume > 0 and not incomplete and not dominated else None
        if dominated:
            flags.append("storage_dominated")
        # water kept in the canal (ΔS) left it as surely as water handed over: judged as outflow
        verdict = judge_reach(vin.volume, vout.volume + (storage or 0.0), expected, incomplete=incomplete or dominated,
                              anomaly_factor=tol.loss_anomaly_factor)
        if verdict.data_error:
            flags.append("eta_above_1")  # more out than in (or out with nothing in): a meter error
        anomaly = verdict.anomaly
        if anomaly:
            flags.append("loss_anomaly")
        out.append(ReachBalance(
            ref.canal, ref.reach.id, tuple(p.id for p in ins), tuple(p.id for p in outs), vin.volume, vout.volume,
            loss, expected, eta, min(vin.coverage, vout.coverage), incomplete, anomaly, tuple(flags), storage,
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


def official_figure(district: District, volumes: Mapping[str, VolumeResult]) -> tuple[Figure, SystemBalance]:
    """The official canal-system coefficient and its balance (:mod:`canalflow.coefficients`)."""
    pts = system_points(district)
    diverted = _diverted(pts, volumes)
    delivered, returned, spilled = (_sum(group, volumes) for group in (pts.deliveries, pts.returns, pts.spills))
    balance = SystemBalance(diverted.volume, delivered.volume, returned.volume, spilled.volume)
    fig = _figure("canal_system", balance.delivered_m3, balance.gross_m3, "official", [diverted, delivered, returned],
                  district.spec.targets.canal_system)
    if fig.value is not None:
        fig = Figure(fig.name, fig.value, fig.method, fig.coverage, False, fig.target, fig.flags, _balance_words(balance))
    return fig, balance


def _diverted(pts: SystemPoints, volumes: Mapping[str, VolumeResult]) -> _Sum:
    diverted = _sum(pts.diversions, volumes)
    if pts.unmetered_heads:
        diverted.incomplete, diverted.coverage = True, 0.0
        diverted.missing += [f"{c}:no diversion point" for c in pts.unmetered_heads]
    return diverted


def _balance_words(balance: SystemBalance) -> str:
    words = [DEFINITION]
    if balance.diverted_m3 > 0:
        words.append(f"tail spill {balance.spilled_m3 / balance.diverted_m3:.1%} of diversion (a loss)")
        if balance.returned_m3:
            words.append(f"returned to the source {balance.returned_m3 / balance.diverted_m3:.1%} of diversion (deducted)")
    return "; ".join(words)


def _diagnostic(fig: Figure, official: Figure, why: str) -> Figure:
    """A diagnostic figure with its difference from the official one in words."""
    if fig.value is None or official.value is None:
        note = "; ".join(n for n in (fig.note, f"diagnostic: {why}") if n)
    else:
        diff = (fig.value - official.value) * 100
        note = "; ".join(n for n in (fig.note, f"diagnostic, {diff:+.1f} points against the official figure: {why}") if n)
    return Figure(fig.name, fig.value, fig.method, fig.coverage, fig.incomplete, fig.target, fig.flags, note)


def system_figures(district: District, volumes: Mapping[str, VolumeResult], flows: Mapping[str, _CanalFlow], levels: Mapping[str, Figure],
                   reaches: Sequence[ReachBalance] = ()) -> tuple[dict[str, Figure], list[str], SystemBalance]:
    target = district.spec.targets.canal_system
    warnings: list[str] = []
    official, balance = official_figure(district, volumes)
    storage = _known_sum(r.storage_m3 for r in reaches)
    official = _data_error_checked(_storage_checked(official, storage, balance.diverted_m3, district, "diversion"), balance, reaches)
    pts = system_points(district)
    outfalls = pts.returns + pts.spills
    diverted = _diverted(pts, volumes)
    delivered, returned = _sum(pts.deliveries, volumes), _sum(outfalls, volumes)
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
        note = f"invalid for this network: skip-level offtakes {names} bypass a level, so the product under-estimates"
        warnings.append(f"level product of efficiencies is not valid here: {note}")
    flags = (("skip_level",) if skip else ()) + (("eta_above_1",) if product_value is not None and product_value > 1 else ())
    product = Figure("canal_system", product_value, "level_product", min((f.coverage for f in levels.values()), default=0.0),
                     product_incomplete, target, flags, note)
    plain = _figure("canal_system", delivered.volume, diverted.volume, "delivered_over_diverted", [diverted, delivered], target)
    spill = f"tail spill {balance.spill_share:.1%} of diversion" if balance.spill_share is not None else "tail spill"
    returned_words = "outfall water declared return counts as loss here" if pts.returns else "equal to the official figure while no outfall is declared return"
    return {
        "official": official,
        "graph": _diagnostic(graph, official, f"leaves outfall water (traced up its path) out of the diversion, so {spill} is not counted as a loss"),
        "level_product": _diagnostic(product, official, "product of level efficiencies; outfall water leaves each level as an outflow, not a loss"),
        "delivered_over_diverted": _diagnostic(plain, official, f"every outfall counted as loss; {returned_words}"),
    }, warnings, balance


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


def field_and_whole(district: District, volumes: Mapping[str, VolumeResult], system: Figure, diverted_m3: float, window: tuple[int, int],
                    season_kind: str | None, plots: Sequence[PlotIrrigation] | None = None) -> tuple[Figure, dict[str, Figure], dict[str, Figure], list[PlotResult]]:
    """The field coefficient (from typical plots, else the configured fallback), per unit, and the whole district."""
    targets = district.spec.targets
    results = measure_plots(district, plots) if plots is not None else []
    if district.spec.plots and plots is None:
        field_fig, unit_figs = Figure("field", None, "typical_plots", 0.0, True, targets.field, note=(
            "incomplete: the district has typical plots but no plot readings were given")), {}
    elif district.spec.plots:
        field_fig, unit_figs = plots_field_figures(district, results)
    else:
        field_fig, unit_figs = _configured_field(district, volumes), {}
    whole_target = targets.canal_system * targets.field
    coeff_value = system.value * field_fig.value if system.value is not None and field_fig.value is not None else None
    coeff = Figure("whole", coeff_value, "field_coefficients", min(system.coverage, field_fig.coverage),
                   coeff_value is None, whole_target, note="" if coeff_value is not None else "incomplete: canal-system or field figure missing")
    head_tail = _head_tail(district, diverted_m3, window, season_kind, system, whole_target, results, {p.day for p in plots or ()})
    return field_fig, {"field_coefficients": coeff, "head_tail": head_tail}, unit_figs, results


def _configured_field(district: District, volumes: Mapping[str, VolumeResult]) -> Figure:
    """The labelled fallback: the units' configured ``field_efficiency``, weighted by delivered volume."""
    weighted = total = 0.0
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
    fig = _figure("field", weighted, total, "units_field_efficiency", parts, district.spec.targets.field)
    note = "fallback, not a measurement: the units' configured field_efficiency (no typical plots in the district file)"
    return Figure(fig.name, fig.value, fig.method, fig.coverage, fig.incomplete, fig.target, fig.flags, "; ".join(n for n in (fig.note, note) if n))


def measure_plots(district: District, plots: Sequence[PlotIrrigation]) -> list[PlotResult]:
    """Each typical plot's η_f from its irrigations' readings (:func:`canalflow.field.measure_plot`)."""
    by_plot: dict[str, list[PlotIrrigation]] = {p.id: [] for p in district.spec.plots}
    for irrigation in plots:
        by_plot.setdefault(irrigation.plot, []).append(irrigation)
    return [measure_plot(district.plots[p], district.crops[district.plots[p].crop].kc, sorted(irr, key=lambda i: i.day))
            for p, irr in by_plot.items() if p in district.plots]


def plots_field_figures(district: District, results: Sequence[PlotResult]) -> tuple[Figure, dict[str, Figure]]:
    """District and unit η_f from the plots, by crop area; incomplete while any plot lacks readings."""
    target = district.spec.targets.field
    missing = [r for r in results if r.eta is None]
    if missing:
        note = "incomplete: " + "; ".join(f"plot {r.plot}: {r.note.removeprefix('incomplete: ')}" for r in missing)
        return Figure("field", None, "typical_plots", 0.0, True, target, tuple(f"missing:{r.plot}" for r in missing), note), {}
    agg = aggregate(district, {r.plot: r.eta for r in results if r.eta is not None})
    shown = ", ".join(f"{r.plot} ({district.plots[r.plot].crop}) {r.eta:.3f}" for r in results)
    note = f"plots {shown}; crops measured {', '.join(agg.crops_measured)} ({agg.measured_share:.0%} of the irrigated area)"
    if agg.crops_fallback:
        note += f"; fallback configured field_efficiency for {', '.join(agg.crops_fallback)}"
    flags = ("fallback",) if agg.crops_fallback else ()
    fig = Figure("field", agg.value, "typical_plots", agg.measured_share, agg.value is None, target, flags, note)
    units = {u: Figure(f"field:{u}", eta, "typical_plots", agg.measured_share, False, target, flags) for u, eta in agg.unit_eta.items()}
    return fig, units


@dataclass(frozen=True)
class NetWater:
    """The net irrigation water of a window by the head-tail method: Σ_k w_k·A_k (m3)."""

    net_m3: float
    plot_share: float  # of the rounds holding the plots' irrigations, the part inside the window
    measured: tuple[str, ...]  # crops whose net depth the plots measured
    typed: tuple[str, ...]  # crops on their configured net_depth_mm (a fallback)
    missing: tuple[str, ...]  # crops with neither (counted as 0)


def head_tail_net(district: District, season: Season, t0_ms: int, t1_ms: int, depth_mm: Mapping[str, float],
                  days: Iterable[dt.date], *, whole_season: bool = False) -> NetWater:
    """Σ_k w_k·A_k over a window: w_k the crop's net depth stored by its plots' irrigations on ``days``
    (``depth_mm``) × the window's share of the rounds holding them (a plot is irrigated once a round),
    else the season's configured ``net_depth_mm`` × the window's share of the season's rounds. Over a
    whole season (``whole_season``: the caller's window is the season) both shares are 1. The
    simulator's truth goes through here too."""
    spans = [(int(r.start.timestamp() * 1000), int(r.start.timestamp() * 1000 + r.days * 86_400_000)) for r in season.rounds]
    noons = [int(dt.datetime.combine(d, dt.time(12), district.tz).timestamp() * 1000) for d in days]
    held = [(a, b) for a, b in spans if any(a <= t < b for t in noons)]
    total = sum(b - a for a, b in held)
    plot_share = sum(max(0, min(b, t1_ms) - max(a, t0_ms)) for a, b in held) / total if total > 0 and not whole_season else 1.0
    season_share = 1.0 if whole_season else float(quota_share(district, season, t0_ms, t1_ms))
    net = 0.0
    missing, typed = set(), set()
    for unit in district.spec.units:
        for crop_area in unit.crops:
            depth = depth_mm.get(crop_area.crop)
            if depth is not None:
                depth *= plot_share
            else:
                configured = district.crops[crop_area.crop].net_depth_mm.get(season.kind)
                (missing if configured is None else typed).add(crop_area.crop)
                depth = (configured or 0.0) * season_share
            net += depth / 1000.0 * float(crop_area.area_mu) * M2_PER_MU
    return NetWater(net, plot_share, tuple(sorted(depth_mm)), tuple(sorted(typed)), tuple(sorted(missing)))


def _head_tail(district: District, diverted_m3: float, window: tuple[int, int], season_kind: str | None, system: Figure, target: float,
               plots: Sequence[PlotResult] = (), days: Iterable[dt.date] = ()) -> Figure:
    """Σ_k w_k·A_k / W_gross (:func:`head_tail_net`): net depths from the plots, else configured (a labelled fallback)."""
    t0_ms, t1_ms = window
    season = district.season_for(district.local_date(t0_ms))
    if season_kind is not None and (season is None or season.kind != season_kind):  # a whole season of that kind, by the caller
        season = next((s for s in district.spec.seasons if s.kind == season_kind), None)
    if season is None:
        return Figure("whole", None, "head_tail", system.coverage, True, target, note="incomplete: no season of the district file holds the window's start")
    missing_plots = [r.plot for r in plots if r.eta is None]
    if district.spec.plots and not plots:
        return Figure("whole", None, "head_tail", system.coverage, True, target, note="incomplete: no readings of the typical plots")
    if missing_plots:
        return Figure("whole", None, "head_tail", system.coverage, True, target, note=f"incomplete: plots {', '.join(missing_plots)} lack readings")
    water = head_tail_net(district, season, t0_ms, t1_ms, crop_net_depths(district, plots), days, whole_season=season_kind is not None)
    incomplete = system.incomplete or diverted_m3 <= 0
    note = f"net depths against the gross diversion of the window ({season.id})"
    if water.measured:
        note += f"; net depths measured on plots for {', '.join(water.measured)}"
        if water.plot_share < 1:
            note += f" (the window holds {water.plot_share:.1%} of the rounds of their irrigations)"
    if water.typed:
        note += f"; configured net_depth_mm (fallback) for {', '.join(water.typed)}"
    if water.missing:
        note += f"; no {season.kind} net depth for {', '.join(water.missing)} (counted as 0)"
    value = None if incomplete else water.net_m3 / diverted_m3
    return Figure("whole", value, "head_tail", system.coverage, incomplete, target,
                  ("eta_above_1",) if value is not None and value > 1 else (), note)


def crop_net_depths(district: District, plots: Sequence[PlotResult]) -> dict[str, float]:
    """Each measured crop's net depth stored (mm): its plots' stored water, weighted by plot area."""
    by_crop: dict[str, list[tuple[float, float]]] = {}
    for r in plots:
        plot = district.plots[r.plot]
        by_crop.setdefault(plot.crop, []).append((float(plot.area_mu), r.stored_mm))
    return {c: sum(a * d for a, d in v) / sum(a for a, _ in v) for c, v in by_crop.items()}


# ---------------------------------------------------------------------------------------------
# The report


def efficiency_report(
    district: District, volumes: Mapping[str, VolumeResult], t0_ms: int, t1_ms: int, *, season_kind: str | None = None,
    water_levels: Levels | None = None, plots: Sequence[PlotIrrigation] | None = None,
) -> EfficiencyReport:
    """Every balance and efficiency figure of a window from the points' window volumes and, for
    the canals' storage change, the levels at the window's edges (``water_levels``, :func:`edge_levels`);
    ``plots``: the typical plots' irrigations (those on the window's local days count)."""
    seconds = (t1_ms - t0_ms) / 1000.0
    reaches = reach_balances(district, volumes, seconds, water_levels)
    flows = _canal_flows(district, volumes)
    canals = {
        c: _storage_checked(_figure(f"canal:{c}", f.outflow.volume, f.inflow.volume, "volume_ratio", [f.inflow, f.outflow]),
                            _known_sum(r.storage_m3 for r in reaches if r.canal == c), f.inflow.volume, district, "canal's inflow")
        for c, f in flows.items()
    }
    levels = level_figures(district, flows)
    storage = _known_sum(r.storage_m3 for r in reaches)
    system, warnings, balance = system_figures(district, volumes, flows, levels, reaches)
    first, last = district.local_date(t0_ms), district.local_date(t1_ms - 1)
    in_window = None if plots is None else [p for p in plots if first <= p.day <= last]
    field_fig, whole, field_units, plot_results = field_and_whole(district, volumes, system["official"], balance.gross_m3, (t0_ms, t1_ms), season_kind, in_window)
    warnings += [f"reach {r.canal}/{r.reach}: loss {r.loss_m3:.0f} m3 is {r.loss_m3 / r.expected_loss_m3:.1f}x the expected seepage {r.expected_loss_m3:.0f} m3" for r in reaches if r.anomaly]
    warnings += [f"reach {r.canal}/{r.reach}: {r.out_m3:.0f} m3 out for {r.in_m3:.0f} m3 in is a data error (check the meters {', '.join(r.inflow_points + r.outflow_points)})"
                 for r in reaches if "eta_above_1" in r.flags]
    canal_volumes = {c: (f.inflow.volume, f.outflow.volume) for c, f in flows.items()}
    if "storage_dominated" in system["official"].flags:
        warnings.append(f"canal system: {system['official'].note}")
    return EfficiencyReport(district.id, t0_ms, t1_ms, tuple(reaches), canals, levels, system, field_fig, whole, tuple(warnings), canal_volumes, balance, storage,
                            field_units, tuple(plot_results))


def _data_error_checked(fig: Figure, balance: SystemBalance, reaches: Sequence[ReachBalance]) -> Figure:
    """The headline is never above 1: more delivered than diverted is a meter error, not a gain."""
    if fig.value is None or fig.value <= 1:
        return fig
    suspects = sorted({p for r in reaches if "eta_above_1" in r.flags for p in r.inflow_points + r.outflow_points})
    where = f"; check the meters of the reaches with more out than in: {', '.join(suspects)}" if suspects else ""
    note = f"data error: {balance.delivered_m3:,.0f} m3 delivered against a gross diversion of {balance.gross_m3:,.0f} m3{where}"
    return Figure(fig.name, None, fig.method, fig.coverage, True, fig.target, fig.flags, note)


def _known_sum(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _storage_checked(fig: Figure, storage: float | None, inflow: float, district: District, what: str) -> Figure:
    """No number for a figure whose window is dominated by the canals' storage change."""
    share = district.spec.tolerances.max_storage_share
    if not _storage_dominated(storage, inflow, share):
        return fig
    assert storage is not None
    return Figure(fig.name, None, fig.method, fig.coverage, True, fig.target, (*fig.flags, "storage_dominated"), _storage_words(storage, inflow, share, what))


def kpi_lines(report: EfficiencyReport, ts_ms: int | None = None) -> list[str]:
    """Line protocol for Grafana, measurement ``efficiency`` (tags as dashboards/kpis.py reads them).

    scope ``system`` is the official canal-system figure (:mod:`canalflow.coefficients`);
    ``system_graph``, ``system_level_product`` and ``system_delivered_over_diverted`` the diagnostics; ``canal`` (tag canal), ``level`` (tag
    level), ``field``, ``field_unit`` (tag unit) and ``whole`` (tag method). Incomplete figures carry no ``eta`` field.
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
        add({"scope": "system" if method == "official" else f"system_{method}"}, fig)
    add({"scope": "field"}, report.field)
    for unit, fig in report.field_units.items():
        add({"scope": SCOPE_FIELD_UNIT, "unit": unit}, fig)
    for method, fig in report.whole.items():
        add({"scope": "whole", "method": method}, fig)
    return lines


def efficiency_from_influx(
    district: District, influx: InfluxV1, t0_ms: int, t1_ms: int, *, season_kind: str | None = None, write_kpis: bool = False,
    travel_time: bool = False, source: str = "readings", edits: Sequence[Edit] = (),
) -> EfficiencyReport:
    """Read every metering point's volumes for the window and build the report (optionally write KPIs).

    ``source``: ``readings`` (raw, re-rated; ``travel_time`` shifts each point's window by the
    travel time from the headworks) or ``rollups`` (the daily ``volume`` rollups, whole days);
    the same volumes as billing's (:mod:`billing.volumes`), with the ledger's manual ``edits``
    applied as a billing run applies them. The totaliser events VEE finds (a reset, a rollover, a
    drop) are warnings of the report, as they are findings of the run; no balance estimate stands
    in for a missing volume here: a figure without its volumes is incomplete.
    """
    lag = {p: travel_ms(district, p) for p in district.points} if travel_time else None
    measured = volume_source(source, district, influx).measure(list(district.points), t0_ms, t1_ms, edits=edits, by_month=False, lag_ms=lag)
    volumes = measured.results()
    events = [f for f in validate_measured(district, measured, list(measured.volumes), t0_ms, t1_ms) if f.rule.startswith("totaliser_")]
    # shifted windows compare the same water, which accounts for the water in transit: no ΔS on top
    water_levels = None if travel_time else edge_levels(district, measured.series, t0_ms, t1_ms)
    plots = plot_irrigations(district, influx, t0_ms, t1_ms) if district.spec.plots else None
    report = efficiency_report(district, volumes, t0_ms, t1_ms, season_kind=season_kind, water_levels=water_levels, plots=plots)
    report = replace(report, warnings=(*report.warnings, *findings_text(events)))
    if write_kpis:
        influx.write_lines(kpi_lines(report), rp=policy_of(M.efficiency))
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
