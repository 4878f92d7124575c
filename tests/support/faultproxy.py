"""Faults for tests: a proxy that breaks the network, small file systems that fill up.

`FaultProxy` is a reverse proxy on 127.0.0.1 that injects network faults in front of a test
registry.

Clients talk to the proxy as if it were the registry (`proxy.host` instead of `registry.host`).
Each request is matched against the active faults, first match wins; a fault that matches
answers with an HTTP error status, drops the connection before answering, or cuts the body
short. A fault is active for its first `count` matching requests, or for `seconds` after the
first request it met, whichever applies; when no fault matches, the request is passed
through to the upstream registry unchanged.

The proxy only answers requests: it never sends traffic of its own, and every thread it
starts ends with `stop()` (or at the end of a `with` block).

`small_filesystem()` mounts a size-limited (or read-only) tmpfs, to run out of disk space
for real; it needs root, and raises `MountUnavailable` with the reason otherwise.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Literal

FaultKind = Literal["status", "drop", "truncate", "hang", "slow"]
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
CHUNK = 64 * 1024
UPSTREAM_TIMEOUT_S = 30.0
ERROR_CODES = {429: "TOOMANYREQUESTS", 502: "UNAVAILABLE", 503: "UNAVAILABLE"}


@dataclass
class Fault:
    """One kind of misbehaviour, for requests whose path contains `path_contains`.

    - `status`: answer `status` (e.g. 429 or 503) with a registry-style JSON error body;
    - `drop`: close the connection without answering;
    - `truncate`: send the upstream headers and half of the body, then close;
    - `hang`: read the request and never answer (until the proxy stops);
    - `slow`: pass the answer through whole, at `bytes_per_second`.

    A 429 or 503 carries `Retry-After: <retry_after>` (seconds).

    Active for the first `count` matching requests (None: unlimited) and, when `seconds` is
    set, only for that many seconds after the first request it met (so a slow client start
    does not use up the window).
    """

    kind: FaultKind
    status: int = 503
    count: int | None = None
    seconds: float | None = None
    path_contains: str = ""
    methods: tuple[str, ...] = ("GET", "HEAD")
    retry_after: int = 0
    bytes_per_second: int = 0
    hits: int = field(default=0, init=False)
    _deadline: float | None = field(default=None, init=False, repr=False)

    def arm(self) -> None:
        self.hits = 0
        self._deadline = None

    def applies(self, method: str, path: str) -> bool:
        if method not in self.methods or self.path_contains not in path:
            return False
        if self.count is not None and self.hits >= self.count:
            return False
        if self.seconds is None:
            return True
        if self._deadline is None:
            self._deadline = time.monotonic() + self.seconds
        return time.monotonic() < self._deadline


def fail(status: int, count: int | None = None, **options: object) -> Fault:
    return Fault("status", status=status, count=count, **options)  # type: ignore[arg-type]


def drop(count: int | None = None, **options: object) -> Fault:
    return Fault("drop", count=count, **options)  # type: ignore[arg-type]


def hang(count: int | None = None, **options: object) -> Fault:
    return Fault("hang", count=count, **options)  # type: ignore[arg-type]


def slow(bytes_per_second: int, count: int | None = None, **options: object) -> Fault:
    options.setdefault("methods", ("GET",))
    return Fault("slow", count=count, bytes_per_second=bytes_per_second, **options)  # type: ignore[arg-type]


def truncate(count: int | None = None, **options: object) -> Fault:
    options.setdefault("methods", ("GET",))
    return Fault("truncate", count=count, **options)  # type: ignore[arg-type]


class FaultProxy:
    """`FaultProxy(upstream_host)`: start with `start()` or `with`; set faults with `inject()`."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        # "passed", "status", "drop", "truncate", "hang", "error"
        self.counts: Counter[str] = Counter()
        self.requests: deque[tuple[str, str, str]] = deque(maxlen=20_000)  # method, path, outcome
        self._stopping = threading.Event()  # releases the requests a `hang` fault holds
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        assert self._server is not None, "the proxy is not running"
        return f"127.0.0.1:{self._server.server_address[1]}"

    def inject(self, *faults: Fault) -> None:
        """Replace the active faults (none: pass everything through)."""
        for fault in faults:
            fault.arm()
        with self._lock:
            self._faults = list(faults)

    def clear(self) -> None:
        self.inject()

    def reset_counts(self) -> None:
        with self._lock:
            self.counts.clear()
            self.requests.clear()

    def paths(self, outcome: str = "passed", method: str = "GET") -> list[str]:
        with self._lock:
            return [p for m, p, o in self.requests if o == outcome and m == method]

    def _choose(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.applies(method, path):
                    fault.hits += 1
                    return fault
        return None

    def _record(self, method: str, path: str, outcome: str) -> None:
        with self._lock:
            self.counts[outcome] += 1
            self.requests.append((method, path, outcome))

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> FaultProxy:
        if self._server is not None:
            return self
        self._stopping.clear()
        proxy = self

        class Handler(_ProxyHandler):
            owner = proxy

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        assert self._thread is not None
        self._thread.join(5)
        self._server = self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class _ProxyHandler(BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"
    timeout = UPSTREAM_TIMEOUT_S

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # the proxy keeps its own record in `owner.requests`

    def _handle(self) -> None:
        method, path = self.command, self.path
        body = self._request_body()
        fault = self.owner._choose(method, path)
        if fault is not None and fault.kind == "status":
            self.owner._record(method, path, "status")
            self._send_error_status(fault.status, fault.retry_after)
            return
        if fault is not None and fault.kind == "hang":
            self.owner._record(method, path, "hang")
            self.owner._stopping.wait()
            self._hang_up()
            return
        if fault is not None and fault.kind == "drop":
            self.owner._record(method, path, "drop")
            self._hang_up()
            return
        try:
            slow = fault is not None and fault.kind == "slow"
            cut = fault is not None and not slow
            self._forward(method, path, body, cut, fault.bytes_per_second if slow else 0)
        except (OSError, http.client.HTTPException):
            self.owner._record(method, path, "error")
            self._hang_up()

    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _handle

    def _request_body(self) -> bytes | None:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else None

    def _send_error_status(self, status: int, retry_after: int = 0) -> None:
        code = ERROR_CODES.get(status, "UNKNOWN")
        payload = json.dumps(
            {"errors": [{"code": code, "message": f"injected fault: HTTP {status}"}]}
        ).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        if status in (429, 503):
            self.send_header("Retry-After", str(retry_after))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _hang_up(self) -> None:
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _forward(
        self, method: str, path: str, body: bytes | None, cut: bool, rate: int = 0
    ) -> None:
        upstream = http.client.HTTPConnection(self.owner.upstream, timeout=UPSTREAM_TIMEOUT_S)
        try:
            # Header by header: clients repeat some (Accept), which a dict would collapse.
            upstream.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for key, value in self.headers.items():
                if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                    upstream.putheader(key, value)
            if body is not None:
                upstream.putheader("Content-Length", str(len(body)))
            upstream.endheaders(body)
            response = upstream.getresponse()
            length_header = response.getheader("Content-Length")
            payload = None if length_header is not None or method == "HEAD" else response.read()
            length = len(payload) if payload is not None else int(length_header or 0)
            self.send_response(response.status, response.reason)
            for key, value in response.getheaders():
                if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                    self.send_header(key, value)
            self.send_header("Content-Length", str(length))
            self.end_headers()
            if method == "HEAD":
                self.owner._record(method, path, "passed")
                return
            limit = length // 2 if cut else length
            sent = 0
            if payload is not None:
                self.wfile.write(payload[:limit])
                sent = limit
            began = time.monotonic()
            while sent < limit:
                chunk = response.read(min(CHUNK, limit - sent))
                if not chunk:
                    break
                self.wfile.write(chunk)
                sent += len(chunk)
                if rate:
                    self.wfile.flush()
                    time.sleep(max(0.0, began + sent / rate - time.monotonic()))
            if cut:
                self.owner._record(method, path, "truncate")
                self._hang_up()
            else:
                self.owner._record(method, path, "passed")
        finally:
            upstream.close()


# -- small file systems -----------------------------------------------------------------------


class MountUnavailable(RuntimeError):
    """This process cannot mount a file system here; the message says why."""


@contextmanager
def small_filesystem(path: Path, size: str = "4m", *, read_only: bool = False) -> Iterator[Path]:
    """A tmpfs of `size` (mount syntax: 512k, 4m) at `path`, unmounted at the end."""
    if os.geteuid() != 0:
        raise MountUnavailable("mounting a tmpfs needs root")
    if shutil.which("mount") is None or shutil.which("umount") is None:
        raise MountUnavailable("mount/umount are not installed")
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size},mode=0755" + (",ro" if read_only else "")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "hangar-test", str(path)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise MountUnavailable(f"mount -t tmpfs failed: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def resize_filesystem(path: Path, size: str) -> None:
    """Grow (or shrink) a tmpfs mounted by `small_filesystem`."""
    subprocess.run(
        ["mount", "-o", f"remount,size={size}", str(path)], check=True, capture_output=True
    )


# -- a server that never answers --------------------------------------------------------------


class SilentServer:
    """A TCP server on 127.0.0.1 that accepts every connection and never sends a byte, as a
    registry behind a stuck load balancer; its connections close with `stop()`."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self._connections: list[socket.socket] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self.accepted = 0

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._socket.getsockname()[1]}"

    def _accept(self) -> None:
        self._socket.settimeout(0.1)
        while not self._stopping.is_set():
            try:
                connection, _ = self._socket.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._connections.append(connection)  # kept open, never read nor answered
            self.accepted += 1

    def __enter__(self) -> SilentServer:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stopping.set()
        self._thread.join(5)
        for connection in self._connections:
            connection.close()
        self._socket.close()
