"""What one edge agent polls and how: built from the district file, or from a local edge config.

Two routes lead to the same :class:`EdgeConfig`:

* ``edge_config_from_district(district, gateway)``: the gateway's points and endpoint from the
  district file; a fleet manifest may override the endpoint (host/port of the simulator).
* ``load_edge_config(path)``: an edge config YAML (``docs/edge.md``) naming the district file and
  gateway and overriding endpoint, MQTT, buffer and options, plus locally commissioned points.
  Problems are reported with file, line and field.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from canalflow.clock import SimClock
from canalflow.contract import QUANTITIES
from canalflow.errors import CanalflowError
from canalflow.mqtt import MqttTarget
from canalflow.problems import Issue, validation_issues, validation_problems
from canalflow.yamlines import Problem, YamlSyntaxError, load_yaml_data, load_yaml_with_lines

if TYPE_CHECKING:
    from canalflow.district import District

# canalflow.ratings (numpy) and canalflow.district are imported where used: a stand-alone gateway
# config with no level-only meter needs neither, and the agent's memory is budgeted.

DEFAULT_LIMITS: dict[str, tuple[float, float]] = {
    "flow": (-0.5, 300.0),
    "level": (-0.5, 20.0),
    "downstream_level": (-0.5, 20.0),
    "velocity": (-3.0, 6.0),
    "battery": (2.5, 30.0),
    "signal_quality": (0.0, 100.0),
}
# largest plausible change per simulated second (m3/s per s, m per s, ...)
DEFAULT_MAX_RATE: dict[str, float] = {"flow": 2.0, "level": 0.05, "downstream_level": 0.05, "velocity": 0.2}
# status bits (names in the meter profiles) that mean the sensor's signal is weak: flagged low_signal
DEFAULT_SIGNAL_BITS: tuple[str, ...] = (
    "no_signal", "low_signal", "poor_signal", "echo_lost", "downstream_echo_lost", "silt_on_sensor",
    "electrode_coating",
)


class ConfigError(CanalflowError, ValueError):
    """An edge config problem; the message names the file, line and field and what to try.

    Problems in a config file are :class:`canalflow.yamlines.Problem` s, printed as district,
    profile and scenario problems are: ``FILE:LINE: error: field: message (hint: ...)``."""

    def __init__(self, message: str | list[Problem]) -> None:
        self.problems = message if isinstance(message, list) else []
        super().__init__("\n".join(map(str, message)) if isinstance(message, list) else message)


def _problem(file: Path, locate: Any, path: list[str | int], message: str, hint: str = "") -> ConfigError:
    return ConfigError([Issue(tuple(path), message, hint).at(file, locate)])


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PollOptions(_Strict):
    timeout_s: float = Field(default=1.0, gt=0, description="per-request answer timeout (wall s)")
    retries: int = Field(default=1, ge=0, description="retries of a failed request before the poll fails")
    retry_backoff_s: float = Field(default=0.05, ge=0, description="first retry pause, doubling")
    breaker_failures: int = Field(default=3, ge=1, description="failed polls in a row that open the breaker")
    breaker_cooldown_s: float = Field(default=5.0, gt=0, description="first pause before a dead meter is tried again")
    breaker_max_cooldown_s: float = Field(default=300.0, gt=0)
    pause_after_connect_s: float = Field(default=0.0, ge=0)
    max_gap: int = Field(default=0, ge=0, description="unnamed registers a block read may span (meters that "
                         "refuse it fall back to named registers only)")
    max_block_words: int = Field(default=120, ge=1, le=125)


class QualityOptions(_Strict):
    limits: dict[str, tuple[float, float]] = Field(default_factory=lambda: dict(DEFAULT_LIMITS))
    max_rate_per_s: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_MAX_RATE))
    stuck_polls: int = Field(default=30, ge=2, description="identical non-zero values in a row flagged stuck")
    max_future_s: float = Field(default=300.0, gt=0, description="readings further ahead than this are flagged")
    max_clock_drift_s: float = Field(default=300.0, gt=0, description="a meter clock (register device_time) "
                                     "further than this from the edge clock flags clock_drift")
    min_signal_quality: float = Field(default=60.0, ge=0, le=100, description="signal quality (%) below this "
                                      "flags low_signal")
    signal_bits: list[str] = Field(default_factory=lambda: list(DEFAULT_SIGNAL_BITS),
                                   description="status bits flagged low_signal instead of device_alarm")

    @field_validator("limits", "max_rate_per_s", mode="after")
    @classmethod
    def _over_defaults(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        """A config names only the quantities it changes; the others keep their defaults."""
        for name in value:
            if name not in QUANTITIES:
                raise ValueError(f"unknown quantity {name!r} (known: {', '.join(QUANTITIES)})")
        defaults = DEFAULT_LIMITS if info.field_name == "limits" else DEFAULT_MAX_RATE
        return {**defaults, **value}


class BufferOptions(_Strict):
    path: str | None = None
    max_rows: int = Field(default=2_000_000, ge=100)
    max_age_h: float = Field(default=24 * 30, gt=0)
    when_full: Literal["drop_oldest", "drop_newest"] = "drop_oldest"
    synchronous: Literal["FULL", "NORMAL"] = Field(default="FULL", description="FULL survives power loss")


class PublishOptions(_Strict):
    max_inflight: int = Field(default=200, ge=1, description="unacknowledged messages at once")
    max_batch: int = Field(default=500, ge=1, le=5000, description="readings per backlog message")
    replay_rate: float = Field(default=2000.0, gt=0, description="backlog readings per wall second")
    status_interval_s: float = Field(default=10.0, gt=0)
    confirm: Literal["ingest", "broker"] = Field(
        default="ingest", description="delete a buffered reading once ingest confirms it stored (end to end), "
        "or already on the broker's PUBACK")
    confirm_timeout_s: float = Field(default=5.0, gt=0, description="floor of the wait for a confirmation before "
                                     "publishing again (adapts to ingest's measured delay)")
    resend_unconfirmed_s: float = Field(default=600.0, gt=0, description="publish again what stays unconfirmed "
                                        "this long, even while ingest confirms nothing")
    max_unconfirmed: int = Field(default=50_000, ge=1, description="readings awaiting confirmation before the "
                                 "agent stops publishing (the rest waits in the buffer)")
    drain_s: float = Field(default=5.0, ge=0, description="on stop, how long to wait for the last acknowledgements")


class MqttOptions(_Strict):
    url: str = Field(default="mqtt://127.0.0.1:1883", description="mqtt://host:port, or mqtts:// for TLS")
    username: str | None = None
    password_file: str | None = Field(default=None, description="first line is the password (chmod 600)")
    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    client_id: str | None = None
    keepalive_s: int = Field(default=30, ge=5)

    def target(self) -> MqttTarget:
        """The broker target (raises ``canalflow.mqtt.MqttConfigError`` naming what is wrong)."""
        return MqttTarget.from_url(self.url, username=self.username, password_file=self.password_file,
                                   cafile=self.cafile, certfile=self.certfile, keyfile=self.keyfile,
                                   keepalive=self.keepalive_s)


class EndpointSpec(_Strict):
    transport: Literal["tcp", "rtu", "rtu_over_tcp"] = "tcp"
    host: str = "127.0.0.1"
    port: int = Field(default=502, ge=1, le=65535)
    device: str | None = Field(default=None, description="serial port for transport rtu, e.g. /dev/ttyUSB0")
    baud: int = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1

    def target(self) -> str:
        if self.transport == "rtu":
            if not self.device:
                raise ConfigError("transport rtu needs device: (the serial port, e.g. /dev/ttyUSB0)")
            return self.device
        scheme = "tcp" if self.transport == "tcp" else "rtu+tcp"
        return f"{scheme}://{self.host}:{self.port}"


class LocalPoint(_Strict):
    """A point commissioned on this gateway (added to, or replacing, the district's point)."""

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
    unit_id: int = Field(ge=1, le=247)
    profile: str
    ratings: list[dict[str, Any]] = Field(default_factory=list)
    fast_s: float = Field(default=60.0, gt=0)
    slow_s: float = Field(default=600.0, gt=0)
    endpoint: EndpointSpec | None = Field(default=None, description="own bus/TCP meter; default the gateway's")


class EdgeConfigFile(_Strict):
    district: str | None = Field(default=None, description="district file, relative to this file")
    district_id: str | None = Field(default=None, description="without a district file: the district id")
    profile_dirs: list[str] = Field(default_factory=list, description="extra meter profile directories")
    gateway: str
    endpoint: EndpointSpec | None = None
    mqtt: MqttOptions = MqttOptions()
    buffer: BufferOptions = BufferOptions()
    poll: PollOptions = PollOptions()
    quality: QualityOptions = QualityOptions()
    publish: PublishOptions = PublishOptions()
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    timezone: str | None = Field(default=None, description="IANA zone of the meters' calendars (BCD clocks); "
                                 "default: the district's, else UTC")
    points: list[LocalPoint] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {value!r}: use an IANA name such as Asia/Shanghai") from None
        return value


@dataclass(frozen=True)
class PointPlan:
    """One meter the agent polls."""

    point: str
    unit: int
    profile: Any  # canalflow.profiles.Profile
    ratings: tuple[Any, ...] = ()  # canalflow.ratings models, versioned by valid_from
    fast_s: float = 60.0
    slow_s: float = 600.0
    endpoint: EndpointSpec | None = None  # None: the gateway's endpoint

    def rating_on(self, day: dt.date) -> Any | None:
        if not self.ratings:
            return None
        from canalflow import ratings as rt

        try:
            return rt.rating_at(self.ratings, day)
        except rt.RatingError:
            return None


@dataclass
class EdgeConfig:
    district_id: str
    gateway: str
    endpoint: EndpointSpec
    points: list[PointPlan]
    mqtt: MqttOptions = field(default_factory=MqttOptions)
    buffer: BufferOptions = field(default_factory=BufferOptions)
    poll: PollOptions = field(default_factory=PollOptions)
    quality: QualityOptions = field(default_factory=QualityOptions)
    publish: PublishOptions = field(default_factory=PublishOptions)
    metrics_port: int | None = None
    timezone: str = "UTC"  # of meter calendars that keep local time (profile type bcd_datetime)
    source: str = ""
    district: District | None = None  # None for a stand-alone edge config
    profiles: dict[str, Any] = field(default_factory=dict)

    def buffer_file(self, override: Path | str | None = None) -> Path:
        """The SQLite buffer: ``--buffer``, else ``buffer.path``, else ``edge-<district>-<gateway>.db`` here."""
        return Path(override or self.buffer.path or f"edge-{self.district_id}-{self.gateway}.db")

    def point(self, point_id: str) -> PointPlan:
        for plan in self.points:
            if plan.point == point_id:
                return plan
        raise KeyError(f"gateway {self.gateway} has no point {point_id!r} (points: {', '.join(self.point_ids)})")

    @property
    def point_ids(self) -> list[str]:
        return [p.point for p in self.points]


def edge_rating(spec: Any) -> Any:
    """A district rating spec as a ``canalflow.ratings`` model (same field names)."""
    from canalflow import ratings as rt

    data = spec.model_dump() if hasattr(spec, "model_dump") else dict(spec)
    return rt.parse_rating(data)


def load_manifest(path: Path | str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the fleet manifest: {exc}; is `canalflow fleet run "
                          f"--manifest {path}` running?") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a fleet manifest is a JSON object with district, clock and gateways")
    return data


def clock_from_manifest(path: Path | str) -> SimClock:
    data = load_manifest(path)
    try:
        return SimClock(**data["clock"])
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: field clock: expected {{sim_start_ms, wall_start_s, speed}} ({exc})") from exc


def endpoint_from_manifest(path: Path | str, gateway: str) -> tuple[EndpointSpec, dict[str, int]]:
    """The gateway's endpoint in a fleet manifest and its ``{point: unit id}`` map."""
    data = load_manifest(path)
    gateways = data.get("gateways") or {}
    if gateway not in gateways:
        raise ConfigError(f"{path}: field gateways: no gateway {gateway!r} (present: {', '.join(gateways) or 'none'})")
    entry = dict(gateways[gateway])
    units = {str(point): int(unit) for unit, point in (entry.pop("units", None) or {}).items()}
    if entry.get("transport") == "rtu" and "device" not in entry:  # the fleet names the pty `path`
        entry["device"] = entry.pop("path", None) or entry.pop("port", None)
    if entry.get("baud") is None:
        entry.pop("baud", None)
    known = set(EndpointSpec.model_fields)
    try:
        spec = EndpointSpec(**{k: v for k, v in entry.items() if k in known})
    except ValidationError as exc:  # a JSON file: no lines, but the same messages and hints
        problems = [Issue(("gateways", gateway, *i.path), i.message, i.hint).at(Path(path), lambda _: None)
                    for i in validation_issues(exc, EndpointSpec)]
        raise ConfigError(problems) from exc
    return spec, units


def refuse_station_fed(config: EdgeConfig) -> None:
    """``edge run`` polls over Modbus: a gateway whose points are fed by dial-in stations is a receiver's."""
    district = config.district
    if district is None:
        return
    fed = {s.point: s.id for s in district.spec.stations if district.points[s.point].gateway == config.gateway}
    if fed:
        listed = ", ".join(f"{point} (station {station})" for point, station in sorted(fed.items()))
        raise ConfigError(f"{district.path}: gateway {config.gateway}: points {listed} are fed by telemetry "
                          f"stations that dial in, not polled over Modbus: run `canalflow edge receive "
                          f"--district {district.path} --gateway {config.gateway}` for them (docs/stations.md)")


def _district_points(district: District, gateway: str, units: dict[str, int]) -> list[PointPlan]:
    plans = []
    for point in district.points_of_gateway(gateway):
        plans.append(PointPlan(
            point=point.id,
            unit=units.get(point.id, point.unit_id),
            profile=district.profile_of(point.id),
            ratings=tuple(edge_rating(r) for r in point.ratings),
            fast_s=point.poll.fast_s,
            slow_s=point.poll.slow_s,
        ))
    return plans


def edge_config_from_district(
    district: District | Path | str, gateway: str, *, manifest: Path | str | None = None
) -> EdgeConfig:
    """The agent config for ``gateway`` of a district (endpoint overridden by a fleet manifest)."""
    from canalflow.district import District, load_district

    if not isinstance(district, District):
        district = load_district(district)
    if gateway not in district.gateways:
        raise ConfigError(f"{district.path}: gateways: no gateway {gateway!r} "
                          f"(known: {', '.join(district.gateways)})")
    gw = district.gateways[gateway]
    endpoint = EndpointSpec(transport=gw.transport, host=gw.host, port=gw.port)
    if gw.serial is not None:
        endpoint = endpoint.model_copy(update={"device": gw.serial.port, "baud": gw.serial.baud,
                                               "parity": gw.serial.parity, "stopbits": gw.serial.stopbits})
    units: dict[str, int] = {}
    if manifest is not None:
        endpoint, units = endpoint_from_manifest(manifest, gateway)
    poll = PollOptions(timeout_s=gw.timeout_s)
    return EdgeConfig(district.id, gateway, endpoint, _district_points(district, gateway, units), poll=poll,
                      timezone=district.spec.district.timezone, source=str(district.path), district=district,
                      profiles=dict(district.profiles))


class _LazyLocator:
    """Line numbers of a YAML file, worked out only when an error needs one: a gateway with
    thousands of points should not keep the whole node tree in memory for nothing."""

    def __init__(self, file: Path) -> None:
        self.file = file
        self._locate: Any = None

    def __call__(self, path: Any) -> int | None:
        if self._locate is None:
            self._locate = load_yaml_with_lines(self.file)[1]
        return self._locate(path)


def check_edge_config_file(path: Path | str) -> tuple[EdgeConfigFile, Any]:
    file = Path(path)
    try:
        data = load_yaml_data(file)  # YamlSyntaxError names the line; size and alias limits apply
    except YamlSyntaxError as exc:
        if isinstance(exc.__cause__, OSError):
            raise ConfigError(f"{file}: cannot read the edge config: {exc.__cause__.strerror}") from exc.__cause__
        raise
    locate = _LazyLocator(file)
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: an edge config is a YAML mapping with at least gateway: and district:")
    try:
        return EdgeConfigFile.model_validate(data), locate
    except ValidationError as exc:
        raise ConfigError(validation_problems(exc, EdgeConfigFile, file, locate, docs="docs/edge.md")) from exc


def load_edge_config(path: Path | str, *, manifest: Path | str | None = None) -> EdgeConfig:
    """Load and validate an edge config file (and the district it names, if it names one).

    Without ``district:`` the config stands alone (``district_id``, ``endpoint`` and ``points``):
    a field gateway then needs only its own meters in memory, not the whole district model.
    """
    file = Path(path)
    spec, locate = check_edge_config_file(file)
    if spec.district is not None:
        config = edge_config_from_district((file.parent / spec.district).resolve(), spec.gateway, manifest=manifest)
        if spec.endpoint is not None and manifest is None:
            config.endpoint = spec.endpoint
    else:
        config = _standalone(file, spec, locate, manifest)
    plans = {p.point: p for p in config.points}
    for index, local in enumerate(spec.points):
        plans[local.id] = _local_plan(file, locate, index, local, config.profiles)
    config.points = list(plans.values())
    config.buffer, config.poll = spec.buffer, spec.poll
    config.quality, config.publish, config.metrics_port = spec.quality, spec.publish, spec.metrics_port
    config.timezone = spec.timezone or config.timezone
    config.source = str(file)
    config.mqtt = spec.mqtt.model_copy(update={k: str(file.parent / v) for k in ("password_file", "cafile", "certfile",
                                              "keyfile") if (v := getattr(spec.mqtt, k)) and not Path(v).is_absolute()})
    if spec.buffer.path and not Path(spec.buffer.path).is_absolute():
        config.buffer = spec.buffer.model_copy(update={"path": str(file.parent / spec.buffer.path)})
    return config


def _standalone(file: Path, spec: EdgeConfigFile, locate: Any, manifest: Path | str | None) -> EdgeConfig:
    from canalflow.profiles import ProfileLoadError, load_profiles

    if spec.district_id is None:
        raise _problem(file, locate, ["district"], "no district file and no district_id",
                       "name the district file, or give district_id: with endpoint: and points: for a config that "
                       "stands alone")
    endpoint = spec.endpoint if manifest is None else endpoint_from_manifest(manifest, spec.gateway)[0]
    if endpoint is None:
        raise _problem(file, locate, ["endpoint"], "without a district file, say where the meters are",
                       "e.g. endpoint: {transport: tcp, host: 192.168.1.20, port: 502}")
    try:
        profiles = load_profiles([file.parent / d for d in spec.profile_dirs])
    except ProfileLoadError as exc:
        raise _problem(file, locate, ["profile_dirs"], str(exc)) from exc
    return EdgeConfig(spec.district_id, spec.gateway, endpoint, [], profiles=dict(profiles))


def _local_plan(file: Path, locate: Any, index: int, local: LocalPoint, profiles: dict[str, Any]) -> PointPlan:
    at = ["points", index]
    if local.profile not in profiles:
        raise _problem(file, locate, [*at, "profile"], f"unknown profile {local.profile!r}",
                       f"known: {', '.join(sorted(profiles))}; `canalflow profiles check` validates a new one")
    try:
        local_ratings = tuple(edge_rating(r) for r in local.ratings)
    except (ValidationError, ValueError) as exc:
        raise _problem(file, locate, [*at, "ratings"], str(exc)) from exc
    return PointPlan(local.id, local.unit_id, profiles[local.profile], local_ratings, local.fast_s, local.slow_s,
                     local.endpoint)
