"""Size and duration parsing and default archive names, as `hangar save` understands them."""

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

# Go's time.ParseDuration syntax, as hangar v1.9's --timeout: 90s, 10m, 1h30m, 1.5s, 500ms.
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ms|s|m|h)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


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


def parse_duration(value: str | int | float) -> float:
    """Seconds from a positive duration: ``10m``, ``90s``, ``1h30m``, ``500ms`` (a bare number
    counts as seconds)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and value and _DURATION_PART.sub("", value) == "":
        seconds = sum(
            float(number) * _DURATION_UNITS[unit] for number, unit in _DURATION_PART.findall(value)
        )
    else:
        raise ValueError(
            f"invalid duration {value!r}: expected a number with a unit (ms, s, m, h), "
            "e.g. '10m', '90s' or '1h30m'"
        )
    if seconds <= 0:
        raise ValueError(f"invalid duration {value!r}: must be greater than zero")
    return seconds


def format_duration(seconds: float) -> str:
    """``10m``, ``1h30m``, ``45s``, ``1.5s``: the shortest way to say a duration."""
    if seconds < 60 and seconds != int(seconds):
        return f"{seconds:g}s"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "")
    return text + (f"{secs}s" if secs or not text else "")


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
