"""Run skopeo: inspect and copy, with retries for transient errors and no leaked credentials.

Errors are sorted into three kinds, because they decide what the workflow does:
- ``ImageError``: this image cannot be saved (not found, denied, bad certificate, or still
  failing after the retries). The image goes to the failed list and the run goes on.
- ``InfrastructureError``: the machine is at fault (no skopeo, disk full, unwritable cache).
  The job fails, so the run stops instead of marking every image as failed.
- transient errors (connection reset, 5xx, a registry that does not answer within the
  timeout) are retried with backoff; a rate limit (429) after the wait the registry asks for,
  which pauses every job to that registry (``hangar.ratelimit``).

Every skopeo call is bounded by the timeout, dies with the process that started it (parent
death signal), and never sees SOURCE_USERNAME/SOURCE_PASSWORD: it gets the auth file.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import selectors
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Protocol

from hangar.ratelimit import RateGate, rate_limited_reason, retry_after_seconds
from hangar.units import format_duration

_INFRASTRUCTURE_MARKERS = (
    "no space left on device",
    "disk quota exceeded",
    "read-only file system",
    "file too large",
    "permission denied",
)
_PERMANENT_MARKERS = (
    "manifest unknown",
    "name unknown",
    "not found",
    "unauthorized",
    "authentication required",
    "denied",
    "invalid username/password",
    "x509:",
    "certificate",
    # TLS verification on, but the registry speaks plain HTTP: a config error, not a hiccup.
    "server gave http response to https client",
    "first record does not look like a tls handshake",
    "invalid reference",
    "unsupported",
)


_FD_PATH = re.compile(r"/dev/fd/([0-9]+)")


class ImageError(Exception):
    """The image cannot be saved; the message is the reason recorded for it."""


class InfrastructureError(Exception):
    """The local machine cannot do the work; the run must stop."""


def classify(stderr: str) -> str:
    """``infrastructure``, ``permanent`` or ``transient``, from skopeo's error text."""
    text = stderr.lower()
    if "denied:" in text or "unauthorized" in text:  # the registry's answer, not the disk's
        return "permanent"
    if any(marker in text for marker in _INFRASTRUCTURE_MARKERS):
        return "infrastructure"
    if any(marker in text for marker in _PERMANENT_MARKERS):
        return "permanent"
    return "transient"


def last_error_line(stderr: str) -> str:
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    line = lines[-1] if lines else "skopeo failed without a message"
    # skopeo logs as `time="…" level=fatal msg="…"`: keep the message.
    if ' msg="' in line:
        line = line.split(' msg="', 1)[1].rstrip('"').replace('\\"', '"')
    return line


# What skopeo's children never need: they get credentials through the auth file only.
_CREDENTIAL_VARIABLES = ("SOURCE_USERNAME", "SOURCE_PASSWORD", "DEST_USERNAME", "DEST_PASSWORD")
# Every skopeo this process runs, so that a SIGTERM can stop them all (see stop_all).
_running: set[subprocess.Popen[bytes]] = set()
_stopping = threading.Event()
_PDEATHSIG = ["setpriv", "--pdeathsig", "KILL"] if shutil.which("setpriv") else []
KILL_GRACE_S = 5.0  # after the timeout, skopeo's own --command-timeout has this long to end


def stop_all() -> None:
    """Stop every running skopeo of this process, and let no new one start: for a SIGTERM
    handler (safe there: takes no lock). The jobs then fail as stopped, resumable by a rerun."""
    _stopping.set()
    for process in list(_running):
        with contextlib.suppress(OSError):
            process.kill()


def stop_on_sigterm() -> None:
    """Make SIGTERM call ``stop_all`` before the handler already installed (Snakemake's)."""
    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum: int, frame: FrameType | None) -> None:
        stop_all()
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def stopping() -> bool:
    return _stopping.is_set()


def child_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in _CREDENTIAL_VARIABLES}


@dataclass
class _Outcome:
    returncode: int
    stdout: bytes
    stderr: str  # skopeo's messages without its debug lines
    timed_out: bool
    rate_limit: float | None  # seconds the registry asked to wait, when it answered 429
    retry_after_given: bool  # the registry sent Retry-After (else rate_limit is skopeo's guess)


class RegistryOptions(Protocol):
    """How to reach registries: what Settings and the image jobs' options both hold."""

    @property
    def tls_verify(self) -> bool: ...
    @property
    def cert_dir(self) -> str: ...
    @property
    def retry_times(self) -> int: ...
    @property
    def retry_delay(self) -> float: ...
    @property
    def timeout(self) -> float: ...


@dataclass
class Skopeo:
    """Options shared by every skopeo call of one image job."""

    tls_verify: bool = True
    cert_dir: str = ""
    authfile: str = ""
    retry_times: int = 3
    retry_delay: float = 1.0
    timeout: float = 600.0  # seconds one skopeo call may take, retried as a transient error
    log: Callable[[str], None] = print
    executable: str = "skopeo"
    gate: RateGate | None = None  # per-registry pause after a 429, shared by the run's jobs
    retries_used: int = field(default=0, init=False)

    @classmethod
    def from_settings(
        cls,
        options: RegistryOptions,
        authfile: str = "",
        log: Callable[[str], None] = print,
        gate: RateGate | None = None,
    ) -> Skopeo:
        """The skopeo of a run's settings (TLS, certificates, retries) with an auth file."""
        return cls(
            tls_verify=options.tls_verify,
            cert_dir=options.cert_dir,
            authfile=authfile,
            retry_times=options.retry_times,
            retry_delay=options.retry_delay,
            timeout=options.timeout,
            gate=gate,
            log=log,
        )

    def _auth_args(self, prefix: str) -> list[str]:
        args = []
        if not self.tls_verify:
            args.append(f"--{prefix}tls-verify=false")
        if self.cert_dir:
            args += [f"--{prefix}cert-dir", self.cert_dir]
        if self.authfile:
            args += [f"--{prefix}authfile", self.authfile]
        return args

    def _passed_fds(self) -> tuple[int, ...]:
        """The descriptor of an in-memory auth file (``/dev/fd/N``), which skopeo must inherit."""
        match = _FD_PATH.fullmatch(self.authfile)
        return (int(match.group(1)),) if match else ()

    def inspect_raw(self, reference: str, config: bool = False) -> bytes:
        """The raw manifest (or with ``config`` the raw image config) of ``docker://reference``."""
        args = ["inspect", "--raw", *(["--config"] if config else []), *self._auth_args("")]
        return self.run([*args, f"docker://{reference}"], registry=_registry_of(reference))

    def copy(
        self, reference: str, layout: Path, shared_blob_dir: Path, exact: bool = False
    ) -> None:
        """Copy one manifest into the OCI layout ``layout``, blobs into ``shared_blob_dir``.

        ``exact`` (artifacts): the manifest as it is, an index with all its manifests, and an
        error rather than any conversion that would change a digest.
        """
        self.run(
            [
                "--insecure-policy",
                "copy",
                *(["--all"] if exact else []),
                *self._auth_args("src-"),
                # the manifest as the registry serves it: a Docker v2s2 manifest is not turned
                # into OCI, so its digest stays the recorded one (and load can push it unchanged)
                "--preserve-digests",
                f"docker://{reference}",
                f"oci:{layout}",
                "--dest-shared-blob-dir",
                str(shared_blob_dir),
            ],
            registry=_registry_of(reference),
        )

    def push(
        self,
        layout: Path,
        shared_blob_dir: Path | None,
        reference: str,
        *,
        manifest_format: str = "",
        index_only: bool = False,
        digestfile: Path | None = None,
    ) -> None:
        """Push the OCI layout ``layout`` to ``docker://reference``, keeping the manifest's
        digest unless ``manifest_format`` (``v2s2``) asks for a conversion."""
        args = ["--insecure-policy", "copy", *self._auth_args("dest-")]
        if shared_blob_dir is not None:
            args += ["--src-shared-blob-dir", str(shared_blob_dir)]
        if manifest_format:
            args += ["--format", manifest_format]
        else:
            args.append("--preserve-digests")
        if index_only:
            args.append("--multi-arch=index-only")
        if digestfile is not None:
            args += ["--digestfile", str(digestfile)]
        self.run([*args, f"oci:{layout}", f"docker://{reference}"], _registry_of(reference))

    def run(self, args: Sequence[str], registry: str = "") -> bytes:
        """Run skopeo; retry transient failures (timeouts included) with exponential backoff,
        and rate limits after the wait the registry asks for."""
        shown = [self.executable, *args]
        gate = self.gate or RateGate()
        for attempt in range(self.retry_times + 1):
            if registry and (left := gate.wait(registry, self.timeout, self.log, stopping)):
                raise ImageError(rate_limited_reason(registry, left))
            if stopping():
                raise InfrastructureError("skopeo was stopped: the run was asked to stop")
            self.log(f"running: {shlex.join(shown)}")
            done = self._run_once(args)
            if done.returncode == 0:
                return done.stdout
            if stopping():
                raise InfrastructureError("skopeo was stopped: the run was asked to stop")
            if done.returncode < 0 and not done.timed_out and done.rate_limit is None:
                # Ctrl-C or a kill reached skopeo: stop, record nothing
                raise InfrastructureError(f"skopeo was stopped by signal {-done.returncode}")
            delay = min(self.retry_delay * 2**attempt, 60.0)
            if done.rate_limit is not None or "toomanyrequests" in done.stderr.lower():
                seconds = done.rate_limit if done.retry_after_given else None
                wait = delay if seconds is None else seconds
                reason = rate_limited_reason(registry or "the registry", wait)
                if wait > self.timeout or attempt == self.retry_times:
                    if registry:
                        gate.block(registry, wait)
                    raise ImageError(reason)
                self.retries_used += 1
                self.log(f"retry {attempt + 1}/{self.retry_times} in {wait:g}s after {reason}")
                if registry:
                    gate.block(registry, wait)  # the gate waits, for every job to this registry
                else:
                    _pause(wait)
                continue
            if done.timed_out:
                kind = "transient"
                reason = f"registry did not answer within {format_duration(self.timeout)}"
            else:
                kind = classify(done.stderr)
                reason = last_error_line(done.stderr)
            if kind == "infrastructure":
                raise InfrastructureError(reason)
            if kind == "permanent" or attempt == self.retry_times:
                raise ImageError(reason)
            self.retries_used += 1
            self.log(
                f"retry {attempt + 1}/{self.retry_times} in {delay:g}s after transient error: "
                f"{reason}"
            )
            _pause(delay)
        raise AssertionError("unreachable")

    def _run_once(self, args: Sequence[str]) -> _Outcome:
        """One skopeo call, bounded by the timeout, stopped as soon as the registry answers 429
        (its own retries would hammer the registry), killed if this process dies."""
        command = [
            *_PDEATHSIG,
            self.executable,
            "--debug",  # for the Retry-After of a 429: its messages are filtered below
            f"--command-timeout={self.timeout:g}s",
            *args,
        ]
        try:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=self._passed_fds(),
                env=child_environment(),
            )
        except FileNotFoundError:
            raise InfrastructureError(
                f"{self.executable!r} not found: install skopeo (apt-get install skopeo)"
            ) from None
        _running.add(process)
        try:
            return _follow(process, self.timeout)
        finally:
            _running.discard(process)


def _follow(process: subprocess.Popen[bytes], timeout: float) -> _Outcome:
    """Read skopeo's output as it comes, in this thread: both pipes through one selector (no
    reader threads, no polling), killing skopeo at the deadline or at its first 429."""
    assert process.stdout is not None and process.stderr is not None
    out_fd, err_fd = process.stdout.fileno(), process.stderr.fileno()
    stdout: list[bytes] = []
    messages: list[str] = []
    found: list[tuple[float, bool]] = []
    partial = b""

    def stderr_line(raw: bytes) -> None:
        line = raw.decode(errors="replace")
        if " level=debug " not in line:
            messages.append(line)
            return
        seconds = retry_after_seconds(line)
        if seconds is not None and not found:
            found.append((seconds, "Retry-After" in line))
            with contextlib.suppress(OSError):
                process.kill()

    deadline = time.monotonic() + timeout + KILL_GRACE_S
    timed_out = False
    with selectors.DefaultSelector() as selector:
        selector.register(out_fd, selectors.EVENT_READ)
        selector.register(err_fd, selectors.EVENT_READ)
        while selector.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                if timed_out:  # killed, yet the pipes stay open: stop reading
                    break
                timed_out = True
                with contextlib.suppress(OSError):
                    process.kill()
                deadline = time.monotonic() + KILL_GRACE_S
                continue
            for key, _ in selector.select(left):
                fd = key.fd
                chunk = os.read(fd, 65536)
                if not chunk:
                    selector.unregister(fd)
                elif fd == out_fd:
                    stdout.append(chunk)
                else:
                    *lines, partial = (partial + chunk).split(b"\n")
                    for raw in lines:
                        stderr_line(raw + b"\n")
    if partial:
        stderr_line(partial)
    try:
        process.wait(max(deadline - time.monotonic(), 0.0) + KILL_GRACE_S)
    except subprocess.TimeoutExpired:
        timed_out = True
        process.kill()
        process.wait()
    process.stdout.close()
    process.stderr.close()
    stderr = "".join(messages)
    timed_out = timed_out or "context deadline exceeded" in stderr
    rate = found[0] if found else None
    return _Outcome(
        process.returncode,
        b"".join(stdout),
        stderr,
        timed_out and rate is None,
        rate[0] if rate else None,
        rate[1] if rate else False,
    )


def _pause(seconds: float) -> None:
    """Sleep, cut short when the run is asked to stop."""
    _stopping.wait(seconds)


def _registry_of(reference: str) -> str:
    return reference.split("/", 1)[0] if "/" in reference else ""


def registry_auth_entry(username: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"auth": token}


def credentials_registry(source: str, registries: Iterable[str]) -> str:
    """The one registry SOURCE_USERNAME/SOURCE_PASSWORD are for, as hangar logs in with them.

    The ``source`` registry when set; else the list's registry when it names only one; else
    Docker Hub. Other registries never see these credentials.
    """
    if source:
        return source
    named = set(registries)
    return named.pop() if len(named) == 1 else "docker.io"


SOURCE_CREDENTIALS = ("SOURCE_USERNAME", "SOURCE_PASSWORD")
DEST_CREDENTIALS = ("DEST_USERNAME", "DEST_PASSWORD")


@contextmanager
def credentials_file(
    registry: str,
    environ: Mapping[str, str] | None = None,
    for_registry: str = "",
    variables: tuple[str, str] = SOURCE_CREDENTIALS,
) -> Iterator[str]:
    """An auth file for ``registry`` built from the ``variables`` (SOURCE_USERNAME and
    SOURCE_PASSWORD, or DEST_USERNAME and DEST_PASSWORD), if both are set and they are
    ``for_registry``'s (default: ``registry``'s).

    Credentials go to a private in-memory file passed to skopeo as ``--authfile /dev/fd/N``:
    never on a command line, in a log, in Snakemake params or on disk, not even when the job is
    killed. Where memory files are missing (not Linux), a private temporary file (mode 0600),
    deleted at the end. Without credentials, yields REGISTRY_AUTH_FILE (or "", letting skopeo
    use its default auth files).
    """
    env = os.environ if environ is None else environ
    username, password = env.get(variables[0], ""), env.get(variables[1], "")
    if not (username and password) or registry != (for_registry or registry):
        yield env.get("REGISTRY_AUTH_FILE", "")
        return
    auths: dict[str, dict[str, str]] = {}
    existing = env.get("REGISTRY_AUTH_FILE", "")
    if existing and Path(existing).is_file():
        auths.update(_read_auths(Path(existing)))
    auths[registry] = registry_auth_entry(username, password)
    content = json.dumps({"auths": auths}).encode()
    with _private_file(content) as path:
        yield path


def _read_auths(path: Path) -> dict[str, dict[str, str]]:
    """The ``auths`` of an auth file; errors name the file and never quote its content."""
    try:
        document = json.loads(path.read_bytes())
    except ValueError as error:
        where = f" (line {error.lineno})" if isinstance(error, json.JSONDecodeError) else ""
        raise InfrastructureError(
            f"REGISTRY_AUTH_FILE {path}: not a JSON auth file{where}"
        ) from None
    auths = document.get("auths", {}) if isinstance(document, dict) else None
    if not isinstance(auths, dict):
        raise InfrastructureError(f'REGISTRY_AUTH_FILE {path}: expected {{"auths": {{...}}}}')
    return auths


@contextmanager
def _private_file(content: bytes) -> Iterator[str]:
    """A path from which this process and the skopeo it starts can read ``content``."""
    try:
        fd = os.memfd_create("hangar-auth", os.MFD_CLOEXEC)  # gone with the last descriptor
    except (AttributeError, OSError):
        fd = -1
    if fd >= 0:
        try:
            os.fchmod(fd, 0o600)  # reachable only through this process's fds anyway
            rest = memoryview(content)
            while rest:
                rest = rest[os.write(fd, rest) :]
            yield f"/dev/fd/{fd}"
        finally:
            os.close(fd)
        return
    fd, path = tempfile.mkstemp(prefix="hangar-auth-", suffix=".json")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        yield path
    finally:
        os.unlink(path)
