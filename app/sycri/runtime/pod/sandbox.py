"""The sandbox record (what a pod is, on disk and in memory) and its store.

The store writes a record atomically before the RPC replies and keeps an in-memory
index for the List/Status calls kubelet makes every second; start-up rebuilds the
index from disk. Pod names (name, namespace, uid, attempt) are reserved while a
pod with that name exists.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sycri.api import api_pb2
from sycri.errors import AlreadyExists
from sycri.fsutil import atomic_write_json
from sycri.runtime import idindex

log = logging.getLogger("sycri.sandbox")

CREATING = "creating"
READY = "ready"
NOTREADY = "notready"

RECORD = "sandbox.json"


@dataclass
class Sandbox:
    """One pod sandbox. Paths are absolute; a namespace path is None when the host's is used."""

    id: str
    name: str
    namespace: str
    uid: str
    attempt: int
    created_at: int  # nanoseconds since the epoch
    state: str
    runtime_handler: str
    config_bytes: str  # base64 of the serialized PodSandboxConfig
    run_dir: str  # sycri's per-pod runtime directory (pins, shm, etc files)
    hostname: str
    net_mode: str = "POD"  # POD or NODE
    ipc_mode: str = "POD"
    pid_mode: str = "CONTAINER"  # POD (shared, catatonit as init), CONTAINER or NODE
    netns_path: str | None = None
    ipc_ns_path: str | None = None
    uts_ns_path: str | None = None
    pid_ns_path: str | None = None
    userns_path: str | None = None  # the pod's own user namespace (hostUsers: false)
    userns_maps: dict[str, list[int]] | None = None  # userns.Mappings.to_json()
    init_pid: int | None = None  # catatonit, PID 1 of the pod's PID namespace
    init_start: int | None = None  # its start time (clock ticks), guards against pid reuse
    holder_pid: int | None = None  # the `unshare --fork` parent of catatonit
    holder_start: int | None = None
    cgroup_parent: str = ""
    cgroup_path: str = ""  # the parent's path in the hierarchy, "" when none was given
    cgroup_version: int = 1
    cgroup_created: list[str] = field(default_factory=list)
    hosts_path: str = ""
    resolv_path: str = ""
    hostname_path: str = ""
    shm_path: str = ""  # a per-pod tmpfs, or /dev/shm with a host IPC namespace
    shm_mounted: bool = False
    log_directory: str = ""
    ips: list[str] = field(default_factory=list)
    network: dict[str, Any] | None = None  # the conflist used for ADD, reused by DEL
    cni_result: dict[str, Any] | None = None
    network_up: bool = False  # an ADD was (or may have been) made: a DEL is owed
    removing: bool = False  # RemovePodSandbox began: a restart finishes it

    @property
    def config(self) -> api_pb2.PodSandboxConfig:
        """The config as sent, parsed once per value of ``config_bytes`` (list and status
        calls read it for every pod). Shared: read it, never modify it; copy to change."""
        cached = self.__dict__.get("_parsed")
        if cached is None or cached[0] is not self.config_bytes:
            cfg = api_pb2.PodSandboxConfig()
            cfg.ParseFromString(base64.b64decode(self.config_bytes))
            cached = self.__dict__["_parsed"] = (self.config_bytes, cfg)
        return cached[1]

    @property
    def metadata(self) -> api_pb2.PodSandboxMetadata:
        return api_pb2.PodSandboxMetadata(
            name=self.name, uid=self.uid, namespace=self.namespace, attempt=self.attempt
        )

    @property
    def name_key(self) -> str:
        return name_key(self.name, self.namespace, self.uid, self.attempt)

    @property
    def ready(self) -> bool:
        return self.state == READY

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Sandbox:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in doc.items() if k in known})


def encode_config(cfg: api_pb2.PodSandboxConfig) -> str:
    return base64.b64encode(cfg.SerializeToString()).decode()


def name_key(name: str, namespace: str, uid: str, attempt: int) -> str:
    """kubelet's pod sandbox name: ``k8s_POD_<name>_<namespace>_<uid>_<attempt>``."""
    return f"k8s_POD_{name}_{namespace}_{uid}_{attempt}"


class SandboxStore:
    """Records under ``<root>/<id>/sandbox.json`` plus the id and name indexes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._by_id: dict[str, Sandbox] = {}
        self._names: dict[str, str] = {}

    def load(self) -> list[Sandbox]:
        """Rebuild the index from disk; unreadable records are logged and skipped."""
        self._by_id.clear()
        self._names.clear()
        for entry in sorted(os.listdir(self.root)):
            path = self.root / entry / RECORD
            try:
                sb = Sandbox.from_json(json.loads(path.read_text()))
            except FileNotFoundError:
                shutil.rmtree(self.root / entry, ignore_errors=True)  # a half-made dir
                continue
            except (OSError, ValueError, TypeError) as exc:
                log.error("skipping unreadable sandbox record %s: %s", path, exc)
                continue
            self._by_id[sb.id] = sb
            self._names[sb.name_key] = sb.id
        return list(self._by_id.values())

    def reserve(self, key: str, sandbox_id: str) -> None:
        holder = self._names.get(key)
        if holder is not None and holder != sandbox_id:
            raise AlreadyExists(
                f"pod sandbox name {key!r} is reserved for {holder}; "
                "remove that sandbox or use another attempt number"
            )
        self._names[key] = sandbox_id

    def release(self, key: str, sandbox_id: str) -> None:
        if self._names.get(key) == sandbox_id:
            del self._names[key]

    def save(self, sb: Sandbox) -> None:
        """Write the record (atomic, fsynced), then index it."""
        atomic_write_json(self.root / sb.id / RECORD, sb.to_json(), mode=0o600)
        self._by_id[sb.id] = sb

    def delete(self, sb: Sandbox) -> None:
        shutil.rmtree(self.root / sb.id, ignore_errors=True)
        self._by_id.pop(sb.id, None)
        self.release(sb.name_key, sb.id)

    def resolve(self, prefix: str) -> Sandbox:
        return self._by_id[idindex.resolve(prefix, self._by_id, "pod sandbox")]

    def find(self, sandbox_id: str) -> Sandbox | None:
        return self._by_id.get(sandbox_id)

    def all(self) -> list[Sandbox]:
        return list(self._by_id.values())
