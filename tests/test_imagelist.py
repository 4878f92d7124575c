"""List parsing and reference normalisation as hangar v1.6 does it (its bugs fixed), invalid
lines skipped (or refused when strict)."""

from pathlib import Path

import pytest

from hangar.imagelist import (
    ImageListError,
    ImageRef,
    load_image_list,
    parse_image_list,
    parse_list,
    parse_reference,
    read_image_list,
)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("nginx", "docker.io/library/nginx:latest"),
        ("nginx:1.25", "docker.io/library/nginx:1.25"),
        ("rancher/rancher:v2.8.0", "docker.io/rancher/rancher:v2.8.0"),
        ("docker.io/nginx:1", "docker.io/library/nginx:1"),
        ("quay.io/coreos/etcd:v3.5", "quay.io/coreos/etcd:v3.5"),
        # library/ only for Docker Hub (v1.6 inserted it everywhere)
        ("registry.k8s.io/pause:3.9", "registry.k8s.io/pause:3.9"),
        # registry ports work (v1.6 rejected them)
        ("127.0.0.1:5000/ns/img:tag", "127.0.0.1:5000/ns/img:tag"),
        ("localhost:5000/img", "localhost:5000/img:latest"),
        ("localhost/img:1", "localhost/img:1"),
        ("reg.example.com:443/a/b/c:1.0-rc.1", "reg.example.com:443/a/b/c:1.0-rc.1"),
        ("a__b/c-d.e:X_1", "docker.io/a__b/c-d.e:X_1"),
    ],
)
def test_normalisation(line: str, expected: str) -> None:
    assert str(parse_reference(line)) == expected


def test_fields_of_a_reference() -> None:
    ref = parse_reference("127.0.0.1:5000/rancher/nginx:1.25")
    assert (ref.registry, ref.repository, ref.tag) == ("127.0.0.1:5000", "rancher/nginx", "1.25")
    assert ref.source == "127.0.0.1:5000/rancher/nginx"
    assert ref.pull_reference == "127.0.0.1:5000/rancher/nginx:1.25"


@pytest.mark.parametrize(
    ("line", "source", "expected"),
    [
        # Docker Hub's library/ first, then the registry replaced (as hangar v1.6)
        ("nginx:1", "reg.local:5000", "reg.local:5000/library/nginx:1"),
        ("mirrored-nginx:1.23", "reg:5000", "reg:5000/library/mirrored-nginx:1.23"),
        ("docker.io/nginx:1", "reg.local", "reg.local/library/nginx:1"),
        ("rancher/x:1", "reg.local", "reg.local/rancher/x:1"),
        ("quay.io/coreos/etcd:1", "reg.local", "reg.local/coreos/etcd:1"),
        ("nginx:1", "docker.io", "docker.io/library/nginx:1"),
        # a line naming its own registry keeps its path (v1.6 added library/ here: a bug)
        ("reg.io/pause:3.9", "reg.local:5000", "reg.local:5000/pause:3.9"),
        ("localhost:5000/img:1", "reg.local", "reg.local/img:1"),
    ],
)
def test_source_replaces_or_supplies_the_registry(line: str, source: str, expected: str) -> None:
    assert str(parse_reference(line, source)) == expected


def test_pinned_digest_is_copied_by_digest_and_keeps_its_tag() -> None:
    digest = "sha256:" + "a" * 64
    ref = parse_reference(f"nginx:1.25@{digest}")
    assert ref.tag == "1.25"
    assert ref.pull_reference == f"docker.io/library/nginx@{digest}"


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("nginx@sha256:" + "a" * 64, "digest without a tag"),
        ("nginx:1@sha256:abc", "invalid digest"),
        ("nginx:1:2", "too many ':'"),
        ("Rancher/Nginx:1", "lower-case"),
        ("nginx:" + "t" * 129, "longer than 128"),
        ("../etc/passwd:1", "invalid path component"),
        ("a/../b:1", "invalid path component"),
        ("nginx :1", "whitespace"),
        ("nginx\t:1", "whitespace"),
        ("nginx:", "empty tag"),
        ("nginx:-bad", "invalid tag"),
        ("bad_registry.com:x/img:1", "invalid registry"),
        ("a//b:1", "invalid path component"),
    ],
)
def test_invalid_references_say_why(line: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_reference(line)


def test_list_skips_comments_and_blanks_and_merges_duplicates() -> None:
    text = "# comment\n\n// other\n  nginx:1.25  \ndocker.io/library/nginx:1.25\nbusybox\n"
    entries = parse_image_list(text, "l.txt")
    assert [str(e.ref) for e in entries] == [
        "docker.io/library/nginx:1.25",
        "docker.io/library/busybox:latest",
    ]
    assert entries[0].lines == ("nginx:1.25", "docker.io/library/nginx:1.25")
    assert entries[0].line_numbers == (4, 5)


def test_crlf_and_bom_are_accepted() -> None:
    entries = parse_image_list("\ufeffnginx:1\r\nbusybox:2\r\n", "l.txt")
    assert [e.ref.tag for e in entries] == ["1", "2"]


def test_invalid_lines_are_skipped_with_hangars_warning_and_where() -> None:
    read = parse_list("nginx:1\nBad:1\nok:2\nINVALID LINE\n", "images.txt")
    assert [str(e.ref) for e in read.entries] == [
        "docker.io/library/nginx:1",
        "docker.io/library/ok:2",
    ]
    assert [(s.number, s.line) for s in read.skipped] == [(2, "Bad:1"), (4, "INVALID LINE")]
    assert str(read.skipped[1]) == (
        'ignore line "INVALID LINE" in list file: invalid format '
        "(images.txt:4: whitespace inside the reference)"
    )


def test_a_list_with_only_invalid_lines_is_an_error() -> None:
    with pytest.raises(ImageListError, match="images.txt: no valid image") as caught:
        parse_list("Bad:1\nx y\n", "images.txt")
    assert "images.txt:1:" in str(caught.value) and "images.txt:2:" in str(caught.value)


def test_strict_reports_every_bad_line_with_file_and_line() -> None:
    with pytest.raises(ImageListError) as caught:
        parse_image_list("nginx:1\nBad:1\nok:2\nx y\n", "images.txt", strict=True)
    message = str(caught.value)
    assert "images.txt:2:" in message and "'Bad:1'" in message
    assert "images.txt:4:" in message and "whitespace" in message
    assert "images.txt:1" not in message


@pytest.mark.parametrize("text", ["", "\n\n", "# only\n// comments\n"])
def test_a_list_without_images_is_an_error(text: str) -> None:
    with pytest.raises(ImageListError, match="names no image"):
        parse_image_list(text, "l.txt")


def test_a_huge_line_is_skipped_or_refused_when_strict(tmp_path: Path) -> None:
    path = tmp_path / "l.txt"
    path.write_text("nginx\n" + "a" * 100_000 + "\n")
    read = load_image_list(path)
    assert len(read.entries) == 1 and read.skipped[0].number == 2
    assert len(read.skipped[0].line) < 100
    with pytest.raises(ImageListError, match="l.txt:2: line longer"):
        read_image_list(path, strict=True)


def test_non_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "l.txt"
    path.write_bytes(b"nginx:1\nbusy\xffbox\n")
    with pytest.raises(ImageListError, match=r"l.txt:2: not valid UTF-8"):
        read_image_list(path)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ImageListError, match="nope.txt: cannot read"):
        read_image_list(tmp_path / "nope.txt")


def test_image_ids_are_safe_bounded_and_distinct() -> None:
    a = ImageRef("docker.io", "library/nginx", "1.25")
    b = ImageRef("docker.io", "library/nginx", "1.25", "sha256:" + "0" * 64)
    c = ImageRef("r.io", "x/" + "y" * 200, "t" * 128)
    assert a.image_id.startswith("library_nginx_1.25-")
    assert len({a.image_id, b.image_id}) == 2
    assert len(c.image_id) <= 61
    for ref in (a, b, c):
        assert all(ch.isalnum() or ch in "._-" for ch in ref.image_id)
