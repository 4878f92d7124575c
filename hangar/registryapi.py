"""Where a registry's API is served and what TLS skopeo would trust there: shared by the
checks made before a run (reachability, credentials)."""

from __future__ import annotations

import ssl
from pathlib import Path

# Docker Hub's name in a reference and the host that serves its API.
_API_HOST = {"docker.io": "registry-1.docker.io", "index.docker.io": "registry-1.docker.io"}


def api_address(registry: str) -> tuple[str, int | None]:
    """Host and port that serve ``registry``'s API (Docker Hub's is registry-1.docker.io)."""
    host = _API_HOST.get(registry, registry)
    if host.startswith("[") or host.count(":") != 1:
        return host, None
    name, _, port = host.partition(":")
    return name, int(port) if port.isdigit() else None


def tls_context(tls_verify: bool, cert_dir: str = "") -> ssl.SSLContext:
    """What skopeo trusts: the system's CAs plus the ``*.crt`` files of ``cert_dir``."""
    if not tls_verify:
        return ssl._create_unverified_context()
    context = ssl.create_default_context()
    for certificate in sorted(Path(cert_dir).glob("*.crt")) if cert_dir else []:
        context.load_verify_locations(cafile=str(certificate))
    return context
