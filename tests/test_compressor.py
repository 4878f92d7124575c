"""The archive compressors: standard tools read them, stored runs are stored, bytes are stable."""

from __future__ import annotations

import gzip
import io
import random
import subprocess
import zlib
from pathlib import Path

import pytest
import zstandard
from isal import igzip

from hangar.save.compressor import (
    STORED_BLOCK,
    Data,
    GzipCompressor,
    Pipeline,
    ZstdCompressor,
    is_compressed,
    open_compressor,
)

RNG = random.Random(7)
TEXT = b'{"schemaVersion": 2, "layers": []}\n' * 3000  # compressible, ~100 KB
LAYER = igzip.compress(RNG.randbytes(300_000), 1, mtime=0)  # already compressed
TAIL = RNG.randbytes(70_000)  # random but not marked: deflated (and not shrinking)


class Sink:
    def __init__(self) -> None:
        self.buffer = io.BytesIO()

    def write(self, data: Data) -> int:
        return self.buffer.write(data)


def compress(kind: str, pieces: list[tuple[bool, bytes]], cut: int | None = None) -> bytes:
    """Compress (stored?, bytes) pieces, each written in `cut`-byte writes (None: whole)."""
    sink = Sink()
    stream = open_compressor(kind, sink)  # type: ignore[arg-type]
    for stored, data in pieces:
        write = stream.write_stored if stored else stream.write
        step = cut or len(data) or 1
        for start in range(0, len(data), step):
            write(data[start : start + step])
    stream.close()
    return sink.buffer.getvalue()


PIECES = [(False, TEXT[:700]), (True, LAYER), (False, TEXT), (True, LAYER[:1]), (False, TAIL)]
PLAIN = b"".join(data for _, data in PIECES)


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_bytes_do_not_depend_on_how_writes_are_cut(kind: str) -> None:
    whole = compress(kind, PIECES)
    assert compress(kind, PIECES, cut=1000) == whole
    assert compress(kind, PIECES, cut=STORED_BLOCK + 1) == whole


def test_gzip_is_one_member_read_by_standard_readers(tmp_path: Path) -> None:
    data = compress("gzip", PIECES)
    assert gzip.decompress(data) == PLAIN
    assert igzip.decompress(data) == PLAIN
    one = zlib.decompressobj(31)  # a single-member reader stops after the first member
    assert one.decompress(data) == PLAIN and one.eof and one.unused_data == b""
    path = tmp_path / "a.gz"
    path.write_bytes(data)
    subprocess.run(["gzip", "-t", str(path)], check=True)
    done = subprocess.run(["gzip", "-dc", str(path)], check=True, capture_output=True)
    assert done.stdout == PLAIN


def test_zstd_is_read_by_the_cli(tmp_path: Path) -> None:
    data = compress("zstd", PIECES)
    assert zstandard.ZstdDecompressor().decompressobj().decompress(data) == PLAIN
    path = tmp_path / "a.zst"
    path.write_bytes(data)
    subprocess.run(["zstd", "-q", "-t", str(path)], check=True)


def test_compressed_blobs_are_stored_at_exact_cost() -> None:
    """Stored: 5 bytes per STORED_BLOCK; header 10, final empty block 5, trailer 8."""
    blocks = -(-len(LAYER) // STORED_BLOCK)
    assert len(compress("gzip", [(True, LAYER)])) == len(LAYER) + 5 * blocks + 10 + 5 + 8
    deflated = compress("gzip", [(False, TEXT)])
    assert len(deflated) < len(TEXT) // 20


def test_empty_stream_is_valid_gzip() -> None:
    assert gzip.decompress(compress("gzip", [])) == b""


def test_magic_detection() -> None:
    assert is_compressed(LAYER)
    assert is_compressed(zstandard.ZstdCompressor().compress(b"x"))
    assert not is_compressed(TEXT) and not is_compressed(b"") and not is_compressed(b"\x1f")


def test_pipeline_keeps_order_and_raises_the_consumers_error() -> None:
    sink = Sink()
    pipeline = Pipeline(sink)
    stream = GzipCompressor(pipeline)
    stream.write_stored(LAYER)
    stream.write(TEXT)
    stream.close()
    pipeline.close()
    assert gzip.decompress(sink.buffer.getvalue()) == LAYER + TEXT

    class Full:
        def write(self, data: Data) -> int:
            raise OSError(28, "No space left on device")

    failing = Pipeline(Full())
    zstd = ZstdCompressor(failing)
    with pytest.raises(OSError, match="No space left"):
        for _ in range(100):
            zstd.write(RNG.randbytes(100_000))
        zstd.close()
        failing.close()
    with pytest.raises(OSError, match="No space left"):
        failing.close()
