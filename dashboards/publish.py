"""Upload dashboards to a Grafana server with grafana-client.

The folder is created when missing (matched by title), and each dashboard is saved by uid with
``overwrite: true`` and a version message, so publishing again makes a new version rather than a
copy. Failures are raised as :class:`PublishError` with what to check.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import niquests
from grafana_client import GrafanaApi
from grafana_client.client import (
    GrafanaClientError,
    GrafanaException,
    GrafanaServerError,
    GrafanaTimeoutError,
    GrafanaUnauthorizedError,
)

from canalflow.errors import CanalflowError


class PublishError(CanalflowError, RuntimeError):
    pass


def folder_uid(title: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", title).strip("-").lower() or "folder"
    return f"cf-{slug}"[:40]


def _explain(exc: Exception, url: str, action: str) -> PublishError:
    if isinstance(exc, GrafanaUnauthorizedError):
        return PublishError(f"authentication failed while {action} at {url} (HTTP 401): check --token "
                            "(a Grafana service-account token with the Editor role)")
    if isinstance(exc, GrafanaClientError) and exc.status_code == 403:
        return PublishError(f"permission denied while {action} at {url} (HTTP 403): the token's service account needs the Editor role")
    if isinstance(exc, GrafanaTimeoutError):
        return PublishError(f"Grafana at {url} did not answer in time while {action}: is it overloaded? try --timeout 30")
    if isinstance(exc, GrafanaServerError):
        return PublishError(f"Grafana at {url} failed while {action} (HTTP {exc.status_code}): {exc.message}")
    if isinstance(exc, GrafanaException):
        if exc.status_code:
            return PublishError(f"Grafana at {url} refused {action} (HTTP {exc.status_code}): {exc.message}")
        return PublishError(f"cannot talk to Grafana at {url} while {action}: {exc.message}")
    return PublishError(f"cannot connect to Grafana at {url} while {action} ({type(exc).__name__}: {exc}): "
                        "is Grafana running, and are the host and port in --url right?")


def ensure_folder(api: GrafanaApi, title: str) -> str:
    """The uid of the folder with this title, created when there is none."""
    for folder in api.folder.get_all_folders():
        if folder.get("title") == title:
            return str(folder["uid"])
    created = api.folder.create_folder(title, uid=folder_uid(title))
    return str(created["uid"])


def publish(
    dashboards: Iterable[dict[str, Any]], *, url: str, token: str, folder: str = "canalflow",
    message: str = "canalflow dashboards build", timeout: float = 10.0,
) -> list[str]:
    """Save every dashboard into ``folder``; return one line per dashboard (uid, version, URL)."""
    if not re.match(r"^https?://", url):
        raise PublishError(f"--url {url!r} must start with http:// or https://, e.g. http://127.0.0.1:3000")
    api = GrafanaApi.from_url(url, credential=token, timeout=timeout)
    action = f"finding or creating folder {folder!r}"
    lines = []
    try:
        uid = ensure_folder(api, folder)
        for board in dashboards:
            action = f"saving dashboard {board['uid']!r}"
            answer = api.dashboard.update_dashboard(
                {"dashboard": {**board, "id": None}, "folderUid": uid, "overwrite": True, "message": message}
            )
            lines.append(f"{board['uid']}: version {answer.get('version')} at {url.rstrip('/')}{answer.get('url', '')}")
    except (GrafanaException, niquests.exceptions.RequestException, OSError) as exc:
        raise _explain(exc, url, action) from exc
    return lines
