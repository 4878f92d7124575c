"""`hangar.save.plan`: resolve without downloading layers, count bytes once, warn if short."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
from collections import namedtuple
from pathlib import Path
from typing import Any

import pytest
from support.images import PushedImage
from support.registry import Registry
from workflow import run_workflow, write_list

from hangar.imagelist import parse_reference, read_image_list
from hangar.save import plan as planner
from hangar.settings import Settings, complete_config
from hangar.skopeo import ImageError

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
Usage = namedtuple("Usage", "total used free")


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer(name: str, size: int) -> dict[str, Any]:
    return {"mediaType": "l", "digest": digest_of(name.encode()), "size": size}


def manifest(arch: str, layers: list[dict[str, Any]]) -> bytes:
    config = {"mediaType": OCI_CONFIG, "digest": digest_of(f"config-{arch}".encode()), "size": 100}
    document = {"schemaVersion": 2, "mediaType": MANIFEST, "config": config, "layers": layers}
    return json.dumps(document).encode()


class FakeSkopeo:
    """Answers `inspect --raw` from a dict; records what was asked."""

    def __init__(self, answers: dict[str, bytes]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    def inspect_raw(self, reference: str, config: bool = False) -> bytes:
        self.asked.append(reference + (" --config" if config else ""))
        if reference + (" --config" if config else "") not in self.answers:
            raise ImageError(f"manifest unknown: {reference}")
        return self.answers[reference + (" --config" if config else "")]


def index_image(source: str, platforms: dict[str, bytes]) -> tuple[bytes, dict[str, bytes]]:
    entries, answers = [], {}
    for key, raw in platforms.items():
        os_name, arch = key.split("/")
        entries.append(
            {
                "mediaType": MANIFEST,
                "digest": digest_of(raw),
                "size": len(raw),
                "platform": {"os": os_name, "architecture": arch},
            }
        )
        answers[f"{source}@{digest_of(raw)}"] = raw
    top = json.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": entries}).encode()
    return top, answers


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    (tmp_path / "images.txt").write_text("reg.example/a:1\nreg.example/b:1\nreg.example/c:1\n")
    config = complete_config(
        {
            "file": str(tmp_path / "images.txt"),
            "cache": str(tmp_path / "cache"),
            "destination": str(tmp_path / "out.tar.gz"),
        }
    )
    return Settings.from_config(config, tmp_path)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeSkopeo:
    shared = layer("shared", 1000)
    a_amd = manifest("amd64", [shared, layer("a-amd64", 200)])
    a_arm = manifest("arm64", [layer("shared-arm", 1000), layer("a-arm64", 300)])
    a_s390x = manifest("s390x", [layer("a-s390x", 5000)])
    top_a, answers = index_image(
        "reg.example/a", {"linux/amd64": a_amd, "linux/arm64": a_arm, "linux/s390x": a_s390x}
    )
    answers["reg.example/a:1"] = top_a
    b_amd = manifest("amd64", [shared, layer("b-amd64", 400)])
    answers["reg.example/b:1"] = b_amd
    answers["reg.example/b:1 --config"] = json.dumps(
        {"os": "linux", "architecture": "amd64"}
    ).encode()
    skopeo = FakeSkopeo(answers)

    def plan_image(entry: Any, settings: Settings, _credentials: str = "") -> planner.ImagePlan:
        try:
            return planner.plan_of(skopeo, entry.ref, settings.arch, settings.os)  # type: ignore[arg-type]
        except ImageError as problem:
            return planner.ImagePlan(reference=str(entry.ref), problem=str(problem))

    monkeypatch.setattr(planner, "plan_image", plan_image)
    return skopeo


def test_resolve_reads_manifests_only_and_selects_platforms(fake: FakeSkopeo) -> None:
    ref = parse_reference("reg.example/a:1")
    image = planner.plan_of(fake, ref, ["amd64", "arm64", "ppc64le"], ["linux"])  # type: ignore[arg-type]
    assert [planner.platform_name(p) for p in image.available] == [
        "linux/amd64",
        "linux/arm64",
        "linux/s390x",
    ]
    assert [planner.platform_name(p) for p in image.selected] == ["linux/amd64", "linux/arm64"]
    assert image.missing == ["ppc64le"]
    assert image.digest == digest_of(fake.answers["reg.example/a:1"])
    assert len(fake.asked) == 3  # the index and the two selected platform manifests
    assert {b.kind for b in image.blobs} == {"manifest", "config", "layer"}
    folders = {b.folder for b in image.blobs}
    assert folders == {p.folder("reg.example/a", "1") for p in image.selected}


def test_bytes_are_counted_once_and_not_when_cached(settings: Settings, fake: FakeSkopeo) -> None:
    entries = read_image_list(settings.file)
    plan = planner.make_plan(settings, entries, jobs=2)
    a, b, c = plan.images
    assert a.state == "save" and b.state == "save" and c.state == "error"
    assert "manifest unknown" in c.note
    a_amd = len(fake.answers[f"reg.example/a@{a.selected[0].digest}"])
    a_arm = len(fake.answers[f"reg.example/a@{a.selected[1].digest}"])
    assert a.size == a_amd + 100 + 1000 + 200 + a_arm + 100 + 1000 + 300
    assert a.download == a.size
    b_manifest = len(fake.answers["reg.example/b:1"])
    # b shares a's amd64 config and base layer: only its manifest and own layer are new
    assert b.size == b_manifest + 100 + 1000 + 400
    assert b.download == b_manifest + 400
    assert plan.download_bytes == plan.unique_bytes == a.size + b_manifest + 400
    assert plan.cached_bytes == 0

    share = settings.cache / "share" / "sha256"
    share.mkdir(parents=True)
    (share / digest_of(b"shared")[7:]).write_bytes(b"x" * 1000)
    (share / digest_of(b"b-amd64")[7:]).write_bytes(b"x" * 399)  # truncated: downloaded again
    again = planner.make_plan(settings, entries, jobs=1)
    assert again.cached_bytes == 1000
    assert again.images[0].download == a.size - 1000
    assert again.images[1].download == b_manifest + 400


def test_saved_docker_manifest_counts_as_cached(settings: Settings, fake: FakeSkopeo) -> None:
    """skopeo stores Docker manifests and configs converted: an existing folder shows they were
    saved."""
    entries = read_image_list(settings.file)
    plan = planner.make_plan(settings, entries)
    b = plan.images[1]
    folder = b.selected[0].folder("reg.example/b", "1")
    (settings.cache / folder).mkdir(parents=True)
    (settings.cache / folder / "index.json").write_text("{}")
    again = planner.make_plan(settings, entries)
    assert again.images[1].download == b.download - len(fake.answers["reg.example/b:1"])


def test_table_csv_and_totals(
    settings: Settings, fake: FakeSkopeo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    lines: list[str] = []
    code = planner.main(
        ["-f", str(settings.file), "--cache", str(settings.cache), "-a", "amd64,arm64"],
        out=lines.append,
        environ={},
    )
    assert code == 0
    header = lines[0].split()
    assert header == [
        "IMAGE",
        "DIGEST",
        "AVAILABLE",
        "SELECTED",
        "MISSING",
        "SIZE",
        "DOWNLOAD",
        "NOTE",
    ]
    assert lines[1].startswith("reg.example/a:1  sha256:")
    assert "linux/amd64 linux/arm64 linux/s390x" in lines[1]
    assert "arm64" in lines[2]  # b lacks arm64
    assert "manifest unknown" in lines[3]
    text = "\n".join(lines)
    assert "images: 3 in the list, 2 to save (3 platforms), 1 cannot be read" in text
    assert "to download: " in text
    assert "disk (cache and archive): " in text
    assert "WARNING" not in text
    with open(tmp_path / "save-plan.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == list(planner.CSV_COLUMNS)
    assert [row["state"] for row in rows] == ["save", "save", "error"]
    assert rows[0]["platforms_selected"] == "linux/amd64 linux/arm64"
    assert rows[1]["platforms_missing"] == "arm64"
    assert int(rows[0]["download_bytes"]) + int(rows[1]["download_bytes"]) > 0


def test_warns_and_exits_3_when_it_will_not_fit(
    settings: Settings, fake: FakeSkopeo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(planner.shutil, "disk_usage", lambda path: Usage(10**6, 10**6 - 5000, 5000))
    lines: list[str] = []
    code = planner.main(
        [
            "-f",
            str(settings.file),
            "--cache",
            str(settings.cache),
            "--csv",
            str(tmp_path / "p.csv"),
        ],
        out=lines.append,
        environ={},
    )
    assert code == planner.EXIT_NO_SPACE
    warning = next(line for line in lines if line.startswith("WARNING"))
    where = settings.cache.parent
    assert warning.startswith(f"WARNING: the save will not fit: no space on {where}")
    assert "for the cache and the archive: needs " in warning
    assert ", 4.9 KiB free (short by " in warning
    assert (tmp_path / "p.csv").is_file()


def test_space_is_checked_per_file_system(settings: Settings) -> None:
    spaces = planner.measure_space(settings, 100, 50)
    assert [(s.roles, s.need) for s in spaces] == [(("cache", "archive"), 150)]
    other = Path("/dev/shm")
    if not other.is_dir() or other.stat().st_dev == settings.cache.parent.stat().st_dev:
        pytest.skip("no second file system to write to")
    elsewhere = dataclasses.replace(settings, destination=other / "never-written.tar.gz")
    spaces = planner.measure_space(elsewhere, 100, 50)
    assert [(s.path, s.roles, s.need) for s in spaces] == [
        (settings.cache.parent, ("cache",), 100),
        (other, ("archive",), 50),
    ]


def test_dir_archive_on_the_cache_file_system_needs_almost_nothing(
    settings: Settings, fake: FakeSkopeo
) -> None:
    as_dir = dataclasses.replace(settings, compress="dir", destination=settings.cache.parent / "d")
    plan = planner.make_plan(as_dir, read_image_list(settings.file))
    assert plan.archive_bytes == planner.DIR_ROOT_BYTES + 3 * planner.DIR_FOLDER_BYTES
    gz = planner.make_plan(settings, read_image_list(settings.file))
    assert gz.archive_bytes > gz.unique_bytes


def test_bad_config_and_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert planner.main(["-f", str(tmp_path / "none.txt")], environ={}) == 1
    assert "cannot read the image list" in capsys.readouterr().err
    (tmp_path / "c.yaml").write_text("file: x.txt\narch: 3\n")
    assert planner.main(["--config", str(tmp_path / "c.yaml")], environ={}) == 1
    assert "arch: 3 is not of type" in capsys.readouterr().err
    assert planner.main([], environ={}) == 1
    assert "give the image list with -f/--file" in capsys.readouterr().err


def test_source_registry_from_the_environment(tmp_path: Path) -> None:
    args = planner.parse_args(["-f", "list.txt"])
    assert planner.config_from_args(args, {"SOURCE_REGISTRY": "r.local"})["source"] == "r.local"
    args = planner.parse_args(["-f", "list.txt", "-s", ""])
    assert planner.config_from_args(args, {"SOURCE_REGISTRY": "r.local"})["source"] == ""


# --- against a real registry ---------------------------------------------------------------------


@pytest.mark.slow
def test_plan_matches_what_the_save_stores(
    workdir: Path, registry: Registry, sample_images: dict[str, PushedImage]
) -> None:
    names = ["library/nginx:1.25", "rancher/shared-a:1", "rancher/busybox:1.36"]
    names += ["rancher/s390x-only:1.0", "rancher/windows-app:3.6"]
    write_list(workdir, [sample_images[n].ref for n in names] + [f"{registry.host}/no/such:1"])
    args = ["-f", str(workdir / "images.txt"), "--tls-verify=false"]
    args += ["--cache", str(workdir / "saved-image-cache"), "--csv", str(workdir / "before.csv")]
    lines: list[str] = []
    assert planner.main(args, out=lines.append, environ={}) == 0
    before = {row["image"]: row for row in read_csv(workdir / "before.csv")}
    nginx = before[sample_images["library/nginx:1.25"].ref]
    assert nginx["digest"] == sample_images["library/nginx:1.25"].digest
    assert nginx["platforms_available"] == "linux/amd64 linux/arm64/v8 linux/arm/v7"
    assert nginx["platforms_selected"] == "linux/amd64 linux/arm64/v8"
    windows = before[sample_images["rancher/windows-app:3.6"].ref]
    assert windows["platforms_selected"] == "linux/amd64 windows/amd64:10.0.17763.2114"
    assert windows["platforms_missing"] == "arm64"
    assert before[sample_images["rancher/s390x-only:1.0"].ref]["state"] == "no-match"
    assert before[f"{registry.host}/no/such:1"]["state"] == "error"
    shared = before[sample_images["rancher/shared-a:1"].ref]
    assert int(shared["download_bytes"]) < int(shared["size_bytes"])  # nginx's base layers

    run_workflow(workdir, {"file": "images.txt"}, "--cores", "2")
    status_dir = workdir / "saved-image-cache" / ".hangar" / "status"
    for name in ("library/nginx:1.25", "rancher/shared-a:1", "rancher/windows-app:3.6"):
        ref = parse_reference(sample_images[name].ref)
        status = json.loads((status_dir / f"{ref.image_id}.json").read_text())
        # OCI images are stored as they are served: the plan's size is the saved size
        assert int(before[str(ref)]["size_bytes"]) == sum(p["Size"] for p in status["saved"])

    args[-1] = str(workdir / "after.csv")
    lines = []
    assert planner.main(args, out=lines.append, environ={}) == 0
    after = read_csv(workdir / "after.csv")
    assert [int(row["download_bytes"]) for row in after] == [0] * len(after)
    assert "to download: 0 B" in "\n".join(lines)


@pytest.mark.slow
def test_workflow_target_writes_the_plan(
    workdir: Path, sample_images: dict[str, PushedImage]
) -> None:
    write_list(workdir, [sample_images["library/alpine:3.18"].ref])
    done = run_workflow(workdir, {"file": "images.txt"}, "save-plan.csv")
    rows = read_csv(workdir / "save-plan.csv")
    assert [row["platforms_selected"] for row in rows] == ["linux/amd64"]
    assert "to download:" in (workdir / "logs" / "plan.log").read_text()
    assert "to download:" in done.stderr
    assert not (workdir / "saved-image-cache" / "share").exists()  # nothing was downloaded
