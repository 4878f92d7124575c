"""Credentials never leak, TLS is verified unless switched off, and nothing escapes the workdir.

Against local registries on 127.0.0.1: one with htpasswd authentication (hangar /
s3cret-Pa55), one with a self-signed TLS certificate, and one with both.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import re
import signal
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import AUTH_CREDENTIALS
from support.faultproxy import FaultProxy, fail
from support.images import LINUX_AMD64, LINUX_ARM64_V8, PushedImage, push_image
from support.registry import Registry
from workflow import entries_by_source, run_workflow, snakemake_command, write_list

from hangar.save.archive import ArchiveError, select
from hangar.save.cachecheck import invalidate_stale
from hangar.skopeo import InfrastructureError, credentials_file
from hangar.status import ImageStatus, SavedPlatform, write_atomic

USER, PASSWORD = AUTH_CREDENTIALS
AUTH_FAILURE = ("unauthorized", "authentication required", "invalid username/password")


def secret_forms(user: str, password: str) -> list[bytes]:
    """The password as it could leak: plain, and base64 as auth files and headers hold it."""
    forms = [password.encode(), base64.b64encode(f"{user}:{password}".encode())]
    forms.append(base64.b64encode(password.encode()))
    for offset in (1, 2):  # the password inside a longer base64 text, at each alignment
        encoded = base64.b64encode(b"x" * offset + password.encode())
        forms.append(encoded[4:-4])
    return forms


def leaks_in(data: bytes, forms: list[bytes]) -> list[bytes]:
    return [form for form in forms if form in data]


def leaks_in_tree(root: Path, forms: list[bytes]) -> dict[str, list[bytes]]:
    """Every file below root (names and contents) holding one of the forms."""
    found: dict[str, list[bytes]] = {}
    for path in root.rglob("*"):
        hits = leaks_in(str(path.relative_to(root)).encode(), forms)
        if path.is_file() and not path.is_symlink():
            hits += leaks_in(path.read_bytes(), forms)
        if hits:
            found[str(path.relative_to(root))] = hits
    return found


def leaks_in_archive(path: Path, forms: list[bytes]) -> dict[str, list[bytes]]:
    """The decompressed stream, and each member's name and content."""
    stream = gzip.decompress(path.read_bytes())
    found = {"(decompressed stream)": leaks_in(stream, forms)}
    with tarfile.open(fileobj=io.BytesIO(stream)) as tar:
        for member in tar:
            hits = leaks_in(member.name.encode(), forms)
            if member.isfile():
                content = tar.extractfile(member)
                assert content is not None
                hits += leaks_in(content.read(), forms)
            found[member.name] = hits
    return {name: hits for name, hits in found.items() if hits}


def status_by_repo(cache: Path, repo: str) -> dict[str, Any]:
    prefix = repo.replace("/", "_") + "_"
    (path,) = [
        p for p in (cache / ".hangar" / "status").glob("*.json") if p.name.startswith(prefix)
    ]
    data: dict[str, Any] = json.loads(path.read_text())
    return data


# -- credentials --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def private_image(auth_registry: Registry) -> PushedImage:
    return push_image(
        auth_registry.host,
        "private/app",
        "1",
        [LINUX_AMD64, LINUX_ARM64_V8],
        kind="oci-index",
        base_seed="private",
        creds=auth_registry.creds,
    )


@pytest.fixture(params=["environment", "auth file"])
def credentials(
    request: pytest.FixtureRequest, tmp_path: Path, auth_registry: Registry
) -> dict[str, str]:
    """How the run gets the credentials: SOURCE_USERNAME/PASSWORD, or REGISTRY_AUTH_FILE."""
    if request.param == "environment":
        return {"SOURCE_USERNAME": USER, "SOURCE_PASSWORD": PASSWORD}
    auth_file = tmp_path / "auth.json"
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    auth_file.write_text(json.dumps({"auths": {auth_registry.host: {"auth": token}}}))
    auth_file.chmod(0o600)
    return {"REGISTRY_AUTH_FILE": str(auth_file)}


@pytest.mark.slow
def test_credentials_appear_nowhere_after_a_run(
    workdir: Path,
    tmp_path: Path,
    auth_registry: Registry,
    private_image: PushedImage,
    credentials: dict[str, str],
) -> None:
    missing = f"{auth_registry.host}/private/not-there:1"
    write_list(workdir, [private_image.ref, missing])
    private_tmp = tmp_path / "tmpdir"
    private_tmp.mkdir()
    env = {**credentials, "TMPDIR": str(private_tmp)}
    done = run_workflow(workdir, {"file": "images.txt"}, "--printshellcmds", "--verbose", env=env)
    cache = workdir / "saved-image-cache"
    assert list(entries_by_source(cache)) == [private_image.ref]  # the credentials worked
    assert (workdir / "save-failed.txt").read_text() == f"{missing}\n"
    assert "manifest unknown" in status_by_repo(cache, "private/not-there")["reason"]

    forms = secret_forms(USER, PASSWORD)
    assert leaks_in((done.stdout + done.stderr).encode(), forms) == []
    assert leaks_in_tree(workdir, forms) == {}
    assert leaks_in_archive(workdir / "saved-images.tar.gz", forms) == {}
    assert leaks_in_tree(private_tmp, forms) == {}, "credentials left in a temporary file"
    assert (workdir / ".snakemake").is_dir()  # searched above, with the logs and metadata


@pytest.mark.slow
def test_a_wrong_password_is_an_auth_failure_recorded_for_each_image(
    workdir: Path, auth_registry: Registry, private_image: PushedImage
) -> None:
    other = push_image(
        auth_registry.host,
        "private/other",
        "2",
        [LINUX_AMD64],
        kind="docker-single",
        base_seed="other",
        creds=auth_registry.creds,
    )
    write_list(workdir, [private_image.ref, other.ref])
    wrong = "not-the-Pa55word"
    # The preflight would refuse the password before any image (test_terminal_output.py); without
    # it, each image job meets the refusal, and records it without retrying.
    done = run_workflow(
        workdir,
        {"file": "images.txt", "retry_times": 3, "preflight": False},
        check=False,
        env={"SOURCE_USERNAME": USER, "SOURCE_PASSWORD": wrong},
    )
    cache = workdir / "saved-image-cache"
    assert (workdir / "save-failed.txt").read_text() == "".join(
        sorted(f"{ref}\n" for ref in (private_image.ref, other.ref))
    )
    for repo in ("private/app", "private/other"):
        status = status_by_repo(cache, repo)
        assert status["state"] == "failed"
        assert any(word in status["reason"].lower() for word in AUTH_FAILURE), status["reason"]
        assert status["retries"] == 0, "an authentication failure is not worth retrying"
    assert done.returncode != 0 and "nothing was saved" in done.stderr  # as hangar: exit 1
    assert not (workdir / "saved-images.tar.gz").exists()
    assert leaks_in_tree(workdir, secret_forms(USER, wrong)) == {}
    assert leaks_in((done.stdout + done.stderr).encode(), secret_forms(USER, wrong)) == []


# -- TLS ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_image(tls_registry: Registry) -> PushedImage:
    return push_image(
        tls_registry.host,
        "secure/app",
        "1",
        [LINUX_AMD64],
        kind="oci-index",
        base_seed="secure",
        tls_verify=True,
        cert_dir=tls_registry.cert_dir,
    )


def other_ca_dir(directory: Path) -> Path:
    """A cert dir trusting some other self-signed CA (valid for 127.0.0.1 as well)."""
    directory.mkdir()
    subprocess.run(
        ["openssl", "req", "-x509", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"]
        + ["-addext", "subjectAltName=IP:127.0.0.1", "-newkey", "ec"]
        + ["-pkeyopt", "ec_paramgen_curve:prime256v1", "-keyout", str(directory / "other.key")]
        + ["-out", str(directory / "ca.crt")],
        check=True,
        capture_output=True,
    )
    (directory / "other.key").unlink()  # a *.key in a cert dir would mean a client certificate
    return directory


TLS_CASES = {
    "verification off": ({"tls_verify": False}, True),
    "its CA in cert_dir": ({"tls_verify": True, "cert_dir": "CA"}, True),
    "no CA for it": ({"tls_verify": True}, False),
    "another CA in cert_dir": ({"tls_verify": True, "cert_dir": "OTHER"}, False),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", TLS_CASES.values(), ids=TLS_CASES.keys())
def test_tls_certificates_are_verified_unless_switched_off(
    workdir: Path,
    tls_registry: Registry,
    tls_image: PushedImage,
    case: tuple[dict[str, Any], bool],
) -> None:
    options, accepted = case
    assert tls_registry.cert_dir is not None
    cert_dirs = {"CA": str(tls_registry.cert_dir), "OTHER": str(other_ca_dir(workdir / "other"))}
    if "cert_dir" in options:
        options = {**options, "cert_dir": cert_dirs[options["cert_dir"]]}
    write_list(workdir, [tls_image.ref])
    config = {"file": "images.txt", **options}
    done = run_workflow(workdir, config, check=False)
    cache = workdir / "saved-image-cache"
    if accepted:  # the preflight's probe trusts what skopeo trusts (cert_dir included)
        assert done.returncode == 0, done.stderr[-3000:]
        assert list(entries_by_source(cache)) == [tls_image.ref]
        assert not (workdir / "save-failed.txt").exists()
        return
    # The preflight stops the run before any copy, naming the certificate and the way out.
    assert done.returncode != 0
    assert "preflight: TLS certificate of registry" in done.stderr
    assert "--cert-dir" in done.stderr and not (cache / "share").exists()
    # Without it, the image itself fails on the certificate, without retries.
    done = run_workflow(workdir, {**config, "preflight": False}, check=False)
    assert (workdir / "save-failed.txt").read_text() == f"{tls_image.ref}\n"
    status = status_by_repo(cache, "secure/app")
    assert "x509" in status["reason"] or "certificate" in status["reason"], status["reason"]
    assert status["retries"] == 0, "a certificate that is refused once is refused again"
    assert done.returncode != 0 and "nothing was saved" in done.stderr


@pytest.mark.slow
def test_verifying_tls_against_a_plain_http_registry_fails_at_once(
    workdir: Path, registry: Registry
) -> None:
    image = push_image(
        registry.host, "plain/app", "1", [LINUX_AMD64], kind="oci-index", base_seed="plain"
    )
    write_list(workdir, [image.ref])
    done = run_workflow(workdir, {"file": "images.txt", "tls_verify": True}, check=False)
    assert done.returncode != 0 and "speaks plain HTTP: use --tls-verify=false" in done.stderr
    # Without the preflight, the image fails at once, without retries.
    config = {"file": "images.txt", "tls_verify": True, "preflight": False}
    run_workflow(workdir, config, check=False)
    status = status_by_repo(workdir / "saved-image-cache", "plain/app")
    assert status["state"] == "failed"
    assert "HTTP response to HTTPS client" in status["reason"], status["reason"]
    assert status["retries"] == 0


@pytest.mark.slow
def test_auth_and_tls_together(workdir: Path, registry_factory: Any) -> None:
    secured = registry_factory(htpasswd=AUTH_CREDENTIALS, tls=True)
    image = push_image(
        secured.host,
        "both/app",
        "1",
        [LINUX_AMD64],
        kind="docker-single",
        base_seed="both",
        creds=secured.creds,
        tls_verify=True,
        cert_dir=secured.cert_dir,
    )
    write_list(workdir, [image.ref])
    config = {"file": "images.txt", "tls_verify": True, "cert_dir": str(secured.cert_dir)}
    run_workflow(workdir, config, env={"SOURCE_USERNAME": USER, "SOURCE_PASSWORD": PASSWORD})
    assert list(entries_by_source(workdir / "saved-image-cache")) == [image.ref]
    assert leaks_in_tree(workdir, secret_forms(USER, PASSWORD)) == {}


# -- nothing is written outside the working directory -------------------------------------------


@pytest.fixture(scope="module")
def odd_names(registry: Registry) -> list[PushedImage]:
    """Valid names that look like paths or tricks: dots, underscores, dashes, long ones."""
    specs = [
        ("odd/a__b--c.d", "v1..2_-x"),
        ("odd/x/y/z/deep", "_"),
        ("odd/" + "n" * 100, "t" * 128),
        ("library/dots.and.dots", "1.0..rc"),
    ]
    return [
        # Docker kinds are pushed from a dir: layout, which puts no rules of its own on tags.
        push_image(registry.host, repo, tag, [LINUX_AMD64], kind="docker-single", base_seed="odd")
        for repo, tag in specs
    ]


def all_paths(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.slow
def test_odd_names_stay_inside_the_workdir_and_the_archive_holds_only_relative_paths(
    tmp_path: Path, odd_names: list[PushedImage]
) -> None:
    sandbox = tmp_path / "sandbox"
    workdir = sandbox / "work"
    workdir.mkdir(parents=True)
    (sandbox / "bystander.txt").write_text("not to be touched\n")
    outside_before = all_paths(sandbox) - {"work"}
    write_list(workdir, [image.ref for image in odd_names])
    run_workflow(workdir, {"file": "images.txt"})

    cache = workdir / "saved-image-cache"
    assert sorted(entries_by_source(cache)) == sorted(image.ref for image in odd_names)
    assert {p for p in all_paths(sandbox) if not p.startswith("work")} == outside_before
    logs = [p.name for p in (workdir / "logs" / "save").iterdir()]
    assert len(logs) == len(odd_names)
    assert all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,78}\.log", name) for name in logs), logs

    with tarfile.open(workdir / "saved-images.tar.gz") as tar:
        members = tar.getmembers()
    assert members
    for member in members:
        name = member.name
        assert name == "saved-image-cache" or name.startswith("saved-image-cache/"), name
        assert not name.startswith("/") and ".." not in name.split("/"), name
        assert member.isfile() or member.isdir(), f"{name}: links and devices are never archived"
        assert member.mode & 0o7000 == 0, f"{name}: setuid, setgid or sticky bit"
        assert (member.uid, member.gid) == (0, 0), name


def test_a_tampered_index_cannot_make_the_blob_check_delete_outside_the_cache(
    tmp_path: Path,
) -> None:
    cache = tmp_path / "cache"
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    folder = "f" * 64
    (cache / folder).mkdir(parents=True)
    (cache / "share" / "sha256").mkdir(parents=True)
    hostile = {"mediaType": "x", "digest": "sha256:../../../victim.txt", "size": 1}
    (cache / folder / "index.json").write_text(json.dumps({"manifests": [hostile]}))
    saved = SavedPlatform("sha256:" + "0" * 64, "amd64", "linux", folder)
    status = ImageStatus("r/a:1", "r/a", "1", "ok", saved=[saved])
    write_atomic(cache / ".hangar" / "status" / "a.json", status.to_json())

    for depth in ("size", "digest"):
        result = invalidate_stale(cache, ["a"], depth)
        assert victim.read_text() == "precious\n"
        assert result.removed_blobs == []
        write_atomic(cache / ".hangar" / "status" / "a.json", status.to_json())
    assert invalidate_stale(cache, ["a"]).retried == ["a"]  # untrusted: saved again


@pytest.mark.parametrize(
    "tamper",
    [
        {"Folder": "../../../etc"},
        {"Folder": "/etc"},
        {"Folder": "f" * 64, "index_digest": "sha256:../../../victim.txt"},
    ],
    ids=["folder with ..", "absolute folder", "digest with .."],
)
def test_the_archive_refuses_a_tampered_list_instead_of_reading_outside(
    tmp_path: Path, tamper: dict[str, str]
) -> None:
    cache = tmp_path / "cache"
    (cache / "share" / "sha256").mkdir(parents=True)
    (tmp_path / "victim.txt").write_text("{}")
    folder = tamper["Folder"]
    if "index_digest" in tamper:
        descriptor = {"digest": tamper["index_digest"], "size": 2}
        (cache / folder).mkdir()
        (cache / folder / "index.json").write_text(json.dumps({"manifests": [descriptor]}))
        (cache / folder / "oci-layout").write_text("{}")
    image = {"Digest": "sha256:" + "0" * 64, "Arch": "amd64", "OS": "linux", "Folder": folder}
    listed = {"List": [{"Source": "r/a", "Tag": "1", "Images": [image]}], "Version": "v1.1.0"}
    listed["SavedTime"] = "2024-01-01T00:00:00Z"
    (cache / "saved-images-list.json").write_text(json.dumps(listed))
    with pytest.raises(ArchiveError):
        select(cache)


def test_the_credentials_file_lives_in_memory_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    env = {"SOURCE_USERNAME": USER, "SOURCE_PASSWORD": PASSWORD}
    with credentials_file("127.0.0.1:5000", env) as path:
        assert Path(path).stat().st_mode & 0o077 == 0
        token = json.loads(Path(path).read_text())["auths"]["127.0.0.1:5000"]["auth"]
        assert base64.b64decode(token).decode() == f"{USER}:{PASSWORD}"
        if hasattr(os, "memfd_create"):
            assert path.startswith("/dev/fd/")
            assert list(tmp_path.iterdir()) == [], "credentials written to disk"
    if path.startswith("/dev/fd/"):
        with pytest.raises(OSError):
            os.fstat(int(path.removeprefix("/dev/fd/")))
    else:
        assert not Path(path).exists()


@pytest.mark.parametrize(
    "content",
    [
        b'{"auths": {"r": {"auth": "' + base64.b64encode(f"{USER}:{PASSWORD}".encode()) + b'"}',
        b'{"auths": "' + PASSWORD.encode() + b'"}',
        PASSWORD.encode() + b"\xff",
    ],
    ids=["cut short", "auths not a mapping", "not JSON at all"],
)
def test_a_broken_auth_file_is_named_and_never_quoted(tmp_path: Path, content: bytes) -> None:
    auth_file = tmp_path / "auth.json"
    auth_file.write_bytes(content)
    env = {
        "SOURCE_USERNAME": USER,
        "SOURCE_PASSWORD": "other",
        "REGISTRY_AUTH_FILE": str(auth_file),
    }
    with pytest.raises(InfrastructureError) as raised, credentials_file("r", env):
        pass
    message = str(raised.value)
    assert message.startswith(f"REGISTRY_AUTH_FILE {auth_file}: ")
    assert "\n" not in message
    assert leaks_in(message.encode(), secret_forms(USER, PASSWORD)) == []


@pytest.mark.slow
def test_credentials_are_not_left_on_disk_by_a_killed_run(
    workdir: Path, tmp_path: Path, auth_registry: Registry, private_image: PushedImage
) -> None:
    """A job killed while it holds the credentials (here: waiting to retry) leaves none behind."""
    private_tmp = tmp_path / "tmpdir"
    private_tmp.mkdir()
    with FaultProxy(auth_registry.host) as proxy:
        proxy.inject(fail(503))
        write_list(workdir, [f"{proxy.host}/{private_image.repo}:{private_image.tag}"])
        config = {"file": "images.txt", "retry_times": 10, "retry_delay": 2}
        env = {"SOURCE_USERNAME": USER, "SOURCE_PASSWORD": PASSWORD, "TMPDIR": str(private_tmp)}
        process = subprocess.Popen(
            snakemake_command(workdir, config),
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and "retry 1/" not in job_logs(workdir):
                assert process.poll() is None, "the run ended before it could be killed"
                time.sleep(0.05)
            assert "retry 1/" in job_logs(workdir)
        finally:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(60)
    forms = secret_forms(USER, PASSWORD)
    assert leaks_in_tree(private_tmp, forms) == {}
    assert leaks_in_tree(workdir, forms) == {}


def job_logs(workdir: Path) -> str:
    return "".join(p.read_text() for p in workdir.glob("logs/save/*.log"))
