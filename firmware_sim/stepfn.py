"""Piecewise-constant functions of time (epoch ms), with exact integrals.

Every flow in the simulator is a :class:`StepFn`: shifting by a travel time, adding offtakes and
applying the seepage law keep it piecewise constant, so volumes are exact sums, not quadrature.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

MS_PER_S = 1000.0


@dataclass(frozen=True)
class StepFn:
    """``f(t) = values[i]`` for ``times[i] <= t < times[i+1]``; ``before`` for ``t < times[0]``."""

    times: tuple[int, ...] = ()
    values: tuple[float, ...] = ()
    before: float = 0.0
    _cum: list[float] = field(default_factory=list, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.times) != len(self.values):
            raise ValueError("times and values differ in length")
        cum = [0.0]
        for i in range(1, len(self.times)):
            cum.append(cum[-1] + self.values[i - 1] * (self.times[i] - self.times[i - 1]) / MS_PER_S)
        self._cum.extend(cum)

    @classmethod
    def constant(cls, value: float) -> StepFn:
        return cls((), (), value)

    @classmethod
    def pulses(cls, windows: Iterable[tuple[int, int, float]], base: float = 0.0) -> StepFn:
        """``base`` plus ``value`` during each ``[start, end)`` window (windows may overlap)."""
        deltas: dict[int, float] = {}
        for start, end, value in windows:
            if end <= start or value == 0:
                continue
            deltas[start] = deltas.get(start, 0.0) + value
            deltas[end] = deltas.get(end, 0.0) - value
        times = sorted(deltas)
        values = list(itertools.accumulate((deltas[t] for t in times), initial=base))[1:]
        return cls(tuple(times), tuple(_tidy(v) for v in values), base).simplified()

    def at(self, t_ms: int) -> float:
        i = bisect.bisect_right(self.times, t_ms) - 1
        return self.before if i < 0 else self.values[i]

    def _integral_to(self, t_ms: int) -> float:
        """Integral from times[0] to t (negative direction before times[0]), in value·s."""
        if not self.times:
            return self.before * t_ms / MS_PER_S
        i = bisect.bisect_right(self.times, t_ms) - 1
        if i < 0:
            return self.before * (t_ms - self.times[0]) / MS_PER_S
        return self._cum[i] + self.values[i] * (t_ms - self.times[i]) / MS_PER_S

    def integral(self, t0_ms: int, t1_ms: int) -> float:
        """Exact ``∫ f dt`` over ``[t0, t1]`` in value × seconds (m³ for a flow in m³/s)."""
        return self._integral_to(t1_ms) - self._integral_to(t0_ms)

    def moment(self, t0_ms: int, t1_ms: int, origin_ms: int) -> float:
        """Exact ``∫ f(t)·(t − origin) dt`` over ``[t0, t1]`` in value × s² (for linear drifts)."""
        if t1_ms <= t0_ms:
            return 0.0
        first = max(bisect.bisect_right(self.times, t0_ms) - 1, 0)
        edges = [t0_ms, *(t for t in self.times[first:] if t0_ms < t < t1_ms), t1_ms]
        total_moment = 0.0
        for a, b in itertools.pairwise(edges):
            da, db = (a - origin_ms) / MS_PER_S, (b - origin_ms) / MS_PER_S
            total_moment += self.at(a) * (db * db - da * da) / 2
        return total_moment

    def shifted(self, delta_ms: int) -> StepFn:
        """``g(t) = f(t - delta)``: the same signal ``delta`` later (earlier if negative)."""
        return StepFn(tuple(t + delta_ms for t in self.times), self.values, self.before)

    def mapped(self, fn: Callable[[float], float]) -> StepFn:
        return StepFn(self.times, tuple(fn(v) for v in self.values), fn(self.before)).simplified()

    def combine(self, other: StepFn, op: Callable[[float, float], float]) -> StepFn:
        times = sorted(set(self.times) | set(other.times))
        values = tuple(op(self.at(t), other.at(t)) for t in times)
        return StepFn(tuple(times), values, op(self.before, other.before)).simplified()

    def __add__(self, other: StepFn) -> StepFn:
        return self.combine(other, lambda a, b: _tidy(a + b))

    def __sub__(self, other: StepFn) -> StepFn:
        return self.combine(other, lambda a, b: _tidy(a - b))

    def simplified(self) -> StepFn:
        """Drop breakpoints where the value does not change."""
        times: list[int] = []
        values: list[float] = []
        last = self.before
        for t, v in zip(self.times, self.values, strict=True):
            if v != last:
                times.append(t)
                values.append(v)
                last = v
        if len(times) == len(self.times):
            return self
        return StepFn(tuple(times), tuple(values), self.before)

    @property
    def breakpoints(self) -> tuple[int, ...]:
        return self.times

    def max(self) -> float:
        return max((self.before, *self.values))


def total(fns: Iterable[StepFn]) -> StepFn:
    """Sum of many step functions in one merge (faster than chained ``+``)."""
    fns = list(fns)
    if not fns:
        return StepFn.constant(0.0)
    if len(fns) == 1:
        return fns[0]
    deltas: dict[int, float] = {}
    base = 0.0
    for fn in fns:
        base += fn.before
        last = fn.before
        for t, v in zip(fn.times, fn.values, strict=True):
            deltas[t] = deltas.get(t, 0.0) + (v - last)
            last = v
    times = sorted(deltas)
    values = list(itertools.accumulate((deltas[t] for t in times), initial=base))[1:]
    return StepFn(tuple(times), tuple(_tidy(v) for v in values), _tidy(base)).simplified()


def _tidy(value: float) -> float:
    """Cancel float dust left by adding and removing the same pulse (1e-15 m³/s is no flow)."""
    return 0.0 if abs(value) < 1e-12 else value
