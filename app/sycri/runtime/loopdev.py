"""A byte range of a file as a read-only loop device, and a squashfs mounted from it.

What ``mount -t squashfs -o ro,loop,offset=N,sizelimit=M`` does, without starting
``mount(8)`` (a process, and a read of the whole mount table, for every image mount):
a free device from ``/dev/loop-control``, bound in one ``LOOP_CONFIGURE`` (Linux 5.8)
read-only and with autoclear, so the device goes when its mount does (or when the
mount fails and the last descriptor closes). Blocking: run it in a worker thread.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct

from sycri.runtime import linux

LOOP_CTL_GET_FREE = 0x4C82
LOOP_CONFIGURE = 0x4C0A
LO_FLAGS_READ_ONLY = 1
LO_FLAGS_AUTOCLEAR = 4
MS_RDONLY = 0x1

# struct loop_config: fd, block_size, struct loop_info64, 8 reserved u64.
# struct loop_info64: device, inode, rdevice, offset, sizelimit (u64); number,
# encrypt_type, encrypt_key_size, flags (u32); file_name[64], crypt_name[64],
# encrypt_key[32]; init[2] (u64).
_CONFIG = struct.Struct("=II QQQQQ IIII 64s64s32s QQ 64x")

ATTEMPTS = 20  # another process may take the free device between asking and binding


class Unsupported(Exception):
    """The kernel cannot do it this way (no LOOP_CONFIGURE): use ``mount(8)``."""


def config(fd: int, offset: int, size: int, name: str) -> bytes:
    """The ``struct loop_config`` binding ``fd``'s bytes [offset, offset+size)."""
    return _CONFIG.pack(
        fd, 0, 0, 0, 0, offset, size, 0, 0, 0,
        LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR,
        os.fsencode(name)[-63:], b"", b"", 0, 0,
    )  # fmt: skip


def mount_squashfs(path: str, offset: int, size: int, target: str) -> None:
    """Mount the squashfs at ``offset`` (``size`` bytes) in ``path`` read-only on
    ``target``. Raises :class:`Unsupported` where ``LOOP_CONFIGURE`` is missing, OSError
    otherwise."""
    backing = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            ctl = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            raise Unsupported("no /dev/loop-control") from None
        try:
            for _ in range(ATTEMPTS):
                number = fcntl.ioctl(ctl, LOOP_CTL_GET_FREE)
                device = f"/dev/loop{number}"
                dev = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    try:
                        fcntl.ioctl(dev, LOOP_CONFIGURE, config(backing, offset, size, path))
                    except OSError as exc:
                        if exc.errno == errno.EBUSY:
                            continue  # taken meanwhile: ask again
                        if exc.errno in (errno.EINVAL, errno.ENOTTY):
                            raise Unsupported(str(exc)) from None
                        raise
                    linux.mount(device, target, "squashfs", MS_RDONLY)
                    return
                finally:
                    os.close(dev)  # autoclear: the device goes with its mount, or now
            raise OSError(errno.EBUSY, f"no free loop device after {ATTEMPTS} tries")
        finally:
            os.close(ctl)
    finally:
        os.close(backing)
