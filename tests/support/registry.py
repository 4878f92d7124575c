"""A throw-away Docker registry (Debian `docker-registry`) bound to 127.0.0.1 for tests."""

from __future__ import annotations

import atexit
import ctypes
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

REGISTRY_BINARY = "docker-registry"
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0

_LIVE: set[subprocess.Popen[bytes]] = set()


def _kill_live_registries() -> None:
    for proc in list(_LIVE):
        _terminate(proc)


atexit.register(_kill_live_registries)


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    _LIVE.discard(proc)


def _die_with_parent() -> None:
    """Runs in the child before exec: get SIGTERM when the test process dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env() -> dict[str, str]:
    """The environment without proxy settings or REGISTRY_* overrides of the registry config."""
    proxy_vars = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
    return {
        key: value
        for key, value in os.environ.items()
        if key.lower() not in proxy_vars and not key.startswith("REGISTRY_")
    }


def _run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, check=True, capture_output=True, text=True, env=clean_env(), **kwargs
    )


class Registry:
    """`docker-registry serve` on 127.0.0.1:<free port>, storing everything under `workdir`.

    `stop()` and `start()` may be called repeatedly; a restart keeps the port and the storage.
    The process is also killed at interpreter exit and when the test process dies.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        htpasswd: tuple[str, str] | None = None,
        tls: bool = False,
        port: int | None = None,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.storage_dir = self.workdir / "storage"
        self.config_file = self.workdir / "config.yml"
        self.log_file = self.workdir / "registry.log"
        self.port = port or free_port()
        self.credentials = htpasswd
        self.tls = tls
        self.cert_dir: Path | None = None
        self.ca_file: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._write_config()

    # -- addresses --------------------------------------------------------------------------
    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    @property
    def creds(self) -> str | None:
        """`user:password` for skopeo's `--creds` options, or None without authentication."""
        return ":".join(self.credentials) if self.credentials else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- setup ------------------------------------------------------------------------------
    def _write_config(self) -> None:
        self.storage_dir.mkdir(exist_ok=True)
        http: dict[str, Any] = {
            "addr": self.host,
            "secret": "test-registry-secret",
            "headers": {"X-Content-Type-Options": ["nosniff"]},
        }
        if self.tls:
            http["tls"] = self._make_certificate()
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "info", "formatter": "text"},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage_dir)},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": http,
        }
        if self.credentials:
            config["auth"] = {"htpasswd": {"realm": "test-registry", "path": self._make_htpasswd()}}
        # JSON is YAML; no notifications, proxy, redis or health sections on purpose.
        self.config_file.write_text(json.dumps(config, indent=2) + "\n")

    def _make_htpasswd(self) -> str:
        assert self.credentials
        user, password = self.credentials
        entry = _run(["htpasswd", "-Bbn", user, password]).stdout.strip()
        path = self.workdir / "htpasswd"
        path.write_text(entry + "\n")
        return str(path)

    def _make_certificate(self) -> dict[str, str]:
        tls_dir = self.workdir / "tls"
        tls_dir.mkdir(exist_ok=True)
        openssl_cnf = tls_dir / "openssl.cnf"
        openssl_cnf.write_text(
            "[req]\nprompt = no\ndistinguished_name = dn\nx509_extensions = ext\n"
            "[dn]\nCN = 127.0.0.1\n"
            "[ext]\nsubjectAltName = IP:127.0.0.1, DNS:localhost\n"
            "basicConstraints = critical, CA:TRUE\n"
            "keyUsage = critical, digitalSignature, keyCertSign\n"
            "extendedKeyUsage = serverAuth\nsubjectKeyIdentifier = hash\n"
        )
        cert, key = tls_dir / "server.crt", tls_dir / "server.key"
        _run(
            ["openssl", "req", "-x509", "-config", str(openssl_cnf), "-days", "30", "-nodes"]
            + ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
            + ["-keyout", str(key), "-out", str(cert)]
        )
        # A cert dir for skopeo holds only the CA (*.crt); a *.key there would mean a client cert.
        self.cert_dir = self.workdir / "certs.d"
        self.cert_dir.mkdir(exist_ok=True)
        self.ca_file = self.cert_dir / "ca.crt"
        self.ca_file.write_bytes(cert.read_bytes())
        return {"certificate": str(cert), "key": str(key)}

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> Registry:
        if self.running:
            return self
        with self.log_file.open("ab") as log:
            self._proc = subprocess.Popen(
                [REGISTRY_BINARY, "serve", str(self.config_file)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=clean_env(),
                preexec_fn=_die_with_parent,
            )
        _LIVE.add(self._proc)
        self._wait_until_up()
        return self

    def stop(self) -> None:
        if self._proc is not None:
            _terminate(self._proc)
            self._proc = None

    def _wait_until_up(self) -> None:
        handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
        if self.tls:
            handlers.append(
                urllib.request.HTTPSHandler(
                    context=ssl.create_default_context(cafile=str(self.ca_file))
                )
            )
        opener = urllib.request.build_opener(*handlers)
        deadline = time.monotonic() + START_TIMEOUT_S
        last_error = "no answer"
        while time.monotonic() < deadline:
            assert self._proc is not None
            status = self._proc.poll()
            if status is not None:
                self.stop()
                raise RuntimeError(
                    f"registry exited with status {status}; log {self.log_file}:\n{self.log_tail()}"
                )
            try:
                with opener.open(f"{self.url}/v2/", timeout=1):
                    return
            except urllib.error.HTTPError as err:
                if err.code == 401:  # up, and asking for credentials
                    return
                last_error = f"HTTP {err.code}"
            except (OSError, urllib.error.URLError) as err:
                last_error = str(err)
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"registry on {self.url} not up after {START_TIMEOUT_S}s ({last_error}); "
            f"log {self.log_file}:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 20) -> str:
        if not self.log_file.exists():
            return ""
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> Registry:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        auth = " auth" if self.credentials else ""
        return f"<Registry {self.url}{auth} {'running' if self.running else 'stopped'}>"
