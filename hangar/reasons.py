"""Why an image failed, in plain words, from skopeo's raw error text.

The raw text stays where it was written (the image's log, its status file); what a person reads
in the terminal and the summary is the plain reason, and failures with one cause at one
registry are counted together: ``312 images: registry 10.1.2.3:5000 unreachable``.
"""

from __future__ import annotations

import errno
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from hangar.units import human_size

CREDENTIAL_VARIABLES = "SOURCE_USERNAME and SOURCE_PASSWORD (or REGISTRY_AUTH_FILE)"

# (kind, markers in the lower-cased raw text), first match wins: the order matters, e.g. a TLS
# error mentions a connection, an unreachable registry a timeout.
_KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("no-space", ("no space left on device", "disk quota exceeded")),
    ("rate-limited", ("toomanyrequests", "too many requests", " 429", "(429")),
    (
        "tls",
        (
            "server gave http response to https client",
            "first record does not look like a tls handshake",
            "x509:",
            "certificate",
            "tls:",
            "tls handshake",
        ),
    ),
    (
        "unauthorized",
        (
            "unauthorized",
            "authentication required",
            "invalid username/password",
            "denied",
            "incorrect username or password",
        ),
    ),
    ("not-found", ("manifest unknown", "name unknown", "not found", "no such image")),
    (
        "unreachable",
        (
            "connection refused",
            "no such host",
            "network is unreachable",
            "no route to host",
            "server misbehaving",
            "connection reset",
            "dial tcp",
        ),
    ),
    (
        "timed-out",
        ("timeout", "timed out", "deadline exceeded", "took too long"),
    ),
)


class PlainError(Exception):
    """An error whose message already is the plain reason: a failed step shows it as it is."""


@dataclass(frozen=True)
class Reason:
    kind: str  # one of _KINDS, or "other"
    registry: str
    text: str  # the plain words

    @property
    def groupable(self) -> bool:
        """One cause for every image of a registry (not a property of the image itself)."""
        return self.kind not in ("not-found", "other")


def kind_of(raw: str) -> str:
    text = raw.lower()
    for kind, markers in _KINDS:
        if any(marker in text for marker in markers):
            return kind
    return "other"


def registry_of(reference: str) -> str:
    return reference.split("/", 1)[0] if "/" in reference else "docker.io"


def plain(raw: str, reference: str = "") -> Reason:
    """The plain reason for ``raw`` (skopeo's last error line) of image ``reference``."""
    registry = registry_of(reference) if reference else "the registry"
    kind = kind_of(raw)
    lower = raw.lower()
    if kind == "no-space":
        text = "no space left on the device of the cache"
    elif kind == "rate-limited":
        text = f"rate limited by {registry} (HTTP 429): lower -j/--cores, or try again later"
    elif kind == "tls":
        if "http response to https" in lower or "does not look like a tls" in lower:
            text = (
                f"registry {registry} speaks plain HTTP: use --tls-verify=false "
                "(config: tls_verify: false)"
            )
        else:
            text = (
                f"TLS certificate of {registry} not trusted: add its CA with --cert-dir "
                "(config: cert_dir), or use --tls-verify=false"
            )
    elif kind == "unauthorized":
        text = f"unauthorized at {registry}: set {CREDENTIAL_VARIABLES} for it"
    elif kind == "not-found":
        text = "not found: no such image or tag in the registry"
    elif kind == "unreachable":
        text = f"registry {registry} unreachable"
    elif kind == "timed-out":
        text = f"timed out talking to {registry}"
    else:
        text = raw.strip() or "failed without a message"
    return Reason(kind, registry, text)


@dataclass(frozen=True)
class Failure:
    reference: str
    raw: str


def grouped_lines(failures: Sequence[Failure], limit: int = 10, indent: str = "  ") -> list[str]:
    """One line per image, except that a cause shared by several images of one registry is
    one line: ``312 images: registry 10.1.2.3:5000 unreachable``."""
    reasons = [(failure, plain(failure.raw, failure.reference)) for failure in failures]
    groups: dict[tuple[str, str], list[str]] = {}
    texts: dict[tuple[str, str], str] = {}
    for failure, reason in reasons:
        if reason.groupable:
            key = (reason.kind, reason.registry)
            groups.setdefault(key, []).append(failure.reference)
            texts.setdefault(key, reason.text)
    lines: list[str] = []
    shown: set[tuple[str, str]] = set()
    singles = 0
    for failure, reason in reasons:
        key = (reason.kind, reason.registry)
        if reason.groupable and len(groups[key]) > 1:
            if key not in shown:
                shown.add(key)
                names = _names(groups[key])
                lines.append(f"{indent}{len(groups[key])} images: {texts[key]} ({names})")
            continue
        singles += 1
        if singles <= limit:
            lines.append(f"{indent}{failure.reference}: {reason.text}")
    if singles > limit:
        lines.append(f"{indent}… and {singles - limit} more")
    return lines


def _names(references: Iterable[str], shown: int = 3) -> str:
    names = list(references)
    head = ", ".join(names[:shown])
    return head + (f", … {len(names) - shown} more" if len(names) > shown else "")


def step_error_line(error: BaseException, writing: str | Path) -> str:
    """The ``ERROR: …`` line a failed step ends its log with: the cause, in plain words."""
    if isinstance(error, PlainError):
        return f"ERROR: {error}"
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        where = Path(error.filename).parent if error.filename else Path(writing).absolute().parent
        try:
            free = f" ({human_size(shutil.disk_usage(where).free)} free)"
        except OSError:
            free = ""
        return f"ERROR: no space left on the device of {where}{free} while writing {writing}"
    if isinstance(error, OSError) and error.strerror:
        name = f" {error.filename}" if error.filename else ""
        return f"ERROR: {error.strerror}:{name} (while writing {writing})"
    return f"ERROR: {type(error).__name__}: {error}"
