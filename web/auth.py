"""Clerk accounts, sessions, CSRF tokens and sign-in lockout for the web workbench.

Accounts live in a YAML users file, a list of ``{user, role, argon2}`` where ``argon2`` is the
password's Argon2id hash (``canalflow web add-user`` writes it; argon2-cffi hashes and checks).
Sessions are kept in the server's memory: a restart signs everyone out. Each session has its own
CSRF token, which every form posts back; the sign-in form, before any session, uses a token
bound to a short-lived cookie instead (double submit).
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from canalflow.errors import CanalflowError
from canalflow.roles import ROLES, may

MAX_FAILURES = 5  # failed sign-ins of one user name before it is locked
LOCKOUT_S = 15 * 60
SESSION_S = 8 * 3600  # a working day
HASHER = PasswordHasher()
_DUMMY_HASH = HASHER.hash("not a password of anyone")  # checked for unknown users, so their answer takes as long


class UsersFileError(CanalflowError, ValueError):
    pass


@dataclass(frozen=True)
class Account:
    user: str
    role: str
    password_hash: str


def load_users(path: Path) -> dict[str, Account]:
    """user -> account, from a YAML list of ``{user, role, argon2}``."""
    from billing.api import read_entries

    entries = read_entries(path, "users", "{user, role, argon2}", UsersFileError)
    accounts: dict[str, Account] = {}
    for index, entry in enumerate(entries):
        where = f"{path}: entry {index + 1}"
        if not isinstance(entry, dict) or not entry.get("user") or entry.get("role") not in ROLES:
            raise UsersFileError(f"{where}: needs user and role (one of {', '.join(ROLES)})")
        digest = str(entry.get("argon2") or "")
        if not digest.startswith("$argon2"):
            raise UsersFileError(f"{where}: needs argon2 (the password's hash); make it with: canalflow web add-user --users {path} --user {entry['user']} --role {entry['role']}")
        accounts[str(entry["user"])] = Account(str(entry["user"]), str(entry["role"]), digest)
    return accounts


def add_user(path: Path, user: str, role: str, password: str) -> None:
    """Add or replace ``user`` in the users file with a fresh Argon2id hash of ``password``."""
    if role not in ROLES:
        raise UsersFileError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
    if len(password) < 8:
        raise UsersFileError("a password needs at least 8 characters")
    from billing.api import read_entries

    entries = read_entries(path, "users", "{user, role, argon2}", UsersFileError) if path.exists() else []
    entries = [e for e in entries if not (isinstance(e, dict) and e.get("user") == user)]
    entries.append({"user": user, "role": role, "argon2": HASHER.hash(password)})
    path.write_text(yaml.safe_dump(entries, allow_unicode=True, sort_keys=False), encoding="utf-8")
    path.chmod(0o600)


@dataclass
class Session:
    user: str
    role: str
    csrf: str
    expires: float

    def may(self, action: str) -> bool:
        return may(self.role, action)


@dataclass
class Sessions:
    """Accounts, live sessions and failed sign-ins, shared by the app's request threads."""

    accounts: dict[str, Account]
    sessions: dict[str, Session] = field(default_factory=dict)
    failures: dict[str, list[float]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def locked(self, user: str, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        with self.lock:
            recent = [t for t in self.failures.get(user, []) if now - t < LOCKOUT_S]
            self.failures[user] = recent
            return len(recent) >= MAX_FAILURES

    def sign_in(self, user: str, password: str) -> tuple[str, Session] | None:
        """A new session id and session for the right password, else None (and one more failure)."""
        if self.locked(user):
            return None
        account = self.accounts.get(user)
        try:
            ok = HASHER.verify(account.password_hash if account else _DUMMY_HASH, password) and account is not None
        except (VerificationError, InvalidHashError):
            ok = False
        if not ok or account is None:
            with self.lock:
                self.failures.setdefault(user, []).append(time.time())
            return None
        with self.lock:
            self.failures.pop(user, None)
            session_id = secrets.token_urlsafe(32)
            session = Session(account.user, account.role, secrets.token_urlsafe(32), time.time() + SESSION_S)
            self.sessions[session_id] = session
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        with self.lock:
            session = self.sessions.get(session_id)
            if session is not None and session.expires < time.time():
                del self.sessions[session_id]
                return None
            return session

    def sign_out(self, session_id: str | None) -> None:
        with self.lock:
            self.sessions.pop(session_id or "", None)


def same_token(expected: str | None, given: str | None) -> bool:
    return bool(expected) and bool(given) and hmac.compare_digest(str(expected), str(given))
