"""The polling engine of one bus: a schedule of meters, read one request at a time.

One :class:`BusPoller` owns one :class:`~edge.modbus.ModbusLink` (a TCP gateway or a serial line)
and the meters behind it. Each meter is polled every ``fast_s`` simulated seconds; its slow group
(totaliser, battery, configuration) rides along every ``slow_s``. Schedules are absolute (a late
poll does not shift the next one). A meter that fails ``breaker_failures`` polls in a row opens its
circuit breaker: it is then tried again only after a cool-down that doubles up to a maximum, and
meanwhile its polls cost no bus time and publish a ``comm_error`` reading, so one dead or slow meter
never delays the others on its bus.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import heapq
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from canalflow.clock import SimClock, wall_to_utc
from canalflow.contract import Flag, Quality, Reading
from canalflow.profiles import ReadBlock
from edge.config import PointPlan, PollOptions, QualityOptions
from edge.modbus import ModbusError, ModbusExceptionResponse, ModbusLink, ModbusTimeout
from edge.quality import QualityChecker

log = logging.getLogger("canalflow.edge.poller")

CLOCK_REGISTER = "device_time"  # a profile's real-time clock: UTC epoch seconds, or a local BCD calendar
_CLOCK_READ_AT = "@clock_read_at_ms"  # key in the raw values: (sent, answered) edge ms of the clock's read


@dataclass
class DeviceHealth:
    """Per-meter health, published in the gateway status and on /metrics."""

    polls: int = 0
    good: int = 0
    errors: int = 0
    timeouts: int = 0
    exceptions: int = 0
    skipped: int = 0  # polls not sent because the breaker was open
    consecutive_failures: int = 0
    last_good_ts: int | None = None
    last_error: str | None = None
    rtt_ms: float | None = None
    breaker_open_until: float = 0.0
    cooldown_s: float = 0.0
    read_mode: int = 0  # 0: blocks spanning max_gap, 1: blocks of named registers only, 2: one value per request

    def as_status(self) -> dict[str, float | int | str | None]:
        return {
            "polls": self.polls, "good": self.good, "errors": self.errors, "timeouts": self.timeouts,
            "exceptions": self.exceptions, "skipped": self.skipped, "last_good_ts": self.last_good_ts,
            "rtt_ms": None if self.rtt_ms is None else round(self.rtt_ms, 2),
            "breaker": "open" if self.breaker_open_until > time.monotonic() else "closed",
            "last_error": self.last_error,
        }


@dataclass(order=True)
class _Slot:
    due: float
    order: int
    point: str = field(compare=False)


class PollFailed(Exception):
    def __init__(self, flag: Flag, message: str) -> None:
        super().__init__(message)
        self.flag = flag


OnReading = Callable[[str, Reading], None]


def read_plan(profile: Any, group: str, options: PollOptions, mode: int = 0) -> list[ReadBlock]:
    """The requests for one group in a read mode (see ``DeviceHealth.read_mode``)."""
    if mode >= 2:
        return [ReadBlock(r.wire_address, r.word_count, (r,)) for r in profile.registers if r.group == group]
    gap = options.max_gap if mode == 0 else 0
    return profile.read_blocks(group, max_words=options.max_block_words, max_gap=gap)


async def nap(event: asyncio.Event, timeout: float) -> None:
    """Wait for ``event`` at most ``timeout`` s (``asyncio.wait``: unlike 3.11's ``wait_for`` it
    never swallows a cancellation that races with the event)."""
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait([waiter], timeout=timeout)
    finally:
        waiter.cancel()


class BusPoller:
    def __init__(
        self, name: str, link: ModbusLink, points: list[PointPlan], *, clock: SimClock,
        options: PollOptions, quality: QualityOptions, on_reading: OnReading, device_tz: dt.tzinfo = dt.UTC,
    ) -> None:
        self.name = name
        self.device_tz = device_tz  # of meter calendars in local time
        self.link = link
        self.plans = {p.point: p for p in points}
        self.clock = clock
        self.options = options
        self.checker = QualityChecker(quality)
        self.on_reading = on_reading
        self.health = {p.point: DeviceHealth() for p in points}
        self.interval_override: dict[tuple[str, str], float] = {}
        self._heap: list[_Slot] = []
        self._slow_due: dict[str, float] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        self._order = 0
        self.polls = 0
        self._plans: dict[tuple[str, str, int], list[ReadBlock]] = {}
        self.late = 0  # polls that started more than an interval late (the bus cannot keep up)
        self.max_lag_s = 0.0

    # ---- schedule --------------------------------------------------------------------------
    def interval_wall(self, point: str, group: str = "fast") -> float:
        plan = self.plans[point]
        sim_s = self.interval_override.get((point, group), plan.fast_s if group == "fast" else plan.slow_s)
        return self.clock.wall_seconds(sim_s)

    def _push(self, due: float, point: str) -> None:
        self._order += 1
        heapq.heappush(self._heap, _Slot(due, self._order, point))

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        start = time.monotonic()
        self._heap.clear()  # started again by the agent's supervisor after a failure: schedule afresh
        # spread first polls over one interval so a bus does not see a burst at start-up
        for i, point in enumerate(self.plans):
            offset = self.interval_wall(point) * i / max(len(self.plans), 1)
            self._push(start + offset, point)
            self._slow_due[point] = start + offset
        try:
            while not self._stopping and self._heap:
                slot = self._heap[0]
                wait = slot.due - time.monotonic()
                if wait > 0:
                    self._wake.clear()
                    await nap(self._wake, wait)
                    continue
                heapq.heappop(self._heap)
                await self._poll_and_reschedule(slot)
        finally:
            await self.link.close()

    async def _poll_and_reschedule(self, slot: _Slot) -> None:
        point = slot.point
        interval = self.interval_wall(point)
        now = time.monotonic()
        await self.poll_point(point)
        self.max_lag_s = max(self.max_lag_s, now - slot.due)
        due = slot.due + interval
        if due < now:  # fell behind by more than an interval: skip, do not burst
            self.late += 1
            due = now + interval
        self._push(due, point)

    def _plan(self, profile: Any, group: str, mode: int) -> list[ReadBlock]:
        key = (profile.name, group, mode)
        blocks = self._plans.get(key)
        if blocks is None:
            blocks = self._plans[key] = read_plan(profile, group, self.options, mode)
        return blocks

    # ---- one meter -------------------------------------------------------------------------
    async def poll_point(self, point: str) -> Reading:
        plan = self.plans[point]
        health = self.health[point]
        ts = self.clock.now_ms()
        health.polls += 1
        self.polls += 1
        now = time.monotonic()
        if health.breaker_open_until > now:
            health.skipped += 1
            reading = self.checker.failed(ts, Flag.comm_error)
            self.on_reading(point, reading)
            return reading
        half_open = health.consecutive_failures >= self.options.breaker_failures
        groups = ["fast"]
        if self._slow_due.get(point, 0.0) <= now:
            groups.append("slow")
            self._slow_due[point] = now + self.interval_wall(point, "slow")
        try:
            raw, rtt = await self._read_groups(plan, health, groups, retries=0 if half_open else None)
        except PollFailed as exc:
            reading = self._failure(point, health, ts, exc)
        else:
            reading = self._success(plan, health, ts, raw, rtt)
        self.on_reading(point, reading)
        return reading

    def _failure(self, point: str, health: DeviceHealth, ts: int, exc: PollFailed) -> Reading:
        health.errors += 1
        health.consecutive_failures += 1
        health.last_error = str(exc)
        if health.consecutive_failures >= self.options.breaker_failures:
            health.cooldown_s = min(max(health.cooldown_s * 2, self.options.breaker_cooldown_s),
                                    self.options.breaker_max_cooldown_s)
            health.breaker_open_until = time.monotonic() + health.cooldown_s
            log.warning("%s: breaker open for %.1f s after %d failed polls: %s", point, health.cooldown_s,
                        health.consecutive_failures, exc)
        return self.checker.failed(ts, exc.flag)

    def _success(self, plan: PointPlan, health: DeviceHealth, ts: int, raw: dict[str, Any], rtt: float) -> Reading:
        if health.consecutive_failures >= self.options.breaker_failures:
            log.info("%s: answering again, breaker closed", plan.point)
        health.consecutive_failures = 0
        health.cooldown_s = 0.0
        health.breaker_open_until = 0.0
        health.rtt_ms = rtt * 1000
        values, alarms, rollover = self._to_quantities(plan, raw)
        device_clock = (self._device_seconds(plan, raw), *raw[_CLOCK_READ_AT]) if _CLOCK_READ_AT in raw else None
        verdict = self.checker.check(plan.point, ts, values, now_ms=self.clock.now_ms(),
                                     rollover=rollover, alarms=alarms, device_clock=device_clock)
        rate(plan, ts, verdict)
        if verdict.quality is not Quality.bad:
            health.good += 1
            health.last_good_ts = ts
        return verdict.reading(ts)

    def _device_seconds(self, plan: PointPlan, raw: dict[str, Any]) -> float:
        """The meter's clock as UTC epoch seconds (a BCD calendar keeps local wall-clock time)."""
        seconds = float(raw[CLOCK_REGISTER])
        if plan.profile.register_named(CLOCK_REGISTER).wall_clock and math.isfinite(seconds) and seconds:
            return float(wall_to_utc(seconds, self.device_tz))
        return seconds

    async def _read_groups(self, plan: PointPlan, health: DeviceHealth, groups: list[str],
                           retries: int | None) -> tuple[dict[str, Any], float]:
        try:
            return await self._read_in_mode(plan, health, groups, retries)
        except ModbusExceptionResponse as exc:
            if not (exc.count > 1 and exc.code in (2, 3) and health.read_mode < 2):
                health.exceptions += 1
                raise PollFailed(Flag.device_exception, str(exc)) from exc
            # the meter may refuse reads spanning unnamed registers, or any block: step down and
            # keep the smaller requests only if they work (else it is a device fault, not our reads)
            health.read_mode += 1
            try:
                result = await self._read_groups(plan, health, groups, retries)
            except PollFailed:
                health.read_mode -= 1
                raise
            log.warning("%s: unit %d refused a %d-register read (%s); now reading %s", plan.point, plan.unit,
                        exc.count, exc.name, "named registers only" if health.read_mode == 1 else
                        "one value per request")
            return result

    async def _read_in_mode(self, plan: PointPlan, health: DeviceHealth, groups: list[str],
                            retries: int | None) -> tuple[dict[str, Any], float]:
        raw: dict[str, Any] = {}
        started = time.monotonic()
        requests = 0
        for group in groups:
            for block in self._plan(plan.profile, group, health.read_mode):
                sent_ms = self.clock.now_ms()
                words = await self._request(plan, health, block, retries)
                requests += 1
                decoded = block.decode(words)
                if CLOCK_REGISTER in decoded:  # the meter read its clock somewhere in this round trip
                    raw[_CLOCK_READ_AT] = (sent_ms, self.clock.now_ms())
                raw.update(decoded)
        return raw, (time.monotonic() - started) / max(1, requests)

    async def _request(self, plan: PointPlan, health: DeviceHealth, block: Any, retries: int | None) -> list[int]:
        attempts = 1 + (self.options.retries if retries is None else retries)
        backoff = self.options.retry_backoff_s
        for attempt in range(attempts):
            try:
                return await self.link.read_registers(
                    plan.unit, block.start, block.count, function=plan.profile.function_code,
                    timeout_s=self.options.timeout_s,
                )
            except ModbusExceptionResponse:
                raise
            except ModbusError as exc:
                if isinstance(exc, ModbusTimeout):
                    health.timeouts += 1
                if attempt + 1 >= attempts or self._stopping:
                    raise PollFailed(Flag.comm_error, str(exc)) from exc
                await asyncio.sleep(backoff)
                backoff *= 2
        raise AssertionError("unreachable")

    def _to_quantities(self, plan: PointPlan, raw: dict[str, Any]) -> tuple[dict[str, float], list[str], dict[str, float]]:
        values: dict[str, float] = {}
        alarms: list[str] = []
        rollover: dict[str, float] = {}
        for reg in plan.profile.registers:
            if reg.name not in raw or reg.quantity is None:
                continue
            value = raw[reg.name]
            values[reg.quantity] = float(value)
            if reg.bits:
                alarms += [name for bit, name in reg.bits.items() if int(value) >> int(bit) & 1]
            if reg.rollover and reg.rollover_modulus_si:
                rollover[reg.quantity] = reg.rollover_modulus_si
        return values, alarms, rollover


def rate(plan: PointPlan, ts: int, verdict: Any) -> None:
    """The one rating step, for polled meters and stations (edge.telemetry.receiver): a level-only
    meter gets a provisional flow from its point's rating, flagged ``rated``."""
    if plan.profile.kind != "level" or "level" not in verdict.values:
        return
    day = dt.datetime.fromtimestamp(ts / 1000, dt.UTC).date()
    rating = plan.rating_on(day)
    if rating is None:
        return
    from canalflow import ratings as rt  # numpy: only for gateways with level-only meters

    rated = rt.flow(rating, verdict.values["level"], verdict.values.get("downstream_level"))
    verdict.values["flow"] = rated.flow_m3s
    verdict.flag(Flag.rated, Quality.good)
    if rated.submerged:
        verdict.flag(Flag.submerged, Quality.suspect)
