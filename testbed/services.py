"""Start and stop real Mosquitto and InfluxDB 1.x servers for tests, ``make demo`` and benchmarks.

Each service runs Debian's binary (``mosquitto`` 2.0, ``influxd`` 1.6) on a free loopback port
with a config file, data and logs in a private working directory, so several stacks can run side
by side and never touch the system services or their default ports. :class:`Postgres` does the
same with a throwaway PostgreSQL cluster, for the billing ledger's tests.

    with ServiceStack() as stack:              # both, in a temporary directory
        print(stack.mosquitto.url, stack.influxd.url)

    broker = Mosquitto(tmp / "mqtt").start()   # or one at a time
    broker.restart()                           # same port, same persistence (QoS 1 sessions survive)
    broker.stop()

``start()`` returns only when the service answers a real request (an MQTT CONNECT gets a CONNACK,
InfluxDB's ``/ping`` returns 204); if it does not within the timeout, or the process exits, a
:class:`ServiceError` carries the tail of the service's log. A missing binary raises
:class:`ServiceMissing` with the command that installs it.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, ClassVar

from canalflow.binaries import BinaryMissing, find_binary
from canalflow.errors import CanalflowError

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Self

__all__ = [
    "Influxd",
    "Mosquitto",
    "PortInUse",
    "Postgres",
    "ServiceError",
    "ServiceMissing",
    "ServiceStack",
    "TlsFiles",
    "end_mqtt_session",
    "free_port",
]

LOOPBACK = "127.0.0.1"
_LOG_TAIL_LINES = 30


class ServiceError(CanalflowError, RuntimeError):
    """A service failed to start or stop; the message includes the tail of its log."""


class ServiceMissing(ServiceError, BinaryMissing):
    """The service's binary is not installed; the message says how to install it."""


class PortInUse(ServiceError):
    """The service could not bind its port (another process took it)."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _service_binary(name: str, package: str) -> str:
    """:func:`canalflow.binaries.find_binary` for a service's own binary: a missing one is a ServiceMissing."""
    try:
        return find_binary(name, package)
    except BinaryMissing as exc:
        raise ServiceMissing(str(exc)) from None


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    tail = text.splitlines()[-lines:]
    return "\n".join(tail) if tail else f"(log {path} is empty)"


# Processes still running when the interpreter exits are killed, so a crashed test run does not
# leave brokers behind on a shared machine.  (Strong references: a service whose handle was
# dropped while running is still cleaned up.)
_RUNNING: set[_Service] = set()


@atexit.register
def _stop_leftovers() -> None:
    for service in list(_RUNNING):
        with contextlib.suppress(Exception):  # best effort at interpreter exit
            service.kill()


class _Service:
    """A child process with a config in ``workdir``, readiness probing and stop/restart/kill."""

    binary_name: ClassVar[str]
    package: ClassVar[str]
    start_timeout: float = 30.0
    stop_timeout: float = 15.0
    port_attempts: int = 3  # a port picked by free_port() can be taken before the service binds it

    def __init__(self, workdir: Path, *, ports_chosen: bool, binary: str | None = None) -> None:
        self.workdir = Path(workdir).resolve()
        self.binary = binary or _service_binary(self.binary_name, self.package)
        self._proc: subprocess.Popen[bytes] | None = None
        self._output: IO[bytes] | None = None
        self._lock = threading.Lock()
        # Ports we picked ourselves may be re-picked, until the first successful start: after
        # that a restart must come back on the same port(s).
        self._may_repick_ports = not ports_chosen

    # -- to be provided by subclasses ------------------------------------------------------
    def _write_config(self) -> list[str]:
        """Write the config into workdir and return the command line."""
        raise NotImplementedError

    def _probe(self) -> bool:
        """Return True when the service answers a real request."""
        raise NotImplementedError

    def _pick_ports(self) -> None:
        """Choose new free ports (only called before the first successful start)."""
        raise NotImplementedError

    @property
    def log_file(self) -> Path:
        """The file the service logs to (its stdout/stderr also go to ``output_file``)."""
        return self.output_file

    # -- common ---------------------------------------------------------------------------
    _port: int

    @property
    def host(self) -> str:
        return LOOPBACK

    @property
    def port(self) -> int:
        return self._port

    @property
    def output_file(self) -> Path:
        return self.workdir / f"{self.binary_name}.out"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float | None = None) -> Self:
        """Start the process and wait until it serves requests; return self."""
        self._spawn()
        self._finish_start(timeout)
        return self

    def _finish_start(self, timeout: float | None) -> None:
        """Wait for the spawned process; on a lost port race, respawn on fresh ports."""
        timeout = self.start_timeout if timeout is None else timeout
        for attempt in range(1, self.port_attempts + 1):
            try:
                self._wait_ready(timeout)
            except PortInUse:
                if not self._may_repick_ports or attempt == self.port_attempts:
                    raise
                self._pick_ports()
                self._spawn()
            else:
                self._may_repick_ports = False
                return

    def stop(self) -> None:
        """Stop gracefully (SIGTERM), escalating to SIGKILL after ``stop_timeout`` seconds."""
        self._terminate(signal.SIGTERM)

    def kill(self) -> None:
        """Kill at once (SIGKILL): simulates a crash; unsaved state is lost."""
        self._terminate(signal.SIGKILL)

    def restart(self, timeout: float | None = None) -> Self:
        """Stop gracefully and start again on the same port(s) with the same data."""
        self.stop()
        return self.start(timeout)

    def _spawn(self) -> None:
        with self._lock:
            if self.running:
                raise ServiceError(f"{self.binary_name} is already running (pid {self.pid})")
            self.workdir.mkdir(parents=True, exist_ok=True)
            command = self._write_config()
            self._output = self.output_file.open("ab")
            self._proc = subprocess.Popen(
                command,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=self._output,
                stderr=subprocess.STDOUT,
                env=self._env(),
                start_new_session=True,  # Ctrl-C in the terminal reaches us, not the service
            )
            _RUNNING.add(self)

    def _env(self) -> dict[str, str]:
        return dict(os.environ)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        delay = 0.02
        while True:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                code = proc.returncode if proc else None
                self._terminate(signal.SIGKILL)  # reap and forget the dead process
                message = self._failure(f"exited with status {code} during start")
                error = PortInUse if "address already in use" in message.lower() else ServiceError
                raise error(message)
            if self._probe() and proc.poll() is None:  # alive after answering: it was ours
                return
            if time.monotonic() > deadline:
                self.kill()
                raise ServiceError(self._failure(f"did not become ready within {timeout:.0f} s"))
            time.sleep(delay)
            delay = min(delay * 1.5, 0.25)

    def _failure(self, what: str) -> str:
        parts = [f"{self.binary_name} {what} (workdir {self.workdir})."]
        logs = [self.output_file]
        if self.log_file != self.output_file:
            logs.insert(0, self.log_file)
        for log in logs:
            parts.append(f"--- tail of {log} ---\n{_tail(log)}")
        return "\n".join(parts)

    def _terminate(self, sig: signal.Signals) -> None:
        with self._lock:
            proc = self._proc
            if proc is None:
                return
            if proc.poll() is None:
                proc.send_signal(sig)
                try:
                    proc.wait(self.stop_timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(self.stop_timeout)
            self._proc = None
            _RUNNING.discard(self)
            self._close_output()

    def _close_output(self) -> None:
        if self._output is not None:
            self._output.close()
            self._output = None

    def __enter__(self) -> Self:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<{type(self).__name__} {getattr(self, 'url', '?')} {state} in {self.workdir}>"


# --------------------------------------------------------------------------------------------
# Mosquitto
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for Mosquitto's TLS listener (served on ``Mosquitto.tls_port``)."""

    cafile: Path
    certfile: Path
    keyfile: Path
    require_certificate: bool = False


class Mosquitto(_Service):
    """Debian's Mosquitto 2.x on 127.0.0.1, persistence in ``workdir``.

    - ``allow_anonymous true`` unless ``password_file`` is given (then only its users).
    - Persistence is on: a graceful ``stop()``/``restart()`` keeps persistent (clean_session
      False) sessions, their subscriptions and queued QoS 1 messages.  ``kill()`` loses what was
      received since the last autosave (Mosquitto does not write per message), as a crash would.
    - ``extra_conf`` is appended verbatim (e.g. ``"autosave_interval 1\\n"``).
    """

    binary_name = "mosquitto"
    package = "mosquitto"
    max_queued_messages = 1_000_000
    max_inflight_messages = 100

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        password_file: Path | None = None,
        acl_file: Path | None = None,
        tls: TlsFiles | None = None,
        tls_port: int | None = None,
        extra_conf: str = "",
    ) -> None:
        super().__init__(workdir, ports_chosen=port is not None)
        self._port = port or free_port()
        self._tls_port_chosen = tls_port
        self.password_file = Path(password_file).resolve() if password_file else None
        self.acl_file = Path(acl_file).resolve() if acl_file else None
        self.tls = tls
        self._tls_port = (tls_port or free_port()) if tls else None
        self.extra_conf = extra_conf

    def _pick_ports(self) -> None:
        self._port = free_port()
        if self.tls and not self._tls_port_chosen:
            self._tls_port = free_port()

    @property
    def tls_port(self) -> int | None:
        return self._tls_port

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def tls_url(self) -> str | None:
        return f"mqtts://{self.host}:{self._tls_port}" if self._tls_port else None

    @property
    def config_file(self) -> Path:
        return self.workdir / "mosquitto.conf"

    @property
    def log_file(self) -> Path:
        return self.workdir / "mosquitto.log"

    def config_text(self) -> str:
        """The mosquitto.conf this instance runs with."""
        lines = [
            "# written by testbed.services.Mosquitto",
            "per_listener_settings false",
            f"listener {self.port} {LOOPBACK}",
            "set_tcp_nodelay true",
            "persistence true",
            f"persistence_location {self.workdir}/",
            "persistence_file mosquitto.db",
            f"max_queued_messages {self.max_queued_messages}",
            "max_queued_bytes 0",
            f"max_inflight_messages {self.max_inflight_messages}",
            f"log_dest file {self.log_file}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # as root, mosquitto would switch to 'mosquitto' otherwise
        if self.password_file:
            lines += ["allow_anonymous false", f"password_file {self.password_file}"]
        else:
            lines.append("allow_anonymous true")
        if self.acl_file:
            lines.append(f"acl_file {self.acl_file}")
        if self.tls:
            lines += self._tls_lines(self.tls)
        if self.extra_conf:
            lines.append(self.extra_conf.rstrip("\n"))
        return "\n".join(lines) + "\n"

    def _tls_lines(self, tls: TlsFiles) -> list[str]:
        return [
            f"listener {self._tls_port} {LOOPBACK}",
            f"cafile {Path(tls.cafile).resolve()}",
            f"certfile {Path(tls.certfile).resolve()}",
            f"keyfile {Path(tls.keyfile).resolve()}",
            f"require_certificate {'true' if tls.require_certificate else 'false'}",
        ]

    def _write_config(self) -> list[str]:
        self.config_file.write_text(self.config_text())
        return [self.binary, "-c", str(self.config_file)]

    def _probe(self) -> bool:
        """True once an MQTT CONNECT gets any CONNACK (even 'not authorised')."""
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5):
                pass
        except OSError:
            return False
        return _mqtt_connack(self.host, self.port, timeout=2.0, alive=lambda: self.running)


def _mqtt_connack(host: str, port: int, timeout: float, alive: Callable[[], bool]) -> bool:
    """Send an MQTT CONNECT and wait for any CONNACK, giving up if ``alive()`` turns False."""
    import paho.mqtt.client as mqtt  # imported here: only the broker probe needs paho

    got: list[object] = []
    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id=f"canalflow-probe-{os.getpid()}-{time.monotonic_ns()}",
        clean_session=True,
    )
    client.on_connect = lambda _c, _u, _f, reason, _p: got.append(reason)
    try:
        client.connect(host, port, keepalive=10)
        deadline = time.monotonic() + timeout
        while not got and time.monotonic() < deadline and alive():
            client.loop(timeout=0.05)
        return bool(got)
    except OSError:
        return False
    finally:
        _close_quietly(client)


def _close_quietly(client: object) -> None:
    with contextlib.suppress(Exception):  # the probe client is thrown away
        client.disconnect()  # type: ignore[attr-defined]
        client.loop(timeout=0.01)  # type: ignore[attr-defined]
    sock = client.socket()  # type: ignore[attr-defined]
    if sock is not None:
        sock.close()


def end_mqtt_session(url: str, client_id: str) -> None:
    """Drop a stopped client's persistent session, so that a broker shared between tests stops
    queueing messages for it (the next client taking that id would be handed them)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    from canalflow.mqtt import MqttTarget

    target = MqttTarget.from_url(url)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 0
    with contextlib.suppress(OSError):  # a broker stopped by its test has no sessions left to drop
        client.connect(target.host, target.port, clean_start=True, properties=props)
        client.loop_start()
        time.sleep(0.1)
        client.disconnect()
        client.loop_stop()


# --------------------------------------------------------------------------------------------
# InfluxDB 1.x
# --------------------------------------------------------------------------------------------


class Influxd(_Service):
    """Debian's InfluxDB 1.6 (``influxd``) on 127.0.0.1 with meta/data/wal in ``workdir``.

    HTTP API on ``port`` (``url``), the RPC/backup service on a second free port, no usage
    reporting, no ``_internal`` monitor database, HTTP request logging off; the server's own
    log goes to ``influxd.out`` in workdir.
    """

    binary_name = "influxd"
    package = "influxdb"

    def __init__(self, workdir: Path, *, port: int | None = None) -> None:
        super().__init__(workdir, ports_chosen=False)
        self._port_chosen = port is not None
        self._port = port or free_port()
        self.rpc_port = free_port()

    def _pick_ports(self) -> None:
        if not self._port_chosen:
            self._port = free_port()
        self.rpc_port = free_port()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def config_file(self) -> Path:
        return self.workdir / "influxdb.conf"

    def config_text(self) -> str:
        """The influxdb.conf this instance runs with (InfluxDB 1.6 syntax)."""
        root = self.workdir
        return f"""# written by testbed.services.Influxd
reporting-disabled = true
bind-address = "{LOOPBACK}:{self.rpc_port}"

[meta]
  dir = "{root}/meta"
  logging-enabled = false

[data]
  dir = "{root}/data"
  wal-dir = "{root}/wal"
  wal-fsync-delay = "0s"
  query-log-enabled = false
  trace-logging-enabled = false

[coordinator]
  log-queries-after = "0s"

[retention]
  enabled = true

[shard-precreation]
  enabled = true

[monitor]
  store-enabled = false

[http]
  enabled = true
  bind-address = "{LOOPBACK}:{self.port}"
  auth-enabled = false
  log-enabled = false
  write-tracing = false
  pprof-enabled = false
  https-enabled = false

[logging]
  level = "warn"
  suppress-logo = true

[subscriber]
  enabled = false

[continuous_queries]
  enabled = true
  log-enabled = false
"""

    def _write_config(self) -> list[str]:
        self.config_file.write_text(self.config_text())
        return [self.binary, "-config", str(self.config_file)]

    def _env(self) -> dict[str, str]:
        # INFLUXDB_* variables override the config file; keep them out of our private server.
        return {k: v for k, v in os.environ.items() if not k.startswith("INFLUXDB_")}

    def _probe(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/ping", timeout=1.0) as response:
                return response.status == 204
        except (OSError, urllib.error.URLError):
            return False


# --------------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------------

# Debian keeps the server binaries off PATH, in /usr/lib/postgresql/<major>/bin.
POSTGRES_LIB = Path("/usr/lib/postgresql")
POSTGRES_OS_USER = "postgres"  # run as this user when we are root: PostgreSQL refuses to run as root


def _major_version(bindir: Path) -> tuple[int, ...]:
    name = bindir.parent.name
    return tuple(int(part) for part in name.split(".")) if name.replace(".", "").isdigit() else ()


def _postgres_bindir() -> Path:
    """The directory holding ``postgres`` and ``initdb``: PATH first, else Debian's newest major version."""
    on_path = shutil.which("postgres")
    candidates = [Path(on_path).resolve().parent] if on_path else []
    candidates += sorted(POSTGRES_LIB.glob("*/bin"), key=_major_version, reverse=True)
    for bindir in candidates:
        if all(os.access(bindir / name, os.X_OK) for name in ("postgres", "initdb")):
            return bindir
    raise ServiceMissing(
        f"postgres and initdb not found (searched PATH, {POSTGRES_LIB}/*/bin). Install them with "
        "`sudo apt-get install postgresql` (or run `make deps`), then retry."
    )


def _postgres_owner() -> tuple[int, int] | None:
    """(uid, gid) to run the server as when we are root; None to run it as ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(POSTGRES_OS_USER)
    except KeyError:
        raise ServiceMissing(
            f"running as root, PostgreSQL needs the {POSTGRES_OS_USER!r} system user to run as; "
            "`sudo apt-get install postgresql` creates it (or run `make deps`)."
        ) from None
    return entry.pw_uid, entry.pw_gid


class Postgres(_Service):
    """A throwaway PostgreSQL server (Debian's newest installed major version) on 127.0.0.1.

    - The cluster lives in its own ``tempfile.mkdtemp()`` directory, not in ``workdir``:
      PostgreSQL wants its data directory owned by the user it runs as and every parent
      traversable by that user (pytest's temporary directories are 0700 root when CI runs as
      root).  ``initdb`` runs on the first start; ``stop()`` removes the cluster, ``restart()``
      and ``kill()`` keep it.  The server's log goes to ``postgres.out`` in ``workdir``.
    - As root, ``initdb`` and ``postgres`` run as the ``postgres`` system user (through
      ``setpriv``, which execs, so signals reach the server itself).
    - TCP on 127.0.0.1 only, the Unix socket in the private directory, ``trust`` authentication
      for local and loopback connections only, UTF-8, C locale, fsync off: a test server (a
      committed transaction survives ``kill()``, not a power cut).
    - ``database`` is created at start; ``url`` is its SQLAlchemy URL (``postgresql+psycopg://``).
    """

    binary_name = "postgres"
    package = "postgresql"
    superuser = "postgres"

    def __init__(self, workdir: Path, *, port: int | None = None, database: str = "canalflow") -> None:
        self.bindir = _postgres_bindir()  # Debian keeps postgres off PATH
        super().__init__(workdir, ports_chosen=port is not None, binary=str(self.bindir / "postgres"))
        self._owner = _postgres_owner()
        self._setpriv = _service_binary("setpriv", "util-linux") if self._owner else ""
        try:
            import psycopg  # noqa: F401  (the readiness probe and create_database use it)
        except ImportError:
            raise ServiceMissing("the psycopg driver is missing: `pip install 'psycopg[binary]>=3.1,<4'` (in the dev extra)") from None
        self._port = port or free_port()
        self.database = database
        self.rundir: Path | None = None  # the private directory: cluster in rundir/data, socket in rundir
        atexit.register(self._stop_at_exit)  # runs before _stop_leftovers (atexit is LIFO): stop, then remove

    def _pick_ports(self) -> None:
        self._port = free_port()

    @property
    def url(self) -> str:
        return self.url_of(self.database)

    def url_of(self, database: str) -> str:
        """SQLAlchemy URL of a database on this server."""
        return f"postgresql+psycopg://{self.superuser}@{self.host}:{self.port}/{database}"

    @property
    def datadir(self) -> Path | None:
        return self.rundir / "data" if self.rundir else None

    def start(self, timeout: float | None = None) -> Self:
        super().start(timeout)
        self.create_database(self.database)
        return self

    def stop(self) -> None:
        """Fast shutdown, then remove the cluster (a later ``start()`` runs initdb again)."""
        self._shutdown()
        if self.rundir is not None:
            shutil.rmtree(self.rundir, ignore_errors=True)
            self.rundir = None

    def restart(self, timeout: float | None = None) -> Self:
        """Fast shutdown and start again on the same port with the same data."""
        self._shutdown()
        return self.start(timeout)

    def kill(self) -> None:
        """Kill the server and its backends at once (SIGKILL to the process group): a crash.

        Committed transactions survive; ``start()`` recovers them (same port, same data).
        """
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # a backend left behind would keep the old shared memory in use
        self._terminate(signal.SIGKILL)

    def _shutdown(self) -> None:
        # SIGINT is PostgreSQL's fast shutdown; its SIGTERM waits until every client disconnects.
        self._terminate(signal.SIGINT)

    def _stop_at_exit(self) -> None:
        with contextlib.suppress(Exception):  # best effort at interpreter exit
            self.stop()

    def create_database(self, name: str, *, icu_locale: str | None = None) -> str:
        """Create database ``name`` unless it exists and return its URL.

        ``icu_locale`` (e.g. ``"en-US"``) makes the database sort text by that locale, like a
        production server initialised with ``en_US.UTF-8``, instead of this cluster's C locale.
        """
        from psycopg import sql

        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if icu_locale:
            query += sql.SQL(" TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE {}").format(sql.Literal(icu_locale))
        with self._admin() as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
                conn.execute(query)
        return self.url_of(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` if it exists, disconnecting its clients."""
        from psycopg import sql

        with self._admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def _admin(self) -> Any:
        import psycopg

        return psycopg.connect(host=self.host, port=self.port, user=self.superuser, dbname="postgres",
                               autocommit=True, connect_timeout=5)

    def _probe(self) -> bool:
        import psycopg

        try:
            with self._admin() as conn:
                conn.execute("SELECT 1")
        except psycopg.OperationalError:
            return False
        return True

    def _env(self) -> dict[str, str]:
        # PG* variables (PGDATA, PGPORT, PGOPTIONS...) would override our private server's settings.
        return {k: v for k, v in os.environ.items() if not k.startswith("PG")}

    def _as_owner(self, command: list[str]) -> list[str]:
        if self._owner is None:
            return command
        uid, gid = self._owner
        return [self._setpriv, f"--reuid={uid}", f"--regid={gid}", "--init-groups", "--", *command]

    def _write_config(self) -> list[str]:
        if self.rundir is None:
            self._init_cluster()
        assert self.rundir is not None and self.datadir is not None
        settings = {
            "listen_addresses": LOOPBACK,
            "port": self.port,
            "unix_socket_directories": self.rundir,
            # Nothing is flushed to disk, but a commit still writes its WAL before it returns: a
            # committed transaction survives kill(), as it would a crash of a production server.
            "fsync": "off",
            "full_page_writes": "off",
        }
        options = [arg for key, value in settings.items() for arg in ("-c", f"{key}={value}")]
        return self._as_owner([self.binary, "-D", str(self.datadir), *options])

    def _init_cluster(self) -> None:
        rundir = Path(tempfile.mkdtemp(prefix="canalflow-postgres-"))
        if self._owner:
            os.chown(rundir, *self._owner)
        datadir = rundir / "data"
        command = [str(self.bindir / "initdb"), "-D", str(datadir), "-U", self.superuser, "-E", "UTF8",
                   "--no-locale", "--auth=trust", "--no-sync"]
        with self.output_file.open("ab") as out:
            done = subprocess.run(self._as_owner(command), cwd=rundir, stdin=subprocess.DEVNULL, stdout=out,
                                  stderr=subprocess.STDOUT, env=self._env(), check=False)
        if done.returncode != 0:
            shutil.rmtree(rundir, ignore_errors=True)
            raise ServiceError(self._failure(f"initdb exited with status {done.returncode}"))
        hba = datadir / "pg_hba.conf"
        hba.write_text("# written by testbed.services.Postgres: a throwaway test server, loopback only\n"
                       "local all all trust\n"
                       f"host all all {LOOPBACK}/32 trust\n")
        if self._owner:
            os.chown(hba, *self._owner)
        self.rundir = rundir


# --------------------------------------------------------------------------------------------
# Both together
# --------------------------------------------------------------------------------------------


class ServiceStack:
    """A Mosquitto and an Influxd side by side in ``workdir`` (a temporary directory if None).

    Both processes are launched first and then awaited, so the stack starts in the time of the
    slower one.  The temporary directory, if we made it, is removed on ``stop()``.
    """

    def __init__(self, workdir: Path | None = None, *, keep: bool = False) -> None:
        self._own_dir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="canalflow-"))
        self.keep = keep
        self.mosquitto = Mosquitto(self.workdir / "mosquitto")
        self.influxd = Influxd(self.workdir / "influxd")

    @property
    def mqtt_url(self) -> str:
        return self.mosquitto.url

    @property
    def influx_url(self) -> str:
        return self.influxd.url

    def start(self, timeout: float = 60.0) -> Self:
        services: list[_Service] = [self.influxd, self.mosquitto]
        try:
            for service in services:
                service._spawn()
            deadline = time.monotonic() + timeout
            for service in services:
                service._finish_start(max(1.0, deadline - time.monotonic()))
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self.mosquitto.stop()
        self.influxd.stop()
        if self._own_dir and not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
