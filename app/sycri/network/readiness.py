"""Whether pods can get a network: the truth behind the NetworkReady condition.

kubelet refuses to start non-host-network pods while NetworkReady is false, so this
must not claim readiness that a CNI ADD would then contradict: the network config
must parse and every plugin it names must exist in a CNI bin dir.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sycri.config import CniConfig
from sycri.fsutil import names_in

CONFIG_SUFFIXES = (".conflist", ".conf", ".json")
DEFAULT_PLUGINS = ("bridge", "host-local", "portmap", "bandwidth", "loopback")


@dataclass(frozen=True)
class NetworkReadiness:
    ready: bool
    reason: str = ""
    message: str = ""


def config_files(conf_dir: str) -> list[Path]:
    """Network config files in the lexical order kubelet and containerd use."""
    return [Path(conf_dir, n) for n in names_in(conf_dir) if n.endswith(CONFIG_SUFFIXES)]


def plugin_types(doc: dict[str, Any]) -> list[str]:
    """Plugin types named by a ``.conf`` or ``.conflist`` document."""
    if "plugins" in doc:
        return [str(p.get("type", "")) for p in doc["plugins"] if isinstance(p, dict)]
    return [str(doc.get("type", ""))]


def find_plugin(bin_dirs: tuple[str, ...], name: str) -> Path | None:
    if not name or "/" in name:
        return None
    for d in bin_dirs:
        p = Path(d, name)
        if p.is_file() and os.access(p, os.X_OK):
            return p
    return None


def readiness(cni: CniConfig) -> NetworkReadiness:
    files = config_files(cni.conf_dir)
    if not files:
        missing = [p for p in DEFAULT_PLUGINS if find_plugin(cni.bin_dirs, p) is None]
        if missing:
            return NetworkReadiness(
                False,
                "NetworkPluginNotReady",
                f"no CNI config in {cni.conf_dir} and the built-in network's plugins "
                f"({', '.join(missing)}) are missing from {', '.join(cni.bin_dirs)}",
            )
        if shutil.which("iptables") is None:
            return NetworkReadiness(
                False,
                "NetworkPluginNotReady",
                "the built-in network needs iptables (masquerade, hostPorts) and it is missing",
            )
        return NetworkReadiness(True)
    first = files[0]
    try:
        doc = json.loads(first.read_text())
    except (OSError, ValueError) as exc:
        return NetworkReadiness(False, "NetworkPluginNotReady", f"cannot load {first}: {exc}")
    if not isinstance(doc, dict):
        return NetworkReadiness(False, "NetworkPluginNotReady", f"{first} is not a JSON object")
    missing = [t for t in plugin_types(doc) if find_plugin(cni.bin_dirs, t) is None]
    if missing:
        return NetworkReadiness(
            False,
            "NetworkPluginNotReady",
            f"{first} needs CNI plugins not found in {', '.join(cni.bin_dirs)}: {', '.join(missing)}",
        )
    return NetworkReadiness(True)
