"""What an OCI runtime binary can do on this node, as the CRI Status reports it per handler.

Reported only when it really works: recursive read-only mounts need the runtime to
know the ``rro`` mount option (``runc features``, runc >= 1.1) and the kernel to have
``mount_setattr`` (5.12). User namespaces for pods are not offered: sycri cannot yet
create a pod's namespaces inside a user namespace, so it never claims them.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass

from sycri import command
from sycri.errors import DeadlineExceeded

MOUNT_SETATTR_KERNEL = (5, 12)


@dataclass(frozen=True)
class HandlerFeatures:
    recursive_read_only: bool = False
    user_namespaces: bool = False


def kernel_version(release: str) -> tuple[int, int]:
    """(major, minor) of a ``uname -r`` string such as ``6.1.0-18-amd64``; (0, 0) if odd."""
    m = re.match(r"(\d+)\.(\d+)", release)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def parse(features_json: str, kernel_release: str) -> HandlerFeatures:
    """The features of a runtime from its ``features`` output (OCI runtime-spec
    features document); an empty or unreadable document means none."""
    try:
        doc = json.loads(features_json) if features_json.strip() else {}
    except ValueError:
        doc = {}
    options = doc.get("mountOptions") if isinstance(doc, dict) else None
    rro = isinstance(options, list) and "rro" in options
    return HandlerFeatures(
        recursive_read_only=rro and kernel_version(kernel_release) >= MOUNT_SETATTR_KERNEL,
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
        _cache[binary] = parse(text, os.uname().release)
    return _cache[binary]
