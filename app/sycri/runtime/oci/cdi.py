"""Container Device Interface: devices by fully qualified name (``vendor.com/class=name``)
from the JSON/YAML specs in ``/etc/cdi`` and ``/var/run/cdi`` — how GPUs reach containers.

``load`` reads the spec directories (the edge); ``parse`` checks a whole spec the way the
CDI reference library does (cdiVersion, kind, device names, every containerEdits field),
so a broken file is skipped at load, naming what is wrong, instead of failing whichever
container asks for it later. ``edits_for`` is pure: it turns the requested names into
the container edits (env, device nodes, mounts, hooks, additional GIDs) to merge into the
OCI spec. Later directories win over earlier ones for the same device, as the CDI spec
says.

Devices are asked for two ways, both from kubelet (trusted): the CRI ``CDI_devices``
field (device plugins' ``CDIDevices``, the ``cdi-cri`` strategy of NVIDIA's plugin) and
container annotations ``cdi.k8s.io/<key>: vendor.com/class=name[,...]`` (the
``cdi-annotations`` strategy). A pod's own annotations are the sandbox's, never read here.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from sycri.api import api_pb2
from sycri.errors import InvalidArgument, excerpt
from sycri.fsutil import names_in

log = logging.getLogger("sycri.cdi")

SPEC_DIRS = ("/etc/cdi", "/var/run/cdi")
ANNOTATION_PREFIX = "cdi.k8s.io/"
MAX_SPEC_BYTES = 4 * 1024 * 1024
# Spec versions the reference library has released; a newer major may change meanings.
VERSIONS = ("0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0", "1.0.0", "1.1.0")
HOOK_NAMES = (
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
)
# The reference's rules: vendor starts with a letter and ends with a letter or digit,
# class likewise without dots; a device name starts and ends with a letter or digit.
_VENDOR = r"[A-Za-z](?:[A-Za-z0-9_.\-]*[A-Za-z0-9])?"
_CLASS = r"[A-Za-z](?:[A-Za-z0-9_\-]*[A-Za-z0-9])?"
_KIND = re.compile(rf"^{_VENDOR}/{_CLASS}$")
_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.:\-]*[A-Za-z0-9])?$")
_ENV_NAME = re.compile(r"^[^=\x00]+$")
_ACCESS = re.compile(r"^[rwm]{1,3}$")
_NODE_TYPES = ("b", "c", "u", "p")


@dataclass(frozen=True)
class Spec:
    path: str
    kind: str
    edits: dict[str, Any]
    devices: dict[str, dict[str, Any]]
    version: str = "0.3.0"


@dataclass
class Edits:
    env: list[str] = field(default_factory=list)
    device_nodes: list[dict[str, Any]] = field(default_factory=list)
    mounts: list[dict[str, Any]] = field(default_factory=list)
    hooks: list[dict[str, Any]] = field(default_factory=list)
    additional_gids: list[int] = field(default_factory=list)

    def add(self, raw: Any, where: str) -> None:
        """Append one containerEdits block, checked; InvalidArgument names the bad field."""
        if not raw:
            return
        check_edits(raw, where)
        self.env.extend(raw.get("env") or [])
        self.device_nodes.extend(raw.get("deviceNodes") or [])
        self.mounts.extend(raw.get("mounts") or [])
        self.hooks.extend(raw.get("hooks") or [])
        for gid in raw.get("additionalGids") or []:
            if gid not in self.additional_gids:
                self.additional_gids.append(gid)


def _str_list(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"{what} is not a list of strings")
    return value


def _int(value: Any, what: str, low: int = 0, high: int = 2**32 - 1) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidArgument(f"{what}: {excerpt(value)} is not an integer in [{low}, {high}]")


def _env(items: Any, what: str) -> None:
    for e in _str_list(items, what):
        name, sep, _ = e.partition("=")
        if not sep or not _ENV_NAME.match(name) or "\x00" in e:
            raise InvalidArgument(f"{what}: bad entry {excerpt(e)} (want NAME=value)")


def _absolute(value: Any, what: str) -> None:
    if not isinstance(value, str) or not value.startswith("/") or "\x00" in value:
        raise InvalidArgument(f"{what}: {excerpt(value)} is not an absolute path")


def check_edits(raw: Any, where: str) -> None:
    """One containerEdits block as the CDI spec defines it; InvalidArgument otherwise."""
    if not isinstance(raw, dict):
        raise InvalidArgument(f"CDI {where}: containerEdits is not a mapping")
    _env(raw.get("env"), f"CDI {where}: env")
    for d in _list(raw.get("deviceNodes"), f"CDI {where}: deviceNodes"):
        if not isinstance(d, dict):
            raise InvalidArgument(f"CDI {where}: a device node is not a mapping")
        _absolute(d.get("path"), f"CDI {where}: device node path")
        if d.get("hostPath") is not None:
            _absolute(d.get("hostPath"), f"CDI {where}: device node hostPath")
        if d.get("type") not in (None, "", *_NODE_TYPES):
            raise InvalidArgument(f"CDI {where}: device node type {excerpt(d.get('type'))}")
        perms = d.get("permissions")
        if perms not in (None, "") and (
            not isinstance(perms, str) or not _ACCESS.match(perms) or len(set(perms)) != len(perms)
        ):
            raise InvalidArgument(f"CDI {where}: device node permissions {excerpt(perms)}")
        for key in ("major", "minor", "uid", "gid", "fileMode"):
            _int(d.get(key), f"CDI {where}: device node {key}")
    for m in _list(raw.get("mounts"), f"CDI {where}: mounts"):
        if not isinstance(m, dict):
            raise InvalidArgument(f"CDI {where}: a mount is not a mapping")
        if not isinstance(m.get("hostPath"), str) or not m["hostPath"]:
            raise InvalidArgument(f"CDI {where}: a mount needs hostPath")
        _absolute(m.get("containerPath"), f"CDI {where}: mount containerPath")
        _str_list(m.get("options"), f"CDI {where}: mount options")
        if m.get("type") is not None and not isinstance(m["type"], str):
            raise InvalidArgument(f"CDI {where}: mount type is not a string")
    for h in _list(raw.get("hooks"), f"CDI {where}: hooks"):
        if not isinstance(h, dict):
            raise InvalidArgument(f"CDI {where}: a hook is not a mapping")
        if h.get("hookName") not in HOOK_NAMES:
            raise InvalidArgument(
                f"CDI {where}: hook name {excerpt(h.get('hookName'))} is not one of "
                + ", ".join(HOOK_NAMES)
            )
        _absolute(h.get("path"), f"CDI {where}: hook path")
        _str_list(h.get("args"), f"CDI {where}: hook args")
        _env(h.get("env"), f"CDI {where}: hook env")
        _int(h.get("timeout"), f"CDI {where}: hook timeout", 1, 2**31 - 1)
    for gid in _list(raw.get("additionalGids"), f"CDI {where}: additionalGids"):
        _int(gid, f"CDI {where}: additionalGids")
    if raw.get("intelRdt") or raw.get("netDevices"):
        # Not applied: say so instead of starting a container without them.
        raise InvalidArgument(f"CDI {where}: intelRdt and netDevices are not supported by sycri")


def _list(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidArgument(f"{what} is not a list")
    return value


def parse(path: str, text: str) -> Spec:
    """One spec file, checked whole; YAML is a superset of JSON, so both forms parse."""
    try:
        data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise InvalidArgument(f"CDI spec {path}: not valid JSON/YAML: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidArgument(f"CDI spec {path}: not a mapping")
    version = data.get("cdiVersion")
    if version not in VERSIONS:
        raise InvalidArgument(
            f"CDI spec {path}: cdiVersion {excerpt(version)} is not one of {', '.join(VERSIONS)}"
        )
    kind = data.get("kind")
    if not isinstance(kind, str) or not _KIND.match(kind):
        raise InvalidArgument(f"CDI spec {path}: bad kind {excerpt(kind)} (want vendor.com/class)")
    devices: dict[str, dict[str, Any]] = {}
    raw_devices = _list(data.get("devices"), f"CDI spec {path}: devices")
    if not raw_devices:
        raise InvalidArgument(f"CDI spec {path}: no devices")
    for dev in raw_devices:
        if not isinstance(dev, dict) or not isinstance(dev.get("name"), str):
            raise InvalidArgument(f"CDI spec {path}: a device without a name")
        name = dev["name"]
        if not _NAME.match(name):
            raise InvalidArgument(f"CDI spec {path}: bad device name {excerpt(name)}")
        if name in devices:
            raise InvalidArgument(f"CDI spec {path}: device {excerpt(name)} defined twice")
        if not dev.get("containerEdits"):
            raise InvalidArgument(f"CDI spec {path}: device {excerpt(name)} has no containerEdits")
        check_edits(dev["containerEdits"], f"spec {path} device {name}")
        devices[name] = dev
    edits = data.get("containerEdits") or {}
    check_edits(edits, f"spec {path}")
    return Spec(path, kind, edits, devices, version)


def load(dirs: Iterable[str] = SPEC_DIRS) -> list[Spec]:
    """Every readable spec in ``dirs``; a broken file is logged and skipped, not fatal."""
    specs = []
    for d in dirs:
        for name in names_in(d):
            if not name.endswith((".json", ".yaml", ".yml")):
                continue
            path = os.path.join(d, name)
            try:
                with open(path, "rb") as f:
                    text = f.read(MAX_SPEC_BYTES + 1)
                if len(text) > MAX_SPEC_BYTES:
                    raise InvalidArgument(f"CDI spec {path}: larger than {MAX_SPEC_BYTES} bytes")
                specs.append(parse(path, text.decode()))
            except (OSError, UnicodeDecodeError, InvalidArgument) as exc:
                log.warning("skipping CDI spec %s: %s", path, exc)
    return specs


def requested(cfg: api_pb2.ContainerConfig) -> list[str]:
    """The devices kubelet asks for: ``CDI_devices``, then ``cdi.k8s.io/*`` container
    annotations (comma-separated names, keys in sorted order); each name once."""
    names = [d.name for d in cfg.CDI_devices]
    for key in sorted(cfg.annotations):
        if key.startswith(ANNOTATION_PREFIX):
            names.extend(n.strip() for n in cfg.annotations[key].split(",") if n.strip())
    return list(dict.fromkeys(names))


def edits_for(names: list[str], specs: list[Spec]) -> Edits:
    """The merged container edits for the requested devices; an unknown name is an error."""
    edits = Edits()
    kinds_done: set[str] = set()
    for qualified in names:
        kind, sep, name = qualified.partition("=")
        if not sep or not _KIND.match(kind) or not _NAME.match(name):
            raise InvalidArgument(
                f"CDI devices: {excerpt(qualified)} is not a qualified name vendor.com/class=name"
            )
        found = None
        for spec in specs:  # later directories override earlier ones
            if spec.kind == kind and name in spec.devices:
                found = spec
        if found is None:
            raise InvalidArgument(f"CDI devices: no CDI spec defines {excerpt(qualified)}")
        if found.path not in kinds_done:
            edits.add(found.edits, f"spec {found.path}")
            kinds_done.add(found.path)
        edits.add(found.devices[name].get("containerEdits"), f"spec {found.path} device {name}")
    return edits


def host_paths(edits: Edits) -> list[str]:
    """Host paths the edits bind-mount or run (mount sources, hook programs): what
    sycri resolves under ``host_root`` when it runs in the node image."""
    paths = [m["hostPath"] for m in edits.mounts if m["hostPath"].startswith("/")]
    paths += [h["path"] for h in edits.hooks]
    return list(dict.fromkeys(paths))


def mount_entries(edits: Edits, resolved: Mapping[str, str]) -> list[dict[str, Any]]:
    """The OCI mounts of the edits; ``resolved`` maps a hostPath to where sycri reaches
    it (absent: as written). A later mount at the same path replaces an earlier one, as
    the reference library removes a mount before adding its own."""
    out: dict[str, dict[str, Any]] = {}
    for m in edits.mounts:
        dest = posixpath.normpath(m["containerPath"])
        out[dest] = {
            "destination": dest,
            "type": m.get("type") or "bind",
            "source": resolved.get(m["hostPath"], m["hostPath"]),
            "options": list(m.get("options") or ["rbind", "rprivate", "ro"]),
        }
    return list(out.values())


def oci_hooks(edits: Edits, resolved: Mapping[str, str]) -> dict[str, list[dict[str, Any]]]:
    """The OCI ``hooks`` object, by hook name, in the order the specs list them."""
    out: dict[str, list[dict[str, Any]]] = {}
    for h in edits.hooks:
        entry: dict[str, Any] = {"path": resolved.get(h["path"], h["path"])}
        for key in ("args", "env", "timeout"):
            if h.get(key):
                entry[key] = h[key]
        out.setdefault(h["hookName"], []).append(entry)
    return out
