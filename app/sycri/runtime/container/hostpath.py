"""Volume host paths as the host sees them, from inside sycri's own container.

In the node image sycri's ``/root`` or ``/etc/ssl/certs`` are the image's, not the host's.
The chart mounts the host's ``/`` at ``host_root`` (``/host``); a pod's host path is
resolved under it, symlinks included, as if ``host_root`` were ``/``: an absolute link
``/etc`` in the host's tree means the host's ``/etc`` (``<host_root>/etc``), never
sycri's, and ``..`` stops at ``host_root``. The kernel does that walk itself with
``openat2(RESOLVE_IN_ROOT)`` (Linux 5.6); older kernels get the same walk done here.
Paths under sycri's own directories (run, root and pod log dirs, which it shares with
the host at the same path) are used as they are.

The resolved path (no symlinks left in it) is what runc bind-mounts. A path that cannot
be resolved is refused naming it: never replaced by whatever the image has there.
"""

from __future__ import annotations

import ctypes
import errno
import os
import posixpath
from collections.abc import Iterable

from sycri import fsutil
from sycri.api import api_pb2
from sycri.errors import InvalidArgument, excerpt

SYS_OPENAT2 = 437  # the same number on every architecture (the generic syscall table)
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_openat2_works: bool | None = None


def resolve(host_root: str, path: str) -> str:
    """``path`` of the host, as sycri reaches it: under ``host_root``, every symlink
    resolved inside it. OSError (ENOENT, ELOOP, EACCES...) when it cannot be."""
    global _openat2_works
    if "\x00" in path:
        raise OSError(errno.EINVAL, "path contains a NUL byte")
    root = os.path.realpath(host_root)
    if _openat2_works is not False:
        try:
            return _resolve_openat2(root, path)
        except OSError as exc:
            if exc.errno not in (errno.ENOSYS, errno.EPERM):  # EPERM: a seccomp filter
                _openat2_works = True
                raise
            _openat2_works = False
    return _resolve_walk(root, path)


def _resolve_openat2(root: str, path: str) -> str:
    rel = path.lstrip("/") or "."
    dirfd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        how = _OpenHow(os.O_PATH | os.O_CLOEXEC, 0, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
        fd = _libc.syscall(
            SYS_OPENAT2, dirfd, os.fsencode(rel), ctypes.byref(how), ctypes.sizeof(how)
        )
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), path)
        try:
            return os.readlink(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
    finally:
        os.close(dirfd)


def _resolve_walk(root: str, path: str) -> str:
    """What RESOLVE_IN_ROOT does, one component at a time (kernels before 5.6)."""
    try:
        inner = fsutil.resolve_in_root(root, path)
    except fsutil.Unresolvable:
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path) from None
    return os.path.join(root, inner.lstrip("/")) if inner != "/" else root


def _under(path: str, dirs: Iterable[str]) -> bool:
    norm = posixpath.normpath(path)
    return any(norm == d or norm.startswith(d.rstrip("/") + "/") for d in dirs)


def resolve_mounts(
    cfg: api_pb2.ContainerConfig, host_root: str, own_dirs: Iterable[str]
) -> api_pb2.ContainerConfig:
    """A copy of ``cfg`` whose mounts name the resolved host paths (blocking). Paths
    under ``own_dirs`` stay as they are; the rest are resolved under ``host_root``."""
    own = [posixpath.normpath(d) for d in own_dirs]
    out = api_pb2.ContainerConfig()
    out.CopyFrom(cfg)
    for m in out.mounts:
        if not m.host_path.startswith("/") or _under(m.host_path, own):
            continue  # relative paths are refused by the spec builder, naming them
        try:
            m.host_path = resolve(host_root, m.host_path)
        except OSError as exc:
            where = "" if os.path.realpath(host_root) == "/" else f" (under host root {host_root})"
            problem = (
                "does not exist" if exc.errno == errno.ENOENT else f"cannot be used: {exc.strerror}"
            )
            raise InvalidArgument(
                f"mounts: host path {excerpt(m.host_path)} for "
                f"{excerpt(m.container_path)} {problem} on the host{where}"
            ) from None
    return out
