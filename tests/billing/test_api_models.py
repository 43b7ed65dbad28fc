"""The API's OpenAPI document describes every answer, and real answers, bill files and run manifests match it.

The answers come from the real app on a real ledger (SQLite and PostgreSQL) with a billing run made
from readings in a real InfluxDB; they are checked against the published document itself
(``app.openapi()``, by the small JSON-Schema checker below), not only against the pydantic models
that produced them.
"""

from __future__ import annotations

import json
import re
import socket
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from billing_synth import DEMO, MIN, Meter, write_meter
from fastapi.testclient import TestClient
from pydantic import ValidationError

from billing.api import ApiConfig, Principal, ServiceConfig, create_app
from billing.run import run_billing
from billing.schemas import MONEY_PATTERN, BillDocument, BillLine, ErrorResponse, RunManifest, document_json
from billing.window import season_window
from canalflow.credentials import hash_api_token
from canalflow.district import District
from canalflow.influx import InfluxV1
from testbed.steady import steady_flows

TOKENS = {hash_api_token(f"{r}-token"): Principal(u, r) for u, r in (("zhao", "auditor"), ("li", "clerk"), ("wang", "approver"))}
AUTH = {role: {"Authorization": f"Bearer {role}-token"} for role in ("auditor", "clerk", "approver")}
DAY_MS = 86_400_000
ANNOTATIONS = {"title", "description", "examples", "default", "format"}  # keywords that do not constrain a value


# ---------------------------------------------------------------------------------------------
# A JSON-Schema checker for the keywords pydantic writes into the OpenAPI document


def schema_errors(value: Any, schema: dict[str, Any], doc: dict[str, Any], where: str = "$") -> list[str]:
    """Why ``value`` does not match ``schema`` (``$ref``s resolved in ``doc``); empty when it matches.

    A keyword this checker does not know is an error, so a schema it cannot check is never passed."""
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/components/schemas/")
        return schema_errors(value, doc["components"]["schemas"][name], doc, where)
    unknown = set(schema) - ANNOTATIONS - set(CHECKS)
    if unknown:
        return [f"{where}: the test's checker does not know {sorted(unknown)}"]
    errors: list[str] = []
    for keyword, check in CHECKS.items():
        if keyword in schema:
            errors += check(value, schema, doc, where)
    return errors


def _type(value: Any, schema: dict[str, Any], doc: dict[str, Any], where: str) -> list[str]:
    kinds = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}
    wanted = schema["type"]
    if wanted == "integer":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif wanted == "number":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kinds[wanted])
    return [] if ok else [f"{where}: {value!r} is not of type {wanted}"]


def _properties(value: Any, schema: dict[str, Any], doc: dict[str, Any], where: str) -> list[str]:
    if not isinstance(value, dict):
        return []
    errors = [f"{where}: {key!r} is missing" for key in schema.get("required", []) if key not in value]
    for key, item in value.items():
        if key in schema["properties"]:
            errors += schema_errors(item, schema["properties"][key], doc, f"{where}.{key}")
        elif schema.get("additionalProperties") is False:
            errors.append(f"{where}: {key!r} is not in the schema")
        elif isinstance(schema.get("additionalProperties"), dict):
            errors += schema_errors(item, schema["additionalProperties"], doc, f"{where}.{key}")
    return errors


def _additional(value: Any, schema: dict[str, Any], doc: dict[str, Any], where: str) -> list[str]:
    extra = schema["additionalProperties"]
    if "properties" in schema or not isinstance(value, dict) or not isinstance(extra, dict):
        return []  # checked with the properties
    return [e for key, item in value.items() for e in schema_errors(item, extra, doc, f"{where}.{key}")]


def _items(value: Any, schema: dict[str, Any], doc: dict[str, Any], where: str) -> list[str]:
    if not isinstance(value, list):
        return []
    return [e for n, item in enumerate(value) for e in schema_errors(item, schema["items"], doc, f"{where}[{n}]")]


def _prefix_items(value: Any, schema: dict[str, Any], doc: dict[str, Any], where: str) -> list[str]:
    if not isinstance(value, list):
        return []
    return [e for n, (item, sub) in enumerate(zip(value, schema["prefixItems"], strict=False)) for e in schema_errors(item, sub, doc, f"{where}[{n}]")]


def _any_of(value: Any, schema: dict[str, Any], doc: dict[str, Any], where: str) -> list[str]:
    options = [schema_errors(value, option, doc, where) for option in schema["anyOf"]]
    return [] if any(not o for o in options) else [f"{where}: matches none of anyOf: {options}"]


def _bound(keyword: str, holds: Any) -> Any:
    def check(value: Any, schema: dict[str, Any], doc: dict[str, Any], where: str) -> list[str]:
        return [] if holds(value, schema[keyword]) else [f"{where}: {str(value)[:80]!r} fails {keyword} {schema[keyword]!r}"]
    return check


def _sized(value: Any) -> bool:
    return isinstance(value, str | list)


CHECKS = {
    "type": _type,
    "properties": _properties,
    "required": lambda *_: [],  # with the properties
    "additionalProperties": _additional,
    "items": _items,
    "prefixItems": _prefix_items,
    "anyOf": _any_of,
    "const": _bound("const", lambda v, c: v == c),
    "enum": _bound("enum", lambda v, e: v in e),
    "pattern": _bound("pattern", lambda v, p: not isinstance(v, str) or re.search(p, v) is not None),
    "minimum": _bound("minimum", lambda v, m: not isinstance(v, int | float) or v >= m),
    "maximum": _bound("maximum", lambda v, m: not isinstance(v, int | float) or v <= m),
    "minItems": _bound("minItems", lambda v, m: not isinstance(v, list) or len(v) >= m),
    "maxItems": _bound("maxItems", lambda v, m: not isinstance(v, list) or len(v) <= m),
    "minLength": _bound("minLength", lambda v, m: not _sized(v) or len(v) >= m),
    "maxLength": _bound("maxLength", lambda v, m: not _sized(v) or len(v) <= m),
}


def component(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


# ---------------------------------------------------------------------------------------------
# The document


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method.upper(), path, op) for path, ops in doc["paths"].items() for method, op in ops.items()]


def walk_properties(schema: Any) -> list[tuple[str, dict[str, Any]]]:
    """(name, schema) of every property in a schema, however deep."""
    if isinstance(schema, list):
        return [p for s in schema for p in walk_properties(s)]
    if not isinstance(schema, dict):
        return []
    found = list(schema.get("properties", {}).items())
    return found + [p for key, s in schema.items() if key not in ("examples", "default") for p in walk_properties(s)]


def test_the_openapi_document_declares_every_answer_and_one_error_model(tmp_path: Path) -> None:
    client = TestClient(create_app(ApiConfig(ServiceConfig(f"sqlite:///{tmp_path}/ledger.db"), TOKENS)))
    served = client.get("/openapi.json")  # served without a token, as /docs and /redoc show it
    assert served.status_code == 200 and client.get("/docs").status_code == client.get("/redoc").status_code == 200
    doc = served.json()
    assert doc == client.app.openapi()  # type: ignore[attr-defined]
    schemas = doc["components"]["schemas"]
    for method, path, op in operations(doc):
        where = f"{method} {path}"
        codes = {int(code): answer for code, answer in op["responses"].items()}
        ok = [answer for code, answer in codes.items() if code < 400]
        assert len(ok) == 1, f"{where}: one success answer, not {sorted(codes)}"
        ref = ok[0]["content"]["application/json"]["schema"].get("$ref", "")
        name = ref.removeprefix("#/components/schemas/")
        assert name in schemas and schemas[name]["additionalProperties"] is False, f"{where}: answers {ref or 'an undeclared shape'}"
        errors = {code: answer for code, answer in codes.items() if code >= 400}
        for code, answer in errors.items():
            assert answer["content"]["application/json"]["schema"] == component("ErrorResponse"), f"{where} {code}"
        if path != "/health":
            assert {401, 403, 422} <= set(errors), f"{where} declares only {sorted(errors)}"
        if method == "POST":
            assert 413 in errors, where
    assert "HTTPValidationError" not in schemas, "FastAPI's own 422 model is left somewhere: declare ErrorResponse"
    assert set(schemas["ErrorResponse"]["properties"]) == {"detail"}
    assert {"BillDocument", "RunManifest"} <= set(schemas), "the bill file's and run.json's models are published too"
    # money is a decimal string to the fen wherever it appears in an answer; never a number
    answers = [schemas[n] for n in schemas if not n.endswith("Request") and not n.startswith("Page_")]  # a page's total counts items
    money = [(name, s) for name, s in walk_properties(answers) if name in ("amount", "total")]
    assert len(money) >= 6
    for name, s in money:
        assert s["type"] == "string" and s["pattern"] == MONEY_PATTERN and "fen" in s["description"], (name, s)


def test_the_checker_and_the_models_refuse_what_the_document_does_not_allow(tmp_path: Path) -> None:
    """The checker used below can fail: a float amount, an undeclared key, a missing one, a wrong type."""
    doc = create_app(ApiConfig(ServiceConfig(f"sqlite:///{tmp_path}/ledger.db"), TOKENS)).openapi()
    line = {"id": "3f2a9c1d04e5-V01-L1", "kind": "charge", "crop_class": "grain", "component": "backbone", "band": 0,
            "volume_m3": "8571", "rate": "0.0875", "amount": "749.96", "note": ""}
    schema = component("BillLine")
    assert schema_errors(line, schema, doc) == []
    assert schema_errors(line | {"amount": 749.96}, schema, doc)
    assert schema_errors(line | {"amount": "749.961"}, schema, doc)
    assert schema_errors(line | {"paid": True}, schema, doc)
    assert schema_errors({k: v for k, v in line.items() if k != "amount"}, schema, doc)
    assert schema_errors(line | {"band": "0"}, schema, doc) and schema_errors(line | {"kind": "fee"}, schema, doc)
    assert schema_errors({"detail": [{"loc": ["query", "limit"], "msg": "too big"}]}, component("ErrorResponse"), doc)
    assert schema_errors("x", {"type": "string", "if": {}}, doc) == ["$: the test's checker does not know ['if']"]
    for amount in (749.96, 74996, "749.961", "NaN", "1e999"):  # a float, integer fen, fractions of a fen, not a number
        with pytest.raises(ValidationError, match=r"fen|float|finite"):
            BillLine.model_validate(line | {"amount": amount})


# ---------------------------------------------------------------------------------------------
# Real answers


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


class Checked:
    """A client whose every answer is checked against the operation's declared answer for its status."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.doc = client.app.openapi()  # type: ignore[attr-defined]
        self.routes = [(route.path, method) for route in client.app.routes for method in getattr(route, "methods", ())]  # type: ignore[attr-defined]
        self.answered: set[tuple[str, str]] = set()

    def __call__(self, method: str, url: str, status: int, role: str | None = "auditor", **kwargs: Any) -> Any:
        headers = (AUTH[role] if role else {}) | kwargs.pop("headers", {})
        answer = self.client.request(method, url, headers=headers, **kwargs)
        assert answer.status_code == status, f"{method} {url}: {answer.status_code} {answer.text[:300]}"
        template = self.template(method, url.split("?")[0])
        declared = self.doc["paths"][template][method.lower()]["responses"]
        assert str(status) in declared, f"{method} {template} answered {status}, which its document does not declare"
        body = answer.json()
        errors = schema_errors(body, declared[str(status)]["content"]["application/json"]["schema"], self.doc)
        assert errors == [], f"{method} {url} {status}: {errors[:5]}"
        if status < 400:
            self.answered.add((method, template))
        return body

    def template(self, method: str, path: str) -> str:
        for template, m in self.routes:
            pattern = "^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$"
            if m == method and re.match(pattern, path) and template in self.doc["paths"]:
                return template
        raise AssertionError(f"no route in the document for {method} {path}")


@pytest.fixture
def billed(demo: District, influx: InfluxV1, ledger_url: str, tmp_path: Path) -> tuple[Any, Path]:
    """Two days of steady readings at every point; the first day billed as an operator bills it (files and ledger)."""
    t0 = season_window(demo, demo.seasons["2026-spring"])[0] + 10 * DAY_MS
    for point, flow in steady_flows(demo, 0.1).items():
        write_meter(influx, demo, point, Meter(flow, swing=0.0), t0 - 60 * MIN, t0 + 2 * DAY_MS + 60 * MIN, step_ms=15 * MIN)
    out = tmp_path / "out"
    run = run_billing(demo, influx, t0, t0 + DAY_MS, out_dir=out, ledger_url=ledger_url, as_of_ms=t0 + 2 * DAY_MS)
    return run, out


def test_real_answers_and_bill_files_match_the_document(billed: tuple[Any, Path], influx: InfluxV1, ledger_url: str) -> None:
    run, out = billed
    app = create_app(ApiConfig(ServiceConfig(ledger_url, DEMO, influx.url, influx.database), TOKENS))
    api = Checked(TestClient(app))
    doc = api.doc
    bill = run.bill_of("V01").bill_id
    # the bill files and the run manifest: the document's models, and what the ledger serves
    files = sorted((out / "bills").glob("*.json"))
    assert len(files) == len(run.bills) == 18  # 14 units, V15's two blocks and its metered household
    served = {b["bill_id"]: b for b in api("GET", f"/runs/{run.run_id}/bills?limit=500", 200)["items"]}
    for path in files:
        text = path.read_text(encoding="utf-8")
        stored = json.loads(text)
        assert schema_errors(stored, component("BillDocument"), doc) == [], path.name
        assert document_json(BillDocument.model_validate_json(text)) == text, f"{path.name} does not round-trip through its model"
        assert served[stored["bill_id"]] == stored | {"status": "draft"}, f"{path.name} differs from the ledger's bill"
    manifest = (out / "run.json").read_text(encoding="utf-8")
    assert schema_errors(json.loads(manifest), component("RunManifest"), doc) == []
    assert document_json(RunManifest.model_validate_json(manifest)) == manifest
    assert sum(Decimal(b["total"]) for b in served.values()) == run.total > 0
    # every route, as each role uses it
    day2 = {"from": "2026-03-12T00:00:00+08:00", "to": "2026-03-13T00:00:00+08:00"}
    api("GET", "/health", 200, role=None)
    assert api("GET", "/runs", 200)["items"][0]["id"] == run.run_id
    api("GET", f"/runs/{run.run_id[:12]}", 200)
    assert api("GET", f"/bills/{bill}", 200)["total"] == str(run.bill_of("V01").total)
    assert api("GET", f"/lines/{bill}-L1/explain", 200)["line"]["id"] == f"{bill}-L1"
    api("POST", f"/runs/{run.run_id}/approve", 200, "approver", json={"note": "checked"})
    api("POST", f"/runs/{run.run_id}/issue", 200, "approver")
    assert api("POST", f"/bills/{bill}/adjustments", 201, "clerk", json={"amount": "-12.34", "reason": "meter over-read"})["amount"] == "-12.34"
    api("POST", f"/bills/{bill}/paid", 200, "clerk")
    assert api("GET", "/adjustments", 200)["items"][0]["amount"] == "-12.34"
    edit = {"point": "V01-IN", "from": "2026-03-20T00:00:00+08:00", "to": "2026-03-21T00:00:00+08:00", "volume_m3": 100.5, "reason": "gate log"}
    api("POST", "/edits", 201, "clerk", json=edit)
    assert api("GET", "/edits", 200)["items"][0]["volume_m3"] == 100.5
    assert api("GET", "/units/V01/water-use", 200)["items"][0]["bill_id"] == bill
    efficiency = api("GET", "/efficiency", 200, params={"from": "2026-03-11T00:00:00+08:00", "to": "2026-03-12T00:00:00+08:00"})
    assert efficiency["reaches"]
    official = efficiency["canal_system"]  # the headline: the same figure as system.official, with its definition
    assert official["method"] == "official" and official["value"] == efficiency["system"]["official"]["value"]
    assert "GB/T 50363" in official["definition"] and official["balance"]["diverted_m3"] > 0
    later = api("POST", "/runs", 201, "clerk", json=day2)
    assert later["ledger"] == "created" and any(ln["kind"] == "adjustment" for b in api("GET", f"/runs/{later['run_id']}/bills?limit=500", 200)["items"] for ln in b["lines"])
    routes = {(method, path) for method, path, _ in operations(doc)}
    assert api.answered == routes, f"routes whose success answer is not checked: {routes - api.answered}"
    # every kind of error, in the one error model
    assert "bearer" in api("GET", "/runs", 401, role=None)["detail"]
    assert "approver or admin role" in api("POST", f"/runs/{later['run_id']}/approve", 403, "clerk")["detail"]
    assert "no bill" in api("GET", "/bills/nope", 404)["detail"]
    assert "issued is final" in api("POST", f"/runs/{run.run_id}/issue", 409, "approver")["detail"]
    assert "over" in api("POST", "/edits", 413, "clerk", content=json.dumps(edit | {"reason": "x" * 2_000_000}),
                         headers={"content-type": "application/json"})["detail"]
    issues = api("GET", "/runs?limit=501", 422)["detail"]
    assert issues[0]["loc"] == ["query", "limit"] and "input" not in issues[0]
    assert "unknown season" in api("POST", "/runs", 422, "clerk", json={"season": "nope"})["detail"]
    assert ErrorResponse.model_validate(api("GET", "/runs?limit=501", 422))
    down = Checked(TestClient(create_app(ApiConfig(ServiceConfig(ledger_url, DEMO, closed_port_url(), influx.database), TOKENS))))
    assert "retry when InfluxDB is back" in down("GET", "/efficiency", 503, params=day2)["detail"]
    without = Checked(TestClient(create_app(ApiConfig(ServiceConfig(ledger_url, DEMO), TOKENS))))
    assert "without --influx" in without("POST", "/runs", 503, "clerk", json=day2)["detail"]
