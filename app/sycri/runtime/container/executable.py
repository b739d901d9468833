"""Whether a container's command exists in its image, looked up as runc will.

runc checks ``args[0]`` (``exec.LookPath`` with the spec's PATH, before it waits to be
started), but runc runs only at StartContainer now. A command missing from the image
is the request's mistake, so CreateContainer looks first and refuses it there. Only a
certain answer refuses: a path that crosses a mount of the spec (a volume, ``/dev``,
``/proc``), a relative PATH entry or a symlink loop is left to runc.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import stat
from typing import Any

from sycri.fsutil import Unresolvable, resolve_in_root


def problem(root: str, spec: dict[str, Any]) -> str | None:
    """Why the command of ``spec`` cannot run from the image at ``root`` ("not found",
    "not executable"), or None: it can, or only runc can tell."""
    process = spec.get("process") or {}
    args = process.get("args") or []
    if not args or not args[0]:
        return None
    name = str(args[0])
    mounts = _mount_points(root, spec)
    try:
        if "/" in name:
            path = posixpath.join(str(process.get("cwd") or "/"), name)
            return _check(root, path, mounts)
        path_var: str | None = None
        for item in process.get("env") or []:
            if str(item).startswith("PATH="):
                path_var = str(item)[5:]  # the last one wins, as in runc's environment
        if path_var is None:
            return None
        for d in path_var.split(":"):
            if not d.startswith("/"):
                raise Unresolvable  # relative to the working directory: runc's call
            if _check(root, posixpath.join(d, name), mounts) is None:
                return None
        return "not found in PATH " + path_var
    except Unresolvable:
        return None


def _mount_points(root: str, spec: dict[str, Any]) -> frozenset[str]:
    """The spec's mount destinations, resolved in the image as runc resolves them."""
    out = set()
    for m in spec.get("mounts") or []:
        dest = m.get("destination") or ""
        if dest.startswith("/"):
            out.add(posixpath.normpath(dest))
            with contextlib.suppress(Unresolvable, OSError):
                out.add(resolve_in_root(root, dest, frozenset(), lenient=True))
    return frozenset(out)


def _check(root: str, path: str, mounts: frozenset[str]) -> str | None:
    """None when ``path`` is an executable file of the image; why not otherwise."""
    try:
        resolved = resolve_in_root(root, path, mounts)
        st = os.lstat(root + resolved)
    except FileNotFoundError:
        return "not found"
    except NotADirectoryError:
        return "not found"
    except OSError:
        raise Unresolvable from None
    if stat.S_ISDIR(st.st_mode) or not st.st_mode & 0o111:
        return "not executable"
    return None
