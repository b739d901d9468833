"""Container Device Interface: devices by fully qualified name (``vendor.com/class=name``)
from the JSON/YAML specs in ``/etc/cdi`` and ``/var/run/cdi`` — how GPUs reach containers.

``load`` reads the spec directories (the edge); ``edits_for`` is pure: it turns the
requested names into the container edits (env, device nodes, mounts, hooks) to merge
into the OCI spec. Later directories win over earlier ones for the same device, as the
CDI spec says.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from sycri.errors import InvalidArgument, excerpt

log = logging.getLogger("sycri.cdi")

SPEC_DIRS = ("/etc/cdi", "/var/run/cdi")
_KIND = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.\-]*/[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$")
MAX_SPEC_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Spec:
    path: str
    kind: str
    edits: dict[str, Any]
    devices: dict[str, dict[str, Any]]


@dataclass
class Edits:
    env: list[str] = field(default_factory=list)
    device_nodes: list[dict[str, Any]] = field(default_factory=list)
    mounts: list[dict[str, Any]] = field(default_factory=list)
    hooks: list[dict[str, Any]] = field(default_factory=list)

    def add(self, raw: dict[str, Any] | None, where: str) -> None:
        if not raw:
            return
        if not isinstance(raw, dict):
            raise InvalidArgument(f"CDI {where}: containerEdits is not a mapping")
        for e in raw.get("env") or []:
            if not isinstance(e, str) or "=" not in e:
                raise InvalidArgument(f"CDI {where}: bad env entry {excerpt(e)}")
            self.env.append(e)
        for d in raw.get("deviceNodes") or []:
            if not isinstance(d, dict) or not isinstance(d.get("path"), str):
                raise InvalidArgument(f"CDI {where}: device node without a path")
            self.device_nodes.append(d)
        for m in raw.get("mounts") or []:
            if not isinstance(m, dict) or not all(
                isinstance(m.get(k), str) for k in ("hostPath", "containerPath")
            ):
                raise InvalidArgument(f"CDI {where}: mount needs hostPath and containerPath")
            self.mounts.append(m)
        for h in raw.get("hooks") or []:
            if not isinstance(h, dict) or not isinstance(h.get("path"), str):
                raise InvalidArgument(f"CDI {where}: hook without a path")
            self.hooks.append(h)


def parse(path: str, text: str) -> Spec:
    """One spec file; YAML is a superset of JSON, so both forms parse."""
    try:
        data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise InvalidArgument(f"CDI spec {path}: not valid JSON/YAML: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidArgument(f"CDI spec {path}: not a mapping")
    kind = data.get("kind")
    if not isinstance(kind, str) or not _KIND.match(kind):
        raise InvalidArgument(f"CDI spec {path}: bad kind {excerpt(kind)}")
    devices: dict[str, dict[str, Any]] = {}
    for dev in data.get("devices") or []:
        if not isinstance(dev, dict) or not isinstance(dev.get("name"), str):
            raise InvalidArgument(f"CDI spec {path}: a device without a name")
        devices[dev["name"]] = dev
    return Spec(path, kind, data.get("containerEdits") or {}, devices)


def load(dirs: tuple[str, ...] = SPEC_DIRS) -> list[Spec]:
    """Every readable spec in ``dirs``; a broken file is logged and skipped, not fatal."""
    specs = []
    for d in dirs:
        try:
            names = sorted(os.listdir(d))
        except OSError:
            continue
        for name in names:
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


def edits_for(names: list[str], specs: list[Spec]) -> Edits:
    """The merged container edits for the requested devices; an unknown name is an error."""
    edits = Edits()
    kinds_done: set[str] = set()
    for qualified in names:
        kind, sep, name = qualified.partition("=")
        if not sep or not _KIND.match(kind) or not _NAME.match(name):
            raise InvalidArgument(
                f"CDI_devices: {excerpt(qualified)} is not a qualified name vendor.com/class=name"
            )
        found = None
        for spec in specs:  # later directories override earlier ones
            if spec.kind == kind and name in spec.devices:
                found = spec
        if found is None:
            raise InvalidArgument(f"CDI_devices: no CDI spec defines {excerpt(qualified)}")
        if found.path not in kinds_done:
            edits.add(found.edits, found.path)
            kinds_done.add(found.path)
        edits.add(found.devices[name].get("containerEdits"), f"{found.path} {name}")
    return edits
