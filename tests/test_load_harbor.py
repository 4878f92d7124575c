"""--repo-type harbor against a small local server implementing POST /api/v2.0/projects."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from hangar.load import harbor
from hangar.load.items import LoadItem
from hangar.load.push import PushOptions, create_harbor_project


class FakeHarbor:
    """Records every call; answers 201 for a new project, 409 for a known one."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, object], str]] = []
        self.projects: set[str] = {"library"}
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.calls.append(("POST", self.path, body, self.headers.get("Authorization", "")))
                if self.path != "/api/v2.0/projects":
                    self.send_response(404)
                elif body["project_name"] in owner.projects:
                    self.send_response(409)
                else:
                    owner.projects.add(body["project_name"])
                    self.send_response(201)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def fake_harbor() -> Iterator[FakeHarbor]:
    server = FakeHarbor()
    harbor._done.clear()
    yield server
    server.server.shutdown()


def test_create_project_as_hangar(fake_harbor: FakeHarbor) -> None:
    url = harbor.projects_url(fake_harbor.host, https=False)
    assert harbor.create_project(url, "rancher", "admin", "secret") is True
    assert harbor.create_project(url, "library") is False  # 409: exists
    method, path, body, auth = fake_harbor.calls[0]
    assert (method, path) == ("POST", "/api/v2.0/projects")
    assert body == {"project_name": "rancher", "metadata": {"public": "true"}}
    assert base64.b64decode(auth.removeprefix("Basic ")) == b"admin:secret"


def test_each_project_is_created_once_per_run(
    fake_harbor: FakeHarbor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEST_USERNAME", "admin")
    monkeypatch.setenv("DEST_PASSWORD", "secret")
    options = PushOptions(
        root=tmp_path,
        state=tmp_path,
        registry=fake_harbor.host,
        repo_type="harbor",
        harbor_https=False,
    )
    logged: list[str] = []
    for source in ("r.io/rancher/a", "r.io/rancher/b", "r.io/busybox", "r.io/neuvector/c"):
        create_harbor_project(LoadItem("image", source, "1"), options, logged.append)
    created = [body["project_name"] for _, _, body, _ in fake_harbor.calls]
    assert created == ["rancher", "library", "neuvector"]
    assert "created Harbor project 'rancher'" in logged
    assert not any("secret" in line for line in logged)


def test_an_unreachable_harbor_is_a_warning(tmp_path: Path) -> None:
    options = PushOptions(root=tmp_path, state=tmp_path, registry="127.0.0.1:9", harbor_https=False)
    harbor._done.clear()
    logged: list[str] = []
    create_harbor_project(LoadItem("image", "r.io/rancher/a", "1"), options, logged.append)
    assert logged and logged[0].startswith("WARNING: http://127.0.0.1:9/api/v2.0/projects")
