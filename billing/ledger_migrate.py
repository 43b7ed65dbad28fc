"""Bring a ledger database to the current schema when it is opened (:func:`prepare_schema`).

Versions: none (an empty database: the tables are created), 1 (canalflow up to the journal
ledger: money and volumes as decimal text, ``status``, ``paid_at`` and ``applied_run_id`` updated
in place; recognised by a ``billing_runs`` table without ``ledger_schema``), 2 (the journal,
:mod:`billing.ledger_schema`). ``ledger_schema`` holds one row per version reached, so opening a
migrated ledger again changes nothing. A migration is one transaction, holding the database's
write lock (SQLite) or an advisory lock (PostgreSQL): processes opening the ledger at once wait,
and a failed migration leaves the old ledger as it was.

Version 1 to 2 keeps every id (run, bill, line, adjustment, edit and event ids: run ids hash
adjustment and edit ids) and turns the state into postings: an ``issue`` per bill of an issued
run (by whom and when its ``issued`` event says), a ``payment`` per paid bill, an ``adjustment``
per adjustment, a ``credit`` per adjustment carried by an issued run; which run carries an
adjustment comes from the runs' manifests, ordered so that it is the run version 1 named.
"""

from __future__ import annotations

import json
from collections import defaultdict
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from sqlalchemy import Connection, func, insert, inspect, select, text
from sqlalchemy.engine import Engine

from billing import ledger_schema as schema
from billing.ledger_schema import (
    ACCOUNT_OF,
    FINE_PLACES,
    LIFECYCLE,
    SCHEMA_VERSION,
    LedgerError,
    fen,
    litres,
    now,
    scaled,
)

_SCHEMA_LOCK = 0x63616E616C666C6F  # PostgreSQL advisory lock key ("canalflo") held while creating or migrating the tables
V1_TABLES = ("adjustments", "bill_lines", "bills", "billing_events", "volume_edits", "billing_runs")  # in an order FKs allow dropping
MIGRATION_USER = "migration"


def schema_version(conn: Connection) -> int | None:
    """The ledger's schema version: None for an empty database, 1 for one made before ``ledger_schema``."""
    names = set(inspect(conn).get_table_names())
    if schema.SchemaRow.__tablename__ in names:
        return conn.scalar(select(func.max(schema.SchemaRow.version)))
    return 1 if "billing_runs" in names else None


def prepare_schema(engine: Engine) -> None:
    """Create the tables of a new ledger, or migrate an older one; a current ledger is left alone."""
    with engine.connect() as conn:
        if schema_version(conn) == SCHEMA_VERSION:
            return
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # the database's write lock, before looking again
        elif conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})
        version = schema_version(conn)  # another process may have created or migrated it meanwhile
        if version == SCHEMA_VERSION:
            return
        if version is not None and version > SCHEMA_VERSION:
            raise LedgerError(f"the ledger has schema version {version}, newer than this canalflow's {SCHEMA_VERSION}: upgrade canalflow")
        note = _migrate_v1(conn) if version == 1 else "created"
        schema.Base.metadata.create_all(conn)
        conn.execute(insert(schema.SchemaRow), {"version": SCHEMA_VERSION, "applied_at": now(), "note": note})


def _migrate_v1(conn: Connection) -> str:
    names = set(inspect(conn).get_table_names())
    old = {t: [dict(r._mapping) for r in conn.execute(text(f'SELECT * FROM "{t}" ORDER BY 1'))] if t in names else [] for t in V1_TABLES}
    for table in V1_TABLES:
        if table in names:
            conn.execute(text(f'DROP TABLE "{table}"'))
    schema.Base.metadata.create_all(conn)
    runs = {r["id"]: r for r in old["billing_runs"]}
    bills = {b["id"]: b for b in old["bills"]}
    columns = [c.name for c in schema.RunRow.__table__.columns]
    _insert(conn, schema.RunRow, [{c: r[c] for c in columns} for r in runs.values()])
    _insert(conn, schema.BillRow, [_bill(b) for b in bills.values()])
    _insert(conn, schema.LineRow, [_line(ln) for ln in old["bill_lines"]])
    edits, rounded = _edits(old["volume_edits"])
    _insert(conn, schema.EditRow, edits)
    events = _lifecycle(old["billing_events"], runs)
    _insert(conn, schema.EventRow, events)
    adjustments = [_adjustment(a, bills, runs) for a in old["adjustments"]]
    _insert(conn, schema.PostingRow, adjustments)
    _sync_ids(conn, (schema.EventRow, schema.EditRow, schema.PostingRow))
    _insert(conn, schema.CarriedRow, _carriers(old["adjustments"], runs, events))
    _insert(conn, schema.PostingRow, _issues(runs, bills, old["adjustments"], events) + _payments(bills, runs, old["billing_events"]))
    parts = [f"migrated from version 1: {len(runs)} runs, {len(bills)} bills, {len(adjustments)} adjustments"]
    if rounded:
        parts.append(f"edits rounded to the litre: {', '.join(rounded)}")
    return "; ".join(parts)


def _insert(conn: Connection, table: type[schema.Base], rows: list[dict[str, Any]]) -> None:
    if rows:
        conn.execute(insert(table), rows)


def _sync_ids(conn: Connection, tables: tuple[type[schema.Base], ...]) -> None:
    """After rows inserted with their old ids, PostgreSQL's sequences must start after them (SQLite's rowid does)."""
    if conn.dialect.name != "postgresql":
        return
    for table in tables:
        name = table.__tablename__
        conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), coalesce(max(id), 1), max(id) IS NOT NULL) FROM {name}"))


def _bill(b: dict[str, Any]) -> dict[str, Any]:
    where = f"bills row {b['id']!r}"
    return {"id": b["id"], "run_id": b["run_id"], "unit_id": b["unit_id"], "volume_l": litres(b["volume_m3"], f"{where} volume_m3"),
            "quota_l": litres(b["quota_m3"], f"{where} quota_m3"), "total_fen": fen(b["total"], f"{where} total"),
            "blocked": b["blocked"], "document": b["document"]}


def _line(ln: dict[str, Any]) -> dict[str, Any]:
    where = f"bill_lines row {ln['id']!r}"
    return {"id": ln["id"], "bill_id": ln["bill_id"], "n": ln["n"], "kind": ln["kind"], "crop_class": ln["crop_class"],
            "component": ln["component"], "band": ln["band"], "volume_e9": scaled(ln["volume_m3"], FINE_PLACES, f"{where} volume_m3"),
            "rate_e9": scaled(ln["rate"], FINE_PLACES, f"{where} rate"), "amount_fen": fen(ln["amount"], f"{where} amount"), "note": ln["note"]}


def _edits(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Version 1 kept an edit's volume as a float's text; version 2 keeps litres (the finest volume a bill has)."""
    out, rounded = [], []
    for e in rows:
        volume = Decimal(e["volume_m3"])
        whole = volume.quantize(Decimal("0.001"), rounding=ROUND_HALF_EVEN)
        if whole != volume:
            rounded.append(f"#{e['id']} {e['volume_m3']} -> {whole} m3")
        out.append({k: e[k] for k in ("id", "district_id", "point", "start_ms", "end_ms", "user", "reason", "created_at")} | {"volume_l": litres(whole)})
    return out, rounded


def _lifecycle(rows: list[dict[str, Any]], runs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Version 1's created/approved/issued events as they were, plus one for a status that has none."""
    kept = [{k: e[k] for k in ("id", "run_id", "action", "user", "at", "note")} for e in rows if e["action"] in LIFECYCLE]
    have = {(e["run_id"], e["action"]) for e in kept}
    next_id = max((e["id"] for e in rows), default=0) + 1
    for run in runs.values():
        for action in {"draft": ("created",), "approved": ("created", "approved"), "issued": ("created", "approved", "issued")}[run["status"]]:
            if (run["id"], action) not in have:
                kept.append({"id": next_id, "run_id": run["id"], "action": action, "user": MIGRATION_USER, "at": run["created_at"],
                             "note": f"version 1 said {run['status']} without this event"})
                next_id += 1
    return kept


def _adjustment(a: dict[str, Any], bills: dict[str, dict[str, Any]], runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    bill = bills[a["corrects_bill_id"]]
    return {"id": a["id"], "kind": "adjustment", "account": ACCOUNT_OF["adjustment"], "district_id": runs[bill["run_id"]]["district_id"],
            "unit_id": a["unit_id"], "bill_id": bill["id"], "run_id": bill["run_id"], "amount_fen": fen(a["amount"], f"adjustments row #{a['id']} amount"),
            "volume_l": litres(a["volume_m3"] or "0", f"adjustments row #{a['id']} volume_m3"), "who": a["created_by"], "at": a["created_at"],
            "reason": a["reason"], "ref_id": None}


def _carriers(adjustments: list[dict[str, Any]], runs: dict[str, dict[str, Any]], events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every (run, adjustment) a manifest lists, in recording order, the run version 1 named last (the newest carrier carries it)."""
    recorded = {e["run_id"]: e["id"] for e in events if e["action"] == "created"}
    known = {a["id"]: a["applied_run_id"] for a in adjustments}
    by_adj: dict[int, list[str]] = defaultdict(list)
    for run in sorted(runs.values(), key=lambda r: recorded[r["id"]]):
        for adj_id in json.loads(run["manifest"]).get("adjustments", []):
            if adj_id in known:
                by_adj[adj_id].append(run["id"])
    out = []
    for adj_id, carriers in sorted(by_adj.items()):
        named = known[adj_id]
        ordered = [r for r in carriers if r != named] + ([named] if named in carriers else [])
        out += [{"run_id": run_id, "adjustment_id": adj_id} for run_id in ordered]
    return out


def _issues(runs: dict[str, dict[str, Any]], bills: dict[str, dict[str, Any]], adjustments: list[dict[str, Any]],
            events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue postings of every issued run, and the credits of the adjustments it carries."""
    issued = sorted((e for e in events if e["action"] == "issued"), key=lambda e: e["id"])
    out = []
    for event in issued:
        run = runs[event["run_id"]]
        mine = sorted((b for b in bills.values() if b["run_id"] == run["id"]), key=lambda b: b["unit_id"])
        base = {"district_id": run["district_id"], "run_id": run["id"], "who": event["user"], "at": event["at"]}
        out += [base | {"kind": "issue", "account": ACCOUNT_OF["issue"], "unit_id": b["unit_id"], "bill_id": b["id"], "amount_fen": fen(b["total"]),
                        "volume_l": litres(b["volume_m3"]), "reason": "", "ref_id": None} for b in mine]
        bill_of_unit = {b["unit_id"]: b["id"] for b in mine}
        out += [base | {"kind": "credit", "account": ACCOUNT_OF["credit"], "unit_id": a["unit_id"], "bill_id": bill_of_unit.get(a["unit_id"]),
                        "amount_fen": -fen(a["amount"]), "volume_l": 0, "reason": f"#{a['id']} on this run's bill", "ref_id": a["id"]}
                for a in adjustments if a["applied_run_id"] == run["id"]]
    return out


def _payments(bills: dict[str, dict[str, Any]], runs: dict[str, dict[str, Any]], events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A payment of the whole total per bill version 1 marked paid, by the user of its ``paid`` event."""
    payer = {}
    for e in events:
        if e["action"] == "paid":
            payer.setdefault(e["note"], e["user"])
    paid = sorted((b for b in bills.values() if b["paid_at"] is not None), key=lambda b: (b["paid_at"], b["id"]))
    return [{"kind": "payment", "account": ACCOUNT_OF["payment"], "district_id": runs[b["run_id"]]["district_id"], "unit_id": b["unit_id"],
             "bill_id": b["id"], "run_id": b["run_id"], "amount_fen": -fen(b["total"]), "volume_l": 0, "who": payer.get(b["id"], MIGRATION_USER),
             "at": b["paid_at"], "reason": "", "ref_id": None} for b in paid]
