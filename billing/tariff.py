"""The tariff engine: a unit's season volume and quota -> bill lines in exact decimal money.

Rules (domain.md section 6; tariffs are data in the district file, versioned by season):

- The unit's volume is shared among its crop classes in proportion to their quota (by area when
  the unit has no quota at all); the shares add up exactly to the unit's volume.
- Each class pays ``volume × price component × band multiplier`` per price component
  (backbone, terminal, village fee) and per band; bands are fractions of the class's quota.
- Precise subsidy: grain volume within quota × ``subsidy.grain_per_m3``, as a credit — refused
  when the unit uses more than its quota or has unpaid fees.
- Water-saving reward: (quota − use) × reward rate (grain or other, shared by quota), as a
  credit — none when over quota, and none at zero use (a unit that took no water saved none).
- Money is Decimal; each line's amount is rounded to the fen (0.01 yuan, half up) once, where the
  line is made; a bill's total is the sum of its lines.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal

from billing.notes import Note, note
from canalflow.district import Band, BillingUnit, Budget, Crop, District, Tariff, best_quota_rule

FEN = Decimal("0.01")
ZERO = Decimal(0)
COMPONENTS = ("backbone", "terminal", "village_fee")
VOLUME_QUANTUM = Decimal("0.001")  # m3: class shares are exact to the litre and add up exactly


def to_fen(amount: Decimal) -> Decimal:
    return amount.quantize(FEN, rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class Line:
    """One bill line. ``amount`` is rounded to the fen; credits are negative."""

    kind: str  # charge | loss | fixed | subsidy | reward | adjustment
    crop_class: str
    component: str  # backbone | terminal | village_fee | subsidy | reward | adjustment
    band: int | None  # index into tariff.bands for charges
    volume_m3: Decimal
    rate: Decimal  # yuan per m3 (after the band multiplier)
    amount: Decimal
    note: str = ""

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "crop_class": self.crop_class,
            "component": self.component,
            "band": self.band,
            "volume_m3": str(self.volume_m3),
            "rate": str(self.rate),
            "amount": str(self.amount),
            "note": self.note,
        }


@dataclass(frozen=True)
class ClassShare:
    crop_class: str
    area_mu: Decimal
    quota_m3: Decimal
    volume_m3: Decimal


@dataclass(frozen=True)
class Charge:
    """The tariff applied to one unit: its lines, the quota position, and why credits were refused."""

    unit_id: str
    tariff_id: str
    tariff_version: int
    volume_m3: Decimal
    quota_m3: Decimal
    shares: tuple[ClassShare, ...]
    lines: tuple[Line, ...]
    notes: tuple[Note, ...] = field(default=())

    @property
    def total(self) -> Decimal:
        return sum((line.amount for line in self.lines), ZERO)

    @property
    def over_quota(self) -> bool:
        return self.volume_m3 > self.quota_m3


def class_quotas(unit: BillingUnit, crops: Mapping[str, Crop], season_kind: str) -> dict[str, tuple[Decimal, Decimal]]:
    """Per crop class of a unit: (irrigated area in mu, season quota in m3)."""
    out: dict[str, tuple[Decimal, Decimal]] = {}
    for crop_area in unit.crops:
        crop = crops[crop_area.crop]
        rule = best_quota_rule(crop, season_kind, crop_area.method, unit.zone)
        quota = rule.m3_per_mu * crop_area.area_mu if rule is not None else ZERO
        area, total = out.get(crop.crop_class, (ZERO, ZERO))
        out[crop.crop_class] = (area + crop_area.area_mu, total + quota)
    return out


def split_exactly(total: Decimal, weights: Sequence[Decimal], quantum: Decimal = VOLUME_QUANTUM) -> list[Decimal]:
    """Split ``total`` in proportion to ``weights`` in steps of ``quantum``; the parts add up to ``total``.

    Largest-remainder method: every part is floored to the quantum, and the quanta left over go to
    the parts with the largest remainders (ties to the earlier part). ``total`` must be a multiple
    of ``quantum``. Zero weights everywhere split equally.
    """
    if total < 0 or total % quantum != 0:
        raise ValueError(f"total {total} must be a non-negative multiple of the quantum {quantum}")
    if not weights:
        raise ValueError("nothing to split between: no weights")
    if any(w < 0 for w in weights):
        raise ValueError("weights must not be negative")
    weight_sum = sum(weights, ZERO)
    if weight_sum == 0:
        weights = [Decimal(1)] * len(weights)
        weight_sum = Decimal(len(weights))
    steps = int(total / quantum)
    exact = [Decimal(steps) * w / weight_sum for w in weights]
    floors = [int(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - floors[i]), i))
    for i in order[: steps - sum(floors)]:
        floors[i] += 1
    return [Decimal(n) * quantum for n in floors]


def band_volumes(volume: Decimal, quota: Decimal, bands: Sequence[Band]) -> list[Decimal]:
    """Volume in each band; band i spans (up_to[i-1] × quota, up_to[i] × quota]."""
    out: list[Decimal] = []
    lower = ZERO
    for band in bands:
        upper = band.up_to * quota if band.up_to is not None else None
        top = volume if upper is None else min(volume, upper)
        out.append(max(ZERO, top - lower))
        if upper is not None:
            lower = max(lower, upper)
    return out


def apply_tariff(
    district: District,
    unit_id: str,
    volume_m3: Decimal,
    season_kind: str,
    tariff: Tariff,
    *,
    unpaid_fees: bool = False,
    quota_share: Decimal = Decimal(1),
) -> Charge:
    """Bill lines of one unit for one season's volume (m3, exact Decimal) under ``tariff``.

    ``quota_share``: the part of the season quota that applies to a window shorter than the
    season (see ``billing.window.quota_share``); class quotas are scaled by it, to the litre.
    """
    if volume_m3 < 0:
        raise ValueError(f"unit {unit_id}: negative volume {volume_m3} m3 cannot be billed; check its intake meter")
    if not 0 <= quota_share <= 1:
        raise ValueError(f"quota share {quota_share} must be between 0 and 1")
    shares = class_shares(district, unit_id, volume_m3, season_kind, quota_share)
    quota_total = sum((s.quota_m3 for s in shares), ZERO)
    notes: list[Note] = []
    lines = [line for share in shares for line in _charge_lines(share, tariff)]
    over = volume_m3 > quota_total
    if quota_total == 0:
        notes.append(note("tariff.no_quota", season_kind=season_kind))
    if volume_m3 == 0:
        notes.append(note("tariff.no_water"))
    elif over:
        notes.append(note("tariff.over_quota", use=volume_m3, quota=quota_total))
    else:
        lines += _subsidy_lines(shares, tariff, unpaid_fees, notes)
        lines += _reward_lines(shares, quota_total - volume_m3, tariff)
    return Charge(unit_id, tariff.id, tariff.version, volume_m3, quota_total, shares, tuple(lines), tuple(notes))


def class_shares(district: District, unit_id: str, volume_m3: Decimal, season_kind: str, quota_share: Decimal = Decimal(1)) -> tuple[ClassShare, ...]:
    """A unit's volume shared among its crop classes by quota (by area without any quota), exactly."""
    per_class = class_quotas(district.tariff_unit(unit_id), district.crops, season_kind)
    if quota_share != 1:
        per_class = {c: (area, (quota * quota_share).quantize(VOLUME_QUANTUM)) for c, (area, quota) in per_class.items()}
    classes = list(per_class)
    quota_total = sum((q for _, q in per_class.values()), ZERO)
    weights = [per_class[c][1] for c in classes] if quota_total > 0 else [per_class[c][0] for c in classes]
    volumes = split_exactly(volume_m3.quantize(VOLUME_QUANTUM), weights)
    return tuple(ClassShare(c, per_class[c][0], per_class[c][1], v) for c, v in zip(classes, volumes, strict=True))


def loss_lines(district: District, unit_id: str, volume_m3: Decimal, season_kind: str, tariff: Tariff, note: str) -> list[Line]:
    """A loss share's own lines: its volume by crop class, at the base price (first band), no credits.

    The loss below a meter is water the entity is billed for but did not use: it neither counts
    against the entity's quota nor earns or loses subsidy and reward.
    """
    if volume_m3 == 0:
        return []
    lines: list[Line] = []
    for share in class_shares(district, unit_id, volume_m3, season_kind):
        for line in _charge_lines(ClassShare(share.crop_class, share.area_mu, share.volume_m3, share.volume_m3), tariff):
            lines.append(Line("loss", line.crop_class, line.component, None, line.volume_m3, line.rate, line.amount, note))
    return lines


def _charge_lines(share: ClassShare, tariff: Tariff) -> list[Line]:
    prices = tariff.prices.get(share.crop_class)  # type: ignore[call-overload]
    if prices is None:
        raise ValueError(f"tariff {tariff.id} v{tariff.version} has no price for crop class {share.crop_class!r}; add it under tariffs[].prices")
    lines: list[Line] = []
    for band_index, (band, volume) in enumerate(zip(tariff.bands, band_volumes(share.volume_m3, share.quota_m3, tariff.bands), strict=True)):
        if volume == 0:
            continue
        for component in COMPONENTS:
            price = getattr(prices, component)
            if price == 0:
                continue
            rate = price * band.multiplier
            lines.append(Line("charge", share.crop_class, component, band_index, volume, rate, to_fen(volume * rate)))
    return lines


def subsidy_rate(tariff: Tariff, crop_class: str) -> tuple[Decimal, str]:
    """The precise subsidy per m3 for a crop class, and the cost gaps it is the sum of ("" for a flat rate;
    zero for classes not eligible).

    With a cost price: Σ over its components of (cost − executed price), each at least 0;
    otherwise the flat rate.
    """
    subsidy = tariff.subsidy
    if crop_class not in subsidy.classes:
        return ZERO, ""
    if not subsidy.cost:
        return subsidy.grain_per_m3, ""
    prices = tariff.prices[crop_class]  # type: ignore[index]
    gaps = [(c, cost, getattr(prices, c)) for c, cost in subsidy.cost.items()]
    rate = sum((max(ZERO, cost - price) for _, cost, price in gaps), ZERO)
    return rate, " + ".join(f"({cost} cost - {price} price, {c})" for c, cost, price in gaps)


def _subsidy_lines(shares: Sequence[ClassShare], tariff: Tariff, unpaid_fees: bool, notes: list[Note]) -> list[Line]:
    eligible = [(s, *subsidy_rate(tariff, s.crop_class)) for s in shares if s.volume_m3 > 0]
    eligible = [(s, rate, gaps) for s, rate, gaps in eligible if rate > 0]
    if not eligible:
        return []
    if unpaid_fees:
        notes.append(note("tariff.unpaid_fees"))
        return []
    lines = []
    for share, rate, gaps in eligible:
        volume = min(share.volume_m3, share.quota_m3)
        why = (note("tariff.subsidy_cost", crop_class=share.crop_class, volume=volume, gaps=gaps, rate=rate) if gaps
               else note("tariff.subsidy_flat", crop_class=share.crop_class, volume=volume, rate=rate))
        lines.append(Line("subsidy", share.crop_class, "subsidy", None, volume, -rate, -to_fen(volume * rate), why))
    return lines


def _reward_lines(shares: Sequence[ClassShare], saved_m3: Decimal, tariff: Tariff) -> list[Line]:
    if saved_m3 <= 0:
        return []
    saved = split_exactly(saved_m3.quantize(VOLUME_QUANTUM, rounding=ROUND_FLOOR), [s.quota_m3 for s in shares])
    reward = tariff.reward
    lines: list[Line] = []
    for share, volume in zip(shares, saved, strict=True):
        if reward.buy_back_per_m3 is not None:
            rate, component = reward.buy_back_per_m3, "buy_back"
        else:
            rate = reward.grain_per_m3 if share.crop_class == "grain" else reward.other_per_m3
            component = "reward"
        if rate == 0 or volume == 0:
            continue
        why = note(f"tariff.{component}", volume=volume, rate=rate)
        lines.append(Line("reward", share.crop_class, component, None, volume, -rate, -to_fen(volume * rate), why))
    return lines


def fixed_lines(unit: BillingUnit, tariff: Tariff, share: Decimal = Decimal(1)) -> list[Line]:
    """The fixed part of a two-part price: ``fixed_per_mu`` × the unit's irrigated area (× the window's quota share)."""
    if tariff.fixed_per_mu == 0 or unit.area_mu == 0:
        return []
    amount = to_fen(tariff.fixed_per_mu * unit.area_mu * share)
    why = (note("tariff.fixed_share", per_mu=tariff.fixed_per_mu, area=unit.area_mu, share=f"{share:.4%}") if share != 1
           else note("tariff.fixed", per_mu=tariff.fixed_per_mu, area=unit.area_mu))
    return [Line("fixed", "", "fixed", None, ZERO, ZERO, amount, why)]


@dataclass(frozen=True)
class Claim:
    """A credit line claimed from a season budget, and whose bill it is on."""

    unit_id: str
    index: int  # the line's position on its bill
    line: Line


def ration(claims: Sequence[Claim], budget: Budget, what: str) -> tuple[list[tuple[Claim, Line]], Note | str]:
    """When credits claimed exceed their season budget: the cut line for each claim, and the note saying why.

    ``pro_rata``: every claim paid budget/claims (the paid amounts split to the fen, adding up to the
    budget exactly). ``priority``: classes in the declared order are paid in full while the budget
    lasts; the class where it runs out is paid pro rata; the rest get nothing. Within budget: no cuts.
    """
    claimed = sum((-c.line.amount for c in claims), ZERO)
    if claimed <= budget.yuan:
        return [], ""
    order = list(budget.priority) if budget.rule == "priority" else []
    rank = {c: i for i, c in enumerate(order)}
    groups: dict[int, list[Claim]] = {}
    for claim in claims:
        groups.setdefault(rank.get(claim.line.crop_class, len(order)), []).append(claim)
    left = budget.yuan.quantize(FEN, rounding=ROUND_FLOOR)
    cuts: list[tuple[Claim, Line]] = []
    for key in sorted(groups):
        group = groups[key]
        asked = sum((-c.line.amount for c in group), ZERO)
        paid = split_exactly(min(left, asked), [-c.line.amount for c in group], FEN) if asked else [ZERO] * len(group)
        left -= sum(paid, ZERO)
        for claim, pay in zip(group, paid, strict=True):
            cut = -claim.line.amount - pay
            if cut:
                why = note("tariff.budget_cut", what=what, budget=budget.yuan, claimed=claimed, rule=budget.rule.replace("_", " "), paid=pay, claim=-claim.line.amount)
                cuts.append((claim, Line(claim.line.kind, claim.line.crop_class, "budget", None, ZERO, ZERO, cut, why)))
    if budget.rule == "pro_rata":
        return cuts, note("tariff.budget_pro_rata", what=what, claimed=claimed, budget=budget.yuan, share=f"{budget.yuan / claimed:.4%}")
    return cuts, note("tariff.budget_priority", what=what, claimed=claimed, budget=budget.yuan, order=" > ".join(order or ["file order"]))
