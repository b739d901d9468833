"""The primary partition mounts in place (kernel loop device, or squashfuse) and shows its files."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest
from sycri.sif import (
    JsonObject,
    PartitionObject,
    SifError,
    mount_partition,
    partition_location,
    unmount,
    write_sif,
)
from sycri.sif.mount import is_mountpoint

from tests.support.sif import make_squashfs, tree

pytestmark = pytest.mark.root

FILES = {"etc/os-release": b"NAME=sycri-test\n", "usr/bin/tool": b"\x7fELF" + bytes(5000)}


@pytest.fixture
def image(tmp_path: Path) -> Path:
    sqfs = make_squashfs(tree(tmp_path / "rootfs", FILES), tmp_path / "rootfs.sqfs")
    out = tmp_path / "image.sif"
    write_sif(out, [JsonObject("oci-config.json", b"{}"), PartitionObject(str(sqfs))])
    return out


def _loops_for(path: Path) -> str:
    return subprocess.run(
        ["losetup", "-j", str(path)], capture_output=True, text=True, check=True
    ).stdout


@pytest.mark.parametrize("method", ["loop", "squashfuse"])
def test_mounted_partition_shows_the_files(tmp_path: Path, image: Path, method: str) -> None:
    target = tmp_path / "mnt"
    target.mkdir()

    async def scenario() -> None:
        mounted = await mount_partition(image, target, methods=(method,))
        try:
            assert mounted.method == method
            loc = partition_location(image)
            assert (mounted.offset, mounted.size) == (loc.offset, loc.size)
            assert loc.offset % 4096 == 0
            for rel, data in FILES.items():
                assert (target / rel).read_bytes() == data
            with pytest.raises(OSError):
                (target / "new-file").write_bytes(b"x")  # read-only
        finally:
            await unmount(target)
        assert not is_mountpoint(target)
        assert list(target.iterdir()) == []

    asyncio.run(scenario())
    assert _loops_for(image) == ""  # the loop device went away with the mount


def test_default_mount_prefers_the_kernel(tmp_path: Path, image: Path) -> None:
    target = tmp_path / "mnt"
    target.mkdir()

    async def scenario() -> str:
        mounted = await mount_partition(image, target)
        try:
            return mounted.method
        finally:
            await unmount(target)

    assert asyncio.run(scenario()) == "loop"
    asyncio.run(unmount(target))  # unmounting twice is harmless


def test_no_partition_no_mount(tmp_path: Path) -> None:
    out = tmp_path / "config-only.sif"
    write_sif(out, [JsonObject("oci-config.json", b"{}")])
    (tmp_path / "mnt").mkdir()
    with pytest.raises(SifError, match="no primary system partition"):
        asyncio.run(mount_partition(out, tmp_path / "mnt"))
    assert not is_mountpoint(tmp_path / "mnt")


def test_bad_partition_fails_cleanly(tmp_path: Path) -> None:
    junk = tmp_path / "junk.img"
    junk.write_bytes(b"not a squashfs" * 1000)
    out = tmp_path / "bad.sif"
    write_sif(out, [PartitionObject(str(junk))])
    (tmp_path / "mnt").mkdir()
    with pytest.raises(SifError, match="cannot mount"):
        asyncio.run(mount_partition(out, tmp_path / "mnt"))
    assert not is_mountpoint(tmp_path / "mnt")
    assert _loops_for(out) == ""
