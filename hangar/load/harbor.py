"""Harbor projects: ``--repo-type harbor`` creates each missing project before pushing into it,
as hangar v1.6 does (``POST /api/v2.0/projects``, public; 409 means it exists)."""

from __future__ import annotations

import base64
import json
import ssl
import threading
import urllib.error
import urllib.request
from pathlib import Path

TIMEOUT_SECONDS = 10
_done: set[tuple[str, str]] = set()
_lock = threading.Lock()


class HarborError(Exception):
    """The project could not be created; the message never holds credentials."""


def projects_url(registry: str, https: bool) -> str:
    return f"{'https' if https else 'http'}://{registry}/api/v2.0/projects"


def _context(tls_verify: bool, cert_dir: str) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if not tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif cert_dir:
        for certificate in sorted(Path(cert_dir).glob("*.crt")):
            context.load_verify_locations(cafile=str(certificate))
    return context


def create_project(
    url: str,
    project: str,
    username: str = "",
    password: str = "",
    tls_verify: bool = True,
    cert_dir: str = "",
) -> bool:
    """Create ``project``; True when created, False when it already exists."""
    body = json.dumps({"project_name": project, "metadata": {"public": "true"}}).encode()
    request = urllib.request.Request(url, data=body, method="POST")
    request.add_header("Content-Type", "application/json")
    request.add_header("Accept", "application/json")
    if username and password:
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    context = _context(tls_verify, cert_dir) if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS, context=context):
            return True
    except urllib.error.HTTPError as problem:
        if problem.code == 409:
            return False
        raise HarborError(f"{url}: creating project {project!r}: HTTP {problem.code}") from None
    except (urllib.error.URLError, OSError) as problem:
        reason = getattr(problem, "reason", problem)
        raise HarborError(f"{url}: creating project {project!r}: {reason}") from None


def ensure_project(url: str, project: str, **options: str | bool) -> bool:
    """``create_project`` once per (url, project) in this process."""
    with _lock:
        if (url, project) in _done:
            return False
        created = create_project(url, project, **options)  # type: ignore[arg-type]
        _done.add((url, project))
        return created
