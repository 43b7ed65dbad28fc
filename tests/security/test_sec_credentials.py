"""canalflow.credentials: generated files, re-runs, rotation, --check, hash compatibility and the CLI."""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

import pytest
from sec_helpers import DEMO

from canalflow import credentials as cr
from canalflow.binaries import find_binary
from canalflow.cli import main
from canalflow.contract import cmd_topic, confirm_topic, gateway_prefix, readings_filter, status_filter
from canalflow.district import District

GATEWAYS = ["GW-MAIN", "GW-B1", "GW-B2", "GW-B3"]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _secrets(out: Path) -> dict[str, str]:
    return {p.stem: p.read_text().strip() for p in (out / cr.SECRETS_DIR).glob("*.password")}


def _cli(*argv: str) -> int:
    return main(["credentials", *argv])


def test_generates_private_secrets_hashes_acl_and_manifest(district: District, tmp_path: Path) -> None:
    report = cr.generate_credentials(district, tmp_path, billing_users=["billing"])
    users = [*GATEWAYS, "ingest", "billing"]
    assert [a.username for a in report.accounts] == users
    assert sorted(report.created) == sorted(users)
    secrets = _secrets(tmp_path)
    assert sorted(secrets) == sorted(users)
    assert len(set(secrets.values())) == len(users) and all(len(s) >= 40 for s in secrets.values())
    assert _mode(tmp_path / cr.SECRETS_DIR) == 0o700
    assert all(_mode(cr.secret_file(tmp_path, u)) == 0o600 for u in users)
    assert _mode(tmp_path / cr.PASSWD_FILE) == 0o600
    hashes = cr.read_passwd(tmp_path / cr.PASSWD_FILE)
    assert all(cr.verify_password(secrets[u], hashes[u]) and hashes[u].startswith("$7$101$") for u in users)
    manifest = json.loads((tmp_path / cr.MANIFEST_FILE).read_text())
    assert manifest["district"] == "demo"
    assert {u["username"]: u["role"] for u in manifest["users"]}["billing"] == "billing"
    public = (tmp_path / cr.MANIFEST_FILE).read_text() + (tmp_path / cr.ACL_FILE).read_text()
    assert not any(secret in public for secret in secrets.values())


def test_acl_rules_come_from_the_contract(district: District) -> None:
    gateway = cr.Account("GW-B2", cr.Role.gateway, "GW-B2")
    assert cr.acl_rules("demo", gateway) == [
        cr.AclRule("write", gateway_prefix("demo", "GW-B2") + "/#"),
        cr.AclRule("read", cmd_topic("demo", "GW-B2")),
        cr.AclRule("read", confirm_topic("demo", "GW-B2")),
    ]
    ingest = cr.acl_rules("demo", cr.Account("ingest", cr.Role.ingest))
    assert [(r.access, r.topic) for r in ingest] == [("read", readings_filter("demo")), ("read", status_filter("demo")),
                                                     ("write", confirm_topic("demo", "+"))]
    text = cr.acl_text(district, cr.accounts_for(district))
    assert "topic readwrite" not in text and "\ntopic" not in text.split("user ")[0]  # no rule for everyone


def test_rerun_keeps_secrets_and_leaves_the_files_unchanged(district: District, tmp_path: Path) -> None:
    cr.generate_credentials(district, tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    report = cr.generate_credentials(district, tmp_path)
    assert report.created == [] and report.rotated == [] and len(report.kept) == 5
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_rotate_one_user_changes_only_its_secret(district: District, tmp_path: Path) -> None:
    cr.generate_credentials(district, tmp_path)
    before = _secrets(tmp_path)
    report = cr.generate_credentials(district, tmp_path, rotate=["GW-B1"])
    after = _secrets(tmp_path)
    assert report.rotated == ["GW-B1"]
    assert after["GW-B1"] != before["GW-B1"]
    assert {u: s for u, s in after.items() if u != "GW-B1"} == {u: s for u, s in before.items() if u != "GW-B1"}
    hashes = cr.read_passwd(tmp_path / cr.PASSWD_FILE)
    assert cr.verify_password(after["GW-B1"], hashes["GW-B1"])
    assert not cr.verify_password(before["GW-B1"], hashes["GW-B1"])
    cr.generate_credentials(district, tmp_path, rotate=True)
    assert all(_secrets(tmp_path)[u] != after[u] for u in after)


def test_rotate_unknown_user_and_name_clash_are_errors(district: District, tmp_path: Path) -> None:
    with pytest.raises(cr.CredentialsError, match="no such user GW-XX"):
        cr.generate_credentials(district, tmp_path, rotate=["GW-XX"])
    with pytest.raises(cr.CredentialsError, match="'GW-B1' is used twice"):
        cr.generate_credentials(district, tmp_path, ingest_users=["GW-B1"])
    with pytest.raises(cr.CredentialsError, match="no ':'"):
        cr.generate_credentials(district, tmp_path, billing_users=["bill:ing"])


def test_hashes_of_mosquitto_passwd_verify_and_ours_match_its_format(tmp_path: Path) -> None:
    tool = find_binary("mosquitto_passwd", "mosquitto")
    plain = tmp_path / "passwd"
    plain.write_text("alice:correct horse\n")
    subprocess.run([tool, "-U", str(plain)], check=True, capture_output=True, timeout=30)
    theirs = cr.read_passwd(plain)["alice"]
    assert theirs.startswith("$7$101$")
    assert cr.verify_password("correct horse", theirs)
    assert not cr.verify_password("correct horsE", theirs)
    ours = cr.hash_password("correct horse", salt=bytes(12))
    assert [len(part) for part in ours.split("$")] == [len(part) for part in theirs.split("$")]
    assert not cr.verify_password("x", "$7$notanumber$AAAA$AAAA")
    assert not cr.verify_password("x", "plaintext")


def test_check_passes_on_generated_dir_and_names_each_problem(district: District, tmp_path: Path) -> None:
    cr.generate_credentials(district, tmp_path, operator_users=["ops"])
    assert cr.check_credentials(district, tmp_path) == []
    cr.secret_file(tmp_path, "GW-B2").chmod(0o644)
    cr.secret_file(tmp_path, "ops").write_text("tampered\n")
    acl = tmp_path / cr.ACL_FILE
    acl.write_text(acl.read_text().replace("topic read canalflow/v1/demo/GW-B1/cmd", "topic read canalflow/#"))
    with (tmp_path / cr.PASSWD_FILE).open("a") as handle:
        handle.write("mallory:$7$101$AAAA$AAAA\n")
    cr.secret_file(tmp_path, "GW-B3").unlink()
    problems = "\n".join(cr.check_credentials(district, tmp_path))
    assert f"{cr.secret_file(tmp_path, 'GW-B2')}: mode 644" in problems
    assert "user 'ops': hash does not match" in problems
    assert f"{acl}:" in problems and "'topic read canalflow/#'" in problems
    assert "user 'mallory' is not in district 'demo'" in problems
    assert f"{cr.secret_file(tmp_path, 'GW-B3')}: missing secret of gateway user 'GW-B3'" in problems


def test_check_finds_a_gateway_added_to_the_district(district: District, tmp_path: Path) -> None:
    from canalflow.district import load_district

    cr.generate_credentials(district, tmp_path / "creds")
    text = DEMO.read_text(encoding="utf-8")
    anchor = "  - {id: GW-B3,"
    assert anchor in text
    bigger = tmp_path / "district.yaml"
    bigger.write_text(text.replace(anchor, "  - {id: GW-B4, transport: tcp, host: 127.0.0.1, port: 5024}\n" + anchor, 1))
    grown = load_district(bigger)
    problems = cr.check_credentials(grown, tmp_path / "creds")
    assert any("missing secret of gateway user 'GW-B4'" in p for p in problems)
    assert any("mosquitto.acl" in p for p in problems)


def test_cli_generates_checks_and_never_prints_a_secret(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "creds"
    assert _cli("--district", str(DEMO), "--out", str(out), "--operator-user", "ops") == 0
    assert _cli("--district", str(DEMO), "--out", str(out), "--rotate", "GW-MAIN") == 0
    assert _cli("--district", str(DEMO), "--out", str(out), "--check") == 0
    printed = capsys.readouterr()
    assert "6 users (6 new" in printed.out and "6 users (0 new, 1 rotated, 5 kept)" in printed.out and "GW-MAIN" in printed.out and "OK for district 'demo'" in printed.out
    for secret in _secrets(out).values():
        assert secret not in printed.out + printed.err
    cr.secret_file(out, "ingest").chmod(0o640)
    assert _cli("--district", str(DEMO), "--out", str(out), "--check") == 1
    assert "chmod 600" in capsys.readouterr().err


def test_cli_errors_name_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.yaml"
    assert _cli("--district", str(missing), "--out", str(tmp_path / "c")) == 1
    assert str(missing) in capsys.readouterr().err
    assert _cli("--district", str(DEMO), "--out", str(tmp_path / "c"), "--rotate", "nobody") == 1
    assert "no such user nobody" in capsys.readouterr().err
    assert _cli("--district", str(DEMO), "--out", str(tmp_path / "empty"), "--check") == 1
    assert "missing: run `canalflow credentials" in capsys.readouterr().err


def test_cli_help_has_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        _cli("--help")
    assert exited.value.code == 0
    assert "canalflow credentials --district examples/demo-district.yaml --out" in capsys.readouterr().out


def test_output_dir_that_is_a_file_is_a_clear_error(district: District, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(cr.CredentialsError, match=f"cannot create {blocker}/secrets"):
        cr.generate_credentials(district, blocker)


def test_cli_rerun_without_service_options_keeps_the_service_users(tmp_path: Path) -> None:
    out = tmp_path / "creds"
    assert _cli("--district", str(DEMO), "--out", str(out), "--ingest-user", "ingest-a", "--billing-user", "bill") == 0
    assert _cli("--district", str(DEMO), "--out", str(out)) == 0
    assert sorted(cr.read_passwd(out / cr.PASSWD_FILE)) == sorted([*GATEWAYS, "ingest-a", "bill"])
    (out / cr.MANIFEST_FILE).write_text("[not a manifest")
    assert _cli("--district", str(DEMO), "--out", str(out)) == 1


def test_rerun_tightens_loose_modes_and_reports_stale_secrets(district: District, tmp_path: Path) -> None:
    cr.generate_credentials(district, tmp_path)
    cr.secret_file(tmp_path, "GW-B1").chmod(0o644)
    report = cr.generate_credentials(district, tmp_path, ingest_users=["ingest-2"])
    assert _mode(cr.secret_file(tmp_path, "GW-B1")) == 0o600
    assert report.stale == [cr.secret_file(tmp_path, "ingest")]
    assert "ingest" not in cr.read_passwd(tmp_path / cr.PASSWD_FILE)
    assert any("stale secret" in line and "ingest.password" in line for line in report.summary_lines())


def test_cli_tls_host_writes_tls_files_and_check_covers_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "creds"
    assert _cli("--district", str(DEMO), "--out", str(out), "--tls-host", "127.0.0.1") == 0
    assert "tls: new CA" in capsys.readouterr().out
    assert _cli("--district", str(DEMO), "--out", str(out), "--check") == 0
    key = cr.tls_files(out)["server.key"]
    key.chmod(0o644)
    assert _cli("--district", str(DEMO), "--out", str(out), "--check") == 1
    assert f"{key}: mode 644" in capsys.readouterr().err
    assert _cli("--district", str(DEMO), "--out", str(out), "--rotate-tls") == 1
    assert "--rotate-tls needs --tls-host" in capsys.readouterr().err
