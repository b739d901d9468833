"""What the kernel says is mounted: for tests that check an image's mount was taken
again, or that nothing of it is left."""

from __future__ import annotations

import contextlib
from pathlib import Path


def mount_of(target: Path) -> tuple[str, str] | None:
    """(mount id, device) of the mount at ``target`` (/proc/self/mountinfo), or None."""
    found = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split(" ")
            if parts[4] == str(target):
                found = (parts[0], parts[2])
    return found


def loop_devices(backing: Path) -> list[str]:
    """Loop devices whose backing file is ``backing`` (also once it was deleted)."""
    out = []
    for dev in Path("/sys/block").glob("loop*"):
        with contextlib.suppress(OSError):
            text = (dev / "loop" / "backing_file").read_text().strip()
            if text.removesuffix(" (deleted)") == str(backing):
                out.append(dev.name)
    return out
