"""What the web tests share besides fixtures: the accounts, their passwords, the hostile unit name, form times."""

from __future__ import annotations

import datetime as dt

HOSTILE = "<script>document.title='pwned'</script>张庄村"
ACCOUNTS = {"li": "clerk", "wang": "approver", "chen": "approver", "zhou": "auditor", "zhang": "admin"}
DISTRICT_TZ = dt.timezone(dt.timedelta(hours=8))  # the demo district's Asia/Shanghai


def password(user: str) -> str:
    return f"pw-{user}-2026!"


def local(ms: int) -> str:
    """An instant as a form's ``datetime-local`` value in the district's time."""
    return dt.datetime.fromtimestamp(ms / 1000, DISTRICT_TZ).strftime("%Y-%m-%dT%H:%M")
