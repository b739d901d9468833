"""Pod user namespaces (Kubernetes ``hostUsers: false``).

The pure half (``idmaps``: the mappings, validated from the CRI request) is re-exported
here; this module is the edge that creates the namespaces and idmapped mounts.

Why a child process: sycri's pod namespaces are unshared in a thread of a
multi-threaded process, where the kernel refuses ``CLONE_NEWUSER``. So a short-lived
``unshare --user --net --ipc --uts`` child creates the user namespace and the pod's
network, IPC and UTS namespaces together (the kernel creates the user namespace first,
so it owns the others: sysfs, mqueue and network sysctls then work inside it); sycri
writes the child's ``uid_map``/``gid_map`` from outside (root in the parent namespace
needs no ``newuidmap``), pins all four by bind mount and lets the child go.

Why idmapped mounts: the image's files are owned by host root, which the pod's user
namespace does not map, so its root could neither write its root filesystem nor own
anything in it. runc 1.1 cannot make idmapped mounts (``idmap`` came in runc 1.2), and
an overlay mount cannot be idmapped itself; so sycri clones the image's squashfs mount
with ``open_tree(OPEN_TREE_CLONE)``, idmaps the clone with ``mount_setattr`` against
the pod's user namespace and uses it as the overlay's lower layer (overlayfs takes
idmapped layers since Linux 5.19), with an upper directory owned by the mapped root.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from sycri.errors import Internal
from sycri.runtime.pod.idmaps import MAX_ID, IDMap, Mappings, container_mode_ok, plan

# The pure half, named through this module by the pod and container lifecycles.
__all__ = [
    "MAX_ID",
    "IDMap",
    "Mappings",
    "container_mode_ok",
    "create_pinned",
    "idmap_volumes",
    "idmap_works",
    "mount_idmapped",
    "plan",
    "volume_mounts",
]

log = logging.getLogger("sycri.userns")


# --- edge: namespaces ------------------------------------------------------------------

KINDS = ("user", "net", "ipc", "uts")


@contextlib.asynccontextmanager
async def _holder(mappings: Mappings, *kinds: str) -> AsyncIterator[int]:
    """A child in a new user namespace (plus new ``kinds``: net, ipc, uts) whose id
    maps sycri has written; yields its pid and ends it afterwards (no zombie)."""
    flags = [f"--{k}" for k in kinds]
    # Not command.run: this child must stay alive while the caller works with it.
    proc = await asyncio.create_subprocess_exec(
        "unshare",
        "--user",
        *flags,
        "--",
        "/bin/sh",
        "-c",
        "echo ready && exec cat",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 10)
        if line.strip() != b"ready":
            err = b""
            with contextlib.suppress(asyncio.TimeoutError):
                err = await asyncio.wait_for(proc.stderr.read(), 2)
            raise Internal(
                "creating a user namespace failed: " + err.decode(errors="replace")[:300]
            )
        Path(f"/proc/{proc.pid}/uid_map").write_text(mappings.uids.line())
        Path(f"/proc/{proc.pid}/gid_map").write_text(mappings.gids.line())
        yield proc.pid
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        with contextlib.suppress(Exception):
            await proc.communicate()


async def create_pinned(mappings: Mappings, targets: dict[str, Path]) -> None:
    """Create a user namespace with ``mappings`` owning new net/ipc/uts namespaces and pin
    each at ``targets[kind]`` (kinds from :data:`KINDS`). Nothing is left on failure."""
    from sycri.runtime import linux
    from sycri.runtime.pod import namespaces

    done: list[Path] = []
    try:
        async with _holder(mappings, "net", "ipc", "uts") as pid:
            for kind in KINDS:
                target = targets[kind]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.touch(mode=0o444, exist_ok=True)
                linux.mount(f"/proc/{pid}/ns/{kind}", target, None, linux.MS_BIND)
                done.append(target)
    except BaseException:
        for target in done:
            namespaces.release(target)
        raise


_probed: bool | None = None
_probe_lock = asyncio.Lock()


async def idmap_works() -> bool:
    """Whether this kernel idmaps a squashfs mount (the image layer sycri idmaps), tried
    once for real: a tiny squashfs, a user namespace, open_tree + mount_setattr."""
    global _probed
    async with _probe_lock:
        if _probed is None:
            from sycri.runtime import linux

            try:
                await linux.in_fresh_thread(_probe_idmap)
                _probed = True
            except Exception as e:  # any failure means "no"
                log.info("idmapped squashfs mounts do not work here: %s", e)
                _probed = False
    return _probed


def _probe_idmap() -> None:
    """Blocking, in a throw-away thread: raises unless a squashfs mount can be idmapped.

    The thread first takes a private mount namespace, so its squashfs mount dies with
    it (even if sycri is killed half way) and the host never sees it. The programs are
    run with :mod:`subprocess` from this thread, not :mod:`sycri.command` from the event
    loop: only children forked here inherit the private mount namespace.
    """
    from sycri.runtime import linux

    linux.unshare(linux.CLONE_NEWNS)
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
    tmp = Path(tempfile.mkdtemp(prefix="sycri-idmap-probe-"))
    mnt = tmp / "mnt"
    try:
        (tmp / "empty").mkdir()
        mnt.mkdir()
        img = tmp / "probe.sqfs"
        for argv in (
            ["mksquashfs", str(tmp / "empty"), str(img), "-quiet", "-noappend"],
            ["mount", "-t", "squashfs", "-o", "ro,loop", str(img), str(mnt)],
        ):
            subprocess.run(argv, check=True, capture_output=True, timeout=30)
        with subprocess.Popen(
            ["unshare", "--user", "--", "/bin/sh", "-c", "echo ready && exec cat"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        ) as holder:
            try:
                assert holder.stdout is not None
                if holder.stdout.readline().strip() != b"ready":
                    raise Internal("unshare --user failed")
                Path(f"/proc/{holder.pid}/uid_map").write_text("0 1000 1\n")
                Path(f"/proc/{holder.pid}/gid_map").write_text("0 1000 1\n")
                os.close(_idmap_clone(mnt, f"/proc/{holder.pid}/ns/user"))
            finally:
                holder.kill()
                holder.communicate()
    finally:
        with contextlib.suppress(OSError):
            linux.umount(mnt, linux.MNT_DETACH)
        shutil.rmtree(tmp, ignore_errors=True)


# --- edge: idmapped mounts -------------------------------------------------------------

_SYS_OPEN_TREE = {"x86_64": 428, "aarch64": 428}
_SYS_MOVE_MOUNT = {"x86_64": 429, "aarch64": 429}
_SYS_MOUNT_SETATTR = {"x86_64": 442, "aarch64": 442}
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_IDMAP = 0x00100000

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def _nr(table: dict[str, int]) -> int:
    machine = os.uname().machine
    if machine not in table:
        raise Internal(f"idmapped mounts: no system call numbers known for {machine}")
    return table[machine]


def _sys(what: str, nr: int, *args: object) -> int:
    rc: int = _libc.syscall(ctypes.c_long(nr), *args)  # libc's syscall() returns a C long
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return rc


def _idmap_clone(
    source: str | os.PathLike[str], userns_path: str | os.PathLike[str], recursive: bool = False
) -> int:
    """A detached clone of ``source`` (with its submounts when ``recursive``) idmapped
    through ``userns_path`` (an fd the caller closes)."""
    rec = AT_RECURSIVE if recursive else 0
    tree = _sys(
        "open_tree",
        _nr(_SYS_OPEN_TREE),
        ctypes.c_int(AT_FDCWD),
        os.fsencode(source),
        ctypes.c_uint(OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | rec),
    )
    try:
        ns = os.open(userns_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            attr = _MountAttr(MOUNT_ATTR_IDMAP, 0, 0, ns)
            _sys(
                "mount_setattr",
                _nr(_SYS_MOUNT_SETATTR),
                ctypes.c_int(tree),
                b"",
                ctypes.c_uint(AT_EMPTY_PATH | rec),
                ctypes.byref(attr),
                ctypes.c_size_t(ctypes.sizeof(attr)),
            )
        finally:
            os.close(ns)
    except BaseException:
        os.close(tree)
        raise
    return tree


def mount_idmapped(
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    userns_path: str | os.PathLike[str],
    recursive: bool = False,
) -> None:
    """Blocking: bind ``source`` onto ``target`` with its ids mapped through the user
    namespace at ``userns_path``: a file of host uid ``h`` shows as the namespace's uid
    ``h`` (files of host root belong to the namespace's root)."""
    tree = _idmap_clone(source, userns_path, recursive)
    try:
        _sys(
            "move_mount",
            _nr(_SYS_MOVE_MOUNT),
            ctypes.c_int(tree),
            b"",
            ctypes.c_int(AT_FDCWD),
            os.fsencode(target),
            ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH),
        )
    finally:
        os.close(tree)


# --- volumes -----------------------------------------------------------------------------


def volume_mounts(spec: dict[str, Any], requested: set[str]) -> list[int]:
    """Indexes of the spec's mounts to idmap: the request's own bind mounts (volumes)
    with private propagation. A propagating volume stays a plain bind: a detached clone
    would cut it from its peers."""
    picked = []
    for i, m in enumerate(spec.get("mounts", [])):
        opts = m.get("options") or []
        if m.get("type") == "bind" and m["destination"] in requested and "rprivate" in opts:
            picked.append(i)
    return picked


def idmap_volumes(
    spec: dict[str, Any], requested: set[str], bundle: Path, userns_path: str
) -> list[str]:
    """Blocking: replace each picked volume's source with an idmapped clone under
    ``bundle/volumes`` (runc 1.1 cannot idmap a mount itself), so the pod's root owns
    what host root owns there and what it writes is host root's on disk. A volume on a
    filesystem that cannot be idmapped stays a plain bind (its files then show as
    ``nobody``); those host paths are returned."""
    plain = []
    for i in volume_mounts(spec, requested):
        m = spec["mounts"][i]
        source = m["source"]
        clone = bundle / "volumes" / str(i)
        clone.parent.mkdir(mode=0o711, exist_ok=True)
        if os.path.isdir(source):
            clone.mkdir(exist_ok=True)
        elif os.path.isfile(source):
            clone.touch(mode=0o600, exist_ok=True)
        else:
            plain.append(source)
            continue
        try:
            mount_idmapped(source, clone, userns_path, recursive=True)
        except OSError as e:
            log.info("volume %s cannot be idmapped (%s): a plain bind mount", source, e)
            plain.append(source)
            continue
        m["source"] = str(clone)
    return plain
