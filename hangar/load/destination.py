"""Where a saved image goes: hangar v1.6's repository mapping.

The registry of the saved ``Source`` is replaced by the destination registry; a repository
without a project (``registry/name``) gets the default project (``library``).
"""

from __future__ import annotations


def split_source(source: str) -> tuple[str, list[str]]:
    """``(registry, path components)`` of a saved Source (registry "" when it names none)."""
    parts = [part for part in source.split("/") if part]
    if len(parts) > 1 and (any(c in parts[0] for c in ".:") or parts[0] == "localhost"):
        return parts[0], parts[1:]
    return "", parts


def project_of(source: str) -> str:
    """The project (namespace) of a Source, "" when it has none."""
    _, path = split_source(source)
    return path[0] if len(path) > 1 else ""


def destination_repository(source: str, registry: str, default_project: str) -> str:
    """``<registry>/<project>/<name>`` for a saved Source."""
    _, path = split_source(source)
    if len(path) == 1 and default_project:
        path = [default_project, *path]
    return "/".join([registry.rstrip("/"), *path])
