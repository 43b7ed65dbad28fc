"""What a station's ``elements:`` mapping in the district file may name (checked by ``district check``).

SL 651 elements are named by their hex identifier (``"39"`` water level, ``"FF01"`` a user-defined
element); SZY 206 terminals by the field of their real-time data (``"flow"``, ``"volume.1"`` for the
second meter's). :data:`SZY206_FIELDS` are the fields the edge's SZY 206 decoder reads (a test holds
the two to the same list), so the district check and the decoder cannot disagree.
"""

from __future__ import annotations

import re

SL651_REF = re.compile(r"^(?:[0-9A-Fa-f]{2}|[Ff]{2}[0-9A-Fa-f]{2})$")
SZY206_REF = re.compile(r"^([a-z]+)(?:\.(\d+))?$")
SL651_NOT_ELEMENTS = (0xF0, 0xF1, 0x04)  # observation time, station address, time step: headers, not values
SZY206_FIELDS = ("rain", "level", "flow", "volume", "voltage")


def element_problem(protocol: str, ref: str) -> tuple[str, str] | None:
    """Why ``ref`` names no element of ``protocol`` (message, hint), or None when it does."""
    if protocol == "sl651":
        if SL651_REF.match(ref) and int(ref, 16) not in SL651_NOT_ELEMENTS:
            return None
        return (f"{ref!r} is no SL 651 element identifier", "write the identifier as hex: '39' water level, "
                "'27' flow, '38' voltage, 'FF01' a user-defined element (docs/stations.md)")
    match = SZY206_REF.match(ref)
    names = sorted(SZY206_FIELDS)
    if match and match.group(1) in names:
        return None
    return (f"{ref!r} is no SZY 206 field", f"one of {', '.join(names)}, with .N for the N-th meter (from 0)")
