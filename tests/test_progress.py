"""The progress line's figures: bytes downloaded while skopeo copies, the total from what the
image jobs expect (estimated, with ≈, while some are not known), the rate and the ETA."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from hangar.cli.progress import PlainProgress, Rate, eta, progress_text, size_of
from hangar.layout import blob_path, expected_dir, status_dir, tmp_dir
from hangar.save.expected import Expected, expected_of, write_expected
from hangar.save.watch import BlobCounter, Bytes, Known, StatusWatcher, Tally, estimate_total
from hangar.status import ImageStatus, SavedPlatform, write_atomic

GIB, MIB = 1 << 30, 1 << 20


def digest(n: int) -> str:
    return f"sha256:{n:064x}"


def test_the_line_of_the_readme() -> None:
    copied = Bytes(int(14.2 * GIB), int(38.9 * GIB))
    rate = 52 * MIB
    left = eta(copied, rate)
    assert left is not None and 486 <= left <= 487  # 24.7 GiB at 52 MiB/s
    assert progress_text(Tally(total=480, saved=120), copied, rate, 100.0) == (
        "images 120/480 · 14.2 of 38.9 GiB · 52.0 MiB/s · ETA 8:06"
    )


def test_an_estimated_total_is_marked() -> None:
    copied = Bytes(512 * MIB, 4 * GIB, approximate=True)
    assert size_of(copied) == "512.0 MiB of ≈4.0 GiB"
    text = progress_text(Tally(total=9, saved=1), copied, 10 * MIB, 3.0)
    assert text.endswith("· 10.0 MiB/s · ETA ≈5:58"), text
    # No total known yet: what is done, the rate, and the time so far instead of an ETA.
    assert progress_text(Tally(total=9), Bytes(3 * MIB), 1 * MIB, 65.0) == (
        "images 0/9 · 3.0 MiB · 1.0 MiB/s · 1:05"
    )
    assert progress_text(Tally(total=9), Bytes(0, 5 * MIB), 0.0, 2.0) == (
        "images 0/9 · 0 B of 5.0 MiB · 0:02"
    )


def test_rate_over_the_last_stretch() -> None:
    rate = Rate()
    for second in range(16):  # Snakemake starting: no copy yet
        assert rate.add(float(second) / 10 - 1.5, 0) == 0.0
    assert rate.add(0.2, 10 * MIB) == 0.0, "too short a stretch to tell"
    assert rate.add(2.0, 20 * MIB) == 10 * MIB
    for second in range(3, 40):
        rate.add(float(second), 20 * MIB)  # stalled
    assert rate.add(40.0, 20 * MIB) == 0.0, "an old burst no longer counts"
    assert rate.add(41.0, 21 * MIB) == MIB / 20, "over the last 20 s"


def test_total_is_exact_once_every_image_is_known() -> None:
    assert estimate_total(Known(new_bytes=900, known_platforms=3, started_images=2)) == (
        900,
        False,
    )


def test_total_estimates_unknown_platforms_and_images_not_started() -> None:
    # 2 known platforms of 100 new bytes each, 1 platform of an index under way, and 2 images
    # not started where each started one has had 1.5 platforms: 200 + (1 + 3) * 100.
    known = Known(
        new_bytes=200,
        known_platforms=2,
        unknown_platforms=1,
        started_images=2,
        started_platforms=3,
        pending_images=2,
    )
    assert estimate_total(known) == (600, True)
    assert estimate_total(Known(unknown_platforms=2, started_images=1, started_platforms=2)) == (
        None,
        True,
    ), "nothing to extrapolate from"


def write_blob(cache: Path, number: int, size: int) -> str:
    path = blob_path(cache, digest(number))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    return digest(number)


def test_bytes_are_counted_while_skopeo_writes_them(tmp_path: Path) -> None:
    cache = tmp_path
    write_blob(cache, 1, 1000)  # in the cache before the run: not downloaded by it
    counter = BlobCounter(cache)
    assert counter.done() == 0
    staging = tmp_dir(cache) / "folder.abc123" / "layout"
    staging.mkdir(parents=True)
    growing = staging / "oci-put-blob123456"
    growing.write_bytes(b"y" * 300)
    (staging / "index.json").write_text("{}")  # not a blob being downloaded
    assert counter.done() == 300
    growing.write_bytes(b"y" * 700)
    assert counter.done() == 700
    growing.rename(blob_path(cache, digest(2)))
    assert counter.done() == 700, "renamed into place: counted once"
    write_blob(cache, 3, 50)
    assert counter.done() == 750
    counter.expect([(digest(1), 1000), (digest(2), 700), (digest(4), 9), (digest(4), 9)])
    assert counter.new_bytes == 709


def saved_status(reference: str, folder: str, manifest: str) -> ImageStatus:
    platform = SavedPlatform(digest(99), "amd64", "linux", folder, Size=1, Layout=manifest)
    return ImageStatus(reference=reference, source="r/x", tag="1", state="ok", saved=[platform])


def write_layout(cache: Path, folder: str, manifest_number: int, layers: list[str]) -> str:
    manifest = {
        "schemaVersion": 2,
        "config": {"digest": layers[0], "size": 10},
        "layers": [{"digest": d, "size": 1000} for d in layers[1:]],
    }
    raw = json.dumps(manifest).encode()
    path = blob_path(cache, digest(manifest_number))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw)
    (cache / folder).mkdir()
    descriptor = {"digest": digest(manifest_number), "size": len(raw)}
    (cache / folder / "index.json").write_text(json.dumps({"manifests": [descriptor]}))
    return digest(manifest_number)


def test_watcher_total_from_expected_files_and_saved_layouts(tmp_path: Path) -> None:
    cache = tmp_path
    shared = write_blob(cache, 1, 1000)  # a base layer an earlier run saved
    ids = ["single", "index", "later"]
    watcher = StatusWatcher(cache, ids)
    watcher.poll()
    assert watcher.bytes() == Bytes(0, None, True), "nothing known yet"

    # A single-manifest image: its manifest lists every blob, the shared one costs nothing.
    write_expected(cache, "single", Expected(1, [(digest(10), 400), (shared, 1000)], exact=True))
    watcher.poll()
    assert watcher.bytes() == Bytes(0, 400 * 3, True), "two more images like it, roughly"

    # An index: the sizes of the platform it copies are unknown until its copy ends.
    write_expected(cache, "index", Expected(1))
    watcher.poll()
    # 400 known; the index's platform and the image not started, at 400 each.
    assert watcher.bytes() == Bytes(0, 400 * 3, True)

    write_blob(cache, 10, 400)
    manifest = write_layout(cache, "f1", 20, [digest(21), shared, digest(22)])
    for number in (21, 22):
        write_blob(cache, number, 10 if number == 21 else 1000)
    write_atomic(status_dir(cache) / "index.json", saved_status("r/i:1", "f1", manifest).to_json())
    watcher.poll()
    copied = watcher.bytes()
    new_of_index = 10 + 1000 + len(blob_path(cache, manifest).read_bytes())
    assert copied.done == 400 + new_of_index
    # Both platforms known (400 + the index's new bytes), "later" at their mean.
    per_platform = (400 + new_of_index) / 2
    assert copied == Bytes(copied.done, round(400 + new_of_index + per_platform), True)

    write_expected(cache, "later", Expected(1, [(digest(30), 5000)], exact=True))
    watcher.poll()
    assert watcher.bytes() == Bytes(copied.done, 400 + new_of_index + 5000, False), "exact"


def test_an_earlier_runs_expected_file_is_not_this_runs(tmp_path: Path) -> None:
    write_expected(tmp_path, "a", Expected(1, [(digest(1), 10)], exact=True))
    watcher = StatusWatcher(tmp_path, ["a"])
    watcher.poll()
    assert watcher.known().pending_images == 1
    write_expected(tmp_path, "a", Expected(1, [(digest(1), 10)], exact=True))
    watcher.poll()
    assert watcher.bytes() == Bytes(0, 10, False)
    assert sorted(p.name for p in expected_dir(tmp_path).iterdir()) == ["a.json"]


def test_expected_of_a_single_manifest_and_of_an_index() -> None:
    from hangar.platforms import Platform
    from hangar.resolve import Resolved

    single = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"digest": digest(1), "size": 7},
            "layers": [{"digest": digest(2), "size": 900}],
        }
    ).encode()
    platform = Platform(digest(5), "linux", "amd64")
    expected = expected_of(Resolved(digest(5), single, [platform]), [platform])
    assert expected == Expected(
        1, [(digest(5), len(single)), (digest(1), 7), (digest(2), 900)], True
    )
    index = json.dumps({"schemaVersion": 2, "manifests": [{"digest": digest(5), "size": 1}]})
    assert expected_of(Resolved(digest(6), index.encode(), [platform]), [platform]) == Expected(1)
    assert expected_of(Resolved(digest(5), single, [platform]), []) == Expected(0)


def test_plain_progress_lines_come_now_and_then(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HANGAR_PROGRESS_SECONDS", "0")
    stream = io.StringIO()
    display = PlainProgress(stream, "out.tar.gz")
    display.update(Tally(total=3, saved=1), Bytes(MIB, 3 * MIB))
    display.update(Tally(total=3, saved=2), Bytes(2 * MIB, 3 * MIB))
    display.update(Tally(total=3, saved=3), Bytes(3 * MIB, 3 * MIB))
    display.update(Tally(total=3, saved=3), Bytes(3 * MIB, 3 * MIB), 100)
    lines = stream.getvalue().splitlines()
    assert [line.split(" · ")[:2] for line in lines[:2]] == [
        ["images 1/3", "1.0 of 3.0 MiB"],
        ["images 2/3", "2.0 of 3.0 MiB"],
    ]
    assert lines[2:] == ["3/3 images done: archiving out.tar.gz"]
    monkeypatch.setenv("HANGAR_PROGRESS_SECONDS", "3600")
    quiet = PlainProgress(io.StringIO(), "out.tar.gz")
    quiet.update(Tally(total=3, saved=1), Bytes(MIB))
    assert quiet.stream.getvalue() == "" and os.environ["HANGAR_PROGRESS_SECONDS"] == "3600"


def test_a_directory_is_read_again_only_when_it_changed(tmp_path: Path) -> None:
    from hangar.save.watch import Listing

    (tmp_path / "a").write_text("")
    listing = Listing(tmp_path)
    assert listing.changed() and [e.name for e in listing.entries()] == ["a"]
    old = 1_000_000_000
    os.utime(tmp_path, (old, old))
    assert listing.changed(), "its time changed"
    assert not listing.changed(), "unchanged since, and not just now: not read again"
    (tmp_path / "b").write_text("")
    assert listing.changed() and sorted(e.name for e in listing.entries()) == ["a", "b"]
    assert listing.changed(), "changed just now: read again, a change may share its timestamp"


def test_a_damaged_layout_is_not_followed_out_of_the_blob_dir(tmp_path: Path) -> None:
    from hangar.save.watch import layout_blobs

    (tmp_path / "outside.json").write_text(json.dumps({"layers": []}))
    folder = tmp_path / "f"
    folder.mkdir()
    for digest_text, size in (("sha256:../../outside.json", 10), (digest(1), 1 << 30)):
        descriptor = {"digest": digest_text, "size": size}
        (folder / "index.json").write_text(json.dumps({"manifests": [descriptor]}))
        assert layout_blobs(tmp_path, "f") is None
    write_layout(tmp_path, "g", 2, [digest(3), digest(4)])
    found = layout_blobs(tmp_path, "g")
    assert found is not None and [d for d, _ in found] == [digest(2), digest(3), digest(4)]
