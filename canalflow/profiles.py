"""Meter profiles: a meter model's Modbus register map as data (``canalflow/profiles/*.yaml``).

A profile says where a meter keeps each quantity, in which type, word order, scale and unit; the
edge decodes with it, the simulator encodes with it, the scanner recognises a model by its
``signature`` block. ``docs/meter-profiles.md`` documents the file format field by field.

Loading reports every problem as a :class:`ProfileError` naming file, line and field, with a
hint on how to fix it; ``canalflow profiles check`` prints them.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    computed_field,
    field_validator,
    model_validator,
)

from canalflow import codec, units
from canalflow.contract import QUANTITIES
from canalflow.errors import CanalflowError
from canalflow.problems import Issue, suggest, validation_problems
from canalflow.yamlines import Problem, YamlSyntaxError, dotted_path, load_yaml_with_lines

BUILTIN_DIR = Path(__file__).with_name("profiles")

RegisterType = Literal["int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "bcd_datetime"]
WordOrder = Literal["ABCD", "CDAB", "BADC", "DCBA"]
Quantity = Literal[tuple(QUANTITIES)]  # type: ignore[valid-type]  # the wire contract owns the list
Kind = Literal["pipe", "level", "area_velocity", "soil_moisture", "rain_gauge"]

KIND_NEEDS: dict[str, tuple[str, ...]] = {
    "pipe": ("flow",),
    "level": ("level",),
    "area_velocity": ("level", "velocity"),
    "soil_moisture": (),  # at least one vwc_<d>cm: _check_kind
    "rain_gauge": ("rain_total",),
}
# Counters that only grow and wrap at the register's maximum.
ACCUMULATING = ("totaliser", "rain_total")
# Integer registers coarser than this per count (SI) are probably missing a scale.
COARSE_RESOLUTION: dict[str, float] = {"level": 0.01, "downstream_level": 0.01, "velocity": 0.01}


class _Hinted(ValueError):
    """A validation message with a separate hint; pydantic keeps it in ``ctx['error']``."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


# ---- models -----------------------------------------------------------------------------------


# A field called `register` shadows ABCMeta.register (a class-level method no one calls on these
# models); instances read the field normally. Silence pydantic's warning about it, for them only.
warnings.filterwarnings("ignore", message='Field name "register" in "(RegisterDef|Signature)"')


class RegisterDef(BaseModel):
    """One value in the register map."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="snake_case id, unique in the file")
    register: int = Field(ge=0, description="register number as the manual counts it")
    type: RegisterType
    order: WordOrder | None = Field(default=None, description="word order; required for 32/64-bit")
    scale: float = Field(default=1.0, gt=0, description="engineering value = raw * scale")
    unit: str | None = Field(default=None, description="unit of the scaled value, see units.py")
    quantity: Quantity | None = Field(
        default=None, description="what it measures; None: diagnostic, read but not published"
    )
    group: Literal["fast", "slow"] = "fast"
    rollover: bool = Field(default=False, description="totaliser wraps at the type's maximum")
    bits: dict[int, str] | None = Field(default=None, description="status bit -> flag name")
    description: str = ""

    _addressing: int = PrivateAttr(default=0)

    @field_validator("unit")
    @classmethod
    def _canonical_unit(cls, value: str | None) -> str | None:
        # aliases (m³/h, l/s) become canonical; unknown units are reported by the profile checks
        return units.ALIASES.get(value, value) if value is not None else None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def wire_address(self) -> int:
        """Address on the wire (protocol data unit), 0-based: ``register - addressing``."""
        return self.register - self._addressing

    @computed_field  # type: ignore[prop-decorator]
    @property
    def word_count(self) -> int:
        """Number of 16-bit registers the value occupies."""
        return codec.word_count(self.type)

    @property
    def wall_clock(self) -> bool:
        """A calendar in the meter's local wall-clock time (BCD): the site's time zone converts it."""
        return self.type == codec.BCD_DATETIME

    @property
    def word_order(self) -> str:
        """The order to decode with (16-bit values without an order read as ABCD)."""
        return self.order or "ABCD"

    @property
    def si_unit(self) -> str | None:
        """The SI unit this register is published in (None for dimensionless values)."""
        return None if self.unit is None else units.si_unit_of(self.unit)

    def decode(self, words: Sequence[int]) -> float | int:
        """Register words -> value in SI units (scale and unit applied). A calendar that was never set
        (all zero) reads 0 and one that is not a date reads NaN: a meter's clock, not a failed poll."""
        if self.wall_clock:
            try:
                return codec.decode(words, self.type, self.word_order)
            except codec.CodecError:
                return 0 if not any(words) else math.nan
        value = codec.decode(words, self.type, self.word_order, self.scale)
        return value if self.unit is None else units.to_si(value, self.unit)[0]

    def encode(self, value_si: float | int, *, clamp: bool = False) -> list[int]:
        """SI value -> register words (the simulator's side); totalisers with rollover wrap."""
        value = value_si if self.unit is None else units.from_si(value_si, self.unit)
        return codec.encode(value, self.type, self.word_order, self.scale, clamp=clamp, wrap=self.rollover)

    @property
    def rollover_modulus_si(self) -> float | None:
        """SI amount after which a rolling-over totaliser restarts at 0 (None if it does not)."""
        if not self.rollover:
            return None
        info = codec.TYPES[self.type]
        span = (info.max - info.min + 1) * self.scale
        return span if self.unit is None else units.to_si(span, self.unit)[0]


class Signature(BaseModel):
    """Words at a register that identify the model to a bus scanner."""

    model_config = ConfigDict(extra="forbid")

    register: int = Field(ge=0)
    words: list[int] = Field(min_length=1, max_length=8)

    @field_validator("words")
    @classmethod
    def _sixteen_bit(cls, words: list[int]) -> list[int]:
        for word in words:
            if not 0 <= word <= 0xFFFF:
                raise _Hinted(f"signature word {word} is not 16-bit", "use 0x0000..0xFFFF")
        return words


@dataclass(frozen=True)
class ReadBlock:
    """One Modbus request: ``count`` registers from wire address ``start``."""

    start: int
    count: int
    registers: tuple[RegisterDef, ...]

    def decode(self, words: Sequence[int]) -> dict[str, float | int]:
        """The response words of this block -> ``{register name: SI value}``."""
        if len(words) != self.count:
            raise codec.CodecError(f"block at {self.start} expects {self.count} words, got {len(words)}")
        out: dict[str, float | int] = {}
        for reg in self.registers:
            offset = reg.wire_address - self.start
            out[reg.name] = reg.decode(words[offset : offset + reg.word_count])
        return out


class Profile(BaseModel):
    """A meter model's register map."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$", description="unique id used by district files")
    vendor: str = ""
    model: str = ""
    description: str = ""
    kind: Kind
    accuracy_pct: float = Field(gt=0, le=20, description="accuracy class, +/- % of reading")
    addressing: Literal[0, 1] = 0
    table: Literal["holding", "input"] = "holding"
    block_reads: bool = True
    signature: Signature
    registers: list[RegisterDef] = Field(min_length=1)

    @model_validator(mode="after")
    def _checked(self, info: ValidationInfo) -> Profile:
        for reg in self.registers:
            reg._addressing = self.addressing
        issues = _semantic_issues(self)
        collect = info.context.get("issues") if isinstance(info.context, dict) else None
        if collect is not None:
            collect.extend(issues)
        elif any(i.severity == "error" for i in issues):
            raise ValueError("; ".join(f"{dotted_path(i.path)}: {i.message}" for i in issues))
        return self

    @property
    def function_code(self) -> int:
        """Modbus read function: 3 (holding registers) or 4 (input registers)."""
        return 3 if self.table == "holding" else 4

    @property
    def signature_address(self) -> int:
        """Wire address of the signature block."""
        return self.signature.register - self.addressing

    def register_named(self, name: str) -> RegisterDef:
        """The register called ``name``; KeyError listing the names if absent."""
        for reg in self.registers:
            if reg.name == name:
                return reg
        raise KeyError(f"profile {self.name!r} has no register {name!r} ({', '.join(self.names)})")

    @property
    def names(self) -> list[str]:
        return [reg.name for reg in self.registers]

    def by_quantity(self, quantity: str) -> RegisterDef | None:
        """The register publishing ``quantity`` (each quantity appears at most once)."""
        return next((r for r in self.registers if r.quantity == quantity), None)

    @property
    def quantities(self) -> list[str]:
        return [r.quantity for r in self.registers if r.quantity is not None]

    def read_blocks(self, group: str | None = None, *, max_words: int = 120, max_gap: int = 0) -> list[ReadBlock]:
        """Plan the requests to read the registers (of one ``group``, or all).

        Adjacent registers share a request when the meter allows block reads; ``max_gap`` unused
        registers may be read in between (0: never read addresses the map does not name).
        """
        regs = sorted(
            (r for r in self.registers if group is None or r.group == group),
            key=lambda r: r.wire_address,
        )
        blocks: list[list[RegisterDef]] = []
        for reg in regs:
            current = blocks[-1] if blocks else None
            if current and self.block_reads and _fits(current, reg, max_words, max_gap):
                current.append(reg)
            else:
                blocks.append([reg])
        return [_block(b) for b in blocks]


def _end(reg: RegisterDef) -> int:
    return reg.wire_address + reg.word_count


def _fits(block: list[RegisterDef], reg: RegisterDef, max_words: int, max_gap: int) -> bool:
    end = max(_end(r) for r in block)
    return reg.wire_address - end <= max_gap and _end(reg) - block[0].wire_address <= max_words


def _block(regs: list[RegisterDef]) -> ReadBlock:
    start = regs[0].wire_address
    return ReadBlock(start, max(_end(r) for r in regs) - start, tuple(regs))


# ---- semantic checks --------------------------------------------------------------------------

PathT = tuple[str | int, ...]


def _semantic_issues(p: Profile) -> list[Issue]:
    issues: list[Issue] = []
    for check in (_check_names, _check_overlaps, _check_quantities, _check_kind, _check_signature):
        issues.extend(check(p))
    for i, reg in enumerate(p.registers):
        issues.extend(_check_register(p, i, reg))
    return issues


def _check_names(p: Profile) -> Iterable[Issue]:
    seen: dict[str, int] = {}
    for i, reg in enumerate(p.registers):
        if reg.name in seen:
            yield Issue(
                ("registers", i, "name"),
                f"duplicate register name {reg.name!r} (also registers[{seen[reg.name]}])",
                "give each register a unique name",
            )
        seen.setdefault(reg.name, i)


def _check_overlaps(p: Profile) -> Iterable[Issue]:
    indexed = sorted(enumerate(p.registers), key=lambda item: item[1].wire_address)
    for (_, a), (j, b) in itertools.pairwise(indexed):
        if b.wire_address < _end(a):
            yield Issue(
                ("registers", j, "register"),
                f"register {b.name!r} ({_span(p, b)}) overlaps {a.name!r} ({_span(p, a)})",
                f"a {a.type} takes {a.word_count} register(s); check the numbers in the manual",
            )


def _span(p: Profile, reg: RegisterDef) -> str:
    last = reg.register + reg.word_count - 1
    return f"register {reg.register}" if last == reg.register else f"registers {reg.register}-{last}"


def _check_quantities(p: Profile) -> Iterable[Issue]:
    seen: dict[str, str] = {}
    for i, reg in enumerate(p.registers):
        if reg.quantity is None:
            continue
        if reg.quantity in seen:
            yield Issue(
                ("registers", i, "quantity"),
                f"quantity {reg.quantity!r} is already published by {seen[reg.quantity]!r}",
                "a meter publishes each quantity once; drop `quantity` to keep it diagnostic",
            )
        seen.setdefault(reg.quantity, reg.name)


def _check_kind(p: Profile) -> Iterable[Issue]:
    have = set(p.quantities)
    if p.kind == "soil_moisture" and not any(q.startswith("vwc_") for q in have):
        yield Issue(("kind",), "a soil_moisture station must publish the water content of at least one depth",
                    "add a register with quantity: vwc_<depth>cm (e.g. vwc_20cm), or correct `kind`")
    for needed in KIND_NEEDS[p.kind]:
        if needed not in have:
            yield Issue(
                ("kind",),
                f"a {p.kind} meter must publish {needed!r} but no register has quantity: {needed}",
                f"add a register with quantity: {needed}, or correct `kind`",
            )


def _check_signature(p: Profile) -> Iterable[Issue]:
    if p.signature.register < p.addressing:
        yield Issue(
            ("signature", "register"),
            f"register {p.signature.register} is below the first register ({p.addressing})",
            "with addressing: 1 registers are numbered from 1",
        )


def _check_register(p: Profile, i: int, reg: RegisterDef) -> Iterable[Issue]:
    at = ("registers", i)
    wc = reg.word_count
    if reg.register < p.addressing:
        yield Issue(
            (*at, "register"),
            f"register {reg.register} is below the first register ({p.addressing})",
            "addressing: 1 means numbers start at 1 (4xxxx style)",
        )
    if _end(reg) > 0x10000:
        yield Issue((*at, "register"), f"{reg.name!r} runs past the last address 65535", "")
    if wc > 1 and reg.order is None:
        yield Issue(
            (*at, "order"),
            f"{reg.type} register {reg.name!r} needs a word order",
            "add order: ABCD, CDAB, BADC or DCBA (`canalflow edge probe` shows all four)",
        )
    if wc > 1 and not p.block_reads:
        yield Issue(
            (*at, "type"),
            f"{reg.type} spans {wc} registers but block_reads is false",
            "a meter read one register per request can only hold 16-bit values",
        )
    yield from _check_unit(at, reg)
    yield from _check_calendar(at, reg)
    yield from _check_rollover(at, reg)
    yield from _check_bits(at, reg)
    yield from _check_resolution(at, reg)


def _check_unit(at: PathT, reg: RegisterDef) -> Iterable[Issue]:
    if reg.unit is not None and reg.unit not in units.UNITS:
        yield Issue((*at, "unit"), f"unknown unit {reg.unit!r}", suggest(reg.unit, units.UNITS))
        return
    if reg.quantity is None:
        return
    try:
        units.check_unit_for_quantity(reg.unit, reg.quantity)
    except units.UnitError as exc:
        yield Issue((*at, "unit"), str(exc))


def _check_calendar(at: PathT, reg: RegisterDef) -> Iterable[Issue]:
    if not reg.wall_clock:
        return
    if reg.quantity is not None or reg.unit is not None or reg.scale != 1.0:
        yield Issue((*at, "type"), f"a {reg.type} register is a calendar, not a measured value",
                     "give it no quantity, unit or scale; name it device_time to check the meter's clock")


def _check_rollover(at: PathT, reg: RegisterDef) -> Iterable[Issue]:
    if not reg.rollover:
        return
    if reg.quantity not in ACCUMULATING:
        yield Issue(
            (*at, "rollover"),
            f"rollover on {reg.name!r}, which is not a totaliser",
            f"only quantity: {' or '.join(ACCUMULATING)} registers wrap; remove `rollover`",
        )
    elif codec.TYPES[reg.type].is_float:
        yield Issue(
            (*at, "rollover"),
            f"a {reg.type} totaliser has no fixed wrap point",
            "rollover needs an integer type (uint32 ...)",
        )


def _check_bits(at: PathT, reg: RegisterDef) -> Iterable[Issue]:
    if reg.quantity == "status" and (codec.TYPES[reg.type].is_float or reg.scale != 1.0):
        yield Issue(
            (*at, "type"), "a status bit field must be an unscaled integer", "use type: uint16 (or uint32) and no scale"
        )
    if reg.bits is None:
        return
    if reg.quantity != "status":
        yield Issue(
            (*at, "bits"),
            f"`bits` on {reg.name!r}, which is not quantity: status",
            "set quantity: status or remove `bits`",
        )
    width = 16 * reg.word_count
    for bit in reg.bits:
        if not 0 <= bit < width:
            yield Issue(
                (*at, "bits", bit),
                f"bit {bit} is outside a {width}-bit {reg.type}",
                f"bits are numbered 0..{width - 1} from the least significant",
            )


def _check_resolution(at: PathT, reg: RegisterDef) -> Iterable[Issue]:
    limit = COARSE_RESOLUTION.get(reg.quantity or "")
    if limit is None or codec.TYPES[reg.type].is_float or reg.unit is None:
        return
    step = units.to_si(reg.scale, reg.unit)[0]
    if step > limit:
        yield Issue(
            (*at, "scale"),
            f"{reg.name!r} resolves only {step:g} {reg.si_unit} per count",
            "an integer register usually counts mm or has a scale like 0.001",
            severity="warning",
        )


# ---- errors and loading -----------------------------------------------------------------------


ProfileError = Problem  # one problem in a profile file (the shared data-file problem type)


class ProfileLoadError(CanalflowError, ValueError):
    """Loading profiles failed; ``problems`` lists every error, ``warnings`` the warnings."""

    def __init__(self, problems: list[ProfileError]) -> None:
        self.problems = [p for p in problems if p.severity == "error"]
        self.warnings = [p for p in problems if p.severity == "warning"]
        super().__init__(f"{len(self.problems)} profile error(s):\n" + "\n".join(map(str, self.problems)))


@dataclass
class CheckResult:
    """Profiles that loaded, and every problem found (errors and warnings)."""

    profiles: dict[str, Profile] = field(default_factory=dict)
    problems: list[ProfileError] = field(default_factory=list)
    sources: dict[str, Path] = field(default_factory=dict)

    @property
    def errors(self) -> list[ProfileError]:
        return [p for p in self.problems if p.severity == "error"]


def load_profile_file(path: Path | str) -> tuple[Profile | None, list[ProfileError]]:
    """Load one profile file; returns the profile (None if it has errors) and its problems."""
    file = Path(path)
    try:
        data, locate = load_yaml_with_lines(file)
    except YamlSyntaxError as exc:
        return None, [exc.problem()]
    if not isinstance(data, dict):
        return None, [
            ProfileError(
                file,
                1,
                "",
                "a profile file must be a YAML mapping",
                "start with `name: my-meter`; see docs/meter-profiles.md",
            )
        ]
    issues: list[Issue] = []
    try:
        profile = Profile.model_validate(data, context={"issues": issues})
    except ValidationError as exc:
        return None, validation_problems(exc, Profile, file, locate, docs="docs/meter-profiles.md")
    problems = sorted(
        (i.at(file, locate) for i in issues),
        key=lambda p: p.line or 0,
    )
    has_error = any(p.severity == "error" for p in problems)
    return (None if has_error else profile), problems


def profile_files(dirs: Iterable[Path | str]) -> list[Path]:
    """The ``*.yaml``/``*.yml`` files of each directory (or the file itself), sorted per dir."""
    files: list[Path] = []
    for entry in map(Path, dirs):
        if entry.is_dir():
            files.extend(sorted([*entry.glob("*.yaml"), *entry.glob("*.yml")]))
        else:
            files.append(entry)
    return files


def check_files(files: Iterable[Path | str]) -> CheckResult:
    """Load every file, then check across files (unique names, distinguishable signatures)."""
    result = CheckResult()
    signatures: dict[tuple[int, int, tuple[int, ...]], str] = {}
    for file in map(Path, files):
        profile, problems = load_profile_file(file)
        result.problems.extend(problems)
        if profile is None:
            continue
        clash = _cross_file_clash(profile, result, signatures)
        if clash:
            result.problems.append(_located(file, *clash))
            continue
        result.profiles[profile.name] = profile
        result.sources[profile.name] = file
        signatures[_sig_key(profile)] = profile.name
    return result


def _sig_key(p: Profile) -> tuple[int, int, tuple[int, ...]]:
    return (p.function_code, p.signature_address, tuple(p.signature.words))


def _cross_file_clash(
    p: Profile, result: CheckResult, signatures: dict[tuple[int, int, tuple[int, ...]], str]
) -> tuple[PathT, str, str] | None:
    if p.name in result.profiles:
        return (
            ("name",),
            f"profile {p.name!r} is already defined in {result.sources[p.name]}",
            "profile names are unique across all profile directories; rename one",
        )
    other = signatures.get(_sig_key(p))
    if other is not None:
        return (
            ("signature",),
            f"same signature as profile {other!r}",
            "a scanner could not tell the two apart; use distinct signature words",
        )
    return None


def _located(file: Path, path: PathT, message: str, hint: str) -> ProfileError:
    try:
        _, locate = load_yaml_with_lines(file)
        line = locate(path)
    except YamlSyntaxError:
        line = None
    return ProfileError(file, line, dotted_path(path), message, hint)


def load_profiles(dirs: list[Path] | None = None, *, builtin: bool = True) -> dict[str, Profile]:
    """All profiles: the built-in ``canalflow/profiles/`` plus ``dirs``, keyed by name.

    Raises :class:`ProfileLoadError` listing every error if any file is wrong (warnings alone
    do not fail).
    """
    search = ([BUILTIN_DIR] if builtin else []) + list(dirs or [])
    result = check_files(profile_files(search))
    if result.errors:
        raise ProfileLoadError(result.problems)
    return result.profiles
