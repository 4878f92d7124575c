"""`hangar.verify`: sound archives pass; archives damaged on purpose fail, naming the fault."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard
from cachefactory import SyntheticCache, make_cache
from support.images import PushedImage
from workflow import run_workflow, write_list

from hangar.platforms import Platform
from hangar.save.archive import build_archive
from hangar.verify import main, verify

Members = list[tuple[tarfile.TarInfo, bytes]]
TOP = "saved-image-cache"


@pytest.fixture
def cache(tmp_path: Path) -> SyntheticCache:
    return hangar_names(make_cache(tmp_path / "cache", images=3, layer_size=48 * 1024, stale=False))


def hangar_names(cache: SyntheticCache) -> SyntheticCache:
    """Rename the synthetic folders to hangar's names: sha256 of "<repo>:<copied tag>"."""
    path = cache.root / "saved-images-list.json"
    document = json.loads(path.read_text())
    renamed = {}
    for entry in document["List"]:
        for image in entry["Images"]:
            platform = Platform(image["Digest"], image["OS"], image["Arch"])
            proper = platform.folder(entry["Source"], entry["Tag"])
            (cache.root / image["Folder"]).rename(cache.root / proper)
            renamed[image["Folder"]] = proper
            image["Folder"] = proper
    path.write_text(json.dumps(document, indent=1))
    cache.folders = [renamed[folder] for folder in cache.folders]
    return cache


def archive(
    cache: SyntheticCache, tmp_path: Path, compress: str = "gzip", part_size: int | None = None
) -> Path:
    names = {"gzip": "saved.tar.gz", "zstd": "saved.tar.zstd", "dir": "saved"}
    dest = tmp_path / "out" / names[compress]
    dest.parent.mkdir(exist_ok=True)
    build_archive(cache.root, dest, compress, part_size, threads=2)  # type: ignore[arg-type]
    return dest


def run(dest: Path | str, *flags: str) -> tuple[int, list[str]]:
    lines: list[str] = []
    code = main([str(dest), *flags], out=lines.append)
    return code, lines


def errors(lines: list[str]) -> str:
    return "\n".join(line for line in lines if line.startswith("ERROR"))


def parts(dest: Path) -> list[Path]:
    return sorted(dest.parent.glob(f"{dest.name}.part*"), key=lambda p: int(p.suffix[5:]))


# --- rewriting archives: the same stream with entries changed, and fresh checksums --------------


def read_members(dest: Path) -> Members:
    files = parts(dest) or [dest]
    data = b"".join(path.read_bytes() for path in files)
    if data.startswith(b"\x28\xb5\x2f\xfd"):  # zstd: tarfile reads only gzip, bz2 and xz
        data = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
    stream = io.BytesIO(data)
    members = []
    with tarfile.open(fileobj=stream, mode="r|*") as tar:
        for info in tar:
            handle = tar.extractfile(info) if info.isfile() else None
            members.append((info, handle.read() if handle else b""))
    return members


def write_archive(
    dest: Path, members: Members, compress: str = "gzip", part_size: int | None = None
) -> None:
    """Write members as a tar stream, compressed, cut into parts, with a sha256sum file."""
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for info, data in members:
            info.size = len(data) if info.isfile() else 0
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    if compress == "gzip":
        stream = gzip.compress(tar_bytes.getvalue(), mtime=0)
    else:
        stream = zstandard.ZstdCompressor().compress(tar_bytes.getvalue())
    for old in [*parts(dest), dest]:
        old.unlink(missing_ok=True)
    rows = []
    if part_size is None:
        dest.write_bytes(stream)
    else:
        for number, start in enumerate(range(0, len(stream), part_size)):
            piece = stream[start : start + part_size]
            path = dest.with_name(f"{dest.name}.part{number}")
            path.write_bytes(piece)
            rows.append(f"{hashlib.sha256(piece).hexdigest()}  {path.name}\n")
    rows.append(f"{hashlib.sha256(stream).hexdigest()}  {dest.name}\n")
    dest.with_name(dest.name + ".sha256").write_text("".join(rows))


def rewrite(dest: Path, edit: Callable[[Members], Members], part_size: int | None = None) -> None:
    compress = "zstd" if dest.name.endswith(".zstd") else "gzip"
    write_archive(dest, edit(read_members(dest)), compress, part_size)


def blob_member(members: Members, kind: str) -> str:
    """Name of a blob in the archive: a `layer` (not JSON) or a `manifest`."""
    for info, data in members:
        if "/share/sha256/" in info.name and info.isfile():
            is_json = data.startswith(b"{")
            if (kind == "manifest" and b'"layers":' in data) or (kind == "layer" and not is_json):
                return info.name
    raise AssertionError(f"no {kind} blob")


def drop(name: str) -> Callable[[Members], Members]:
    return lambda members: [(info, data) for info, data in members if info.name != name]


def replace(name: str, change: Callable[[bytes], bytes]) -> Callable[[Members], Members]:
    return lambda members: [
        (info, change(data) if info.name == name else data) for info, data in members
    ]


# --- sound archives ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("compress", "part_size"),
    [("gzip", None), ("gzip", 40_000), ("zstd", None), ("zstd", 25_000), ("dir", None)],
)
def test_sound_archive_passes(
    cache: SyntheticCache, tmp_path: Path, compress: str, part_size: int | None
) -> None:
    dest = archive(cache, tmp_path, compress, part_size)
    if part_size:
        assert len(parts(dest)) > 2
    result = verify(dest)
    assert result.findings.errors == []
    assert result.findings.warnings == []
    assert (result.images, result.platforms) == (3, 6)
    assert result.blobs == len(cache.blobs)
    code, lines = run(dest)
    assert code == 0
    assert lines[-1].startswith(f"OK: {dest} (")
    assert "3 images, 6 platforms" in lines[-1]


def test_any_name_of_the_archive_is_accepted(cache: SyntheticCache, tmp_path: Path) -> None:
    dest = archive(cache, tmp_path, "gzip", 30_000)
    for name in (dest, f"{dest}.sha256", f"{dest}.part0", f"{dest}.part1"):
        assert run(name)[0] == 0, name


def test_a_real_save_with_a_nested_index_passes(cache: SyntheticCache, tmp_path: Path) -> None:
    dest = archive(cache, tmp_path)
    members = read_members(dest)
    assert any(b'"manifests"' in data and "/share/" in i.name for i, data in members)
    assert verify(dest).findings.ok


# --- damaged files -----------------------------------------------------------------------------


def test_flipped_byte_in_a_part(cache: SyntheticCache, tmp_path: Path) -> None:
    dest = archive(cache, tmp_path, "gzip", 30_000)
    part = parts(dest)[1]
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0x01
    part.write_bytes(bytes(data))
    code, lines = run(dest)
    assert code == 1
    text = errors(lines)
    assert f"ERROR: {part.name}: sha256 " in text
    assert f"does not match {dest.name}.sha256" in text
    assert f"ERROR: {dest.name}: sha256 of the joined parts" in text
    # the damage is also found in the content: a blob, the stream or its checksum
    assert len(lines) > 3
    assert lines[-1].startswith("FAILED: ")


def test_flipped_byte_in_a_single_file(cache: SyntheticCache, tmp_path: Path) -> None:
    dest = archive(cache, tmp_path, "zstd")
    data = bytearray(dest.read_bytes())
    data[len(data) // 3] ^= 0x80
    dest.write_bytes(bytes(data))
    code, lines = run(dest)
    assert code == 1
    assert f"ERROR: {dest.name}: sha256 " in errors(lines)


def test_missing_part(cache: SyntheticCache, tmp_path: Path) -> None:
    dest = archive(cache, tmp_path, "gzip", 30_000)
    count = len(parts(dest))
    parts(dest)[1].unlink()
    code, lines = run(dest)
    assert code == 1
    assert f"ERROR: {dest.name}.part1: part 1 of {count} is missing" in lines
    assert "note: content not checked: the stream is incomplete" in lines


def test_missing_last_part_is_found_by_the_checksum_file(
    cache: SyntheticCache, tmp_path: Path
) -> None:
    dest = archive(cache, tmp_path, "gzip", 30_000)
    last = parts(dest)[-1]
    number = int(last.suffix[5:])
    last.unlink()
    code, lines = run(dest)
    assert code == 1
    assert f"ERROR: {last.name}: part {number} of {number + 1} is missing" in lines


def test_missing_last_part_without_checksum_file_breaks_the_stream(
    cache: SyntheticCache, tmp_path: Path
) -> None:
    dest = archive(cache, tmp_path, "gzip", 30_000)
    parts(dest)[-1].unlink()
    dest.with_name(dest.name + ".sha256").unlink()
    code, lines = run(dest, "--no-checksums")
    assert code == 1
    assert "gzip stream unreadable" in errors(lines)


def test_extra_part_would_be_appended_by_hangar_load(cache: SyntheticCache, tmp_path: Path) -> None:
    dest = archive(cache, tmp_path, "gzip", 30_000)
    count = len(parts(dest))
    dest.with_name(f"{dest.name}.part{count}").write_bytes(b"stale")
    code, lines = run(dest)
    assert code == 1
    assert f"{dest.name}.part{count}: extra part not in {dest.name}.sha256" in errors(lines)


def test_parts_swapped(cache: SyntheticCache, tmp_path: Path) -> None:
    dest = archive(cache, tmp_path, "gzip", 30_000)
    first, second = parts(dest)[0], parts(dest)[1]
    a, b = first.read_bytes(), second.read_bytes()
    first.write_bytes(b)
    second.write_bytes(a)
    code, lines = run(dest)
    assert code == 1
    text = errors(lines)
    assert f"{first.name}: sha256" in text
    assert f"{second.name}: sha256" in text


def test_checksum_lines_out_of_order(cache: SyntheticCache, tmp_path: Path) -> None:
    dest = archive(cache, tmp_path, "gzip", 30_000)
    record = dest.with_name(dest.name + ".sha256")
    lines = record.read_text().splitlines(keepends=True)
    lines[0], lines[1] = lines[1], lines[0]
    record.write_text("".join(lines))
    code, out = run(dest)
    assert code == 1
    assert "parts are not listed in order" in errors(out)


def test_missing_checksum_file(cache: SyntheticCache, tmp_path: Path) -> None:
    dest = archive(cache, tmp_path)
    dest.with_name(dest.name + ".sha256").unlink()
    code, lines = run(dest)
    assert code == 1
    assert "checksum file is missing" in errors(lines)
    code, lines = run(dest, "--no-checksums")
    assert code == 0
    assert lines[0].startswith("note: no checksum file")
    assert lines[1].startswith("OK: ")


def test_nothing_there(tmp_path: Path) -> None:
    code, lines = run(tmp_path / "nothing.tar.gz")
    assert code == 1
    assert "no archive here" in lines[0]


def test_not_compressed(tmp_path: Path) -> None:
    dest = tmp_path / "x.tar.gz"
    dest.write_bytes(b"plain text, not an archive")
    code, lines = run(dest, "--no-checksums")
    assert code == 1
    assert "neither gzip nor zstd" in errors(lines)


# --- damaged content with consistent checksums ---------------------------------------------------


def test_blob_removed(cache: SyntheticCache, tmp_path: Path) -> None:
    dest = archive(cache, tmp_path, "gzip", 30_000)
    name = blob_member(read_members(dest), "layer")
    rewrite(dest, drop(name), part_size=30_000)
    code, lines = run(dest)
    assert code == 1
    digest = name.rsplit("/", 1)[1]
    assert f": layer sha256:{digest} is missing from share/sha256/" in errors(lines)
    assert "folder " in errors(lines)


def test_manifest_removed(cache: SyntheticCache, tmp_path: Path) -> None:
    dest = archive(cache, tmp_path)
    name = blob_member(read_members(dest), "manifest")
    rewrite(dest, drop(name))
    code, lines = run(dest)
    assert code == 1
    assert f"manifest sha256:{name.rsplit('/', 1)[1]} is missing" in errors(lines)


def test_blob_content_changed(cache: SyntheticCache, tmp_path: Path) -> None:
    dest = archive(cache, tmp_path, "zstd")
    name = blob_member(read_members(dest), "layer")
    rewrite(dest, replace(name, lambda data: b"X" + data[1:]))
    code, lines = run(dest)
    assert code == 1
    assert f"ERROR: {name.removeprefix(TOP + '/')}: content hashes to sha256:" in lines[0]


def test_index_json_and_oci_layout_missing(cache: SyntheticCache, tmp_path: Path) -> None:
    dest = archive(cache, tmp_path)
    folder = cache.folders[1]
    rewrite(dest, drop(f"{TOP}/{folder}/index.json"))
    rewrite(dest, drop(f"{TOP}/{folder}/oci-layout"))
    code, lines = run(dest)
    assert code == 1
    assert f"ERROR: folder {folder}: index.json is missing" in lines
    assert f"ERROR: folder {folder}: oci-layout is missing" in lines


def test_listed_folder_missing(cache: SyntheticCache, tmp_path: Path) -> None:
    dest = archive(cache, tmp_path)
    folder = cache.folders[2]
    rewrite(dest, lambda ms: [(i, d) for i, d in ms if f"/{folder}" not in i.name])
    code, lines = run(dest)
    assert code == 1
    assert f"ERROR: folder {folder}: listed in saved-images-list.json but not in the archive" in (
        lines
    )


def test_saved_list_inconsistent_with_the_folders(cache: SyntheticCache, tmp_path: Path) -> None:
    dest = archive(cache, tmp_path)

    def edit(data: bytes) -> bytes:
        document = json.loads(data)
        document["Version"] = "v1.0.0"
        document["List"][0]["ArchList"] = ["amd64"]
        document["List"][1]["Images"].pop()
        return json.dumps(document).encode()

    rewrite(dest, replace(f"{TOP}/saved-images-list.json", edit))
    code, lines = run(dest)
    assert code == 1
    text = errors(lines)
    assert "Version is 'v1.0.0'; hangar load needs 'v1.1.0'" in text
    assert "ArchList ['amd64'] does not match Images ['amd64', 'arm64']" in text
    assert f"warning: folder {cache.folders[3]} is in the archive but not in" in "\n".join(lines)


def test_folder_not_named_as_hangar_names_it(cache: SyntheticCache, tmp_path: Path) -> None:
    dest = archive(cache, tmp_path)
    folder, other = cache.folders[0], "f" * 64

    def rename(members: Members) -> Members:
        for info, _ in members:
            info.name = info.name.replace(folder, other)
        return [
            (
                info,
                data.replace(folder.encode(), other.encode()) if "list.json" in info.name else data,
            )
            for info, data in members
        ]

    rewrite(dest, rename)
    code, lines = run(dest)
    assert code == 0  # hangar load finds folders by the listed name: a warning, not an error
    assert f"Folder {other} is not hangar's name for this platform ({folder})" in "\n".join(lines)


def test_unsafe_entry(cache: SyntheticCache, tmp_path: Path) -> None:
    dest = archive(cache, tmp_path)

    def add(members: Members) -> Members:
        info = tarfile.TarInfo("saved-image-cache/../evil")
        return [*members, (info, b"x")]

    rewrite(dest, add)
    code, lines = run(dest)
    assert code == 1
    assert "saved-image-cache/../evil: entry outside saved-image-cache/" in errors(lines)


# --- dir destinations ----------------------------------------------------------------------------


def test_dir_blob_removed(cache: SyntheticCache, tmp_path: Path) -> None:
    dest = archive(cache, tmp_path, "dir")
    blob = sorted((dest / "share" / "sha256").iterdir())[0]
    blob.unlink()
    code, lines = run(dest)
    assert code == 1
    text = errors(lines)
    assert f"saved/share/sha256/{blob.name}: listed in saved.sha256, missing" in text
    assert f"sha256:{blob.name} is missing from share/sha256/" in text


def test_dir_blob_damaged(cache: SyntheticCache, tmp_path: Path) -> None:
    dest = archive(cache, tmp_path, "dir")
    blob = sorted((dest / "share" / "sha256").iterdir())[0]
    data = blob.read_bytes()
    blob.unlink()  # a hard link into the cache: replace, do not write through it
    blob.write_bytes(bytes([data[0] ^ 1]) + data[1:])
    code, lines = run(dest)
    assert code == 1
    assert f"share/sha256/{blob.name}: content hashes to sha256:" in errors(lines)
    assert f"saved/share/sha256/{blob.name}: sha256 " in errors(lines)


# --- the workflow target --------------------------------------------------------------------------


@pytest.mark.slow
def test_workflow_target_verifies_the_archive(
    workdir: Path, sample_images: dict[str, PushedImage]
) -> None:
    names = ["library/nginx:1.25", "rancher/busybox:1.36"]
    write_list(workdir, [sample_images[name].ref for name in names])
    config = {"file": "images.txt", "part": True, "part_size": "8K"}
    run_workflow(workdir, config, "verify")
    record = (workdir / "save-verify.txt").read_text()
    assert record.startswith("OK: saved-images.tar.gz (")
    assert "2 images, 3 platforms" in record
    dest = workdir / "saved-images.tar.gz"
    part = parts(dest)[1]
    data = bytearray(part.read_bytes())
    data[100] ^= 0xFF
    part.write_bytes(bytes(data))
    done = run_workflow(workdir, config, "--force", "verify", check=False)
    assert done.returncode != 0
    log = (workdir / "logs" / "verify.log").read_text()
    assert f"ERROR: {part.name}: sha256 " in log
    assert log.splitlines()[-1].startswith("FAILED: ")
    assert not (workdir / "save-verify.txt").exists()


# --- the README's reassembly snippet -----------------------------------------------------------


def readme_reassembly_snippet() -> str:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    after = readme.split("Reassembling a split archive", 1)[1]
    return after.split("```sh\n", 1)[1].split("```", 1)[0]


def test_the_readme_reassembly_joins_parts_in_order_and_stops_at_a_gap(
    cache: SyntheticCache, tmp_path: Path
) -> None:
    dest = archive(cache, tmp_path, "gzip", 15_000)
    pieces = parts(dest)
    assert len(pieces) > 10  # .part10 sorts before .part2 in a shell glob
    expected = b"".join(piece.read_bytes() for piece in pieces)
    script = readme_reassembly_snippet().replace("dest=saved-images.tar.gz", f"dest={dest.name}")
    joined = subprocess.run(["sh", "-c", script], cwd=dest.parent, capture_output=True, text=True)
    assert joined.returncode == 0, joined.stderr
    assert dest.read_bytes() == expected
    assert f"{dest.name}: OK" in joined.stdout

    dest.unlink()
    pieces[4].unlink()
    gap = subprocess.run(["sh", "-c", script], cwd=dest.parent, capture_output=True, text=True)
    assert gap.returncode != 0
    assert pieces[4].name in gap.stderr
    assert ": OK" not in gap.stdout  # nothing was checked
