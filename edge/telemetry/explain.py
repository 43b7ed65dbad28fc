"""Field-by-field explanation of one frame, for ``canalflow edge decode`` (text and JSON)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from edge.telemetry import sl651, sl651_ascii, szy206
from edge.telemetry.errors import FrameError
from edge.telemetry.sl651_elements import STATION_TYPES

PROTOCOLS = ("sl651", "szy206")
CHECKS = {"sl651": "CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF), high byte first, over every byte "
                   "before the CRC",
          "szy206": "CS = CRC-8 (poly 0xE5, init 0, MSB first) over C through the last data byte"}


def parse_hex(text: str) -> bytes:
    """Hex as technicians paste it: spaces, colons, ``0x`` prefixes and case do not matter."""
    cleaned = text.replace("0x", "").replace("0X", "")
    cleaned = "".join(ch for ch in cleaned if ch not in " :-_\t\n\r,")
    try:
        return bytes.fromhex(cleaned)
    except ValueError:
        raise ValueError(f"not hex: {text[:40]!r} (give the frame as hex digits, e.g. 7E7E01...)") from None


def explain(protocol: str, frame: bytes) -> dict[str, Any]:
    """The decoded frame as a dict; raises FrameError (with the check that failed) on a reject."""
    if protocol == "sl651" and frame[:1] == bytes([sl651_ascii.SOH]):
        return _sl651_ascii(frame)
    if protocol == "sl651":
        return _sl651(frame)
    if protocol == "szy206":
        return _szy206(frame)
    raise ValueError(f"protocol {protocol!r}: one of {', '.join(PROTOCOLS)}")


def check_of(protocol: str, frame: bytes) -> dict[str, Any]:
    """Which check applies and whether it holds, computed without decoding (also for rejected frames)."""
    if protocol == "sl651" and frame[:1] == bytes([sl651_ascii.SOH]) and len(frame) >= 5:
        expected, text = sl651.crc16(frame[:-4]), frame[-4:].decode("ascii", "replace")
        return {"kind": CHECKS[protocol] + " (4 ASCII hex characters in an ASCII frame)", "expected": f"{expected:04X}",
                "got": text, "ok": text.upper() == f"{expected:04X}"}
    if protocol == "sl651" and len(frame) >= 3:
        expected, got = sl651.crc16(frame[:-2]), int.from_bytes(frame[-2:])
        return {"kind": CHECKS[protocol], "expected": f"{expected:04X}", "got": f"{got:04X}", "ok": expected == got}
    if protocol == "szy206" and len(frame) >= 5:
        expected, got = szy206.cs8(frame[3:-2]), frame[-2]
        return {"kind": CHECKS[protocol], "expected": f"{expected:02X}", "got": f"{got:02X}", "ok": expected == got}
    return {"kind": CHECKS.get(protocol, "?"), "expected": None, "got": None, "ok": False}


def _row(frame: bytes, offset: int, size: int, name: str, meaning: str) -> dict[str, Any]:
    return {"offset": offset, "hex": frame[offset:offset + size].hex(" ").upper(), "field": name, "meaning": meaning}


def _num(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def _iso(when: Any) -> str | None:
    return None if when is None else when.isoformat()


def _sl651(raw: bytes) -> dict[str, Any]:
    frame = sl651.decode(raw)
    up = frame.uplink
    first, second = ((2, "centre address", str(frame.centre)), (3, "station address", frame.station)) if up else \
        ((2, "station address", frame.station), (7, "centre address", str(frame.centre)))
    length = int.from_bytes(raw[11:13]) & 0x0FFF
    rows = [_row(raw, 0, 2, "start", "HEX/BCD frame"),
            _row(raw, first[0], 1 if up else 5, first[1], first[2]),
            _row(raw, second[0], 5 if up else 1, second[1], second[2]),
            _row(raw, 8, 2, "password", f"{frame.password:04X}"),
            _row(raw, 10, 1, "function", f"{frame.function:02X} {frame.function_name}"),
            _row(raw, 11, 2, "direction and length", f"{'uplink' if up else 'downlink'}, body {length} bytes")]
    body_at = 14
    if frame.packet:
        rows.append(_row(raw, 13, 4, "SYN and packet", f"packet {frame.packet[1]} of {frame.packet[0]}"))
        body_at = 17
    else:
        rows.append(_row(raw, 13, 1, "STX", "single-packet body"))
    report = frame.report
    elements: list[dict[str, Any]] = []
    if report is not None:
        rows += [_row(raw, body_at, 2, "serial", str(report.serial)),
                 _row(raw, body_at + 2, 6, "send time", report.sent.isoformat(sep=" "))]
        if report.station is not None:
            rows.append(_row(raw, body_at + 8, 7, "station", report.station))
        if report.station_type is not None:
            kind = STATION_TYPES.get(report.station_type, "?")
            rows += [_row(raw, body_at + 15, 1, "station type", f"{report.station_type:02X} {kind}"),
                     _row(raw, body_at + 16, 7, "observation time", _iso(report.observed) or "")]
        if report.rest:
            at = body_at + len(frame.body) - len(report.rest)
            rows.append(_row(raw, at, len(report.rest), "function data", "not decoded (see docs/stations.md)"))
        elements, element_rows = _report_rows(raw, report)
        rows += element_rows
    elif frame.packet:
        rows.append(_row(raw, body_at, len(frame.body), "body part", "one packet of a multi-packet message"))
    rows += [_row(raw, len(raw) - 3, 1, "end", frame.end_name), _row(raw, len(raw) - 2, 2, "CRC", "checks")]
    return _result(raw, frame, rows, elements, "hex")


def _report_rows(raw: bytes, report: sl651.Report | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Elements of a decoded report (both encodings), and a row per element at its offset."""
    if report is None:
        return [], []
    elements, rows = [], []
    for part, element in ((p, e) for p in report.parts for e in p.elements):
        elements.append(_sl651_element(element) | ({"station": part.station} if report.others else {}))
        shown = element.values if element.values else element.value
        rows.append(_row(raw, element.offset, 2, f"element {element.ident} {element.symbol}",
                         f"{element.name} = {shown} {element.unit}".rstrip()))
    return elements, rows


def _result(raw: bytes, frame: sl651.Frame, rows: list[dict[str, Any]], elements: list[dict[str, Any]],
            encoding: str) -> dict[str, Any]:
    report = frame.report
    return {"protocol": "sl651", "encoding": encoding, "direction": "uplink" if frame.uplink else "downlink",
            "function": f"{frame.function:02X}", "function_name": frame.function_name, "station": frame.station,
            "centre": frame.centre, "serial": report.serial if report else None,
            "sent": _iso(report.sent) if report else None,
            "observed": _iso(report.observed) if report else None, "elements": elements,
            "check": check_of("sl651", raw), "fields": rows}


def _sl651_ascii(raw: bytes) -> dict[str, Any]:
    frame = sl651_ascii.decode(raw)
    up = frame.uplink
    first, second = ((1, 2, "centre address", str(frame.centre)), (3, 10, "station address", frame.station)) if up \
        else ((1, 10, "station address", frame.station), (11, 2, "centre address", str(frame.centre)))
    rows = [_row(raw, 0, 1, "SOH", "ASCII frame"), _row(raw, *first), _row(raw, *second),
            _row(raw, 13, 4, "password", f"{frame.password:04X}"),
            _row(raw, 17, 2, "function", f"{frame.function:02X} {frame.function_name}"),
            _row(raw, 19, 4, "direction and length", f"{'uplink' if up else 'downlink'}, body "
                 f"{int(raw[20:23], 16)} bytes")]
    body_at = 24 if frame.packet is None else 30
    rows.append(_row(raw, 23, body_at - 23, "STX" if frame.packet is None else "SYN and packet",
                     "single-packet body" if frame.packet is None else f"packet {frame.packet[1]} of "
                     f"{frame.packet[0]}"))
    rows.append({"offset": body_at, "hex": "", "field": "body", "meaning": frame.body.decode("ascii", "replace")})
    elements, element_rows = _report_rows(raw, frame.report)
    rows += element_rows
    rows += [_row(raw, len(raw) - 5, 1, "end", frame.end_name), _row(raw, len(raw) - 4, 4, "CRC", "checks")]
    return _result(raw, frame, rows, elements, "ascii")


def _sl651_element(element: sl651.Element) -> dict[str, Any]:
    out: dict[str, Any] = {"code": element.ident, "symbol": element.symbol, "name": element.name,
                           "unit": element.unit, "observed": _iso(element.observed)}
    if element.values:
        out["values"] = [_num(v) for v in element.values]
        out["step_s"] = element.step_s
    else:
        out["value"] = _num(element.value)
    return out


def _szy206(raw: bytes) -> dict[str, Any]:
    frame = szy206.decode(raw)
    address_at = 5 if frame.divs is not None else 4
    rows = [_row(raw, 0, 3, "start, L, start", f"L = {raw[1]} bytes of C, address and user data"),
            _row(raw, 3, 1, "control C", f"{'uplink' if frame.uplink else 'downlink'}, frame count "
                 f"{frame.frame_count}, function {frame.function} {frame.function_name}")]
    if frame.divs is not None:
        rows.append(_row(raw, 4, 1, "DIVS", f"split frame, {frame.divs} to go"))
    rows += [_row(raw, address_at, 5, "address", f"region {frame.region}, station {frame.station_number}"),
             _row(raw, address_at + 5, 1, "AFN", f"{frame.afn:02X} {frame.afn_name}")]
    if frame.link:
        rows.append(_row(raw, address_at + 6, 1, "link", frame.link))
    elements = [{"code": v.name, "name": v.name, "value": _num(v.value), "unit": v.unit, "group": v.index}
                for v in frame.values]
    for value in frame.values:
        size = next(s.size for s in frame.specs if s.name == value.name)
        rows.append(_row(raw, value.offset, size, value.name, f"{value.value} {value.unit}"))
    observed = None
    if frame.tp:
        tp = frame.tp
        date = f"day {tp.day:02d}" if tp.month is None else f"{tp.year}-{tp.month:02d}-{tp.day:02d}"
        observed = f"{date} {tp.hour:02d}:{tp.minute:02d}:{tp.second:02d}"
        tp_at = len(raw) - 2 - tp.size
        rows += [_row(raw, tp_at - 4, 2, "alarm", f"{frame.alarm:04X}"),
                 _row(raw, tp_at - 2, 2, "terminal state", f"{frame.state:04X}"),
                 _row(raw, tp_at, tp.size, "time label TP", f"{observed}, delay {tp.delay_min} min")]
    rows += [_row(raw, len(raw) - 2, 1, "CS", "checks"), _row(raw, len(raw) - 1, 1, "end", "16")]
    return {"protocol": "szy206", "direction": "uplink" if frame.uplink else "downlink",
            "function": f"{frame.afn:02X}", "function_name": frame.afn_name, "control_function": frame.function,
            "station": frame.address, "serial": frame.frame_count, "sent": None, "observed": observed,
            "link": frame.link, "alarm": frame.alarm, "state": frame.state, "elements": elements,
            "check": check_of("szy206", raw), "fields": rows}


def render(result: dict[str, Any]) -> str:
    """The technician's text view of :func:`explain`'s result."""
    lines = [f"{result['protocol']} {result['direction']} frame: function {result['function']} "
             f"{result['function_name']}, station {result['station']}"]
    check = result["check"]
    lines.append(f"check: {check['kind']}: computed {check['expected']}, frame has {check['got']} -> "
                 f"{'OK' if check['ok'] else 'MISMATCH'}")
    for row in result["fields"]:
        lines.append(f"  {row['offset']:4d}  {row['hex']:<24} {row['field']:<22} {row['meaning']}")
    return "\n".join(lines)


def render_error(protocol: str, frame: bytes, exc: FrameError) -> str:
    check = check_of(protocol, frame)
    return (f"rejected: {exc.reason} at byte {exc.offset}: {exc.detail}\n"
            f"check: {check['kind']}: computed {check['expected']}, frame has {check['got']}")
