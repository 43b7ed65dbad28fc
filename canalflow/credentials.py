"""Broker credentials and ACLs for a district: ``canalflow credentials --district F --out DIR``.

From the district file this writes, into DIR:

- ``secrets/<user>.password`` — one random password per gateway and per service user (mode 0600,
  directory 0700). Existing secrets are kept on a re-run so deployed gateways are not locked
  out; ``--rotate`` replaces them.
- ``mosquitto.passwd`` — Mosquitto's password file: PBKDF2-SHA512 hashes in Mosquitto 2's ``$7$``
  format (the format ``mosquitto_passwd`` writes), computed here so no password ever goes on a
  command line.
- ``mosquitto.acl`` — the ACL: each gateway writes only below its own topic prefix and reads only
  its own ``cmd`` and ``confirm``; ingest reads readings and status and writes only the gateways'
  ``confirm`` topics; billing reads status; operators send
  commands and read their results. Topics come from :mod:`canalflow.contract`.
- ``credentials.json`` — who is who (user, role, gateway, secret file), never a secret.
- with ``--tls-host``: ``tls/`` — a private CA and the broker's certificate (openssl CLI).

``--check`` verifies an existing DIR against the district: every user present with a readable
0600 secret matching its hash, no stray users, the ACL exactly as it would be generated, and
the TLS files if any. Operator guide: docs/security.md.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import ipaddress
import json
import os
import secrets
import stat
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from canalflow.binaries import find_binary
from canalflow.contract import (
    cmd_result_topic,
    cmd_topic,
    confirm_topic,
    gateway_prefix,
    readings_filter,
    status_filter,
)
from canalflow.district import District, load_district
from canalflow.errors import CanalflowError

__all__ = [
    "ACL_FILE",
    "MANIFEST_FILE",
    "PASSWD_FILE",
    "SECRETS_DIR",
    "Account",
    "AclRule",
    "CredentialsError",
    "GenerateReport",
    "Role",
    "accounts_for",
    "acl_rules",
    "acl_text",
    "check_credentials",
    "check_tls",
    "gateway_username",
    "generate_credentials",
    "generate_tls",
    "hash_password",
    "read_passwd",
    "register",
    "secret_file",
    "tls_files",
    "verify_password",
]

PASSWD_FILE = "mosquitto.passwd"
ACL_FILE = "mosquitto.acl"
MANIFEST_FILE = "credentials.json"
SECRETS_DIR = "secrets"
TLS_DIR = "tls"
SECRET_BYTES = 32  # 256 random bits: far beyond brute force, so the hash cost need not be high
# Mosquitto 2.0's mosquitto_passwd uses 101 PBKDF2 iterations and a 12-byte salt; we match it.
PBKDF2_ITERATIONS = 101
SALT_BYTES = 12


class CredentialsError(CanalflowError, ValueError):
    """Bad input for credentials generation (user name clash, unusable output dir)."""


class Role(StrEnum):
    gateway = "gateway"  # an edge agent: publishes its readings/status, receives its commands and confirmations
    ingest = "ingest"  # ingest workers: read readings and status, confirm what they stored to each gateway
    billing = "billing"  # billing service: reads gateway status (offline periods) only
    operator = "operator"  # operations console: sends commands to gateways, reads results and status


@dataclass(frozen=True)
class Account:
    username: str
    role: Role
    gateway: str | None = None


@dataclass(frozen=True)
class AclRule:
    access: str  # "read" | "write" | "readwrite" (Mosquitto acl_file keywords)
    topic: str

    def __str__(self) -> str:
        return f"topic {self.access} {self.topic}"


def gateway_username(gateway_id: str) -> str:
    """The broker user name of a gateway's edge agent (its gateway id, what a technician sees)."""
    return gateway_id


def secret_file(out_dir: Path | str, username: str) -> Path:
    """Where the password of ``username`` is kept under a credentials directory."""
    return Path(out_dir) / SECRETS_DIR / f"{username}.password"


def accounts_for(
    district: District,
    *,
    ingest_users: Sequence[str] = ("ingest",),
    billing_users: Sequence[str] = (),
    operator_users: Sequence[str] = (),
) -> list[Account]:
    """Every broker user of a district: one per gateway, then the service users."""
    accounts = [Account(gateway_username(gw), Role.gateway, gw) for gw in district.gateways]
    accounts += [Account(name, Role.ingest) for name in ingest_users]
    accounts += [Account(name, Role.billing) for name in billing_users]
    accounts += [Account(name, Role.operator) for name in operator_users]
    _check_unique(accounts)
    return accounts


def _check_unique(accounts: Sequence[Account]) -> None:
    seen: dict[str, Account] = {}
    for account in accounts:
        if ":" in account.username or not account.username.strip() or account.username != account.username.strip():
            raise CredentialsError(f"user name {account.username!r} is not usable: no ':' and no surrounding spaces")
        if account.username in seen:
            other = seen[account.username]
            raise CredentialsError(
                f"user name {account.username!r} is used twice ({other.role} and {account.role}): "
                "choose another name with --ingest-user/--billing-user/--operator-user"
            )
        seen[account.username] = account


def acl_rules(district_id: str, account: Account) -> list[AclRule]:
    """The topics one user may read or write (Mosquitto checks shared subscriptions against the filter)."""
    if account.role is Role.gateway:
        assert account.gateway is not None
        return [
            AclRule("write", f"{gateway_prefix(district_id, account.gateway)}/#"),
            AclRule("read", cmd_topic(district_id, account.gateway)),
            AclRule("read", confirm_topic(district_id, account.gateway)),
        ]
    if account.role is Role.ingest:
        return [AclRule("read", readings_filter(district_id)), AclRule("read", status_filter(district_id)),
                AclRule("write", confirm_topic(district_id, "+"))]
    if account.role is Role.billing:
        return [AclRule("read", status_filter(district_id))]
    if account.role is Role.operator:
        return [
            AclRule("write", cmd_topic(district_id, "+")),
            AclRule("read", cmd_result_topic(district_id, "+")),
            AclRule("read", status_filter(district_id)),
        ]
    raise AssertionError(f"no ACL for role {account.role}")


def acl_text(district: District, accounts: Iterable[Account]) -> str:
    """The Mosquitto ``acl_file``: users without a section here (and anonymous clients) get nothing."""
    lines = [
        f"# Mosquitto ACL for district {district.id!r}, written by `canalflow credentials`; do not edit:",
        "# re-run the command after changing the district file.",
        "",
    ]
    for account in accounts:
        what = f"gateway {account.gateway}" if account.gateway else f"{account.role} service"
        lines += [f"# {what}", f"user {account.username}"]
        lines += [str(rule) for rule in acl_rules(district.id, account)]
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Password hashes (Mosquitto 2 format)


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS) -> str:
    """``$7$<iterations>$<salt b64>$<PBKDF2-SHA512 b64>``, as ``mosquitto_passwd`` writes it."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    """True if ``password`` matches a Mosquitto hash (``$7$`` PBKDF2-SHA512 or ``$6$`` salted SHA512)."""
    parts = encoded.split("$")
    try:
        if len(parts) == 5 and parts[1] == "7":
            salt, expected = base64.b64decode(parts[3]), base64.b64decode(parts[4])
            actual = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, int(parts[2]))
        elif len(parts) == 4 and parts[1] == "6":
            salt, expected = base64.b64decode(parts[2]), base64.b64decode(parts[3])
            actual = hashlib.sha512(password.encode() + salt).digest()
        else:
            return False
    except ValueError:  # bad base64 or iteration count: not a hash we can verify
        return False
    return hmac.compare_digest(actual, expected)


def read_passwd(path: Path) -> dict[str, str]:
    """user -> hash from a Mosquitto password file (blank lines and # comments skipped)."""
    entries: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        user, sep, encoded = text.partition(":")
        if not sep:
            raise CredentialsError(f"{path}:{number}: not 'user:hash' (re-run `canalflow credentials` to rewrite it)")
        entries[user] = encoded
    return entries


# ---------------------------------------------------------------------------------------------
# Generate


@dataclass
class GenerateReport:
    out_dir: Path
    accounts: list[Account]
    created: list[str] = field(default_factory=list)  # user names with a new secret
    kept: list[str] = field(default_factory=list)
    rotated: list[str] = field(default_factory=list)
    stale: list[Path] = field(default_factory=list)  # secret files of users no longer in the district

    def summary_lines(self) -> list[str]:
        """What happened, for the terminal: user names and files, never a secret."""
        lines = []
        for account in self.accounts:
            name = account.username
            state = "new" if name in self.created else "rotated" if name in self.rotated else "kept"
            lines.append(f"  {account.role.value:8} {name:20} {state:8} {secret_file(self.out_dir, name)}")
        for path in self.stale:
            lines.append(f"  stale secret {path}: its user is no longer in the district (delete it once undeployed)")
        return lines


def generate_credentials(
    district: District,
    out_dir: Path | str,
    *,
    ingest_users: Sequence[str] = ("ingest",),
    billing_users: Sequence[str] = (),
    operator_users: Sequence[str] = (),
    rotate: bool | Iterable[str] = False,
) -> GenerateReport:
    """Write secrets, password file, ACL and manifest for ``district`` into ``out_dir``.

    ``rotate``: True for every user, or the user names whose secrets are replaced.
    """
    out = Path(out_dir)
    accounts = accounts_for(
        district, ingest_users=ingest_users, billing_users=billing_users, operator_users=operator_users
    )
    to_rotate = {a.username for a in accounts} if rotate is True else set(rotate or ())
    unknown = to_rotate - {a.username for a in accounts}
    if unknown:
        raise CredentialsError(f"--rotate: no such user {', '.join(sorted(unknown))} in district {district.id!r}")
    _make_private_dir(out / SECRETS_DIR)
    report = GenerateReport(out, accounts)
    passwords = {a.username: _ensure_secret(out, a.username, a.username in to_rotate, report) for a in accounts}
    old_hashes = read_passwd(out / PASSWD_FILE) if (out / PASSWD_FILE).is_file() else {}
    _write_private(out / PASSWD_FILE, _passwd_text(accounts, passwords, old_hashes))
    _write_atomic(out / ACL_FILE, acl_text(district, accounts), mode=0o644)
    _write_atomic(out / MANIFEST_FILE, _manifest(district, accounts), mode=0o644)
    known = {secret_file(out, a.username) for a in accounts}
    report.stale = sorted(p for p in (out / SECRETS_DIR).glob("*.password") if p not in known)
    return report


API_TOKENS_FILE = "api-tokens.yaml"


def hash_api_token(token: str) -> str:
    """How the billing API stores a bearer token: the SHA-256 hex digest, never the token."""
    return hashlib.sha256(token.encode()).hexdigest()


def parse_api_user(spec: str) -> tuple[str, str]:
    """``NAME:ROLE`` from the command line, e.g. ``li:clerk``; the role is one of canalflow/roles.py (old ones mapped)."""
    from canalflow.roles import ROLES, role_of

    name, _, role = spec.partition(":")
    if not name:
        raise CredentialsError(f"--api-user {spec!r}: expected NAME:ROLE with ROLE one of {', '.join(ROLES)}")
    return name, role_of(role, f"--api-user {spec!r}", CredentialsError)


def generate_api_tokens(out_dir: Path | str, users: Sequence[tuple[str, str]], *, rotate: bool = False) -> GenerateReport:
    """Bearer tokens for the billing API: a secret file per user and ``api-tokens.yaml`` with digests.

    Existing tokens are kept unless ``rotate``, so a re-run does not lock out deployed clients.
    """
    out = Path(out_dir)
    _make_private_dir(out / SECRETS_DIR)
    report = GenerateReport(out, [])
    entries = []
    for name, role in users:
        token = _ensure_secret(out, f"api-{name}", rotate, report)
        entries.append(f"- {{user: {name}, role: {role}, sha256: {hash_api_token(token)}}}\n")
    _write_private(out / API_TOKENS_FILE, "# billing API users: canalflow billing serve --tokens FILE\n" + "".join(entries))
    return report


def _ensure_secret(out: Path, username: str, rotate: bool, report: GenerateReport) -> str:
    path = secret_file(out, username)
    existing = _read_secret(path) if path.exists() else None
    if existing and not rotate:
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            path.chmod(0o600)  # a copy made with a loose umask: tighten it rather than keep it readable
        report.kept.append(username)
        return existing
    password = secrets.token_urlsafe(SECRET_BYTES)
    _write_private(path, password + "\n")
    (report.rotated if existing else report.created).append(username)
    return password


def _read_secret(path: Path) -> str | None:
    lines = path.read_text(encoding="utf-8").splitlines()
    return lines[0] if lines and lines[0] else None


def _passwd_text(accounts: Sequence[Account], passwords: dict[str, str], old: dict[str, str]) -> str:
    lines = []
    for account in accounts:
        password = passwords[account.username]
        previous = old.get(account.username)
        # Keep a still-valid hash so an unchanged secret leaves the file byte-for-byte the same.
        encoded = previous if previous and verify_password(password, previous) else hash_password(password)
        lines.append(f"{account.username}:{encoded}")
    return "\n".join(lines) + "\n"


def _manifest(district: District, accounts: Sequence[Account]) -> str:
    users = [
        {"username": a.username, "role": a.role.value, "gateway": a.gateway, "secret_file": f"{SECRETS_DIR}/{a.username}.password"}
        for a in accounts
    ]
    body = {"district": district.id, "passwd_file": PASSWD_FILE, "acl_file": ACL_FILE, "users": users}
    return json.dumps(body, ensure_ascii=False, indent=2) + "\n"


def _make_private_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise CredentialsError(f"cannot create {path}: {exc.strerror}: choose another --out directory") from None
    path.chmod(0o700)


def _write_private(path: Path, text: str) -> None:
    _write_atomic(path, text, mode=0o600)


def _write_atomic(path: Path, text: str, *, mode: int) -> None:
    """Write via a temporary file created with ``mode`` (a secret is never briefly world-readable)."""
    temp = path.with_name(f".{path.name}.tmp")
    temp.unlink(missing_ok=True)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(temp, mode)  # the umask may have narrowed it
    os.replace(temp, path)


# ---------------------------------------------------------------------------------------------
# TLS: a private CA and the broker's certificate (openssl CLI)


def tls_files(out_dir: Path | str) -> dict[str, Path]:
    """Paths of the TLS files under a credentials directory (ca.crt is what clients need)."""
    tls = Path(out_dir) / TLS_DIR
    return {name: tls / name for name in ("ca.key", "ca.crt", "server.key", "server.crt", "server.ext")}


def generate_tls(out_dir: Path | str, hosts: Sequence[str], *, rotate: bool = False, days: int = 825) -> list[str]:
    """Create (or keep) a CA and issue the broker certificate for ``hosts``; return what was done.

    The CA is kept on re-runs (clients keep their ca.crt); the server certificate is re-issued
    when the host list changes. ``rotate`` makes a new CA and certificate.
    """
    if not hosts:
        raise CredentialsError("--tls-host: name at least one host name or IP address clients use for the broker")
    files = tls_files(out_dir)
    files["ca.crt"].parent.mkdir(parents=True, exist_ok=True)
    done = []
    if rotate or not files["ca.crt"].exists():
        _openssl("req", "-x509", *_EC_KEY, "-keyout", _private_file(files["ca.key"]), "-out", files["ca.crt"],
                 "-subj", "/CN=canalflow MQTT CA", "-days", str(CA_DAYS))
        done.append(f"new CA {files['ca.crt']} (give it to every client: --mqtt-cafile)")
    ext = "subjectAltName = " + ", ".join(_san(host) for host in hosts) + "\n"
    current = files["server.ext"].read_text() if files["server.ext"].exists() else None
    if done or current != ext or not files["server.crt"].exists():
        if not files["ca.key"].exists():
            raise CredentialsError(
                f"{files['ca.key']} is missing, so the broker certificate cannot be re-issued: put the CA key back "
                "(from where you keep it offline), or use --rotate-tls for a new CA (every client then needs the new ca.crt)"
            )
        _issue_server_cert(files, ext, days)
        done.append(f"broker certificate {files['server.crt']} for {', '.join(hosts)}")
    return done or [f"kept TLS files in {files['ca.crt'].parent}"]


_EC_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
CA_DAYS = 3650


def _issue_server_cert(files: dict[str, Path], ext: str, days: int) -> None:
    csr = files["server.crt"].with_suffix(".csr")
    files["server.ext"].write_text(ext)
    _openssl("req", *_EC_KEY, "-keyout", _private_file(files["server.key"]), "-out", csr, "-subj", "/CN=canalflow MQTT broker")
    _openssl("x509", "-req", "-in", csr, "-out", files["server.crt"], "-CA", files["ca.crt"], "-CAkey", files["ca.key"],
             "-CAcreateserial", "-days", str(days), "-extfile", files["server.ext"])
    csr.unlink()


def _san(host: str) -> str:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not host or any(c in host for c in ",= \t\n"):
            raise CredentialsError(f"--tls-host {host!r} is not a host name or IP address") from None
        return f"DNS:{host}"
    return f"IP:{host}"


def _private_file(path: Path) -> Path:
    """An empty file with mode 0600 that openssl then writes the key into (never briefly readable)."""
    path.unlink(missing_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    return path


def _openssl(*args: object) -> subprocess.CompletedProcess[str]:
    openssl = find_binary("openssl", "openssl")
    done = subprocess.run([openssl, *map(str, args)], capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0 and args[0] not in ("verify", "x509"):
        raise CredentialsError(f"openssl {args[0]} failed: {done.stderr.strip()[-500:]}")
    return done


def check_tls(out_dir: Path | str) -> list[str]:
    """Problems of the TLS files of a credentials directory (none if it has no tls/ directory)."""
    files = tls_files(out_dir)
    if not files["ca.crt"].parent.exists():
        return []
    missing = [f"{path}: missing: re-run with --tls-host" for name, path in files.items() if name != "ca.key" and not path.exists()]
    if missing:
        return missing
    problems = [
        f"{path}: mode {stat.S_IMODE(path.stat().st_mode):o} lets other users read a private key: chmod 600 {path}"
        for path in (files["ca.key"], files["server.key"])
        if path.exists() and stat.S_IMODE(path.stat().st_mode) & 0o077
    ]
    verified = _openssl("verify", "-CAfile", files["ca.crt"], files["server.crt"])
    if verified.returncode != 0:
        detail = (verified.stdout + verified.stderr).strip().splitlines()
        problems.append(f"{files['server.crt']}: not signed by {files['ca.crt']} ({detail[-1] if detail else '?'}): re-run with --tls-host")
    expiring = _openssl("x509", "-checkend", str(30 * 86400), "-noout", "-in", files["server.crt"])
    if expiring.returncode != 0:
        problems.append(f"{files['server.crt']}: expires within 30 days: re-run with --rotate-tls or delete it and re-run")
    cert_key = _openssl("x509", "-noout", "-pubkey", "-in", files["server.crt"]).stdout
    own_key = _openssl("pkey", "-pubout", "-in", files["server.key"]).stdout
    if cert_key != own_key:
        problems.append(f"{files['server.key']}: is not the key of {files['server.crt']}: re-run with --rotate-tls")
    return problems


# ---------------------------------------------------------------------------------------------
# Check


def check_credentials(
    district: District,
    out_dir: Path | str,
    *,
    ingest_users: Sequence[str] | None = None,
    billing_users: Sequence[str] | None = None,
    operator_users: Sequence[str] | None = None,
) -> list[str]:
    """Problems of an existing credentials directory against the district (empty list = OK).

    Service users not given are taken from the directory's ``credentials.json``.
    """
    out = Path(out_dir)
    if not (out / PASSWD_FILE).is_file():
        return [f"{out / PASSWD_FILE}: missing: run `canalflow credentials --district FILE --out {out}` first"]
    services = _manifest_services(out)
    accounts = accounts_for(
        district,
        ingest_users=services[Role.ingest] if ingest_users is None else ingest_users,
        billing_users=services[Role.billing] if billing_users is None else billing_users,
        operator_users=services[Role.operator] if operator_users is None else operator_users,
    )
    try:
        hashes = read_passwd(out / PASSWD_FILE)
    except CredentialsError as exc:
        return [str(exc)]
    problems = [p for a in accounts for p in _account_problems(out, a, hashes.get(a.username))]
    expected = {a.username for a in accounts}
    problems += [
        f"{out / PASSWD_FILE}: user {user!r} is not in district {district.id!r}: re-run the command to remove it"
        for user in hashes
        if user not in expected
    ]
    problems += _acl_problems(out / ACL_FILE, acl_text(district, accounts))
    return problems


def _manifest_services(out: Path) -> dict[Role, list[str]]:
    services: dict[Role, list[str]] = {role: [] for role in Role}
    path = out / MANIFEST_FILE
    if not path.is_file():
        services[Role.ingest] = ["ingest"]
        return services
    try:
        for user in json.loads(path.read_text(encoding="utf-8")).get("users", []):
            role = Role(user["role"])
            if role is not Role.gateway:
                services[role].append(user["username"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CredentialsError(
            f"{path}: not a credentials manifest ({exc}): delete it and re-run naming the service users"
        ) from None
    return services


def _account_problems(out: Path, account: Account, encoded: str | None) -> list[str]:
    path = secret_file(out, account.username)
    where = f"{out / PASSWD_FILE}: user {account.username!r}"
    if not path.is_file():
        missing = f"{path}: missing secret of {account.role} user {account.username!r}: re-run the command to create it"
        return [missing] + ([] if encoded else [f"{where}: missing"])
    problems = []
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        problems.append(f"{path}: mode {mode:o} lets other users read the secret: chmod 600 {path}")
    secret = _read_secret(path)
    if encoded is None:
        problems.append(f"{where}: missing: re-run the command to add it")
    elif secret is None:
        problems.append(f"{path}: empty: re-run the command with --rotate {account.username}")
    elif not verify_password(secret, encoded):
        problems.append(f"{where}: hash does not match {path}: re-run the command to rewrite the password file")
    return problems


def _acl_problems(path: Path, expected: str) -> list[str]:
    if not path.is_file():
        return [f"{path}: missing: re-run the command to write it"]
    actual = path.read_text(encoding="utf-8").splitlines()
    wanted = expected.splitlines()
    for number, (have, want) in enumerate(zip(actual, wanted, strict=False), start=1):
        if have != want:
            return [f"{path}:{number}: is {have!r}, expected {want!r}: re-run the command to rewrite the ACL"]
    if len(actual) != len(wanted):
        return [f"{path}: {len(actual)} lines, expected {len(wanted)}: re-run the command to rewrite the ACL"]
    return []


# ---------------------------------------------------------------------------------------------
# Command line

CLI_EXAMPLE = """examples:
  canalflow credentials --district examples/demo-district.yaml --out /etc/canalflow/mqtt
  canalflow credentials --district examples/demo-district.yaml --out creds --billing-user billing --operator-user ops
  canalflow credentials --district examples/demo-district.yaml --out creds --rotate GW-B1
  canalflow credentials --district examples/demo-district.yaml --out creds --tls-host broker.example --tls-host 10.0.0.5
  canalflow credentials --district examples/demo-district.yaml --out creds --check

Then point Mosquitto at them (mosquitto.conf):
  allow_anonymous false
  password_file /etc/canalflow/mqtt/mosquitto.passwd
  acl_file /etc/canalflow/mqtt/mosquitto.acl
and give each edge agent its own secrets/<GATEWAY>.password (--mqtt-password-file).
With --tls-host, tls/ holds ca.crt (for every client: --mqtt-cafile), server.crt and server.key
(for the broker's TLS listener) and ca.key (keep it offline; needed only to re-issue the certificate).
Re-running keeps existing secrets; --rotate [USER ...] replaces them (all if no user is named).
Exit status 1 on any error or --check problem."""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "credentials",
        help="generate broker passwords and ACLs for a district",
        description="Generate (or --check) Mosquitto credentials and ACLs for a district's gateways and services.",
        epilog=CLI_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--district", required=True, type=Path, metavar="FILE", help="district YAML file")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="credentials directory (created)")
    parser.add_argument("--ingest-user", action="append", metavar="NAME", help="ingest service user (repeatable; default: those of the last run, else ingest)")
    parser.add_argument("--billing-user", action="append", metavar="NAME", help="billing service user: reads gateway status (repeatable; default: those of the last run)")
    parser.add_argument("--operator-user", action="append", metavar="NAME", help="operator user: sends gateway commands (repeatable; default: those of the last run)")
    parser.add_argument("--api-user", action="append", metavar="NAME:ROLE",
                        help="billing API user and role (auditor, clerk, approver, admin): a token in secrets/ and its digest in api-tokens.yaml (repeatable)")
    parser.add_argument("--rotate", nargs="*", metavar="USER", help="replace the secrets of these users (all users if none named)")
    parser.add_argument("--tls-host", action="append", metavar="HOST",
                        help="also make a CA and the broker's TLS certificate for this host name or IP (repeatable)")
    parser.add_argument("--rotate-tls", action="store_true", help="with --tls-host: a new CA and broker certificate")
    parser.add_argument("--check", action="store_true", help="verify an existing --out directory against the district; write nothing")
    parser.set_defaults(func=run_credentials)


def run_credentials(args: argparse.Namespace) -> int:
    district = load_district(args.district)  # DistrictError, CredentialsError, ServiceMissing: canalflow.cli reports them
    try:
        if args.check:
            return _run_check(district, args)
        return _run_generate(district, args)
    except OSError as exc:
        raise CredentialsError(f"{exc.filename or args.out}: {exc.strerror}") from exc


def _run_generate(district: District, args: argparse.Namespace) -> int:
    rotate: bool | list[str] = False if args.rotate is None else (args.rotate or True)
    # Service users not named on this run are those of the previous run (credentials.json), so a
    # re-run with fewer options does not silently delete a deployed service's account.
    previous = _manifest_services(Path(args.out))
    report = generate_credentials(
        district,
        args.out,
        ingest_users=args.ingest_user or previous[Role.ingest],
        billing_users=args.billing_user or previous[Role.billing],
        operator_users=args.operator_user or previous[Role.operator],
        rotate=rotate,
    )
    print(
        f"district {district.id!r}: {len(report.accounts)} users "
        f"({len(report.created)} new, {len(report.rotated)} rotated, {len(report.kept)} kept) in {report.out_dir}"
    )
    print("\n".join(report.summary_lines()))
    print(f"broker: password_file {report.out_dir / PASSWD_FILE}, acl_file {report.out_dir / ACL_FILE}")
    if args.api_user:
        users = [parse_api_user(spec) for spec in args.api_user]
        api = generate_api_tokens(args.out, users, rotate=rotate is True)
        print(f"billing API: {len(users)} token(s) ({len(api.created)} new, {len(api.kept)} kept), "
              f"digests in {api.out_dir / API_TOKENS_FILE}, tokens in {api.out_dir / SECRETS_DIR}/api-*.password")
    if args.tls_host:
        for line in generate_tls(args.out, args.tls_host, rotate=args.rotate_tls):
            print(f"tls: {line}")
    elif args.rotate_tls:
        raise CredentialsError("--rotate-tls needs --tls-host HOST (the names clients use for the broker)")
    return 0


def _run_check(district: District, args: argparse.Namespace) -> int:
    problems = check_credentials(
        district, args.out, ingest_users=args.ingest_user, billing_users=args.billing_user, operator_users=args.operator_user
    ) + check_tls(args.out)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"{args.out}: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"{args.out}: OK for district {district.id!r}")
    return 0
