"""The few Linux system calls Python 3.11 lacks (mount, umount2, unshare, setns, statx),
via libc.

Namespace work changes the calling thread, so callers run it with :func:`in_fresh_thread`:
a new OS thread that exits afterwards, never one of the event loop's pooled threads.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import os
import struct
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWNET = 0x40000000
CLONE_NEWPID = 0x20000000

MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MS_SHARED = 1 << 20

MNT_DETACH = 0x2
UMOUNT_NOFOLLOW = 0x8

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]

AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
STATX_TYPE = 0x1
STATX_ATTR_MOUNT_ROOT = 0x2000  # Linux 5.8
_STATX_SIZE = 256  # struct statx; stx_attributes at 8, stx_attributes_mask at 56
if hasattr(_libc, "statx"):  # glibc 2.28+
    _libc.statx.argtypes = [
        ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.c_char_p
    ]  # fmt: skip


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _b(value: str | os.PathLike[str] | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


def mount(
    source: str | os.PathLike[str] | None,
    target: str | os.PathLike[str],
    fstype: str | None = None,
    flags: int = 0,
    data: str | None = None,
) -> None:
    rc = _libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data))
    _check(rc, f"mount {source} on {target}")


def umount(target: str | os.PathLike[str], flags: int = 0) -> None:
    _check(_libc.umount2(_b(target), flags), f"umount {target}")


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    _check(_libc.setns(fd, nstype), "setns")


def is_mount_root(path: str | os.PathLike[str]) -> bool | None:
    """Whether ``path`` (not followed if a symlink) is the root of a mount, bind mounts
    of the same file system included, from one ``statx``; None when the kernel or libc
    cannot say (before Linux 5.8), so the caller reads the mount table instead."""
    statx = getattr(_libc, "statx", None)
    if statx is None:
        return None
    buf = ctypes.create_string_buffer(_STATX_SIZE)
    rc = statx(AT_FDCWD, _b(path), AT_SYMLINK_NOFOLLOW, STATX_TYPE, buf)
    if rc != 0:
        err = ctypes.get_errno()
        if err in (errno.ENOSYS, errno.EINVAL):
            return None
        raise OSError(err, os.strerror(err), str(path))
    (attributes,) = struct.unpack_from("=Q", buf, 8)
    (mask,) = struct.unpack_from("=Q", buf, 56)
    if not mask & STATX_ATTR_MOUNT_ROOT:
        return None
    return bool(attributes & STATX_ATTR_MOUNT_ROOT)


def is_mountpoint(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is the target of a mount (bind mounts of a file included)."""
    target = os.fsencode(os.path.realpath(path))
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            fields = line.split(b" ")
            if len(fields) > 4 and _unescape(fields[4]) == target:
                return True
    return False


def mount_targets_under(prefix: str | os.PathLike[str]) -> list[str]:
    """Every mount target at or below ``prefix`` (for leak checks and cleanup)."""
    root = os.path.realpath(prefix)
    out = []
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            fields = line.split(b" ")
            if len(fields) > 4:
                target = os.fsdecode(_unescape(fields[4]))
                if target == root or target.startswith(root.rstrip("/") + "/"):
                    out.append(target)
    return out


def _unescape(field: bytes) -> bytes:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    if b"\\" not in field:
        return field
    out = bytearray()
    i = 0
    while i < len(field):
        if field[i] == 0x5C and i + 3 < len(field) + 1 and field[i + 1 : i + 4].isdigit():
            out.append(int(field[i + 1 : i + 4], 8))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return bytes(out)


async def in_fresh_thread(fn: Callable[[], T]) -> T:
    """Run ``fn`` in a new OS thread that exits afterwards (it may leave namespaces changed)."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()

    def deliver(value: T) -> None:
        if not fut.cancelled():
            fut.set_result(value)

    def fail(exc: BaseException) -> None:
        if not fut.cancelled():
            fut.set_exception(exc)

    def body() -> None:
        try:
            result = fn()
        except BaseException as exc:
            loop.call_soon_threadsafe(fail, exc)
        else:
            loop.call_soon_threadsafe(deliver, result)

    threading.Thread(target=body, name="sycri-ns", daemon=True).start()
    return await asyncio.shield(fut)
