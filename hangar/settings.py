"""Checks of the workflow config that a JSON schema cannot express, with errors naming the key."""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jsonschema
import yaml

from hangar.layout import checksum_path, part_number
from hangar.units import default_destination, parse_duration, parse_size

Compress = Literal["gzip", "zstd", "dir"]
Verify = Literal["size", "digest"]


WORKFLOW_PACKAGE = "hangar_workflow"  # the workflow's files, installed by `pip install .`


def workflow_root() -> Path:
    """Where the Snakefile, rules/, scripts/, schemas/ and profiles/ are: the checkout the
    package sits in (a plain checkout, an editable install), else the copy that `pip install .`
    put beside the package (pyproject.toml: package ``hangar_workflow``)."""
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "Snakefile").is_file():
        return checkout
    spec = importlib.util.find_spec(WORKFLOW_PACKAGE)
    for location in (spec.submodule_search_locations or []) if spec else []:
        if (Path(location) / "Snakefile").is_file():
            return Path(location)
    return checkout  # nowhere: the missing Snakefile is named by whoever opens it


REPO_ROOT = workflow_root()
SNAKEFILE = REPO_ROOT / "Snakefile"
SCHEMA_FILE = REPO_ROOT / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A config value is unusable; the message starts with the key at fault."""


@functools.cache
def schema() -> dict[str, Any]:
    """The workflow's config schema (the one the Snakefile validates with)."""
    loaded: dict[str, Any] = yaml.safe_load(SCHEMA_FILE.read_text())
    return loaded


def schema_defaults() -> dict[str, Any]:
    return {
        key: spec["default"] for key, spec in schema()["properties"].items() if "default" in spec
    }


def complete_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config with the schema's defaults, validated as the workflow validates it.

    Raises ConfigError with one ``key: problem`` line per problem, sorted by key.
    """
    full = {**schema_defaults(), **config}
    validator = jsonschema.Draft202012Validator(schema())
    problems = sorted(validator.iter_errors(full), key=lambda e: [str(p) for p in e.absolute_path])
    if problems:
        raise ConfigError("\n".join(_problem_line(problem) for problem in problems))
    return full


def _problem_line(problem: jsonschema.ValidationError) -> str:
    key = ".".join(str(part) for part in problem.absolute_path) or "config"
    return f"{key}: {problem.message}"


@dataclass(frozen=True)
class Settings:
    file: Path
    source: str
    strict: bool
    arch: tuple[str, ...]
    os: tuple[str, ...]
    no_arch_os_fail: bool
    failed: Path
    tls_verify: bool
    cert_dir: str
    retry_times: int
    retry_delay: float
    timeout: float  # seconds
    cache: Path
    destination: Path
    compress: Compress
    part_size: int | None
    verify: Verify
    ignore_free_space: bool = False

    @classmethod
    def from_config(cls, config: Mapping[str, Any], workdir: Path | None = None) -> Settings:
        """Build settings from a schema-validated config (defaults already filled in)."""
        workdir = (workdir or Path.cwd()).absolute()
        compress = config["compress"]
        cache = Path(config["cache"])
        destination = Path(default_destination(config["destination"], compress))
        # Checked even without `part`: a bad value is a mistake the user wants to hear about
        # now, not on the day `part` is switched on.
        try:
            size = parse_size(config["part_size"])
        except ValueError as error:
            raise ConfigError(f"part_size: {error}") from None
        part_size = size if config["part"] else None
        try:
            timeout = parse_duration(config["timeout"])
        except ValueError as error:
            raise ConfigError(f"timeout: {error}") from None
        if ":" in str(cache.absolute()):
            raise ConfigError(f"cache: the path may not contain ':' (skopeo syntax): {cache}")
        _check_apart(workdir / cache, workdir / destination)
        _check_destination_names_a_file(config["destination"])
        _check_list_spared(
            workdir / config["file"], workdir / config["failed"], workdir / destination, compress
        )
        _check_writable_dir("cache", workdir / cache)
        _check_writable_parent("destination", workdir / destination)
        _check_writable_parent("failed", workdir / config["failed"])
        if config["cert_dir"] and not (workdir / config["cert_dir"]).is_dir():
            raise ConfigError(f"cert_dir: {config['cert_dir']} is not a directory")
        return cls(
            file=Path(config["file"]),
            source=config["source"],
            strict=bool(config.get("strict", False)),
            arch=tuple(_nonempty_list("arch", config["arch"])),
            os=tuple(_nonempty_list("os", config["os"])),
            no_arch_os_fail=config["no_arch_os_fail"],
            failed=Path(config["failed"]),
            tls_verify=config["tls_verify"],
            cert_dir=config["cert_dir"],
            retry_times=config["retry_times"],
            retry_delay=config["retry_delay"],
            timeout=timeout,
            cache=cache,
            destination=destination,
            compress=compress,
            part_size=part_size,
            verify=config["verify"],
            ignore_free_space=bool(config.get("ignore_free_space", False)),
        )


def _nonempty_list(key: str, value: Any) -> list[str]:
    items = [item.strip() for item in value.split(",")] if isinstance(value, str) else value
    items = [item for item in items if item]
    if not items:
        raise ConfigError(f"{key}: give at least one value")
    return list(dict.fromkeys(items))


def _check_destination_names_a_file(destination: str) -> None:
    """``-d /``, ``-d out/`` or ``-d ~`` would become a hidden ``.tar.gz`` or a literal ``~``."""
    if not destination:
        return
    name = destination.replace("\\", "/").rstrip()
    last = name.rsplit("/", 1)[-1]
    if name.endswith("/") or last in ("", ".", "..") or name.startswith("~"):
        raise ConfigError(
            f"destination: {destination!r} names a directory (or ~, which is not expanded); "
            "give a file path such as out/saved-images.tar.gz"
        )


def _check_apart(cache: Path, destination: Path) -> None:
    cache, destination = cache.resolve(), destination.resolve()
    if destination == cache or cache in destination.parents or destination in cache.parents:
        raise ConfigError(
            f"destination: {destination} overlaps the cache {cache}; choose another path"
        )


def _check_list_spared(image_list: Path, failed: Path, destination: Path, compress: str) -> None:
    """No output may be written over the image list, nor the failed list over the archive."""
    image_list, failed, destination = image_list.resolve(), failed.resolve(), destination.resolve()

    def archived(path: Path) -> bool:
        if path in (destination, checksum_path(destination)):
            return True
        if compress == "dir":
            return destination in path.parents
        return path.parent == destination.parent and part_number(destination, path.name) is not None

    if failed == image_list:
        raise ConfigError(f"failed: {failed} is the image list; choose another file")
    if archived(image_list):
        raise ConfigError(
            f"destination: the archive {destination} would overwrite the image list {image_list}"
        )
    if archived(failed):
        raise ConfigError(f"failed: {failed} is part of the archive {destination}")


def _check_writable_dir(key: str, path: Path) -> None:
    """``path`` is a directory this process may write in, or one it can create."""
    existing = path.resolve()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}: cannot write to {existing} (for {path})")


def _check_writable_parent(key: str, path: Path) -> None:
    parent = path.resolve().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}: cannot write to {parent} (for {path})")


def schema_error_line(error: BaseException) -> str:
    """``key: problem`` for a config that fails the JSON schema, on one line.

    Takes jsonschema's ValidationError, or the WorkflowError that ``snakemake.utils.validate``
    raises while handling one (whose own text dumps the whole schema as well).
    """
    for candidate in (error, error.__cause__, error.__context__):
        path, message = (
            getattr(candidate, "absolute_path", None),
            getattr(candidate, "message", None),
        )
        if path is None or not isinstance(message, str):
            continue
        validator, instance = (
            getattr(candidate, "validator", ""),
            getattr(candidate, "instance", {}),
        )
        if validator == "additionalProperties" and isinstance(instance, dict):
            known = list(getattr(candidate, "schema", {}).get("properties", {}))
            unknown = [str(key) for key in instance if key not in known]
            return f"{', '.join(unknown)}: unknown key; the keys are {', '.join(known)}"
        if validator == "required" and isinstance(instance, dict):
            wanted = getattr(candidate, "validator_value", [])
            missing = [str(key) for key in wanted if key not in instance]
            return f"{', '.join(missing)}: required, but not given"
        key = ".".join(str(part) for part in path) or "config"
        return f"{key}: {message}"
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
