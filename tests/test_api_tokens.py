"""`canalflow credentials --api-user NAME:ROLE` makes billing-API tokens that `billing serve` accepts."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from billing.api import Principal, load_tokens
from canalflow.cli import main
from canalflow.credentials import API_TOKENS_FILE, CredentialsError, hash_api_token, parse_api_user, secret_file

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo-district.yaml"


def run(out: Path, *extra: str) -> int:
    return main(["credentials", "--district", str(DEMO), "--out", str(out), *extra])


def test_tokens_are_accepted_by_the_api_and_kept_on_rerun(tmp_path, capsys):
    out = tmp_path / "cred"
    assert run(out, "--api-user", "li:clerk", "--api-user", "wang:approver", "--api-user", "old:manager") == 0
    token = secret_file(out, "api-li").read_text().strip()
    tokens = load_tokens(out / API_TOKENS_FILE)
    assert tokens[hash_api_token(token)] == Principal("li", "clerk")
    assert "role: admin" in (out / API_TOKENS_FILE).read_text()  # an old role is written as its new one
    assert token not in (out / API_TOKENS_FILE).read_text() and token not in capsys.readouterr().out
    assert stat.S_IMODE(secret_file(out, "api-li").stat().st_mode) == 0o600
    assert run(out, "--api-user", "li:clerk", "--api-user", "wang:manager") == 0
    assert secret_file(out, "api-li").read_text().strip() == token
    assert run(out, "--api-user", "li:clerk", "--rotate") == 0
    assert secret_file(out, "api-li").read_text().strip() != token


@pytest.mark.parametrize(("spec", "expected"), [("li", "is not one of auditor, clerk, approver, admin"), ("li:boss", "role 'boss' is not one of"),
                                              (":clerk", "expected NAME:ROLE")])
def test_bad_api_user_specs_say_what_is_expected(spec, expected):
    with pytest.raises(CredentialsError, match=expected):
        parse_api_user(spec)
