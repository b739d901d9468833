"""What an OCI runtime binary can do on this node, as the CRI Status reports it per handler.

Reported only when it really works: recursive read-only mounts need the runtime to
know the ``rro`` mount option (``runc features``, runc >= 1.1) and the kernel to have
``mount_setattr`` (5.12). Pod user namespaces need the runtime to join a user
namespace (``user`` among its namespaces), overlayfs to take an idmapped lower layer
(5.19) and this kernel to idmap a squashfs mount, which is tried for real once
(:func:`sycri.runtime.pod.userns.idmap_works`).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass

from sycri import command
from sycri.errors import DeadlineExceeded
from sycri.runtime.pod import userns

MOUNT_SETATTR_KERNEL = (5, 12)
IDMAPPED_OVERLAY_LOWER_KERNEL = (5, 19)


@dataclass(frozen=True)
class HandlerFeatures:
    recursive_read_only: bool = False
    user_namespaces: bool = False


def kernel_version(release: str) -> tuple[int, int]:
    """(major, minor) of a ``uname -r`` string such as ``6.1.0-18-amd64``; (0, 0) if odd."""
    m = re.match(r"(\d+)\.(\d+)", release)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def parse(features_json: str, kernel_release: str, idmap_works: bool = False) -> HandlerFeatures:
    """The features of a runtime from its ``features`` output (OCI runtime-spec
    features document); an empty or unreadable document means none. ``idmap_works``:
    this node can idmap the image layer (probed at the edge)."""
    try:
        doc = json.loads(features_json) if features_json.strip() else {}
    except ValueError:
        doc = {}
    options = doc.get("mountOptions") if isinstance(doc, dict) else None
    rro = isinstance(options, list) and "rro" in options
    linux = doc.get("linux") if isinstance(doc, dict) else None
    kinds = linux.get("namespaces") if isinstance(linux, dict) else None
    joins_user = isinstance(kinds, list) and "user" in kinds
    kernel = kernel_version(kernel_release)
    return HandlerFeatures(
        recursive_read_only=rro and kernel >= MOUNT_SETATTR_KERNEL,
        user_namespaces=joins_user and idmap_works and kernel >= IDMAPPED_OVERLAY_LOWER_KERNEL,
    )


_cache: dict[str, HandlerFeatures] = {}


async def probe(binary: str) -> HandlerFeatures:
    """The features of ``binary`` on this node, asked once per binary (Status is polled
    every second by kubelet). A runtime without a ``features`` verb has none."""
    if binary not in _cache:
        try:
            result = await command.run(
                [binary, "features"], check=False, timeout=30, label="runtime features"
            )
        except (OSError, DeadlineExceeded):
            return HandlerFeatures()  # missing or hung: not cached, it may be fixed later
        text = result.stdout.decode(errors="replace") if result.ok else ""
        _cache[binary] = parse(text, os.uname().release, await userns.idmap_works())
    return _cache[binary]
