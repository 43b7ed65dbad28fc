"""Quality flags at the edge: nothing is dropped silently, every doubt is written on the reading.

:class:`QualityChecker` keeps a little state per point (previous values, repeat counts) and turns
the decoded values of one poll into a ``canalflow.contract.Reading`` with a quality code and flags:

- ``out_of_range``: outside the configured plausible range (suspect), or not a finite number /
  outside the physically possible range of the contract (bad; the value is left out, the flag says why),
- ``rate_of_change``: changed faster than ``max_rate_per_s`` since the previous poll (suspect),
- ``stuck``: the same non-zero value ``stuck_polls`` polls in a row (suspect),
- ``totaliser_rollover``: the totaliser wrapped at its register's maximum (good: unwrap it),
- ``totaliser_reset``: the totaliser went backwards otherwise (suspect),
- ``future_timestamp``: the timestamp is ahead of the clock by more than ``max_future_s`` (suspect),
- ``device_exception`` / ``comm_error``: the poll failed (bad, no values),
- ``device_alarm`` / ``low_battery``: status bits set by the meter (suspect),
- ``low_signal``: signal quality under ``min_signal_quality``, or a status bit of ``signal_bits``
  (a fouled, silted or coated sensor: suspect, its reading drifts),
- ``clock_drift``: the meter's clock (register ``device_time``) is further than ``max_clock_drift_s``
  from the edge clock (suspect: the meter's values may lag); it stays on the point's readings until
  the next clock read says otherwise; a clock reading 0 is not set and not judged,
- ``reverse_flow``: a negative flow (suspect: an intake does not give water back).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from canalflow.contract import IMPOSSIBLE, Flag, Quality, Reading

_RANK = {Quality.good: 0, Quality.estimated: 1, Quality.suspect: 2, Quality.bad: 3}
STUCK_QUANTITIES = ("flow", "level", "velocity", "downstream_level")


def worst(a: Quality, b: Quality) -> Quality:
    return a if _RANK[a] >= _RANK[b] else b


@dataclass
class _PointState:
    last_ts: int | None = None
    last: dict[str, float] = field(default_factory=dict)
    repeats: dict[str, int] = field(default_factory=dict)
    clock_drifted: bool = False


@dataclass
class Verdict:
    values: dict[str, float] = field(default_factory=dict)
    quality: Quality = Quality.good
    flags: list[Flag] = field(default_factory=list)

    def flag(self, flag: Flag, quality: Quality) -> None:
        if flag not in self.flags:
            self.flags.append(flag)
        self.quality = worst(self.quality, quality)

    def reading(self, ts: int) -> Reading:
        return Reading(ts=ts, values=self.values, quality=self.quality, flags=tuple(self.flags))


class QualityChecker:
    def __init__(self, options: Any) -> None:
        self.options = options
        self._state: dict[str, _PointState] = {}

    def failed(self, ts: int, flag: Flag) -> Reading:
        """The reading of a poll that got no values (device exception or no answer)."""
        return Reading(ts=ts, values={}, quality=Quality.bad, flags=(flag,))

    def check(
        self, point: str, ts: int, values: dict[str, float], *, now_ms: int,
        rollover: dict[str, float] | None = None, alarms: list[str] | None = None,
        device_clock: tuple[float, int, int] | None = None,
    ) -> Verdict:
        """Judge one poll's SI values; ``rollover`` maps totaliser quantity -> wrap modulus (SI);
        ``device_clock`` is (the meter's clock in UTC epoch s, edge ms when the request for it was sent,
        edge ms when the answer came)."""
        state = self._state.setdefault(point, _PointState())
        verdict = Verdict()
        for name, value in values.items():
            self._judge(state, verdict, name, value, ts, (rollover or {}).get(name))
        if ts > now_ms + self.options.max_future_s * 1000:
            verdict.flag(Flag.future_timestamp, Quality.suspect)
        for alarm in alarms or []:
            verdict.flag(self._alarm_flag(alarm), Quality.suspect)
        signal = verdict.values.get("signal_quality")
        if signal is not None and signal < self.options.min_signal_quality:
            verdict.flag(Flag.low_signal, Quality.suspect)
        if device_clock is not None:
            state.clock_drifted = self.clock_drifted(*device_clock)
        if state.clock_drifted:
            verdict.flag(Flag.clock_drift, Quality.suspect)
        state.last_ts = ts
        return verdict

    def _alarm_flag(self, alarm: str) -> Flag:
        if "battery" in alarm:
            return Flag.low_battery
        return Flag.low_signal if alarm in self.options.signal_bits else Flag.device_alarm

    def clock_drifted(self, device_s: float, sent_ms: int, answered_ms: int) -> bool:
        """Is a meter clock that said ``device_s`` (UTC epoch s, whole seconds) in a round trip from edge
        time ``sent_ms`` to ``answered_ms`` off by more than the tolerance? The meter read its clock
        somewhere in the round trip, so a slow answer is not taken for drift. A clock at 0 was never
        set (or lost its time with power): not judged. One that is not a time at all (NaN: a calendar
        register that holds no date) is wrong."""
        if device_s == 0:
            return False
        if not math.isfinite(device_s):
            return True
        tolerance_ms = self.options.max_clock_drift_s * 1000
        device_ms = device_s * 1000
        return device_ms + 1000 < sent_ms - tolerance_ms or device_ms > answered_ms + tolerance_ms

    def _judge(self, state: _PointState, verdict: Verdict, name: str, value: float, ts: int,
               modulus: float | None) -> None:
        low, high = IMPOSSIBLE.get(name, (-math.inf, math.inf))
        if not math.isfinite(value) or not low <= value <= high:
            verdict.flag(Flag.out_of_range, Quality.bad)
            return
        verdict.values[name] = value
        if name == "flow" and value < 0:
            verdict.flag(Flag.reverse_flow, Quality.suspect)
        limits = self.options.limits.get(name)
        if limits is not None and not limits[0] <= value <= limits[1]:
            verdict.flag(Flag.out_of_range, Quality.suspect)
        previous = state.last.get(name)
        if previous is not None and state.last_ts is not None and ts > state.last_ts:
            dt_s = (ts - state.last_ts) / 1000.0
            if name == "totaliser":
                self._totaliser(verdict, previous, value, modulus)
            else:
                max_rate = self.options.max_rate_per_s.get(name)
                if max_rate is not None and abs(value - previous) / dt_s > max_rate:
                    verdict.flag(Flag.rate_of_change, Quality.suspect)
        self._stuck(state, verdict, name, value, previous)
        state.last[name] = value

    def _totaliser(self, verdict: Verdict, previous: float, value: float, modulus: float | None) -> None:
        if value >= previous:
            return
        # a wrap: the old value near the top of the register, the new one near zero
        if modulus and previous > 0.9 * modulus and value < 0.1 * modulus:
            verdict.flag(Flag.totaliser_rollover, Quality.good)
        else:
            verdict.flag(Flag.totaliser_reset, Quality.suspect)

    def _stuck(self, state: _PointState, verdict: Verdict, name: str, value: float, previous: float | None) -> None:
        if name not in STUCK_QUANTITIES:
            return
        repeats = state.repeats.get(name, 0) + 1 if value == previous and value != 0 else 0
        state.repeats[name] = repeats
        if repeats + 1 >= self.options.stuck_polls:
            verdict.flag(Flag.stuck, Quality.suspect)
