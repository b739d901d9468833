"""What a pod sandbox is: its immutable metadata and its status, kept apart.

The metadata (:class:`SandboxMetadata`) is fixed when RunPodSandbox plans the pod: its
names, modes, the paths of its namespace pins and files, its cgroup parent and its CNI
network. Only a resize replaces it (with a new config). The status
(:class:`SandboxStatus`) is what changes: READY or NOTREADY and why, the init's pid,
the CNI attachment, and what a teardown still owes. Only the lifecycle calls (Run, Stop,
Remove) and the watch on the pod's init change it; queries read both from memory.
"""

from __future__ import annotations

import base64
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from sycri.api import api_pb2

CREATING = "creating"
READY = "ready"
NOTREADY = "notready"


@dataclass
class SandboxStatus:
    """A pod's mutable state. Saved apart from the metadata, on every change."""

    state: str = CREATING
    reason: str = ""  # why the pod is NOTREADY (stopped, its init exited, creation failed)
    removing: bool = False  # RemovePodSandbox began: a restart finishes it
    failed: bool = False  # RunPodSandbox failed: a teardown is owed, then the record goes
    left: list[str] = field(default_factory=list)  # what the last teardown could not release
    init_pid: int | None = None  # catatonit, PID 1 of the pod's PID namespace
    init_start: int | None = None  # its start time (clock ticks), guards against pid reuse
    holder_pid: int | None = None  # the `unshare --fork` parent of catatonit
    holder_start: int | None = None
    ips: list[str] = field(default_factory=list)
    cni_result: dict[str, Any] | None = None
    network_up: bool = False  # an ADD was (or may have been) made: a DEL is owed
    cgroup_created: list[str] = field(default_factory=list)  # cgroup dirs sycri made
    shm_mounted: bool = False  # the pod's /dev/shm tmpfs (may be) mounted

    @property
    def tearing_down(self) -> bool:
        """A teardown is owed: the record stays until it has really finished."""
        return self.failed or self.removing

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> SandboxStatus:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in doc.items() if k in known})


@dataclass(frozen=True)
class SandboxMetadata:
    """What a pod is. Paths are absolute; a namespace path is None when the host's is used."""

    id: str
    name: str
    namespace: str
    uid: str
    attempt: int
    created_at: int  # nanoseconds since the epoch
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
    cgroup_parent: str = ""
    cgroup_path: str = ""  # the parent's path in the hierarchy, "" when none was given
    cgroup_version: int = 1
    hosts_path: str = ""
    resolv_path: str = ""
    hostname_path: str = ""
    shm_path: str = ""  # a per-pod tmpfs, or /dev/shm with a host IPC namespace
    log_directory: str = ""
    network: dict[str, Any] | None = None  # the conflist used for ADD, reused by DEL

    @property
    def config(self) -> api_pb2.PodSandboxConfig:
        """The config as sent, parsed once (list and status calls read it for every pod).
        Shared: read it, never modify it; copy to change."""
        cached = self.__dict__.get("_parsed")
        if cached is None:
            cfg = api_pb2.PodSandboxConfig()
            cfg.ParseFromString(base64.b64decode(self.config_bytes))
            cached = self.__dict__["_parsed"] = cfg
        assert isinstance(cached, api_pb2.PodSandboxConfig)
        return cached

    @property
    def metadata(self) -> api_pb2.PodSandboxMetadata:
        return api_pb2.PodSandboxMetadata(
            name=self.name, uid=self.uid, namespace=self.namespace, attempt=self.attempt
        )

    @property
    def name_key(self) -> str:
        return name_key(self.name, self.namespace, self.uid, self.attempt)

    def metadata_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(SandboxMetadata)}

    @classmethod
    def metadata_fields(cls, doc: dict[str, Any]) -> dict[str, Any]:
        """The metadata fields of a record (unknown fields, e.g. from a newer sycri, dropped)."""
        known = {f.name for f in dataclasses.fields(SandboxMetadata)}
        return {k: v for k, v in doc.items() if k in known}


@dataclass(frozen=True)
class Sandbox(SandboxMetadata):
    """One pod sandbox: its metadata (frozen) and its status (changed by the lifecycle
    calls and the init watch only). The status properties below are for readers."""

    status: SandboxStatus = field(default_factory=SandboxStatus)

    @property
    def state(self) -> str:
        return self.status.state

    @property
    def ready(self) -> bool:
        return self.status.state == READY

    @property
    def ips(self) -> list[str]:
        return self.status.ips

    @property
    def network_up(self) -> bool:
        return self.status.network_up

    @property
    def cni_result(self) -> dict[str, Any] | None:
        return self.status.cni_result

    @property
    def init_pid(self) -> int | None:
        return self.status.init_pid

    @property
    def removing(self) -> bool:
        return self.status.removing

    @classmethod
    def from_records(cls, meta: dict[str, Any], status: dict[str, Any]) -> Sandbox:
        return cls(**cls.metadata_fields(meta), status=SandboxStatus.from_json(status))

    @classmethod
    def from_legacy(cls, doc: dict[str, Any]) -> Sandbox:
        """A record of sycri before the split: one ``sandbox.json`` with every field flat.
        Its paths and modes are the metadata; state, init, CNI and teardown fields the
        status (the field names did not change)."""
        return cls.from_records(doc, doc)


def encode_config(cfg: api_pb2.PodSandboxConfig) -> str:
    return base64.b64encode(cfg.SerializeToString()).decode()


def name_key(name: str, namespace: str, uid: str, attempt: int) -> str:
    """kubelet's pod sandbox name: ``k8s_POD_<name>_<namespace>_<uid>_<attempt>``."""
    return f"k8s_POD_{name}_{namespace}_{uid}_{attempt}"
