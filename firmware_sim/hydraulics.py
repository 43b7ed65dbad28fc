"""The hydraulic model: demand-driven flows on the canal graph, as exact step functions of time.

Model (documented for operators in docs/fleet.md):

* **Demand.** During each irrigation round (``seasons[].rounds``, recurring yearly for
  ``repeat_years``) every billing unit takes its season quota (``District.quota_m3``) times
  ``round.days / Σ days of the season's rounds`` at a constant rate, split evenly over its
  charging points. Outside rounds intakes take nothing.
* **Canals** are walked from the tail up. Between offtakes, seepage follows the district's soil law
  (``canalflow.seepage``: σ = A/(100·Q^m) per km × lining_factor, integrated exactly between
  offtakes). Water needed at a point at time t passes a point upstream at t − L/v
  (``canalflow.seepage.travel_s``, v = the canal's velocity_ms, rounded here to whole minutes so
  breakpoints line up), so head gates open before a round and close before its end. Beyond the
  last offtake a canal is dry.
* **Outfalls** spill ``tail_spill_fraction`` of their canal's offtakes; a main canal with an outfall
  also carries ``base_flow_m3s`` all year (outside rounds the district is dry but for that).
* **Losses** of a reach are its seepage plus unmetered events on it (withdrawals, breaches, spill
  from a head gate left open). A segment's loss at time t is Q_up(t) − Q_down(t + τ), so over a
  window whose edges are steady the balance diversion = Σ offtakes + losses + outfall is exact.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from canalflow.district import Canal, CanalLevel, District, Point, PointRole
from canalflow.seepage import canal_law, travel_s, upstream_flow
from firmware_sim.scenario import Breach, DrySpell, GateOpen, Scenario, Withdrawal
from firmware_sim.stepfn import StepFn, total

DAY_MS = 86_400_000
TRAVEL_QUANTUM_MS = 60_000


def to_ms(moment: dt.datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError(f"time {moment.isoformat()} has no timezone")
    return round(moment.timestamp() * 1000)


@dataclass
class Network:
    """The solved network: true flow at every point, loss rate of every reach (canal, reach id)."""

    point_flow: dict[str, StepFn]
    reach_loss: dict[tuple[str, str], StepFn]
    reach_hidden: dict[tuple[str, str], StepFn]
    canal_head: dict[str, StepFn]
    round_windows: list[tuple[str, int, int]] = field(default_factory=list)  # (round id, start ms, end ms)
    epoch_ms: int = 0


def round_windows(district: District, repeat_years: int) -> list[tuple[str, str, int, int, float]]:
    """Every round instance: (season id, round id@year, start ms, end ms, share of season quota)."""
    rounds = [(s, r) for s in district.spec.seasons for r in s.rounds]
    if not rounds:
        return []
    first_year = min(r.start.year for _, r in rounds)
    out = []
    for season, rnd in rounds:
        season_days = sum(r.days for r in season.rounds)
        for k in range(repeat_years):
            start = _shift_years(rnd.start, k, district)
            start_ms = to_ms(start)
            label = rnd.id if k == 0 else f"{rnd.id}@{first_year + k}"
            out.append((season.id, label, start_ms, start_ms + int(rnd.days * DAY_MS), rnd.days / season_days))
    return sorted(out, key=lambda w: w[2])


def _shift_years(moment: dt.datetime, years: int, district: District) -> dt.datetime:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(district.spec.district.timezone))
    try:
        return moment.replace(year=moment.year + years)
    except ValueError:  # 29 February
        return moment.replace(year=moment.year + years, day=28)


def epoch_ms(district: District) -> int:
    """Where totalisers start counting: 1 January (UTC) of the first round's year."""
    years = [r.start.year for s in district.spec.seasons for r in s.rounds]
    year = min(years) if years else 2026
    return to_ms(dt.datetime(year, 1, 1, tzinfo=dt.UTC))


def unit_demands(district: District, scenario: Scenario) -> dict[str, StepFn]:
    """Flow each intake point takes for its billing units (before scenario gate events)."""
    hyd = scenario.hydraulics
    windows: dict[str, list[tuple[int, int, float]]] = defaultdict(list)
    seasons = district.seasons
    quotas: dict[tuple[str, str], float] = {}
    for season_id, _label, start, end, share in round_windows(district, hyd.repeat_years):
        kind = seasons[season_id].kind
        seconds = (end - start) / 1000
        for unit in district.spec.units:
            if (unit.id, kind) not in quotas:
                quotas[(unit.id, kind)] = float(district.quota_m3(unit.id, kind))
            # an entity below a unit (its quota is inside its parent's) runs its sub-meter at its quota less the loss above it
            kept = (1 - hyd.sub_meter_loss_fraction) ** _depth(district, unit.id)
            volume = quotas[(unit.id, kind)] * share * hyd.demand_factor * kept
            points = unit.charging_points
            for point_id in points:
                windows[point_id].append((start, end, volume / seconds / len(points)))
    factor = _dry_spell_factor(scenario)
    return {
        p.id: StepFn.pulses(windows.get(p.id, [])).combine(factor, lambda q, f: q * f)
        for p in district.spec.points
        if p.role is PointRole.intake
    }


def _depth(district: District, unit_id: str) -> int:
    """How many entities a unit sits below (0 for a unit charged at the canal)."""
    depth, unit = 0, district.units[unit_id]
    while unit.parent is not None:
        depth, unit = depth + 1, district.units[unit.parent]
    return depth


def _dry_spell_factor(scenario: Scenario) -> StepFn:
    spells = [e for e in scenario.spec.events if isinstance(e, DrySpell)]
    return StepFn.pulses([(to_ms(e.start), to_ms(e.end), e.demand_factor - 1.0) for e in spells], base=1.0)


def nightly_windows(event: GateOpen, zone: ZoneInfo) -> list[tuple[int, int, float]]:
    """The nights (local time) inside the event's window, clipped to it."""
    out = []
    start, end = to_ms(event.start), to_ms(event.end)
    day = event.start.astimezone(zone).date() - dt.timedelta(days=1)
    while True:
        night_start = dt.datetime.combine(day, event.nightly.start, zone)
        night_end_day = day + dt.timedelta(days=1) if event.nightly.end <= event.nightly.start else day
        night_end = dt.datetime.combine(night_end_day, event.nightly.end, zone)
        a, b = max(to_ms(night_start), start), min(to_ms(night_end), end)
        if to_ms(night_start) >= end:
            break
        if b > a:
            out.append((a, b, event.flow_m3s))
        day += dt.timedelta(days=1)
    return out


class _Solver:
    def __init__(self, district: District, scenario: Scenario) -> None:
        self.d = district
        self.s = scenario
        self.hyd = scenario.hydraulics
        self.zone = ZoneInfo(district.spec.district.timezone)
        self.point_flow: dict[str, StepFn] = {}
        self.reach_loss: dict[tuple[str, str], list[StepFn]] = defaultdict(list)
        self.reach_hidden: dict[tuple[str, str], list[StepFn]] = defaultdict(list)
        self.canal_head: dict[str, StepFn] = {}
        self.flow_below: dict[tuple[str, float], StepFn] = {}
        self.outfall_flow: dict[str, StepFn] = {}
        self.intake = unit_demands(district, scenario)
        self.hidden_at = self._hidden_offtakes()

    def _hidden_offtakes(self) -> dict[str, list[tuple[float, StepFn]]]:
        """Unmetered offtakes per canal: (km, flow) from withdrawals, breaches and open head gates."""
        out: dict[str, list[tuple[float, StepFn]]] = defaultdict(list)
        for event in self.s.spec.events:
            if isinstance(event, Withdrawal | Breach):
                out[event.canal].append((event.km, StepFn.pulses([(to_ms(event.start), to_ms(event.end), event.flow_m3s)])))
            elif isinstance(event, GateOpen):
                flow = StepFn.pulses(nightly_windows(event, self.zone))
                point = self.d.points[event.point]
                if point.role is PointRole.intake:
                    self.intake[point.id] = self.intake[point.id] + flow
                else:  # a head gate: the water runs to the fed canal's tail and spills there, unmetered
                    fed = self.d.canals[self.d.fed_canal(point) or point.canal]
                    out[fed.id].append((fed.length_km, flow))
        return out

    def solve(self) -> Network:
        for canal in self.d.spec.canals:
            if canal.source in self.d.headworks:
                self._canal(canal)
        for point in self.d.spec.points:
            self.point_flow[point.id] = self._point(point)
        return Network(
            self.point_flow,
            {key: total(parts) for key, parts in self.reach_loss.items()},
            {key: total(parts) for key, parts in self.reach_hidden.items()},
            self.canal_head,
        )

    def _point(self, point: Point) -> StepFn:
        if point.role is PointRole.diversion:
            return self.canal_head[self.d.fed_canal(point) or point.canal]
        if point.role is PointRole.intake:
            return self.intake[point.id]
        if point.role is PointRole.outfall:
            return self.outfall_flow[point.id]
        if point.role in (PointRole.soil_moisture, PointRole.rain_gauge):
            return StepFn.constant(0.0)  # no water passes a plot's sensors
        return self.flow_below[(point.canal, point.km)]

    def _canal(self, canal: Canal) -> StepFn:
        offtakes: dict[float, list[StepFn]] = defaultdict(list)
        served: list[StepFn] = []
        for child in self.d.children.get(canal.id, []):
            head = self._canal(child)
            offtakes[child.offtake_km].append(head)
            served.append(head)
        for point in self.d.spec.points:
            if point.canal == canal.id and point.role is PointRole.intake and point.below is None:  # sub-meters: inside an intake's water
                offtakes[point.km].append(self.intake[point.id])
                served.append(self.intake[point.id])
        self._outfalls(canal, offtakes, total(served))
        for km, flow in self.hidden_at.get(canal.id, []):
            offtakes[km].append(flow)
            key = (canal.id, self.d.reach_at(canal.id, km).id)
            self.reach_hidden[key].append(flow)
            self.reach_loss[key].append(flow)
        stops = {0.0, *offtakes, *(r.from_km for r in canal.reach_list)}
        stops |= {p.km for p in self.d.spec.points if p.canal == canal.id and p.role is PointRole.section}
        head = self._walk(canal, sorted((k for k in stops if k <= canal.length_km), reverse=True), offtakes)
        self.canal_head[canal.id] = head
        return head

    def _outfalls(self, canal: Canal, offtakes: dict[float, list[StepFn]], served: StepFn) -> None:
        """Outfall points spill a fraction of what the canal serves (plus the main canal's base flow)."""
        outfalls = [p for p in self.d.spec.points if p.canal == canal.id and p.role is PointRole.outfall]
        if not outfalls:
            return
        spill = served.mapped(lambda q: q * self.hyd.tail_spill_fraction)
        if canal.level is CanalLevel.main and self.hyd.base_flow_m3s > 0:
            spill = spill + StepFn.constant(self.hyd.base_flow_m3s)
        share = spill.mapped(lambda q: q / len(outfalls))
        for point in outfalls:
            self.outfall_flow[point.id] = share
            offtakes[point.km].append(share)

    def _walk(self, canal: Canal, stops: list[float], offtakes: dict[float, list[StepFn]]) -> StepFn:
        law = canal_law(self.d, canal.id)
        flow = StepFn.constant(0.0)
        pos = canal.length_km
        for km in stops:
            if pos > km:
                length = pos - km
                tau = quantised_travel_ms(length, canal.velocity_ms)
                arriving = flow.shifted(-tau)
                upstream = arriving.mapped(lambda q, L=length: upstream_flow(law, q, L))
                reach = self.d.reach_at(canal.id, (pos + km) / 2).id
                self.reach_loss[(canal.id, reach)].append(upstream - arriving)
                flow = upstream
            self.flow_below[(canal.id, km)] = flow
            if offtakes.get(km):
                flow = total([flow, *offtakes[km]])
            pos = km
        return flow


def quantised_travel_ms(length_km: float, velocity_ms: float) -> int:
    """Travel time over a segment (the core's L / v), rounded to whole minutes (so breakpoints line up)."""
    return round(travel_s(length_km, velocity_ms) * 1000 / TRAVEL_QUANTUM_MS) * TRAVEL_QUANTUM_MS


def solve(district: District, scenario: Scenario | None = None) -> Network:
    """Solve the network of ``district`` under ``scenario`` (default: no events)."""
    scenario = scenario or Scenario.default()
    network = _Solver(district, scenario).solve()
    network.round_windows = [(label, a, b) for _, label, a, b, _ in round_windows(district, scenario.hydraulics.repeat_years)]
    network.epoch_ms = epoch_ms(district)
    return network
