"""`canalflow web add-user` as an operator runs it, and the users file's errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from web.auth import Sessions, UsersFileError, load_users


def canalflow(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "canalflow.cli", *args], input=stdin, capture_output=True, text=True, timeout=60, env=os.environ)


def test_add_user_writes_an_argon2_hash_that_signs_in(tmp_path: Path) -> None:
    users = tmp_path / "users.yaml"
    done = canalflow("web", "add-user", "--users", str(users), "--user", "li", "--role", "clerk", stdin="s3cret-pass\n")
    assert done.returncode == 0, done.stderr
    assert "s3cret-pass" not in users.read_text() and "$argon2id$" in users.read_text()
    assert users.stat().st_mode & 0o077 == 0
    sessions = Sessions(load_users(users))
    assert sessions.sign_in("li", "wrong") is None
    signed = sessions.sign_in("li", "s3cret-pass")
    assert signed is not None and signed[1].role == "clerk" and signed[1].may("start_run") and not signed[1].may("approve")
    short = canalflow("web", "add-user", "--users", str(users), "--user", "wang", "--role", "approver", stdin="short\n")
    assert short.returncode == 1 and "at least 8" in short.stderr


@pytest.mark.parametrize(("text", "problem"), [
    ("{user: li}", "expected a list"),
    ("- {user: li, role: viewer, argon2: x}", "entry 1: needs user and role"),
    ("- {user: li, role: clerk, password: plain}", "entry 1: needs argon2"),
    ("- [unclosed", "cannot read users file"),
])
def test_a_bad_users_file_is_named_with_its_entry(tmp_path: Path, text: str, problem: str) -> None:
    users = tmp_path / "users.yaml"
    users.write_text(text, encoding="utf-8")
    with pytest.raises(UsersFileError, match=problem):
        load_users(users)
    served = canalflow("web", "serve", "--users", str(users))
    assert served.returncode == 1 and problem in served.stderr and str(users) in served.stderr
