"""Faults during a save: the run finishes or stops cleanly, loses nothing, and resumes.

Against a real registry on 127.0.0.1 (through a fault-injecting proxy where the network must
misbehave): a registry that goes away mid-run, transient errors and rate limits, SIGKILL at
random points, blobs damaged after the save, a disk that fills up, and 2,000 lines at high
concurrency. After every fault the same command is run again and must complete the save.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import tarfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from support.faultproxy import (
    Fault,
    FaultProxy,
    MountUnavailable,
    SilentServer,
    drop,
    fail,
    resize_filesystem,
    small_filesystem,
    truncate,
)
from support.images import (
    LINUX_AMD64,
    LINUX_ARM64_V8,
    ImageKind,
    PlatformSpec,
    PushedImage,
    push_image,
)
from support.registry import Registry
from workflow import entries_by_source, run_workflow, saved_list, snakemake_command, write_list

pytestmark = pytest.mark.slow  # every test here runs the workflow against a registry

HEX64 = re.compile(r"[0-9a-f]{64}")
RETRY_LINE = re.compile(r"retry (\d+)/(\d+) in ([0-9.]+)s after transient error")
BLOB_GET = re.compile(r'"GET /v2/\S+/blobs/(sha256:[0-9a-f]{64}) HTTP')


# -- helpers ------------------------------------------------------------------------------------


def push_many(
    host: str,
    repos: list[str],
    *,
    layer_size: int = 2048,
    base_seed: str = "shared",
    kind: ImageKind = "oci-single",
) -> list[PushedImage]:
    """Single-platform images `repo:1`, pushed a few at a time; all share one base layer."""

    def push(repo: str) -> PushedImage:
        return push_image(
            host, repo, "1", [LINUX_AMD64], kind=kind, base_seed=base_seed, layer_size=layer_size
        )

    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(push, repos))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def statuses(cache: Path) -> dict[str, dict[str, Any]]:
    """Image id → status, for every status file (each must be complete JSON)."""
    directory = cache / ".hangar" / "status"
    if not directory.is_dir():
        return {}
    return {path.stem: json.loads(path.read_text()) for path in directory.glob("*.json")}


def status_of(cache: Path, repo: str) -> dict[str, Any]:
    prefix = repo.replace("/", "_") + "_"
    found = [s for image_id, s in statuses(cache).items() if image_id.startswith(prefix)]
    assert len(found) == 1, f"{repo}: {len(found)} statuses"
    return found[0]


def folder_blobs(cache: Path, folder: str) -> list[tuple[str, int]]:
    """(hex digest, size) of every blob a saved folder needs, its manifest first."""
    index = json.loads((cache / folder / "index.json").read_text())
    blobs = []
    for descriptor in index["manifests"]:
        blobs.append((descriptor["digest"].removeprefix("sha256:"), descriptor["size"]))
        manifest = json.loads((cache / "share" / "sha256" / blobs[-1][0]).read_bytes())
        for item in [manifest["config"], *manifest["layers"]]:
            blobs.append((item["digest"].removeprefix("sha256:"), item["size"]))
    return blobs


def assert_folder_complete(cache: Path, folder: str) -> None:
    """The folder is a whole OCI layout and every blob it needs is in share/, byte-exact."""
    assert json.loads((cache / folder / "oci-layout").read_text()) == {
        "imageLayoutVersion": "1.0.0"
    }
    for hex_digest, size in folder_blobs(cache, folder):
        blob = cache / "share" / "sha256" / hex_digest
        assert blob.stat().st_size == size, f"{folder}: blob {hex_digest} has the wrong size"
        assert sha256_file(blob) == hex_digest, f"{folder}: blob {hex_digest} is damaged"


def assert_share_sound(cache: Path) -> None:
    """share/sha256 holds only complete blobs, each named by its digest."""
    share = cache / "share" / "sha256"
    for blob in share.iterdir() if share.is_dir() else []:
        assert HEX64.fullmatch(blob.name), f"stray file in the shared blob dir: {blob.name}"
        assert sha256_file(blob) == blob.name, f"damaged blob {blob.name}"


def assert_save_complete(workdir: Path, repos: list[str], host: str) -> None:
    """Everything saved, listed, archived and checksummed; nothing failed, nothing left over."""
    cache = workdir / "saved-image-cache"
    assert not (workdir / "save-failed.txt").exists()
    listed = entries_by_source(cache)
    assert sorted(listed) == sorted(f"{host}/{repo}:1" for repo in repos)
    for entry in listed.values():
        for image in entry["Images"]:
            assert_folder_complete(cache, image["Folder"])
    assert_share_sound(cache)
    tmp = cache / ".hangar" / "tmp"
    assert not tmp.exists() or not list(tmp.iterdir()), "staging leftovers in .hangar/tmp"
    assert_archive_complete(workdir)


def archive_files(workdir: Path) -> list[Path]:
    """The archive's files as its .sha256 record names them (parts in order)."""
    record = workdir / "saved-images.tar.gz.sha256"
    names = [line.split("  ", 1)[1] for line in record.read_text().splitlines()]
    parts = sorted(
        (n for n in names if re.search(r"\.part[0-9]+$", n)),
        key=lambda n: int(n.rsplit("part", 1)[1]),
    )
    return [workdir / n for n in (parts or names)]


def assert_archive_matches_record(workdir: Path) -> None:
    """Every file the .sha256 record names has its checksum; with parts, the record's line
    for the whole archive matches the parts put back together."""
    record = workdir / "saved-images.tar.gz.sha256"
    rows = [line.split("  ", 1) for line in record.read_text().splitlines()]
    assert rows, "empty checksum record"
    files = archive_files(workdir)
    for digest, name in rows:
        path = workdir / name
        if path.exists():
            assert sha256_file(path) == digest, f"{name} does not match its checksum"
        else:
            assert len(files) > 1 and name == "saved-images.tar.gz", f"{name} is missing"
            whole = hashlib.sha256()
            for part in files:
                whole.update(part.read_bytes())
            assert whole.hexdigest() == digest, "the parts do not make up the archive"


def assert_archive_complete(workdir: Path) -> None:
    """The checksums hold, and the tar holds the listed cache, byte for byte."""
    assert_archive_matches_record(workdir)
    whole = workdir / "whole-archive.tar.gz"
    with whole.open("wb") as out:
        for part in archive_files(workdir):
            out.write(part.read_bytes())
    cache = workdir / "saved-image-cache"
    wanted = {"saved-images-list.json"}
    for entry in saved_list(cache)["List"]:
        for image in entry["Images"]:
            folder = image["Folder"]
            wanted |= {f"{folder}/index.json", f"{folder}/oci-layout"}
            wanted |= {f"share/sha256/{h}" for h, _ in folder_blobs(cache, folder)}
    found = set()
    with tarfile.open(whole, "r:gz") as tar:
        for member in tar:
            name = member.name.removeprefix("saved-image-cache/")
            if member.isfile():
                data = tar.extractfile(member)
                assert data is not None
                assert data.read() == (cache / name).read_bytes(), f"{name} differs in the tar"
                found.add(name)
    whole.unlink()
    assert found == wanted


def run_in_background(workdir: Path, config: dict[str, Any], *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        snakemake_command(workdir, config, *extra),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: SIGKILL reaches skopeo too
    )


def wait_for(condition: Callable[[], bool], process: subprocess.Popen[str], timeout: float) -> bool:
    """Poll `condition` until true; False if the process ended first or time ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if process.poll() is not None:
            return condition()
        time.sleep(0.002)
    return False


def enough_statuses(cache: Path, count: int) -> bool:
    return len(statuses(cache)) >= count


def kill_group(process: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.communicate(timeout=60)


def retry_lines(log: str) -> list[tuple[int, int, float]]:
    return [(int(a), int(b), float(c)) for a, b, c in RETRY_LINE.findall(log)]


def save_logs(workdir: Path) -> str:
    return "".join(p.read_text() for p in sorted((workdir / "logs" / "save").glob("*.log")))


# -- the registry goes away mid-run -------------------------------------------------------------


def test_registry_stopping_mid_run_fails_the_rest_and_the_rerun_fetches_only_what_is_missing(
    workdir: Path, registry_factory: Callable[..., Registry]
) -> None:
    source = registry_factory()
    repos = [f"rancher/stop-{number}" for number in range(6)]
    push_many(source.host, repos, layer_size=256 << 10, base_seed="stop")
    write_list(workdir, [f"{source.host}/{repo}:1" for repo in repos])
    cache = workdir / "saved-image-cache"
    config = {"file": "images.txt", "retry_times": 2, "retry_delay": 0.1}

    process = run_in_background(workdir, config, "--cores", "1")

    def two_saved() -> bool:
        return sum(1 for s in statuses(cache).values() if s["state"] == "ok") >= 2

    assert wait_for(two_saved, process, 120), "the run ended before the registry could stop"
    source.stop()
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-3000:]

    failed = (workdir / "save-failed.txt").read_text().splitlines()
    saved = list(entries_by_source(cache))
    assert failed, "the registry stopped mid-run: some images must have failed"
    assert sorted(failed + saved) == sorted(f"{source.host}/{repo}:1" for repo in repos)
    for line in failed:
        status = status_of(cache, line.split("/", 1)[1].rsplit(":", 1)[0])
        assert status["state"] == "failed"
        assert "connection refused" in status["reason"], status["reason"]
        assert status["retries"] == 2  # a transient error: retried, then given up
        assert status["saved"] == []
    for entry in entries_by_source(cache).values():
        for image in entry["Images"]:
            assert_folder_complete(cache, image["Folder"])

    kept_statuses = {
        path: path.stat().st_mtime_ns
        for path in (cache / ".hangar" / "status").glob("*.json")
        if json.loads(path.read_text())["state"] == "ok"
    }
    kept_blobs = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in cache.glob("share/*/*")}
    log_offset = source.log_file.stat().st_size
    source.start()
    done = run_workflow(workdir, config, "--cores", "1")
    assert_save_complete(workdir, repos, source.host)

    for path, mtime in kept_statuses.items():
        assert path.stat().st_mtime_ns == mtime, f"{path.name} was saved again"
    for name, stamp in kept_blobs.items():
        path = next(cache.glob(f"share/*/{name}"))
        assert (path.stat().st_ino, path.stat().st_mtime_ns) == stamp, f"blob {name} rewritten"
    with source.log_file.open("rb") as log:
        log.seek(log_offset)
        fetched = set(BLOB_GET.findall(log.read().decode(errors="replace")))
    refetched = {digest for digest in fetched if digest.removeprefix("sha256:") in kept_blobs}
    assert not refetched, f"blobs already in the cache were downloaded again: {refetched}"
    assert "saving" in done.stderr and "again" in done.stderr


# -- transient errors: retried with backoff -----------------------------------------------------


@pytest.fixture(scope="module")
def flaky_image(registry: Registry) -> PushedImage:
    """A two-platform image whose copies make enough requests to meet every fault."""
    return push_image(
        registry.host,
        "rancher/flaky",
        "1",
        [LINUX_AMD64, LINUX_ARM64_V8],
        kind="oci-index",
        base_seed="flaky",
        layer_size=64 << 10,
    )


@pytest.fixture
def proxy(registry: Registry) -> Iterator[FaultProxy]:
    with FaultProxy(registry.host) as running:
        yield running


TRANSIENT_FAULTS = {
    "503 on every request, twice": lambda: [fail(503, count=2)],
    "502 bad gateway for blobs, twice": lambda: [fail(502, count=2, path_contains="/blobs/")],
    "connections dropped before answering, 3 times": lambda: [drop(count=3)],
    "blob downloads cut off halfway, twice": lambda: [truncate(count=2, path_contains="/blobs/")],
    "503 on everything for 1.5 seconds": lambda: [fail(503, seconds=1.5)],
}


@pytest.mark.parametrize("faults", TRANSIENT_FAULTS.values(), ids=TRANSIENT_FAULTS.keys())
def test_transient_errors_are_retried_with_backoff_and_logged(
    workdir: Path,
    proxy: FaultProxy,
    flaky_image: PushedImage,
    faults: Callable[[], list[Fault]],
) -> None:
    reference = f"{proxy.host}/{flaky_image.repo}:{flaky_image.tag}"
    write_list(workdir, [reference])
    proxy.inject(*faults())
    # the preflight's probe is not what is under test: the faults are for the image jobs
    config = {"file": "images.txt", "retry_times": 6, "retry_delay": 0.2, "preflight": False}
    done = run_workflow(workdir, config)
    proxy.clear()
    cache = workdir / "saved-image-cache"

    assert not (workdir / "save-failed.txt").exists(), done.stderr[-2000:]
    images = entries_by_source(cache)[reference]["Images"]
    assert [i["Digest"] for i in images] == [m.digest for m in flaky_image.manifests]
    for image in images:
        assert_folder_complete(cache, image["Folder"])
    assert_share_sound(cache)
    injected = sum(proxy.counts[kind] for kind in ("status", "drop", "truncate"))
    assert injected > 0, "no fault reached the client"

    log = save_logs(workdir)
    retries = retry_lines(log)
    status = status_of(cache, flaky_image.repo)
    assert retries, f"no retry in the log:\n{log}"
    assert status["retries"] == len(retries)
    # Each skopeo call counts its own retries; the wait doubles from retry_delay at each one.
    assert all(total == 6 for _, total, _ in retries)
    for number, _, delay in retries:
        assert delay == pytest.approx(0.2 * 2 ** (number - 1)), f"backoff not doubling: {retries}"


def test_an_error_that_outlasts_the_retries_fails_only_that_image(
    workdir: Path, proxy: FaultProxy, flaky_image: PushedImage, registry: Registry
) -> None:
    (healthy,) = push_many(registry.host, ["rancher/steady"], base_seed="steady")
    broken = f"{proxy.host}/{flaky_image.repo}:{flaky_image.tag}"
    steady = f"{proxy.host}/{healthy.repo}:1"
    write_list(workdir, [broken, steady])
    proxy.inject(fail(503, path_contains=f"/{flaky_image.repo}/"))
    started = time.monotonic()
    run_workflow(workdir, {"file": "images.txt", "retry_times": 3, "retry_delay": 0.1})
    assert time.monotonic() - started < 120
    cache = workdir / "saved-image-cache"
    assert (workdir / "save-failed.txt").read_text() == f"{broken}\n"
    assert list(entries_by_source(cache)) == [steady]
    status = status_of(cache, flaky_image.repo)
    assert status["retries"] == 3
    assert "503" in status["reason"]
    assert [d for _, _, d in retry_lines(save_logs(workdir))] == [0.1, 0.2, 0.4]


# -- SIGKILL at random points -------------------------------------------------------------------


def assert_nothing_half_done_looks_complete(workdir: Path) -> None:
    """What a killed run leaves: whatever looks complete is complete.

    Status files are whole JSON and an `ok` one only names whole folders; every folder under
    its final name is a whole layout; share/ holds only whole blobs; the saved list is whole
    and names whole folders; an archive with its .sha256 record matches it.
    """
    cache = workdir / "saved-image-cache"
    for image_id, status in statuses(cache).items():
        assert status["state"] in ("ok", "failed", "skipped"), image_id
        if status["state"] == "ok":
            for platform in status["saved"]:
                assert_folder_complete(cache, platform["Folder"])
    for folder in cache.iterdir() if cache.is_dir() else []:
        if HEX64.fullmatch(folder.name):
            assert_folder_complete(cache, folder.name)
    assert_share_sound(cache)
    if (cache / "saved-images-list.json").exists():
        for entry in saved_list(cache)["List"]:
            for image in entry["Images"]:
                assert_folder_complete(cache, image["Folder"])
    if (workdir / "saved-images.tar.gz.sha256").exists():
        assert_archive_matches_record(workdir)
    failed = workdir / "save-failed.txt"
    assert not failed.exists() or failed.read_text().endswith("\n")


def test_sigkill_at_random_points_then_the_same_command_completes(
    workdir: Path, registry: Registry
) -> None:
    rng = random.Random(1606)  # fixed: the same "random" points on every run
    repos = [f"rancher/kill-{number}" for number in range(10)]
    push_many(registry.host, repos, layer_size=2 << 20, base_seed="kill")
    write_list(workdir, [f"{registry.host}/{repo}:1" for repo in repos])
    cache = workdir / "saved-image-cache"
    config = {"file": "images.txt", "part": True, "part_size": "1M"}
    kills = 0

    # During the copies: twice, each time after a random number of images were saved.
    for _ in range(2):
        process = run_in_background(workdir, config, "--cores", "2")
        target = len(statuses(cache)) + rng.randint(1, 3)
        landed = wait_for(partial(enough_statuses, cache, target), process, 120)
        time.sleep(rng.uniform(0, 0.15))
        kill_group(process)
        kills += landed
        assert_nothing_half_done_looks_complete(workdir)
    assert kills, "no kill landed during the copies"
    assert len(statuses(cache)) < len(repos), "the copies ended before the kills"

    def writing() -> bool:
        return any(workdir.glob(".saved-images.tar.gz*.tmp-*"))

    def kill_while_archiving() -> None:
        """Kill when the first temporary part appears, or a little later. A new part size
        makes the next attempt rebuild the archive, if one was written before the kill."""
        for size in ("1M", "2M", "3M", "4M"):
            process = run_in_background(workdir, {**config, "part_size": size}, "--cores", "2")
            caught = wait_for(writing, process, 180)
            time.sleep(rng.uniform(0, 0.03))
            kill_group(process)
            assert_nothing_half_done_looks_complete(workdir)
            if caught:
                return
        pytest.fail("the archive was always written before the kill could land")

    kill_while_archiving()
    done = run_workflow(workdir, config, "--cores", "2")
    assert "Traceback" not in done.stderr
    assert_save_complete(workdir, repos, registry.host)
    left = [p.name for p in workdir.glob(".saved-images.tar.gz*")]
    assert left in ([], [".saved-images.tar.gz.lock"]), f"temporary archive files left: {left}"

    # A new line, and a kill while the archive is rebuilt over the complete one: the old
    # archive may stay (whole, with its record) but the next run must replace it.
    repos.append("rancher/kill-late")
    push_many(registry.host, repos[-1:], layer_size=2 << 20, base_seed="kill")
    write_list(workdir, [f"{registry.host}/{repo}:1" for repo in repos])
    kill_while_archiving()
    run_workflow(workdir, config, "--cores", "2")
    assert_save_complete(workdir, repos, registry.host)


# -- a blob damaged after the save --------------------------------------------------------------


def test_damaged_blobs_are_found_and_exactly_their_images_saved_again(
    workdir: Path, registry: Registry
) -> None:
    """`verify: size` (the default, a stat per blob) finds missing and truncated blobs;
    `verify: digest` (hashes every blob) also finds a blob damaged without a change of size."""
    shared = push_many(registry.host, ["rancher/dmg-a", "rancher/dmg-b"], base_seed="dmg")
    (alone,) = push_many(registry.host, ["rancher/dmg-c"], base_seed="dmg-c")
    repos = ["rancher/dmg-a", "rancher/dmg-b", "rancher/dmg-c"]
    write_list(workdir, [f"{registry.host}/{repo}:1" for repo in repos])
    config: dict[str, Any] = {"file": "images.txt"}
    run_workflow(workdir, config)
    cache = workdir / "saved-image-cache"
    status_files = {
        repo: next(cache.glob(f".hangar/status/{repo.replace('/', '_')}_*")) for repo in repos
    }

    def saved_again() -> set[str]:
        return {
            repo for repo, path in status_files.items() if path.stat().st_mtime_ns != stamps[repo]
        }

    def blob(digest: str) -> Path:
        return cache / "share" / "sha256" / digest.removeprefix("sha256:")

    # The base layer of a and b, damaged in place: same size, one byte changed.
    base = shared[0].manifests[0].layer_digests[0]
    assert base == shared[1].manifests[0].layer_digests[0]
    data = bytearray(blob(base).read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob(base).write_bytes(bytes(data))

    stamps = {repo: path.stat().st_mtime_ns for repo, path in status_files.items()}
    done = run_workflow(workdir, config)  # verify: size cannot see it
    assert saved_again() == set()
    assert sha256_file(blob(base)) != base.removeprefix("sha256:")

    done = run_workflow(workdir, {**config, "verify": "digest"})
    assert "removed 1 damaged blob(s)" in done.stderr
    assert "saving 2 image(s) again" in done.stderr
    assert saved_again() == {"rancher/dmg-a", "rancher/dmg-b"}
    assert sha256_file(blob(base)) == base.removeprefix("sha256:")

    # The top layer of c, truncated: the default check finds it.
    top = alone.manifests[0].layer_digests[1]
    with blob(top).open("r+b") as handle:
        handle.truncate(100)
    stamps = {repo: path.stat().st_mtime_ns for repo, path in status_files.items()}
    done = run_workflow(workdir, config)
    assert "removed 1 damaged blob(s)" in done.stderr
    assert saved_again() == {"rancher/dmg-c"}
    assert_save_complete(workdir, repos, registry.host)


# -- the disk fills up --------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs (skipped, with the reason, where this process cannot mount one)."""
    try:
        with small_filesystem(tmp_path / "small-disk", "3m") as mount:
            yield mount
    except MountUnavailable as reason:
        pytest.skip(f"no small file system to fill: {reason}")


def test_disk_full_while_copying_stops_with_a_clear_error_and_marks_nothing_complete(
    workdir: Path, registry: Registry, small_disk: Path
) -> None:
    repos = [f"rancher/full-{number}" for number in range(4)]
    push_many(registry.host, repos, layer_size=1 << 20, base_seed="full")  # ~2 MiB per image
    write_list(workdir, [f"{registry.host}/{repo}:1" for repo in repos])
    cache = small_disk / "cache"
    # past the image jobs' own space check (tests/test_terminal_output.py): the copy's ENOSPC
    config = {"file": "images.txt", "cache": str(cache), "ignore_free_space": True}

    done = run_workflow(workdir, config, "--cores", "1", check=False)
    assert done.returncode != 0
    logs = done.stderr + save_logs(workdir)
    assert "no space left on device" in logs.lower(), done.stderr[-3000:]
    saved = {s["reference"] for s in statuses(cache).values()}
    assert len(saved) < len(repos), "everything fitted: the disk never filled"
    assert all(s["state"] == "ok" for s in statuses(cache).values()), "a job marked as failed"
    assert_nothing_half_done_looks_complete(workdir)
    assert not (cache / "saved-images-list.json").exists()
    assert not (workdir / "saved-images.tar.gz.sha256").exists()

    resize_filesystem(small_disk, "64m")
    run_workflow(workdir, config, "--cores", "1")
    assert (workdir / "saved-images.tar.gz.sha256").exists()
    assert not (workdir / "save-failed.txt").exists()
    listed = entries_by_source(cache)
    assert sorted(listed) == sorted(f"{registry.host}/{repo}:1" for repo in repos)
    for entry in listed.values():
        assert_folder_complete(cache, entry["Images"][0]["Folder"])
    assert_share_sound(cache)


def test_disk_full_while_archiving_leaves_no_archive_and_the_rerun_writes_it(
    workdir: Path, registry: Registry, small_disk: Path
) -> None:
    repos = [f"rancher/full-archive-{number}" for number in range(3)]
    push_many(registry.host, repos, layer_size=1 << 20, base_seed="full-archive")
    write_list(workdir, [f"{registry.host}/{repo}:1" for repo in repos])
    destination = small_disk / "saved-images.tar.gz"
    # past the archive step's own space check (tests/test_terminal_output.py): ENOSPC midway
    config = {"file": "images.txt", "destination": str(destination), "ignore_free_space": True}

    done = run_workflow(workdir, config, check=False)
    assert done.returncode != 0
    archive_log = (workdir / "logs" / "archive.log").read_text()
    assert "no space left on device" in (done.stderr + archive_log).lower(), done.stderr[-3000:]
    left = [p.name for p in small_disk.iterdir() if p.name != ".saved-images.tar.gz.lock"]
    assert left == [], "a partial archive was left on the full disk"

    resize_filesystem(small_disk, "64m")
    run_workflow(workdir, config)
    record = small_disk / "saved-images.tar.gz.sha256"
    digest, name = record.read_text().split()
    assert name == "saved-images.tar.gz" and sha256_file(destination) == digest
    with tarfile.open(destination, "r:gz") as tar:
        names = tar.getnames()
    for entry in entries_by_source(workdir / "saved-image-cache").values():
        assert f"saved-image-cache/{entry['Images'][0]['Folder']}/index.json" in names


# -- many images at high concurrency ------------------------------------------------------------

MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)


def add_tags(host: str, repo: str, tag: str, new_tags: list[str]) -> None:
    """Point `new_tags` at the manifest of `repo:tag` (one PUT each, straight to the registry)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(
        f"http://{host}/v2/{repo}/manifests/{tag}", headers={"Accept": MANIFEST_TYPES}
    )
    with opener.open(request, timeout=30) as response:
        body, media_type = response.read(), response.headers["Content-Type"]
    for new_tag in new_tags:
        put = urllib.request.Request(
            f"http://{host}/v2/{repo}/manifests/{new_tag}",
            data=body,
            method="PUT",
            headers={"Content-Type": media_type},
        )
        with opener.open(put, timeout=30) as response:
            assert response.status == 201, response.status


def test_two_thousand_lines_at_twenty_jobs_save_every_platform(
    workdir: Path, registry: Registry
) -> None:
    """100 tiny images sharing a base layer, 20 tags each: 2,000 lines, 2,000 folders.

    One-platform OCI indexes: a job then needs two skopeo calls (inspect, copy), where a
    single manifest needs a third for its config; skopeo's start-up is most of the cost.
    """
    repos = [f"rancher/many-{number:03d}" for number in range(100)]
    push_many(registry.host, repos, layer_size=256, base_seed="many", kind="oci-index")
    tags = ["1"] + [f"t{number:02d}" for number in range(1, 20)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda repo: add_tags(registry.host, repo, "1", tags[1:]), repos))
    lines = [f"{registry.host}/{repo}:{tag}" for repo in repos for tag in tags]
    write_list(workdir, lines)

    started = time.monotonic()
    done = run_workflow(workdir, {"file": "images.txt"}, "--cores", "20")
    elapsed = time.monotonic() - started
    cache = workdir / "saved-image-cache"
    assert not (workdir / "save-failed.txt").exists(), done.stderr[-2000:]
    listed = saved_list(cache)["List"]
    assert [f"{e['Source']}:{e['Tag']}" for e in listed] == lines
    folders = {image["Folder"] for entry in listed for image in entry["Images"]}
    assert len(folders) == len(lines)  # one platform each, every one in its own folder
    assert all(len(entry["Images"]) == 1 for entry in listed)
    on_disk = {p.name for p in cache.iterdir() if HEX64.fullmatch(p.name)}
    assert on_disk == folders
    for folder in folders:
        assert json.loads((cache / folder / "index.json").read_text())["manifests"]
    # 100 top layers + 100 configs + 100 manifests + 1 shared base layer (indexes not saved)
    assert len(list((cache / "share" / "sha256").iterdir())) == 301
    assert_share_sound(cache)
    assert_archive_matches_record(workdir)
    print(f"2,000 images saved in {elapsed:.0f}s")


# -- round 2: nothing hangs, nothing wrong is handed over, nothing outside the cache is touched --


def skopeo_pids(needle: str) -> list[int]:
    """Processes of skopeo whose command line names `needle` (a host:port)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            words = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if words and words[0].endswith(b"skopeo") and any(needle.encode() in w for w in words):
            found.append(int(entry.name))
    return found


def wait_gone(needle: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not skopeo_pids(needle):
            return True
        time.sleep(0.1)
    return False


def test_a_registry_that_never_answers_fails_its_image_within_the_timeout(
    workdir: Path, registry: Registry
) -> None:
    (steady,) = push_many(registry.host, ["rancher/answers"], base_seed="answers")
    with SilentServer() as silent:
        hung = f"{silent.host}/rancher/hangs:1"
        write_list(workdir, [hung, f"{registry.host}/{steady.repo}:1"])
        started = time.monotonic()
        # without the preflight, whose own probe would stop the run first: the copy's bound
        # is under test here
        config = {"file": "images.txt", "timeout": "1s", "retry_times": 1, "preflight": False}
        run_workflow(workdir, config)
        took = time.monotonic() - started
        assert silent.accepted >= 2, "skopeo never reached the silent server"
        assert not skopeo_pids(silent.host), "a skopeo outlived the run"
    assert took < 90, f"the run took {took:.0f}s with a 1s timeout"
    cache = workdir / "saved-image-cache"
    status = status_of(cache, "rancher/hangs")
    assert status["state"] == "failed"
    assert status["reason"] == "registry did not answer within 1s"
    assert status["retries"] == 1  # a timeout is transient: retried once, then given up
    assert (workdir / "save-failed.txt").read_text() == f"{hung}\n"
    assert list(entries_by_source(cache)) == [f"{registry.host}/{steady.repo}:1"]


@pytest.mark.parametrize("command", [["plan"], ["save", "--dry-run"]])
def test_a_plan_of_a_registry_that_never_answers_ends_within_the_timeout(
    workdir: Path, command: list[str]
) -> None:
    with SilentServer() as silent:
        write_list(workdir, [f"{silent.host}/rancher/hangs:1"])
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "hangar.cli.main", *command, "-f", "images.txt"]
            + ["--timeout=1s", "--tls-verify=false"],
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=120,
        )
        took = time.monotonic() - started
        assert silent.accepted >= 1, "skopeo never reached the silent server"
    assert took < 60, f"{command} took {took:.0f}s with a 1s timeout"
    assert done.returncode == 1
    assert "registry did not answer within 1s" in done.stdout


def test_ctrl_c_during_a_plan_says_one_line(workdir: Path) -> None:
    with SilentServer() as silent:
        write_list(workdir, [f"{silent.host}/rancher/hangs:1"])
        process = subprocess.Popen(
            [sys.executable, "-m", "hangar.cli.main", "plan", "-f", "images.txt"]
            + ["--tls-verify=false"],
            cwd=workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert wait_for(lambda: silent.accepted >= 1, process, 60), "the plan never connected"
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 130
    assert output.strip().splitlines()[-1] == "interrupted: nothing was written", output
    assert "Traceback" not in output
    assert not (workdir / "save-plan.csv").exists()


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_a_hung_save_stops_on_sigterm_and_its_skopeo_dies_with_snakemake(
    workdir: Path, how: str
) -> None:
    with SilentServer() as silent:
        write_list(workdir, [f"{silent.host}/rancher/hangs:1"])
        config = {"file": "images.txt", "timeout": "10m", "preflight": False}
        process = run_in_background(workdir, config)
        assert wait_for(lambda: bool(skopeo_pids(silent.host)), process, 60), process.stderr
        time.sleep(1)  # well inside the copy: skopeo is waiting on the silent server
        # only Snakemake's own pid, as timeout(1), docker stop and a killed parent do
        process.send_signal(getattr(signal, how))
        try:
            process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            kill_group(process)
            raise AssertionError(f"{how} did not stop the hung save within 30 s") from None
        assert wait_gone(silent.host, 10), f"skopeo outlived Snakemake after {how}"
    cache = workdir / "saved-image-cache"
    assert statuses(cache) == {}, "a stopped image must not look saved or failed"
    assert not (workdir / "saved-images.tar.gz.sha256").exists()


def test_a_rate_limit_is_waited_out_once_and_named(
    workdir: Path, proxy: FaultProxy, registry: Registry
) -> None:
    images = push_many(registry.host, ["rancher/limited-a", "rancher/limited-b"], base_seed="rl")
    write_list(workdir, [f"{proxy.host}/{image.repo}:1" for image in images])
    proxy.inject(fail(429, count=2, retry_after=2, path_contains="/manifests/"))
    started = time.monotonic()
    run_workflow(workdir, {"file": "images.txt", "retry_times": 3}, "--cores", "2")
    took = time.monotonic() - started
    assert not (workdir / "save-failed.txt").exists()
    # skopeo is stopped at the first 429 instead of trying 5 times: 2 refusals in all
    assert proxy.counts["status"] == 2
    log = save_logs(workdir)
    assert f"after rate limited by {proxy.host} (429), retry after 2 s" in log, log
    assert took >= 2, "the Retry-After was not waited for"


def test_a_long_retry_after_is_said_and_pauses_the_registry_instead_of_burning_retries(
    workdir: Path, proxy: FaultProxy, registry: Registry
) -> None:
    images = push_many(registry.host, ["rancher/hub-a", "rancher/hub-b"], base_seed="hub")
    # another registry (the same one, not through the proxy) is not paused
    (other,) = push_many(registry.host, ["rancher/hub-direct"], base_seed="hub")
    lines = [f"{proxy.host}/{image.repo}:1" for image in images] + [
        f"{registry.host}/{other.repo}:1"
    ]
    write_list(workdir, lines)
    proxy.inject(fail(429, retry_after=7200, path_contains="/manifests/"))
    started = time.monotonic()
    run_workflow(workdir, {"file": "images.txt", "retry_times": 3, "timeout": "1m"}, "--cores", "1")
    assert time.monotonic() - started < 60, "a 2-hour Retry-After was waited for"
    cache = workdir / "saved-image-cache"
    for image in images:
        status = status_of(cache, image.repo)
        assert status["state"] == "failed"
        assert re.fullmatch(
            rf"rate limited by {re.escape(proxy.host)} \(429\), retry after 7\d\d\d s",
            status["reason"],
        ), status["reason"]
    # the first image met the limit; the second waited on the gate, never asking the registry
    assert proxy.counts["status"] == 1
    assert list(entries_by_source(cache)) == [lines[-1]]


def test_a_damaged_shared_blob_is_fetched_again_or_refused_never_archived(
    workdir: Path, registry: Registry
) -> None:
    first, second = push_many(
        registry.host, ["rancher/reuse-a", "rancher/reuse-b"], base_seed="reuse", layer_size=4096
    )
    cache = workdir / "saved-image-cache"
    write_list(workdir, [f"{registry.host}/{first.repo}:1"])
    run_workflow(workdir, {"file": "images.txt"})
    (folder,) = [i["Folder"] for e in entries_by_source(cache).values() for i in e["Images"]]
    _, _, (base_hex, _), _ = folder_blobs(cache, folder)  # manifest, config, base, top
    base = cache / "share" / "sha256" / base_hex

    # truncated: found by size right after the copy that reused it, and fetched again
    base.write_bytes(base.read_bytes()[:100])
    write_list(workdir, [f"{registry.host}/{second.repo}:1"])
    run_workflow(workdir, {"file": "images.txt"})
    assert sha256_file(base) == base_hex
    assert_archive_complete(workdir)

    # same size, other bytes: the archive step hashes every blob it streams and refuses it
    data = bytearray(base.read_bytes())
    data[-1] ^= 0xFF
    base.write_bytes(bytes(data))
    (workdir / "saved-images.tar.gz").unlink()
    done = run_workflow(workdir, {"file": "images.txt", "verify": "size"}, check=False)
    assert done.returncode != 0
    assert (
        f"blob sha256:{base_hex} in the cache does not match its digest"
        in done.stdout + done.stderr + (workdir / "logs" / "archive.log").read_text()
    )
    assert not (workdir / "saved-images.tar.gz").exists()
    assert not base.exists(), "the damaged blob must go, so that the rerun fetches it"
    run_workflow(workdir, {"file": "images.txt"})
    assert sha256_file(base) == base_hex
    assert_archive_complete(workdir)


@pytest.mark.parametrize("damage", ["delete", "truncate", "delete a part"])
def test_a_deleted_or_truncated_archive_is_written_again(
    workdir: Path, registry: Registry, damage: str
) -> None:
    (image,) = push_many(
        registry.host, ["rancher/rebuilt"], base_seed="rebuilt", layer_size=64 << 10
    )
    write_list(workdir, [f"{registry.host}/{image.repo}:1"])
    config: dict[str, Any] = {"file": "images.txt"}
    if damage == "delete a part":
        config |= {"part": True, "part_size": "16K"}
    run_workflow(workdir, config)
    files = archive_files(workdir)
    target = files[1] if damage == "delete a part" else files[0]
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[:1000])
    else:
        target.unlink()
    done = run_workflow(workdir, config)
    assert "writing the archive again" in done.stderr
    assert_archive_complete(workdir)


def test_cleanup_never_follows_a_symlink_out_of_the_cache(workdir: Path, tmp_path: Path) -> None:
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    (outside / ("a" * 64)).write_text("a blob-like name")
    write_list(workdir, ["127.0.0.1:1/rancher/none:1"])
    for link in (".hangar/tmp", "share/sha256"):
        cache = workdir / "saved-image-cache"
        (cache / link).parent.mkdir(parents=True, exist_ok=True)
        (cache / link).symlink_to(outside)
        done = run_workflow(workdir, {"file": "images.txt"}, "-n", check=False)
        assert done.returncode != 0
        assert f"saved-image-cache/{link} is a symbolic link" in done.stdout + done.stderr
        assert sorted(p.name for p in outside.iterdir()) == ["a" * 64, "keep.txt"]
        (cache / link).unlink()


def test_two_images_that_would_share_a_folder_fail_the_second_naming_both(
    workdir: Path, registry: Registry
) -> None:
    windows = PlatformSpec("windows", "amd64")
    push_image(registry.host, "rancher/coll", "1", [windows], kind="oci-index", base_seed="cw")
    push_image(
        registry.host, "rancher/coll", "1-windows", [LINUX_AMD64], kind="oci-index", base_seed="cl"
    )
    first, second = f"{registry.host}/rancher/coll:1", f"{registry.host}/rancher/coll:1-windows"
    write_list(workdir, [first, second])
    run_workflow(workdir, {"file": "images.txt"}, "--cores", "1")
    cache = workdir / "saved-image-cache"
    saved = entries_by_source(cache)
    assert len(saved) == 1
    ((winner, entry),) = saved.items()
    loser = second if winner == first else first
    assert (workdir / "save-failed.txt").read_text() == f"{loser}\n"
    reason = next(s["reason"] for s in statuses(cache).values() if s["state"] == "failed")
    assert "rancher/coll:1-windows-amd64" in reason and winner in reason and loser in reason
    assert "line 1" in reason and "line 2" in reason
    (image,) = entry["Images"]
    index = json.loads((cache / image["Folder"] / "index.json").read_text())
    manifest = json.loads(
        (cache / "share/sha256" / index["manifests"][0]["digest"][7:]).read_text()
    )
    config = json.loads((cache / "share/sha256" / manifest["config"]["digest"][7:]).read_text())
    expected_os = "windows" if winner == first else "linux"
    assert config["os"] == image["OS"] == expected_os  # the folder holds its own manifest
    # the next run keeps trusting the winner and fails the loser the same way
    run_workflow(workdir, {"file": "images.txt"})
    assert list(entries_by_source(cache)) == [winner]


def test_a_deeply_nested_manifest_fails_only_its_image(workdir: Path, registry: Registry) -> None:
    (steady,) = push_many(registry.host, ["rancher/flat"], base_seed="flat")
    nested = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json",'
    nested += b'"manifests":[],"x":' + b"[" * 5000 + b"]" * 5000 + b"}"
    request = urllib.request.Request(
        f"http://{registry.host}/v2/rancher/nested/manifests/1",
        data=nested,
        method="PUT",
        headers={"Content-Type": "application/vnd.oci.image.index.v1+json"},
    )
    urllib.request.urlopen(request, timeout=30).close()
    write_list(workdir, [f"{registry.host}/rancher/nested:1", f"{registry.host}/{steady.repo}:1"])
    for _ in range(2):  # and again on the rerun
        run_workflow(workdir, {"file": "images.txt"})
        status = status_of(workdir / "saved-image-cache", "rancher/nested")
        assert status["state"] == "failed"
        assert "malformed manifest" in status["reason"] and "RecursionError" in status["reason"]
        assert list(entries_by_source(workdir / "saved-image-cache")) == [
            f"{registry.host}/{steady.repo}:1"
        ]


def test_a_destination_in_use_by_another_run_is_refused(workdir: Path, registry: Registry) -> None:
    from hangar.runlock import hold_destination_lock

    (image,) = push_many(registry.host, ["rancher/dest"], base_seed="dest")
    write_list(workdir, [f"{registry.host}/{image.repo}:1"])
    other_run = hold_destination_lock(workdir / "saved-images.tar.gz")
    try:
        done = run_workflow(workdir, {"file": "images.txt", "cache": "other-cache"}, check=False)
    finally:
        other_run.close()
    assert done.returncode != 0
    assert "the destination is being written by a save" in done.stderr
    assert not (workdir / "saved-images.tar.gz").exists()
    run_workflow(workdir, {"file": "images.txt", "cache": "other-cache"})
