"""Small filesystem primitives: atomic writes, confined paths, paths resolved inside an
image, listings of optional directories."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import posixpath
import stat
import tempfile
from collections import deque
from pathlib import Path
from typing import Any

from sycri.errors import InvalidArgument, excerpt


def atomic_write(path: str | os.PathLike[str], data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` so that readers (and a crash) see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_json(path: str | os.PathLike[str], obj: Any, mode: int = 0o644) -> None:
    atomic_write(path, json.dumps(obj, sort_keys=True, indent=1).encode(), mode)


def names_in(directory: str | os.PathLike[str]) -> list[str]:
    """The entries of ``directory``, sorted; none when it is missing or cannot be read.

    For directories of optional files (CDI specs, driver libraries, CNI configs) where an
    absent directory means nothing is configured there, not an error.
    """
    try:
        return sorted(os.listdir(directory))
    except OSError:
        return []


def confined(root: str | os.PathLike[str], relative: str, what: str = "path") -> Path:
    """``root/relative`` with ``..`` and symlinks resolved, refused if it leaves ``root``."""
    if "\x00" in relative:
        raise InvalidArgument(f"{what} {excerpt(relative)} contains a NUL byte")
    base = Path(root).resolve()
    target = (base / relative.lstrip("/")).resolve()
    if target != base and base not in target.parents:
        raise InvalidArgument(f"{what} {excerpt(relative)} escapes {base}")
    return target


MAX_LINKS = 40  # symlinks followed in one resolution, as the kernel (ELOOP)


class Unresolvable(Exception):
    """Only the container runtime can tell where the path leads: it reaches one of the
    spec's mount points (or a missing dir one is made below), or its links loop."""


def resolve_in_root(
    root: str, path: str, mounts: frozenset[str] = frozenset(), lenient: bool = False
) -> str:
    """``path`` as a process whose root is ``root`` reaches it: symlinks resolved inside
    ``root`` (an absolute link starts again there; ``..`` stops there), returned as an
    absolute path within it. FileNotFoundError or NotADirectoryError when it is not
    there; Unresolvable at a path in ``mounts`` or a loop. ``lenient``: from the first
    part that does not exist the rest is taken as written (runc makes a missing mount
    point). For an image's files (read-only): nothing moves them while this runs."""
    parts = deque(path.split("/"))
    cur = "/"
    links = 0
    while parts:
        part = parts.popleft()
        if part in ("", "."):
            continue
        if part == "..":
            cur = posixpath.dirname(cur)
            continue
        nxt = posixpath.join(cur, part)
        if nxt in mounts:
            raise Unresolvable(nxt)
        try:
            st = os.lstat(root + nxt)
        except FileNotFoundError:
            if lenient:
                return posixpath.normpath(posixpath.join(nxt, *parts))
            if any(m.startswith(nxt + "/") for m in mounts):
                raise Unresolvable(nxt) from None  # runc makes it, for a mount below
            raise
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > MAX_LINKS:
                raise Unresolvable(nxt)
            target = os.readlink(root + nxt)
            if target.startswith("/"):
                cur = "/"
            parts.extendleft(reversed(target.split("/")))
            continue
        if parts and not stat.S_ISDIR(st.st_mode):
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), nxt)
        cur = nxt
    return cur


class NotRegular(Exception):
    """The path names something other than a regular file; ``kind`` says what."""

    def __init__(self, path: str, kind: str) -> None:
        super().__init__(f"{path} is a {kind}, not a regular file")
        self.path, self.kind = path, kind


_KINDS = (
    (stat.S_ISDIR, "directory"),
    (stat.S_ISFIFO, "FIFO"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
)


def kind_of(mode: int) -> str:
    """What a file of ``mode`` is, in words."""
    if stat.S_ISREG(mode):
        return "regular file"
    return next((kind for test, kind in _KINDS if test(mode)), "special file")


def read_in_root(root: str, path: str, limit: int) -> bytes | None:
    """At most ``limit`` bytes of the regular file ``path`` inside ``root`` (as
    :func:`resolve_in_root` reaches it); None when it is missing or cannot be reached.
    An untrusted image may put a FIFO or a device where a file is looked for: opening a
    FIFO blocks until a writer comes, so only a regular file is opened; anything else
    raises NotRegular."""
    try:
        inner = resolve_in_root(root, path)
        mode = os.lstat(root + inner).st_mode
    except (OSError, Unresolvable):
        return None
    if not stat.S_ISREG(mode):
        raise NotRegular(inner, kind_of(mode))
    try:
        fd = os.open(root + inner, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        return f.read(limit)
