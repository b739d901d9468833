"""A squashfs inside a file, mounted through a loop device sycri binds itself (no
``mount(8)``): read-only, limited to its bytes, and the device goes with the mount."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest
from sycri.runtime import linux, loopdev

from tests.support.containers import squashfs_image

pytestmark = pytest.mark.root

PREFIX = b"not squashfs " * 700  # the partition starts past these bytes, as in a SIF


def _devices_of(path: Path) -> list[str]:
    """Loop devices bound to ``path`` (``losetup -j``)."""
    out = subprocess.run(["losetup", "-j", str(path)], capture_output=True, text=True)
    return [line.split(":")[0] for line in out.stdout.splitlines()]


@pytest.fixture
def image(tmp_path: Path) -> Path:
    return squashfs_image(tmp_path / "img", prefix=PREFIX)


def test_the_range_mounts_read_only_and_its_device_goes_with_the_mount(tmp_path, image):
    target = tmp_path / "mnt"
    target.mkdir()
    size = image.stat().st_size - len(PREFIX)
    loopdev.mount_squashfs(str(image), len(PREFIX), size, str(target))
    try:
        assert (target / "bin" / "busybox").is_file()
        assert len(_devices_of(image)) == 1
        with pytest.raises(OSError) as err:
            (target / "new-file").write_text("x")
        assert err.value.errno == errno.EROFS
    finally:
        linux.umount(target)
    assert _devices_of(image) == []  # autoclear: detached with its mount
    assert not os.listdir(target)


def test_a_range_that_is_not_squashfs_fails_and_leaves_no_device(tmp_path, image):
    target = tmp_path / "mnt"
    target.mkdir()
    with pytest.raises(OSError):
        loopdev.mount_squashfs(str(image), 0, len(PREFIX), str(target))
    assert _devices_of(image) == []
    assert str(target) not in Path("/proc/self/mountinfo").read_text()
