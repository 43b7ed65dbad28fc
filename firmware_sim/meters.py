"""Simulated meters: a metering point's truth, seen through its meter profile, with its errors and faults.

A :class:`Meter` answers a Modbus read at a simulated instant with register words encoded by the
profile (``canalflow.profiles``): addressing, word order, scale and unit included. Readings deviate
from truth within the profile's ``accuracy_pct``: a seeded bias per meter (up to ±0.5 × accuracy)
plus a small noise (±0.2 × accuracy) that changes every simulated second. Totalisers count the
metered flow (true volume × (1 + bias)) from a seeded offset, and roll over as the profile says.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from canalflow import ratings, units
from canalflow.clock import utc_to_wall
from canalflow.codec import TYPES, CodecError
from canalflow.district import Point
from canalflow.profiles import Profile, RegisterDef
from firmware_sim.scenario import Fault
from firmware_sim.stepfn import MS_PER_S
from firmware_sim.truth import Truth

BIAS_SHARE = 0.5  # of accuracy_pct: the largest steady error a meter gets
NOISE_SHARE = 0.2  # of accuracy_pct: the largest second-to-second noise
BATTERY_V = (3.45, 3.70)  # lithium cell of a battery meter
SIGNAL_QUALITY = (80, 99)
DAY_S = 86_400.0
# Fouling (silt, algae, scale on the transducers or electrodes) weakens the sensor's signal as it
# biases the reading: each per cent of reading drift costs this many points of signal quality.
SIGNAL_LOSS_PER_DRIFT_PCT = 10.0
# Below this signal quality a fouled meter raises its fouling status bit, like the TUF-2000M family,
# whose manual asks for Q >= 60 for a reliable measurement.
FOULING_ALARM_BELOW = 60.0
# Status bits that say "the sensor is fouled / its signal is weak", in the order a meter prefers them.
FOULING_BITS = ("electrode_coating", "silt_on_sensor", "poor_signal", "low_signal")


@dataclass(frozen=True)
class Response:
    """What a meter does with one request: words or a Modbus exception code, after ``delay_s``."""

    words: list[int] | None = None
    exception: int | None = None
    delay_s: float = 0.0
    silent: bool = False


def _mix(*parts: int) -> float:
    """A deterministic uniform number in [-1, 1) from integers (splitmix64), for per-second noise."""
    x = 0x9E3779B97F4A7C15
    for part in parts:
        x = (x ^ (part & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x = (x ^ (x >> 27)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return (x / 2.0**63) - 1.0


def _stable_key(text: str) -> int:
    """A 64-bit key that is the same in every process (``hash()`` of a str is salted per process)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class Meter:
    """One simulated device on a bus: a metering point read through its profile."""

    def __init__(self, point: Point, profile: Profile, truth: Truth, *, seed: int = 0, faults: Sequence[Fault] = ()) -> None:
        self.point = point
        self.profile = profile
        self.truth = truth
        self.flow_fn = truth.flow_fn(point.id)
        rng = random.Random(f"canalflow-fleet:{seed}:{point.id}")
        accuracy = profile.accuracy_pct / 100.0
        self.bias = rng.uniform(-BIAS_SHARE, BIAS_SHARE) * accuracy
        self.noise_amp = NOISE_SHARE * accuracy
        self.battery_v = rng.uniform(*BATTERY_V)
        self.signal_quality = rng.randint(*SIGNAL_QUALITY)
        self.noise_key = _stable_key(f"{seed}:{point.id}")
        self.total_reg = profile.by_quantity("totaliser")
        self.offset_m3 = self._initial_offset(rng)
        self.set_faults(faults)
        self.fc = profile.function_code
        self.spans = self._spans()
        # (first wire address, end, register): pydantic's computed wire_address is slow on every read
        self.layout = [(r.wire_address, r.wire_address + r.word_count, r) for r in profile.registers]
        self.valid = {a for start, count in self.spans for a in range(start, start + count)}
        self.signature = {profile.signature_address + i: w for i, w in enumerate(profile.signature.words)}
        self.last_address = max(self.valid)

    def set_faults(self, faults: Sequence[Fault]) -> None:
        """Replace the meter's fault script (one assignment, so a serving thread sees old or new)."""
        ordered = sorted(faults, key=lambda f: f.start)
        self.fault_ms = [(int(f.start.timestamp() * 1000), int(f.end.timestamp() * 1000), f) for f in ordered]
        self.faults = ordered

    # --- construction helpers ---
    def _initial_offset(self, rng: random.Random) -> float:
        if self.total_reg is None:
            return 0.0
        modulus = _modulus_si(self.total_reg)
        return rng.uniform(0.05, 0.6) * modulus if self.total_reg.rollover else rng.uniform(1_000.0, 90_000.0)

    def _spans(self) -> list[tuple[int, int]]:
        spans = [(r.wire_address, r.word_count) for r in self.profile.registers]
        spans.append((self.profile.signature_address, len(self.profile.signature.words)))
        return spans

    # --- the physics a meter sees ---
    def active_faults(self, t_ms: int) -> list[Fault]:
        return [f for start, end, f in self.fault_ms if start <= t_ms < end]

    def error(self, t_ms: int) -> float:
        """Relative error of the instantaneous reading at ``t_ms`` (bias + per-second noise)."""
        return self.bias + self.noise_amp * _mix(self.noise_key, t_ms // 1000)

    def totaliser_m3(self, t_ms: int) -> float:
        """Totaliser in SI m³ (before wrapping): counted metered volume since the last reset."""
        base, since = self.offset_m3, self.truth.epoch_ms
        for start, end, fault in self.fault_ms:
            if start > t_ms:
                break
            if fault.type == "totaliser_reset":
                base, since = 0.0, start
            elif fault.type == "rollover" and self.total_reg is not None:
                base, since = _modulus_si(self.total_reg) - self._counted(start, end), start
        return base + self._counted(since, t_ms)

    def _counted(self, t0_ms: int, t1_ms: int) -> float:
        """Metered volume a positive totaliser counts in [t0, t1] (not while powered down or reversed)."""
        volume = self.flow_fn.integral(t0_ms, t1_ms)
        for start, end, fault in self.fault_ms:
            a, b = max(start, t0_ms), min(end, t1_ms)
            if b <= a:
                continue
            if fault.type in ("power_loss", "reverse_flow"):
                volume -= self.flow_fn.integral(a, b)
            elif fault.type == "fouling":  # the reading drifts linearly, and the totaliser counts it
                volume += fault.drift_pct_per_day / 100.0 / DAY_S * self.flow_fn.moment(a, b, start)
        return volume * (1.0 + self.bias)

    def values(self, t_ms: int, registers: Sequence[RegisterDef] | None = None) -> dict[str, float]:
        """Register values (SI) by register name at simulated instant ``t_ms`` (all, or ``registers``)."""
        t_values, factor = self._reading_time_and_factor(t_ms)
        wanted = self.profile.registers if registers is None else registers
        quantities = _Quantities(self, t_values, factor, self.active_faults(t_ms) if self.fault_ms else [], t_ms)
        return {reg.name: quantities.of(reg) for reg in wanted}

    def device_clock_ms(self, t_ms: int) -> int:
        """What the meter's real-time clock says at simulated instant ``t_ms``: late by a clock drift,
        frozen with the rest of the register image while the meter is stuck."""
        clock = t_ms
        for fault in self.active_faults(t_ms) if self.fault_ms else ():
            if fault.type == "stuck":
                return int(fault.start.timestamp() * 1000)
            if fault.type == "clock_drift":
                clock -= int(fault.drift_s * MS_PER_S)
        return clock

    def fouling_pct(self, t_ms: int) -> float:
        """How far (per cent of reading) fouling has drifted the sensor at ``t_ms`` (0: clean)."""
        drift = 0.0
        for start, end, fault in self.fault_ms:
            if fault.type == "fouling" and start <= t_ms < end:
                drift += fault.drift_pct_per_day * (t_ms - start) / MS_PER_S / DAY_S
        return drift

    def signal_quality_at(self, t_ms: int) -> float:
        """Signal quality (0-100 %) at ``t_ms``: the meter's own, less what fouling costs."""
        loss = SIGNAL_LOSS_PER_DRIFT_PCT * abs(self.fouling_pct(t_ms)) if self.fault_ms else 0.0
        return max(0.0, self.signal_quality - loss)

    def _reading_time_and_factor(self, t_ms: int) -> tuple[int, float]:
        """The instant the meter's values come from (stuck, drifting clock) and its reading factor."""
        faults = self.active_faults(t_ms) if self.fault_ms else ()
        t_values = t_ms
        for fault in faults:
            if fault.type == "stuck":
                t_values = int(fault.start.timestamp() * 1000)
            elif fault.type == "clock_drift":
                t_values = t_ms - int(fault.drift_s * MS_PER_S)
        factor = 1.0 + self.error(t_values)
        for fault in faults:
            if fault.type == "fouling":
                days = (t_values - fault.start.timestamp() * 1000) / 1000 / DAY_S
                factor *= 1.0 + fault.drift_pct_per_day / 100.0 * days
            elif fault.type == "reverse_flow":
                factor = -factor
        return t_values, factor

    def representable_level(self, reg: RegisterDef, level_m: float, true_flow: float, shown_flow: float, t_ms: int) -> float:
        """The register's nearest levels around ``level_m``: the one whose rated flow is closest to the
        flow the meter means to show, unless only the other keeps the rated flow within the accuracy
        class of the true flow (a 1 mm register cannot always resolve 0.2 % of a low flow)."""
        step = _resolution_si(reg)
        if step is None:
            return level_m
        rating = self.truth.rating_at(self.point, t_ms)
        low = math.floor(level_m / step) * step
        candidates = sorted((low, low + step), key=lambda h: abs(_rated(rating, h) - shown_flow))
        tolerance = self.profile.accuracy_pct / 100.0 * true_flow
        if abs(shown_flow - true_flow) <= tolerance:  # not under a fault that means to be wrong
            for level in candidates:
                if abs(_rated(rating, level) - true_flow) <= tolerance:
                    return level
        return candidates[0]

    # --- Modbus ---
    def words(self, t_ms: int, address: int = 0, count: int | None = None) -> dict[int, int]:
        """The register image (wire address -> word) at ``t_ms``: all of it, or the registers
        overlapping ``count`` words from ``address``."""
        end = self.last_address + 1 if count is None else address + count
        wanted = [(start, reg) for start, stop, reg in self.layout if start < end and stop > address]
        image = dict(self.signature)
        values = self.values(t_ms, [reg for _, reg in wanted])
        for start, reg in wanted:
            for i, word in enumerate(_encode(reg, values[reg.name])):
                image[start + i] = word
        return image

    def respond(self, function_code: int, address: int, count: int, t_ms: int) -> Response:
        """The meter's answer to a read of ``count`` registers at ``address`` (wire, 0-based)."""
        faults = self.active_faults(t_ms)
        types = {f.type for f in faults}
        if types & {"offline", "power_loss"}:
            return Response(silent=True)
        delay = max((f.delay_s for f in faults if f.type == "slow"), default=0.0)
        for fault in faults:
            if fault.type == "exception":
                return Response(exception=fault.code, delay_s=delay)
        if function_code != self.fc:
            return Response(exception=1, delay_s=delay)  # illegal function: other table
        if count > 1 and not self.profile.block_reads:
            return Response(exception=3, delay_s=delay)  # this model reads one register per request
        if any(a not in self.valid for a in range(address, address + count)):
            return Response(exception=2, delay_s=delay)
        if "garbage" in types:
            return Response(words=[int(65536 * (_mix(self.noise_key, t_ms, a) + 1) / 2) & 0xFFFF for a in range(address, address + count)], delay_s=delay)
        image = self.words(t_ms, address, count)
        return Response(words=[image[a] for a in range(address, address + count)], delay_s=delay)


class _Quantities:
    """What a meter shows at one instant, computed only as far as the registers asked for need."""

    def __init__(self, meter: Meter, t_ms: int, factor: float, faults: Sequence[Fault], now_ms: int) -> None:
        self.meter = meter
        self.faults = faults
        self.t_ms = t_ms  # the instant the values come from (earlier under stuck or clock_drift)
        self.now_ms = now_ms  # the instant of the read
        self.factor = factor
        self.true_flow = meter.flow_fn.at(t_ms)
        self._state: Any = None
        self._total: float | None = None

    def state(self) -> Any:
        if self._state is None:
            m = self.meter
            shown = abs(self.true_flow * self.factor) if m.profile.kind == "level" else self.true_flow
            self._state = m.truth.state_for_flow(m.point.id, shown, self.t_ms)
        return self._state

    def total(self) -> float:
        if self._total is None:
            self._total = self.meter.totaliser_m3(self.t_ms)
        return self._total

    def of(self, reg: RegisterDef) -> float:
        quantity = reg.quantity
        if quantity == "flow":
            return self.true_flow * self.factor
        if quantity == "velocity":
            return (self.state().velocity_ms or 0.0) * self.factor
        if quantity == "level":
            level = self.state().level_m or 0.0
            if self.meter.profile.kind == "level" and self.true_flow > 0:
                level = self.meter.representable_level(reg, level, self.true_flow, self.true_flow * self.factor, self.t_ms)
            return level
        if quantity == "downstream_level":
            return self.state().downstream_level_m or 0.0
        if quantity == "totaliser":
            return self.total()
        if quantity is not None and (quantity.startswith("vwc_") or quantity == "rain_total"):
            return self.meter.truth.rootzone.sensor_value(self.meter.point.id, quantity, self.t_ms)
        if quantity == "battery":
            low = [f.battery_v for f in self.faults if f.type == "low_battery"]
            return min(low) if low else self.meter.battery_v
        if quantity == "signal_quality":
            return self.meter.signal_quality_at(self.now_ms)
        if quantity == "status":
            fouled = self.meter.signal_quality_at(self.now_ms) < FOULING_ALARM_BELOW
            return float(status_word(reg, self.faults, fouled=fouled))
        if reg.name == "device_time":
            seconds = self.meter.device_clock_ms(self.now_ms) // MS_PER_S
            return float(utc_to_wall(seconds, self.meter.truth.district.tz) if reg.wall_clock else seconds)
        return _diagnostic(reg.name, self.total(), self.t_ms, self.meter)


def status_word(reg: RegisterDef, faults: Sequence[Fault], *, fouled: bool = False) -> int:
    """The status register under the active faults: alarm bits by name, low battery, and the
    profile's fouling bit (the first of ``FOULING_BITS`` it declares) when ``fouled``."""
    bits = {name: bit for bit, name in (reg.bits or {}).items()}
    word = 0
    if fouled:
        name = next((n for n in FOULING_BITS if n in bits), None)
        if name is not None:
            word |= 1 << bits[name]
    for fault in faults:
        if fault.type == "alarm":
            name = fault.bit or next(iter(bits), None)
            if name in bits:
                word |= 1 << bits[name]
        elif fault.type == "low_battery":
            name = next((n for n in bits if "battery" in n), None)
            if name is not None:
                word |= 1 << bits[name]
    return word


def _resolution_si(reg: RegisterDef) -> float | None:
    """SI value of one count of an integer register (None for floats)."""
    if TYPES[reg.type].is_float:
        return None
    return reg.scale if reg.unit is None else units.to_si(reg.scale, reg.unit)[0]


def _rated(rating: ratings.Rating, level_m: float) -> float:
    return ratings.flow(rating, level_m).flow_m3s


def _modulus_si(reg: RegisterDef) -> float:
    """SI amount at which a totaliser register wraps (its profile's rollover, else the type's top)."""
    modulus = reg.rollover_modulus_si
    if modulus is not None:
        return modulus
    span = (TYPES[reg.type].max + 1) * reg.scale
    return span if reg.unit is None else units.to_si(span, reg.unit)[0]


def _diagnostic(name: str, total_m3: float, t_ms: int, meter: Meter) -> float:
    """Values of registers that publish no quantity (vendor diagnostics); 0 when unknown."""
    if name == "total_fraction":
        return total_m3 - math.floor(total_m3)
    if name == "net_total":
        return float(math.floor(total_m3))
    if name == "negative_total":
        return _reverse_volume(meter, t_ms)
    return 0.0


def _reverse_volume(meter: Meter, t_ms: int) -> float:
    volume = 0.0
    for start, end, fault in meter.fault_ms:
        if fault.type == "reverse_flow" and start < t_ms:
            volume += meter.flow_fn.integral(start, min(end, t_ms))
    return float(math.floor(volume * (1.0 + meter.bias)))


def _encode(reg: RegisterDef, value: float) -> list[int]:
    """Encode an SI value. Integer counters wrap at their modulus; other integers saturate like a
    display that pegs; floats pass as they are."""
    integer = not TYPES[reg.type].is_float
    if integer and (reg.quantity == "totaliser" or reg.name.endswith("total")):
        value = value % _modulus_si(reg)
    try:
        return reg.encode(value, clamp=integer)
    except CodecError:
        return [0] * reg.word_count
