"""docker-compose.yml run as processes on loopback, with Debian's services standing in for the images.

There is no Docker engine here, so :class:`ComposeStack` reads the shipped ``docker-compose.yml``
and runs what each service would run:

- a canalflow service (one built from ./Dockerfile, whose entry point is ``canalflow``): its
  ``command`` with its ``environment``, as a child process; one with a ``healthcheck`` is ready when
  its healthcheck command exits 0 (``fleet``: ``canalflow fleet ready``), as docker compose decides
  for ``depends_on: {condition: service_healthy}``;
- ``mosquitto``: Debian's Mosquitto 2 with the shipped ``deploy/mosquitto/mosquitto.conf``;
- ``influxdb``: Debian's InfluxDB 1.x, and ``canalflow ingest setup`` in place of the 2.x init
  script (the same database/policy layout, made with the 1.x API);
- ``postgres``: a throwaway PostgreSQL server with the image's ``POSTGRES_USER``/``_PASSWORD``/``_DB``;
- ``grafana`` is not run: the dashboards and alert rules it mounts are run by
  :mod:`dashboards.querycheck` against the InfluxDB, as Grafana's datasource would send them.

:func:`translate` is the one place that maps the compose file onto this machine: ``${VAR}`` from
the .env, ``service:port`` to a loopback port, a container path to the host file or volume
directory mounted there. ``overrides`` changes named options of a service (the tests run the
fleet's simulated clock faster, and the rollups more often, than production does).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from canalflow.errors import CanalflowError
from testbed.pipeline import CANALFLOW, INGEST_READY, PipelineError, Proc, wait_for
from testbed.services import LOOPBACK, Influxd, Mosquitto, Postgres, free_port

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / "deploy" / "env.example"
_VARIABLE = re.compile(r"\$\{(\w+)[^}]*\}")


class ComposeError(CanalflowError, RuntimeError):
    pass


def load_compose(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def read_env(path: Path = ENV_EXAMPLE) -> dict[str, str]:
    """``NAME=value`` lines of a .env file (what docker compose substitutes for ``${NAME}``)."""
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if line.strip() and not line.startswith("#"))
    return {name.strip(): value.strip() for name, value in pairs}


def mounts(service: Mapping[str, Any]) -> dict[str, str]:
    """Container path -> host path (``./...``, relative to the repository) or volume name."""
    return {entry.split(":")[1]: entry.split(":")[0] for entry in service.get("volumes", [])}


@dataclass
class Loopback:
    """Where the compose stack's names land here: volumes under ``root``, ports on 127.0.0.1."""

    root: Path
    env: dict[str, str]
    hosts: frozenset[str]  # services other containers reach by name (those run from an image)
    ports: dict[tuple[str, int], int] = field(default_factory=dict)

    def port(self, service: str, container_port: int) -> int:
        """The loopback port standing in for ``service:container_port`` (picked once)."""
        key = (service, container_port)
        if key not in self.ports:
            self.ports[key] = free_port()
        return self.ports[key]

    def volume(self, name: str) -> Path:
        path = self.root / "volumes" / name
        path.mkdir(parents=True, exist_ok=True)
        return path


def translate(word: str, service: str, compose: Mapping[str, Any], lo: Loopback) -> str:
    """One word of the compose file (a command argument, an environment value, a config line) as it
    reads on loopback: ``${VAR}`` from the .env; ``host:port`` of a service, and ``0.0.0.0``, to
    127.0.0.1 and that service's loopback port; a bare service host name to 127.0.0.1; a path below
    one of ``service``'s mount points to the host file or volume directory mounted there."""
    text = _VARIABLE.sub(lambda m: lo.env[m.group(1)], word)
    if lo.hosts:  # an empty alternation would match every ":digits" (times in --start)
        hosts = "|".join(sorted(lo.hosts))
        text = re.sub(rf"\b({hosts}):(\d+)\b", lambda m: f"{LOOPBACK}:{lo.port(m.group(1), int(m.group(2)))}", text)
    if text in lo.hosts or text == "0.0.0.0":
        return LOOPBACK
    for target, source in sorted(mounts(compose["services"][service]).items(), key=lambda item: -len(item[0])):
        if text == target or text.startswith(target.rstrip("/") + "/"):
            base = ROOT / source if source.startswith(".") else lo.volume(source)
            return str(base) + text[len(target):]
    return text


def service_command(compose: Mapping[str, Any], service: str, lo: Loopback, overrides: Mapping[str, str] = {}) -> list[str]:
    """A canalflow service's command on loopback; ``overrides`` replaces (or adds) option values.

    The service's own published port (``--port 8000``) becomes its loopback port."""
    command = list(compose["services"][service]["command"])
    for option, value in overrides.items():
        if option in command:
            command[command.index(option) + 1] = value
        else:
            command += [option, value]
    out = []
    for i, word in enumerate(command):
        if i and command[i - 1] == "--port":
            out.append(str(lo.port(service, int(word))))
        else:
            out.append(translate(word, service, compose, lo))
    return out


def healthcheck_command(compose: Mapping[str, Any], service: str, lo: Loopback) -> list[str] | None:
    """A canalflow service's healthcheck on loopback (its ``test`` after ``CMD canalflow``), or None.

    The harness asks the question docker compose asks before it starts a ``service_healthy`` dependant."""
    check = compose["services"][service].get("healthcheck")
    if not check:
        return None
    test = list(check["test"])
    if test[:2] != ["CMD", "canalflow"]:
        raise ComposeError(f"service {service}: healthcheck test {test!r}: only [\"CMD\", \"canalflow\", ...] runs here")
    return [translate(str(word), service, compose, lo) for word in test[2:]]


def service_env(compose: Mapping[str, Any], service: str, lo: Loopback) -> dict[str, str]:
    env = compose["services"][service].get("environment") or {}
    return {name: translate(str(value), service, compose, lo) for name, value in env.items()}


def mosquitto_conf(compose: Mapping[str, Any], lo: Loopback, path: Path = ROOT / "deploy" / "mosquitto" / "mosquitto.conf") -> str:
    """The shipped broker config on loopback: each ``listener PORT [ADDR]`` on its loopback port, paths
    through the mosquitto service's mounts; ``user root`` added when we are root (Mosquitto would
    switch to a ``mosquitto`` user, which cannot read our private files)."""
    lines = []
    for line in path.read_text().splitlines():
        words = line.split()
        if words[:1] == ["listener"]:
            lines.append(f"listener {lo.port('mosquitto', int(words[1]))} {LOOPBACK}")
        elif len(words) == 2 and words[1].startswith("/"):
            lines.append(f"{words[0]} {translate(words[1], 'mosquitto', compose, lo)}")
        else:
            lines.append(line)
    if os.geteuid() == 0:
        lines.append("user root")
    return "\n".join(lines) + "\n"


class ComposeMosquitto(Mosquitto):
    """Mosquitto with a given config text; ``port`` is the plain listener the readiness probe uses."""

    def __init__(self, workdir: Path, conf: str, *, port: int) -> None:
        super().__init__(workdir, port=port)
        self._conf = conf

    def config_text(self) -> str:
        return self._conf

    @property
    def log_file(self) -> Path:
        return self.output_file  # the shipped config logs to stdout


class ComposeStack:
    """Every service of docker-compose.yml, started in ``depends_on`` order, stopped in reverse."""

    def __init__(self, root: Path, *, overrides: Mapping[str, Mapping[str, str]] | None = None,
                 compose: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> None:
        self.compose = dict(compose or load_compose())
        images = frozenset(n for n, s in self.compose["services"].items() if "image" in s and "build" not in s)
        self.lo = Loopback(Path(root), dict(env or read_env()), images)
        self.overrides = overrides or {}
        self.procs: dict[str, Proc] = {}
        self.commands: dict[str, list[str]] = {}  # what each process runs (after translation)
        self._unready: dict[str, Any] = {}  # service -> its readiness check, not yet awaited
        self.health: dict[str, str] = {}  # service -> what its last healthcheck said
        self.servers: dict[str, Any] = {}
        (self.lo.root / "logs").mkdir(parents=True, exist_ok=True)

    # --- the parts ------------------------------------------------------------------------------
    def dependencies(self, name: str) -> list[str]:
        """What ``name`` needs started first: its ``depends_on`` and the service whose network it shares."""
        service = self.compose["services"][name]
        shared = service.get("network_mode", "")
        return [*(service.get("depends_on") or {}), *([shared.split(":", 1)[1]] if shared.startswith("service:") else [])]

    def order(self) -> list[str]:
        """Service names, each after everything it depends on."""
        done: list[str] = []

        def visit(name: str) -> None:
            if name not in done:
                for dependency in self.dependencies(name):
                    visit(dependency)
                done.append(name)

        for name in self.compose["services"]:
            visit(name)
        return done

    def command(self, service: str) -> list[str]:
        return service_command(self.compose, service, self.lo, self.overrides.get(service, {}))

    def env(self, service: str) -> dict[str, str]:
        return service_env(self.compose, service, self.lo)

    def start(self) -> ComposeStack:
        try:
            for name in self.order():
                for dependency in self.dependencies(name):
                    self._await(dependency)
                self._start(name)
            for name in list(self._unready):
                self._await(name)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, name: str) -> None:
        service = self.compose["services"][name]
        starter = getattr(self, f"_start_{name}", None)
        if "build" not in service:
            if starter is not None:
                starter()
            return
        if service.get("restart") == "no":
            self._one_shot(name, self.command(name), self.env(name))
            return
        proc = self._spawn(name, self.command(name), self.env(name))
        health = healthcheck_command(self.compose, name, self.lo)
        if health is not None:
            self._unready[name] = lambda: self._healthy(proc, health)
            return
        ready = {"ingest": self._ingest_ready, "billing": self._billing_ready}.get(name)
        if ready is not None:  # awaited when a later service depends on it, else once all are started
            self._unready[name] = lambda: ready(proc)

    def _await(self, name: str) -> None:
        ready = self._unready.pop(name, None)
        if ready is not None:
            try:
                wait_for(ready, 60, f"service {name} to be ready")
            except PipelineError as exc:  # timed out: say what the healthcheck answered last
                raise ComposeError(f"{exc}; last healthcheck: {self.health.get(name, '-')}") from exc

    def _start_mosquitto(self) -> None:
        conf = mosquitto_conf(self.compose, self.lo)
        plain = int(re.search(r"^listener (\d+) 127\.0\.0\.1$", (ROOT / "deploy/mosquitto/mosquitto.conf").read_text(), re.M).group(1))
        workdir = self.lo.root / "mosquitto"
        self.servers["mosquitto"] = ComposeMosquitto(workdir, conf, port=self.lo.port("mosquitto", plain)).start()

    def _start_influxdb(self) -> None:
        influxd = Influxd(self.lo.root / "influxdb", port=self.lo.port("influxdb", 8086)).start()
        self.servers["influxdb"] = influxd
        database = self.env("influxdb")["CANALFLOW_INFLUX_DB"]
        # stand-in for deploy/influxdb/init-canalflow.sh (2.x CLI): the same layout on 1.x
        self._one_shot("influxdb-init", ["ingest", "setup", "--influx", influxd.url, "--db", database], {})

    def _start_postgres(self) -> None:
        import psycopg
        from psycopg import sql

        env = self.env("postgres")
        server = Postgres(self.lo.root / "postgres", port=self.lo.port("postgres", 5432), database="postgres").start()
        self.servers["postgres"] = server
        user, password, database = env["POSTGRES_USER"], env["POSTGRES_PASSWORD"], env["POSTGRES_DB"]
        with psycopg.connect(host=server.host, port=server.port, user=server.superuser, dbname="postgres", autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(user), sql.Literal(password)))
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database), sql.Identifier(user)))

    # --- readiness ------------------------------------------------------------------------------
    def option(self, service: str, name: str) -> str:
        command = self.command(service)
        return command[command.index(name) + 1]

    def _healthy(self, proc: Proc, command: Sequence[str]) -> bool:
        """The service's own healthcheck command exits 0 (as docker runs it, in its environment)."""
        self._check(proc)
        result = subprocess.run([*CANALFLOW, *command], env=dict(os.environ, **self.env(proc.name)), capture_output=True,
                                text=True, check=False, cwd=self.lo.root, timeout=30)
        self.health[proc.name] = (result.stdout + result.stderr).strip()
        return result.returncode == 0

    def _ingest_ready(self, proc: Proc) -> bool:
        self._check(proc)
        return INGEST_READY in proc.log_path.read_text(errors="replace")

    def _billing_ready(self, proc: Proc) -> bool:
        self._check(proc)
        try:
            with urllib.request.urlopen(f"{self.api_url}/health", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    @property
    def api_url(self) -> str:
        return f"http://{LOOPBACK}:{self.option('billing', '--port')}"

    def manifest(self) -> dict[str, Any]:
        return json.loads(Path(self.option("fleet", "--manifest")).read_text())

    # --- processes ------------------------------------------------------------------------------
    def _spawn(self, name: str, command: Sequence[str], env: Mapping[str, str]) -> Proc:
        log_path = self.lo.root / "logs" / f"{name}.log"
        log = log_path.open("ab")
        full_env = dict(os.environ, PYTHONUNBUFFERED="1", **env)
        popen = subprocess.Popen([*CANALFLOW, *command], stdout=log, stderr=subprocess.STDOUT, env=full_env,
                                 stdin=subprocess.DEVNULL, cwd=self.lo.root)
        proc = self.procs[name] = Proc(name, popen, log_path, log)
        self.commands[name] = list(command)
        return proc

    def _one_shot(self, name: str, command: Sequence[str], env: Mapping[str, str]) -> None:
        result = subprocess.run([*CANALFLOW, *command], env=dict(os.environ, **env), capture_output=True, text=True,
                                check=False, cwd=self.lo.root, timeout=120)
        (self.lo.root / "logs" / f"{name}.log").write_text(result.stdout + result.stderr)
        if result.returncode != 0:
            raise ComposeError(f"service {name}: `canalflow {' '.join(command)}` failed ({result.returncode}):\n{result.stdout}{result.stderr}")

    def _check(self, proc: Proc) -> None:
        if not proc.alive():
            raise ComposeError(f"service {proc.name} exited with {proc.popen.returncode}:\n{proc.tail()}")

    def check_alive(self) -> None:
        for proc in self.procs.values():
            self._check(proc)

    def stop(self) -> None:
        for name in reversed(list(self.procs)):
            self.procs.pop(name).stop()
        for name in reversed(list(self.servers)):
            self.servers.pop(name).stop()

    def tails(self) -> str:
        return "\n".join(f"--- {p.name}: {' '.join(self.commands[p.name])}\n{p.tail()}" for p in self.procs.values())

    def __enter__(self) -> ComposeStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
