"""The one table of engineering units canalflow accepts, and their conversion to SI.

Meter profiles name the unit a register holds (``m3/h``, ``mm``, ``L/s`` ...); everything on the
wire and in InfluxDB is SI (flow m³/s, level m, velocity m/s, totaliser m³). Conversions are pure
factors (no offsets), so ``from_si(to_si(x, u)[0], u) == x`` up to float rounding.

The quantities a meter can report, with the SI unit each is published in, live here too, so a
profile's ``unit`` can be checked against its ``quantity`` in one place.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from canalflow.contract import QUANTITIES
from canalflow.errors import CanalflowError


@dataclass(frozen=True)
class Unit:
    """A unit: its SI counterpart and the factor that takes a value into it."""

    name: str
    si_unit: str
    factor: float


_UNITS: tuple[Unit, ...] = (
    # flow
    Unit("m3/s", "m3/s", 1.0),
    Unit("m3/h", "m3/s", 1.0 / 3600.0),
    Unit("m3/min", "m3/s", 1.0 / 60.0),
    Unit("L/s", "m3/s", 1.0e-3),
    # length (level, downstream level)
    Unit("m", "m", 1.0),
    Unit("cm", "m", 1.0e-2),
    Unit("mm", "m", 1.0e-3),
    # velocity
    Unit("m/s", "m/s", 1.0),
    Unit("cm/s", "m/s", 1.0e-2),
    Unit("mm/s", "m/s", 1.0e-3),
    # volume (totaliser)
    Unit("m3", "m3", 1.0),
    Unit("L", "m3", 1.0e-3),
    # volumetric water content (soil moisture)
    Unit("m3/m3", "m3/m3", 1.0),
    Unit("vol%", "m3/m3", 1.0e-2),
    # electrical, ratio
    Unit("V", "V", 1.0),
    Unit("%", "%", 1.0),
)

UNITS: dict[str, Unit] = {unit.name: unit for unit in _UNITS}

# Spellings seen in vendor manuals, mapped to the canonical name above.
ALIASES: dict[str, str] = {
    "m³/s": "m3/s",
    "m³/h": "m3/h",
    "m³/min": "m3/min",
    "l/s": "L/s",
    "m³": "m3",
    "m³/m³": "m3/m3",
    "l": "L",
    "v": "V",
}

# quantity -> SI unit it is published in (None: dimensionless, e.g. a bit field); the wire
# contract owns the list of quantities.
QUANTITY_SI_UNIT: dict[str, str | None] = {q: (None if unit == "bits" else unit) for q, unit in QUANTITIES.items()}


class UnitError(CanalflowError, ValueError):
    """An unknown unit, or a unit that does not fit the quantity it is used for."""


def canonical(unit: str) -> str:
    """The canonical spelling of ``unit``; raises UnitError with a suggestion if unknown."""
    if unit in UNITS:
        return unit
    if unit in ALIASES:
        return ALIASES[unit]
    close = difflib.get_close_matches(unit, list(UNITS), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise UnitError(f"unknown unit {unit!r}{hint} (known: {', '.join(UNITS)})")


def get_unit(unit: str) -> Unit:
    """The Unit record for a name or alias."""
    return UNITS[canonical(unit)]


def to_si(value: float, unit: str) -> tuple[float, str]:
    """Convert ``value`` in ``unit`` to SI; returns ``(value_si, si_unit)``."""
    record = get_unit(unit)
    if record.factor == 1.0:
        return value, record.si_unit
    return value * record.factor, record.si_unit


def from_si(value: float, unit: str) -> float:
    """Convert an SI ``value`` into ``unit`` (the inverse of :func:`to_si`)."""
    record = get_unit(unit)
    if record.factor == 1.0:
        return value
    return value / record.factor


def si_unit_of(unit: str) -> str:
    """The SI unit a unit converts to (``m3/h`` -> ``m3/s``)."""
    return get_unit(unit).si_unit


def check_unit_for_quantity(unit: str | None, quantity: str) -> None:
    """Raise UnitError if ``unit`` cannot express ``quantity`` (e.g. ``mm`` for a flow)."""
    if quantity not in QUANTITY_SI_UNIT:
        raise UnitError(f"unknown quantity {quantity!r} (known: {', '.join(QUANTITY_SI_UNIT)})")
    expected = QUANTITY_SI_UNIT[quantity]
    if expected is None:
        if unit is not None:
            raise UnitError(f"quantity {quantity!r} is dimensionless; remove unit {unit!r}")
        return
    if unit is None:
        raise UnitError(f"quantity {quantity!r} needs a unit convertible to {expected}")
    if si_unit_of(unit) != expected:
        fits = [u.name for u in _UNITS if u.si_unit == expected]
        raise UnitError(f"unit {unit!r} does not measure {quantity} (use one of: {', '.join(fits)})")
