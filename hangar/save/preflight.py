"""Checks made before any download, so that a mistake costs one line, not a run.

* arch/os values against Go's GOARCH/GOOS names (the names image indexes use), with "did you
  mean": ``-a amd46`` is refused before the list is inspected;
* one ``/v2/`` probe per distinct registry still to be read: unreachable is one line and the
  run stops; a registry speaking plain HTTP while TLS is verified gets the ``--tls-verify=false``
  hint;
* where it answers, credentials (``hangar.save.authcheck``): those given for it (SOURCE_USERNAME and
  SOURCE_PASSWORD for the one registry they apply to, a REGISTRY_AUTH_FILE entry) are tried once;
  a registry that refuses anonymous access and has none is named. Credentials never appear in a
  message.
"""

from __future__ import annotations

import difflib
import http.client
import os
import socket
import ssl
from collections.abc import Iterable, Mapping

from hangar.imagelist import ImageRef
from hangar.registryapi import api_address, tls_context
from hangar.save.authcheck import Authentication, CredentialCheck

GOARCH = (
    "386",
    "amd64",
    "arm",
    "arm64",
    "loong64",
    "mips",
    "mips64",
    "mips64le",
    "mipsle",
    "ppc64",
    "ppc64le",
    "riscv64",
    "s390x",
    "wasm",
    "sparc64",
    "ppc",
    "riscv",
)
GOOS = (
    "aix",
    "android",
    "darwin",
    "dragonfly",
    "freebsd",
    "illumos",
    "ios",
    "js",
    "linux",
    "netbsd",
    "openbsd",
    "plan9",
    "solaris",
    "wasip1",
    "windows",
)
PROBE_SECONDS = 5.0


class PreflightError(Exception):
    """What is wrong, one line per problem."""


def name_problems(key: str, values: Iterable[str], known: Iterable[str]) -> list[str]:
    known = list(known)
    problems = []
    for value in values:
        if value in known:
            continue
        guess = difflib.get_close_matches(value, known, n=1, cutoff=0.5)
        hint = f"; did you mean {guess[0]}?" if guess else f" (known: {', '.join(known)})"
        problems.append(f"{key}: {value!r} is not a known {key} name{hint}")
    return problems


def platform_problems(arch: Iterable[str], os_names: Iterable[str]) -> list[str]:
    return name_problems("arch", arch, GOARCH) + name_problems("os", os_names, GOOS)


def reach(
    registry: str, tls_verify: bool, timeout: float = PROBE_SECONDS, cert_dir: str = ""
) -> tuple[str, str]:
    """``(scheme, "")`` when ``registry`` answers on /v2/ (``https``, or ``http`` when TLS is
    not verified and it speaks plain HTTP), else ``("", the problem in plain words)``."""
    host, port = api_address(registry)
    try:
        socket.create_connection((host, port or 443), timeout=timeout).close()
    except OSError as error:
        cause = "timed out" if isinstance(error, TimeoutError) else error.strerror or str(error)
        return "", f"registry {registry} unreachable ({cause})"
    context = tls_context(tls_verify, cert_dir)
    https = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    try:
        https.request("GET", "/v2/")
        https.getresponse().read()
        return "https", ""
    except ssl.SSLCertVerificationError:
        return "", (
            f"TLS certificate of registry {registry} not trusted: add its CA with --cert-dir "
            "(config: cert_dir), or use --tls-verify=false"
        )
    except (ssl.SSLError, ConnectionError, http.client.HTTPException) as https_error:
        if _answers_http(host, port or 80, timeout):
            if tls_verify:
                return "", (
                    f"registry {registry} speaks plain HTTP: use --tls-verify=false "
                    "(config: tls_verify: false)"
                )
            return "http", ""
        return "", f"registry {registry} does not answer HTTPS on /v2/ ({https_error})"
    except OSError as error:
        return "", f"registry {registry} unreachable ({error.strerror or error})"
    finally:
        https.close()


def _answers_http(host: str, port: int, timeout: float) -> bool:
    plain = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        plain.request("GET", "/v2/")
        plain.getresponse().read()
        return True
    except (OSError, http.client.HTTPException):
        return False
    finally:
        plain.close()


def registry_problems(
    registries: Iterable[str],
    tls_verify: bool,
    cert_dir: str = "",
    credentials: CredentialCheck | None = None,
) -> list[str]:
    """One probe per registry; where it answers, the credentials check (``credentials``)."""
    problems = []
    for registry in sorted(set(registries)):
        scheme, problem = reach(registry, tls_verify, cert_dir=cert_dir)
        if problem:
            problems.append(problem)
        elif credentials is not None:
            problems += credentials(registry, scheme)
    return problems


def check(
    arch: Iterable[str],
    os_names: Iterable[str],
    references: Iterable[ImageRef],
    tls_verify: bool,
    cert_dir: str = "",
    credentials_registry: str = "docker.io",
    environ: Mapping[str, str] | None = None,
) -> None:
    """Raise PreflightError naming every problem found (names first: they need no network).

    ``references`` are the images still to be read; SOURCE_USERNAME/SOURCE_PASSWORD of
    ``environ`` are for ``credentials_registry`` only, as in the image jobs
    (hangar.save.authcheck)."""
    problems = platform_problems(arch, os_names)
    if not problems:
        refs = list(references)
        env = os.environ if environ is None else environ
        auth = Authentication.of(refs, credentials_registry, env)
        problems = auth.file_problems()
        check_credentials = auth.bind(tls_verify, cert_dir, PROBE_SECONDS)
        problems += registry_problems(
            (ref.registry for ref in refs), tls_verify, cert_dir, check_credentials
        )
    if problems:
        raise PreflightError("\n".join(f"preflight: {problem}" for problem in problems))
