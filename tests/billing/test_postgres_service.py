"""testbed.services.Postgres, the throwaway PostgreSQL the ledger tests run on."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from testbed import services
from testbed.services import Postgres, ServiceMissing


def _owner(path_or_proc: Path) -> str:
    return pwd.getpwuid(path_or_proc.stat().st_uid).pw_name


def test_restart_and_kill_keep_the_data_and_stop_removes_the_cluster(tmp_path: Path) -> None:
    server = Postgres(tmp_path / "pg", database="kept").start()
    try:
        rundir, port = server.rundir, server.port
        assert rundir is not None and server.datadir is not None
        expected_user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        assert _owner(server.datadir) == expected_user and _owner(Path(f"/proc/{server.pid}")) == expected_user
        engine = create_engine(server.url, poolclass=NullPool)
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (ms bigint)"))
            conn.execute(text("INSERT INTO t VALUES (253402300799999)"))
        server.restart()
        server.kill()  # the server and its backends, at once
        server.start()
        assert server.port == port and server.rundir == rundir
        with engine.connect() as conn:
            assert conn.execute(text("SELECT ms FROM t")).scalar_one() == 253402300799999
    finally:
        server.stop()
    assert not rundir.exists()
    log = (tmp_path / "pg" / "postgres.out").read_text()
    assert "database system is ready to accept connections" in log and "database system was interrupted" in log


def test_a_machine_without_postgresql_is_told_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(services, "POSTGRES_LIB", tmp_path / "no-postgresql")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ServiceMissing, match=r"apt-get install postgresql"):
        Postgres(tmp_path / "pg")
