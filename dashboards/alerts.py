"""Grafana alert rules for a district, as a file-provisioning document (``apiVersion: 1``).

Four rules, their numbers from :class:`AlertSettings` (defaults below; override with a YAML file
passed to ``canalflow dashboards build --alerts FILE``) and from the district file (η target,
loss anomaly factor):

- a metering point silent for more than ``silent_minutes``;
- a reach whose loss exceeds ``loss_anomaly_factor`` × its expected seepage;
- canal-system η (the official figure) below its target, averaged over ``eta_window``;
- the field coefficient (measured on typical plots) below its target, averaged over ``eta_window``;
- a gateway's store-and-forward buffer growing by more than ``buffer_growth_rows`` in ``buffer_window``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import alerting, expr
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import alerting as alerting_m
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from canalflow import contract
from canalflow.contract import M
from canalflow.district import District
from canalflow.errors import CanalflowError
from canalflow.problems import validation_problems
from canalflow.yamlines import YamlSyntaxError, load_yaml_with_lines
from dashboards.build import DATASOURCE_UID, q
from dashboards.queries import TIME_FILTER, ident, literal, select
from dashboards.texts import Texts

EXPR_UID = "__expr__"
_DURATION_S = {"m": 60, "h": 3600, "d": 86400}


class AlertSettings(BaseModel):
    """Tunable numbers of the alert rules (a YAML file with these keys; all optional)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    silent_minutes: int = Field(default=30, ge=2, le=1440)
    loss_window: str = Field(default="2d", pattern=r"^\d+[mhd]$")
    eta_window: str = Field(default="7d", pattern=r"^\d+[mhd]$")
    buffer_window: str = Field(default="30m", pattern=r"^\d+[mhd]$")
    buffer_growth_rows: int = Field(default=500, ge=1)
    evaluate_every: str = Field(default="1m", pattern=r"^\d+[mhd]$")
    pending_for: str = Field(default="5m", pattern=r"^\d+[mhd]$")


class AlertSettingsError(CanalflowError, ValueError):
    pass


def load_alert_settings(path: Path | None) -> AlertSettings:
    """Defaults, or the settings in a YAML file (errors name the file and the key)."""
    if path is None:
        return AlertSettings()
    try:
        data, locate = load_yaml_with_lines(path)
    except YamlSyntaxError as exc:
        raise AlertSettingsError(f"alert settings {exc}", hint=exc.hint) from exc
    try:
        return AlertSettings.model_validate(data or {})
    except ValidationError as exc:
        problems = validation_problems(exc, AlertSettings, path, locate, docs="docs/dashboards.md")
        raise AlertSettingsError("\n".join(map(str, problems))) from exc


def seconds(duration: str) -> int:
    return int(duration[:-1]) * _DURATION_S[duration[-1]]


def _influx(ref_id: str, query: str, window_s: int) -> alerting.Query:
    return (
        alerting.Query(ref_id)
        .datasource_uid(DATASOURCE_UID)
        .relative_time_range(alerting_m.RelativeTimeRange(from_val=window_s, to=0))
        .model(q(ref_id, query))
    )


def _reduce(ref_id: str, source: str, reducer: str) -> alerting.Query:
    model = expr.TypeReduce().ref_id(ref_id).expression(source).reducer(reducer).settings(expr.ExprTypeReduceSettings().mode("dropNN"))
    return alerting.Query(ref_id).datasource_uid(EXPR_UID).model(model)


def _threshold(ref_id: str, source: str, op: str, value: float) -> alerting.Query:
    condition = expr.ExprTypeThresholdConditions().evaluator(expr.ExprTypeThresholdConditionsEvaluator().type(op).params([value]))
    model = expr.TypeThreshold().ref_id(ref_id).expression(source).conditions([condition])
    return alerting.Query(ref_id).datasource_uid(EXPR_UID).model(model)


def _rule(uid: str, title: str, query: alerting.Query, reducer: str, op: str, value: float, settings: AlertSettings,
          summary: str, no_data: str = "NoData") -> alerting.Rule:
    return (
        alerting.Rule(title)
        .uid(uid[:40])
        .queries([query, _reduce("B", "A", reducer), _threshold("C", "B", op, value)])
        .condition("C")
        .for_val(settings.pending_for)
        .no_data_state(no_data)  # type: ignore[arg-type]
        .exec_err_state("Error")
        .labels({"source": "canalflow"})
        .annotations({"summary": summary})
    )


def _check_silence_window(district: District, settings: AlertSettings) -> None:
    slowest = max(district.spec.points, key=lambda p: p.poll.slow_s)
    if settings.silent_minutes * 60 <= slowest.poll.slow_s:
        raise AlertSettingsError(
            f"silent_minutes={settings.silent_minutes} is not longer than the slow poll interval of point {slowest.id!r} "
            f"({slowest.poll.slow_s:g} s in {district.path}): every such meter would look silent; raise silent_minutes"
        )


def of_district(district_id: str) -> str:
    return f"{ident('district')} = {literal(district_id)}"


def silent_meter_query(district_id: str, minutes: int) -> str:
    """Per point, readings per minute averaged over the last ``minutes``: 0 means silent.

    ``fill(0)`` only fills series that have data somewhere in the range, so the range (the rule's
    relative time range) reaches back further than the window.
    """
    return select(
        [(f"moving_average(count({ident('qcode')}), {minutes})", "recent_per_min")], M.readings, [of_district(district_id), TIME_FILTER],
        group_by=("district", "point"), time_bucket="1m", fill="0",
    )


def build_alert_rules(district: District, locale: str | None = None, settings: AlertSettings | None = None) -> dict[str, Any]:
    """The provisioning document (a dict to dump as YAML) with one rule group for the district."""
    settings = settings or AlertSettings()
    _check_silence_window(district, settings)
    t = Texts(locale or district.spec.district.locale)
    target = district.spec.targets.canal_system
    factor = district.spec.tolerances.loss_anomaly_factor
    prefix = f"cf-{district.id}"
    rules = [
        _rule(
            f"{prefix}-silent", t("alert.silent", minutes=settings.silent_minutes),
            _influx("A", silent_meter_query(district.id, settings.silent_minutes), max(6 * 3600, 4 * settings.silent_minutes * 60)),
            "last", "lt", 0.5 / settings.silent_minutes, settings,
            "{{ $labels.point }}: no reading for more than " + f"{settings.silent_minutes} min", no_data="Alerting",
        ),
        _rule(
            f"{prefix}-loss", t("alert.loss_anomaly", factor=factor),
            _influx("A", select(
                [(f"sum({ident('loss_m3')}) / sum({ident('expected_loss_m3')})", "loss_ratio")], M.balance,
                [of_district(district.id), f"{ident('interval')} = {literal(contract.INTERVAL_DAY)}", TIME_FILTER], group_by=("district", "canal", "reach"),
            ), seconds(settings.loss_window)),
            "last", "gt", factor, settings, "{{ $labels.canal }}/{{ $labels.reach }}: loss {{ $values.B }}× expected seepage",
        ),
        _rule(
            f"{prefix}-eta", t("alert.eta_low", target=target, window=settings.eta_window),
            _influx("A", select(
                [(f"mean({ident('eta')})", "eta")], M.efficiency,
                [of_district(district.id), f"{ident('scope')} = {literal(contract.SCOPE_SYSTEM)}", TIME_FILTER], group_by=("district",),
            ), seconds(settings.eta_window)),
            "last", "lt", target, settings, "{{ $labels.district }}: canal-system η {{ $values.B }} below " + str(target),
        ),
        _rule(
            f"{prefix}-field", t("alert.field_low", target=district.spec.targets.field, window=settings.eta_window),
            _influx("A", select(
                [(f"mean({ident('eta')})", "eta")], M.efficiency,
                # measured figures only: the configured fallback (method units_field_efficiency) is no reason to alert
                [of_district(district.id), f"{ident('scope')} = {literal(contract.SCOPE_FIELD)}", f"{ident('method')} = {literal('typical_plots')}", TIME_FILTER],
                group_by=("district",),
            ), seconds(settings.eta_window)),
            "last", "lt", district.spec.targets.field, settings, "{{ $labels.district }}: field coefficient {{ $values.B }} below " + str(district.spec.targets.field),
        ),
        _rule(
            f"{prefix}-buffer", t("alert.buffer_growing", rows=settings.buffer_growth_rows, window=settings.buffer_window),
            _influx("A", select(
                [(f"last({ident('buffer_depth')}) - first({ident('buffer_depth')})", "growth")], M.gateway_status,
                [of_district(district.id), TIME_FILTER], group_by=("district", "gateway"),
            ), seconds(settings.buffer_window)),
            "last", "gt", float(settings.buffer_growth_rows), settings, "{{ $labels.gateway }}: buffer grew by {{ $values.B }} readings",
        ),
    ]
    group = alerting.RuleGroup(f"canalflow-{district.id}").interval(settings.evaluate_every).rules(rules)  # type: ignore[arg-type]
    data = json.loads(json.dumps(group.build(), cls=JSONEncoder))
    for rule in data["rules"]:
        for api_only in ("folderUID", "orgID", "ruleGroup"):  # set by the API, not by provisioning files
            rule.pop(api_only, None)
    return {
        "apiVersion": 1,
        "groups": [{"orgId": 1, "name": data["title"], "folder": t("alert.folder"), "interval": data["interval"], "rules": data["rules"]}],
    }
