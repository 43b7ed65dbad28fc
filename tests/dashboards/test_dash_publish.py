"""Publishing over real sockets: nothing listening, a server answering 401, and a small recording
server standing in for Grafana's HTTP API (Grafana itself cannot run here)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from canalflow.cli import main as canalflow
from dashboards.publish import PublishError, publish
from testbed.services import free_port

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo-district.yaml"


class Recorder(BaseHTTPRequestHandler):
    """Answers like Grafana's folder and dashboard API, or 401 when ``server.deny`` is set."""

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        server = self.server
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        server.requests.append((self.command, self.path, self.headers.get("Authorization"), body))  # type: ignore[attr-defined]
        if server.deny:  # type: ignore[attr-defined]
            self._answer(401, {"message": "Unauthorized"})
        elif self.command == "GET" and self.path.startswith("/api/folders"):
            self._answer(200, server.folders)  # type: ignore[attr-defined]
        elif self.command == "POST" and self.path == "/api/folders":
            server.folders.append({"uid": body["uid"], "title": body["title"]})  # type: ignore[attr-defined]
            self._answer(200, {"uid": body["uid"], "title": body["title"]})
        elif self.command == "POST" and self.path == "/api/dashboards/db":
            uid = body["dashboard"]["uid"]
            version = server.versions.get(uid, 0) + 1  # type: ignore[attr-defined]
            server.versions[uid] = version  # type: ignore[attr-defined]
            self._answer(200, {"status": "success", "uid": uid, "version": version, "url": f"/d/{uid}/x"})
        else:
            self._answer(404, {"message": "not found"})

    do_GET = do_POST = _handle


@pytest.fixture
def grafana_like() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    server.requests, server.folders, server.versions, server.deny = [], [], {}, False  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def url_of(server: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def test_nothing_listening_is_a_clear_connection_error(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert canalflow(["dashboards", "publish", "--district", str(DEMO), "--url", url, "--token", "t", "--timeout", "3"]) == 1
    err = capsys.readouterr().err
    assert f"cannot connect to Grafana at {url}" in err and "is Grafana running" in err


def test_401_is_reported_as_an_authentication_failure(grafana_like: ThreadingHTTPServer) -> None:
    grafana_like.deny = True  # type: ignore[attr-defined]
    with pytest.raises(PublishError, match=r"authentication failed .* \(HTTP 401\): check --token"):
        publish([{"uid": "cf-demo-overview"}], url=url_of(grafana_like), token="wrong")
    assert grafana_like.requests[0][2] == "Bearer wrong"  # type: ignore[attr-defined]


def test_publish_creates_the_folder_once_and_overwrites_by_uid(grafana_like: ThreadingHTTPServer, capsys: pytest.CaptureFixture[str]) -> None:
    args = ("dashboards", "publish", "--district", str(DEMO), "--url", url_of(grafana_like), "--token", "sa-token",
            "--folder", "灌区 canalflow", "--message", "round 2")
    assert canalflow(args) == 0
    assert canalflow(args) == 0
    out = capsys.readouterr().out
    assert "cf-demo-overview: version 2" in out
    requests = grafana_like.requests  # type: ignore[attr-defined]
    assert sum(1 for method, path, *_ in requests if (method, path) == ("POST", "/api/folders")) == 1
    saves = [body for method, path, _, body in requests if path == "/api/dashboards/db"]
    assert len(saves) == 8  # four dashboards, twice
    assert all(s["overwrite"] is True and s["message"] == "round 2" and s["folderUid"] == "cf-canalflow" for s in saves)
    assert all(s["dashboard"]["id"] is None and s["dashboard"]["uid"].startswith("cf-demo-") for s in saves)
    assert {auth for _, _, auth, _ in requests} == {"Bearer sa-token"}


def test_a_url_without_scheme_is_refused() -> None:
    with pytest.raises(PublishError, match="must start with http"):
        publish([], url="grafana:3000", token="t")
