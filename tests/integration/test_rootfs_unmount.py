"""Unmounting container root filesystems: a mount is gone afterwards (a busy one is
detached, not leaked), and a path with nothing mounted on it is left alone."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest
from sycri.errors import Internal
from sycri.runtime.container import rootfs

pytestmark = pytest.mark.root


def _tmpfs(target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "sycri-test", str(target)], check=True)


def test_unmount_removes_the_mount(tmp_path):
    target = tmp_path / "m"
    _tmpfs(target)
    (target / "f").write_text("x")
    asyncio.run(rootfs.unmount(target))
    assert str(target) not in rootfs.mounted_targets()
    assert not (target / "f").exists()


def test_unmount_of_a_busy_mount_detaches_it(tmp_path):
    target = tmp_path / "m"
    _tmpfs(target)
    (target / "f").write_text("still readable")
    fd = os.open(target / "f", os.O_RDONLY)  # keeps the mount busy
    try:
        asyncio.run(rootfs.unmount(target))
        assert str(target) not in rootfs.mounted_targets()
        assert os.pread(fd, 100, 0) == b"still readable"
    finally:
        os.close(fd)


def test_unmount_where_nothing_is_mounted_leaves_the_path_alone(tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "keep").write_text("k")
    asyncio.run(rootfs.unmount(plain))
    asyncio.run(rootfs.unmount(tmp_path / "missing"))
    assert (plain / "keep").read_text() == "k"


def test_remove_overlay_unmounts_everything_below_the_bundle_then_deletes_it(tmp_path):
    bundle = tmp_path / "bundle"
    _tmpfs(bundle / "rootfs")
    _tmpfs(bundle / "rootfs" / "vol")
    _tmpfs(bundle / "other")
    asyncio.run(rootfs.remove_overlay(bundle))
    assert not [m for m in rootfs.mounted_targets() if m.startswith(str(bundle))]
    assert not bundle.exists()


def test_remove_overlay_refuses_to_delete_through_a_mount_it_cannot_remove(tmp_path):
    """Two mounts stacked on one point: one unmount leaves the lower one in place, and
    the bundle is not deleted through it."""
    bundle = tmp_path / "bundle"
    _tmpfs(bundle / "rootfs")
    (bundle / "rootfs" / "lower-file").write_text("x")
    subprocess.run(["mount", "-t", "tmpfs", "sycri-test", str(bundle / "rootfs")], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "sycri-test", str(bundle / "rootfs")], check=True)
    try:
        with pytest.raises(Internal, match="still mounted"):
            asyncio.run(rootfs.remove_overlay(bundle))
        assert bundle.is_dir()
    finally:
        while str(bundle / "rootfs") in rootfs.mounted_targets():
            subprocess.run(["umount", "-l", str(bundle / "rootfs")], check=True)


def test_remove_bundle_unmounts_a_bind_of_the_same_file_system_before_deleting(tmp_path):
    """A bind mount deep in the bundle, of a directory on the bundle's own file system
    (an idmapped volume is one): found without the mount table, unmounted, and the
    host's files under it are never deleted."""
    host = tmp_path / "host-volume"
    host.mkdir()
    (host / "data").write_text("keep")
    bundle = tmp_path / "bundle"
    target = bundle / "upper" / "deep" / "vol"
    target.mkdir(parents=True)
    (bundle / "upper" / "file").write_text("x")
    subprocess.run(["mount", "--bind", str(host), str(target)], check=True)
    try:
        rootfs.remove_bundle(bundle)
    finally:
        if str(target) in rootfs.mounted_targets():
            subprocess.run(["umount", "-l", str(target)], check=True)
    assert (host / "data").read_text() == "keep"
    assert not bundle.exists()


def test_remove_bundle_with_nothing_mounted_deletes_it(tmp_path):
    bundle = tmp_path / "bundle"
    (bundle / "upper" / "a" / "b").mkdir(parents=True)
    (bundle / "upper" / "a" / "b" / "f").write_text("x")
    (bundle / "upper" / "link").symlink_to("/etc")
    (bundle / "rootfs").mkdir()
    rootfs.remove_bundle(bundle)
    assert not bundle.exists()
    assert os.path.isdir("/etc")
