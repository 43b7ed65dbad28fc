"""The official canal-system coefficient (渠系水利用系数): one definition for billing and the simulator.

Source: GB/T 50363 (节水灌溉工程技术标准) and the national guidance on measuring irrigation water-use
efficiency (全国灌溉水有效利用系数测算分析技术指导), as summarised in domain.md section 2:

    η_sys = net water handed over by the lowest fixed canals to users
            ÷ (gross water diverted at the headworks − water returned to the source)

The lowest fixed canals hand water over at the intakes (billing units' offtakes). Water an outfall
spills into a drain (退水, ``outfall_kind: spill``, the default) reached no field: it stays in the
gross diversion and is a loss of the system. Water an outfall returns to the source and the
district's permit accounting counts as not withdrawn (``outfall_kind: return``) is deducted from the
gross diversion. Every other figure (path-weighted graph, level product, the plain ratio) is a
diagnostic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from canalflow.district import District, Point, PointRole

DEFINITION = (
    "net water delivered at the intakes ÷ (headworks diversion − outfall water declared return); "
    "tail spill to drains counts as a loss (GB/T 50363; national guidance on measuring irrigation water-use efficiency)"
)


@dataclass(frozen=True)
class SystemPoints:
    """The metering points of the canal-system balance, by what their water is."""

    diversions: tuple[Point, ...]  # heads of the main canals (gross diversion)
    deliveries: tuple[Point, ...]  # intakes: net water handed over to users
    returns: tuple[Point, ...]  # outfalls returning water to the source (deducted from the gross)
    spills: tuple[Point, ...]  # outfalls spilling to drains (a loss)
    unmetered_heads: tuple[str, ...] = ()  # main canals without a diversion point: no figure can be given

    @property
    def all(self) -> tuple[Point, ...]:
        return self.diversions + self.deliveries + self.returns + self.spills


def system_points(district: District) -> SystemPoints:
    mains = [c.id for c in district.spec.canals if c.source in district.headworks]
    heads = {c: district.diversion_point(c) for c in mains}
    outfalls = [p for p in district.spec.points if p.role is PointRole.outfall]
    return SystemPoints(
        tuple(p for p in heads.values() if p is not None),
        tuple(district.canal_intakes),  # sub-meters measure water an intake already took
        tuple(p for p in outfalls if district.outfall_kind(p) == "return"),
        tuple(p for p in outfalls if district.outfall_kind(p) == "spill"),
        tuple(c for c, p in heads.items() if p is None),
    )


@dataclass(frozen=True)
class SystemBalance:
    """Volumes (m3) of the canal-system balance over one window."""

    diverted_m3: float
    delivered_m3: float
    returned_m3: float
    spilled_m3: float

    @property
    def gross_m3(self) -> float:
        """The gross diversion the coefficient divides by: diverted less water returned to the source."""
        return self.diverted_m3 - self.returned_m3

    @property
    def eta(self) -> float | None:
        return self.delivered_m3 / self.gross_m3 if self.gross_m3 > 0 else None

    @property
    def spill_share(self) -> float | None:
        """Tail spill as a fraction of the diversion."""
        return self.spilled_m3 / self.diverted_m3 if self.diverted_m3 > 0 else None


def system_balance(district: District, volume_of: Callable[[str], float]) -> SystemBalance:
    """The canal-system balance from each point's window volume (``volume_of(point_id)``, m3)."""
    pts = system_points(district)

    def total(points: tuple[Point, ...]) -> float:
        return sum(volume_of(p.id) for p in points)

    return SystemBalance(total(pts.diversions), total(pts.deliveries), total(pts.returns), total(pts.spills))
