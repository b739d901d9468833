"""Opening a SIF: read and check the header and descriptor table, then objects on demand.

Opening reads only the first bytes and the descriptor table, so listing a 1 GiB image
costs the same as listing an empty one. Every size is checked against the file's
size before anything is allocated: a hostile file gets a SifError, not a huge read.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field

from sycri.errors import excerpt
from sycri.sif.format import (
    DESCRIPTOR_SIZE,
    HEADER_SIZE,
    DataType,
    Descriptor,
    Header,
    PartType,
    SifError,
    check_descriptors,
    check_header,
    decode_descriptor,
    decode_header,
)


@dataclass
class SifImage:
    """An open SIF file. Use as a context manager; objects are read lazily."""

    path: str
    header: Header
    slots: list[Descriptor]  # every slot of the table, used or not, in table order
    file_size: int
    _fd: int = field(repr=False, default=-1)

    @property
    def descriptors(self) -> list[Descriptor]:
        """The used descriptors, in table order (as ``siftool list`` shows them)."""
        return [d for d in self.slots if d.used]

    def __enter__(self) -> SifImage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def fileno(self) -> int:
        if self._fd < 0:
            raise SifError(f"{self.path}: image is closed")
        return self._fd

    def descriptor(self, object_id: int) -> Descriptor:
        for d in self.descriptors:
            if d.id == object_id:
                return d
        raise SifError(f"{self.path}: no object with id {object_id}")

    def find(
        self, data_type: int | None = None, name: str | None = None, group_id: int | None = None
    ) -> list[Descriptor]:
        return [
            d
            for d in self.descriptors
            if (data_type is None or d.data_type == data_type)
            and (name is None or d.name == name)
            and (group_id is None or d.group_id == group_id)
        ]

    def read_object(self, descriptor: Descriptor | int, limit: int = 1 << 30) -> bytes:
        """The whole data of one object (refused above ``limit`` bytes: stream big ones)."""
        d = descriptor if isinstance(descriptor, Descriptor) else self.descriptor(descriptor)
        if d.size > limit:
            raise SifError(f"object {d.id} is {d.size} bytes, over the {limit}-byte read limit")
        return _pread_exact(self.fileno(), d.size, d.offset, self.path)

    def iter_object(self, descriptor: Descriptor, chunk: int = 1 << 20) -> Iterator[bytes]:
        """The data of one object in chunks, for hashing or copying big partitions."""
        fd, pos, end = self.fileno(), descriptor.offset, descriptor.end
        while pos < end:
            data = _pread_exact(fd, min(chunk, end - pos), pos, self.path)
            pos += len(data)
            yield data

    def primary_partition(self) -> Descriptor:
        """The primary system partition (what a container runs from)."""
        for d in self.descriptors:
            if d.data_type == DataType.PARTITION and d.parttype == PartType.PRIMARY_SYSTEM:
                return d
        raise SifError(f"{self.path}: no primary system partition")


def _pread_exact(fd: int, size: int, offset: int, path: str) -> bytes:
    parts, got = [], 0
    while got < size:
        chunk = os.pread(fd, size - got, offset + got)
        if not chunk:
            raise SifError(f"{path}: truncated SIF: short read at {offset + got}")
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def parse(path: str, fd: int) -> SifImage:
    """Read and check the header and descriptors of the open file ``fd``."""
    file_size = os.fstat(fd).st_size
    head = os.pread(fd, HEADER_SIZE, 0)
    header = decode_header(head)
    check_header(header, file_size)
    table = _pread_exact(
        fd, header.descriptors_total * DESCRIPTOR_SIZE, header.descriptors_offset, path
    )
    slots = [
        decode_descriptor(table[i * DESCRIPTOR_SIZE : (i + 1) * DESCRIPTOR_SIZE], i)
        for i in range(header.descriptors_total)
    ]
    check_descriptors(header, [d for d in slots if d.used], file_size)
    return SifImage(path=path, header=header, slots=slots, file_size=file_size, _fd=fd)


def open_sif(path: str | os.PathLike[str]) -> SifImage:
    """Open and check a SIF file; raises SifError naming the problem."""
    path = os.fspath(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise SifError(f"cannot open SIF {excerpt(path)}: {exc.strerror}") from None
    try:
        return parse(path, fd)
    except SifError as exc:
        os.close(fd)
        if exc.message.startswith(path):
            raise
        raise SifError(f"{path}: {exc.message}") from None
    except BaseException:
        os.close(fd)
        raise
