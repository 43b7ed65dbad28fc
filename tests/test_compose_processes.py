"""The production stack as processes: docker-compose.yml's services run on loopback
(testbed.compose: Debian's Mosquitto, InfluxDB 1.x and PostgreSQL standing in for the images),
simulated meters driven through it, and what an operator looks at checked: bills through the API
into the PostgreSQL ledger, their KPIs, rollups, and rows for every dashboard and alert query
Grafana would send. Everything the compose file says is used as written (TLS to the broker,
secrets from files and the environment) except the clock: the fleet runs 1440x through one local
day of spring round S1 (with a canal breach), the edges report status and ingest rolls up every
few seconds, so the day passes in about a minute (CI budget)."""

from __future__ import annotations

import datetime as dt
import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from canalflow.clock import SimClock
from canalflow.contract import M, source_of
from canalflow.credentials import secret_file
from canalflow.district import load_district
from canalflow.influx import InfluxV1
from dashboards.build import season_at
from dashboards.querycheck import alert_rules, check_dashboard, evaluate_rule
from testbed.compose import ROOT, ComposeStack, load_compose, read_env
from testbed.pipeline import wait_for

pytestmark = pytest.mark.slow

COMPOSE = load_compose()

DISTRICT = load_district(ROOT / "examples" / "demo-district.yaml")
DAY = dt.datetime(2026, 3, 12, tzinfo=dt.timezone(dt.timedelta(hours=8)))  # a local day of round S1 with a breach
# every meter reports 3-8 wall seconds (1-3 simulated hours) after the fleet starts, measured on 2 loaded
# cores; the billed fixture checks that all did before the day began
START = DAY - dt.timedelta(hours=4)
SPEED = 1440  # a simulated day a minute
# The time lapse (and the breach that the loss panel and alert must show); the rest is the compose file.
OVERRIDES: dict[str, dict[str, str]] = {
    "fleet": {"--speed": str(SPEED), "--start": START.isoformat(), "--scenario": str(ROOT / "examples/scenarios/breach.yaml")},
    "ingest": {"--rollup-every": "3"},
    **{name: {"--status-interval": "0.5"} for name in COMPOSE["services"] if name.startswith("edge-")},  # 12 simulated min
}
# Queries that cannot return rows yet, with the reason; each must fail (strict), so the list shrinks.
CHARGED = [u for u in DISTRICT.units if DISTRICT.is_charged(u)]  # units and entities with a bill of their own


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Any:
    compose = ComposeStack(tmp_path_factory.mktemp("compose"), overrides=OVERRIDES, compose=COMPOSE)
    try:
        compose.start()
        yield compose
    except Exception:
        print(compose.tails())
        raise
    finally:
        compose.stop()


def influx(stack: ComposeStack) -> InfluxV1:
    env = stack.env("billing")
    return InfluxV1(env["CANALFLOW_INFLUX_URL"], env["CANALFLOW_INFLUX_DB"])


def wait(predicate: Any, timeout: float, what: str, stack: ComposeStack) -> None:
    wait_for(lambda: (stack.check_alive(), predicate())[1], timeout, what)


def api(stack: ComposeStack, user: str, path: str, body: dict[str, Any] | None = None) -> Any:
    token = secret_file(stack.lo.volume("mqtt-credentials"), f"api-{user}").read_text().strip()
    request = urllib.request.Request(f"{stack.api_url}{path}", data=json.dumps(body).encode() if body else None,
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def billed(stack: ComposeStack) -> dict[str, Any]:
    """Run the stack over a whole local day, then bill that day through the API as a clerk would."""
    db = influx(stack)

    def every_point() -> bool:
        rows = db.query(f'SELECT count("qcode") FROM {source_of(M.readings)} GROUP BY "point"')
        return set(DISTRICT.points) <= {r["tags"]["point"] for r in rows}

    clock = SimClock(**stack.manifest()["clock"])
    start, end = int(DAY.timestamp() * 1000), int((DAY + dt.timedelta(days=1)).timestamp() * 1000)
    wait(every_point, 60, f"readings of all {len(DISTRICT.points)} points", stack)
    assert clock.now_ms() < start, f"every meter reported only after {DAY.date()} began: start the fleet earlier (START)"
    wait(lambda: clock.now_ms() >= end + 5 * 60_000, 120, f"the simulated end of {DAY.date()}", stack)
    run = api(stack, "clerk", "/runs", {"from": DAY.isoformat(), "to": (DAY + dt.timedelta(days=1)).isoformat()})
    day_balance = (f'SELECT count("loss_m3") FROM {source_of(M.balance)} WHERE "incomplete" = false '
                   f"AND time >= {start}ms AND time < {end}ms")
    wait(lambda: bool(db.query(day_balance)), 30, f"complete reach balances of {DAY.date()} (ingest's rollup loop)", stack)
    # the "today" panels read the new day's first hourly rollup: look once it exists, as a manager would after 01:00
    today = f"SELECT count(\"volume_m3\") FROM {source_of(M.volume)} WHERE \"interval\" = '1h' AND time >= {end}ms"
    wait(lambda: bool(db.query(today)), 60, "the first hourly rollup of the next day", stack)
    return {"run": run, "now_ms": clock.now_ms()}


def test_bills_come_out_of_the_api_into_the_postgres_ledger(stack: ComposeStack, billed: dict[str, Any]) -> None:
    run_id = billed["run"]["run_id"]
    bills = api(stack, "viewer", f"/runs/{run_id}/bills?limit=500")
    assert bills["total"] == len(CHARGED) > 0  # households sharing by area get statements, not bills
    assert sum(float(b["volume_m3"]) for b in bills["items"]) > 0  # water was metered and billed
    assert api(stack, "viewer", f"/runs/{run_id}")["id"] == run_id
    kpis = influx(stack).query(f'SELECT count("total_yuan") FROM {source_of(M.billing)} WHERE "run" = \'{run_id[:12]}\'')
    assert kpis and kpis[0]["values"][0][1] == len(CHARGED)  # the run wrote its KPIs for the dashboards
    import sqlalchemy

    engine = sqlalchemy.create_engine(stack.env("billing")["CANALFLOW_LEDGER"])  # the compose ledger URL, on loopback
    try:
        with engine.connect() as conn:
            stored = conn.execute(sqlalchemy.text("SELECT count(*) FROM bills WHERE run_id = :r"), {"r": run_id}).scalar()
    finally:
        engine.dispose()
    assert engine.dialect.name == "postgresql" and stored == len(CHARGED)


def test_every_dashboard_and_alert_query_returns_rows(stack: ComposeStack, billed: dict[str, Any]) -> None:
    db, now_ms = influx(stack), billed["now_ms"]
    boards = [json.loads(p.read_text()) for p in sorted((ROOT / "deploy/grafana/dashboards").glob("*.json"))]
    results = [r for board in boards for r in check_dashboard(board, db, now_ms=now_ms, overrides=season_at(DISTRICT, now_ms))]
    alerting = yaml.safe_load((ROOT / "deploy/grafana/provisioning/alerting/canalflow-demo.yaml").read_text())
    for rule in alert_rules(alerting):
        results += evaluate_rule(rule, db, now_ms=now_ms).results
    failures = [str(r) for r in results if not r.ok]
    assert not failures, "\n".join(failures)
    assert len(results) >= 30


def test_no_secret_on_any_command_line(stack: ComposeStack, billed: dict[str, Any]) -> None:
    """What `ps` shows of every running service holds none of the .env secrets nor a password file's content."""
    secrets_dir = stack.lo.volume("mqtt-credentials") / "secrets"
    secrets = {*read_env().values(), *(p.read_text().strip() for p in secrets_dir.iterdir())}
    pids = {name: proc.popen.pid for name, proc in stack.procs.items()}
    pids |= {name: server.pid for name, server in stack.servers.items()}
    assert {"ingest", "billing", "fleet", "mosquitto", "influxdb", "postgres"} <= set(pids)
    for name, pid in pids.items():
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        leaked = [s for s in secrets if s and s in cmdline]
        assert not leaked, f"service {name}: a secret is on its command line"


def test_gateways_and_ingest_reach_the_broker_over_tls(stack: ComposeStack, billed: dict[str, Any]) -> None:
    for name, command in stack.commands.items():
        if "--mqtt" in command:
            url = command[command.index("--mqtt") + 1]
            assert url.startswith("mqtts://"), f"service {name} connects without TLS: {url}"
    assert any(name.startswith("edge-") for name in stack.procs)
