"""saved-images-list.json, the failed list, statuses and settings, without a registry."""

import json
import os
from pathlib import Path

import pytest

from hangar.imagelist import parse_image_list
from hangar.save.savedlist import gather, list_entry, write_failed_list, write_saved_list
from hangar.settings import ConfigError, Settings
from hangar.skopeo import (
    InfrastructureError,
    Skopeo,
    classify,
    credentials_file,
    last_error_line,
)
from hangar.status import ImageStatus, SavedArtifact, SavedPlatform

MANIFEST = "application/vnd.oci.image.manifest.v1+json"

AMD64 = SavedPlatform("sha256:1", "amd64", "linux", "f1")
ARM64 = SavedPlatform("sha256:2", "arm64", "linux", "f2", Variant="v8")
WIN = SavedPlatform("sha256:3", "amd64", "windows", "f3", OsVersion="10.0.1")


def status(state: str, *saved: SavedPlatform) -> ImageStatus:
    return ImageStatus("r/x:1", "r/x", "1", state, saved=list(saved))  # type: ignore[arg-type]


def test_list_entry_keys_order_and_omitted_empties() -> None:
    entry = list_entry(status("ok", AMD64, ARM64, WIN))
    assert list(entry) == ["Source", "Tag", "ArchList", "OsList", "Images"]
    assert entry["ArchList"] == ["amd64", "arm64"]
    assert entry["OsList"] == ["linux", "windows"]
    assert entry["Images"][0] == {
        "Digest": "sha256:1",
        "Arch": "amd64",
        "OS": "linux",
        "Folder": "f1",
    }
    assert list(entry["Images"][1]) == ["Digest", "Arch", "OS", "Variant", "Folder"]
    assert list(entry["Images"][2]) == ["Digest", "Arch", "OS", "OsVersion", "Folder"]


def test_saved_list_keeps_its_time_when_only_the_time_would_change(tmp_path: Path) -> None:
    path = tmp_path / "saved-images-list.json"
    entries = [list_entry(status("ok", AMD64))]
    assert write_saved_list(path, entries)
    document = json.loads(path.read_text())
    assert document["Version"] == "v1.1.0"
    assert path.read_text().startswith('{\n  "List": [\n')
    before = path.read_bytes()
    os.utime(path, (1, 1))
    assert not write_saved_list(path, entries)
    assert path.read_bytes() == before
    assert path.stat().st_mtime > 1
    assert write_saved_list(path, [*entries, list_entry(status("ok", ARM64))])


def test_failed_list_sorted_original_lines_and_removed_when_empty(tmp_path: Path) -> None:
    path = tmp_path / "save-failed.txt"
    write_failed_list(path, ["b:1", "a:1", "b:1"])
    assert path.read_text() == "a:1\nb:1\n"
    write_failed_list(path, [])
    assert not path.exists()


def test_gather_sorts_images_into_saved_failed_and_skipped() -> None:
    entries = parse_image_list("a:1\nb:1\ndocker.io/library/b:1\nc:1\n", "l")
    by_id = {
        entries[0].ref.image_id: status("ok", AMD64),
        entries[1].ref.image_id: status("failed"),
        entries[2].ref.image_id: status("skipped"),
    }
    gathered = gather(entries, by_id)
    assert len(gathered.saved) == 1 and gathered.artifacts == []
    assert gathered.failed_lines == ["b:1", "docker.io/library/b:1"]
    summary = gathered.summary
    assert (summary.saved_images, summary.failed, summary.skipped) == (1, 1, 1)


def test_artifacts_go_under_their_own_key_after_list_never_in_list(tmp_path: Path) -> None:
    entries = parse_image_list("a:1\nrancher/charts/app:1.0\n", "l")
    chart = ImageStatus(
        "docker.io/rancher/charts/app:1.0",
        "docker.io/rancher/charts/app",
        "1.0",
        "ok",
        artifact=SavedArtifact(
            "sha256:" + "c" * 64, MANIFEST, "application/vnd.cncf.helm.config.v1+json", "f9", 10
        ),
    )
    by_id = {entries[0].ref.image_id: status("ok", AMD64), entries[1].ref.image_id: chart}
    gathered = gather(entries, by_id)
    assert gathered.summary.saved_artifacts == 1 and gathered.summary.saved_images == 1
    path = tmp_path / "saved-images-list.json"
    write_saved_list(path, gathered.saved, gathered.artifacts)
    document = json.loads(path.read_text())
    assert list(document) == ["List", "Artifacts", "Version", "SavedTime"]
    assert [entry["Source"] for entry in document["List"]] == ["r/x"]
    assert document["Artifacts"] == [
        {
            "Source": "docker.io/rancher/charts/app",
            "Tag": "1.0",
            "Digest": "sha256:" + "c" * 64,
            "MediaType": MANIFEST,
            "ArtifactType": "application/vnd.cncf.helm.config.v1+json",
            "Folder": "f9",
        }
    ]
    assert ImageStatus.from_json(chart.to_json()) == chart
    assert not write_saved_list(path, gathered.saved, gathered.artifacts)
    assert write_saved_list(path, gathered.saved, [])


def test_status_round_trip() -> None:
    original = status("ok", AMD64, WIN)
    assert ImageStatus.from_json(original.to_json()) == original


@pytest.mark.parametrize(
    ("stderr", "kind"),
    [
        ("reading manifest 1 in r/x: manifest unknown: manifest unknown", "permanent"),
        ("unable to retrieve auth token: invalid username/password: unauthorized", "permanent"),
        ("x509: certificate signed by unknown authority", "permanent"),
        ("dial tcp 127.0.0.1:40401: connect: connection refused", "transient"),
        ("received unexpected HTTP status: 503 Service Unavailable", "transient"),
        ("toomanyrequests: rate limit", "transient"),
        ("writing blob: write /c/share/x: no space left on device", "infrastructure"),
        ("open /c/.hangar/tmp/x/index.json: permission denied", "infrastructure"),
    ],
)
def test_skopeo_errors_are_classified(stderr: str, kind: str) -> None:
    assert classify(stderr) == kind


def test_last_error_line_keeps_skopeo_message() -> None:
    stderr = (
        'time="t" level=fatal msg="Error parsing image name \\"docker://x\\": manifest unknown"\n'
    )
    assert last_error_line(stderr) == 'Error parsing image name "docker://x": manifest unknown'


def test_credentials_go_to_a_private_auth_file_only_while_used() -> None:
    env = {"SOURCE_USERNAME": "user", "SOURCE_PASSWORD": "s3cret"}
    with credentials_file("reg:5000", env) as path:
        assert oct(Path(path).stat().st_mode & 0o777) == "0o600"
        auths = json.loads(Path(path).read_text())["auths"]
        assert list(auths) == ["reg:5000"]
    assert not Path(path).exists()
    with credentials_file("reg:5000", {"REGISTRY_AUTH_FILE": "/x/auth.json"}) as path:
        assert path == "/x/auth.json"


BASE_CONFIG = {
    "file": "l.txt",
    "source": "",
    "arch": ["amd64", "arm64"],
    "os": ["linux"],
    "no_arch_os_fail": False,
    "failed": "save-failed.txt",
    "tls_verify": True,
    "cert_dir": "",
    "retry_times": 3,
    "retry_delay": 1,
    "cache": "saved-image-cache",
    "destination": "",
    "compress": "gzip",
    "part": False,
    "part_size": "2G",
    "verify": "size",
}


def test_settings_defaults_and_suffix_rules(tmp_path: Path) -> None:
    settings = Settings.from_config(BASE_CONFIG, tmp_path)
    assert settings.destination == Path("saved-images.tar.gz")
    assert settings.part_size is None
    zstd = Settings.from_config(
        {**BASE_CONFIG, "compress": "zstd", "destination": "load", "part": True, "part_size": "1M"},
        tmp_path,
    )
    assert (zstd.destination, zstd.part_size) == (Path("load.tar.zstd"), 1 << 20)
    comma = Settings.from_config({**BASE_CONFIG, "arch": "amd64, arm64 ,"}, tmp_path)
    assert comma.arch == ("amd64", "arm64")


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"part": True, "part_size": "2.5G"}, "part_size"),
        ({"part": True, "part_size": "-1"}, "part_size"),
        ({"destination": "saved-image-cache", "compress": "dir"}, "destination"),
        ({"destination": "saved-image-cache/x.tar.gz"}, "destination"),
        ({"destination": "/etc/hostname/x.tar.gz"}, "destination"),
        ({"cache": "a:b"}, "cache"),
        ({"arch": []}, "arch"),
    ],
)
def test_settings_errors_name_the_key(tmp_path: Path, override: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=f"^{key}: "):
        Settings.from_config({**BASE_CONFIG, **override}, tmp_path)


def test_skopeo_killed_by_a_signal_stops_the_job_without_retries(tmp_path: Path) -> None:
    fake = tmp_path / "skopeo"
    fake.write_text("#!/bin/sh\nkill -TERM $$\n")
    fake.chmod(0o755)
    skopeo = Skopeo(executable=str(fake), retry_times=3, retry_delay=0, log=lambda _: None)
    with pytest.raises(InfrastructureError, match="stopped by signal 15"):
        skopeo.inspect_raw("r/x:1")
    assert skopeo.retries_used == 0


def test_a_registry_refusal_is_never_taken_for_a_local_disk_error() -> None:
    gcr = 'reading manifest latest in gcr.io/x/y: denied: Permission denied for "latest"'
    assert classify(gcr) == "permanent"


def test_env_credentials_go_to_one_registry_only() -> None:
    from hangar.skopeo import credentials_registry

    assert credentials_registry("mirror.local", ["a.io", "b.io"]) == "mirror.local"
    assert credentials_registry("", ["reg:5000", "reg:5000"]) == "reg:5000"
    assert credentials_registry("", ["reg:5000", "quay.io"]) == "docker.io"  # as hangar
    env = {"SOURCE_USERNAME": "user", "SOURCE_PASSWORD": "s3cret"}
    with credentials_file("quay.io", env, for_registry="reg:5000") as path:
        assert path == ""  # skopeo's own auth files, not this password
    with credentials_file("reg:5000", env, for_registry="reg:5000") as path:
        assert "reg:5000" in json.loads(Path(path).read_text())["auths"]
