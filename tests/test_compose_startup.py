"""docker-compose.yml's start-up order without races: the fleet's healthcheck (`canalflow fleet
ready`) is what the edge agents wait for, and the test harness (testbed.compose) asks the same
question, so a manifest left on the `fleet-run` volume by an earlier run is never taken for this
run's. Runs the compose file's own fleet service as a process (seconds; the whole stack is
tests/test_compose_processes.py)."""

from __future__ import annotations

from pathlib import Path

from canalflow.district import load_district
from testbed.compose import ROOT, ComposeStack, load_compose
from tests.firmware_sim.manifest_kit import stale_manifest

COMPOSE = load_compose()


def test_the_harness_waits_for_this_runs_manifest_not_the_one_left_on_the_volume(tmp_path: Path) -> None:
    only_fleet = {"services": {"fleet": COMPOSE["services"]["fleet"]}, "volumes": COMPOSE["volumes"]}
    stack = ComposeStack(tmp_path, compose=only_fleet)
    manifest = Path(stack.option("fleet", "--manifest"))
    assert manifest.is_relative_to(stack.lo.volume("fleet-run"))  # the volume a second `docker compose up` keeps
    old = stale_manifest(manifest, load_district(ROOT / "examples" / "demo-district.yaml"))
    with stack:
        fresh = stack.manifest()
        assert fresh["writer"]["pid"] == stack.procs["fleet"].popen.pid != old["writer"]["pid"]
        assert fresh["clock"] != old["clock"]
        assert stack.health["fleet"].endswith("answer") and "ready" in stack.health["fleet"]
