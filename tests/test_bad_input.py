"""Bad input stops the run before any download, with one line naming the file and line or the key.
The list cases run in strict mode (``strict: true``): by default an invalid line is skipped with
a warning, as hangar does (tests/test_dropin.py).

Each case runs the real workflow in a working directory that already holds the outputs of an
earlier save (cache, archive, failed list) and checks: a non-zero exit, an error line naming
the file:line or the config key, and not one file created, changed or removed (no job ran, so
nothing was downloaded). The list names a registry on a port where nothing listens, so a run
that got past the checks could not download anything either. CRLF line ends and a UTF-8
byte-order mark are accepted by design: those lists are saved from a real registry.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate
from support.faultproxy import MountUnavailable, small_filesystem
from support.images import PushedImage
from support.registry import Registry
from workflow import REPO, entries_by_source, run_workflow

from hangar.imagelist import ImageListError, parse_image_list, read_image_list
from hangar.settings import ConfigError, Settings, schema_error_line

NOWHERE = "127.0.0.1:9"  # the discard port: nothing listens there
GOOD = f"{NOWHERE}/rancher/ok:1\n".encode()
OLD_TIME_NS = 1_600_000_000 * 10**9
SCHEMA = REPO / "schemas" / "config.schema.yaml"


# -- what an earlier save left, and a record of it ----------------------------------------------


def previous_outputs(workdir: Path) -> None:
    """Outputs of an earlier save: a small cache, an archive with its checksums, a failed list."""
    cache = workdir / "saved-image-cache"
    blob = b'{"layers": []}'
    blob_hex = hashlib.sha256(blob).hexdigest()
    folder = hashlib.sha256(b"127.0.0.1:9/rancher/ok:1-amd64").hexdigest()
    files = {
        f"share/sha256/{blob_hex}": blob,
        f"{folder}/index.json": json.dumps({"schemaVersion": 2, "manifests": []}).encode(),
        f"{folder}/oci-layout": b'{"imageLayoutVersion":"1.0.0"}',
        "saved-images-list.json": b'{"List": [], "Version": "v1.1.0"}\n',
        ".hangar/status/ok_1-000000000000.json": b'{"state": "ok"}\n',
    }
    for name, data in files.items():
        (cache / name).parent.mkdir(parents=True, exist_ok=True)
        (cache / name).write_bytes(data)
    (cache / folder / "blobs").mkdir()
    (workdir / "saved-images.tar.gz").write_bytes(os.urandom(2048))
    (workdir / "saved-images.tar.gz.sha256").write_text("0" * 64 + "  saved-images.tar.gz\n")
    (workdir / "save-failed.txt").write_text(f"{NOWHERE}/rancher/gone:1\n")
    for path in workdir.rglob("*"):
        os.utime(path, ns=(OLD_TIME_NS, OLD_TIME_NS), follow_symlinks=False)


def snapshot(workdir: Path) -> dict[str, tuple[str, int, str]]:
    """Every path below workdir (but Snakemake's .snakemake/ and the test's config): kind, mtime,
    content hash."""
    state = {}
    for path in sorted(workdir.rglob("*")):
        relative = path.relative_to(workdir)
        if relative.parts[0] in (".snakemake", "test-config.yaml") or path.is_mount():
            continue
        if path.is_dir():
            state[str(relative)] = ("dir", path.stat().st_mtime_ns, "")
        else:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            state[str(relative)] = ("file", path.stat().st_mtime_ns, digest)
    return state


def error_line(stderr: str, *fragments: str) -> str | None:
    """The first line of the output holding every fragment."""
    return next((line for line in stderr.splitlines() if all(f in line for f in fragments)), None)


# -- the cases ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """A list (bytes) and config keys that must be refused; `expect`: fragments of one line."""

    name: str
    expect: tuple[str, ...]
    image_list: bytes = GOOD
    config: dict[str, Any] = field(default_factory=dict)
    setup: str = ""  # extra preparation, by name (see run_case())
    by_schema: bool = False  # refused by the JSON schema, not by Settings

    def param(self) -> Any:
        return pytest.param(self, id=self.name)


LIST_CASES = [
    Case("empty list", ("images.txt", "names no image"), b""),
    Case("only comments", ("images.txt", "names no image"), b"# one\n// two\n\n   \n#x\n"),
    Case(
        "non-UTF-8 bytes",
        ("images.txt:2:", "not valid UTF-8"),
        GOOD + f"{NOWHERE}/rancher/caf".encode() + b"\xe9:1\n",
    ),
    Case(
        "100 KB line",
        ("images.txt:2:", "longer than"),
        GOOD + f"{NOWHERE}/rancher/".encode() + b"a" * 100_000 + b":1\n",
    ),
    Case(
        "space inside",
        ("images.txt:2:", "whitespace inside"),
        GOOD + f"{NOWHERE}/rancher/with space:1\n".encode(),
    ),
    Case("tab inside", ("images.txt:2:", "whitespace inside"), GOOD + b"rancher/with\ttab:1\n"),
    Case(
        "form feed inside",
        ("images.txt:2:", "whitespace inside"),
        GOOD + f"{NOWHERE}/rancher/a:1\f{NOWHERE}/rancher/b:1\n".encode(),
    ),
    Case(
        "upper-case repository",
        ("images.txt:2:", "lower-case"),
        GOOD + f"{NOWHERE}/Rancher/App:1\n".encode(),
    ),
    Case("too many colons", ("images.txt:2:", "too many ':'"), GOOD + b"rancher/app:1:2\n"),
    Case(
        "too many colons after a port",
        ("images.txt:2:", "too many ':'"),
        GOOD + f"{NOWHERE}/rancher/app:1:2\n".encode(),
    ),
    Case(
        "tag of 129 characters",
        ("images.txt:2:", "longer than 128"),
        GOOD + b"rancher/app:" + b"t" * 129 + b"\n",
    ),
    Case("non-ASCII tag", ("images.txt:2:", "invalid tag"), GOOD + "rancher/app:tâg\n".encode()),
    Case("leading ../", ("images.txt:2:", "'..'"), GOOD + b"../../etc/app:1\n"),
    Case(
        "../ after the registry",
        ("images.txt:2:", "'..'"),
        GOOD + f"{NOWHERE}/../../tmp/app:1\n".encode(),
    ),
    Case("../ inside", ("images.txt:2:", "'..'"), GOOD + b"rancher/../../app:1\n"),
    Case(
        "digest without a tag",
        ("images.txt:2:", "digest without a tag"),
        GOOD + f"{NOWHERE}/rancher/app@sha256:{'0' * 64}\n".encode(),
    ),
    Case(
        "one tag pinned to two digests",
        ("images.txt:2:", "already named by line 1"),
        GOOD + f"{NOWHERE}/rancher/ok:1@sha256:{'a' * 64}\n".encode(),
    ),
    Case(
        "line numbers survive separators",
        ("images.txt:3:", "lower-case"),
        GOOD + "# U+2028 \u2028 in a comment\nBAD/app:1\n".encode(),
    ),
    Case("missing list file", ("absent.txt", "cannot read"), config={"file": "absent.txt"}),
]

CONFIG_CASES = [
    Case("unknown key", ("bogus_key", "unknown key"), config={"bogus_key": 1}, by_schema=True),
    Case("misspelt key", ("compres", "unknown key"), config={"compres": "zstd"}, by_schema=True),
    Case(
        "retry_times not a number",
        ("retry_times", "is not of type 'integer'"),
        config={"retry_times": "three"},
        by_schema=True,
    ),
    Case(
        "arch not a list",
        ("arch", "is not of type"),
        config={"arch": 5},
        by_schema=True,
    ),
    Case(
        "tls_verify not a boolean",
        ("tls_verify", "is not of type 'boolean'"),
        config={"tls_verify": "yes"},
        by_schema=True,
    ),
    Case(
        "retry_delay negative",
        ("retry_delay", "less than the minimum"),
        config={"retry_delay": -1},
        by_schema=True,
    ),
    Case("part_size 2.5G", ("part_size", "2.5G"), config={"part": True, "part_size": "2.5G"}),
    Case("part_size -1", ("part_size", "-1"), config={"part": True, "part_size": -1}),
    Case("part_size 0", ("part_size", "0"), config={"part": True, "part_size": "0"}),
    Case("part_size 2.5G without part", ("part_size", "2.5G"), config={"part_size": "2.5G"}),
    Case(
        "part_size a float",
        ("part_size", "is not of type"),
        config={"part": True, "part_size": 2.5},
        by_schema=True,
    ),
    Case(
        "unknown compress",
        ("compress", "'bzip2' is not one of"),
        config={"compress": "bzip2"},
        by_schema=True,
    ),
    Case(
        "unknown verify",
        ("verify", "'crc' is not one of"),
        config={"verify": "crc"},
        by_schema=True,
    ),
    Case(
        "destination under a regular file",
        ("destination", "cannot write"),
        config={"destination": "a-file/out.tar.gz"},
        setup="a-file",
    ),
    Case(
        "destination on a read-only file system",
        ("destination", "cannot write"),
        config={"destination": "read-only/out.tar.gz"},
        setup="read-only mount",
    ),
    Case(
        "destination equal to the cache",
        ("destination", "overlaps the cache"),
        config={"compress": "dir", "destination": "saved-image-cache"},
    ),
    Case(
        "destination equal to the cache, spelt otherwise",
        ("destination", "overlaps the cache"),
        config={"compress": "dir", "destination": "./x/../saved-image-cache/"},
    ),
    Case(
        "destination inside the cache",
        ("destination", "overlaps the cache"),
        config={"destination": "saved-image-cache/out.tar.gz"},
    ),
    Case(
        "cache inside the destination",
        ("destination", "overlaps the cache"),
        config={"compress": "dir", "destination": "out", "cache": "out/cache"},
    ),
    Case(
        "cache under a regular file",
        ("cache", "cannot write"),
        config={"cache": "a-file/cache"},
        setup="a-file",
    ),
    Case(
        "failed list under a regular file",
        ("failed", "cannot write"),
        config={"failed": "a-file/failed.txt"},
        setup="a-file",
    ),
    Case("cert_dir missing", ("cert_dir", "not a directory"), config={"cert_dir": "no-certs"}),
    Case(
        "failed list is the image list",
        ("failed", "is the image list"),
        config={"failed": "images.txt"},
    ),
    Case(
        "destination is the image list",
        ("destination", "would overwrite the image list"),
        config={"destination": "images.txt"},
    ),
    Case(
        "a part of the archive is the image list",
        ("destination", "would overwrite the image list"),
        config={"file": "out.tar.gz.part0", "destination": "out.tar.gz", "part": True},
        setup="list as part0",
    ),
    Case(
        "failed list is the archive's checksum record",
        ("failed", "is part of the archive"),
        config={"failed": "saved-images.tar.gz.sha256"},
    ),
    Case("file missing", ("file", "required"), config={"file": None}, by_schema=True),
]


def config_of(case: Case) -> dict[str, Any]:
    config = {"file": "images.txt", "strict": True, **case.config}
    return {key: value for key, value in config.items() if value is not None}


@dataclass
class Outcome:
    """What a refused run did: its exit status, its output, the directory before and after."""

    returncode: int = 0
    stderr: str = ""
    before: dict[str, tuple[str, int, str]] = field(default_factory=dict)
    after: dict[str, tuple[str, int, str]] = field(default_factory=dict)
    skipped: str = ""


def run_case(case: Case, workdir: Path) -> Outcome:
    """Prepare the working directory as `case.setup` asks, run the workflow, record it all."""
    workdir.mkdir(parents=True)
    previous_outputs(workdir)
    (workdir / "images.txt").write_bytes(case.image_list)
    if case.setup == "a-file":
        (workdir / "a-file").write_text("not a directory\n")
    if case.setup == "list as part0":
        (workdir / "out.tar.gz.part0").write_bytes(case.image_list)
    with ExitStack() as stack:
        if case.setup == "read-only mount":
            try:
                stack.enter_context(small_filesystem(workdir / "read-only", "1m", read_only=True))
            except MountUnavailable as reason:
                return Outcome(skipped=f"no read-only file system to test with: {reason}")
        before = snapshot(workdir)
        done = run_workflow(workdir, config_of(case), check=False)
        return Outcome(done.returncode, done.stderr, before, snapshot(workdir))


ALL_CASES = LIST_CASES + CONFIG_CASES


@pytest.fixture(scope="module")
def refused_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """Every case run once, a few at a time: each run is mostly Snakemake starting up."""
    base = tmp_path_factory.mktemp("bad-input")
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {
            case.name: pool.submit(run_case, case, base / f"case-{number}")
            for number, case in enumerate(ALL_CASES)
        }
        return {name: future.result() for name, future in futures.items()}


@pytest.mark.slow
@pytest.mark.parametrize("case", [c.param() for c in ALL_CASES])
def test_bad_input_is_refused_before_anything_is_touched(
    case: Case, refused_runs: dict[str, Outcome]
) -> None:
    outcome = refused_runs[case.name]
    if outcome.skipped:
        pytest.skip(outcome.skipped)
    assert outcome.returncode != 0, f"accepted: {case.name}\n{outcome.stderr[-2000:]}"
    line = error_line(outcome.stderr, *case.expect)
    assert line is not None, f"no line with {case.expect} in:\n{outcome.stderr[-3000:]}"
    assert len(line) < 400, f"error line too long: {line[:200]}…"
    assert outcome.after == outcome.before, "the refused run created, changed or removed files"


# -- the same checks without Snakemake (fast) ---------------------------------------------------


def schema_defaults() -> dict[str, Any]:
    schema = yaml.safe_load(SCHEMA.read_text())
    return {k: v["default"] for k, v in schema["properties"].items() if "default" in v}


@pytest.mark.parametrize("case", [c.param() for c in LIST_CASES if "file" not in c.config])
def test_the_list_parser_names_file_and_line(case: Case, tmp_path: Path) -> None:
    path = tmp_path / "images.txt"
    path.write_bytes(case.image_list)
    with pytest.raises(ImageListError) as raised:
        read_image_list(path, strict=True)
    assert error_line(str(raised.value).replace(str(tmp_path) + "/", ""), *case.expect)


@pytest.mark.parametrize("case", [c.param() for c in CONFIG_CASES if c.by_schema])
def test_schema_errors_fit_one_line_naming_the_key(case: Case) -> None:
    """What the workflow shows instead of snakemake's dump of the whole schema."""
    with pytest.raises(WorkflowError) as raised:
        validate(config_of(case), str(SCHEMA), set_default=True)
    line = schema_error_line(raised.value)
    assert "\n" not in line
    assert all(fragment in line for fragment in case.expect), line
    assert line.startswith(f"{case.expect[0]}: "), line


@pytest.mark.parametrize(
    "case",
    [c.param() for c in CONFIG_CASES if not c.by_schema and c.setup != "read-only mount"],
)
def test_settings_refuse_bad_values_naming_the_key(case: Case, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory\n")
    config = {**schema_defaults(), **config_of(case)}
    with pytest.raises(ConfigError) as raised:
        Settings.from_config(config, workdir=tmp_path)
    message = str(raised.value)
    assert message.startswith(case.expect[0]), message
    assert all(fragment in message for fragment in case.expect), message
    assert "\n" not in message


def test_a_malformed_line_is_not_cut_in_two_at_a_form_feed() -> None:
    with pytest.raises(ImageListError, match=r"l\.txt:1: whitespace inside"):
        parse_image_list("reg.io/a:1\freg.io/b:1\n", "l.txt", strict=True)
    assert [str(e.ref) for e in parse_image_list("\ufeffreg.io/a:1\r\n\r\n", "l.txt")] == [
        "reg.io/a:1"
    ]


# -- CRLF line ends and a byte-order mark are accepted ------------------------------------------


@pytest.mark.slow
def test_crlf_and_bom_lists_are_saved_and_failed_lines_come_out_clean(
    workdir: Path, registry: Registry, sample_images: dict[str, PushedImage]
) -> None:
    missing = f"{registry.host}/rancher/not-there:1"
    alpine = sample_images["library/alpine:3.18"].ref
    nginx = sample_images["library/nginx:1.25"].ref
    text = f"\ufeff{missing}\r\n# a comment\r\n\r\n{alpine}\r\n  {nginx}\t\r\n"
    (workdir / "images.txt").write_bytes(text.encode("utf-8"))
    run_workflow(workdir, {"file": "images.txt"})
    assert list(entries_by_source(workdir / "saved-image-cache")) == [alpine, nginx]
    assert (workdir / "save-failed.txt").read_bytes() == f"{missing}\n".encode()
