"""A layer blob's tar stream, decompressed as it is read: gzip (by ISA-L), zstd or none.

Output comes in bounded pieces whatever the input, so a decompression bomb costs time
(bounded by the unpack limits) but no memory. Blocking I/O: call from a worker thread.
"""

from __future__ import annotations

import contextlib
import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, cast

from isal import isal_zlib

COPY_CHUNK = 1 << 20
ISAL_ERROR = cast(type[Exception], isal_zlib.error)


class Gunzip:
    """A gzip stream inflated by ISA-L (3x zlib's speed), one member after another as
    gzip(1) reads them; output in bounded pieces, so a gzip bomb costs no memory."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.inflate = isal_zlib.decompressobj(31)
        self.pending = b""  # compressed input not yet given to ``inflate``
        self.buf = b""
        self.pos = 0
        self.started = False  # the current member has had input
        self.eof = False

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = COPY_CHUNK
        while len(self.buf) - self.pos < n and not self.eof:
            self._fill(n)
        out = self.buf[self.pos : self.pos + n]
        self.pos += len(out)
        if self.pos >= len(self.buf):
            self.buf, self.pos = b"", 0
        return out

    def _fill(self, n: int) -> None:
        d = self.inflate
        if d.eof:
            rest = (d.unused_data + self.pending).lstrip(b"\0")  # zero padding is allowed
            self.pending = b""
            while not rest:
                more = self.raw.read(COPY_CHUNK)
                if not more:
                    self.eof = True
                    return
                rest = more.lstrip(b"\0")
            if rest[:2] != b"\x1f\x8b":
                raise gzip.BadGzipFile("trailing data after the gzip stream")
            self.inflate = d = isal_zlib.decompressobj(31)
            self.pending = rest
        data = d.unconsumed_tail or self.pending or self.raw.read(COPY_CHUNK)
        self.pending = b""
        if not data:
            if self.started and not d.eof:
                raise EOFError("the gzip stream ended before its end marker")
            self.eof = True
            return
        self.started = True
        out = d.decompress(data, max(n, COPY_CHUNK))
        if out:
            self.buf = self.buf[self.pos :] + out if self.pos < len(self.buf) else out
            self.pos = 0


@contextlib.contextmanager
def open_layer(path: Path, compression: str) -> Iterator[BinaryIO]:
    """The layer's tar stream, decompressed on the fly (gzip, zstd or none)."""
    with open(path, "rb") as raw:
        if compression == "gzip":
            yield Gunzip(raw)  # type: ignore[misc]
        elif compression == "zstd":
            import zstandard

            with zstandard.ZstdDecompressor().stream_reader(raw, read_size=COPY_CHUNK) as r:
                yield r
        else:
            yield raw
