"""Device nodes and device cgroup rules: the defaults, the request's, CDI's, privileged."""

from __future__ import annotations

import posixpath
import re
from typing import Any

from sycri.api import api_pb2
from sycri.errors import InvalidArgument, excerpt
from sycri.runtime.oci import cdi
from sycri.runtime.oci.inputs import DeviceNode, HostFacts

# Device cgroup rules every container gets (containerd's defaults).
DEFAULT_DEVICE_RULES = (
    {"allow": False, "access": "rwm"},
    {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},  # null
    {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "rwm"},  # zero
    {"allow": True, "type": "c", "major": 1, "minor": 7, "access": "rwm"},  # full
    {"allow": True, "type": "c", "major": 1, "minor": 8, "access": "rwm"},  # random
    {"allow": True, "type": "c", "major": 1, "minor": 9, "access": "rwm"},  # urandom
    {"allow": True, "type": "c", "major": 5, "minor": 0, "access": "rwm"},  # tty
    {"allow": True, "type": "c", "major": 5, "minor": 2, "access": "rwm"},  # ptmx
    {"allow": True, "type": "c", "major": 136, "access": "rwm"},  # pts
    {"allow": True, "type": "c", "major": 10, "minor": 200, "access": "rwm"},  # tun
)

_ACCESS = re.compile(r"^[rwm]{1,3}$")


def nodes_and_rules(
    cfg: api_pb2.ContainerConfig, host: HostFacts, privileged: bool, edits: cdi.Edits
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    nodes: list[dict[str, Any]] = []
    rules: list[dict[str, Any]] = [dict(r) for r in DEFAULT_DEVICE_RULES]
    if privileged:
        rules = [{"allow": True, "access": "rwm"}]
        nodes.extend(_node(d, d.path) for d in host.all_devices)
    for dev in cfg.devices:
        if not dev.host_path.startswith("/"):
            raise InvalidArgument(f"devices: host path {excerpt(dev.host_path)} is not absolute")
        target = dev.container_path or dev.host_path
        if not target.startswith("/"):
            raise InvalidArgument(f"devices: container path {excerpt(target)} is not absolute")
        perms = dev.permissions or "rwm"
        if not _ACCESS.match(perms) or len(set(perms)) != len(perms):
            raise InvalidArgument(f"devices: bad permissions {excerpt(perms)}")
        node = host.devices.get(dev.host_path)
        if node is None:
            raise InvalidArgument(f"devices: {excerpt(dev.host_path)} is not a device on this host")
        nodes.append(_node(node, posixpath.normpath(target)))
        rules.append(_rule(node, perms))
    for d in edits.device_nodes:
        host_path = d.get("hostPath") or d["path"]
        node = host.devices.get(host_path)
        if node is None and "major" in d:
            node = DeviceNode(
                host_path, d.get("type", "c"), int(d["major"]), int(d.get("minor", 0))
            )
        if node is None:
            raise InvalidArgument(f"CDI device node {excerpt(host_path)} is not on this host")
        entry = _node(node, d["path"])
        # The spec's own type/numbers/mode/owner win over what the host node says.
        entry.update(
            {
                k: d[k]
                for k in ("type", "major", "minor", "fileMode", "uid", "gid")
                if d.get(k) is not None and d.get(k) != ""
            }
        )
        nodes.append(entry)
        if entry["type"] in ("b", "c"):  # the rule allows the node the container gets
            rules.append(
                {
                    "allow": True,
                    "type": entry["type"],
                    "major": entry["major"],
                    "minor": entry["minor"],
                    "access": d.get("permissions") or "rwm",
                }
            )
    seen: dict[str, dict[str, Any]] = {}
    for n in nodes:
        seen[n["path"]] = n
    return list(seen.values()), rules


def _node(d: DeviceNode, path: str) -> dict[str, Any]:
    return {
        "path": path,
        "type": d.type,
        "major": d.major,
        "minor": d.minor,
        "fileMode": d.mode,
        "uid": d.uid,
        "gid": d.gid,
    }


def _rule(d: DeviceNode, access: str) -> dict[str, Any]:
    return {"allow": True, "type": d.type, "major": d.major, "minor": d.minor, "access": access}
