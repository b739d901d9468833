"""Scanning /proc for processes by what they were started with."""

from __future__ import annotations

import os
from collections.abc import Iterator


def fields(name: str) -> Iterator[tuple[int, list[bytes]]]:
    """(pid, /proc/<pid>/<name> split at NULs) for every process; ``name`` is a
    NUL-separated file such as ``cmdline`` or ``environ``. Processes that exit (or hide
    the file) while we look are skipped: a scan is a snapshot."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/{name}", "rb") as f:
                data = f.read()
        except OSError:
            continue
        yield int(entry), data.split(b"\0")
