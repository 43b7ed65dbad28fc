"""Shared checks for the telemetry decoders' property tests."""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from hypothesis import strategies as st

from edge.telemetry import sl651, szy206
from edge.telemetry.errors import REASONS, FrameError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/edge, for its test kit
from edge_testkit import Collector, IngestRun

__all__ = ["Collector", "IngestRun", "decodes_or_rejects", "mutated", "sl651_report", "stations_district", "szy206_report"]

SHANGHAI = ZoneInfo("Asia/Shanghai")
SL_STATION = "0012345678"


def decodes_or_rejects(decode: Callable[[bytes], object], data: bytes) -> None:
    """``decode`` returns, or raises FrameError with a known reason and a message: nothing else escapes."""
    try:
        decode(data)
    except FrameError as exc:
        assert exc.reason in REASONS and exc.detail


def mutated(frame: bytes, data: st.DataObject, first: int, last: int) -> bytearray:
    """``frame`` with 1-4 bytes in ``first..last`` replaced by drawn values."""
    raw = bytearray(frame)
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(first, last))] = data.draw(st.integers(0, 255))
    return raw


DEMO = Path(__file__).resolve().parents[3] / "examples" / "demo-district.yaml"
RECEIVER_GATEWAY = "  - {id: RX-1, name: telemetry centre (stations dial in)}\n"
STATIONS = """
stations:
  - {id: ST-L11, name: 一斗斗口 SL 651 RTU, protocol: sl651, address: "0012345678", centre: 1, password: "1234",
     point: L11-HEAD, elements: {level: "39", battery: "38"}}
  - {id: ST-V01, name: 张庄村 SZY 206 meter, protocol: szy206, address: "5303810D00", point: V01-IN,
     elements: {flow: flow, totaliser: volume}, timezone: Asia/Chongqing}
"""


def stations_district(tmp_path: Path, *replacements: tuple[str, str], stations: str = STATIONS,
                      points: tuple[str, ...] = ("L11-HEAD", "V01-IN")) -> Path:
    """The demo district with ``points`` reached through receiver gateway RX-1, plus ``stations``."""
    text = DEMO.read_text(encoding="utf-8")
    text = text.replace("gateways:\n", "gateways:\n" + RECEIVER_GATEWAY, 1)
    for point in points:
        line = next(x for x in text.splitlines() if x.strip().startswith(f"- {{id: {point},"))
        text = text.replace(line, line.replace("gateway: GW-B1", "gateway: RX-1"), 1)
    text += stations
    unclear = [old for old, _ in replacements if text.count(old) != 1]
    assert not unclear, f"test setup: each of {unclear} must occur exactly once"
    for old, new in replacements:
        text = text.replace(old, new)
    (tmp_path / "stations-district.yaml").write_text(text, encoding="utf-8")
    return tmp_path / "stations-district.yaml"


def sl651_report(serial: int, level: str, *, password: int = 0x1234, station: str = SL_STATION,
                 sent: dt.datetime | None = None) -> bytes:
    """A timed report (32) of ST-L11: water level ``level`` m and 12.47 V, observed this minute."""
    now = dt.datetime.now(SHANGHAI).replace(tzinfo=None, microsecond=0)
    observed = now.replace(second=0)
    report = sl651.Report(serial, sent or now, station, 0x5A, observed,
                          (sl651.Element(0x39, 4, 3, value=Decimal(level), observed=observed),
                           sl651.Element(0x38, 2, 2, value=Decimal("12.47"), observed=observed)))
    return sl651.encode(centre=1, station=station, password=password, function=0x32,
                        body=sl651.encode_body(report, 0x32))


def szy206_report(flow: str, volume: int) -> bytes:
    """A C0 self-report of ST-V01 (address 5303810D00): one meter's flow and volume, time-labelled now."""
    now = dt.datetime.now(ZoneInfo("Asia/Chongqing"))
    tp = szy206.TimeLabel(now.second, now.minute, now.hour, now.day, 5)
    data = szy206.realtime_data(3, [{"flow": Decimal(flow), "volume": Decimal(volume)}], tp=tp)
    return szy206.encode(address="5303810D00", afn=szy206.AFN_REPORT, data=data, function=3)
