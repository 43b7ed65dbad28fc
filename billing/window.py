"""The billing window: seasons, the quota share of a window, the tariff in force, month cuts.

The lowest billing stage after money (:mod:`billing.tariff`'s fen): every later stage takes a
window ``[t0_ms, t1_ms)`` in epoch ms and the :class:`~canalflow.district.Season` it falls in.
Days are cut at local midnight in the district's time zone.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from zoneinfo import ZoneInfo

from canalflow.district import District, Season, Tariff
from canalflow.errors import CanalflowError

DAY_MS = 86_400_000


class BillingError(CanalflowError, ValueError):
    """A billing run that cannot be made, with what to change."""


def season_window(district: District, season: Season) -> tuple[int, int]:
    """A season's window in epoch ms: local midnight of its start to local midnight after its end."""
    tz = ZoneInfo(district.spec.district.timezone)
    start = dt.datetime.combine(season.start, dt.time(), tzinfo=tz)
    end = dt.datetime.combine(season.end + dt.timedelta(days=1), dt.time(), tzinfo=tz)
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


def season_of_window(district: District, t0_ms: int, t1_ms: int) -> Season:
    """The season a window falls in (by its start, in the district's time zone)."""
    tz = ZoneInfo(district.spec.district.timezone)
    day = dt.datetime.fromtimestamp(t0_ms / 1000, tz).date()
    season = district.season_for(day)
    if season is None:
        known = ", ".join(f"{s.id} ({s.start}..{s.end})" for s in district.spec.seasons) or "none"
        raise BillingError(f"no season of district {district.id!r} covers {day}; known seasons: {known}. Add a season to the district file or pass --season")
    return season


def whole_season_kind(district: District, t0_ms: int, t1_ms: int) -> str | None:
    """The kind of the one season a window covers whole, else None: the head-tail figure takes whole-season
    net depths only then (the CLI's ``--season``, its ``--from/--to`` and the API's window alike)."""
    windows = [(s, season_window(district, s)) for s in district.spec.seasons]
    whole = [s for s, (start, end) in windows if t0_ms <= start and end <= t1_ms]
    return whole[0].kind if len(whole) == 1 else None


def quota_share(district: District, season: Season, t0_ms: int, t1_ms: int) -> Decimal:
    """The part of a season's quota that applies to a window: the share of the season's irrigation
    rounds (by duration) inside it, or of the season's days when it defines no rounds. 1 for the
    whole season."""
    s0, s1 = season_window(district, season)
    if season.rounds:
        spans = [(int(r.start.timestamp() * 1000), int(r.start.timestamp() * 1000 + r.days * DAY_MS)) for r in season.rounds]
    else:
        spans = [(s0, s1)]
    total = sum(b - a for a, b in spans)
    inside = sum(max(0, min(b, t1_ms) - max(a, t0_ms)) for a, b in spans)
    return Decimal(1) if inside >= total or total <= 0 else (Decimal(inside) / Decimal(total)).quantize(Decimal("0.000001"))


def tariff_of(district: District, season: Season) -> Tariff:
    tariff = district.tariffs.get(season.tariff)
    if tariff is None:
        raise BillingError(f"season {season.id!r} names tariff {season.tariff!r}, which the district file does not define")
    return tariff


def month_windows(district: District, t0_ms: int, t1_ms: int) -> list[tuple[str, int, int]]:
    """The window cut at local month boundaries: [(YYYY-MM, start_ms, end_ms)]."""
    tz = ZoneInfo(district.spec.district.timezone)
    out = []
    start = t0_ms
    while start < t1_ms:
        local = dt.datetime.fromtimestamp(start / 1000, tz)
        first_next = (local.replace(day=1, hour=0, minute=0, second=0, microsecond=0) + dt.timedelta(days=32)).replace(day=1)
        end = min(t1_ms, int(first_next.timestamp() * 1000))
        out.append((f"{local.year:04d}-{local.month:02d}", start, end))
        start = end
    return out
