"""Shared fixtures: local registries on 127.0.0.1 and a catalogue of synthetic images."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.images import PushedImage, push_catalogue
from support.registry import REGISTRY_BINARY, Registry

REGISTRY_TOOLS = ("skopeo", REGISTRY_BINARY, "htpasswd", "openssl")
REGISTRY_FIXTURES = frozenset(
    {"registry", "auth_registry", "tls_registry", "registry_factory", "sample_images"}
)
AUTH_CREDENTIALS = ("hangar", "s3cret-Pa55")


def missing_registry_tools() -> list[str]:
    return [tool for tool in REGISTRY_TOOLS if shutil.which(tool) is None]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "registry: needs skopeo, docker-registry, htpasswd and openssl (skipped when missing); "
        "set automatically on tests using the registry fixtures",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    missing = missing_registry_tools()
    skip = pytest.mark.skip(reason=f"not installed: {', '.join(missing)}")
    for item in items:
        uses_registry = REGISTRY_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        if uses_registry and not item.get_closest_marker("registry"):
            item.add_marker(pytest.mark.registry)
        if missing and item.get_closest_marker("registry"):
            item.add_marker(skip)


def _require_tools() -> None:
    if missing := missing_registry_tools():
        pytest.skip(f"not installed: {', '.join(missing)}")


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A plain-HTTP registry without authentication, shared by the whole session."""
    _require_tools()
    with Registry(tmp_path_factory.mktemp("registry")) as running:
        yield running


@pytest.fixture(scope="session")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A plain-HTTP registry with htpasswd authentication; `.creds` is `user:password`."""
    _require_tools()
    with Registry(tmp_path_factory.mktemp("auth-registry"), htpasswd=AUTH_CREDENTIALS) as running:
        yield running


@pytest.fixture(scope="session")
def tls_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """An HTTPS registry with a self-signed certificate; trust it with `.cert_dir`/`.ca_file`."""
    _require_tools()
    with Registry(tmp_path_factory.mktemp("tls-registry"), tls=True) as running:
        yield running


@pytest.fixture
def registry_factory(tmp_path: Path) -> Iterator[Callable[..., Registry]]:
    """`registry_factory(**Registry options)` starts a private registry, stopped after the test."""
    _require_tools()
    started: list[Registry] = []

    def start(**options: Any) -> Registry:
        started.append(Registry(tmp_path / f"registry-{len(started)}", **options).start())
        return started[-1]

    try:
        yield start
    finally:
        for running in started:
            running.stop()


@pytest.fixture(scope="session")
def sample_images(registry: Registry) -> dict[str, PushedImage]:
    """The catalogue (support.images.CATALOGUE) pushed to `registry`: `repo:tag` → PushedImage."""
    return push_catalogue(registry.host)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """An empty directory for one test's inputs and outputs."""
    path = tmp_path / "work"
    path.mkdir()
    return path
