"""A cgroup for sycri itself, as a container engine gives the sycri pod one, and the
way that engine stops the pod: every process of the cgroup SIGKILLed at once.

The cgroup is made below this test's own cgroup in every hierarchy (so the test's
accounting still covers sycri) and removed afterwards.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")


def _own_paths() -> dict[str, str]:
    """Controller (or ``name=x``; ``""`` for the unified hierarchy) -> this process's cgroup."""
    out: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        for c in ctrls.split(",") if ctrls else [""]:
            out[c] = path
    return out


def _hierarchies() -> list[tuple[Path, str]]:
    """(mount directory, this process's cgroup there) for every mounted hierarchy."""
    own = _own_paths()
    if (ROOT / "cgroup.controllers").exists():
        return [(ROOT, own[""])]
    out = []
    for top in sorted(ROOT.iterdir()):
        if top.is_symlink() or not (top / "cgroup.procs").exists():
            continue
        name = top.name
        key = "" if name == "unified" else f"name={name}" if name == "systemd" else name
        first = name.split(",")[0]
        path = own.get(key, own.get(first))
        if path is not None:
            out.append((top, path))
    return out


def make(name: str) -> list[Path]:
    """``name`` below this process's cgroup, in every hierarchy; its directories."""
    made: list[Path] = []
    try:
        for top, path in _hierarchies():
            d = top / path.lstrip("/") / name
            d.mkdir()
            made.append(d)
            if top.name == "cpuset":
                for f in ("cpuset.cpus", "cpuset.mems"):
                    (d / f).write_text((d.parent / f).read_text().strip() or "\n")
    except BaseException:
        remove(made)
        raise
    return made


def pids(dirs: list[Path]) -> set[int]:
    out: set[int] = set()
    for d in dirs:
        with contextlib.suppress(OSError):
            out |= {int(p) for p in (d / "cgroup.procs").read_text().split()}
    return out


def kill_all(dirs: list[Path], timeout: float = 30.0) -> None:
    """SIGKILL every process in the cgroup: ``cgroup.kill`` on v2, else each pid in
    ``cgroup.procs`` until none is left (as runc and systemd do on v1)."""
    deadline = time.monotonic() + timeout
    for d in dirs:
        if (d / "cgroup.kill").exists():
            (d / "cgroup.kill").write_text("1")
    while left := pids(dirs):
        assert time.monotonic() < deadline, f"processes outlived SIGKILL: {sorted(left)}"
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)


def remove(dirs: list[Path]) -> None:
    for d in dirs:
        with contextlib.suppress(FileNotFoundError):
            d.rmdir()
