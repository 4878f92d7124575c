"""Archive tests: outputs are read back with the real tools (tar, gzip, zstd, sha256sum)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from cachefactory import SAVED_TIME, SyntheticCache, make_cache

from hangar.save import archive
from hangar.save.archive import ArchiveError, ArchiveResult, build_archive

TOP = "saved-image-cache"
SAVED_EPOCH = 1706503046  # 2024-01-29T12:37:26+08:00
SMALL_PART = 7000  # yields more than 10 parts for the default synthetic cache


@pytest.fixture
def cache(tmp_path: Path) -> SyntheticCache:
    return make_cache(tmp_path / "some cache name")


def run(command: str, cwd: Path) -> str:
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", command], cwd=cwd, capture_output=True, text=True
    )
    assert done.returncode == 0, f"{command}: {done.stderr}"
    return done.stdout


def reassemble_command(dest: Path, parts: int) -> str:
    """The reassembly command documented for users: numeric order, valid past 10 parts."""
    return f'for i in $(seq 0 {parts - 1}); do cat "{dest.name}.part$i"; done > "{dest.name}"'


def extract(result: ArchiveResult, compress: str, into: Path) -> Path:
    into.mkdir()
    files = " ".join(f'"{path}"' for path in result.files)
    if compress == "gzip" and len(result.files) == 1:
        run(f"tar -xzf {files}", into)
    elif compress == "gzip":
        run(f"cat {files} | tar -xzf -", into)
    else:
        run(f"cat {files} | zstd -d -c | tar -xf -", into)
    return into / TOP


def tree(root: Path) -> tuple[list[str], list[str]]:
    files: list[str] = []
    dirs: list[str] = []
    for path in root.rglob("*"):
        (dirs if path.is_dir() else files).append(path.relative_to(root).as_posix())
    return sorted(files), sorted(dirs)


def assert_same_as_selection(root: Path, cache: SyntheticCache) -> None:
    files, dirs = tree(root)
    assert files == cache.selected_files()
    assert dirs == cache.selected_dirs()
    for name in files:
        assert (root / name).read_bytes() == (cache.root / name).read_bytes(), name


def decompressed_tar(result: ArchiveResult, compress: str) -> bytes:
    tool = "gzip -dc" if compress == "gzip" else "zstd -dc"
    files = " ".join(f'"{path}"' for path in result.files)
    out = subprocess.run(f"cat {files} | {tool}", shell=True, capture_output=True, check=True)
    return out.stdout


@pytest.mark.parametrize("part_size", [None, SMALL_PART])
@pytest.mark.parametrize("compress", ["gzip", "zstd"])
def test_tar_round_trip(
    cache: SyntheticCache, tmp_path: Path, compress: archive.Compress, part_size: int | None
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    dest = out / ("saved-images.tar.gz" if compress == "gzip" else "saved-images.tar.zstd")
    result = build_archive(cache.root, dest, compress, part_size, threads=2)
    assert result.rebuilt
    assert result.checksums == Path(f"{dest}.sha256")

    if part_size is None:
        assert result.files == (dest,)
    else:
        assert len(result.files) > 10
        assert result.files == tuple(Path(f"{dest}.part{i}") for i in range(len(result.files)))
        assert all(path.stat().st_size == part_size for path in result.files[:-1])
        assert 0 < result.files[-1].stat().st_size <= part_size
        assert not dest.exists()
    assert result.bytes == sum(path.stat().st_size for path in result.files)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [p.name for p in result.files] + [result.checksums.name]
    )

    assert_same_as_selection(extract(result, compress, tmp_path / "x"), cache)
    lines = result.checksums.read_text().splitlines()
    run(f'sha256sum -c --ignore-missing "{result.checksums.name}"', out)
    if part_size is not None:
        assert len(lines) == len(result.files) + 1
        assert lines[-1].endswith(f"  {dest.name}")
        run(reassemble_command(dest, len(result.files)), out)
        run(f'sha256sum -c --strict "{result.checksums.name}"', out)
        run(f'cat $(ls "{dest.name}".part* | sort -V) | cmp - "{dest.name}"', out)
    else:
        assert len(lines) == 1
    run(f'{"gzip -t" if compress == "gzip" else "zstd -t -q"} "{dest.name}"', out)


@pytest.mark.parametrize("compress", ["gzip", "zstd"])
def test_tar_entries_are_reproducible_ustar(
    cache: SyntheticCache, tmp_path: Path, compress: archive.Compress
) -> None:
    dest = tmp_path / "a.tar"
    raw = decompressed_tar(build_archive(cache.root, dest, compress, None, 2), compress)
    assert raw[257:263] == b"ustar\x00"
    assert len(raw) % 10240 == 0 and raw[-1024:] == bytes(1024)
    tar_path = tmp_path / "plain.tar"
    tar_path.write_bytes(raw)
    with tarfile.open(tar_path) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names[0] == TOP
    assert all(name == TOP or name.startswith(TOP + "/") for name in names)
    assert names == sorted(names, key=lambda name: name.split("/"))
    for member in members:
        assert (member.uid, member.gid, member.uname, member.gname) == (0, 0, "", "")
        assert member.mtime == SAVED_EPOCH
        assert member.mode == (0o755 if member.isdir() else 0o644)
        assert member.isdir() or member.isfile()
    assert not any(".hangar" in name for name in names)
    for stale in cache.stale:
        assert f"{TOP}/{stale}" not in names


def test_build_is_reproducible(cache: SyntheticCache, tmp_path: Path) -> None:
    dest = tmp_path / "r.tar.gz"
    first = build_archive(cache.root, dest, "gzip", 50_000, threads=1)
    before = [path.read_bytes() for path in first.files]
    for path in (*first.files, first.checksums):
        path.unlink()
    second = build_archive(cache.root, dest, "gzip", 50_000, threads=2)
    assert second.rebuilt
    assert [path.read_bytes() for path in second.files] == before
    moved = shutil.copytree(cache.root, tmp_path / "elsewhere")
    third = build_archive(moved, tmp_path / "r2.tar.gz", "gzip", 50_000, threads=2)
    assert [path.read_bytes() for path in third.files] == before


def test_zstd_is_reproducible_across_thread_counts(cache: SyntheticCache, tmp_path: Path) -> None:
    one = build_archive(cache.root, tmp_path / "1.tar.zstd", "zstd", None, threads=1)
    two = build_archive(cache.root, tmp_path / "2.tar.zstd", "zstd", None, threads=2)
    assert one.files[0].read_bytes() == two.files[0].read_bytes()


def test_stale_parts_are_removed(cache: SyntheticCache, tmp_path: Path) -> None:
    dest = tmp_path / "s.tar.gz"
    many = build_archive(cache.root, dest, "gzip", SMALL_PART, 2)
    fewer = build_archive(cache.root, dest, "gzip", 200_000, 2)
    assert len(many.files) > 10 and 1 < len(fewer.files) < len(many.files)
    assert sorted(p.name for p in tmp_path.glob("s.tar.gz*")) == sorted(
        [p.name for p in fewer.files] + ["s.tar.gz.sha256"]
    )
    single = build_archive(cache.root, dest, "gzip", None, 2)
    assert single.files == (dest,)
    assert sorted(p.name for p in tmp_path.glob("s.tar.gz*")) == ["s.tar.gz", "s.tar.gz.sha256"]
    again = build_archive(cache.root, dest, "gzip", SMALL_PART, 2)
    assert not dest.exists()
    assert len(list(tmp_path.glob("s.tar.gz.part*"))) == len(again.files)
    run("sha256sum -c --ignore-missing s.tar.gz.sha256", tmp_path)


def test_up_to_date_archive_is_not_rewritten(cache: SyntheticCache, tmp_path: Path) -> None:
    dest = tmp_path / "u.tar.zstd"
    first = build_archive(cache.root, dest, "zstd", 100_000, 2)
    os.utime(first.checksums, (1_000_000, 1_000_000))
    stats = [(p.stat().st_ino, p.stat().st_mtime_ns) for p in first.files]
    second = build_archive(cache.root, dest, "zstd", 100_000, 2)
    assert not second.rebuilt
    assert second.files == first.files and second.bytes == first.bytes
    assert [(p.stat().st_ino, p.stat().st_mtime_ns) for p in second.files] == stats
    assert first.checksums.stat().st_mtime > 1_000_000

    assert build_archive(cache.root, dest, "zstd", 120_000, 2).rebuilt  # settings changed
    assert not build_archive(cache.root, dest, "zstd", 120_000, 2).rebuilt
    listing = cache.root / "saved-images-list.json"
    listing.write_text(listing.read_text().replace(SAVED_TIME, "2024-02-01T00:00:00Z"))
    assert build_archive(cache.root, dest, "zstd", 120_000, 2).rebuilt  # content changed
    Path(f"{dest}.part1").unlink()
    assert build_archive(cache.root, dest, "zstd", 120_000, 2).rebuilt  # output damaged
    run("sha256sum -c --ignore-missing u.tar.zstd.sha256", tmp_path)


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_missing_blob_fails_before_writing(cache: SyntheticCache, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    folder = cache.folders[-1]
    index = json.loads((cache.root / folder / "index.json").read_text())
    manifest = json.loads(
        (cache.root / "share/sha256" / index["manifests"][0]["digest"][7:]).read_text()
    )
    layer = manifest["layers"][-1]["digest"]
    (cache.root / "share/sha256" / layer[7:]).unlink()
    with pytest.raises(ArchiveError, match=f"{folder}.*{layer}"):
        build_archive(cache.root, out / "m.tar.gz", "gzip", None, 2)
    assert _leftovers(out) == []


@pytest.mark.parametrize("compress", ["gzip", "zstd"])
def test_failure_mid_stream_leaves_nothing_complete(
    cache: SyntheticCache,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    compress: archive.Compress,
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    original = archive._PartWriter.write

    def failing_write(self: archive._PartWriter, data: bytes) -> int:
        if self.total > 100_000:
            raise OSError(28, "No space left on device")
        return original(self, data)

    monkeypatch.setattr(archive._PartWriter, "write", failing_write)
    with pytest.raises(OSError, match="No space left"):
        build_archive(cache.root, out / "f.tar", compress, 30_000, 2)
    assert _leftovers(out) == []


def test_blob_vanishing_mid_stream_leaves_nothing(
    cache: SyntheticCache, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    original: Callable[..., None] = archive._copy_file
    copied = []

    def copy_then_remove(entry: archive.Entry, *args: object) -> None:
        copied.append(entry)
        if len(copied) == 5:
            assert entry.source is not None
            entry.source.unlink()
        original(entry, *args)

    monkeypatch.setattr(archive, "_copy_file", copy_then_remove)
    with pytest.raises(FileNotFoundError):
        build_archive(cache.root, out / "v.tar.gz", "gzip", None, 2)
    assert _leftovers(out) == []


def test_dir_mode_hard_links_and_keeps_cache(cache: SyntheticCache, tmp_path: Path) -> None:
    dest = tmp_path / "saved-images"
    before = tree(cache.root)
    result = build_archive(cache.root, dest, "dir", None, 2)
    state_files = [".hangar/archive-state.json", ".hangar/archive-state.json.lock"]
    assert result.files == (dest,) and result.rebuilt
    assert_same_as_selection(dest, cache)
    assert not (dest / TOP).exists() and not (dest / ".hangar").exists()
    for digest in cache.blobs:
        name = f"share/sha256/{digest}"
        assert (dest / name).stat().st_ino == (cache.root / name).stat().st_ino
    assert tree(cache.root) == (sorted(before[0] + state_files), before[1])
    run(f"sha256sum -c --strict ../{dest.name}.sha256", dest)
    lines = result.checksums.read_text().splitlines()
    assert len(lines) == len(cache.selected_files())

    assert not build_archive(cache.root, dest, "dir", None, 2).rebuilt
    (dest / cache.selected_files()[0]).unlink()
    assert build_archive(cache.root, dest, "dir", None, 2).rebuilt
    assert_same_as_selection(dest, cache)
    assert _leftovers(tmp_path) == sorted([cache.root.name, dest.name, f"{dest.name}.sha256"])


def test_dir_mode_failure_keeps_old_destination(
    cache: SyntheticCache, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "d"
    build_archive(cache.root, dest, "dir", None, 2)
    listing = cache.root / "saved-images-list.json"
    listing.write_text(listing.read_text() + "\n")  # content changed: forces a rebuild

    def broken_link(*args: object) -> bool:
        raise OSError(5, "I/O error")

    monkeypatch.setattr(archive, "_link_or_copy", broken_link)
    with pytest.raises(OSError, match="I/O error"):
        build_archive(cache.root, dest, "dir", None, 2)
    assert _leftovers(tmp_path) == sorted([cache.root.name, "d", "d.sha256"])
    assert (dest / "share").is_dir()


def test_destination_and_cache_must_not_overlap(cache: SyntheticCache, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="inside the cache"):
        build_archive(cache.root, cache.root / "a.tar.gz", "gzip", None, 1)
    with pytest.raises(ValueError, match="inside the cache"):
        build_archive(cache.root, cache.root, "dir", None, 1)
    with pytest.raises(ValueError, match="cache .* is inside the destination"):
        build_archive(cache.root, tmp_path, "dir", None, 1)


def test_listed_folder_missing_is_reported(cache: SyntheticCache, tmp_path: Path) -> None:
    shutil.rmtree(cache.root / cache.folders[1])
    with pytest.raises(ArchiveError, match=cache.folders[1]):
        build_archive(cache.root, tmp_path / "x.tar.gz", "gzip", None, 1)


def test_nested_index_is_followed(cache: SyntheticCache, tmp_path: Path) -> None:
    selection = archive.select(cache.root)
    first = json.loads((cache.root / cache.folders[0] / "index.json").read_text())
    assert first["manifests"][0]["mediaType"].endswith("index.v1+json")
    names = {entry.name for entry in selection.entries}
    assert {f"share/sha256/{digest}" for digest in cache.blobs} <= names


def test_malformed_manifest_is_reported(cache: SyntheticCache, tmp_path: Path) -> None:
    folder = cache.folders[-1]
    index = json.loads((cache.root / folder / "index.json").read_text())
    manifest = cache.root / "share/sha256" / index["manifests"][0]["digest"][7:]
    manifest.write_text(json.dumps({"config": {"digest": "md5:abc"}, "layers": []}))
    with pytest.raises(ArchiveError, match=f"{folder}.*'md5:abc'"):
        build_archive(cache.root, tmp_path / "x.tar.gz", "gzip", None, 1)


def test_tar_destination_must_not_be_a_directory(cache: SyntheticCache, tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    with pytest.raises(ValueError, match="is a directory"):
        build_archive(cache.root, tmp_path / "d", "zstd", None, 1)
