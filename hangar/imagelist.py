"""Read an image list in rancher-images.txt format into normalised image references.

One ``NAME[:TAG]`` per line (optionally pinned ``NAME:TAG@sha256:…``); blank lines and
lines starting with ``#`` or ``//`` are skipped. Names are normalised the way hangar v1.6
does: a name without a registry gets Docker Hub's ``library/`` before a one-component path,
then the ``source`` registry if one is given; a name with its own registry keeps its path.
Unlike v1.6, registry ports work. An invalid line is skipped with a warning, as hangar does
(``strict`` refuses the list instead).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

DOCKER_HUB = "docker.io"
DEFAULT_TAG = "latest"
MAX_LINE_LENGTH = 4096
MAX_NAME_LENGTH = 255

# Grammar of github.com/distribution/reference, written out piece by piece.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_LABEL}(?:\.{_DOMAIN_LABEL})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"  # ASCII only: Python's \w also matches "é", "１"
_DIGEST = r"sha256:[a-f0-9]{64}"
_COMPONENT_RE = re.compile(rf"{_COMPONENT}\Z")
_DOMAIN_RE = re.compile(rf"{_DOMAIN}\Z")
_TAG_RE = re.compile(rf"{_TAG}\Z")
_DIGEST_RE = re.compile(rf"{_DIGEST}\Z")
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class ImageListError(ValueError):
    """The image list (or one of its lines) cannot be used; the message names file and line."""


@dataclass(frozen=True)
class SkippedLine:
    """An invalid line of the list, left out of the save (hangar's warning, and where and why)."""

    path: str
    number: int
    line: str
    reason: str

    @property
    def where(self) -> str:
        return f"{self.path}:{self.number}"

    def __str__(self) -> str:
        return (
            f'ignore line "{self.line}" in list file: invalid format ({self.where}: {self.reason})'
        )


@dataclass(frozen=True)
class ImageRef:
    """A normalised image reference: ``registry/repository:tag`` (optionally ``@digest``)."""

    registry: str
    repository: str
    tag: str
    digest: str = ""

    @property
    def source(self) -> str:
        """``registry/repository``: the ``Source`` field of saved-images-list.json."""
        return f"{self.registry}/{self.repository}"

    @property
    def pull_reference(self) -> str:
        """What skopeo is given after ``docker://``: pinned by digest when the list pins one."""
        if self.digest:
            return f"{self.source}@{self.digest}"
        return f"{self.source}:{self.tag}"

    def __str__(self) -> str:
        pinned = f"@{self.digest}" if self.digest else ""
        return f"{self.source}:{self.tag}{pinned}"

    @property
    def image_id(self) -> str:
        """A short, filesystem- and wildcard-safe id: readable prefix + hash of the reference."""
        digest = hashlib.sha256(str(self).encode()).hexdigest()[:12]
        readable = _ID_UNSAFE.sub("_", f"{self.repository}_{self.tag}").strip("._-")[:48]
        return f"{readable}-{digest}"


@dataclass(frozen=True)
class ListEntry:
    """An image of the list and the original (trimmed) lines that named it."""

    ref: ImageRef
    lines: tuple[str, ...]
    line_numbers: tuple[int, ...] = field(default=())


def parse_reference(text: str, source: str = "") -> ImageRef:
    """Parse one trimmed list line. ``source`` replaces (or supplies) the registry.

    Raises ValueError with the reason; the caller adds file and line.
    """
    if not text:
        raise ValueError("empty reference")
    if any(ch.isspace() for ch in text):
        raise ValueError("whitespace inside the reference")
    name, _, digest = text.partition("@")
    if digest and not _DIGEST_RE.match(digest):
        raise ValueError(f"invalid digest {digest!r} (expected sha256:<64 lower-case hex>)")

    registry, remainder = _split_registry(name)
    last_slash = remainder.rfind("/")
    repository, colon, tag = remainder.rpartition(":")
    if not colon or repository.rfind("/") < last_slash:
        repository, tag = remainder, ""
    if ":" in repository:
        raise ValueError("too many ':' (expected NAME[:TAG])")
    if colon and not tag:
        raise ValueError("empty tag after ':'")
    if tag and not _TAG_RE.match(tag):
        if len(tag) > 128:
            raise ValueError(f"tag longer than 128 characters ({len(tag)})")
        raise ValueError(f"invalid tag {tag!r}")
    if digest and not tag:
        raise ValueError(
            "digest without a tag: hangar load re-tags every image, pin it as NAME:TAG@sha256:…"
        )
    _check_repository(repository)

    # Docker Hub's normalisation first for a name without a registry, then the override: with
    # source reg:5000, "nginx" is reg:5000/library/nginx; "reg.io/pause" keeps its path.
    if (not registry or registry == DOCKER_HUB) and "/" not in repository:
        repository = f"library/{repository}"
    if source:
        _check_registry(source)
        registry = source
    elif not registry:
        registry = DOCKER_HUB
    if len(registry) + 1 + len(repository) > MAX_NAME_LENGTH:
        raise ValueError(f"name longer than {MAX_NAME_LENGTH} characters")
    return ImageRef(registry, repository, tag or DEFAULT_TAG, digest)


def _split_registry(name: str) -> tuple[str, str]:
    first, slash, rest = name.partition("/")
    if first in (".", ".."):
        raise ValueError(f"invalid path component {first!r} in {name!r}")
    if slash and ("." in first or ":" in first or first == "localhost"):
        _check_registry(first)
        return first, rest
    return "", name


def _check_registry(registry: str) -> None:
    if not _DOMAIN_RE.match(registry):
        raise ValueError(f"invalid registry {registry!r}")


def _check_repository(repository: str) -> None:
    for component in repository.split("/"):
        if _COMPONENT_RE.match(component):
            continue
        if component.lower() != component and _COMPONENT_RE.match(component.lower()):
            raise ValueError(f"repository names must be lower-case: {repository!r}")
        if component in ("", ".", ".."):
            raise ValueError(f"invalid path component {component!r} in {repository!r}")
        raise ValueError(f"invalid repository name {repository!r}")


def is_comment_or_blank(line: str) -> bool:
    return not line or line.startswith("#") or line.startswith("//")


@dataclass(frozen=True)
class ImageList:
    """The images of a list, and its invalid lines (skipped unless the list is read strictly)."""

    entries: list[ListEntry]
    skipped: list[SkippedLine]


def parse_image_list(
    text: str, path: str = "<list>", source: str = "", strict: bool = False
) -> list[ListEntry]:
    """The images of a list; duplicates (same normalised reference) become one entry."""
    return parse_list(text, path, source, strict).entries


def parse_list(
    text: str, path: str = "<list>", source: str = "", strict: bool = False
) -> ImageList:
    """Parse a whole list; invalid lines are skipped (``strict``: refused, all at once, as
    ``path:line: reason: 'text'``). A list without a single valid image is an error."""
    by_ref: dict[ImageRef, tuple[list[str], list[int]]] = {}
    # Saved folders and hangar load's tags are named by source and tag alone: two references
    # that differ only in their pinned digest would be two jobs writing the same folders.
    by_tag: dict[tuple[str, str], tuple[ImageRef, int]] = {}
    skipped: list[SkippedLine] = []
    # Lines end at "\n" only (a "\r" before it is trimmed): str.splitlines() would also break
    # at form feeds, U+2028 and other separators, hiding them and shifting every line number
    # after them away from what editors, `sed -n Np` and the UTF-8 error below count.
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if number == 1:
            line = line.lstrip("\ufeff").strip()
        if is_comment_or_blank(line):
            continue
        if len(line) > MAX_LINE_LENGTH:
            reason = f"line longer than {MAX_LINE_LENGTH} characters"
            skipped.append(SkippedLine(path, number, line[:80] + "…", reason))
            continue
        try:
            ref = parse_reference(line, source)
        except ValueError as error:
            skipped.append(SkippedLine(path, number, line, str(error)))
            continue
        other, first = by_tag.setdefault((ref.source, ref.tag), (ref, number))
        if other != ref:
            reason = (
                f"{ref.source}:{ref.tag} is already named by line {first}, "
                "pinned to another digest (a tag is saved once)"
            )
            skipped.append(SkippedLine(path, number, line, reason))
            continue
        lines, numbers = by_ref.setdefault(ref, ([], []))
        if line not in lines:
            lines.append(line)
        numbers.append(number)
    if strict and skipped:
        raise ImageListError("\n".join(_refusal(item) for item in skipped))
    if not by_ref:
        if skipped:
            raise ImageListError(
                "\n".join([*(_refusal(item) for item in skipped), f"{path}: no valid image"])
            )
        raise ImageListError(f"{path}: the image list names no image (only blanks or comments)")
    entries = [ListEntry(ref, tuple(lines), tuple(nums)) for ref, (lines, nums) in by_ref.items()]
    return ImageList(entries, skipped)


def _refusal(item: SkippedLine) -> str:
    if item.reason.startswith("line longer"):
        return f"{item.where}: {item.reason}"
    return f"{item.where}: {item.reason}: {item.line!r}"


def read_image_list(path: str | Path, source: str = "", strict: bool = False) -> list[ListEntry]:
    """The images of a list file (invalid lines skipped unless ``strict``)."""
    return load_image_list(path, source, strict).entries


def load_image_list(path: str | Path, source: str = "", strict: bool = False) -> ImageList:
    """Read and parse a list file; decoding errors name the line at fault."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ImageListError(f"{path}: cannot read the image list: {error.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise ImageListError(f"{path}:{line}: not valid UTF-8 (byte {error.start})") from None
    return parse_list(text, str(path), source, strict)
