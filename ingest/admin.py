"""Database administration (``ingest setup``) and dead-letter replay."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from canalflow.contract import RAW_RP, ROLLUP_RP, bucket_of
from canalflow.errors import CanalflowError
from canalflow.influx import InfluxV1, quote_ident
from ingest.deadletter import DeadLetter, DeadLetterStore
from ingest.validate import MessageValidator, Rejected
from ingest.writer import ResilientWriter


def setup_database(client: InfluxV1, *, raw_retention: str = "730d", rollup_retention: str = "INF") -> list[str]:
    """Create the database, the default ``raw`` policy and the longer ``rollups`` policy (idempotent).

    Returns what was done, one line each. Which measurement lives in which policy is
    ``canalflow.contract.RETENTION_POLICY``; writers and readers name the policy, so a database not
    made by this function answers "retention policy not found" instead of silently hiding data.
    """
    done = []
    client.create_database()
    done.append(f"database {client.database!r} present")
    existing = {row["name"]: row for row in client.query_points("SHOW RETENTION POLICIES")}
    refuse_hidden_data(client, [name for name in existing if name not in (RAW_RP, ROLLUP_RP)])
    for name, duration, default in ((RAW_RP, raw_retention, True), (ROLLUP_RP, rollup_retention, False)):
        verb = "ALTER" if name in existing else "CREATE"
        if verb == "CREATE":
            client.create_retention_policy(name, duration, default=default)
        else:
            client.execute(
                f'ALTER RETENTION POLICY "{name}" ON "{client.database}" DURATION {duration}' + (" DEFAULT" if default else "")
            )
        state = "created" if verb == "CREATE" else "altered"
        done.append(f"retention policy {name!r}: {duration}{' (default)' if default else ''} [{state}]")
    return done


def refuse_hidden_data(client: InfluxV1, policies: list[str]) -> None:
    """Raise when one of ``policies`` (not canalflow's) holds points: with ``raw`` as the default
    policy they would vanish from every query that does not name their policy."""
    db = quote_ident(client.database)
    for policy in policies:
        series = client.query(f"SELECT * FROM {db}.{quote_ident(policy)}./.*/ LIMIT 1")
        measurements = sorted({item["name"] for item in series if item["values"]})
        if not measurements:
            continue
        raise CanalflowError(
            f"database {client.database!r} holds points in retention policy {policy!r} (measurements: "
            f"{', '.join(measurements)}); making {RAW_RP!r} the default would hide them from every query",
            hint=(f"move them first, e.g. SELECT * INTO {db}.{quote_ident(RAW_RP)}.:MEASUREMENT FROM "
                  f"{db}.{quote_ident(policy)}./.*/ GROUP BY * (rollup measurements into {ROLLUP_RP!r}), "
                  f"then DROP RETENTION POLICY {quote_ident(policy)} ON {db} and run `canalflow ingest setup` "
                  "again; or set up a new --db"))


@dataclass
class ReplayResult:
    replayed: int = 0
    failed: int = 0


def replay(letters: Iterable[DeadLetter], store: DeadLetterStore, validator: MessageValidator, writer: ResilientWriter,
           *, dry_run: bool = False) -> tuple[ReplayResult, list[str]]:
    """Validate each dead letter again (the operator fixed the cause) and write the ones that pass.

    Writes are idempotent, so replaying twice changes nothing. A letter that still fails keeps its
    place in the store with the new reason in ``replay_note``.
    """
    result = ReplayResult()
    notes = []
    for letter in letters:
        outcome = validator.validate(letter.topic, letter.payload)
        if isinstance(outcome, Rejected):
            result.failed += 1
            note = f"still rejected: {outcome.reason}: {outcome.detail}"
            notes.append(f"#{letter.id}: {note}")
            if not dry_run:
                store.note_failed_replay(letter.id, note)
            continue
        if dry_run:
            notes.append(f"#{letter.id}: would write {outcome.readings} reading(s)")
            result.replayed += 1
            continue
        report = writer.write(outcome.lines)
        if report.refused:
            result.failed += 1
            note = f"InfluxDB refused {len(report.refused)} line(s): {report.refused[0].error}"
            store.note_failed_replay(letter.id, note)
            notes.append(f"#{letter.id}: {note}")
            continue
        store.mark_replayed(letter.id, f"wrote {len(outcome.lines)} line(s)")
        result.replayed += 1
        notes.append(f"#{letter.id}: replayed, {len(outcome.lines)} line(s)")
    return result, notes


def retention_seconds(duration: str) -> int:
    """``"730d"``, ``"12h"``, ``"2w"``, ``"90m"`` or ``"INF"`` -> seconds (0 = keep forever)."""
    text = duration.strip().lower()
    if text in ("inf", "0", "0s"):
        return 0
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    if len(text) < 2 or text[-1] not in units or not text[:-1].isdigit():
        raise ValueError(f"retention {duration!r}: use a number with s, m, h, d or w (e.g. 730d), or INF")
    return int(text[:-1]) * units[text[-1]]


def setup_v2(url: str, token: str, org: str, db: str, *, raw_retention: str = "730d", rollup_retention: str = "INF") -> list[str]:
    """InfluxDB 2.x: buckets ``db-raw`` and ``db-rollups`` (:func:`canalflow.contract.bucket_of`) with retention, and the DBRP mappings that make
    the v1 API used everywhere else see them as database ``db``, policies ``raw`` (default) and ``rollups``.

    Not exercised against a live 2.x server in this repository's tests (none is installable here);
    the v1 path that all components use is.
    """
    from influxdb_client import BucketRetentionRules, InfluxDBClient
    from influxdb_client.domain.dbrp_create import DBRPCreate
    from influxdb_client.service.dbr_ps_service import DBRPsService

    done = []
    with InfluxDBClient(url=url, token=token, org=org, timeout=30_000) as client:
        buckets = client.buckets_api()
        org_id = client.organizations_api().find_organizations(org=org)[0].id
        dbrps = DBRPsService(client.api_client)
        existing = {(m.database, m.retention_policy) for m in (dbrps.get_dbr_ps(org_id=org_id).content or [])}
        for bucket_name, rp, duration, default in ((bucket_of(db, RAW_RP), RAW_RP, raw_retention, True),
                                                   (bucket_of(db, ROLLUP_RP), ROLLUP_RP, rollup_retention, False)):
            seconds = retention_seconds(duration)
            rules = [BucketRetentionRules(type="expire", every_seconds=seconds)] if seconds else []
            bucket = buckets.find_bucket_by_name(bucket_name)
            if bucket is None:
                bucket = buckets.create_bucket(bucket_name=bucket_name, retention_rules=rules, org_id=org_id)
                done.append(f"bucket {bucket_name!r} created ({duration})")
            else:
                bucket.retention_rules = rules
                buckets.update_bucket(bucket)
                done.append(f"bucket {bucket_name!r} retention set to {duration}")
            if (db, rp) not in existing:
                dbrps.post_dbrp(DBRPCreate(org_id=org_id, bucket_id=bucket.id, database=db, retention_policy=rp, default=default))
                done.append(f"DBRP mapping {db}/{rp} -> bucket {bucket_name!r}")
    return done
