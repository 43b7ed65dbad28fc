"""VEE — validation, estimation and editing of meter data, as utilities do before billing.

Validation (:func:`validate_series`) reports findings per point, never changing a reading:

- ``range``: negative flow (reverse flow) or flow above the capacity of the canal the point
  measures (its own or, for a diversion, the canal it feeds);
- ``rate_of_change``: flow jumping by more than ``MAX_STEP_FRACTION`` of that capacity between
  consecutive readings;
- ``stuck``: the same non-zero value ``STUCK_READINGS`` times in a row (a frozen register);
- ``gap``: stretches the window volume could not bridge (longer than ``max_gap_minutes``);
- ``totaliser_reset`` / ``totaliser_rollover`` / ``totaliser_decrease`` from the volume method;
- ``eta_above_1`` on a reach (from the efficiency report: more out than in is a meter error).

Estimation: short gaps are interpolated by :mod:`canalflow.volume`; a point whose window is
still incomplete is estimated from the balance of its neighbours on the graph
(:func:`estimate_from_balance`: the other meters of its reach, less the reach's expected
seepage); where a neighbour is incomplete too, nothing is estimated and the bill line stays
blocked.

Editing: a manual edit (:class:`billing.edits.Edit`, kept in the ledger with user, reason and
time) replaces a point's volume over a stretch of time; the raw readings are never touched, and
the run records which edits it applied.

The VEE stage (:func:`vee_volumes`) takes the charging points' volumes from a
:class:`billing.volumes.VolumeSource` and hands the billing stage the volumes after VEE and a
:class:`VeeOutcome`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from billing.edits import Edit
from billing.notes import Note, note
from billing.volumes import Measured, PointVolume, VolumeSource, charging_points
from canalflow.district import District, PointRole
from canalflow.seepage import canal_law, expected_seepage_m3, outflow_for_inflow_m3, point_km_on
from canalflow.volume import Series, VolumeResult

MAX_STEP_FRACTION = 0.5  # of the canal capacity, between consecutive readings
STUCK_READINGS = 12


@dataclass(frozen=True)
class Finding:
    point: str
    rule: str
    start_ms: int
    end_ms: int
    detail: str

    def to_dict(self) -> dict[str, object]:
        return {"point": self.point, "rule": self.rule, "start_ms": self.start_ms, "end_ms": self.end_ms, "detail": self.detail}


@dataclass(frozen=True)
class VeeOutcome:
    """What VEE did in a run: findings, balance estimates and manual edits applied."""

    findings: tuple[Finding, ...] = ()
    estimates: tuple[Note, ...] = ()
    edits: tuple[Edit, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {
            "findings": [f.to_dict() for f in self.findings],
            "estimates": list(self.estimates),
            "edits": [{"id": e.id, "point": e.point, "start_ms": e.start_ms, "end_ms": e.end_ms, "volume_m3": e.volume_m3, "user": e.user, "reason": e.reason} for e in self.edits],
        }


def validate_series(district: District, point_id: str, series: Series, t0_ms: int, t1_ms: int, result: VolumeResult | None = None) -> list[Finding]:
    """Findings for one point's readings in [t0, t1] (bad-quality readings are left out)."""
    inside = (series.ts_ms >= t0_ms) & (series.ts_ms <= t1_ms) & (series.qcode != 3)
    ts = series.ts_ms[inside]
    findings: list[Finding] = []
    flow = series.values.get("flow")
    if flow is not None:
        q = flow[inside]
        cap = district.capacity_m3s(point_id)
        findings += _runs(point_id, "range", ts, np.isfinite(q) & (q < 0), "reverse flow (negative)")
        findings += _runs(point_id, "range", ts, np.isfinite(q) & (q > cap), f"flow above the canal capacity {cap} m3/s")
        if len(q) > 1:
            jump = np.abs(np.diff(q)) > MAX_STEP_FRACTION * cap
            findings += _runs(point_id, "rate_of_change", ts[1:], jump, f"flow changed by more than {MAX_STEP_FRACTION:.0%} of capacity between readings")
        findings += _stuck(point_id, ts, q)
    if result is not None:
        findings += [Finding(point_id, "gap", a, b, f"{(b - a) / 60_000:.0f} min without bridgeable readings") for a, b in result.gaps]
        findings += [Finding(point_id, flag, t0_ms, t1_ms, "see the totaliser readings") for flag in result.flags]
    return findings


def _run_bounds(mask: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) index of each run of True in ``mask``."""
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    return [(int(a), int(b) - 1) for a, b in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True)]


def _runs(point_id: str, rule: str, ts: np.ndarray, mask: np.ndarray, detail: str) -> list[Finding]:
    """One finding per run of consecutive flagged readings."""
    return [Finding(point_id, rule, int(ts[a]), int(ts[b]), f"{detail} ({b - a + 1} reading(s))") for a, b in _run_bounds(mask)]


def _stuck(point_id: str, ts: np.ndarray, values: np.ndarray) -> list[Finding]:
    if len(values) < STUCK_READINGS:
        return []
    # same[i]: reading i repeats reading i-1; a run of k repeats is k+1 equal readings
    same = np.concatenate(([False], (values[1:] == values[:-1]) & (values[1:] != 0) & np.isfinite(values[1:])))
    return [
        Finding(point_id, "stuck", int(ts[a - 1]), int(ts[b]), f"the same non-zero value {b - a + 2} times in a row (frozen register?)")
        for a, b in _run_bounds(same) if b - a + 2 >= STUCK_READINGS
    ]


def reach_of(district: District, point_id: str) -> tuple[str, str, str] | None:
    """(canal, reach, side) of the balance a point belongs to, as an outflow ("out") or inflow ("in")."""
    for ref in district.reaches:
        ins, outs = district.reach_balance_points(ref.canal, ref.reach.id)
        if any(p.id == point_id for p in outs) and district.points[point_id].role is not PointRole.section:
            return ref.canal, ref.reach.id, "out"
    for ref in district.reaches:
        ins, _ = district.reach_balance_points(ref.canal, ref.reach.id)
        if any(p.id == point_id for p in ins):
            return ref.canal, ref.reach.id, "in"
    return None


def neighbours(district: District, point_id: str) -> list[str]:
    """The other points of the balance a point belongs to (what its estimate needs)."""
    where = reach_of(district, point_id)
    if where is None:
        return []
    ins, outs = district.reach_balance_points(where[0], where[1])
    return [p.id for p in (*ins, *outs) if p.id != point_id]


def estimate_from_balance(
    district: District, point_id: str, volumes: Mapping[str, VolumeResult], t0_ms: int, t1_ms: int
) -> tuple[VolumeResult, dict[str, str]] | None:
    """The point's window volume from its reach balance and the balance it came from (the estimate note's
    parameters), or None when a neighbour is incomplete.

    By the soil law integrated between offtakes (:mod:`canalflow.seepage`): for an outflow, the
    volume at its km that the reach's inflow can deliver besides the other outflows; for an inflow,
    what the outflows need at the reach's head less the other inflows.
    """
    where = reach_of(district, point_id)
    if where is None:
        return None
    canal, reach_id, side = where
    ins, outs = district.reach_balance_points(canal, reach_id)
    others = [p.id for p in (*ins, *outs) if p.id != point_id]
    results = [volumes.get(p) for p in others]
    if not ins or any(r is None or r.incomplete for r in results):
        return None
    vin = sum(volumes[p.id].volume_m3 for p in ins if p.id != point_id)
    outflows = [(point_km_on(district, p), volumes[p.id].volume_m3) for p in outs if p.id != point_id]
    reach = next(r for r in district.canals[canal].reach_list if r.id == reach_id)
    law, seconds = canal_law(district, canal), (t1_ms - t0_ms) / 1000
    if side == "out":
        at_km = point_km_on(district, district.points[point_id])
        volume = outflow_for_inflow_m3(law, reach.from_km, reach.to_km, vin, outflows, at_km, seconds)
    else:
        vout = sum(v for _, v in outflows)
        volume = vout + expected_seepage_m3(law, reach.from_km, reach.to_km, outflows, seconds) - vin
    coverage = min(r.coverage for r in results if r is not None)
    balance = {"point": point_id, "canal": canal, "reach": reach_id, "others": ", ".join(others)}
    return VolumeResult(max(0.0, volume), coverage, 1.0, "balance_estimate", [], False, 0, ("estimated_from_balance",)), balance


def findings_text(findings: Iterable[Finding]) -> list[str]:
    return [f"{f.point}: {f.rule} {f.start_ms}..{f.end_ms}: {f.detail}" for f in findings]


# ---------------------------------------------------------------------------------------------
# The VEE stage


def vee_volumes(
    district: District, source: VolumeSource, t0_ms: int, t1_ms: int, *, edits: Sequence[Edit] = ()
) -> tuple[dict[str, PointVolume], VeeOutcome]:
    """Charging-point volumes after VEE: edits applied, incomplete points estimated from the balance."""
    points = charging_points(district)
    measured = source.measure(points, t0_ms, t1_ms, edits=edits)
    findings = validate_measured(district, measured, points, t0_ms, t1_ms)
    volumes, estimates = estimate_incomplete(district, measured.volumes, source, t0_ms, t1_ms, edits=edits)
    applied = tuple(e for e in edits if e.point in volumes and e.end_ms > t0_ms and e.start_ms < t1_ms)
    return volumes, VeeOutcome(tuple(findings), tuple(estimates), applied)


def validate_measured(district: District, measured: Measured, point_ids: Sequence[str], t0_ms: int, t1_ms: int) -> list[Finding]:
    """Findings of the points' readings, or of their coverage where the volumes came without readings (rollups)."""
    findings: list[Finding] = []
    for p in point_ids:
        result = measured.volumes[p].result
        if p in measured.series:
            findings += validate_series(district, p, measured.series[p], t0_ms, t1_ms, result)
        elif result.incomplete:
            findings.append(Finding(p, "gap", t0_ms, t1_ms, f"rollups cover {result.coverage:.0%} of the window"))
    return findings


def estimate_incomplete(
    district: District, volumes: dict[str, PointVolume], source: VolumeSource, t0_ms: int, t1_ms: int, *, edits: Sequence[Edit] = ()
) -> tuple[dict[str, PointVolume], list[Note]]:
    """Replace incomplete point volumes by balance estimates where the neighbours are complete.

    Neighbours that are not charging points are measured from the same ``source``."""
    incomplete = [p for p, v in volumes.items() if v.result.incomplete]
    if not incomplete:
        return volumes, []
    wanted = sorted({n for p in incomplete for n in neighbours(district, p)} - set(volumes))
    known = {p: v.result for p, v in volumes.items()}
    if wanted:
        known |= source.measure(wanted, t0_ms, t1_ms, edits=edits, by_month=False).results()
    out = dict(volumes)
    notes = []
    for p in incomplete:
        estimate = estimate_from_balance(district, p, known, t0_ms, t1_ms)
        if estimate is None:
            continue
        result, balance = estimate
        measured = volumes[p]
        monthly = tuple((m, v / measured.result.volume_m3 * result.volume_m3) for m, v in measured.monthly) if measured.result.volume_m3 > 0 else ()
        out[p] = PointVolume(p, result, monthly, measured.ratings)
        notes.append(note("vee.balance_estimate", **balance, volume=f"{result.volume_m3:.0f}", measured=f"{measured.result.volume_m3:.0f}",
                          coverage=f"{measured.result.coverage:.0%}"))
    return out, notes
