"""Mounting a SIF's primary partition read-only, in place (no copy of the squashfs)."""

from __future__ import annotations

import os
from dataclasses import dataclass

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


def partition_location(sif_path: str | os.PathLike[str]) -> PartitionLocation:
    """Byte offset and size of the primary system partition (squashfs)."""
    with open_sif(sif_path) as img:
        d = img.primary_partition()
    if d.fstype != FsType.SQUASHFS:
        raise SifError(f"{sif_path}: primary partition is not squashfs (fstype {d.fstype})")
    return PartitionLocation(os.fspath(sif_path), d.offset, d.size, d.fstype, d.arch or "unknown")


async def mount_partition(
    sif_path: str | os.PathLike[str], target_dir: str | os.PathLike[str], *, readonly: bool = True
) -> str:
    """Mount the primary partition on ``target_dir``; returns the method used."""
    raise NotImplementedError


async def unmount(target_dir: str | os.PathLike[str]) -> None:
    raise NotImplementedError
