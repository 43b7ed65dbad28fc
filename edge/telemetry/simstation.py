"""Simulated telemetry stations: they dial a receiver and report their point's truth, with faults.

A :class:`SimStation` behaves like a 4G RTU set up as the district file says: it keeps one TCP
connection, sends a report every ``interval_s`` of simulated time and keep-alives in between,
waits for the centre's answer to SL 651 reports (retransmitting twice, as the standard says) and
keeps every unanswered report for the next connection, so an outage ends with a backlog.
``values(t_ms)`` gives the SI quantities at a moment (:func:`truth_values` takes them from
``firmware_sim``'s hydraulic truth, as the Modbus meters of the fleet do).

Faults (:class:`Faults`): a share of frames sent with a broken CRC/CS, reports sent twice,
hang-ups after a report, a station clock off by some seconds, outages without a link. An SL 651
station answers the centre's clock query (51) with its clock and takes the time of a set-clock
command (4A), as an RTU does.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from canalflow.clock import SimClock
from edge.telemetry import sl651, szy206
from edge.telemetry.sl651_elements import CLOCK_QUERY, SET_CLOCK

log = logging.getLogger("canalflow.edge.telemetry.sim")

# SL 651 value layout a simulated station uses for each wire quantity: (bytes, decimals)
SL651_LAYOUT = {"flow": (5, 3), "level": (4, 3), "downstream_level": (4, 3), "velocity": (3, 3),
                "totaliser": (6, 2), "battery": (2, 2), "status": (4, 0)}


@dataclass(frozen=True)
class Faults:
    bad_crc: float = 0.0  # share of frames sent with a broken CRC/CS (the station sends the good one again)
    duplicate: float = 0.0  # share of reports sent twice
    drop: float = 0.0  # share of reports after which the station hangs up (and dials again)
    clock_skew_s: float = 0.0  # the station clock's offset from true time
    outages: tuple[tuple[int, int], ...] = ()  # (from, to) sim ms without a link


@dataclass
class _Report:
    frame: bytes
    tries: int = 0


class SimStation:
    def __init__(self, station: Any, values: Callable[[int], dict[str, float]], *, host: str, port: int,
                 clock: SimClock, zone: ZoneInfo, interval_s: float = 300.0, keepalive_s: float = 40.0,
                 faults: Faults | None = None, seed: int = 0, answer_timeout_s: float = 2.0) -> None:
        self.station, self.values = station, values
        self.host, self.port, self.clock, self.zone = host, port, clock, zone
        self.interval_ms, self.keepalive_ms = int(interval_s * 1000), int(keepalive_s * 1000)
        self.faults = faults or Faults()
        self.answer_timeout_s = answer_timeout_s  # wall seconds
        self.random = random.Random(seed)
        self.queue: list[_Report] = []
        self.serial = 0
        self.sent = self.answered = self.connects = 0
        self._stop = asyncio.Event()
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._last_frame_ms = 0
        self.clock_skew_s = self.faults.clock_skew_s  # until the centre sets the clock (4A)

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        next_ms = self.clock.now_ms() // self.interval_ms * self.interval_ms + self.interval_ms
        try:
            while not self._stop.is_set():
                now = self.clock.now_ms()
                while now >= next_ms:
                    self.queue.append(_Report(self._report(next_ms)))
                    next_ms += self.interval_ms
                if self._in_outage(now):
                    self._hang_up()
                elif await self._link():
                    await self._flush()
                    await self._serve_queries()
                    if self._conn is not None and now - self._last_frame_ms >= self.keepalive_ms:
                        await self._write(self._keep_alive(), corrupt=False)
                await asyncio.sleep(0.02)
        finally:
            self._hang_up()

    # ---- frames --------------------------------------------------------------------------------
    def _station_time(self, t_ms: int) -> dt.datetime:
        shifted = t_ms + self.clock_skew_s * 1000
        return dt.datetime.fromtimestamp(shifted / 1000, self.zone).replace(tzinfo=None, microsecond=0)

    def _wire(self, t_ms: int) -> dict[str, Decimal]:
        """The station's numbers: SI over the station's scale, for the quantities it maps."""
        si = self.values(t_ms)
        return {q: Decimal(repr(si[q] / self.station.scale.get(q, 1.0))) for q in self.station.elements if q in si}

    def _report(self, t_ms: int) -> bytes:
        self.serial = self.serial % 65535 + 1
        if self.station.protocol == "szy206":
            return self._szy206_report(t_ms)
        observed = self._station_time(t_ms).replace(second=0)
        elements = []
        for quantity, value in self._wire(t_ms).items():
            size, decimals = SL651_LAYOUT.get(quantity, (4, 2))
            elements.append(sl651.Element(int(self.station.elements[quantity], 16), size, decimals,
                                          value=value.quantize(Decimal(1).scaleb(-decimals)), observed=observed))
        report = sl651.Report(self.serial, self._station_time(self.clock.now_ms()), self.station.address.upper(),
                              0x49, observed, tuple(elements))
        return self._sl651_frame(0x32, sl651.encode_body(report, 0x32))

    def _szy206_report(self, t_ms: int) -> bytes:
        when = self._station_time(t_ms)
        groups: dict[int, dict[str, Decimal]] = {}
        for quantity, value in self._wire(t_ms).items():
            name, _, index = self.station.elements[quantity].partition(".")
            groups.setdefault(int(index or 0), {})[name] = value
        specs = szy206.FUNCTIONS[3][1]
        rows = [{s.name: groups.get(i, {}).get(s.name, Decimal(0)).quantize(Decimal(1).scaleb(-s.decimals))
                 for s in specs} for i in range(max(groups, default=0) + 1)]
        tp = szy206.TimeLabel(when.second, when.minute, when.hour, when.day, 5)
        return szy206.encode(address=self.station.address.upper(), afn=szy206.AFN_REPORT, function=3,
                             data=szy206.realtime_data(3, rows, tp=tp))

    def _sl651_frame(self, function: int, body: bytes) -> bytes:
        return sl651.encode(centre=self.station.centre, station=self.station.address.upper(),
                            password=int(self.station.password, 16), function=function, body=body)

    def _keep_alive(self) -> bytes:
        if self.station.protocol == "szy206":
            return szy206.encode(address=self.station.address.upper(), afn=szy206.AFN_LINK, data=b"\xf2", function=3)
        sent = self._station_time(self.clock.now_ms())
        return self._sl651_frame(sl651.KEEP_ALIVE, max(self.serial, 1).to_bytes(2)
                                 + bytes.fromhex(sent.strftime("%y%m%d%H%M%S")))

    # ---- the link ------------------------------------------------------------------------------
    def _in_outage(self, now: int) -> bool:
        return any(start <= now < end for start, end in self.faults.outages)

    async def _link(self) -> bool:
        if self._conn is not None:
            return True
        try:
            self._conn = await asyncio.open_connection(self.host, self.port)
        except OSError:
            await asyncio.sleep(0.5)
            return False
        self.connects += 1
        if self.station.protocol == "szy206":
            login = szy206.encode(address=self.station.address.upper(), afn=szy206.AFN_LINK, data=b"\xf0",
                                  function=3)
            await self._write(login, corrupt=False)
            if await self._read_answer(len(login)) is None:
                self._hang_up()
                return False
        return True

    def _hang_up(self) -> None:
        if self._conn is not None:
            self._conn[1].close()
            self._conn = None

    async def _write(self, frame: bytes, *, corrupt: bool) -> None:
        assert self._conn is not None
        if corrupt:
            frame = frame[:-1] + bytes([frame[-1] ^ 0x5A]) if self.station.protocol == "sl651" else \
                frame[:-2] + bytes([frame[-2] ^ 0x5A, frame[-1]])
        try:
            self._conn[1].write(frame)
            await self._conn[1].drain()
        except ConnectionError:
            self._hang_up()
            return
        self.sent += 1
        self._last_frame_ms = self.clock.now_ms()

    async def _read_answer(self, size: int) -> bytes | None:
        if self._conn is None:
            return None
        try:
            return await asyncio.wait_for(self._conn[0].readexactly(size), self.answer_timeout_s)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            return None

    async def _flush(self) -> None:
        while self.queue and self._conn is not None and not self._stop.is_set():
            report = self.queue[0]
            corrupt = self.random.random() < self.faults.bad_crc
            await self._write(report.frame, corrupt=corrupt)
            if self.station.protocol == "sl651" and not await self._sl651_answer(report.frame):
                report.tries += 1
                if report.tries >= 3:  # three timeouts: give up until the next connection
                    report.tries = 0
                    self._hang_up()
                continue
            self.queue.pop(0)
            self.answered += 1
            if self.random.random() < self.faults.duplicate:
                await self._write(report.frame, corrupt=False)  # its answer (if any) is read and dropped
                if self.station.protocol == "sl651":
                    await self._sl651_answer(report.frame)
            if self.random.random() < self.faults.drop:
                self._hang_up()

    async def _sl651_answer(self, frame: bytes) -> bool:
        """Read the centre's frames until the answer to ``frame``, answering its queries on the way."""
        sent = sl651.decode(frame)
        while (raw := await self._read_sl651()) is not None:
            try:
                down = sl651.decode(raw)
            except ValueError:
                continue
            if down.end == sl651.ENQ:
                await self._answer_query(down)
            elif down.report and sent.report and (down.function, down.report.serial) == (sent.function,
                                                                                         sent.report.serial):
                return True
        return False

    async def _serve_queries(self) -> None:
        """Answer the centre's queries waiting on the link, as an RTU does when they come; drop the rest."""
        while self._conn is not None and self.station.protocol == "sl651":
            try:  # readexactly consumes nothing until the whole header is there
                head = await asyncio.wait_for(self._conn[0].readexactly(sl651.HEADER), 0.001)
            except TimeoutError:
                return
            except (asyncio.IncompleteReadError, ConnectionError):
                self._hang_up()
                return
            raw = await self._read_sl651(head)
            if raw is not None:
                with contextlib.suppress(ValueError):
                    if (down := sl651.decode(raw)).end == sl651.ENQ:
                        await self._answer_query(down)

    async def _read_sl651(self, head: bytes | None = None) -> bytes | None:
        head = head or await self._read_answer(sl651.HEADER)
        if head is None:
            return None
        try:
            size = sl651.frame_size(head) or 0
        except ValueError:  # out of step with the centre: dial again
            self._hang_up()
            return None
        rest = await self._read_answer(size - sl651.HEADER)
        return None if rest is None else head + rest

    async def _answer_query(self, query: sl651.Frame) -> None:
        """51: the station clock as the answer's send time; 4A: take the centre's time, then answer."""
        if query.function == SET_CLOCK and query.report is not None:
            true_ms = self.clock.now_ms()
            set_to = query.report.sent.replace(tzinfo=self.zone).timestamp() * 1000
            self.clock_skew_s = round((set_to - true_ms) / 1000)  # the transfer time remains
        elif query.function != CLOCK_QUERY:
            return
        self.serial = self.serial % 65535 + 1
        answer = sl651.Report(self.serial, self._station_time(self.clock.now_ms()), self.station.address.upper())
        await self._write(self._sl651_frame(query.function, sl651.encode_body(answer, query.function)), corrupt=False)


def truth_values(truth: Any, point_id: str) -> Callable[[int], dict[str, float]]:
    """The SI quantities of ``point_id`` at a moment, from a ``firmware_sim.truth.Truth``."""
    epoch = truth.epoch_ms

    def at(t_ms: int) -> dict[str, float]:
        state = truth.state(point_id, t_ms)
        out = {"flow": state.flow_m3s, "totaliser": truth.volume_m3(point_id, epoch, t_ms), "battery": 12.6,
               "status": 0.0}
        for name, value in (("level", state.level_m), ("velocity", state.velocity_ms),
                            ("downstream_level", state.downstream_level_m)):
            if value is not None:
                out[name] = value
        return out

    return at
