"""The telemetry centre: a TCP server that SL 651 and SZY 206 stations dial in to.

A :class:`StationReceiver` is an :class:`~edge.agent.EdgeAgent` whose south side is stations that
connect, instead of Modbus meters it polls: it publishes as the gateway the stations' points name
(``gateways: [{id: RX-1}]``), through the agent's durable buffer, publish loop and end-to-end
confirmation, unchanged. A station is answered only once its readings are committed to the buffer,
so a station whose frame was lost with a crash sends it again.

Each connection's protocol is told by its first byte (``7E`` SL 651, ``01`` SL 651 in ASCII,
``68`` SZY 206). A frame that
cannot be framed (bad start, length, over the size bound) closes the connection; a frame that is
framed but rejected (CRC, body, unknown station, wrong password, another station's address, rate)
is dead-lettered with its raw bytes and counted per station (``stats``, and the gateway's status
``health``). Bounds: connections, time to the first frame, idle time, frame size, frames per second
per station. See docs/stations.md.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from canalflow.contract import Flag, Reading
from edge.agent import EdgeAgent
from edge.config import ConfigError
from edge.poller import BusPoller, rate
from edge.quality import QualityChecker
from edge.telemetry import sl651, sl651_ascii, szy206
from edge.telemetry.deadletter import DeadLetters
from edge.telemetry.errors import FrameError
from edge.telemetry.sl651_elements import CLOCK_QUERY, SET_CLOCK
from edge.telemetry.stations import Mapped, sl651_values, station_time_ms, szy206_values

log = logging.getLogger("canalflow.edge.telemetry")

# first byte of a connection -> (protocol, codec module, header bytes needed to know a frame's size)
STARTS: dict[int, tuple[str, Any, int]] = {0x7E: ("sl651", sl651, sl651.HEADER),
                                           0x01: ("sl651", sl651_ascii, sl651_ascii.HEADER),
                                           0x68: ("szy206", szy206, 3)}


@dataclass(frozen=True)
class Limits:
    max_connections: int = 20_000
    first_frame_s: float = 30.0  # a connection that sends nothing this long is closed
    idle_s: float = 300.0  # no frame this long (keep-alives come every 40 s) -> closed
    max_frame_bytes: int = sl651_ascii.MAX_BODY + sl651_ascii.OVERHEAD  # the longest SL 651 frame
    rate_per_s: float = 2.0  # frames per station per second, sustained...
    burst: float = 60.0  # ...after a burst of this many (a backlog of hourly reports)
    write_timeout_s: float = 10.0
    sl651_answer_end: int = sl651.ESC  # ESC: stay online (keep-alives follow); EOT: hang up
    status_stations: int = 1000  # stations listed in the status message, those with most errors first
    clock_query: bool = False  # ask each SL 651 connection's station for its clock (51) once
    set_clock: bool = False  # and set a clock found off by more than max_clock_skew_s (4A)


@dataclass
class StationStats:
    station: str
    protocol: str
    point: str
    connected: bool = False
    peer: str | None = None
    frames: int = 0
    readings: int = 0
    last_frame_ms: int | None = None
    last_function: str | None = None
    clock_offset_s: float | None = None  # station clock minus the receiver's, from a clock query's answer
    errors: Counter[str] = field(default_factory=Counter)
    tokens: float = -1.0  # rate bucket; -1: full on first use
    tokens_at: float = 0.0
    seen: deque[Any] = field(default_factory=lambda: deque(maxlen=64))  # recent reports, to spot replays

    def as_status(self) -> dict[str, float | int | str | None]:
        out: dict[str, float | int | str | None] = {
            "protocol": self.protocol, "point": self.point, "connected": int(self.connected), "peer": self.peer,
            "frames": self.frames, "readings": self.readings, "last_frame_ms": self.last_frame_ms,
            "last_function": self.last_function, "clock_offset_s": self.clock_offset_s,
            "errors": sum(self.errors.values())}
        out.update({f"error_{reason}": n for reason, n in sorted(self.errors.items())})
        return out


class _Conn:
    def __init__(self, peer: str, writer: asyncio.StreamWriter) -> None:
        self.peer, self.writer = peer, writer
        self.protocol: str | None = None
        self.codec: Any = None
        self.head = 0
        self.station: Any = None
        self.joiner: sl651.Reassembler | None = None
        self.clock_asked = False


class Reject(Exception):
    """A frame that decoded but is refused; ``close`` ends the connection."""

    def __init__(self, reason: str, message: str, *, station: Any = None, close: bool = False,
                 dead_letter: bool = True) -> None:
        super().__init__(message)
        self.reason, self.message, self.station, self.close, self.dead_letter = \
            reason, message, station, close, dead_letter


class _Unframed(Exception):
    def __init__(self, raw: bytes, error: FrameError) -> None:
        super().__init__(str(error))
        self.raw, self.error = raw, error


class StationReceiver(EdgeAgent):
    """``run()`` until ``stop()``; ``ready`` is set once the server listens (``port``)."""

    def __init__(self, district: Any, gateway_id: str, *, listen: tuple[str, int] = ("127.0.0.1", 0),
                 limits: Limits | None = None, deadletter_path: Path | str | None = None, **kwargs: Any) -> None:
        super().__init__(district, gateway_id, **kwargs)
        loaded = self.config.district
        self.limits = limits or Limits()
        self.listen = listen
        self.stations: dict[tuple[str, str], Any] = {}
        self.stats: dict[str, StationStats] = {}
        for station in loaded.spec.stations:
            if loaded.points[station.point].gateway == self.gateway:
                self.stations[(station.protocol, station.address.upper())] = station
                self.stats[station.id] = StationStats(station.id, station.protocol, station.point)
        if not self.stations:
            raise ConfigError(f"{loaded.path}: stations: none feeds a point of gateway {self.gateway}: give the "
                              "stations' points gateway: " + self.gateway)
        self.district_tz = loaded.tz
        self.deadletters = DeadLetters(deadletter_path or self.buffer_path.with_name(
            self.buffer_path.name + ".deadletter.jsonl"))
        self.unattributed: Counter[str] = Counter()  # rejects no station can be blamed for
        self.refused_connections = 0
        self.port: int | None = None
        self.ready = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._conns: set[_Conn] = set()
        self._live: dict[str, _Conn] = {}
        self._checkers: dict[str, QualityChecker] = {}
        self._plans = {plan.point: plan for plan in self.config.points}

    # ---- lifecycle: the agent's, with a server for a south side ---------------------------------
    def _make_pollers(self) -> list[BusPoller]:
        return []  # nothing to poll: the stations call in

    async def run(self) -> None:
        listener = asyncio.create_task(self._listen())
        try:
            await super().run()
        finally:
            self._close_server()
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)

    def stop(self) -> None:
        self._close_server()  # no new readings while the agent drains its buffer
        super().stop()

    def _close_server(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            conn.writer.close()

    async def _listen(self) -> None:
        while self.buffer is None or self.link is None:  # the agent opens its buffer first
            await asyncio.sleep(0.01)
        self._server = await asyncio.start_server(self._connection, *self.listen,
                                                  limit=self.limits.max_frame_bytes + 64)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("gateway %s: listening on %s:%d for %d stations", self.gateway, self.listen[0], self.port,
                 len(self.stations))
        self.ready.set()

    def health(self) -> dict[str, dict[str, Any]]:
        """Per station for the status message (bounded: the most errors, then the silent, first), and a summary."""
        ranked = sorted(self.stats.values(), key=lambda st: (-sum(st.errors.values()), st.connected, st.station))
        out: dict[str, dict[str, Any]] = {st.station: st.as_status() for st in ranked[:self.limits.status_stations]}
        out["_receiver"] = {"stations": len(self.stats), "listed": min(len(self.stats), self.limits.status_stations),
                            "connected": sum(st.connected for st in self.stats.values()),
                            "connections": len(self._conns), "refused_connections": self.refused_connections,
                            "frames": sum(st.frames for st in self.stats.values()),
                            "readings": sum(st.readings for st in self.stats.values()),
                            "unattributed_errors": sum(self.unattributed.values()),
                            **{f"unattributed_{reason}": n for reason, n in sorted(self.unattributed.items())}}
        return out

    # ---- connections ----------------------------------------------------------------------------
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = (writer.get_extra_info("peername") or ("?", "?"))[:2]
        peer = f"{host}:{port}"
        if len(self._conns) >= self.limits.max_connections or self._stop.is_set():
            self.refused_connections += 1
            writer.close()
            return
        conn = _Conn(peer, writer)
        self._conns.add(conn)
        try:
            await self._converse(conn, reader)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the station hung up
        except Exception:
            log.exception("connection %s (station %s) failed", peer, getattr(conn.station, "id", "?"))
        finally:
            self._conns.discard(conn)
            self._unbind(conn)
            writer.close()

    async def _converse(self, conn: _Conn, reader: asyncio.StreamReader) -> None:
        timeout = self.limits.first_frame_s
        try:
            first = await asyncio.wait_for(reader.readexactly(1), timeout)
            if first[0] not in STARTS:
                rest = await asyncio.wait_for(reader.read(256), 1.0)
                self._reject(conn, None, first + rest, "bad_start", f"first byte {first[0]:02X} starts no SL 651 "
                             "frame (7E 7E, or SOH 01 in ASCII) and no SZY 206 frame (68)")
                return
            conn.protocol, conn.codec, conn.head = STARTS[first[0]]
            if conn.protocol == "sl651":
                conn.joiner = sl651.Reassembler(body_decoder=conn.codec.decode_body)
            prefix = first
            while True:
                async with asyncio.timeout(timeout):  # no task per frame, unlike wait_for
                    raw = await self._read_frame(reader, conn, prefix)
                prefix, timeout = b"", self.limits.idle_s
                if not await self._frame(conn, raw):
                    return
        except TimeoutError:
            reason = "idle" if conn.station is not None else "silent"
            self._count(conn.station, reason)
            log.info("closing %s (station %s): %s for %.0f s", conn.peer, getattr(conn.station, "id", "?"),
                     "no frame" if conn.station else "nothing sent", timeout)
        except _Unframed as exc:
            self._reject(conn, conn.station or self._claimed(conn, exc.raw), exc.raw, exc.error.reason,
                         str(exc.error))

    async def _read_frame(self, reader: asyncio.StreamReader, conn: _Conn, prefix: bytes) -> bytes:
        data = bytearray(prefix)
        if len(data) < conn.head:
            data += await reader.readexactly(conn.head - len(data))
        try:
            size = conn.codec.frame_size(bytes(data))
            if size > self.limits.max_frame_bytes:
                raise FrameError("too_long", 1, f"a frame of {size} bytes is over the receiver's bound of "
                                 f"{self.limits.max_frame_bytes}")
        except FrameError as exc:
            raise _Unframed(bytes(data), exc) from None
        data += await reader.readexactly(size - len(data))
        return bytes(data)

    async def _frame(self, conn: _Conn, raw: bytes) -> bool:
        """Handle one framed frame; False closes the connection."""
        try:
            frame = conn.codec.decode(raw)
        except FrameError as exc:
            self._reject(conn, conn.station or self._claimed(conn, raw), raw, exc.reason, str(exc))
            return True
        try:
            if conn.protocol == "sl651":
                await self._sl651(conn, frame, raw)
                return True
            return await self._szy206(conn, frame)
        except Reject as rej:
            self._reject(conn, rej.station, raw, rej.reason, rej.message, dead_letter=rej.dead_letter)
            return not rej.close

    # ---- SL 651 -----------------------------------------------------------------------------------
    async def _sl651(self, conn: _Conn, frame: sl651.Frame, raw: bytes) -> None:
        station = self._identify(conn, "sl651", frame.station)
        if not frame.uplink:
            raise Reject("bad_direction", "the station sent a downlink frame", station=station)
        if frame.password != int(station.password, 16):
            raise Reject("wrong_password", f"password {frame.password:04X} is not the one configured for station "
                         f"{station.id}", station=station, close=True)
        if frame.centre != station.centre:
            raise Reject("wrong_centre", f"centre address {frame.centre}, station {station.id} is configured "
                         f"for {station.centre}", station=station)
        self._bind(conn, station)
        self._seen_frame(station, frame.function_name)
        assert conn.joiner is not None
        try:
            whole = conn.joiner.feed(frame)
        except FrameError as exc:
            raise Reject(exc.reason, str(exc), station=station) from None
        if whole is None or whole.report is None:
            return  # more packets to come
        if whole.function == sl651.KEEP_ALIVE:
            await self._ask_clock(conn, station, whole)  # a keep-alive has no answer
            return
        report = whole.report
        key = (whole.function, report.serial, report.sent)
        off_s = None
        if key in self.stats[station.id].seen:
            self._count(station, "replayed")  # its answer was lost: answer again, store nothing twice
        elif whole.function == CLOCK_QUERY:
            off_s = self._check_clock(station, report)
            self.stats[station.id].seen.append(key)
        else:
            await self._store_parts(conn, station, report, raw)
            self.stats[station.id].seen.append(key)  # only now: a report whose storing failed is stored again
        await self._answer(conn, conn.codec.answer(whole, sent=self._station_now(station),
                                                   end=self.limits.sl651_answer_end))
        await self._ask_clock(conn, station, whole)
        if off_s is not None and self.limits.set_clock:
            await self._set_clock(conn, station, whole, off_s)

    async def _store_parts(self, conn: _Conn, station: Any, report: sl651.Report, raw: bytes) -> None:
        """Each station's part of a (multi-station) report, as the station whose address it carries."""
        device_ms = station_time_ms(report.sent, self._zone(station))
        for part in report.parts:
            own = part.station is None or part.station == station.address.upper()
            owner = station if own else self.stations.get(("sl651", part.station))
            if owner is None:
                self._reject(conn, station, raw, "unknown_station", f"a part of station {station.id}'s report is for "
                             f"address {part.station}, no station of gateway {self.gateway} in "
                             f"{self.config.district.path}: add it under stations:")
                continue
            await self._store(owner, sl651_values(owner, part, self._zone(owner)), device_ms)

    def _station_now(self, station: Any) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock.now_ms() / 1000, self._zone(station)).replace(tzinfo=None,
                                                                                                  microsecond=0)

    async def _ask_clock(self, conn: _Conn, station: Any, frame: sl651.Frame) -> None:
        """Once per connection (``Limits.clock_query``): the clock query 51; its answer is checked as it comes."""
        if not self.limits.clock_query or conn.clock_asked:
            return
        conn.clock_asked = True
        await self._answer(conn, conn.codec.query(centre=frame.centre, station=frame.station,
                                                  password=frame.password, function=CLOCK_QUERY,
                                                  sent=self._station_now(station)))

    async def _set_clock(self, conn: _Conn, station: Any, frame: sl651.Frame, off_s: float) -> None:
        for _ in range(2 if abs(off_s) > 300 else 1):  # 6.6.4.24: set twice when more than 5 minutes off
            await self._answer(conn, conn.codec.query(centre=frame.centre, station=frame.station,
                                                      password=frame.password, function=SET_CLOCK,
                                                      sent=self._station_now(station)))

    def _check_clock(self, station: Any, report: sl651.Report) -> float | None:
        """A clock query's answer: its send time is the station clock. The offset, if over the bound."""
        off_s = station_time_ms(report.sent, self._zone(station)) / 1000 - self.clock.now_ms() / 1000
        self.stats[station.id].clock_offset_s = round(off_s, 1)
        if abs(off_s) <= station.max_clock_skew_s:
            return None
        self._count(station, "clock_skew")
        log.warning("station %s: its clock is %+.0f s off the receiver's (max_clock_skew_s %s): %s", station.id,
                    off_s, station.max_clock_skew_s, "setting it (4A)" if self.limits.set_clock else
                    "set it at the RTU, or run the receiver with --set-clock")
        return off_s

    # ---- SZY 206 ----------------------------------------------------------------------------------
    async def _szy206(self, conn: _Conn, frame: szy206.Frame) -> bool:
        station = self._identify(conn, "szy206", frame.address)
        if not frame.uplink:
            raise Reject("bad_direction", "the terminal sent a downlink frame", station=station)
        self._bind(conn, station)
        self._seen_frame(station, frame.link or frame.afn_name)
        if frame.afn == szy206.AFN_LINK:
            await self._answer(conn, szy206.answer(frame))
            return frame.link != "logout"
        now = self.clock.now_ms()
        mapped = szy206_values(station, frame, self._zone(station), now)
        key = (frame.afn, frame.tp, frame.values)
        if key in self.stats[station.id].seen:
            self._count(station, "replayed")
        else:
            await self._store(station, mapped, mapped[0].ts_ms if mapped else None)
            self.stats[station.id].seen.append(key)
        return True

    # ---- shared steps -----------------------------------------------------------------------------
    def _identify(self, conn: _Conn, protocol: str, address: str) -> Any:
        station = self.stations.get((protocol, address))
        if station is None:
            raise Reject("unknown_station", f"{protocol} address {address} is no station of gateway {self.gateway} "
                         f"in {self.config.district.path}: add it under stations:", close=True)
        if conn.station is not None and conn.station.id != station.id:
            raise Reject("address_changed", f"the connection of station {conn.station.id} sent a frame as station "
                         f"{station.id} ({address})", station=conn.station, close=True)
        if not self._take_token(self.stats[station.id]):
            raise Reject("rate_limited", f"station {station.id} sends over {self.limits.rate_per_s:g} frames/s",
                         station=station, dead_letter=False)
        return station

    def _take_token(self, stats: StationStats) -> bool:
        now = time.monotonic()
        if stats.tokens < 0:
            stats.tokens = self.limits.burst
        stats.tokens = min(self.limits.burst, stats.tokens + (now - stats.tokens_at) * self.limits.rate_per_s)
        stats.tokens_at = now
        if stats.tokens < 1:
            return False
        stats.tokens -= 1
        return True

    def _bind(self, conn: _Conn, station: Any) -> None:
        """Tie the connection to the station once a frame proved it (a reconnect replaces the old one)."""
        if conn.station is not None:
            return
        old = self._live.get(station.id)
        if old is not None and old is not conn:
            log.info("station %s reconnected from %s: closing its old connection from %s", station.id, conn.peer,
                     old.peer)
            old.writer.close()
        conn.station = station
        self._live[station.id] = conn
        stats = self.stats[station.id]
        stats.connected, stats.peer = True, conn.peer

    def _unbind(self, conn: _Conn) -> None:
        if conn.station is not None and self._live.get(conn.station.id) is conn:
            del self._live[conn.station.id]
            self.stats[conn.station.id].connected = False

    def _seen_frame(self, station: Any, function: str) -> None:
        stats = self.stats[station.id]
        stats.frames += 1
        stats.last_frame_ms, stats.last_function = self.clock.now_ms(), function

    def _zone(self, station: Any) -> ZoneInfo:
        return ZoneInfo(station.timezone) if station.timezone else self.district_tz

    async def _store(self, station: Any, mapped: list[Mapped], device_ms: int | None) -> None:
        """Judge, rate and commit the readings; returns once they are in the buffer."""
        readings = [self._reading(station, m, device_ms) for m in mapped]
        if any(Flag.clock_drift in r.flags for r in readings):
            self._count(station, "clock_skew")
        for reading in readings:
            self._on_reading(station.point, reading)
        await self._flush_pending()
        self.stats[station.id].readings += len(readings)

    def _reading(self, station: Any, mapped: Mapped, device_ms: int | None) -> Reading:
        checker = self._checkers.get(station.id)
        if checker is None:
            options = self.config.quality.model_copy(update={"max_clock_drift_s": station.max_clock_skew_s})
            checker = self._checkers[station.id] = QualityChecker(options)
        now = self.clock.now_ms()
        clock = None if device_ms is None else (device_ms / 1000, now, now)
        verdict = checker.check(station.point, mapped.ts_ms, mapped.values, now_ms=now, device_clock=clock)
        plan = self._plans.get(station.point)
        if plan is not None and "flow" not in verdict.values:
            rate(plan, mapped.ts_ms, verdict)
        return verdict.reading(mapped.ts_ms)

    async def _answer(self, conn: _Conn, data: bytes | None) -> None:
        if data:
            conn.writer.write(data)
            async with asyncio.timeout(self.limits.write_timeout_s):
                await conn.writer.drain()

    def _count(self, station: Any, reason: str) -> None:
        if station is not None:
            self.stats[station.id].errors[reason] += 1
        else:
            self.unattributed[reason] += 1

    def _claimed(self, conn: _Conn, raw: bytes) -> Any:
        """The configured station whose address a rejected frame's header carries, if any."""
        if conn.codec is sl651_ascii:
            address = raw[3:13].decode("ascii", "replace").upper() if len(raw) >= 13 else ""
        else:
            start = 3 if conn.codec is sl651 else 4
            address = raw[start:start + 5].hex().upper() if len(raw) >= start + 5 else ""
        return self.stations.get((conn.protocol or "", address))

    def _reject(self, conn: _Conn, station: Any, raw: bytes, reason: str, message: str, *,
                dead_letter: bool = True) -> None:
        self._count(station, reason)
        name = getattr(station, "id", None)
        log.log(logging.DEBUG if reason == "rate_limited" else logging.WARNING, "%s (station %s): %s: %s", conn.peer,
                name or "?", reason, message)
        if dead_letter:
            self.deadletters.add(ts_ms=self.clock.now_ms(), peer=conn.peer, protocol=conn.protocol, station=name,
                                 reason=reason, message=message, raw=raw)
