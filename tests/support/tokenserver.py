"""A fake registry with token authentication on 127.0.0.1: what Docker Hub, Harbor and GHCR do.

``GET /v2/`` answers 401 with ``WWW-Authenticate: Bearer realm="http://…/token",service=…``;
``GET /token`` gives a token for the right HTTP basic credentials, and to anonymous callers
when ``anonymous`` is true; anything else is 401. Only the handshake the preflight makes is
served (no manifests). Requests are recorded (path and whether credentials came) for asserts.
"""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType


class TokenRegistry:
    def __init__(self, username: str, password: str, anonymous: bool = True) -> None:
        self.expected = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
        self.anonymous = anonymous
        self.requests: list[tuple[str, bool]] = []  # (path, with Authorization)
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                authorization = self.headers.get("Authorization", "")
                owner.requests.append((self.path, bool(authorization)))
                if self.path.startswith("/token"):
                    allowed = authorization == owner.expected or (
                        owner.anonymous and not authorization
                    )
                    if allowed:
                        self._answer(200, json.dumps({"token": "t"}).encode())
                    else:
                        self._answer(401, b'{"details":"incorrect username or password"}')
                    return
                challenge = f'Bearer realm="{owner.url}/token",service="fake-registry"'
                self._answer(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', challenge)

            def _answer(self, status: int, body: bytes, challenge: str = "") -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                if challenge:
                    self.send_header("WWW-Authenticate", challenge)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def __enter__(self) -> TokenRegistry:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.server.shutdown()
        self.server.server_close()
