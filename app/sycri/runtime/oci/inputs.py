"""What ``ocispec.build`` takes and gives: the request, the pod, and host facts gathered
at the edge (``hostfacts``), as frozen dataclasses."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sycri.api import api_pb2
from sycri.runtime.oci import cdi, users
from sycri.runtime.oci.capabilities import ALL_CAPS
from sycri.runtime.pod.idmaps import Mappings


@dataclass(frozen=True)
class ImageConfig:
    """The parts of an OCI image config a container's spec depends on."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""
    stop_signal: str = ""

    @classmethod
    def from_oci(cls, doc: Mapping[str, Any] | None) -> ImageConfig:
        """From an OCI image config document (the whole one or its ``config`` object)."""
        doc = doc or {}
        cfg = doc.get("config", doc) if isinstance(doc.get("config"), dict) else doc

        def strs(key: str) -> tuple[str, ...]:
            v = cfg.get(key) or ()
            return tuple(x for x in v if isinstance(x, str)) if isinstance(v, list) else ()

        def text(key: str) -> str:
            v = cfg.get(key)
            return v if isinstance(v, str) else ""

        return cls(
            entrypoint=strs("Entrypoint"),
            cmd=strs("Cmd"),
            env=strs("Env"),
            working_dir=text("WorkingDir"),
            user=text("User"),
            stop_signal=text("StopSignal"),
        )


@dataclass(frozen=True)
class Sandbox:
    """What a container needs of its pod (filled from the pods component)."""

    id: str
    netns: str = ""  # namespace paths to join; empty: the host's (host network etc.)
    ipcns: str = ""
    utsns: str = ""
    pidns: str = ""  # the pod's shared PID namespace (catatonit's); empty: see pid_mode
    hosts: str = ""  # pod files bind-mounted over the container's /etc/...
    resolv: str = ""
    hostname_file: str = ""
    shm: str = ""
    cgroup_parent: str = ""
    hostname: str = ""
    userns: str = ""  # the pod's pinned user namespace; empty: the host's
    userns_maps: Mappings | None = None


@dataclass(frozen=True)
class DeviceNode:
    path: str
    type: str  # c, b or p
    major: int
    minor: int
    mode: int = 0o666
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class CgroupFacts:
    """What the node's cgroups can take; None: not looked at (anything goes)."""

    cpus: frozenset[int] | None = None  # online CPUs
    mems: frozenset[int] | None = None  # online memory nodes
    controllers: frozenset[str] | None = None  # cgroup v2 controllers of the root


@dataclass(frozen=True)
class HostFacts:
    """The host state the spec depends on, gathered at the edge."""

    paths: Mapping[str, str] = field(default_factory=dict)  # host path -> file/dir/other/missing
    devices: Mapping[str, DeviceNode | None] = field(default_factory=dict)
    all_devices: tuple[DeviceNode, ...] = ()  # for privileged containers
    cdi_specs: tuple[cdi.Spec, ...] = ()
    # CDI host paths (mount sources, hook programs) -> where sycri reaches them
    # (under host_root); absent: as written
    cdi_sources: Mapping[str, str] = field(default_factory=dict)
    seccomp_profiles: Mapping[str, str] = field(default_factory=dict)  # path -> text
    apparmor: bool = False
    own_oom_score_adj: int = 0
    cgroup_driver: str = "cgroupfs"
    cgroup_v2: bool = False
    bounding_caps: frozenset[str] = frozenset(ALL_CAPS)  # sycri's own CapBnd
    machine: str = "x86_64"  # uname -m: the seccomp profile's architectures
    recursive_read_only: bool = False  # the runtime handler can do rro mounts here
    # host path -> (mount point, shared/slave/private), for non-private volumes
    propagation: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    # Hugepage sizes ("2MB", "1GB") the node's cgroups can limit; None: not looked at.
    hugetlb_sizes: frozenset[str] | None = None
    cgroups: CgroupFacts = CgroupFacts()
    # sycri's own rlimits (soft, hard) by name: the node's values where default_ulimits
    # names none. Empty: unknown, and a pod can raise nothing without max_ulimits.
    own_rlimits: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    arg_max: int = 2 * 1024 * 1024  # the kernel's limit for argv + environment


@dataclass(frozen=True)
class Settings:
    """sycri's settings that shape every container."""

    default_ulimits: tuple[str, ...] = ()
    max_ulimits: tuple[str, ...] = ()  # how far a pod may raise a hard limit
    apparmor_default_profile: str = ""  # loaded profile name for RuntimeDefault; "": none
    default_cgroup_parent: str = "/sycri"
    pids_limit: int = 0  # every container's pids.max; 0: none


@dataclass(frozen=True)
class SpecInput:
    container_id: str
    rootfs: str
    config: api_pb2.ContainerConfig
    sandbox_config: api_pb2.PodSandboxConfig
    sandbox: Sandbox
    image: ImageConfig = ImageConfig()
    passwd: str = ""
    group: str = ""
    host: HostFacts = HostFacts()
    settings: Settings = Settings()


@dataclass(frozen=True)
class BuiltSpec:
    spec: dict[str, Any]
    user: users.ResolvedUser
    stop_signal: int
    cgroup_path: str

    def json(self) -> str:
        """Compact, as the record keeps it for verbose status: one encoding serves the
        bundle's config.json and the record."""
        return json.dumps(self.spec)
