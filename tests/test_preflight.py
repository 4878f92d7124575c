"""The preflight's credentials check against real handshakes: an htpasswd registry (Basic) and a
fake token registry (Bearer, as Docker Hub and Harbor do it); messages name where credentials
were tried and what to fix, never the credentials."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from pathlib import Path

import pytest
from support.registry import Registry
from support.tokenserver import TokenRegistry

from hangar.imagelist import ImageRef
from hangar.save.authcheck import registry_key
from hangar.save.preflight import PreflightError, check

USER, PASSWORD = "robot$ci", "Corr3ct-Horse"
WRONG = "not-the-Password"


def problems(
    registry: str, environ: Mapping[str, str], credentials_for: str = "", repository: str = "a/b"
) -> list[str]:
    """The preflight's lines for one image of ``registry``; ``[]`` when it passes."""
    ref = ImageRef(registry, repository, "1")
    try:
        check(["amd64"], ["linux"], [ref], False, "", credentials_for or registry, environ)
    except PreflightError as error:
        return str(error).splitlines()
    return []


def env(home: Path, **variables: str) -> dict[str, str]:
    """An environment whose default auth files (under ``home``) hold nothing."""
    return {"HOME": str(home), "XDG_CONFIG_HOME": "", "DOCKER_CONFIG": "", **variables}


def assert_secret_free(lines: list[str]) -> None:
    text = "\n".join(lines)
    for secret in (USER, PASSWORD, WRONG):
        assert secret not in text
        assert base64.b64encode(f"{USER}:{secret}".encode()).decode() not in text


def auth_file(path: Path, key: str, password: str) -> Path:
    token = base64.b64encode(f"{USER}:{password}".encode()).decode()
    path.write_text(json.dumps({"auths": {key: {"auth": token}}}))
    return path


def test_token_registry_right_wrong_and_missing_credentials(tmp_path: Path) -> None:
    with TokenRegistry(USER, PASSWORD, anonymous=False) as fake:
        right = env(tmp_path, SOURCE_USERNAME=USER, SOURCE_PASSWORD=PASSWORD)
        assert problems(fake.host, right) == []
        assert ("/token?service=fake-registry", True) in fake.requests

        wrong = problems(fake.host, env(tmp_path, SOURCE_USERNAME=USER, SOURCE_PASSWORD=WRONG))
        assert wrong == [
            f"preflight: registry {fake.host} refused the credentials of "
            "SOURCE_USERNAME/SOURCE_PASSWORD (HTTP 401): correct SOURCE_USERNAME and "
            f"SOURCE_PASSWORD (they are used for {fake.host})"
        ]
        assert_secret_free(wrong)

        none = problems(fake.host, env(tmp_path))
        assert none == [
            f"preflight: registry {fake.host} requires credentials and none are given for it: "
            "set SOURCE_USERNAME and SOURCE_PASSWORD, or give them in a REGISTRY_AUTH_FILE"
        ]


def test_token_registry_open_to_anonymous_users_needs_nothing(tmp_path: Path) -> None:
    with TokenRegistry(USER, PASSWORD, anonymous=True) as fake:
        assert problems(fake.host, env(tmp_path)) == []
        assert ("/token?service=fake-registry", False) in fake.requests
        # credentials given are still checked, even where anonymous access would do
        wrong = problems(fake.host, env(tmp_path, SOURCE_USERNAME=USER, SOURCE_PASSWORD=WRONG))
        assert len(wrong) == 1 and "refused the credentials" in wrong[0]


def test_credentials_for_another_registry_are_named_as_such(tmp_path: Path) -> None:
    with TokenRegistry(USER, PASSWORD, anonymous=False) as fake:
        environ = env(tmp_path, SOURCE_USERNAME=USER, SOURCE_PASSWORD=PASSWORD)
        lines = problems(fake.host, environ, credentials_for="docker.io")
        assert lines == [
            f"preflight: registry {fake.host} requires credentials and none are given for it: "
            "SOURCE_USERNAME/SOURCE_PASSWORD are used for docker.io only (-s/--source, or the "
            f"list's only registry): give {fake.host}'s in a REGISTRY_AUTH_FILE"
        ]
        assert not any(with_auth for _path, with_auth in fake.requests), "sent elsewhere"


def test_an_auth_file_entry_is_checked_and_named(tmp_path: Path) -> None:
    with TokenRegistry(USER, PASSWORD, anonymous=False) as fake:
        path = auth_file(tmp_path / "auth.json", f"http://{fake.host}", WRONG)
        lines = problems(fake.host, env(tmp_path, REGISTRY_AUTH_FILE=str(path)))
        assert lines == [
            f"preflight: registry {fake.host} refused the credentials of REGISTRY_AUTH_FILE "
            f'{path} (HTTP 401): correct its "http://{fake.host}" entry'
        ]
        assert_secret_free(lines)
        auth_file(path, fake.host, PASSWORD)
        assert problems(fake.host, env(tmp_path, REGISTRY_AUTH_FILE=str(path))) == []


def test_skopeos_own_auth_files_are_not_second_guessed(tmp_path: Path) -> None:
    with TokenRegistry(USER, PASSWORD, anonymous=False) as fake:
        docker = tmp_path / ".docker"
        docker.mkdir()
        (docker / "config.json").write_text(json.dumps({"credHelpers": {fake.host: "pass"}}))
        assert problems(fake.host, env(tmp_path)) == []


def test_a_broken_auth_file_is_one_line_and_one_not_yet_written_holds_nothing(
    tmp_path: Path,
) -> None:
    with TokenRegistry(USER, PASSWORD) as fake:
        # skopeo reads a missing file as no credentials (`skopeo login` writes it later)
        missing = tmp_path / "nope.json"
        assert problems(fake.host, env(tmp_path, REGISTRY_AUTH_FILE=str(missing))) == []
        assert not missing.exists()
        folder = tmp_path / "a-folder"
        folder.mkdir()
        assert problems(fake.host, env(tmp_path, REGISTRY_AUTH_FILE=str(folder))) == [
            f"preflight: REGISTRY_AUTH_FILE names {folder}, which is not a file: correct it, "
            "or unset it"
        ]
        broken = tmp_path / "broken.json"
        broken.write_text('{"auths": {"x": {"auth": "' + PASSWORD + '"')
        lines = problems(fake.host, env(tmp_path, REGISTRY_AUTH_FILE=str(broken)))
        assert lines == [f"preflight: REGISTRY_AUTH_FILE {broken}: not a JSON auth file (line 1)"]
        assert_secret_free(lines)


@pytest.mark.registry
def test_htpasswd_registry_right_wrong_and_missing_credentials(
    tmp_path: Path, auth_registry: Registry
) -> None:
    user, password = auth_registry.credentials or ("", "")
    host = auth_registry.host
    assert problems(host, env(tmp_path, SOURCE_USERNAME=user, SOURCE_PASSWORD=password)) == []
    wrong = problems(host, env(tmp_path, SOURCE_USERNAME=user, SOURCE_PASSWORD=WRONG))
    assert wrong == [
        f"preflight: registry {host} refused the credentials of SOURCE_USERNAME/SOURCE_PASSWORD "
        f"(HTTP 401): correct SOURCE_USERNAME and SOURCE_PASSWORD (they are used for {host})"
    ]
    assert password not in wrong[0] and user not in wrong[0]
    none = problems(host, env(tmp_path))
    assert len(none) == 1 and f"registry {host} requires credentials and none are given" in none[0]


@pytest.mark.registry
def test_an_open_registry_needs_no_credentials(tmp_path: Path, registry: Registry) -> None:
    assert problems(registry.host, env(tmp_path)) == []
    # an open registry accepts any credentials: nothing to refuse
    assert problems(registry.host, env(tmp_path, SOURCE_USERNAME="x", SOURCE_PASSWORD="y")) == []


@pytest.mark.parametrize(
    ("key", "registry"),
    [
        ("https://index.docker.io/v1/", "docker.io"),
        ("registry-1.docker.io", "docker.io"),
        ("reg.example.com:5000/team", "reg.example.com:5000"),
        ("http://127.0.0.1:5000", "127.0.0.1:5000"),
        ("quay.io", "quay.io"),
    ],
)
def test_auth_file_keys_name_their_registry(key: str, registry: str) -> None:
    assert registry_key(key) == registry
