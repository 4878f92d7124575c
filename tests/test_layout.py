"""The archive's file names, as hangar.layout names them, and verify's reading of them back."""

from __future__ import annotations

from pathlib import Path

import pytest

from hangar.layout import checksum_path, part_path, split_checksum, split_part
from hangar.verify import normalise_destination


@pytest.mark.parametrize("name", ["out/saved.tar.gz", "saved", "a.sha256.tar.zstd"])
def test_checksum_and_part_names_read_back(name: str) -> None:
    destination = Path(name)
    assert split_checksum(checksum_path(destination)) == destination
    assert split_part(part_path(destination, 12)) == (destination, 12)
    assert split_checksum(destination) is None


@pytest.mark.parametrize("name", [".sha256", "saved.tar.gz", "saved.sha256sum"])
def test_other_names_are_not_checksum_files(name: str) -> None:
    assert split_checksum(name) is None


def test_verify_takes_the_checksum_file_or_a_part_for_the_archive(tmp_path: Path) -> None:
    destination = tmp_path / "saved.tar.gz"
    assert normalise_destination(checksum_path(destination)) == destination
    assert normalise_destination(part_path(destination, 0)) == destination
    assert normalise_destination(Path(".sha256")) == Path(".sha256")
    folder = tmp_path / "exported.sha256"
    folder.mkdir()
    assert normalise_destination(folder) == folder
