import pytest

from hangar.units import default_destination, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("123", 123),
        ("1", 1),
        ("100K", 100 * 1024),
        ("100k", 100 * 1024),
        ("512M", 512 * 1024**2),
        ("512m", 512 * 1024**2),
        ("2G", 2 * 1024**3),
        ("2g", 2 * 1024**3),
        (4096, 4096),
    ],
)
def test_parse_size_valid(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "text", ["2.5G", "-1", "0", "0M", "", " 2G", "2G ", "2GB", "2T", "G", "1e3", -5, 0, True]
)
def test_parse_size_invalid_names_the_value(text: str | int) -> None:
    with pytest.raises(ValueError, match=r"invalid size"):
        parse_size(text)
    if isinstance(text, str) and text:
        with pytest.raises(ValueError, match=repr(text).replace(".", r"\.")):
            parse_size(text)


@pytest.mark.parametrize(
    ("destination", "compress", "expected"),
    [
        ("", "gzip", "saved-images.tar.gz"),
        ("", "zstd", "saved-images.tar.zstd"),
        ("", "dir", "saved-images"),
        ("load", "gzip", "load.tar.gz"),
        ("load", "zstd", "load.tar.zstd"),
        ("load", "dir", "load"),
        ("out/load", "zstd", "out/load.tar.zstd"),
        ("images.tgz", "gzip", "images.tgz"),
        ("my.dir", "dir", "my.dir"),
    ],
)
def test_default_destination(destination: str, compress: str, expected: str) -> None:
    assert default_destination(destination, compress) == expected


def test_default_destination_rejects_unknown_format() -> None:
    with pytest.raises(ValueError, match="'xz'"):
        default_destination("x", "xz")
