"""Where conmon lives: a cgroup of its own, never sycri's.

A container engine stops the sycri pod by killing every process of its cgroup. A conmon
left in that cgroup dies with it: the container runs on unmonitored, its log stops, attach
fails and its exit code is lost. So conmon goes where CRI-O puts it (``conmon_cgroup``):
beside the container in the pod's cgroup (``pod``), or under a configured cgroup; always
in a leaf of its own (``sycri-conmon-<id>``), because cgroup v2 refuses processes in a
cgroup whose children use controllers. With the systemd driver the leaf is a transient
scope ``sycri-conmon-<id>.scope`` in the pod's (or the configured) slice.

conmon is placed before it runs: a ``/bin/sh`` wrapper writes its own pid to the leaf's
``cgroup.procs`` files and then execs conmon (``systemd-run --scope`` does the same for a
scope). Moving conmon's pid after the spawn would race with conmon's fork of the monitor
and of runc, which could start in sycri's cgroup; ``preexec_fn`` is unsafe in a process
with threads. The path functions are pure; the directory functions touch only the leaf.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import posixpath
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from sycri.errors import InvalidArgument
from sycri.runtime.cgroups import cgroups

log = logging.getLogger("sycri.conmon")

POD = "pod"
PREFIX = "sycri-conmon-"
MOUNT_PREFIX = "sycri-mount-"
INIT_PREFIX = "sycri-init-"  # the pod's init (catatonit and its holder)
INIT_RECORD = "init.cgroup"  # in the pod's run dir
MOUNTS_CGROUP = "/sycri-mounts"  # squashfuse's parent with cgroupfs and ``pod``
MOUNTS_SLICE = "system.slice"  # ...and with systemd
RECORD = "conmon.cgroup"  # in the bundle: the leaf directories, written before they exist

# Joins every cgroup named before "--", then runs the rest; exit 125 names the one refused.
_JOIN = (
    'while [ "$1" != -- ]; do echo $$ > "$1" || '
    '{ echo "sycri: cannot move conmon into $1" >&2; exit 125; }; shift; done; '
    'shift; exec "$@"'
)


@dataclass(frozen=True)
class Placement:
    driver: str  # cgroupfs or systemd
    path: str  # cgroupfs: the leaf's path from the hierarchy root; systemd: the slice
    unit: str = ""  # systemd: the transient scope


def check_setting(value: str) -> str | None:
    """Why ``conmon_cgroup`` cannot be used, or None: ``pod``, a cgroup path or a slice."""
    if value == POD:
        return None
    try:
        if value.startswith("/"):
            cgroups.relative_path("cgroupfs", value)
        else:
            cgroups.systemd_slice_path(value)
    except InvalidArgument:
        return f"{value!r} is not 'pod', an absolute cgroup path or a systemd slice name"
    return None


def placement(setting: str, driver: str, container_cgroup: str, container_id: str) -> Placement:
    """conmon's cgroup for a container whose own cgroup is ``container_cgroup`` (as runc
    gets it: a cgroupfs path, or systemd's ``slice:prefix:name``)."""
    if setting == POD:
        if driver == "systemd":
            parent = container_cgroup.split(":", 1)[0] or "system.slice"
        else:
            parent = posixpath.dirname(container_cgroup) or "/"
    else:
        parent = _configured(setting, driver)
    return _leaf(driver, parent, PREFIX + container_id)


def mount_placement(setting: str, driver: str, name: str) -> Placement:
    """The cgroup of the squashfuse process serving image mount ``name``.

    It serves every container of its image, across pods, so it cannot live in a pod's
    cgroup; and like conmon it must outlive sycri's cgroup, or every container of the
    image loses its files when sycri's pod is stopped. With ``pod`` it goes in the
    node's own part of the tree (``system.slice`` under systemd, ``/sycri-mounts`` with
    cgroupfs), else under the configured cgroup; a leaf per image either way."""
    if setting == POD:
        parent = MOUNTS_SLICE if driver == "systemd" else MOUNTS_CGROUP
    else:
        parent = _configured(setting, driver)
    return _leaf(driver, parent, MOUNT_PREFIX + name)


def init_placement(driver: str, pod_cgroup: str, sandbox_id: str) -> Placement:
    """The cgroup of the pod's init: a leaf of the pod's cgroup (``pod_cgroup``, its path
    with cgroupfs, its slice with systemd), as containerd gives the pause container one.

    In the pod's cgroup itself it would break cgroup v2's rule that a cgroup whose
    children use controllers holds no process: the kernel makes the containers' cgroups
    invalid (cgroupfs: runc "cannot enter cgroupv2 ... invalid state"; systemd: their
    scopes fail with "Structure needs cleaning")."""
    return _leaf(driver, pod_cgroup, INIT_PREFIX + sandbox_id)


def _configured(setting: str, driver: str) -> str:
    """The parent a configured ``conmon_cgroup`` names, for ``driver``."""
    if driver == "systemd":
        if setting.startswith("/"):
            raise InvalidArgument(
                f"conmon_cgroup {setting!r}: the systemd driver needs a slice name"
            )
        return setting
    if setting.startswith("/"):
        return cgroups.relative_path("cgroupfs", setting)
    return cgroups.systemd_slice_path(setting)  # where systemd would put that slice


def _leaf(driver: str, parent: str, name: str) -> Placement:
    if driver == "systemd":
        cgroups.systemd_slice_path(parent)  # refuses a bad slice name
        return Placement("systemd", parent, f"{name}.scope")
    return Placement("cgroupfs", posixpath.join(parent, name))


def hierarchies(version: int, root: str = cgroups.CGROUP_ROOT) -> list[str]:
    """Every mounted hierarchy: conmon leaves sycri's cgroup in all of them, whichever
    one a container engine reads the pids it kills from."""
    if version == 2:
        return [root]
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return []
    tops = [os.path.join(root, n) for n in names]
    return [
        t for t in tops if not os.path.islink(t) and os.path.exists(os.path.join(t, "cgroup.procs"))
    ]


def leaf_dirs(place: Placement, version: int, root: str = cgroups.CGROUP_ROOT) -> list[str]:
    """The leaf's directory in every hierarchy of this host (none for a systemd scope)."""
    if place.driver == "systemd":
        return []
    rel = place.path.strip("/")
    return [os.path.join(top, rel) for top in hierarchies(version, root)]


def prefix(place: Placement, dirs: list[str]) -> list[str]:
    """What runs before conmon's argv so that conmon's first process is already in its
    cgroup (the wrapper execs conmon: the pid and the sync pipe stay conmon's)."""
    if place.driver == "systemd":
        # systemd-run registers the scope with its own pid, then execs conmon with its
        # fds and environment (the sync pipe) as they are. systemd 254+ expands $VAR in
        # a scope's command line: kubelet's names and paths have no "$".
        return [
            "systemd-run", "--scope", "--quiet", f"--unit={place.unit}",
            f"--slice={place.path}", "--",
        ]  # fmt: skip
    procs = [os.path.join(d, "cgroup.procs") for d in dirs]
    return ["/bin/sh", "-c", _JOIN, "sycri-cgroup-join", *procs, "--"]


def prepare(
    record: Path, place: Placement, version: int, root: str = cgroups.CGROUP_ROOT
) -> list[str]:
    """Write the leaf's ``record`` (``bundle/RECORD`` for a conmon), then create the leaf
    (parents too); blocking.

    The record comes first so that a crash in between leaves nothing :func:`release`
    would not find.
    """
    dirs = leaf_dirs(place, version, root)
    tmp = record.with_name(record.name + ".tmp")
    tmp.write_text(json.dumps({"placement": asdict(place), "dirs": dirs}))
    os.replace(tmp, record)
    if dirs:
        with cgroups.TREE_LOCK:  # no release takes /sycri-mounts away half-way
            # Where pod cgroups are made (cpuset sets copied, v2 controllers enabled)...
            cgroups.PodCgroup.ensure(version, place.path, root)
            for d in dirs:  # ...and the other v1 hierarchies, which need no setting up
                os.makedirs(d, exist_ok=True)
    return dirs


def recorded(record: Path) -> list[str]:
    """The leaf directories a record names ([] when there is none)."""
    try:
        data = json.loads(record.read_text())
    except (OSError, ValueError):
        return []
    dirs = data.get("dirs") if isinstance(data, dict) else None
    if not isinstance(dirs, list):
        return []
    # Only leaves sycri names: a record is ours, but never rmdir anything else.
    return [d for d in dirs if isinstance(d, str) and is_ours(d)]


def is_ours(d: str) -> bool:
    """Whether ``d`` is a leaf sycri names (conmon, squashfuse or pod init)."""
    return posixpath.basename(d).startswith((PREFIX, MOUNT_PREFIX, INIT_PREFIX))


def release(record: Path, timeout: float = 5.0) -> None:
    """Remove the leaf a record names (blocking): once its process has left it, or after
    ``timeout`` by SIGKILL of what is still in it (only a conmon or a squashfuse that
    has already been unmounted ever is), then the record."""
    dirs = recorded(record)
    deadline = time.monotonic() + timeout
    for d in dirs:
        while _pids(d) and time.monotonic() < deadline:
            time.sleep(0.02)
        for _ in range(100):
            pids = _pids(d)
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)
            time.sleep(0.01)
    with cgroups.TREE_LOCK:  # no prepare is half-way down /sycri-mounts meanwhile
        cgroups.remove_dirs(dirs)
        for d in dirs:  # /sycri-mounts itself (sycri's alone), once its last leaf is gone
            if posixpath.dirname(d).endswith(MOUNTS_CGROUP):
                with contextlib.suppress(OSError):
                    os.rmdir(posixpath.dirname(d))
    with contextlib.suppress(FileNotFoundError):
        record.unlink()


def release_if_empty(record: Path) -> bool:
    """Remove the leaf a record names, and the record, only if no process is left in it
    (blocking, never waits or kills); whether it went. An exited container's conmon
    is usually gone by the time its exit is released."""
    dirs = recorded(record)
    if any(_pids(d) for d in dirs):
        return False
    release(record)
    return True


def _pids(d: str) -> list[int]:
    try:
        return [int(p) for p in Path(d, "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []
