"""Who may do what on the ledger: the one role model of the billing API and the web workbench.

Every signed-in role reads runs, bills, explanations and the VEE queue; beyond that:

- ``auditor``: + the audit trail (reads only);
- ``clerk``: + start runs, record VEE edits, adjustments and payments;
- ``approver``: + approve and issue runs (never one they recorded: the ledger keeps four eyes), the audit trail;
- ``admin``: everything.

Token files of the API from before this model name ``viewer`` and ``manager``: they still load,
as ``auditor`` and ``admin`` (what a manager could do: a clerk's work, approving and issuing), with
a warning naming the file and entry so the operator renames them.
"""

from __future__ import annotations

import logging

from canalflow.errors import CanalflowError

ROLES = ("auditor", "clerk", "approver", "admin")
PERMISSIONS: dict[str, frozenset[str]] = {
    "read": frozenset(ROLES),
    "start_run": frozenset({"clerk", "admin"}),
    "edit": frozenset({"clerk", "admin"}),
    "adjust": frozenset({"clerk", "admin"}),
    "pay": frozenset({"clerk", "admin"}),
    "approve": frozenset({"approver", "admin"}),
    "issue": frozenset({"approver", "admin"}),
    "audit": frozenset({"auditor", "approver", "admin"}),
}
LEGACY_ROLES = {"viewer": "auditor", "manager": "admin"}  # the API's roles before this model

log = logging.getLogger(__name__)


class RoleError(CanalflowError, ValueError):
    pass


def role_of(name: object, where: str, error: type[ValueError] = RoleError) -> str:
    """The role ``name`` given at ``where`` (a file and entry, an option); a legacy API role is mapped, with a warning;
    an unknown one is ``error`` naming ``where`` and the roles."""
    if name in LEGACY_ROLES:
        role = LEGACY_ROLES[str(name)]
        log.warning("%s: role %s is now %s; write role: %s there", where, name, role, role)
        return role
    if name not in ROLES:
        raise error(f"{where}: role {name!r} is not one of {', '.join(ROLES)}")
    return str(name)


def may(role: str, action: str) -> bool:
    """Whether ``role`` may do ``action`` (a key of :data:`PERMISSIONS`)."""
    return role in PERMISSIONS[action]


def needs(action: str) -> str:
    """The roles that may do ``action``, for a refusal's message."""
    return " or ".join(r for r in ROLES if r in PERMISSIONS[action])
