"""Mounting a SIF's primary partition read-only, in place (no copy of the squashfs).

The kernel's squashfs through a loop device limited to the partition's bytes
(``mount -o loop,ro,offset=N,sizelimit=M``) is preferred: no daemon, page cache
shared by every container of the image. Where the kernel lacks squashfs or loop
devices (some nodes and user namespaces), ``squashfuse -o offset=N`` does the same
from userspace.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from sycri import command
from sycri.errors import excerpt
from sycri.sif.format import FsType, SifError
from sycri.sif.reader import open_sif


@dataclass(frozen=True)
class PartitionLocation:
    """Where the primary partition lies inside the SIF file."""

    path: str
    offset: int
    size: int
    fstype: int
    arch: str


@dataclass(frozen=True)
class Mounted:
    target: str
    method: str  # "loop" (kernel squashfs) or "squashfuse"
    offset: int
    size: int


def partition_location(sif_path: str | os.PathLike[str]) -> PartitionLocation:
    """Byte offset and size of the primary system partition, which must be squashfs."""
    with open_sif(sif_path) as img:
        d = img.primary_partition()
    if d.fstype != FsType.SQUASHFS:
        raise SifError(f"{sif_path}: primary partition is not squashfs (fstype {d.fstype})")
    return PartitionLocation(
        os.fspath(sif_path), d.offset, d.size, FsType.SQUASHFS, d.arch or "unknown"
    )


def is_mountpoint(target: str | os.PathLike[str]) -> bool:
    """Whether ``target`` is listed as a mount point of this mount namespace."""
    want = os.path.realpath(target)
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 4 and _unescape(fields[4]) == want:
                return True
    return False


def _unescape(path: str) -> str:
    return (
        path.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
    )


async def mount_partition(
    sif_path: str | os.PathLike[str],
    target_dir: str | os.PathLike[str],
    *,
    readonly: bool = True,
    methods: tuple[str, ...] = ("loop", "squashfuse"),
) -> Mounted:
    """Mount the primary partition of ``sif_path`` on ``target_dir`` (which must exist).

    Tries the kernel first, then squashfuse; raises SifError with both failures.
    """
    if not readonly:
        raise SifError("a squashfs partition can only be mounted read-only")
    loc = partition_location(sif_path)
    source, target = os.path.realpath(sif_path), os.path.realpath(target_dir)
    if not os.path.isdir(target):
        raise SifError(f"mount target {excerpt(str(target_dir))} is not a directory")
    failures = []
    for method in methods:
        if method == "loop":
            argv = [
                "mount",
                "-t",
                "squashfs",
                "-o",
                f"loop,ro,nodev,offset={loc.offset},sizelimit={loc.size}",
                source,
                target,
            ]
        elif method == "squashfuse":
            opts = f"ro,allow_other,default_permissions,offset={loc.offset}"
            argv = ["squashfuse", "-o", opts, source, target]
        else:
            raise SifError(f"unknown mount method {excerpt(method)}")
        try:
            result = await command.run(argv, timeout=60, check=False, label=f"mount-{method}")
        except FileNotFoundError:
            failures.append(f"{method}: {argv[0]} not installed")
            continue
        if result.ok and is_mountpoint(target):
            return Mounted(target, method, loc.offset, loc.size)
        err = (result.stderr or result.stdout).decode(errors="replace").strip()
        failures.append(f"{method}: {err[-300:] or f'exit {result.returncode}'}")
    raise SifError(f"cannot mount the partition of {sif_path}: " + "; ".join(failures))


async def unmount(target_dir: str | os.PathLike[str]) -> None:
    """Unmount ``target_dir`` (loop devices made by ``mount -o loop`` are freed by umount)."""
    target = os.path.realpath(target_dir)
    if not is_mountpoint(target):
        return
    result = await command.run(["umount", target], timeout=60, check=False, label="umount")
    if not result.ok and is_mountpoint(target):
        err = result.stderr.decode(errors="replace").strip()
        raise SifError(f"cannot unmount {target}: {err[-300:]}")
