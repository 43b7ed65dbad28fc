"""SL 651-2014 Appendix C element identifiers a canal district meets: identifier -> symbol, name, unit.

Read from the draft for approval (报批稿) of the standard, table C.1. The definition byte that
follows an identifier in a frame carries the value's length and decimals, so this table is only
for names and units; an identifier missing here still decodes (as ``?``).
"""

from __future__ import annotations

ELEMENTS: dict[int, tuple[str, str, str]] = {
    0x01: ("AC", "section area", "m2"),
    0x02: ("AI", "air temperature", "degC"),
    0x03: ("C", "water temperature", "degC"),
    0x04: ("DR", "time step code", ""),
    0x05: ("DT", "duration", "h.mm"),
    0x06: ("ED", "daily evaporation", "mm"),
    0x07: ("EJ", "current evaporation", "mm"),
    0x08: ("FL", "air pressure", "hPa"),
    0x09: ("GH", "gate opening height", "m"),
    0x0A: ("GN", "gate number", ""),
    0x0B: ("GS", "conveyance equipment type", ""),
    0x0C: ("GT", "gate openings", ""),
    0x0D: ("GTP", "ground temperature", "degC"),
    0x0E: ("H", "groundwater depth", "m"),
    0x0F: ("HW", "wave height", "m"),
    **{0x10 + i: (f"M{d}", f"soil water content at {d} cm", "%")
       for i, d in enumerate((10, 20, 30, 40, 50, 60, 80, 100))},
    0x18: ("MST", "humidity", "%"),
    0x19: ("NS", "pumps running", ""),
    0x1A: ("P1", "1 h rain", "mm"),
    0x1B: ("P2", "2 h rain", "mm"),
    0x1C: ("P3", "3 h rain", "mm"),
    0x1D: ("P6", "6 h rain", "mm"),
    0x1E: ("P12", "12 h rain", "mm"),
    0x1F: ("PD", "daily rain", "mm"),
    0x20: ("PJ", "current rain", "mm"),
    0x21: ("PN01", "1 min rain", "mm"),
    0x22: ("PN05", "5 min rain", "mm"),
    0x23: ("PN10", "10 min rain", "mm"),
    0x24: ("PN30", "30 min rain", "mm"),
    0x25: ("PR", "storm rain", "mm"),
    0x26: ("PT", "cumulative rain", "mm"),
    0x27: ("Q", "instantaneous flow", "m3/s"),
    **{0x28 + i: (f"Q{i + 1}", f"intake flow {i + 1}", "m3/s") for i in range(8)},
    0x30: ("QA", "total flow through the gates", "m3/s"),
    0x31: ("QZ", "flow of a gate group", "m3/s"),
    0x32: ("SW", "sediment discharge", "10^4 t"),
    0x33: ("UC", "wind direction", ""),
    0x34: ("UE", "wind force", "Beaufort"),
    0x35: ("US", "wind speed", "m/s"),
    0x36: ("VA", "mean section velocity", "m/s"),
    0x37: ("VJ", "point velocity", "m/s"),
    0x38: ("VT", "supply voltage", "V"),
    0x39: ("Z", "water level", "m"),
    0x3A: ("ZB", "downstream level", "m"),
    0x3B: ("ZU", "upstream level", "m"),
    **{0x3C + i: (f"Z{i + 1}", f"intake level {i + 1}", "m") for i in range(8)},
    0x44: ("SQ", "sediment concentration", "kg/m3"),
    0x45: ("ZT", "station status and alarm bits", "bits"),
    0x46: ("pH", "pH", ""),
    0x47: ("DO", "dissolved oxygen", "mg/L"),
    0x48: ("COND", "conductivity", "uS/cm"),
    0x49: ("TURB", "turbidity", "deg"),
    **{0x58 + i: (f"WP{i + 1}", f"water pressure {i + 1}", "kPa") for i in range(8)},
    **{0x60 + i: (f"SYL{i + 1}", f"meter {i + 1} remaining volume", "m3") for i in range(8)},
    **{0x68 + i: (f"SBL{i + 1}", f"meter {i + 1} hourly volume", "m3/h") for i in range(8)},
    0x70: ("VTA", "AC phase A voltage", "V"),
    0x71: ("VTB", "AC phase B voltage", "V"),
    0x72: ("VTC", "AC phase C voltage", "V"),
    0x73: ("VIA", "AC phase A current", "A"),
    0x74: ("VIB", "AC phase B current", "A"),
    0x75: ("VIC", "AC phase C current", "A"),
    0xF4: ("DRP", "5 min rain in the hour", "mm"),
    0xF5: ("DRZ1", "5 min relative level 1 in the hour", "m"),
    **{0xF6 + i: (f"DRZ{i + 2}", f"5 min relative level {i + 2} in the hour", "m") for i in range(7)},
}

# Hour series: 12 five-minute HEX values (not BCD) -> bytes per value and the unit step.
HOUR_SERIES: dict[int, tuple[int, str]] = {0xF4: (1, "0.1"), **{code: (2, "0.01") for code in range(0xF5, 0xFD)}}

STATION_TYPES: dict[int, str] = {
    0x50: "P precipitation", 0x48: "H river", 0x4B: "K reservoir/lake", 0x5A: "Z gate/dam",
    0x44: "D pump station", 0x54: "T tidal", 0x4D: "M soil moisture", 0x47: "G groundwater",
    0x51: "Q water quality", 0x49: "I intake", 0x4F: "O outfall",
}

# Appendix B. Codes outside this table (the reserved ranges) are rejected as unknown_function.
FUNCTIONS: dict[int, str] = {
    0x2F: "keep-alive", 0x30: "test report", 0x31: "even-interval report", 0x32: "timed report",
    0x33: "extra report", 0x34: "hourly report", 0x35: "manual entry report", 0x36: "picture",
    0x37: "query real-time data", 0x38: "query period data", 0x39: "query manual entry",
    0x3A: "query elements", 0x40: "set basic configuration", 0x41: "read basic configuration",
    0x42: "set run parameters", 0x43: "read run parameters", 0x44: "query pump data",
    0x45: "query software version", 0x46: "query status and alarms", 0x47: "initialise storage",
    0x48: "factory reset", 0x49: "change password", 0x4A: "set clock", 0x4B: "set IC card state",
    0x4C: "pump control", 0x4D: "valve control", 0x4E: "gate control", 0x4F: "volume control",
    0x50: "query event log", 0x51: "query clock",
}

# Functions whose uplink body is serial, send time, station, type, observation time, elements: the
# reports, and the answers to the centre's queries of real-time (37), period (38, laid out as an
# even-interval report), chosen-element (3A) and pump (44) data (tables 43, 45, 49, 55).
REPORT_FUNCTIONS = frozenset({0x30, 0x31, 0x32, 0x33, 0x34, 0x37, 0x38, 0x3A, 0x44})

# Answers (tables 51-86) whose uplink body is serial, send time, F1 F1 + station address, then what
# the function defines: configuration parameters (40-43, appendix D), software version (45: a byte
# count and the text), password (49), switch states (4C-4F), the event record (50: 32 two-byte
# counters); kept raw in ``Report.rest``. 47, 48, 4A and 51 end after the address: a clock query's
# answer (51) carries the station clock as its send time. 46 and 4B carry the ZT status element.
ADDRESSED_FUNCTIONS = frozenset({0x40, 0x41, 0x42, 0x43, *range(0x45, 0x52)})
STATUS_FUNCTIONS = frozenset({0x46, 0x4B})
CLOCK_QUERY, SET_CLOCK = 0x51, 0x4A
