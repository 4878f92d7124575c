"""`hangar save` as a drop-in for hangar v1.6: the scenarios of hangar's own test/test_save.py
(same flags, same list shapes, same expectations), its name rules, invalid lines skipped, and
OCI artifacts (Helm charts) saved; all against a real local registry.

hangar's suite saves a list with comments, a blank line, an invalid line and a bare one-component
name under SOURCE_REGISTRY, appends --tls-verify=false to every call, and expects exit status 0,
no save-failed.txt and the archive in place.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import pandas as pd
import pytest
from support.images import (
    LINUX_AMD64,
    LINUX_ARM64_V8,
    OCI_MANIFEST,
    push_helm_chart,
    push_image,
)
from support.registry import Registry
from test_cli import run_hangar, write_list

from hangar import verify

HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"
# The shape of hangar v1.6.1's test/data/save_test.txt (its images, our registry).
SAVE_TEST = [
    "# COMMENT LINE",
    "// COMMENT LINE",
    "",
    "INVALID LINE",
    "",
    "# save mirrored images",
    "mirror-test/mirrored-skopeo:v1.11.1",
    "mirror-test/mirrored-cas:6.5.6",
    "mirrored-nginx:1.23",
]
SAVE_TEST_ONE = ["mirrored-nginx:1.23"]
CHART = "rancher/charts/fleet:105.0.0"


@pytest.fixture(scope="module")
def hub(registry: Registry) -> dict[str, str]:
    """The images of the lists above (as hangar resolves them under SOURCE_REGISTRY) and a
    Helm chart, pushed to the session registry: name → top digest."""
    pushed = {}
    for repo, tag in [
        ("mirror-test/mirrored-skopeo", "v1.11.1"),
        ("mirror-test/mirrored-cas", "6.5.6"),
        ("library/mirrored-nginx", "1.23"),
        ("pause", "3.9"),
    ]:
        image = push_image(
            registry.host,
            repo,
            tag,
            [LINUX_AMD64, LINUX_ARM64_V8],
            kind="oci-index",
            base_seed=f"dropin-{repo}",
        )
        pushed[f"{repo}:{tag}"] = image.digest
    pushed[CHART] = push_helm_chart(registry.host, *CHART.split(":"))
    return pushed


def save(workdir: Path, registry: Registry, *args: str, source: bool = True) -> tuple[int, str]:
    env = {"SOURCE_REGISTRY": registry.host} if source else {}
    done = run_hangar(workdir, *args, env=env)
    return done.returncode, done.stderr


def saved(workdir: Path) -> dict[str, object]:
    document: dict[str, object] = json.loads(
        (workdir / "saved-image-cache" / "saved-images-list.json").read_text()
    )
    return document


def folder(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("list_lines", "flags", "output"),
    [
        (SAVE_TEST, ["-j", "20", "--debug"], "saved-images.tar.gz"),
        (SAVE_TEST_ONE, [], "saved-images.tar.gz"),
        (SAVE_TEST, ["-a", "arm64", "--no-arch-os-fail=false"], "saved-images.tar.gz"),
        (SAVE_TEST_ONE, ["-j", "0"], "saved-images.tar.gz"),
        (SAVE_TEST_ONE, ["-j", "100"], "saved-images.tar.gz"),
        (SAVE_TEST_ONE, ["-j", "10", "--compress", "zstd"], "saved-images.tar.zstd"),
        (SAVE_TEST_ONE, ["-j", "10", "--compress", "dir"], "saved-images"),
        (
            SAVE_TEST_ONE,
            ["-j", "10", "--compress", "gzip", "--part", "--part-size=50M"],
            "saved-images.tar.gz.part0",
        ),
    ],
    ids=["jobs-20", "jobs-1", "no-arch-fail", "jobs-0", "jobs-100", "zstd", "dir", "part"],
)
def test_hangars_save_suite_scenarios(
    workdir: Path,
    registry: Registry,
    hub: dict[str, str],
    list_lines: list[str],
    flags: list[str],
    output: str,
) -> None:
    write_list(workdir, *list_lines, name="list.txt")
    code, stderr = save(workdir, registry, "save", "-f", "list.txt", *flags, "--tls-verify=false")
    assert code == 0, stderr[-3000:]
    assert not (workdir / "save-failed.txt").exists()
    assert (workdir / output).exists()
    if "-j" in flags and flags[flags.index("-j") + 1] in ("0", "100"):
        assert "WARNING: --jobs" in stderr
    sources = [entry["Source"] for entry in saved(workdir)["List"]]  # type: ignore[index]
    assert f"{registry.host}/library/mirrored-nginx" in sources
    assert "Cannot restore" not in stderr


@pytest.mark.slow
def test_global_flags_before_the_command(
    workdir: Path, registry: Registry, hub: dict[str, str]
) -> None:
    write_list(workdir, *SAVE_TEST_ONE)
    code, stderr = save(workdir, registry, "--tls-verify=false", "save", "-f", "images.txt")
    assert code == 0, stderr[-2000:]
    code, stderr = save(
        workdir, registry, "--debug", "--tls-verify=false", "save", "-f", "images.txt"
    )
    assert code == 0 and "running: " in stderr  # --debug shows the Snakemake call


@pytest.mark.slow
def test_names_resolve_as_hangar_with_and_without_source(
    workdir: Path, registry: Registry, hub: dict[str, str]
) -> None:
    """A bare one-component name gets library/ before the source registry replaces Docker Hub;
    a line naming its own registry keeps its path, with or without the source."""
    host = registry.host
    write_list(workdir, "mirrored-nginx:1.23", "other.example:5000/pause:3.9", "gone:1")
    code, stderr = save(workdir, registry, "save", "-f", "images.txt", "--tls-verify=false")
    assert code == 0, stderr[-2000:]
    entries = {entry["Source"]: entry for entry in saved(workdir)["List"]}  # type: ignore[index]
    assert sorted(entries) == [f"{host}/library/mirrored-nginx", f"{host}/pause"]
    nginx = entries[f"{host}/library/mirrored-nginx"]
    assert {image["Folder"] for image in nginx["Images"]} == {
        folder(f"{host}/library/mirrored-nginx:1.23-amd64"),
        folder(f"{host}/library/mirrored-nginx:1.23-arm64"),
    }
    # the failed list holds the original line; the log names the copied reference
    assert (workdir / "save-failed.txt").read_text() == "gone:1\n"
    assert f"{host}/library/gone:1" in stderr

    own = workdir / "own"
    own.mkdir()
    write_list(own, f"{host}/pause:3.9")
    code, stderr = save(
        own, registry, "save", "-f", "images.txt", "--tls-verify=false", source=False
    )
    assert code == 0, stderr[-2000:]
    assert [e["Source"] for e in saved(own)["List"]] == [f"{host}/pause"]  # type: ignore[index]


@pytest.mark.slow
def test_invalid_lines_are_skipped_named_and_not_failed(
    workdir: Path, registry: Registry, hub: dict[str, str]
) -> None:
    write_list(workdir, "INVALID LINE", "mirrored-nginx:1.23", "Upper/Case:1", "missing:1")
    code, stderr = save(workdir, registry, "save", "-f", "images.txt", "--tls-verify=false")
    assert code == 0, stderr[-2000:]
    assert (
        'WARNING: ignore line "INVALID LINE" in list file: invalid format '
        "(images.txt:1: whitespace inside the reference)"
    ) in stderr
    assert "images.txt:3: repository names must be lower-case" in stderr
    assert "2 invalid line(s) of the list ignored (not saved):" in stderr  # the summary
    assert (workdir / "save-failed.txt").read_text() == "missing:1\n"
    report = pd.read_csv(workdir / "save-report.csv", keep_default_na=False)
    invalid = report[report["state"] == "invalid"]
    assert invalid["image"].tolist() == ["INVALID LINE", "Upper/Case:1"]
    assert invalid["reason"].str.startswith("images.txt:").all()
    assert "invalid lines skipped" in (workdir / "save-report.html").read_text()


@pytest.mark.slow
def test_strict_refuses_invalid_lines_before_any_download(
    workdir: Path, registry: Registry, hub: dict[str, str]
) -> None:
    write_list(workdir, "INVALID LINE", "mirrored-nginx:1.23")
    code, stderr = save(
        workdir, registry, "save", "-f", "images.txt", "--strict", "--tls-verify=false"
    )
    assert code == 1
    assert "ERROR: images.txt:1: whitespace inside the reference: 'INVALID LINE'" in stderr
    assert not (workdir / "saved-image-cache" / "share").exists()


@pytest.mark.slow
def test_a_list_with_nothing_valid_fails_clearly(workdir: Path, registry: Registry) -> None:
    write_list(workdir, "# only", "INVALID LINE")
    code, stderr = save(workdir, registry, "save", "-f", "images.txt")
    assert code == 1
    assert "ERROR: images.txt: no valid image" in stderr


@pytest.mark.slow
def test_a_helm_chart_beside_images_is_saved_archived_and_verified(
    workdir: Path, registry: Registry, hub: dict[str, str]
) -> None:
    host = registry.host
    write_list(workdir, "mirrored-nginx:1.23", CHART)
    args = ("save", "-f", "images.txt", "-a", "arm64", "--no-arch-os-fail", "--tls-verify=false")
    code, stderr = save(workdir, registry, *args)
    assert code == 0, stderr[-2000:]
    assert not (workdir / "save-failed.txt").exists()  # arch filters do not apply to charts
    document = saved(workdir)
    assert list(document) == ["List", "Artifacts", "Version", "SavedTime"]
    assert [e["Source"] for e in document["List"]] == [  # type: ignore[attr-defined]
        f"{host}/library/mirrored-nginx"
    ]
    chart_source, chart_tag = CHART.split(":")
    assert document["Artifacts"] == [
        {
            "Source": f"{host}/{chart_source}",
            "Tag": chart_tag,
            "Digest": hub[CHART],
            "MediaType": OCI_MANIFEST,
            "ArtifactType": HELM_CONFIG,
            "Folder": folder(f"{host}/{CHART}"),
        }
    ]
    # the manifest is kept byte for byte: its blob has the source digest
    chart_folder = workdir / "saved-image-cache" / folder(f"{host}/{CHART}")
    index = json.loads((chart_folder / "index.json").read_text())
    assert [m["digest"] for m in index["manifests"]] == [hub[CHART]]
    result = verify.verify(workdir / "saved-images.tar.gz")
    assert result.findings.errors == [], result.findings.errors
    assert result.artifacts == 1 and result.images == 1
    names = verify_archive_names(workdir / "saved-images.tar.gz")
    assert f"saved-image-cache/{folder(f'{host}/{CHART}')}/index.json" in names
    assert f"saved-image-cache/share/sha256/{hub[CHART][7:]}" in names
    report = pd.read_csv(workdir / "save-report.csv", keep_default_na=False)
    row = report[report["kind"] == "artifact"].iloc[0]
    assert (row["state"], row["image"]) == ("ok", f"{host}/{CHART}")


@pytest.mark.slow
def test_a_list_of_only_a_chart(workdir: Path, registry: Registry, hub: dict[str, str]) -> None:
    write_list(workdir, CHART)
    code, stderr = save(workdir, registry, "save", "-f", "images.txt", "--tls-verify=false")
    assert code == 0, stderr[-2000:]
    document = saved(workdir)
    assert document["List"] == [] and len(document["Artifacts"]) == 1  # type: ignore[arg-type]
    assert verify.verify(workdir / "saved-images.tar.gz").findings.errors == []
    code, stdout_err = save(
        workdir, registry, "save", "-f", "images.txt", "--dry-run", "--tls-verify=false"
    )
    assert code == 0, stdout_err[-2000:]


def verify_archive_names(path: Path) -> set[str]:
    with tarfile.open(path) as tar:
        return set(tar.getnames())


@pytest.mark.slow
def test_a_first_run_that_saves_nothing_says_nothing_of_backups(
    workdir: Path, registry: Registry
) -> None:
    write_list(workdir, "not-there:1")
    code, stderr = save(
        workdir, registry, "save", "-f", "images.txt", "--debug", "--tls-verify=false"
    )
    assert code == 1 and "no image was saved" in stderr
    log = (workdir / "saved-image-cache" / ".hangar" / "snakemake.log").read_text()
    assert "nothing was saved" in log
    assert "Cannot restore" not in stderr + log
