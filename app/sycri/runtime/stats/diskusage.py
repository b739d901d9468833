"""Bytes and inodes a directory tree uses: a container's writable layer (overlay upper).

Bytes are allocated blocks (``st_blocks`` * 512, like ``du``), so sparse files count
what they really take; a hard-linked file counts once. Symlinks are never followed and
the walk stays on the directory's filesystem.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class DiskUsage:
    bytes: int
    inodes: int


def dir_usage(path: str) -> DiskUsage:
    """Usage of ``path`` and everything under it (blocking). Missing path: zero."""
    try:
        top = os.lstat(path)
    except FileNotFoundError:
        return DiskUsage(0, 0)
    seen: set[tuple[int, int]] = set()  # only files with several links
    total, inodes = top.st_blocks * 512, 1
    stack = [path]
    while stack:
        d = stack.pop()
        try:
            it = os.scandir(d)
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        with it:
            for entry in it:
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if st.st_nlink > 1 and not entry.is_dir(follow_symlinks=False):
                    key = (st.st_dev, st.st_ino)
                    if key in seen:
                        continue
                    seen.add(key)
                total += st.st_blocks * 512
                inodes += 1
                if entry.is_dir(follow_symlinks=False) and st.st_dev == top.st_dev:
                    stack.append(entry.path)
    return DiskUsage(total, inodes)


def mountpoint_of(path: str) -> str:
    """The mount point of the filesystem holding ``path`` (for FilesystemIdentifier)."""
    p = os.path.realpath(path)
    while not os.path.exists(p) and p != "/":
        p = os.path.dirname(p)
    while p != "/" and not os.path.ismount(p):
        p = os.path.dirname(p)
    return p
