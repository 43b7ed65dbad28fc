"""The four canalflow dashboards of a district, built with the Grafana Foundation SDK.

``build_dashboards(district, locale)`` returns the dashboard JSON (dicts, as Grafana stores them).
Names of measurements, tags and fields come from ``canalflow.contract``; thresholds come from the district file's
policy targets, tolerances and tariff bands.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from grafana_foundation_sdk.builders import barchart, bargauge, geomap, stat, statetimeline, table, timeseries
from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash_b
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as dash

from canalflow import contract
from canalflow.contract import QUANTITIES, M, Quality
from canalflow.district import CanalLevel, District, Plot, PointRole
from dashboards.influxql import DATASOURCE_TYPE, InfluxQL
from dashboards.layout import gazetteer_path
from dashboards.queries import (
    TIME_FILTER,
    district_filter,
    ident,
    literal,
    select,
    show_tag_values,
    tag_in,
    var_match,
)
from dashboards.texts import Texts

DATASOURCE_UID = "canalflow-influxdb"
DATASOURCE = dash.DataSourceRef(type_val=DATASOURCE_TYPE, uid=DATASOURCE_UID)
DASHBOARD_KINDS = ("overview", "network", "billing", "health")
# SI units of the contract -> Grafana unit ids.
GRAFANA_UNITS = {"m3/s": "flowcms", "m": "lengthm", "m/s": "velocityms", "m3": "m3", "V": "volt", "%": "percent", "bits": "none"}
UNIT_M3 = GRAFANA_UNITS["m3"]
UNIT_YUAN = "prefix:¥"
QUALITY_COLOURS = {Quality.good: "green", Quality.suspect: "yellow", Quality.estimated: "blue", Quality.bad: "red"}
MAX_QCODE = max(q.code for q in Quality)


def uid_for(district_id: str, kind: str) -> str:
    return f"cf-{district_id}-{kind}"[:40]


@dataclass(frozen=True)
class Thresholds:
    """Policy numbers the dashboards colour against, all taken from the district file."""

    eta_system: float
    eta_field: float
    loss_factor: float
    quota_bands: tuple[float, ...]  # use/quota fractions where the tariff's bands change

    @classmethod
    def of(cls, district: District) -> Thresholds:
        bands: list[float] = []
        for tariff in district.spec.tariffs:
            bands += [float(b.up_to) for b in tariff.bands if b.up_to is not None]
        return cls(
            eta_system=district.spec.targets.canal_system,
            eta_field=district.spec.targets.field,
            loss_factor=district.spec.tolerances.loss_anomaly_factor,
            quota_bands=tuple(sorted(set(bands))) or (1.0,),
        )


# ---------------------------------------------------------------------------------------------
# Small typed helpers over the SDK


def steps(base: str, *levels: tuple[float, str]) -> dash_b.ThresholdsConfig:
    """Absolute thresholds: ``base`` colour below the first level, then each (value, colour)."""
    return (
        dash_b.ThresholdsConfig()
        .mode(dash.ThresholdsMode.ABSOLUTE)
        .steps([dash.Threshold(value=None, color=base), *(dash.Threshold(value=v, color=c) for v, c in levels)])
    )


def quality_mapping() -> list[dash.ValueMapping]:
    options = {str(q.code): dash.ValueMappingResult(text=q.value, color=QUALITY_COLOURS[q], index=q.code) for q in Quality}
    return [dash.ValueMap(options=options)]


def link_mapping() -> list[dash.ValueMapping]:
    return [
        dash.ValueMap(
            options={
                contract.STATE_ONLINE: dash.ValueMappingResult(text=contract.STATE_ONLINE, color="green", index=0),
                contract.STATE_OFFLINE: dash.ValueMappingResult(text=contract.STATE_OFFLINE, color="red", index=1),
            }
        )
    ]


def legend() -> common_b.VizLegendOptions:
    return common_b.VizLegendOptions().show_legend(True).display_mode(common.LegendDisplayMode.LIST).placement(common.LegendPlacement.BOTTOM)


def stat_panel() -> stat.Panel:
    return stat.Panel().graph_mode(common.BigValueGraphMode.NONE).color_mode(common.BigValueColorMode.VALUE)


def table_panel(*, hide_time: bool = False) -> table.Panel:
    panel = table.Panel().show_header(True)
    if hide_time:  # aggregates over the whole range carry the range start as time: not worth a column
        panel.with_transformation(dash.DataTransformerConfig(id_val="organize", options={"excludeByName": {"Time": True}}))
    return panel


def timeseries_panel() -> timeseries.Panel:
    return timeseries.Panel().legend(legend()).line_width(1).fill_opacity(10)


def timeline_panel() -> statetimeline.Panel:
    return statetimeline.Panel().legend(legend()).show_value(common.VisibilityMode.AUTO).fill_opacity(80)


def barchart_panel() -> barchart.Panel:
    return barchart.Panel().legend(legend()).fill_opacity(80).show_value(common.VisibilityMode.AUTO)


def q(ref_id: str, query: str, *, as_table: bool = False) -> InfluxQL:
    target = InfluxQL(ref_id, query).datasource(DATASOURCE)
    return target.table() if as_table else target


class Board:
    """A dashboard under construction: panels are laid out left to right in rows of 24 columns."""

    def __init__(self, district: District, kind: str, texts: Texts, thresholds: Thresholds) -> None:
        self.district = district
        self.kind = kind
        self.t = texts
        self.limits = thresholds
        self.builder = (
            dash_b.Dashboard(f"{district.name} · {texts(kind + '.title')}")
            .uid(uid_for(district.id, kind))
            .tags(["canalflow", district.id, kind])
            .timezone(district.spec.district.timezone)
            .time("now-7d", "now")
            .refresh("1m")
            .tooltip(dash.DashboardCursorSync.CROSSHAIR)
            .readonly()
        )
        self._x = 0
        self._y = 0
        self._row_height = 0
        self._next_id = 1

    def add(self, panel: Any, width: int, height: int) -> None:
        if self._x + width > 24:
            self._x, self._y, self._row_height = 0, self._y + self._row_height, 0
        panel.id(self._next_id).grid_pos(dash.GridPos(h=height, w=width, x=self._x, y=self._y)).datasource(DATASOURCE)
        self._next_id += 1
        self._x += width
        self._row_height = max(self._row_height, height)
        self.builder.with_panel(panel)

    def variable(self, variable: cogbuilder.Builder[dash.VariableModel]) -> None:
        self.builder.with_variable(variable)

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(self.builder.build(), cls=JSONEncoder))


# ---------------------------------------------------------------------------------------------
# Template variables


def query_variable(name: str, label: str, query: str, *, multi: bool, current: str | None = None) -> dash_b.QueryVariable:
    variable = (
        dash_b.QueryVariable(name)
        .label(label)
        .query(query)
        .datasource(DATASOURCE)
        .refresh(dash.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dash.VariableSort.ALPHABETICAL_ASC)
    )
    if multi:
        variable.multi(True).include_all(True).current(dash.VariableOption(selected=True, text=["All"], value=["$__all"]))
    elif current is not None:
        variable.current(dash.VariableOption(selected=True, text=current, value=current))
    return variable


def district_variable(board: Board) -> None:
    board.variable(
        query_variable("district", board.t("var.district"), show_tag_values(M.readings, "district"), multi=False, current=board.district.id)
    )


def canal_variable(board: Board) -> None:
    query = show_tag_values(M.readings, "canal", [district_filter()])
    board.variable(query_variable("canal", board.t("var.canal"), query, multi=True))


def township_and_unit_variables(board: Board) -> None:
    townships = show_tag_values(M.billing, "township", [district_filter()])
    units = show_tag_values(M.billing, "unit", [district_filter(), var_match("township", "township")])
    board.variable(query_variable("township", board.t("var.township"), townships, multi=True))
    board.variable(query_variable("unit", board.t("var.unit"), units, multi=True))


def season_start_ms(season_start: dt.date, timezone: str) -> int:
    from zoneinfo import ZoneInfo

    start = dt.datetime.combine(season_start, dt.time(0), tzinfo=ZoneInfo(timezone))
    return int(start.timestamp() * 1000)


def current_season(district: District, today: dt.date) -> str | None:
    seasons = sorted(district.spec.seasons, key=lambda s: s.start)
    started = [s for s in seasons if s.start <= today]
    return (started[-1] if started else seasons[0]).id if seasons else None


def season_at(district: District, now_ms: int) -> dict[str, list[str]]:
    """The ``season`` variable as Grafana would default it on the day of ``now_ms`` (for check/preview of simulated time)."""
    from zoneinfo import ZoneInfo

    tz = district.spec.district.timezone
    today = dt.datetime.fromtimestamp(now_ms / 1000, ZoneInfo(tz)).date()
    season_id = current_season(district, today)
    if season_id is None:
        return {}
    return {"season": [str(season_start_ms(district.seasons[season_id].start, tz))]}


def season_variable(board: Board, today: dt.date) -> None:
    """Custom variable: text = season id, value = its start in epoch ms (used as ``${season}ms``)."""
    tz = board.district.spec.district.timezone
    options = [(s.id, str(season_start_ms(s.start, tz))) for s in board.district.spec.seasons]
    if not options:
        options = [("all", "0")]
    chosen = current_season(board.district, today) or options[0][0]
    value = dict(options)[chosen]
    board.variable(
        dash_b.CustomVariable("season")
        .label(board.t("var.season"))
        .values(",".join(f"{text} : {value}" for text, value in options))
        .current(dash.VariableOption(selected=True, text=chosen, value=value))
        .options([dash.VariableOption(selected=text == chosen, text=text, value=v) for text, v in options])
    )


# ---------------------------------------------------------------------------------------------
# Queries shared by several panels


def head_diversion_points(district: District) -> list[str]:
    """Points measuring what the main canals take at the headworks."""
    points = []
    for canal in district.spec.canals:
        if canal.level is CanalLevel.main and canal.source in district.headworks:
            point = district.diversion_point(canal.id)
            if point is not None:
                points.append(point.id)
    return points


def volume_sum(board: Board, interval: str, time_clause: str) -> str:
    where = [district_filter(), f"{ident('interval')} = {literal(interval)}", tag_in("point", head_diversion_points(board.district)), time_clause]
    return select([(f"sum({ident(contract.VOLUME_FIELD)})", "volume_m3")], M.volume, where)


def role_is(role: PointRole) -> str:
    return f"{ident('role')} = {literal(role.value)}"


# ---------------------------------------------------------------------------------------------
# Dashboards


def overview(board: Board, today: dt.date) -> None:
    t, limits, district = board.t, board.limits, board.district
    district_variable(board)
    season_variable(board, today)
    diverted_today = volume_sum(board, contract.INTERVAL_HOUR, TIME_FILTER)
    board.add(stat_panel().title(t("overview.diversion_today")).with_target(q("A", diverted_today)).unit(UNIT_M3).time_from("now/d").decimals(0), 6, 5)
    diverted_season = volume_sum(board, contract.INTERVAL_DAY, "time >= ${season}ms AND time <= ${__to}ms")
    board.add(stat_panel().title(t("overview.diversion_season")).with_target(q("A", diverted_season)).unit(UNIT_M3).decimals(0), 6, 5)
    eta = select(
        [(f"last({ident('eta')})", "eta")], M.efficiency,
        [district_filter(), f"{ident('scope')} = {literal(contract.SCOPE_SYSTEM)}", TIME_FILTER],
    )
    board.add(
        stat_panel().title(t("overview.eta_system", target=f"{limits.eta_system:.2f}")).with_target(q("A", eta))
        .unit("percentunit").decimals(3).min(0).max(1).thresholds(steps("red", (limits.eta_system, "green"))),
        6, 5,
    )
    alarms = dash_b.Panel().type("alertlist").title(t("overview.alarms")).options(
        {"viewMode": "list", "groupMode": "default", "maxItems": 20, "sortOrder": 1, "stateFilter": {"firing": True, "pending": True},
         "alertInstanceLabelFilter": "", "dashboardAlerts": False, "showInstances": True}
    )
    board.add(alarms, 6, 5)
    last_by_point = select(
        [(f"last({ident('qcode')})", "qcode"), (f"last({ident('flow')})", "flow")], M.readings,
        [district_filter(), TIME_FILTER], group_by=("point", "role", "canal"),
    )
    marker = (
        common_b.MapLayerOptions().type("markers").name("points")
        .location(common_b.FrameGeometrySource().mode(common.FrameGeometrySourceMode.LOOKUP).lookup("point").gazetteer(gazetteer_path(district.id)))
        .config({"showLegend": True, "style": {"size": {"fixed": 8}, "color": {"field": "qcode", "fixed": "green"}, "symbol": {"fixed": "img/icons/marker/circle.svg", "mode": "fixed"}}})
        .tooltip(True)
    )
    board.add(
        geomap.Panel().title(t("overview.map")).with_target(q("A", last_by_point, as_table=True))
        .view(geomap.MapViewConfig().id("fit").all_layers(True)).layers([marker])
        .thresholds(steps("green", *((float(q_.code), QUALITY_COLOURS[q_]) for q_ in Quality if q_.code > 0))),
        12, 12,
    )
    board.add(
        table_panel(hide_time=True).title(t("overview.points_table")).with_target(q("A", last_by_point, as_table=True))
        .override_by_name("qcode", [dash.DynamicConfigValue(id_val="mappings", value=quality_mapping())])
        .override_by_name("flow", [dash.DynamicConfigValue(id_val="unit", value=GRAFANA_UNITS[QUANTITIES["flow"]])]),
        12, 12,
    )
    head_flow = select(
        [(f"mean({ident('flow')})", "flow")], M.readings,
        [district_filter(), role_is(PointRole.diversion), TIME_FILTER], group_by=("point",), time_bucket="$__interval", fill="null",
    )
    board.add(timeseries_panel().title(t("overview.flow_heads")).with_target(q("A", head_flow)).unit(GRAFANA_UNITS[QUANTITIES["flow"]]), 12, 8)
    eta_trend = select(
        [(f"mean({ident('eta')})", "eta")], M.efficiency,
        [district_filter(), f"{ident('scope')} = {literal(contract.SCOPE_SYSTEM)}", TIME_FILTER], time_bucket="1d", fill="none", tz=board.district.spec.district.timezone,
    )
    board.add(
        timeseries_panel().title(t("overview.eta_trend")).with_target(q("A", eta_trend)).unit("percentunit").min(0).max(1)
        .thresholds(steps("red", (limits.eta_system, "green"))).thresholds_style(common_b.GraphThresholdsStyleConfig().mode(common.GraphTresholdsStyleMode.LINE)),
        12, 8,
    )
    anomalies = select(
        [(ident("canal"), "canal"), (ident("reach"), "reach"), (ident("loss_m3"), "loss_m3"), (ident("expected_loss_m3"), "expected_loss_m3")],
        M.balance, [district_filter(), f"{ident('anomaly')} = true", TIME_FILTER], tail="ORDER BY time DESC LIMIT 100",
    )
    board.add(table_panel().title(t("overview.anomalies")).with_target(q("A", anomalies, as_table=True)).unit(UNIT_M3), 12, 8)
    if not board.district.spec.plots:
        return  # η_f per unit is measured on typical plots: no plots, no panel (never an empty one)
    field_units = select(
        [(f"last({ident('eta')})", "eta")], M.efficiency,
        [district_filter(), f"{ident('scope')} = {literal(contract.SCOPE_FIELD_UNIT)}", TIME_FILTER], group_by=("unit",),
    )
    board.add(
        bargauge.Panel().title(t("overview.eta_field_units", target=f"{limits.eta_field:.2f}")).with_target(q("A", field_units))
        .unit("percentunit").min(0).max(1).thresholds(steps("red", (limits.eta_field, "green"))).orientation(common.VizOrientation.HORIZONTAL),
        12, 8,
    )
    for plot in board.district.spec.plots:
        plot_moisture(board, plot)


def plot_moisture(board: Board, plot: Plot) -> None:
    """A typical plot's water content at each depth within its wetting depth, against its wilting
    point (below: the crop is stressed) and field capacity (above: the water drains below the roots)."""
    if plot.station is None:
        return
    depths = [d for d in plot.depths_cm if d <= plot.wetting_depth_m * 100]
    moisture = select(
        [(f"mean({ident(f'vwc_{d}cm')})", f"{d} cm") for d in depths], M.readings,
        [district_filter(), tag_in("point", [plot.station]), TIME_FILTER], time_bucket="$__interval", fill="null",
    )
    title = board.t("overview.plot_moisture", plot=plot.id, crop=board.district.crops[plot.crop].name or plot.crop,
                    wp=f"{plot.wilting_point:.0%}", fc=f"{plot.field_capacity:.0%}")
    board.add(
        timeseries_panel().title(title).with_target(q("A", moisture)).unit("percentunit").min(0).max(min(1.0, plot.field_capacity + 0.1))
        .thresholds(steps("red", (plot.wilting_point, "green"), (plot.field_capacity, "blue")))
        .thresholds_style(common_b.GraphThresholdsStyleConfig().mode(common.GraphTresholdsStyleMode.LINE)),
        12, 8,
    )


def balance_where() -> list[str]:
    return [district_filter(), var_match("canal", "canal"), f"{ident('interval')} = {literal(contract.INTERVAL_DAY)}", TIME_FILTER]


def network(board: Board) -> None:
    t, limits = board.t, board.limits
    district_variable(board)
    canal_variable(board)
    daily = select(
        [(f"sum({ident('in_m3')})", "in_m3"), (f"sum({ident('out_m3')})", "out_m3"), (f"sum({ident('loss_m3')})", "loss_m3")],
        M.balance, balance_where(), group_by=("canal", "reach"), time_bucket="1d", fill="none", tz=board.district.spec.district.timezone,
    )
    board.add(timeseries_panel().title(t("network.balance")).with_target(q("A", daily)).unit(UNIT_M3).draw_style(common.GraphDrawStyle.BARS), 24, 9)
    loss = select(
        [(f"sum({ident('loss_m3')})", "loss_m3"), (f"sum({ident('expected_loss_m3')})", "expected_loss_m3")],
        M.balance, balance_where(), group_by=("canal", "reach"),
    )
    board.add(barchart_panel().title(t("network.loss_vs_expected")).with_target(q("A", loss, as_table=True)).unit(UNIT_M3).x_field("reach"), 12, 9)
    ratio = select(
        [(f"sum({ident('loss_m3')}) / sum({ident('expected_loss_m3')})", "loss_ratio")], M.balance, balance_where(), group_by=("canal", "reach"),
    )
    board.add(
        bargauge.Panel().title(t("network.loss_ratio", factor=limits.loss_factor)).with_target(q("A", ratio)).unit("x").min(0).max(limits.loss_factor * 1.5)
        .thresholds(steps("green", (1.0, "orange"), (limits.loss_factor, "red"))).orientation(common.VizOrientation.HORIZONTAL),
        12, 9,
    )
    eta_trend = select([(f"mean({ident('eta')})", "eta")], M.balance, balance_where(), group_by=("canal", "reach"), time_bucket="1d", fill="none", tz=board.district.spec.district.timezone)
    board.add(
        timeseries_panel().title(t("network.eta_trend")).with_target(q("A", eta_trend)).unit("percentunit").min(0).max(1.05)
        .thresholds(steps("red", (limits.eta_system, "green"))).thresholds_style(common_b.GraphThresholdsStyleConfig().mode(common.GraphTresholdsStyleMode.LINE)),
        12, 9,
    )
    eta_canal = select(
        [(f"last({ident('eta')})", "eta")], M.efficiency,
        [district_filter(), f"{ident('scope')} = {literal(contract.SCOPE_CANAL)}", var_match("canal", "canal"), TIME_FILTER], group_by=("canal",),
    )
    board.add(
        bargauge.Panel().title(t("network.eta_canal")).with_target(q("A", eta_canal)).unit("percentunit").min(0).max(1)
        .thresholds(steps("red", (limits.eta_system, "green"))).orientation(common.VizOrientation.HORIZONTAL),
        12, 9,
    )


def billing_where() -> list[str]:
    return [district_filter(), var_match("township", "township"), var_match("unit", "unit"), TIME_FILTER]


def last_per_unit(fields: Sequence[str], group_by: Sequence[str]) -> str:
    """The latest billing KPI row of each unit (a unit is billed by several runs in a range)."""
    return select([(f"last({ident(f)})", f) for f in fields], M.billing, billing_where(), group_by=("unit", *group_by))


def billing(board: Board) -> None:
    t, limits = board.t, board.limits
    district_variable(board)
    township_and_unit_variables(board)
    share = select(
        [(f"last({ident('volume_m3')}) / last({ident('quota_m3')})", "use_share")], M.billing, billing_where(), group_by=("unit",),
    )
    band_colours = ("orange", "red", "purple")
    levels = [(b, band_colours[min(i, len(band_colours) - 1)]) for i, b in enumerate(limits.quota_bands)]
    board.add(
        bargauge.Panel().title(t("billing.use_vs_quota")).with_target(q("A", share)).unit("percentunit").min(0)
        .max(max(limits.quota_bands) * 1.25).thresholds(steps("green", *levels)).orientation(common.VizOrientation.HORIZONTAL),
        12, 12,
    )
    per_unit = last_per_unit(("volume_m3", "quota_m3", "charge_yuan", "surcharge_yuan", "subsidy_yuan", "reward_yuan"), ("township", "kind"))
    yuan = [dash.DynamicConfigValue(id_val="unit", value=UNIT_YUAN)]
    board.add(
        table_panel(hide_time=True).title(t("billing.use_table")).with_target(q("A", per_unit, as_table=True)).unit(UNIT_M3)
        .override_by_regexp(".*_yuan", yuan),
        12, 12,
    )
    inner = "(" + last_per_unit(("volume_m3",), ("kind",)) + ")"
    by_kind = f"SELECT sum({ident('volume_m3')}) AS {ident('volume_m3')} FROM {inner} GROUP BY {ident('kind')}"
    board.add(barchart_panel().title(t("billing.by_kind")).with_target(q("A", by_kind, as_table=True)).unit(UNIT_M3).x_field("kind"), 8, 9)
    money = ("charge_yuan", "subsidy_yuan", "reward_yuan")
    inner = "(" + last_per_unit(money, ("township",)) + ")"
    cols = ", ".join(f"sum({ident(f)}) AS {ident(f)}" for f in money)
    per_township = f"SELECT {cols} FROM {inner} GROUP BY {ident('township')}"
    board.add(barchart_panel().title(t("billing.money_township")).with_target(q("A", per_township, as_table=True)).unit(UNIT_YUAN).x_field("township"), 16, 9)
    intake = select(
        [(f"sum({ident(contract.VOLUME_FIELD)})", "volume_m3")], M.volume,
        [district_filter(), role_is(PointRole.intake), f"{ident('interval')} = {literal(contract.INTERVAL_DAY)}", TIME_FILTER],
        group_by=("point",), time_bucket="1d", fill="none", tz=board.district.spec.district.timezone,
    )
    board.add(timeseries_panel().title(t("billing.intake_volume")).with_target(q("A", intake)).unit(UNIT_M3).draw_style(common.GraphDrawStyle.BARS), 24, 9)


def health(board: Board) -> None:
    t = board.t
    district_variable(board)
    canal_variable(board)
    where = [district_filter(), var_match("canal", "canal"), TIME_FILTER]
    last_seen = select([(f"last({ident('qcode')})", "qcode")], M.readings, where, group_by=("gateway", "point"))
    board.add(
        table_panel().title(t("health.last_seen")).with_target(q("A", last_seen, as_table=True))
        .override_by_name("qcode", [dash.DynamicConfigValue(id_val="mappings", value=quality_mapping())]),
        12, 12,
    )
    rate_inner = select([(f"ceil({ident('qcode')} / {MAX_QCODE})", "not_good")], M.readings, where, group_by=("point",))
    error_rate = f"SELECT mean({ident('not_good')}) AS {ident('error_rate')} FROM ({rate_inner}) GROUP BY {ident('point')}"
    board.add(
        bargauge.Panel().title(t("health.error_rate")).with_target(q("A", error_rate)).unit("percentunit").min(0).max(1)
        .thresholds(steps("green", (0.05, "orange"), (0.2, "red"))).orientation(common.VizOrientation.HORIZONTAL),
        12, 12,
    )
    not_good = select(
        [(f"count({ident('qcode')})", "not_good")], M.readings, [*where[:2], f"{ident('qcode')} > {Quality.good.code}", TIME_FILTER],
        group_by=("point",), time_bucket="$__interval", fill="0",
    )
    board.add(timeseries_panel().title(t("health.not_good")).with_target(q("A", not_good)).unit("short").draw_style(common.GraphDrawStyle.BARS), 12, 8)
    flagged = select(
        [(ident("point"), "point"), (ident("quality"), "quality"), (ident("flags"), "flags")], M.readings,
        [*where[:2], f"{ident('flags')} != ''", TIME_FILTER], tail="ORDER BY time DESC LIMIT 200",
    )
    board.add(table_panel().title(t("health.flags")).with_target(q("A", flagged, as_table=True)), 12, 8)
    status_where = [district_filter(), TIME_FILTER]
    buffer = select(
        [(f"last({ident('buffer_depth')})", "buffer_depth")], M.gateway_status, status_where,
        group_by=("gateway",), time_bucket="$__interval", fill="previous",
    )
    unconfirmed = select(  # readings the broker took that ingest has not yet confirmed stored (edge status)
        [(f"last({ident('unconfirmed')})", "unconfirmed")], M.gateway_status, status_where,
        group_by=("gateway",), time_bucket="$__interval", fill="previous",
    )
    board.add(timeseries_panel().title(t("health.buffer")).with_target(q("A", buffer))
              .with_target(q("B", unconfirmed)).unit("short"), 12, 8)
    link = select(
        [(f"last({ident('state')})", "state")], M.gateway_status, status_where, group_by=("gateway",), time_bucket="$__interval", fill="previous",
    )
    board.add(timeline_panel().title(t("health.link")).with_target(q("A", link)).mappings(link_mapping()), 12, 8)


def build_dashboards(district: District, locale: str | None = None, *, today: dt.date | None = None) -> dict[str, dict[str, Any]]:
    """All dashboards of a district: kind -> dashboard JSON. ``locale`` defaults to the district's.

    Every query reads a measurement where ``canalflow.contract.RETENTION_POLICY`` says it lives."""
    texts = Texts(locale or district.spec.district.locale)
    limits = Thresholds.of(district)
    today = today or dt.date.today()
    boards: dict[str, dict[str, Any]] = {}
    for kind in DASHBOARD_KINDS:
        board = Board(district, kind, texts, limits)
        if kind == "overview":
            overview(board, today)
        else:
            {"network": network, "billing": billing, "health": health}[kind](board)
        boards[kind] = board.to_json()
    return boards
