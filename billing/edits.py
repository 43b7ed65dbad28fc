"""Manual edits (the E of VEE): a point's volume replaced over a stretch of time by a named user.

Kept in the ledger with user, reason and time; the raw readings are never touched. An edit is
applied where the volumes are computed (:mod:`billing.volumes`), and a run records which edits
it applied. This module sits low in billing's stack so that the ledger, the volumes and VEE can
all use :class:`Edit` without importing one another.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from canalflow.volume import Series, VolumeResult, window_volume


@dataclass(frozen=True)
class Edit:
    """A manual replacement of a point's volume over [start_ms, end_ms), by a named user."""

    id: int
    point: str
    start_ms: int
    end_ms: int
    volume_m3: float
    user: str
    reason: str


def apply_edits(series: Series, edits: Sequence[Edit], t0_ms: int, t1_ms: int, *, max_gap_ms: int, rollover_m3: float | None, min_coverage: float,
                max_flow_m3s: float | None = None) -> VolumeResult:
    """The window volume with manual edits: measured outside the edited stretches, edited inside.

    Edited stretches count as covered and as estimated; volumes are additive over adjacent
    windows, so the pieces sum to the window.
    """
    cuts = sorted((max(e.start_ms, t0_ms), min(e.end_ms, t1_ms), e) for e in edits if e.end_ms > t0_ms and e.start_ms < t1_ms)
    volume = edited = covered = 0.0
    gaps: list[tuple[int, int]] = []
    flags: list[str] = ["manual_edit"]
    cursor = t0_ms
    n = 0
    for a, b, edit in cuts:
        if a > cursor:
            part = window_volume(series, cursor, a, max_gap_ms=max_gap_ms, rollover_m3=rollover_m3, min_coverage=min_coverage, max_flow_m3s=max_flow_m3s)
            volume, covered, n = volume + part.volume_m3, covered + part.coverage * (a - cursor), n + part.n_readings
            gaps += part.gaps
            flags += part.flags
        share = edit.volume_m3 * (b - max(a, cursor)) / (edit.end_ms - edit.start_ms) if b > max(a, cursor) else 0.0
        volume, edited, covered = volume + share, edited + abs(share), covered + max(0, b - max(a, cursor))
        cursor = max(cursor, b)
    if cursor < t1_ms:
        part = window_volume(series, cursor, t1_ms, max_gap_ms=max_gap_ms, rollover_m3=rollover_m3, min_coverage=min_coverage, max_flow_m3s=max_flow_m3s)
        volume, covered, n = volume + part.volume_m3, covered + part.coverage * (t1_ms - cursor), n + part.n_readings
        gaps += part.gaps
        flags += part.flags
    coverage = min(1.0, covered / (t1_ms - t0_ms))
    share = min(1.0, edited / abs(volume)) if volume else (1.0 if edited else 0.0)
    return VolumeResult(volume, coverage, share, "manual_edit", gaps, coverage < min_coverage, n, tuple(dict.fromkeys(flags)))
