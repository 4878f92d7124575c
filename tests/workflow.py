"""Run the real workflow with real snakemake in a test's working directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
SNAKEFILE = REPO / "Snakefile"


def write_list(workdir: Path, lines: list[str], name: str = "images.txt") -> Path:
    path = workdir / name
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def snakemake_command(workdir: Path, config: dict[str, Any], *extra: str) -> list[str]:
    config_file = workdir / "test-config.yaml"
    config_file.write_text(yaml.safe_dump({"tls_verify": False, "retry_delay": 0.1, **config}))
    return [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(SNAKEFILE),
        "--directory",
        str(workdir),
        "--cores",
        "4",
        *extra,
        "--configfile",
        str(config_file),
    ]


def run_workflow(
    workdir: Path,
    config: dict[str, Any],
    *extra: str,
    check: bool = True,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run snakemake to completion; with ``check`` a failure shows its whole output.

    Its stderr is Snakemake's full log, which these tests read (test_terminal_output.py tests the
    short output a person sees)."""
    done = subprocess.run(
        snakemake_command(workdir, config, *extra),
        capture_output=True,
        text=True,
        env={**os.environ, "HANGAR_SNAKEMAKE_LOG": "full", **(env or {})},
        timeout=600,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"snakemake failed ({done.returncode}):\n{done.stderr[-6000:]}")
    return done


def saved_list(cache: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((cache / "saved-images-list.json").read_text())
    return data


def entries_by_source(cache: Path) -> dict[str, dict[str, Any]]:
    return {f"{e['Source']}:{e['Tag']}": e for e in saved_list(cache)["List"]}


def skopeo_json(*args: str) -> Any:
    done = subprocess.run(["skopeo", *args], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def oci_manifest(cache: Path, folder: str) -> dict[str, Any]:
    """The folder's manifest as skopeo reads it from the layout and the shared blob dir."""
    data: dict[str, Any] = skopeo_json(
        "inspect", "--raw", "--shared-blob-dir", str(cache / "share"), f"oci:{cache / folder}"
    )
    return data
