"""The preflight's credentials check: one authenticated probe per registry credentials are given
for, before any image is read, so that a wrong password is one line, not one failure per image.

Which credentials apply where is what the image jobs use (``hangar.skopeo.credentials_file``):
SOURCE_USERNAME/SOURCE_PASSWORD for the one ``credentials_registry`` only, REGISTRY_AUTH_FILE's
entries for theirs. The probe is the registry v2 handshake:

* ``GET /v2/`` answers 401 with ``WWW-Authenticate: Bearer realm=…,service=…``: the realm is
  asked for a token with the credentials (HTTP basic); 401 or 403 means they are wrong;
* ``WWW-Authenticate: Basic``: ``GET /v2/`` again with the credentials; 401 means wrong.

Without credentials for a registry, it is named only when it refuses anonymous access outright
(a Basic registry that refuses one of the list's repositories too, or a token realm that refuses
an anonymous token); a registry that lets anonymous users in (Docker Hub, Harbor's public
projects) is left to the copy. An answer that proves nothing (a network error, an unexpected
status) says nothing: the copy reports it. The credentials appear in no message, log or
exception: only the names of the variables or the file that hold them.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hangar.imagelist import ImageRef
from hangar.registryapi import api_address, tls_context
from hangar.skopeo import SOURCE_CREDENTIALS, InfrastructureError, _read_auths

# What a registry's credentials check says: problems, given the registry and its scheme.
CredentialCheck = Callable[[str, str], list[str]]
ENV_CREDENTIALS = "SOURCE_USERNAME/SOURCE_PASSWORD"
_DOCKER_HUB_KEYS = {"index.docker.io", "registry-1.docker.io", "docker.io"}
_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True)
class Credentials:
    """Credentials given for one registry, and where they come from (never what they are)."""

    registry: str
    origin: str  # for messages: "SOURCE_USERNAME/SOURCE_PASSWORD" or "REGISTRY_AUTH_FILE …"
    fix: str  # what to correct, in words
    basic: str = field(repr=False)  # base64 of user:password, as the Authorization header

    @property
    def header(self) -> dict[str, str]:
        return {"Authorization": f"Basic {self.basic}"}


def registry_key(key: str) -> str:
    """The registry an auth file's key is for: ``https://index.docker.io/v1/`` is docker.io,
    ``reg:5000/ns`` (a namespace entry) is reg:5000."""
    host = re.sub(r"^[a-z]+://", "", key.strip()).split("/", 1)[0]
    return "docker.io" if host in _DOCKER_HUB_KEYS else host


def _default_auth_files(environ: Mapping[str, str]) -> list[Path]:
    """skopeo's own auth files (it may read them besides REGISTRY_AUTH_FILE)."""
    home = Path(environ.get("HOME", str(Path.home())))
    config_home = Path(environ.get("XDG_CONFIG_HOME", "") or home / ".config")
    docker = Path(environ.get("DOCKER_CONFIG", "") or home / ".docker")
    files = [config_home / "containers" / "auth.json", docker / "config.json"]
    if runtime := environ.get("XDG_RUNTIME_DIR", ""):
        files.insert(0, Path(runtime) / "containers" / "auth.json")
    return files


def _mentions(path: Path) -> set[str] | None:
    """The registries an auth file holds something for (``None``: all of them, through a
    credential store); an unreadable file holds nothing."""
    try:
        document = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return set()
    if not isinstance(document, dict):
        return set()
    if document.get("credsStore"):
        return None
    keys: set[str] = set()
    for section in ("auths", "credHelpers"):
        entries = document.get(section)
        if isinstance(entries, dict):
            keys.update(registry_key(str(key)) for key in entries)
    return keys


def _union(known: set[str] | None, more: set[str] | None) -> set[str] | None:
    """Registries with credentials somewhere; ``None`` stands for all of them."""
    return None if known is None or more is None else known | more


@dataclass
class Authentication:
    """What the run's credentials are for, and the check of each registry against them."""

    given: dict[str, Credentials]  # registry -> the credentials the image jobs will send it
    elsewhere: set[str] | None  # registries other auth files hold something for (None: all)
    env_registry: str  # the registry SOURCE_USERNAME/SOURCE_PASSWORD apply to ("": unset)
    repositories: dict[str, str]  # registry -> one repository of the list, for a Basic probe
    problems: list[str] = field(default_factory=list)

    @classmethod
    def of(
        cls, references: Iterable[ImageRef], credentials_registry: str, environ: Mapping[str, str]
    ) -> Authentication:
        repositories: dict[str, str] = {}
        for ref in references:
            repositories.setdefault(ref.registry, ref.repository)
        given: dict[str, Credentials] = {}
        problems: list[str] = []
        elsewhere: set[str] | None = set()
        auth_file = environ.get("REGISTRY_AUTH_FILE", "")
        # A file that does not exist yet holds no credentials, as for skopeo (`skopeo login`
        # creates it; hangar v1.6's own tests point the variable at one before logging in).
        if auth_file and Path(auth_file).exists():
            path = Path(auth_file)
            if not path.is_file():
                problems.append(
                    f"REGISTRY_AUTH_FILE names {auth_file}, which is not a file: correct it, "
                    "or unset it"
                )
            else:
                try:
                    auths = _read_auths(path)
                except InfrastructureError as error:
                    problems.append(str(error))
                    auths = {}
                for key, entry in sorted(auths.items()):
                    registry = registry_key(key)
                    token = entry.get("auth") if isinstance(entry, dict) else None
                    if registry in given or registry not in repositories:
                        continue
                    if not isinstance(token, str) or not token:
                        elsewhere = _union(elsewhere, {registry})
                        continue  # an identity token or a helper: nothing to probe with
                    given[registry] = Credentials(
                        registry,
                        f"REGISTRY_AUTH_FILE {auth_file}",
                        f'correct its "{key}" entry',
                        token,
                    )
        for path in _default_auth_files(environ):
            elsewhere = _union(elsewhere, _mentions(path))
        username, password = (environ.get(name, "") for name in SOURCE_CREDENTIALS)
        env_registry = credentials_registry if username and password else ""
        if env_registry in repositories:  # they replace a file entry for that registry
            token = base64.b64encode(f"{username}:{password}".encode()).decode()
            given[env_registry] = Credentials(
                env_registry,
                ENV_CREDENTIALS,
                f"correct SOURCE_USERNAME and SOURCE_PASSWORD (they are used for {env_registry})",
                token,
            )
        return cls(given, elsewhere, env_registry, repositories, problems)

    def file_problems(self) -> list[str]:
        return list(self.problems)

    def bind(self, tls_verify: bool, cert_dir: str, timeout: float) -> CredentialCheck:
        """The check of one registry (given its scheme), as ``registry_problems`` calls it."""

        def check(registry: str, scheme: str) -> list[str]:
            problem = self.check(registry, scheme, tls_verify, cert_dir, timeout)
            return [problem] if problem else []

        return check

    def check(
        self, registry: str, scheme: str, tls_verify: bool, cert_dir: str, timeout: float
    ) -> str:
        client = _Client(scheme, tls_verify, cert_dir, timeout)
        credentials = self.given.get(registry)
        try:
            if credentials is not None:
                return _refused(client, registry, credentials)
            if self.elsewhere is None or registry in self.elsewhere:
                return ""  # skopeo may find credentials there: nothing to say
            return self._anonymous(client, registry)
        except (OSError, http.client.HTTPException, ValueError):
            return ""  # proves nothing: the reachability probe passed, the copy will tell

    def _anonymous(self, client: _Client, registry: str) -> str:
        host, port = api_address(registry)
        status, challenge = client.get(host, port, "/v2/")
        if status != 401:
            return ""
        scheme, params = parse_challenge(challenge)
        if scheme == "bearer" and params.get("realm"):
            realm_status = client.get_url(_token_url(params), {})[0]
            refused = realm_status in (401, 403)
        elif scheme == "basic":
            repository = self.repositories.get(registry, "")
            refused = client.get(host, port, f"/v2/{repository}/tags/list")[0] == 401
        else:
            refused = False
        if not refused:
            return ""
        if self.env_registry and self.env_registry != registry:
            way = (
                f"{ENV_CREDENTIALS} are used for {self.env_registry} only (-s/--source, or the "
                f"list's only registry): give {registry}'s in a REGISTRY_AUTH_FILE"
            )
        else:
            way = "set SOURCE_USERNAME and SOURCE_PASSWORD, or give them in a REGISTRY_AUTH_FILE"
        return f"registry {registry} requires credentials and none are given for it: {way}"


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``("bearer", {"realm": …, "service": …})`` from a WWW-Authenticate header."""
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), dict(_CHALLENGE.findall(rest))


def _token_url(params: Mapping[str, str]) -> str:
    query = {key: params[key] for key in ("service", "scope") if params.get(key)}
    realm = params["realm"]
    if not query:
        return realm
    return f"{realm}{'&' if '?' in realm else '?'}{urllib.parse.urlencode(query)}"


def _refused(client: _Client, registry: str, credentials: Credentials) -> str:
    """ "" when the registry accepts the credentials (or the answer proves nothing)."""
    host, port = api_address(registry)
    status, challenge = client.get(host, port, "/v2/")
    if status != 401:
        return ""  # open, or an answer that proves nothing: the copy will tell
    scheme, params = parse_challenge(challenge)
    if scheme == "bearer" and params.get("realm"):
        answer = client.get_url(_token_url(params), credentials.header)[0]
    elif scheme == "basic":
        answer = client.get(host, port, "/v2/", credentials.header)[0]
    else:
        return ""
    if answer not in (401, 403):
        return ""
    return (
        f"registry {registry} refused the credentials of {credentials.origin} "
        f"(HTTP {answer}): {credentials.fix}"
    )


@dataclass(frozen=True)
class _Client:
    """GET requests as skopeo makes them: the registry's scheme, its TLS trust."""

    scheme: str
    tls_verify: bool
    cert_dir: str
    timeout: float

    def get(
        self, host: str, port: int | None, path: str, headers: Mapping[str, str] | None = None
    ) -> tuple[int, str]:
        return self._get(self.scheme, host, port, path, headers or {})

    def get_url(self, url: str, headers: Mapping[str, str]) -> tuple[int, str]:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("not an HTTP URL")
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return self._get(parts.scheme, parts.hostname, parts.port, path, headers)

    def _get(
        self, scheme: str, host: str, port: int | None, path: str, headers: Mapping[str, str]
    ) -> tuple[int, str]:
        """The status and the WWW-Authenticate header of one GET (the body is discarded)."""
        connection: http.client.HTTPConnection
        if scheme == "https":
            context = tls_context(self.tls_verify, self.cert_dir)
            connection = http.client.HTTPSConnection(
                host, port, timeout=self.timeout, context=context
            )
        else:
            connection = http.client.HTTPConnection(host, port, timeout=self.timeout)
        try:
            connection.request("GET", path, headers={"User-Agent": "hangar-save", **headers})
            response = connection.getresponse()
            response.read()
            return response.status, response.getheader("WWW-Authenticate", "") or ""
        finally:
            connection.close()
