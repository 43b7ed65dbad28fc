"""A typed InfluxQL data query for the Grafana Foundation SDK (which ships none for InfluxDB).

Registered with the SDK runtime under the datasource type ``influxdb`` so that dashboard JSON
with InfluxQL targets round-trips through ``Dashboard.from_json`` as this class, not as an
untyped bag.
"""

from __future__ import annotations

from typing import Any, Literal, Self

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import runtime as cogruntime
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import dashboard as dash

DATASOURCE_TYPE = "influxdb"
ResultFormat = Literal["time_series", "table"]


class InfluxQLQuery(cogvariants.Dataquery):
    """One raw InfluxQL target of a panel (``rawQuery: true``)."""

    def __init__(
        self,
        ref_id: str = "A",
        query: str = "",
        result_format: ResultFormat = "time_series",
        datasource: dash.DataSourceRef | None = None,
        alias: str | None = None,
        hide: bool | None = None,
    ) -> None:
        self.ref_id = ref_id
        self.query = query
        self.result_format = result_format
        self.datasource = datasource
        self.alias = alias
        self.hide = hide

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {
            "refId": self.ref_id,
            "query": self.query,
            "rawQuery": True,
            "resultFormat": self.result_format,
        }
        if self.datasource is not None:
            data["datasource"] = self.datasource.to_json()
        if self.alias is not None:
            data["alias"] = self.alias
        if self.hide is not None:
            data["hide"] = self.hide
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        if not data.get("rawQuery", False):
            raise ValueError(f"target {data.get('refId')!r}: only raw InfluxQL targets (rawQuery: true) are supported")
        datasource = data.get("datasource")
        return cls(
            ref_id=data.get("refId", "A"),
            query=data.get("query", ""),
            result_format=data.get("resultFormat", "time_series"),
            datasource=dash.DataSourceRef.from_json(datasource) if isinstance(datasource, dict) else None,
            alias=data.get("alias"),
            hide=data.get("hide"),
        )


class InfluxQL(cogbuilder.Builder[InfluxQLQuery]):
    """Builder: ``InfluxQL("A", 'SELECT ...').table()``."""

    def __init__(self, ref_id: str, query: str) -> None:
        self._internal = InfluxQLQuery(ref_id=ref_id, query=query)

    def build(self) -> InfluxQLQuery:
        return self._internal

    def table(self) -> Self:
        self._internal.result_format = "table"
        return self

    def datasource(self, ref: dash.DataSourceRef) -> Self:
        self._internal.datasource = ref
        return self

    def alias(self, alias: str) -> Self:
        self._internal.alias = alias
        return self


def register() -> None:
    """Make the SDK decode ``influxdb`` targets as :class:`InfluxQLQuery` (idempotent)."""
    cogruntime.register_dataquery_variant(
        cogruntime.DataqueryConfig(identifier=DATASOURCE_TYPE, from_json_hook=InfluxQLQuery.from_json)
    )


register()
