"""The load workflow's config: schema defaults, checks and the paths derived from it."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from hangar.load.push import PushOptions
from hangar.load.source import LoadInput, LoadInputError, default_cache, locate_input
from hangar.settings import REPO_ROOT, ConfigError

LOAD_SCHEMA_FILE = REPO_ROOT / "schemas" / "load.schema.yaml"
CACHE_PARENT = "hangar-load-cache"


@functools.cache
def load_schema() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(LOAD_SCHEMA_FILE.read_text())
    return loaded


def load_defaults() -> dict[str, Any]:
    properties = load_schema()["properties"]
    return {key: spec["default"] for key, spec in properties.items() if "default" in spec}


def complete_load_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config with defaults, validated; ConfigError has one ``key: problem`` per line."""
    full = {**load_defaults(), **config}
    validator = jsonschema.Draft202012Validator(load_schema())
    problems = sorted(validator.iter_errors(full), key=lambda e: [str(p) for p in e.absolute_path])
    if problems:
        lines = [
            f"{'.'.join(str(p) for p in problem.absolute_path) or 'config'}: {problem.message}"
            for problem in problems
        ]
        raise ConfigError("\n".join(lines))
    return full


@dataclass(frozen=True)
class LoadSettings:
    source: LoadInput
    cache: Path  # extraction and state
    root: Path  # where the saved list and layouts are read: the cache, or the directory
    failed: Path
    push: PushOptions

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> LoadSettings:
        """From a validated config (defaults filled in); errors name the key."""
        try:
            source = locate_input(config["archive"], config["compress"])
        except LoadInputError as problem:
            raise ConfigError(f"archive: {problem}") from None
        cache = (
            Path(config["cache"]) if config["cache"] else default_cache(source, Path(CACHE_PARENT))
        )
        if ":" in str(cache.absolute()):
            raise ConfigError(f"cache: the path may not contain ':' (skopeo syntax): {cache}")
        root = source.path if source.format == "dir" else cache
        if ":" in str(root.absolute()):
            raise ConfigError(f"archive: the path may not contain ':' (skopeo syntax): {root}")
        if config["cert_dir"] and not Path(config["cert_dir"]).is_dir():
            raise ConfigError(f"cert_dir: {config['cert_dir']} is not a directory")
        push = PushOptions(
            root=root.absolute(),
            state=cache.absolute(),
            registry=config["destination"].strip().rstrip("/"),
            default_project=config["default_project"],
            manifest_format=config["format"],
            tls_verify=config["tls_verify"],
            cert_dir=config["cert_dir"],
            retry_times=config["retry_times"],
            retry_delay=config["retry_delay"],
            repo_type=config["repo_type"],
            harbor_https=config["harbor_https"],
        )
        return cls(source, cache, root, Path(config["failed"]), push)
