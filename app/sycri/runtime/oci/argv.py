"""What the kernel takes in one ``execve``: checked before anything runs.

A command the kernel refuses (``E2BIG``, ``Argument list too long``) or Python refuses
(``ValueError: embedded null byte``) would otherwise fail late, inside runc or conmon,
as an internal error. The limits are the kernel's: ``ARG_MAX`` (``sysconf``, a quarter of
the stack rlimit) for argv and environment together, ``MAX_ARG_STRLEN`` for one string.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from sycri.errors import InvalidArgument, excerpt

MAX_ARG_STRLEN = 32 * 4096  # linux/binfmts.h: one argument or variable, with its NUL
POINTER = 8  # each string also costs its argv/envp pointer


def arg_max() -> int:
    """The kernel's limit for argv plus environment in bytes (2 MiB with an 8 MiB stack)."""
    try:
        return int(os.sysconf("SC_ARG_MAX"))
    except (OSError, ValueError):
        return 2 * 1024 * 1024


def size(strings: Sequence[str]) -> int:
    """Bytes ``strings`` take in an ``execve``: each string, its NUL and its pointer."""
    return sum(len(s.encode()) + 1 + POINTER for s in strings)


def check(
    what: str,
    args: Sequence[str],
    env: Sequence[str] = (),
    *,
    limit: int | None = None,
    reserve: int = 0,
) -> None:
    """InvalidArgument naming ``what`` when ``args`` and ``env`` cannot be exec'd.

    ``reserve``: bytes of argv/environment the caller adds (a runtime's own arguments).
    """
    for kind, strings in (("argument", args), ("variable", env)):
        for i, s in enumerate(strings):
            if "\x00" in s:
                raise InvalidArgument(f"{what}: {kind} {i} {excerpt(s)} contains a NUL byte")
            n = len(s.encode()) + 1
            if n > MAX_ARG_STRLEN:
                raise InvalidArgument(
                    f"{what}: {kind} {i} is {n} bytes, longer than the kernel takes in one "
                    f"string ({MAX_ARG_STRLEN}; Argument list too long)"
                )
    limit = arg_max() if limit is None else limit
    total = size(args) + size(env) + reserve
    if total > limit:
        raise InvalidArgument(
            f"{what}: {total} bytes of arguments and environment are more than the kernel "
            f"takes (ARG_MAX {limit}; Argument list too long)"
        )


def environ_size() -> int:
    """Bytes of sycri's own environment, which every runtime it runs inherits."""
    return size([f"{k}={v}" for k, v in os.environ.items()])
