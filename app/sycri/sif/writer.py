"""Writing SIF files: create one from typed objects, add or delete objects in place.

Output is deterministic: times come from the caller (or SOURCE_DATE_EPOCH, or 0),
the ID is derived from the content, and objects keep the order given, so the same
inputs give a byte-identical file. Every change goes to a temporary file in the
target's directory that is renamed over it, so a crash never leaves half a SIF.
Partition data is copied by the kernel (copy_file_range, else sendfile), never
through Python buffers.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import struct
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace

from sycri.errors import excerpt
from sycri.sif.format import (
    ARCH_UNKNOWN,
    DEFAULT_DESCRIPTOR_CAPACITY,
    DEFAULT_DESCRIPTORS_OFFSET,
    DEFAULT_LAUNCH_SCRIPT,
    DESCRIPTOR_SIZE,
    EXTRA_LEN,
    GROUP_MASK,
    MAX_DESCRIPTORS,
    DataType,
    Descriptor,
    Header,
    PartType,
    SifError,
    arch_code,
    cleared,
    decode_descriptor,
    encode_launch_script,
    encode_name,
)
from sycri.sif.objects import RawObject, SifObject
from sycri.sif.reader import open_sif

# Namespace of the UUIDs sycri derives for the SIFs it writes.
SIF_ID_NAMESPACE = uuid.UUID("5f0d8c1e-3a41-5b7e-9c2d-7e1b0f6a4c39")


def sif_id_for(text: str) -> uuid.UUID:
    """A stable SIF ID for something already unique (an image digest, say)."""
    return uuid.uuid5(SIF_ID_NAMESPACE, text)


def default_time() -> int:
    """SOURCE_DATE_EPOCH when set (reproducible builds), else 0: never the wall clock."""
    raw = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not raw:
        return 0
    try:
        return int(raw)
    except ValueError:
        raise SifError(f"SOURCE_DATE_EPOCH {excerpt(raw)} is not an integer") from None


def _align(offset: int, alignment: int) -> int:
    if alignment <= 0:
        return offset
    return -(-offset // alignment) * alignment


@dataclass(frozen=True)
class _Placed:
    descriptor: Descriptor
    obj: RawObject


def _source_size(obj: RawObject) -> int:
    if obj.source_path is None:
        return len(obj.data)
    try:
        return os.stat(obj.source_path).st_size
    except OSError as exc:
        raise SifError(f"cannot read {excerpt(obj.source_path)}: {exc.strerror}") from None


def _describe(obj: RawObject, index: int, offset_unaligned: int, when: int) -> Descriptor:
    """The descriptor of ``obj`` in slot ``index``, placed after ``offset_unaligned``."""
    if obj.group_id < 0 or obj.group_id & GROUP_MASK or obj.link < 0 or obj.link & GROUP_MASK:
        raise SifError(f"object {index + 1}: group {obj.group_id} or link {obj.link} out of range")
    if len(obj.extra) > EXTRA_LEN:
        raise SifError(f"object {index + 1}: extra field over {EXTRA_LEN} bytes")
    offset = _align(offset_unaligned, obj.alignment)
    size = _source_size(obj)
    raw_link = obj.link | GROUP_MASK if obj.link_is_group else obj.link
    packed = replace(
        decode_descriptor(bytes(DESCRIPTOR_SIZE), index),
        data_type=int(obj.data_type),
        used=True,
        id=index + 1,
        raw_group=obj.group_id | GROUP_MASK,
        raw_link=raw_link,
        offset=offset,
        size=size,
        size_with_padding=offset - offset_unaligned + size,
        created_at=when,
        modified_at=when,
        raw_name=encode_name(obj.name),
        extra=obj.extra.ljust(EXTRA_LEN, b"\x00"),
    ).pack()
    return decode_descriptor(packed, index)


def _derive_id(objs: Sequence[RawObject], when: int, launch: bytes) -> uuid.UUID:
    """A UUID from everything that goes into the file, so it changes when content does."""
    h = hashlib.sha256(b"sycri-sif-v1\x00" + launch + when.to_bytes(8, "little", signed=True))
    for obj in objs:
        h.update(int(obj.data_type).to_bytes(4, "little") + obj.name.encode() + b"\x00")
        h.update(obj.extra + obj.group_id.to_bytes(4, "little") + obj.link.to_bytes(4, "little"))
        if obj.source_path is None:
            h.update(hashlib.sha256(obj.data).digest())
        else:
            with open(obj.source_path, "rb") as f:
                h.update(hashlib.file_digest(f, "sha256").digest())
    return sif_id_for(h.hexdigest())


def _copy_fd(src: int, dst: int, size: int, dst_offset: int, what: str) -> None:
    """Copy ``size`` bytes from the start of ``src`` to ``dst`` at ``dst_offset`` in-kernel."""
    done = 0
    use_sendfile = False
    while done < size:
        count = min(size - done, 1 << 30)
        if not use_sendfile:
            try:
                n = os.copy_file_range(src, dst, count, done, dst_offset + done)
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                    raise
                use_sendfile = True
                continue
        else:
            os.lseek(dst, dst_offset + done, os.SEEK_SET)
            n = os.sendfile(dst, src, done, count)
        if n == 0:
            raise SifError(f"{what} shrank while being copied ({done} of {size} bytes)")
        done += n


def _write_object(fd: int, placed: _Placed) -> None:
    d, obj = placed.descriptor, placed.obj
    if obj.source_path is None:
        view = memoryview(obj.data)
        written = 0
        while written < len(view):
            written += os.pwrite(fd, view[written:], d.offset + written)
        return
    src = os.open(obj.source_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if os.fstat(src).st_size != d.size:
            raise SifError(f"{excerpt(obj.source_path)} changed size while being written")
        _copy_fd(src, fd, d.size, d.offset, excerpt(obj.source_path))
    finally:
        os.close(src)


def _table(slots: Sequence[Descriptor]) -> bytes:
    return b"".join(d.pack() for d in slots)


@contextlib.contextmanager
def _replacing(
    path: str, prepare: Callable[[int], None] | None = None, mode: int = 0o644
) -> Iterator[int]:
    """A temp file next to ``path`` (yielded as an fd) renamed over it on success."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        if prepare is not None:
            prepare(fd)
        yield fd
        os.fsync(fd)
        os.fchmod(fd, mode)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _primary_arch(objs: Iterable[RawObject]) -> bytes | None:
    found = None
    for obj in objs:
        if obj.data_type == DataType.PARTITION:
            extra = obj.extra.ljust(EXTRA_LEN, b"\x00")
            if struct.unpack_from("<i", extra, 4)[0] == PartType.PRIMARY_SYSTEM:
                if found is not None:
                    raise SifError("more than one primary system partition")
                found = obj.extra[8:11]
    return found


def write_sif(
    path: str | os.PathLike[str],
    objects: Sequence[SifObject],
    *,
    arch: str | None = None,
    created: int | None = None,
    sif_id: uuid.UUID | None = None,
    launch_script: str = DEFAULT_LAUNCH_SCRIPT,
    descriptor_capacity: int = DEFAULT_DESCRIPTOR_CAPACITY,
    mode: int = 0o644,
) -> Header:
    """Create ``path`` holding ``objects`` in the given order; returns the header written.

    ``arch`` overrides the header architecture (default: the primary partition's).
    ``created`` defaults to SOURCE_DATE_EPOCH, else 0. ``sif_id`` defaults to a UUID
    derived from the content (hashing every object: pass ``sif_id_for(image_digest)``
    when a digest is already known, to skip that). ``mode`` 0o755 makes the file
    runnable through its launch script, as Singularity's own files are.
    """
    path = os.fspath(path)
    raws = [o.to_raw() for o in objects]
    capacity = max(descriptor_capacity, len(raws))
    if capacity > MAX_DESCRIPTORS:
        raise SifError(f"{len(raws)} objects: over the {MAX_DESCRIPTORS} descriptor limit")
    when = default_time() if created is None else int(created)
    launch = encode_launch_script(launch_script)
    primary = _primary_arch(raws)
    header_arch = arch_code(arch) if arch is not None else (primary or ARCH_UNKNOWN)
    data_offset = DEFAULT_DESCRIPTORS_OFFSET + capacity * DESCRIPTOR_SIZE
    placed: list[_Placed] = []
    end = data_offset
    for i, obj in enumerate(raws):
        d = _describe(obj, i, end, when)
        placed.append(_Placed(d, obj))
        end = d.end
    slots = [p.descriptor for p in placed] + [
        decode_descriptor(bytes(DESCRIPTOR_SIZE), i) for i in range(len(raws), capacity)
    ]
    header = Header(
        launch_script=launch_script,
        version="01",
        arch="",
        id=sif_id if sif_id is not None else _derive_id(raws, when, launch),
        created_at=when,
        modified_at=when,
        descriptors_free=capacity - len(raws),
        descriptors_total=capacity,
        descriptors_offset=DEFAULT_DESCRIPTORS_OFFSET,
        descriptors_size=capacity * DESCRIPTOR_SIZE,
        data_offset=data_offset,
        data_size=end - data_offset,
        raw_launch=launch,
        raw_arch=header_arch,
    )
    with _replacing(path, mode=mode) as fd:
        os.ftruncate(fd, end)
        os.pwrite(fd, header.pack(), 0)
        os.pwrite(fd, _table(slots), DEFAULT_DESCRIPTORS_OFFSET)
        for p in placed:
            _write_object(fd, p)
    return open_header(path)


def open_header(path: str) -> Header:
    with open_sif(path) as img:
        return img.header


def _when(when: int | None, header: Header) -> int:
    if when is not None:
        return int(when)
    if os.environ.get("SOURCE_DATE_EPOCH", "").strip():
        return default_time()
    return header.modified_at


def _copy_whole(src_fd: int, size: int) -> Callable[[int], None]:
    def prepare(dst: int) -> None:
        _copy_fd(src_fd, dst, size, 0, "the SIF")

    return prepare


def add_object(
    path: str | os.PathLike[str], obj: SifObject, *, when: int | None = None
) -> Descriptor:
    """Append ``obj`` to an existing SIF (atomically); returns its descriptor.

    Like the reference tools, the object takes the first free descriptor slot and the
    id of that slot. ``when`` (default SOURCE_DATE_EPOCH, else the file's modification
    time) stamps the object and the header, keeping the result reproducible.
    """
    path = os.fspath(path)
    raw = obj.to_raw()
    with open_sif(path) as img:
        h = img.header
        free = [d for d in img.slots if not d.used]
        if not free:
            raise SifError(f"{path}: no free descriptor slot ({h.descriptors_total} used)")
        index = free[0].index
        stamp = _when(when, h)
        new_arch = _primary_arch([raw])
        if new_arch is not None and any(
            d.data_type == DataType.PARTITION and d.parttype == PartType.PRIMARY_SYSTEM
            for d in img.descriptors
        ):
            raise SifError(f"{path}: already holds a primary system partition")
        end = max([h.data_offset, *(d.end for d in img.descriptors)])
        d = _describe(raw, index, end, stamp)
        slots = list(img.slots)
        slots[index] = d
        header = replace(
            h,
            raw_arch=new_arch if new_arch is not None else h.raw_arch,
            modified_at=stamp,
            descriptors_free=h.descriptors_free - 1,
            data_size=d.end - h.data_offset,
        )
        keep = os.fstat(img.fileno()).st_mode & 0o7777
        with _replacing(path, _copy_whole(img.fileno(), img.file_size), keep) as fd:
            os.ftruncate(fd, max(d.end, img.file_size))
            _write_object(fd, _Placed(d, raw))
            os.pwrite(fd, _table(slots), h.descriptors_offset)
            os.pwrite(fd, header.pack(), 0)
    return d


def delete_object(
    path: str | os.PathLike[str],
    object_id: int,
    *,
    zero: bool = True,
    compact: bool = True,
    when: int | None = None,
) -> None:
    """Remove object ``object_id`` (atomically). ``zero`` overwrites its data with zeros
    so nothing of it remains; ``compact`` truncates the file after the last object."""
    path = os.fspath(path)
    with open_sif(path) as img:
        h = img.header
        d = img.descriptor(object_id)
        stamp = _when(when, h)
        slots = list(img.slots)
        slots[d.index] = cleared(d)
        remaining = [s for s in slots if s.used]
        data_end = max([h.data_offset, *(s.end for s in remaining)])
        was_primary = d.data_type == DataType.PARTITION and d.parttype == PartType.PRIMARY_SYSTEM
        header = replace(
            h,
            raw_arch=ARCH_UNKNOWN if was_primary else h.raw_arch,
            modified_at=stamp,
            descriptors_free=h.descriptors_free + 1,
            data_size=data_end - h.data_offset if compact else h.data_size,
        )
        keep = os.fstat(img.fileno()).st_mode & 0o7777
        with _replacing(path, _copy_whole(img.fileno(), img.file_size), keep) as fd:
            if zero:
                _zero(fd, d.offset, d.size)
            if compact:
                os.ftruncate(fd, data_end)
            os.pwrite(fd, _table(slots), h.descriptors_offset)
            os.pwrite(fd, header.pack(), 0)


def _zero(fd: int, offset: int, size: int) -> None:
    block = bytes(min(size, 1 << 20))
    done = 0
    while done < size:
        done += os.pwrite(fd, block[: size - done], offset + done)
