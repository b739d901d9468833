"""What sycri says about its Node: labels to select on, annotations to read. Pure.

Labels are for scheduling (a RuntimeClass ``scheduling.nodeSelector`` can pick
``sycri.io/runtime: sycri``); annotations carry the detail that label values cannot.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from sycri.config import Config

PREFIX = "sycri.io/"
HANDLER_PREFIX = "handler.sycri.io/"

LABEL_RUNTIME = PREFIX + "runtime"
LABEL_VERSION = PREFIX + "version"
LABEL_SIF = PREFIX + "sif"

_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def label_value(text: str) -> str:
    """``text`` made a valid label value: at most 63 of [A-Za-z0-9-_.], alphanumeric ends."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:63]
    cleaned = cleaned.strip("-_.")
    return cleaned if _LABEL_VALUE.match(cleaned) else ""


def labels(cfg: Config, version: str) -> dict[str, str]:
    out = {
        LABEL_RUNTIME: "sycri",
        LABEL_VERSION: label_value(version) or "unknown",
        LABEL_SIF: "true",
    }
    for name in sorted(cfg.runtimes):
        key = label_value(name)
        if key:
            out[HANDLER_PREFIX + key] = "true"
    return out


def node_annotations(cfg: Config, version: str) -> dict[str, str]:
    return {
        PREFIX + "version": version,
        PREFIX + "cri-api": "v1",
        PREFIX + "runtime-handlers": ",".join(sorted(cfg.runtimes)),
        PREFIX + "default-runtime-handler": cfg.default_runtime,
        PREFIX + "image-format": "sif",
        PREFIX + "squashfs-compression": cfg.images.squashfs_compression,
        PREFIX + "cri-socket": "unix://" + cfg.socket,
    }


def node_patch(
    cfg: Config, version: str, current_labels: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """A JSON merge patch for the Node; handler labels no longer configured are removed."""
    want = labels(cfg, version)
    patch_labels: dict[str, str | None] = dict(want)
    for key in current_labels or {}:
        if key.startswith(HANDLER_PREFIX) and key not in want:
            patch_labels[key] = None
    return {"metadata": {"labels": patch_labels, "annotations": node_annotations(cfg, version)}}
