"""Fast checks of the reliability guards: durations, Retry-After, the rate gate, destinations,
skopeo's environment, cleanup that stays inside the cache, folder claims, archive checks."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from test_savedlist import BASE_CONFIG

from hangar.cli.progress import summary_lines
from hangar.ratelimit import LOGIN_HINT, RateGate, retry_after_seconds
from hangar.safedelete import UnsafeCacheError, check_own_dirs
from hangar.save.cachecheck import remove_leftovers
from hangar.save.claims import Claim, claim_all, release_stale
from hangar.save.watch import Tally
from hangar.settings import ConfigError, Settings
from hangar.skopeo import ImageError, Skopeo
from hangar.status import ImageStatus
from hangar.units import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10m", 600), ("90s", 90), ("1h30m", 5400), ("500ms", 0.5), ("1.5s", 1.5), (30, 30)],
)
def test_durations_read_as_go_writes_them(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10", "10x", "-1s", "0s", "m", True])
def test_bad_durations_are_refused(text: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)  # type: ignore[arg-type]


def test_durations_are_said_shortly() -> None:
    assert [format_duration(s) for s in (600, 1, 5400, 0.5, 90)] == [
        "10m",
        "1s",
        "1h30m",
        "0.5s",
        "1m30s",
    ]


def test_retry_after_is_read_from_skopeo_debug_lines() -> None:
    header = 'time="t" level=debug msg="Detected \'Retry-After\' header \\"7200\\""'
    assert retry_after_seconds(header) == 7200
    date = 'level=debug msg="Detected \'Retry-After\' header \\"Thu, 01 Jan 2026 00:01:00 GMT\\""'
    assert retry_after_seconds(date, now=1767225600.0) == 60  # 2026-01-01T00:00:00Z
    guess = 'level=debug msg="Too many requests to http://r/v2/x: sleeping for 2.000000 seconds'
    assert retry_after_seconds(guess) == 2
    assert retry_after_seconds('level=debug msg="GET http://r/v2/"') is None


def test_the_rate_gate_pauses_every_job_to_that_registry_only(tmp_path: Path) -> None:
    gate, other_process = RateGate(tmp_path), RateGate(tmp_path)
    gate.block("docker.io", 3600)
    said: list[str] = []
    assert other_process.wait("docker.io", 60, said.append) > 3500  # longer than allowed: said
    assert other_process.wait("quay.io", 60, said.append) == 0
    gate.block("quay.io", 0.3)
    started = time.monotonic()
    assert other_process.wait("quay.io", 60, said.append) == 0
    assert time.monotonic() - started >= 0.25
    assert said == ["waiting 0s: quay.io is rate limiting (429)"]


def test_a_paused_registry_fails_the_image_with_the_wait_and_no_request(tmp_path: Path) -> None:
    gate = RateGate(tmp_path)
    gate.block("registry.example", 7200)
    skopeo = Skopeo(executable="/nonexistent", gate=gate, timeout=60, log=lambda _: None)
    with pytest.raises(
        ImageError, match=r"^rate limited by registry.example \(429\), retry after 7\d{3} s$"
    ):
        skopeo.inspect_raw("registry.example/x:1")


def test_the_summary_suggests_logging_in_after_a_rate_limit() -> None:
    failed = ImageStatus(
        "docker.io/x:1",
        "docker.io/x",
        "1",
        "failed",
        "rate limited by docker.io (429), retry after 3600 s",
    )
    lines = summary_lines(Tally(total=1, failed=1), {"x": failed}, 1.0, "save-failed.txt")
    assert f"rate limits: {LOGIN_HINT}" in lines


@pytest.mark.parametrize(
    "destination", ["/", "/tmp/x/", "~", "~/archive.tar.gz", "out/.", "out/x/.."]
)
def test_a_destination_that_names_a_directory_is_refused(tmp_path: Path, destination: str) -> None:
    with pytest.raises(ConfigError, match="^destination: .* names a directory"):
        Settings.from_config({**BASE_CONFIG, "destination": destination}, tmp_path)


def test_timeout_is_checked_and_named(tmp_path: Path) -> None:
    assert Settings.from_config(BASE_CONFIG, tmp_path).timeout == 600
    with pytest.raises(ConfigError, match="^timeout: invalid duration"):
        Settings.from_config({**BASE_CONFIG, "timeout": "soon"}, tmp_path)


def test_skopeo_never_sees_the_password_in_its_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = tmp_path / "env"
    fake = tmp_path / "skopeo"
    fake.write_text(f"#!/bin/sh\nenv > {seen}\necho '{{}}'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("SOURCE_USERNAME", "user")
    monkeypatch.setenv("SOURCE_PASSWORD", "s3cret-in-env")
    Skopeo(executable=str(fake), log=lambda _: None).inspect_raw("r.io/x:1")
    text = seen.read_text()
    assert "s3cret-in-env" not in text and "SOURCE_USERNAME" not in text
    assert "PATH=" in text


def test_cleanup_deletes_only_its_own_names_and_never_through_a_link(tmp_path: Path) -> None:
    cache, outside = tmp_path / "cache", tmp_path / "outside"
    (cache / ".hangar" / "tmp").mkdir(parents=True)
    outside.mkdir()
    (outside / "keep").write_text("x")
    staging = cache / ".hangar" / "tmp" / f"{'a' * 64}.k2j_x9"
    (staging / "layout").mkdir(parents=True)
    (staging / "layout" / "link").symlink_to(outside)  # inside a staging dir: removed as a link
    stranger = cache / ".hangar" / "tmp" / "notes.txt"
    stranger.write_text("not ours")
    (cache / ".hangar" / "expected").mkdir()
    unfinished = cache / ".hangar" / "expected" / f".{'b' * 64}.json.x1y2.tmp"
    unfinished.write_text("{")
    (cache / ".hangar" / "expected" / f"{'b' * 64}.json").write_text("{}")
    assert remove_leftovers(cache) == [staging.name, unfinished.name]
    assert (cache / ".hangar" / "expected" / f"{'b' * 64}.json").exists()
    assert stranger.exists() and (outside / "keep").exists()
    os.rename(cache / ".hangar" / "tmp", cache / ".hangar" / "tmp-real")
    (cache / ".hangar" / "tmp").symlink_to(outside)
    with pytest.raises(UnsafeCacheError, match="tmp is a symbolic link"):
        check_own_dirs(cache)
    assert remove_leftovers(cache) == [] and (outside / "keep").exists()


def test_folder_claims_one_owner_all_or_nothing(tmp_path: Path) -> None:
    a, b = Claim("a", "r/coll:1", (1,)), Claim("b", "r/coll:1-windows", (2,))
    assert claim_all(tmp_path, ["f1", "f2"], a) is None
    assert claim_all(tmp_path, ["f1", "f2"], a) is None  # its own claims again: fine
    assert claim_all(tmp_path, ["f3", "f2"], b) == ("f2", a)
    assert sorted(p.name for p in (tmp_path / ".hangar" / "claims").iterdir()) == ["f1", "f2"]
    assert json.loads((tmp_path / ".hangar" / "claims" / "f1").read_text())["lines"] == [1]
    release_stale(tmp_path, keep={"b"})
    assert claim_all(tmp_path, ["f3", "f2"], b) is None
