"""`pip install .` installs the workflow beside the package: every file the workflow reads must
be matched by pyproject.toml's package data, and an installed `hangar` must find it."""

from __future__ import annotations

import fnmatch
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from hangar import settings

REPO = Path(__file__).resolve().parent.parent
WORKFLOW_DIRS = ("rules/", "scripts/", "schemas/", "profiles/", "envs/", "config/")


def test_package_data_holds_every_workflow_file() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert project["package-dir"][settings.WORKFLOW_PACKAGE] == "."
    patterns = project["package-data"][settings.WORKFLOW_PACKAGE]
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    workflow = [name for name in tracked if name == "Snakefile" or name.startswith(WORKFLOW_DIRS)]
    assert "rules/save/report.smk" in workflow and "profiles/default/config.yaml" in workflow
    unmatched = [n for n in workflow if not any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    assert unmatched == []


def test_workflow_root_is_the_checkout_or_the_installed_copy(tmp_path: Path) -> None:
    assert settings.workflow_root() == REPO
    # as `pip install .` lays it out: the package and hangar_workflow side by side, no checkout
    site = tmp_path / "site-packages"
    shutil.copytree(REPO / "hangar", site / "hangar", ignore=shutil.ignore_patterns("__pycache__"))
    (site / settings.WORKFLOW_PACKAGE).mkdir()
    (site / settings.WORKFLOW_PACKAGE / "Snakefile").write_text("")
    code = "from hangar import settings; print(settings.SNAKEFILE)"
    found = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(site)!r}); {code}"],
        capture_output=True, text=True, check=True, cwd=tmp_path,
    )  # fmt: skip
    assert found.stdout.strip() == str(site / settings.WORKFLOW_PACKAGE / "Snakefile")
