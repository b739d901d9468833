"""Small filesystem primitives: atomic writes, confined paths, listings of optional directories."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
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
