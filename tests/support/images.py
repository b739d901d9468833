"""Helpers for image tests: an Images service on a temp root, SIF inspection with real tools."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from sycri.config import Config, ImageConfig
from sycri.images.service import Images
from sycri.sif import mount_partition, unmount


def make_images(base: Path, **image_settings) -> Images:
    # An explicit (empty) registries.conf: the host's /etc/containers files must not
    # change what a test pulls from where.
    image_settings.setdefault("registries_conf", "/dev/null")
    cfg = Config(
        socket=str(base / "sycri.sock"),
        root_dir=str(base / "root"),
        run_dir=str(base / "run"),
        images=dataclasses.replace(ImageConfig(), **image_settings),
    )
    images = Images(cfg)
    images.start()
    return images


def siftool_list(path: str) -> str:
    """``siftool list``; raises when siftool rejects the file."""
    res = subprocess.run(["siftool", "list", path], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, f"siftool list {path} failed: {res.stderr}"
    return res.stdout


@contextlib.contextmanager
def mounted(sif_path: str) -> Iterator[Path]:
    """The SIF's squashfs mounted read-only in place, with sycri's own SIF mount code."""
    with tempfile.TemporaryDirectory(prefix="sycri-test-mnt.") as target:
        asyncio.run(mount_partition(sif_path, target))
        try:
            yield Path(target)
        finally:
            asyncio.run(unmount(target))
