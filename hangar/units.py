"""Size parsing and default archive names, as `hangar save` v1.6 understands them."""

from __future__ import annotations

import re

_SIZE = re.compile(r"([0-9]+)([KkMmGg]?)")
_FACTORS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}

DEFAULT_NAMES = {
    "gzip": "saved-images.tar.gz",
    "zstd": "saved-images.tar.zstd",
    "dir": "saved-images",
}
SUFFIXES = {"gzip": ".tar.gz", "zstd": ".tar.zstd"}


def parse_size(value: str | int) -> int:
    """Return a positive byte count from "123", "100K", "512M" or "2G" (1024-based)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value <= 0:
            raise ValueError(f"invalid size {value!r}: must be a positive number of bytes")
        return value
    if not isinstance(value, str):
        raise ValueError(f"invalid size {value!r}: expected a string such as '2G'")
    match = _SIZE.fullmatch(value)
    if match is None:
        raise ValueError(
            f"invalid size {value!r}: expected a whole number of bytes, "
            "optionally followed by K, M or G (1024-based), e.g. '2G'"
        )
    size = int(match.group(1)) * _FACTORS[match.group(2).lower()]
    if size <= 0:
        raise ValueError(f"invalid size {value!r}: must be greater than zero")
    return size


def default_destination(destination: str, compress: str) -> str:
    """Return the archive path hangar v1.6 would write for `-d destination`."""
    if compress not in DEFAULT_NAMES:
        raise ValueError(f"invalid compress format {compress!r}: expected gzip, zstd or dir")
    if not destination:
        return DEFAULT_NAMES[compress]
    if compress != "dir" and "." not in destination:
        return destination + SUFFIXES[compress]
    return destination


def human_size(size: float) -> str:
    """Bytes in 1024-based units: ``512 B``, ``4.0 KiB``, ``1.3 GiB``."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(size)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
