"""The hydraulic law of the canals: seepage by soil law and travel time. The one place it is written.

**Seepage.** A canal on soil (A, m) with lining factor lf (``soils`` and ``canals[].soil`` /
``lining_factor`` in the district file) loses σ = A / (100·Q^m) of its flow per km, Q in m³/s
(Kostiakov form; lf < 1 for a lined canal). Per km of canal that is dQ/dx = −k·Q^(1−m) with
k = A·lf/100, which integrates exactly over a stretch of length L without offtakes:

    Q_up^m = Q_down^m + m·k·L          (m = 0: Q_up = Q_down·e^(k·L))

Between offtakes the flow is integrated stretch by stretch, going upstream from the last offtake
(beyond it the canal is dry) and adding each offtake's flow where it takes off. So the flow a reach
needs at its head for its outflows is exact for steady flows, and the expected seepage of a reach is
that inflow less the outflows. The simulator (``firmware_sim.hydraulics``), billing's reach balances
and VEE estimates (``billing.efficiency``, ``billing.vee``) and ingest's daily reach balances
(``ingest.rollup``) all use these functions.

**Travel time.** Water travels a canal at its ``velocity_ms``: L / v over L km; from the headworks
to a point, the sum along the canals it passes.

Units: km for chainage and length, m³/s for flow, m³ for volume, seconds or milliseconds as named.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from canalflow.district import District, Point

BISECTION_STEPS = 100  # halvings of the outflow interval: far below a millilitre for any canal


@dataclass(frozen=True)
class SoilLaw:
    """The seepage law of one canal: dQ/dx = −k·Q^(1−m) per km, k = A·lining/100 (Q in m³/s)."""

    k: float
    m: float

    @classmethod
    def of(cls, A: float, m: float, lining_factor: float = 1.0) -> SoilLaw:
        """The law of a soil (A, m) under a lining factor (1 for an unlined canal)."""
        return cls(A * lining_factor / 100.0, m)


def canal_law(district: District, canal_id: str) -> SoilLaw:
    """The seepage law of a canal from its soil and lining in the district file."""
    canal = district.canals[canal_id]
    soil = district.spec.soils[canal.soil]
    return SoilLaw.of(soil.A, soil.m, canal.lining_factor)


def sigma_per_km(law: SoilLaw, q_m3s: float) -> float:
    """σ: the fraction of a flow ``q_m3s`` (m³/s) lost per km, k / Q^m (0 for no flow)."""
    return law.k / q_m3s**law.m if q_m3s > 0 else 0.0


def upstream_flow(law: SoilLaw, q_down_m3s: float, length_km: float) -> float:
    """Flow (m³/s) needed at the upstream end of ``length_km`` without offtakes so that ``q_down_m3s`` arrives."""
    if q_down_m3s <= 0:
        return 0.0
    if length_km <= 0:
        return q_down_m3s
    if law.m == 0:  # dQ/dx = −k·Q: exponential decay
        return q_down_m3s * math.exp(law.k * length_km)
    return (q_down_m3s**law.m + law.m * law.k * length_km) ** (1.0 / law.m)


def required_inflow_m3s(law: SoilLaw, from_km: float, to_km: float, outflows_m3s: Sequence[tuple[float, float]]) -> float:
    """Flow (m³/s) a reach [from_km, to_km] needs at its head for its outflows ``(km, m³/s)``.

    Integrated upstream from the reach's end between offtakes; an offtake outside the reach is
    taken at the nearer end of it; negative outflows count as none.
    """
    q = 0.0
    position = to_km
    for km, flow in sorted(outflows_m3s, key=lambda o: -o[0]):
        at = min(max(km, from_km), to_km)
        q = upstream_flow(law, q, position - at) + max(flow, 0.0)
        position = at
    return upstream_flow(law, q, position - from_km)


def expected_seepage_m3(law: SoilLaw, from_km: float, to_km: float, outflows: Sequence[tuple[float, float]], seconds: float) -> float:
    """Expected seepage (m³) of a reach over ``seconds`` from its metered outflows ``(km, m³)``.

    The inflow the law needs for the outflows' mean flows, less the outflows.
    """
    if seconds <= 0:
        return 0.0
    inflow = required_inflow_m3s(law, from_km, to_km, [(km, v / seconds) for km, v in outflows])
    return max(0.0, inflow * seconds - sum(max(v, 0.0) for _, v in outflows))


def outflow_for_inflow_m3(
    law: SoilLaw, from_km: float, to_km: float, inflow_m3: float, others: Sequence[tuple[float, float]], at_km: float, seconds: float
) -> float:
    """The outflow (m³) at ``at_km`` that the law allows, given the reach's inflow and its other outflows ``(km, m³)``.

    Solves required inflow(others + x at at_km) = inflow for x ≥ 0 by bisection (the required inflow
    grows with x, and x = inflow is always too much); 0 when the others already need more than came in.
    """
    if seconds <= 0 or inflow_m3 <= 0:
        return 0.0

    def needed(x: float) -> float:
        return required_inflow_m3s(law, from_km, to_km, [(km, v / seconds) for km, v in [*others, (at_km, x)]]) * seconds

    low, high = 0.0, inflow_m3
    if needed(low) >= inflow_m3:
        return 0.0
    for _ in range(BISECTION_STEPS):
        mid = (low + high) / 2
        low, high = (mid, high) if needed(mid) < inflow_m3 else (low, mid)
        if high - low <= 1e-12 * inflow_m3:
            break
    return (low + high) / 2


def point_km_on(district: District, point: Point) -> float:
    """Where a point takes water from the canal it sits on: a diversion at its fed canal's offtake."""
    fed = district.fed_canal(point)
    return district.canals[fed].offtake_km if fed and fed != point.canal else point.km


def reach_expected_seepage_m3(district: District, canal_id: str, reach_id: str, volumes_m3: Mapping[str, float], seconds: float) -> float:
    """Expected seepage (m³) of a reach over ``seconds`` from its outflow points' volumes (point id → m³).

    Outflow points are ``District.reach_balance_points``; one missing from ``volumes_m3`` counts as none.
    """
    reach = next(r for r in district.canals[canal_id].reach_list if r.id == reach_id)
    outs = district.reach_balance_points(canal_id, reach_id)[1]
    outflows = [(point_km_on(district, p), volumes_m3[p.id]) for p in outs if p.id in volumes_m3]
    return expected_seepage_m3(canal_law(district, canal_id), reach.from_km, reach.to_km, outflows, seconds)


@dataclass(frozen=True)
class ReachVerdict:
    """What a reach's measured balance says against the law: a meter error, or a loss beyond expectation."""

    data_error: bool  # more out than in, or out with nothing in: a meter is wrong, not a gain
    anomaly: bool  # loss above loss_anomaly_factor × the expected seepage: leak, breach or unmetered take


def judge_reach(in_m3: float, out_m3: float, expected_m3: float, *, incomplete: bool, anomaly_factor: float) -> ReachVerdict:
    """The one rule for a reach balance, shared by billing's efficiency report and ingest's daily balances.

    An incomplete balance (a meter missing or short of coverage) is judged neither way: its loss
    says nothing about the canal."""
    if incomplete:
        return ReachVerdict(False, False)
    loss = in_m3 - out_m3
    data_error = (in_m3 > 0 and out_m3 > in_m3) or (in_m3 <= 0 < out_m3)
    return ReachVerdict(data_error, expected_m3 > 0 and loss > anomaly_factor * expected_m3)


def travel_s(length_km: float, velocity_ms: float) -> float:
    """Travel time (s) of water over ``length_km`` at ``velocity_ms`` (m/s): L / v."""
    return length_km * 1000.0 / velocity_ms


def headworks_travel_ms(district: District, point_id: str) -> int:
    """Travel time (ms) of water from the headworks to a point: Σ L / v along the canals it passes.

    A point sits on ``canal`` at ``km`` (a diversion on its source canal at the offtake), so the
    walk goes up from there through each canal's offtake on its source.
    """
    point = district.points[point_id]
    canal_id, km = point.canal, point.km
    seconds = 0.0
    while canal_id in district.canals:
        canal = district.canals[canal_id]
        seconds += travel_s(km, canal.velocity_ms)
        canal_id, km = canal.source, canal.offtake_km
    return round(seconds * 1000)
