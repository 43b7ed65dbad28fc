"""Render each dashboard's panels to a PNG with matplotlib, from the same queries Grafana runs.

For people without Grafana at hand and for the demo's ``out/``: one image per dashboard, panels
placed on Grafana's 24-column grid, each drawn from its query results (``dashboards.querycheck``).
A panel whose query fails or returns nothing says so in the image instead of showing a blank.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any
from zoneinfo import ZoneInfo

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
from matplotlib import font_manager
from matplotlib.axes import Axes

from canalflow.district import District
from canalflow.influx import InfluxV1
from dashboards.alerts import build_alert_rules
from dashboards.build import build_dashboards
from dashboards.layout import schematic_places
from dashboards.querycheck import (
    AlertEvaluation,
    QueryResult,
    TimeRange,
    alert_rules,
    check_dashboard,
    evaluate_rule,
    panel_range,
)

CJK_FONTS = (
    Path("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"),
    Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"),
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"),
)
UNIT_LABELS = {"m3": "m³", "flowcms": "m³/s", "lengthm": "m", "velocityms": "m/s", "percentunit": "%", "prefix:¥": "¥", "x": "×", "short": ""}
GRID_ROW_INCHES = 0.32
FIGURE_WIDTH_INCHES = 20.0
MAX_TABLE_ROWS = 14
MAX_SERIES = 16


def use_cjk_font() -> str | None:
    """Register the first CJK font found so Chinese titles render (None when there is none)."""
    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)  # zenhei has one weight: no bold warnings
    for path in CJK_FONTS:
        if path.exists():
            font_manager.fontManager.addfont(str(path))
            name = font_manager.FontProperties(fname=str(path)).get_name()
            plt.rcParams["font.family"] = [name, "DejaVu Sans"]
            plt.rcParams["axes.unicode_minus"] = False
            return name
    return None


def _unit(panel: Mapping[str, Any]) -> str:
    unit = ((panel.get("fieldConfig") or {}).get("defaults") or {}).get("unit", "")
    return UNIT_LABELS.get(unit, unit)


def _scale(panel: Mapping[str, Any]) -> float:
    unit = ((panel.get("fieldConfig") or {}).get("defaults") or {}).get("unit", "")
    return 100.0 if unit == "percentunit" else 1.0


def _thresholds(panel: Mapping[str, Any]) -> list[tuple[float | None, str]]:
    steps = (((panel.get("fieldConfig") or {}).get("defaults") or {}).get("thresholds") or {}).get("steps") or []
    return [(s.get("value"), s.get("color", "grey")) for s in steps]


def _colour(panel: Mapping[str, Any], value: float) -> str:
    colour = "tab:blue"
    for limit, step_colour in _thresholds(panel):
        if limit is None or value >= limit:
            colour = step_colour
    return {"green": "tab:green", "red": "tab:red", "orange": "tab:orange", "yellow": "gold", "blue": "tab:blue", "purple": "tab:purple"}.get(colour, colour)


def _label(tags: Mapping[str, str]) -> str:
    return " ".join(str(v) for k, v in tags.items() if k != "district" or len(tags) == 1) or "value"


def _fmt(value: Any, scale: float = 1.0) -> str:
    if isinstance(value, float | int) and not isinstance(value, bool):
        number = value * scale
        return f"{number:,.0f}" if abs(number) >= 1000 else f"{number:,.3g}" if abs(number) < 10 else f"{number:,.1f}"
    return "" if value is None else str(value)


def _times(values: Sequence[Sequence[Any]], tz: ZoneInfo) -> list[dt.datetime]:
    return [dt.datetime.fromtimestamp(row[0] / 1000, tz) for row in values]


def _message(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=10, color="dimgray", wrap=True, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def draw_stat(ax: Axes, panel: Mapping[str, Any], results: list[QueryResult], tz: ZoneInfo) -> None:
    values = [row[1] for r in results for s in r.series for row in s["values"] if row[1] is not None]
    if not values:
        _message(ax, "no data")
        return
    value = values[-1]
    ax.text(0.5, 0.45, f"{_fmt(value, _scale(panel))} {_unit(panel)}", ha="center", va="center", fontsize=24,
            color=_colour(panel, value), transform=ax.transAxes, fontweight="bold")
    ax.set_xticks([])
    ax.set_yticks([])


def draw_timeseries(ax: Axes, panel: Mapping[str, Any], results: list[QueryResult], tz: ZoneInfo, rng: TimeRange | None = None) -> None:
    """Lines on the panel's time range as Grafana draws them (matplotlib alone would spread a single
    point over ±2 years), with the panel's min/max on the value axis."""
    series = [s for r in results for s in r.series][:MAX_SERIES]
    scale = _scale(panel)
    _time_axis(ax, series, tz, rng)
    defaults = (panel.get("fieldConfig") or {}).get("defaults") or {}
    if defaults.get("min") is not None and defaults.get("max") is not None:
        ax.set_ylim(defaults["min"] * scale, defaults["max"] * scale)
    for item in series:
        for index, column in enumerate(item["columns"][1:], start=1):
            points = [(t, row[index] * scale) for t, row in zip(_times(item["values"], tz), item["values"], strict=True) if row[index] is not None]
            if points:
                xs, ys = zip(*points, strict=True)
                name = _label(item["tags"]) + (f" {column}" if len(item["columns"]) > 2 else "")
                ax.plot(xs, ys, linewidth=1.2, marker="o" if len(xs) < 10 else None, markersize=3, label=name)
    for limit, _step_colour in _thresholds(panel):
        if limit is not None:
            ax.axhline(limit * scale, color=_colour(panel, limit), linestyle="--", linewidth=1)
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M", tz=tz))
    ax.tick_params(labelsize=7)
    ax.set_ylabel(_unit(panel), fontsize=8)
    if series:
        ax.legend(fontsize=6, ncol=4, loc="upper left", framealpha=0.6)


def _time_axis(ax: Axes, series: Sequence[Mapping[str, Any]], tz: ZoneInfo, rng: TimeRange | None) -> None:
    if rng is None:
        return
    stamps = [row[0] for item in series for row in item["values"]]
    lo, hi = min([rng.from_ms, *stamps]), max([rng.to_ms, *stamps])  # a daily bucket may start before the range
    ax.set_xlim(dt.datetime.fromtimestamp(lo / 1000, tz), dt.datetime.fromtimestamp(hi / 1000, tz))


def draw_bars(ax: Axes, panel: Mapping[str, Any], results: list[QueryResult], tz: ZoneInfo) -> None:
    rows: list[tuple[str, list[tuple[str, float]]]] = []
    scale = _scale(panel)
    for item in (s for r in results for s in r.series):
        for row in item["values"][-1:]:
            rows.append((_label(item["tags"]), [(c, (v or 0) * scale) for c, v in zip(item["columns"][1:], row[1:], strict=True)]))
    rows = rows[:24]
    if not rows:
        _message(ax, "no data")
        return
    columns = [c for c, _ in rows[0][1]]
    height = 0.8 / len(columns)
    for index, column in enumerate(columns):
        ys = [i + index * height for i in range(len(rows))]
        values = [dict(r[1])[column] for r in rows]
        colours = [_colour(panel, v / scale) for v in values] if len(columns) == 1 and _thresholds(panel) else None
        ax.barh(ys, values, height=height, color=colours, label=column)
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(rows))], [r[0] for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.tick_params(axis="x", labelsize=7)
    ax.set_xlabel(_unit(panel), fontsize=8)
    if len(columns) > 1:
        ax.legend(fontsize=7)


def _hides_time(panel: Mapping[str, Any]) -> bool:
    """True when the panel's ``organize`` transformation hides the time column."""
    for transformation in panel.get("transformations") or []:
        if transformation.get("id") == "organize" and (transformation.get("options") or {}).get("excludeByName", {}).get("Time"):
            return True
    return False


def draw_table(ax: Axes, panel: Mapping[str, Any], results: list[QueryResult], tz: ZoneInfo) -> None:
    series = [s for r in results for s in r.series]
    if not series:
        _message(ax, "no data")
        return
    tag_names = list(series[0]["tags"])
    show_time = not _hides_time(panel)
    header = [*tag_names, *series[0]["columns"][0 if show_time else 1 :]]
    body = []
    for item in series:
        for row in item["values"]:
            when = [dt.datetime.fromtimestamp(row[0] / 1000, tz).strftime("%m-%d %H:%M") if row[0] else ""] if show_time else []
            body.append([*(item["tags"][t] for t in tag_names), *when, *(_fmt(v) for v in row[1:])])
    shown = body[:MAX_TABLE_ROWS]
    if len(body) > len(shown):
        shown.append(["…"] * len(header))
    table = ax.table(cellText=shown, colLabels=header, cellLoc="left", bbox=(0.0, 0.0, 1.0, 1.0))
    table.auto_set_font_size(False)
    table.set_fontsize(7)
    ax.axis("off")


def draw_geomap(ax: Axes, panel: Mapping[str, Any], results: list[QueryResult], district: District) -> None:
    places = {p.key: p for p in schematic_places(district)}
    quality: dict[str, float] = {}
    for item in (s for r in results for s in r.series):
        column = item["columns"].index("qcode") if "qcode" in item["columns"] else None
        if column is not None and item["values"]:
            quality[item["tags"].get("point", "")] = item["values"][-1][column]
    for canal in district.spec.canals:
        on_canal = sorted((p for p in district.spec.points if p.canal == canal.id), key=lambda p: p.km)
        if len(on_canal) > 1:
            ax.plot([places[p.id].x_km for p in on_canal], [places[p.id].y_km for p in on_canal], color="lightsteelblue", linewidth=2, zorder=1)
    for key, place in places.items():
        value = quality.get(key)
        colour = "lightgray" if value is None else _colour(panel, value)
        ax.scatter(place.x_km, place.y_km, s=40, color=colour, edgecolors="black", linewidths=0.4, zorder=2)
        ax.annotate(key, (place.x_km, place.y_km), fontsize=5, xytext=(3, 3), textcoords="offset points")
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel("km (schematic)", fontsize=7)
    ax.tick_params(labelsize=6)


def draw_timeline(ax: Axes, panel: Mapping[str, Any], results: list[QueryResult], tz: ZoneInfo) -> None:
    series = [s for r in results for s in r.series]
    colours = {"online": "tab:green", "offline": "tab:red"}
    for index, item in enumerate(series):
        times = _times(item["values"], tz)
        for (start, row), end in zip(zip(times, item["values"], strict=True), times[1:], strict=False):
            if row[1] is not None:
                ax.barh(index, mdates.date2num(end) - mdates.date2num(start), left=mdates.date2num(start), color=colours.get(row[1], "gray"), height=0.6)
    ax.set_yticks(range(len(series)), [_label(s["tags"]) for s in series], fontsize=7)
    ax.xaxis_date(tz)
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M", tz=tz))
    ax.tick_params(axis="x", labelsize=7)
    if not series:
        _message(ax, "no data")


def draw_alerts(ax: Axes, evaluations: Sequence[AlertEvaluation]) -> None:
    lines = []
    for evaluation in evaluations:
        for labels in evaluation.firing:
            lines.append(f"● {evaluation.title}: {_label(labels)}")
    text = "\n".join(lines[:12]) or "no alert firing"
    ax.text(0.02, 0.95, text, ha="left", va="top", fontsize=8, color="tab:red" if lines else "tab:green", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def render_dashboard(
    board: Mapping[str, Any], results: list[QueryResult], district: District, evaluations: Sequence[AlertEvaluation], out: Path,
    *, now_ms: int | None = None, time_range: TimeRange | None = None,
) -> Path:
    """One PNG of a dashboard; ``now_ms`` (and the picked ``time_range``) give time series their axis."""
    tz = ZoneInfo(board.get("timezone") or "UTC")
    panels = board.get("panels", [])
    rows = max((p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels), default=1)
    fig = plt.figure(figsize=(FIGURE_WIDTH_INCHES, max(4.0, rows * GRID_ROW_INCHES + 1)))
    grid = fig.add_gridspec(rows, 24, hspace=2.5, wspace=1.2)
    fig.subplots_adjust(left=0.05, right=0.98, top=0.95, bottom=0.03)
    fig.suptitle(board.get("title", ""), fontsize=16, fontweight="bold")
    for panel in panels:
        pos = panel["gridPos"]
        ax = fig.add_subplot(grid[pos["y"] + 1 : pos["y"] + pos["h"], pos["x"] : pos["x"] + pos["w"]])
        ax.set_title(panel.get("title", ""), fontsize=10, loc="left")
        mine = [r for r in results if r.panel_id == panel.get("id")]
        failed = [r for r in mine if not r.ok and "returned no data" not in r.problems]
        if failed:
            _message(ax, "query failed: " + "; ".join(failed[0].problems)[:200])
            continue
        kind = panel.get("type")
        if kind == "stat":
            draw_stat(ax, panel, mine, tz)
        elif kind == "timeseries":
            draw_timeseries(ax, panel, mine, tz, None if now_ms is None else panel_range(panel, board, now_ms, time_range))
        elif kind in ("bargauge", "barchart"):
            draw_bars(ax, panel, mine, tz)
        elif kind == "table":
            draw_table(ax, panel, mine, tz)
        elif kind == "geomap":
            draw_geomap(ax, panel, mine, district)
        elif kind == "state-timeline":
            draw_timeline(ax, panel, mine, tz)
        elif kind == "alertlist":
            draw_alerts(ax, evaluations)
        else:
            _message(ax, f"({kind} panel: no preview)")
    path = out / f"{board['uid']}.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def render_previews(
    district: District,
    db: InfluxV1,
    out: Path,
    *,
    locale: str | None = None,
    now_ms: int,
    overrides: Mapping[str, Sequence[str]] | None = None,
    time_range: TimeRange | None = None,
    progress: IO[str] | None = None,
) -> list[Path]:
    """One PNG per dashboard in ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    if use_cjk_font() is None and progress is not None and (locale or district.spec.district.locale) == "zh":
        print("warning: no CJK font found (install fonts-wqy-zenhei): Chinese titles will show as boxes", file=progress)
    evaluations = [evaluate_rule(rule, db, now_ms=now_ms) for rule in alert_rules(build_alert_rules(district, locale))]
    paths = []
    for board in build_dashboards(district, locale).values():
        results = check_dashboard(board, db, now_ms=now_ms, overrides=overrides, time_range=time_range)
        paths.append(render_dashboard(board, results, district, evaluations, out, now_ms=now_ms, time_range=time_range))
        if progress is not None:
            ok = sum(r.ok for r in results)
            print(f"preview {paths[-1]}: {ok} of {len(results)} queries with data", file=progress)
    return paths


__all__ = ["render_dashboard", "render_previews", "use_cjk_font"]

