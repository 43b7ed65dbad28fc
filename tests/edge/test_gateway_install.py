"""The gateway install as an operator does it (docs/edge.md, "Install on a gateway"), into a temporary root.

The steps of the docs run against a directory that stands in for the gateway's `/`: `useradd --root`
creates the system user `canalflow` (in dialout) in that root's /etc/passwd, the example config and the
demo district are installed `640 root:canalflow` in `/etc/canalflow`, and the operator edits the config
(meter address, broker, metrics port). The agent then runs the unit's own `ExecStartPre` and `ExecStart`
lines in a private mount namespace, chrooted into the root, as `canalflow` with the groups the unit gives
it (its own group and `SupplementaryGroups`), with `NoNewPrivileges`, the root mounted read-only like
`ProtectSystem=strict` and only `ReadWritePaths` (the `StateDirectory`) writable, in its
`WorkingDirectory`. It polls simulated meters over TCP and publishes to a test broker; the buffer is in
`/var/lib/canalflow` and nothing is written in `/etc/canalflow`.

What the test cannot reproduce here (it needs systemd as PID 1): `systemctl enable --now`, the journal,
`Restart=`, `MemoryMax=`; the venv is this machine's (bound at `/opt/canalflow/.venv`) and its interpreter
lives under /root, which is bound into the root although the unit has `ProtectHome=true`.
"""

from __future__ import annotations

import configparser
import grp
import os
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from canalflow.district import load_district
from tests.edge.edge_testkit import BusThread, Collector, gateway_bus

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "edge" / "canalflow-edge.service"
EXAMPLE = ROOT / "edge" / "edge.example.yaml"
DEMO = ROOT / "examples" / "demo-district.yaml"
VENV = Path(sys.prefix)
BASE_PYTHON = Path(sys.base_prefix)

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(tool) for tool in ("unshare", "setpriv", "chroot", "useradd")),
    reason="the install test needs root (mount namespace, chroot, another user) and unshare, setpriv, useradd")


def unit_service() -> dict[str, str]:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text(encoding="utf-8"))
    return dict(parser["Service"])


def passwd_entry(root: Path, user: str) -> tuple[int, int]:
    for line in (root / "etc" / "passwd").read_text().splitlines():
        name, _, uid, gid, *_ = line.split(":")
        if name == user:
            return int(uid), int(gid)
    raise AssertionError(f"useradd made no {user} in {root}/etc/passwd")


def group_ids(root: Path, user: str, primary: int, supplementary: list[str]) -> list[int]:
    """What systemd gives `User=`: the primary group, the user's groups (initgroups), `SupplementaryGroups`."""
    ids = [primary]
    for line in (root / "etc" / "group").read_text().splitlines():
        name, _, gid, members = line.split(":")
        if user in members.split(",") or name in supplementary:
            ids.append(int(gid))
    return sorted(set(ids))


def grp_id(root: Path, group: str) -> int:
    for line in (root / "etc" / "group").read_text().splitlines():
        name, _, gid, _ = line.split(":")
        if name == group:
            return int(gid)
    raise AssertionError(f"no group {group} in {root}/etc/group")


def run(*argv: str | Path) -> None:
    subprocess.run([str(a) for a in argv], check=True, capture_output=True, timeout=60)


def install_like_the_docs(root: Path) -> tuple[int, int]:
    """docs/edge.md's steps, each with `--root`/a path prefix (names resolved in the root's /etc, which starts
    with root and dialout only: no copy of this machine's accounts)."""
    etc = root / "etc"
    etc.mkdir(parents=True)
    dialout = grp.getgrnam("dialout").gr_gid  # the gateway's serial-port group, as Debian numbers it
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (etc / "group").write_text(f"root:x:0:\ndialout:x:{dialout}:\n")
    (etc / "shadow").write_text("root:*:20000:0:99999:7:::\n")
    (etc / "gshadow").write_text("root:*::\ndialout:*::\n")
    for name in ("shadow", "gshadow"):
        os.chmod(etc / name, 0o600)
    if Path("/etc/login.defs").exists():
        shutil.copy(Path("/etc/login.defs"), etc / "login.defs")
    run("useradd", "--root", root, "--system", "--groups", "dialout", "canalflow")
    uid, gid = passwd_entry(root, "canalflow")
    conf = root / "etc" / "canalflow"
    run("install", "-D", "-m", "640", "-o", "0", "-g", str(gid), EXAMPLE, conf / "edge.yaml")
    run("install", "-m", "640", "-o", "0", "-g", str(gid), DEMO, conf / "district.yaml")
    os.chmod(conf, 0o755)  # install -D makes it as root's umask gives; /etc/canalflow is root's
    return uid, gid


def operator_edits(config: Path, meter_port: int, mqtt_url: str) -> None:
    """"then edit it": the meters' address, the broker, a free metrics port; the paths stay as shipped."""
    data = yaml.safe_load(config.read_text(encoding="utf-8"))
    data["endpoint"]["port"] = meter_port
    data["mqtt"]["url"] = mqtt_url
    data["metrics_port"] = 0
    data["publish"]["status_interval_s"] = 1
    stat = config.stat()
    config.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    os.chown(config, stat.st_uid, stat.st_gid)


def sandbox_script(root: Path, service: dict[str, str]) -> str:
    """Mounts like the unit's sandbox, then `chroot`; `$CMD` runs as the user (set by the caller)."""
    state = root / "var" / "lib" / service["StateDirectory"]
    binds = {"/usr": root / "usr", "/lib": root / "lib", "/lib64": root / "lib64", "/bin": root / "bin",
             "/sbin": root / "sbin", "/dev": root / "dev",
             "/proc": root / "proc", str(BASE_PYTHON): root / BASE_PYTHON.relative_to("/"),
             str(VENV): root / "opt" / "canalflow" / ".venv", str(ROOT): root / "opt" / "canalflow" / "src"}
    lines = ["set -e", "mount --make-rprivate /"]
    for source, target in binds.items():
        if not Path(source).exists():
            continue
        if Path(source).is_symlink():  # merged /usr: /bin -> usr/bin
            if not os.path.lexists(target):
                target.symlink_to(os.readlink(source))
            continue
        target.mkdir(parents=True, exist_ok=True)
        lines.append(f"mount --rbind {shlex.quote(source)} {shlex.quote(str(target))}")
    (root / "tmp").mkdir(exist_ok=True)
    lines.append(f"mount -t tmpfs -o mode=1777 tmpfs {shlex.quote(str(root / 'tmp'))}")  # PrivateTmp
    lines.append(f"mount --bind {shlex.quote(str(state))} {shlex.quote(str(state))}")  # ReadWritePaths
    lines.append(f"mount --rbind {shlex.quote(str(root))} {shlex.quote(str(root))}")
    lines.append(f"mount -o remount,bind,ro {shlex.quote(str(root))}")  # ProtectSystem=strict
    for source, target in binds.items():  # what the rbinds carry stays read-only too
        if Path(source).is_dir() and not Path(source).is_symlink() and source not in ("/dev", "/proc"):
            lines.append(f"mount -o remount,bind,ro {shlex.quote(str(target))}")
    lines.append(f'exec chroot {shlex.quote(str(root))} "$@"')
    return "\n".join(lines)


def as_unit_user(root: Path, service: dict[str, str], uid: int, gid: int, command: str) -> list[str]:
    if "Group" in service:  # Group= replaces the user's own group
        gid = grp_id(root, service["Group"])
    groups = group_ids(root, service["User"], gid, service.get("SupplementaryGroups", "").split())
    user = ["setpriv", f"--reuid={uid}", f"--regid={gid}", f"--groups={','.join(map(str, groups))}"]
    if service.get("NoNewPrivileges") == "true":
        user.append("--no-new-privs")
    workdir = service["WorkingDirectory"]
    return ["unshare", "--mount", "--propagation", "private", "bash", "-c", sandbox_script(root, service), "sandbox",
            *user, "env", "-i", "PYTHONPATH=/opt/canalflow/src", *service["Environment"].split(),
            "bash", "-c", f"cd {shlex.quote(workdir)} && exec {command}"]


def status_of(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def files_under(path: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(path.rglob("*"))}


@pytest.fixture
def meters() -> Iterator[int]:
    bus = BusThread(gateway_bus(load_district(DEMO), "GW-B1"))
    port = bus.start_tcp()
    yield port
    bus.stop()


def test_the_agent_runs_as_canalflow_with_a_read_only_config_and_the_buffer_in_var_lib(
        tmp_path: Path, meters: int, mqtt_url: str) -> None:
    service = unit_service()
    root = tmp_path / "root"
    root.mkdir()
    os.chmod(tmp_path, 0o755)
    os.chmod(root, 0o755)
    uid, gid = install_like_the_docs(root)
    conf = root / "etc" / "canalflow"
    operator_edits(conf / "edge.yaml", meters, mqtt_url)
    state = root / "var" / "lib" / service["StateDirectory"]
    state.mkdir(parents=True)  # what systemd does for StateDirectory=: owned by the unit's user, 0755
    os.chown(state, uid, gid)
    before = files_under(conf)

    check = subprocess.run(as_unit_user(root, service, uid, gid, service["ExecStartPre"]),
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr

    collector = Collector(mqtt_url, ["canalflow/v1/demo/GW-B1/#"])
    log = (tmp_path / "agent.log").open("wb")
    agent = subprocess.Popen(as_unit_user(root, service, uid, gid, service["ExecStart"]), stdout=log,
                             stderr=subprocess.STDOUT)
    try:
        points = {p.id for p in load_district(DEMO).points_of_gateway("GW-B1")}
        got = collector.wait_for(lambda: bool(points & {p for p, _ in collector.readings()}), 60)
        log.flush()
        assert got, (tmp_path / "agent.log").read_text(errors="replace")[-3000:]
        proc = status_of(agent.pid)
        assert proc["Name"].startswith("python")
        assert proc["Uid"].split()[:2] == [str(uid)] * 2
        assert proc["Gid"].split()[:2] == [str(gid)] * 2
        dialout = grp_id(root, "dialout")
        assert sorted(map(int, proc["Groups"].split())) == sorted({gid, dialout})  # no root, no others
        assert proc["NoNewPrivs"] == "1"
    finally:
        agent.send_signal(signal.SIGTERM)
        code = agent.wait(30)
        log.close()
        collector.close()
    output = (tmp_path / "agent.log").read_text(errors="replace")
    assert code == 0, output[-3000:]
    buffer = state / "edge-GW-B1.db"
    assert buffer.exists() and buffer.stat().st_uid == uid, sorted(p.name for p in state.iterdir())
    with sqlite3.connect(buffer) as db:  # no ingest confirms here: what was published waits in the buffer
        assert db.execute("SELECT count(*) FROM readings").fetchone()[0] >= 1
    assert files_under(conf) == before, "the agent wrote in /etc/canalflow"


def test_check_refuses_a_buffer_in_a_read_only_directory(tmp_path: Path) -> None:
    """A relative buffer.path lands beside the config, read-only on a gateway: `--check` (ExecStartPre) says so."""
    conf = tmp_path / "etc"
    conf.mkdir()
    shutil.copy(DEMO, conf / "district.yaml")
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    data.update(district="district.yaml", buffer={"path": "edge-GW-B1.db"}, metrics_port=0)
    (conf / "edge.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    script = f"mount --bind {conf} {conf} && mount -o remount,bind,ro {conf} && exec \"$@\""
    for check in (["--check"], []):  # the unit's ExecStartPre, and the agent itself when started anyway
        done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                               sys.executable, "-m", "edge", "run", "--config", str(conf / "edge.yaml"), *check],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 1, done.stdout + done.stderr
        assert f"buffer {conf / 'edge-GW-B1.db'}: cannot write it" in done.stderr
        assert "/var/lib/canalflow" in done.stderr and "Traceback" not in done.stderr
