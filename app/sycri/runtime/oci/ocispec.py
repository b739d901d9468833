"""The OCI runtime spec of a container: a pure function of what kubelet asked for.

``build(SpecInput) -> BuiltSpec`` reads nothing from the host: every fact it needs
(the image's config and /etc/passwd, the sandbox's namespace paths, host devices and
paths, CDI specs, seccomp profiles, sycri's own oom_score_adj) is gathered at the edge
by ``hostfacts.gather`` and passed in. That keeps every rule here unit-testable
without root, and a request that cannot run fails before anything is created.
"""

from __future__ import annotations

import json
import logging
import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sycri.api import api_pb2
from sycri.errors import InvalidArgument, excerpt
from sycri.runtime.oci import argv, cdi, seccomp, users
from sycri.runtime.pod import userns

log = logging.getLogger("sycri.ocispec")

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# containerd's default capability set.
DEFAULT_CAPS = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
    "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)  # fmt: skip

# Every capability, in kernel bit order (CAP_CHOWN is bit 0): /proc's CapBnd maps by index.
ALL_CAPS = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)  # fmt: skip

DEFAULT_MASKED = (
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware", "/sys/devices/virtual/powercap",
)  # fmt: skip
DEFAULT_READONLY = (
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
)  # fmt: skip

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

RLIMITS = {
    "as", "core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice",
    "nofile", "nproc", "rss", "rtprio", "rttime", "sigpending", "stack",
}  # fmt: skip
ULIMITS_ANNOTATION = "sycri.io/ulimits"  # pod annotation: "memlock=-1:-1,nofile=4096"

SIGNALS = {
    "SIGHUP": 1, "SIGINT": 2, "SIGQUIT": 3, "SIGILL": 4, "SIGTRAP": 5, "SIGABRT": 6,
    "SIGBUS": 7, "SIGFPE": 8, "SIGKILL": 9, "SIGUSR1": 10, "SIGSEGV": 11, "SIGUSR2": 12,
    "SIGPIPE": 13, "SIGALRM": 14, "SIGTERM": 15, "SIGSTKFLT": 16, "SIGCHLD": 17,
    "SIGCONT": 18, "SIGSTOP": 19, "SIGTSTP": 20, "SIGTTIN": 21, "SIGTTOU": 22, "SIGURG": 23,
    "SIGXCPU": 24, "SIGXFSZ": 25, "SIGVTALRM": 26, "SIGPROF": 27, "SIGWINCH": 28,
    "SIGIO": 29, "SIGPWR": 30, "SIGSYS": 31,
}  # fmt: skip

_NAMESPACED_SYSCTL_PREFIXES = ("kernel.shm", "kernel.msg", "fs.mqueue.", "net.")
_IPC_SYSCTLS = ("kernel.shm", "kernel.msg", "kernel.sem", "fs.mqueue.")


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
    userns_maps: userns.Mappings | None = None


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

    def json(self) -> bytes:
        return json.dumps(self.spec, indent=1).encode()


def build(inp: SpecInput) -> BuiltSpec:
    """The complete OCI runtime spec for one container; InvalidArgument names a bad field."""
    cfg = inp.config
    linux_cfg = cfg.linux
    sc = linux_cfg.security_context
    pod_sc = inp.sandbox_config.linux.security_context
    privileged = sc.privileged
    if privileged and not pod_sc.privileged:
        raise InvalidArgument(
            "security_context.privileged: a privileged container needs a privileged pod"
        )

    user = users.resolve(_user_request(sc), inp.image.user, inp.passwd, inp.group)
    id_maps = inp.sandbox.userns_maps if inp.sandbox.userns else None
    userns.container_mode_ok(
        id_maps, sc.namespace_options if sc.HasField("namespace_options") else None
    )
    if id_maps is not None:
        _check_mapped(user, id_maps)
    caps = capabilities(sc.capabilities, privileged, inp.host.bounding_caps)
    cdi_edits = cdi.edits_for([d.name for d in cfg.CDI_devices], list(inp.host.cdi_specs))
    args = process_args(cfg, inp.image)
    env = environment(cfg, inp.image, inp.sandbox, cdi_edits.env)
    argv.check("command, args and envs", args, env, limit=inp.host.arg_max)
    process: dict[str, Any] = {
        "terminal": cfg.tty,
        "args": args,
        "env": env,
        "cwd": working_dir(cfg, inp.image),
        "user": {"uid": user.uid, "gid": user.gid, "additionalGids": list(user.additional_gids)},
        "capabilities": {
            "bounding": caps,
            "effective": caps,
            "permitted": caps,
            "ambient": _ambient(sc.capabilities, caps),
        },
        "rlimits": rlimits(
            inp.settings.default_ulimits,
            inp.sandbox_config.annotations,
            inp.settings.max_ulimits,
            inp.host.own_rlimits,
            "CAP_SYS_RESOURCE" in inp.host.bounding_caps,
        ),
        "noNewPrivileges": sc.no_new_privs,
        "oomScoreAdj": max(
            _ranged(linux_cfg.resources.oom_score_adj, "oom_score_adj", -1000, 1000),
            inp.host.own_oom_score_adj,
        ),
    }
    apparmor = _apparmor(sc, inp.host, inp.settings, privileged)
    if apparmor:
        process["apparmorProfile"] = apparmor

    cgroup_path = _cgroup_path(inp)
    resources = cgroup_resources(
        linux_cfg.resources, inp.host.cgroup_v2, inp.host.hugetlb_sizes, inp.host.cgroups
    )
    devices, device_rules = _devices(cfg, inp.host, privileged, cdi_edits)
    resources["devices"] = device_rules
    if inp.settings.pids_limit > 0:
        resources["pids"] = {"limit": inp.settings.pids_limit}
    linux: dict[str, Any] = {
        "namespaces": namespaces(inp.sandbox_config, sc, inp.sandbox, inp.host.cgroup_v2),
        "resources": resources,
        "cgroupsPath": cgroup_path,
        "devices": devices,
        "sysctl": sysctls(inp.sandbox_config),
    }
    if id_maps is not None:
        # runc joins the pod's user namespace by path; it still wants the mappings.
        linux["uidMappings"] = [id_maps.uids.oci()]
        linux["gidMappings"] = [id_maps.gids.oci()]
    if not privileged:
        linux["maskedPaths"] = list(sc.masked_paths) or list(DEFAULT_MASKED)
        linux["readonlyPaths"] = list(sc.readonly_paths) or list(DEFAULT_READONLY)
    profile = seccomp_profile(sc, inp.host, caps, privileged)
    if profile is not None:
        linux["seccomp"] = profile

    spec: dict[str, Any] = {
        "ociVersion": "1.0.2",
        "process": process,
        "root": {"path": inp.rootfs, "readonly": sc.readonly_rootfs},
        "mounts": mounts(cfg, inp.sandbox, inp.host, privileged, sc.readonly_rootfs, cdi_edits),
        "annotations": _annotations(inp),
        "linux": linux,
    }
    propagation = rootfs_propagation(cfg)
    if propagation:
        linux["rootfsPropagation"] = propagation
    if cdi_edits.hooks:
        spec["hooks"] = _hooks(cdi_edits.hooks)
    return BuiltSpec(spec, user, stop_signal(cfg, inp.image), cgroup_path)


# --- process -------------------------------------------------------------------------


def process_args(cfg: api_pb2.ContainerConfig, image: ImageConfig) -> list[str]:
    """kubelet's rule: command replaces ENTRYPOINT (and drops CMD), args replace CMD."""
    if cfg.command:
        argv = list(cfg.command) + list(cfg.args)
    elif cfg.args:
        argv = list(image.entrypoint) + list(cfg.args)
    else:
        argv = list(image.entrypoint) + list(image.cmd)
    if not argv or not argv[0]:
        raise InvalidArgument("command: no command given and the image has no ENTRYPOINT or CMD")
    return argv


def environment(
    cfg: api_pb2.ContainerConfig, image: ImageConfig, sandbox: Sandbox, extra: list[str] = ()
) -> list[str]:
    """The image's env, overridden key by key by CDI edits and then the request's envs."""
    env: dict[str, str] = {}
    for item in image.env:
        key, _, value = item.partition("=")
        if key:
            env[key] = value
    env.setdefault("PATH", DEFAULT_PATH)
    if sandbox.hostname:
        env.setdefault("HOSTNAME", sandbox.hostname)
    if cfg.tty:
        env.setdefault("TERM", "xterm")
    for item in extra:
        key, _, value = item.partition("=")
        env[key] = value
    for kv in cfg.envs:
        value = kv.value.decode(errors="replace") if isinstance(kv.value, bytes) else kv.value
        if not kv.key or "=" in kv.key or "\x00" in kv.key or "\x00" in value:
            raise InvalidArgument(f"envs: bad variable name {excerpt(kv.key)}")
        env[kv.key] = value
    return [f"{k}={v}" for k, v in env.items()]


def working_dir(cfg: api_pb2.ContainerConfig, image: ImageConfig) -> str:
    wd = cfg.working_dir or image.working_dir or "/"
    if not wd.startswith("/") or "\x00" in wd:
        raise InvalidArgument(f"working_dir: {excerpt(wd)} is not an absolute path")
    return posixpath.normpath(wd)


def stop_signal(cfg: api_pb2.ContainerConfig, image: ImageConfig) -> int:
    """The request's stop_signal, else the image's StopSignal, else SIGTERM."""
    if cfg.stop_signal:
        name = api_pb2.Signal.Name(cfg.stop_signal).removeprefix("SIGNAL_")
        return SIGNALS.get(name, 15)
    raw = image.stop_signal.strip().upper()
    if not raw:
        return 15
    if raw.isdigit() and 0 < int(raw) < 65:
        return int(raw)
    name = raw if raw.startswith("SIG") else "SIG" + raw
    return SIGNALS.get(name, 15)


def _user_request(sc: api_pb2.LinuxContainerSecurityContext) -> users.UserRequest:
    return users.UserRequest(
        run_as_user=sc.run_as_user.value if sc.HasField("run_as_user") else None,
        run_as_username=sc.run_as_username,
        run_as_group=sc.run_as_group.value if sc.HasField("run_as_group") else None,
        supplemental_groups=tuple(sc.supplemental_groups),
        strict=sc.supplemental_groups_policy == api_pb2.Strict,
    )


def _cap_name(raw: str) -> str:
    name = raw.strip().upper()
    name = name if name.startswith("CAP_") else "CAP_" + name
    if name not in ALL_CAPS:
        raise InvalidArgument(f"capabilities: unknown capability {excerpt(raw)}")
    return name


def capabilities(
    spec: api_pb2.Capability, privileged: bool, bounding: frozenset[str] = frozenset(ALL_CAPS)
) -> list[str]:
    """Default set, then add (ALL: everything), then drop (ALL: nothing but the adds).

    Never more than ``bounding``, sycri's own bounding set: runc cannot grant what its
    parent lacks (``unable to apply caps``). Privileged and ALL mean all *of those*, as
    containerd does; naming one the node lacks is an error, not a silent drop.
    """
    if privileged:
        return [c for c in ALL_CAPS if c in bounding]
    adds = [c for c in spec.add_capabilities]
    drops = [c for c in spec.drop_capabilities]
    add_all = any(c.upper() in ("ALL", "CAP_ALL") for c in adds)
    drop_all = any(c.upper() in ("ALL", "CAP_ALL") for c in drops)
    add_set = {_cap_name(c) for c in adds if c.upper() not in ("ALL", "CAP_ALL")}
    drop_set = {_cap_name(c) for c in drops if c.upper() not in ("ALL", "CAP_ALL")}
    held = set(ALL_CAPS) if add_all else set(DEFAULT_CAPS)
    if drop_all:
        held = set()
    lacking = sorted(add_set - drop_set - bounding)
    if lacking:
        raise InvalidArgument(
            f"capabilities: {lacking[0]} is not in the node's bounding set; it cannot be granted"
        )
    held = (held | add_set) - drop_set
    return [c for c in ALL_CAPS if c in held and c in bounding]


def _ambient(spec: api_pb2.Capability, held: list[str]) -> list[str]:
    ambient = [_cap_name(c) for c in spec.add_ambient_capabilities]
    missing = [c for c in ambient if c not in held]
    if missing:
        raise InvalidArgument(
            f"capabilities: ambient {missing[0]} is not among the container's capabilities"
        )
    return ambient


def rlimits(
    defaults: tuple[str, ...],
    pod_annotations: Mapping[str, str],
    ceilings: tuple[str, ...] = (),
    own: Mapping[str, tuple[int, int]] | None = None,
    can_raise_hard: bool = True,
) -> list[dict[str, Any]]:
    """The node's rlimits (``default_ulimits``), changed per pod by ``sycri.io/ulimits``.

    rlimits are the node's decision: runc applies them as root, so a pod author could
    otherwise take ``rtprio=99`` or ``memlock=unlimited``. A pod may ask for any soft
    limit up to its hard limit, and for a hard limit up to the node's (its default, else
    sycri's own, ``own``) or up to the node's ceiling (``max_ulimits``). Without
    CAP_SYS_RESOURCE (``can_raise_hard`` False) no hard limit can exceed sycri's own.
    """
    node: dict[str, tuple[int, int]] = {}
    for item in defaults:
        name, soft, hard = _parse_ulimit(item, "default_ulimits")
        node[name] = (soft, hard)
    ceiling: dict[str, int] = {}
    for item in ceilings:
        name, _, hard = _parse_ulimit(item, "max_ulimits")
        ceiling[name] = hard
    limits = dict(node)
    raw = pod_annotations.get(ULIMITS_ANNOTATION, "")
    where = f"annotation {ULIMITS_ANNOTATION}"
    for item in (p.strip() for p in raw.split(",")):
        if not item:
            continue
        name, soft, hard = _parse_ulimit(item, where)
        base = node.get(name) or (own or {}).get(name)
        allowed = max(base[1] if base else 0, ceiling.get(name, 0))
        if hard > allowed:
            raise InvalidArgument(
                f"{where}: {name} hard limit {_shown(hard)} is above the node's "
                f"{_shown(allowed)}; only max_ulimits on the node can allow more"
            )
        mine = (own or {}).get(name)
        if not can_raise_hard and mine is not None and hard > mine[1]:
            raise InvalidArgument(
                f"{where}: {name} hard limit {_shown(hard)} is above sycri's own "
                f"{_shown(mine[1])}, and the node lacks CAP_SYS_RESOURCE to raise it"
            )
        limits[name] = (soft, hard)
    return [
        {"type": "RLIMIT_" + n.upper(), "soft": s, "hard": h}
        for n, (s, h) in sorted(limits.items())
    ]


def _shown(value: int) -> str:
    return "unlimited" if value >= _UNLIMITED else str(value)


_UNLIMITED = 2**64 - 1


def _parse_ulimit(item: str, where: str) -> tuple[str, int, int]:
    """``name=soft[:hard]``; -1 or ``unlimited`` means no limit."""
    name, sep, values = item.partition("=")
    name = name.strip().lower().removeprefix("rlimit_")
    if not sep or name not in RLIMITS:
        raise InvalidArgument(f"{where}: {excerpt(item)} is not NAME=SOFT[:HARD]")
    soft_s, _, hard_s = values.partition(":")

    def num(s: str) -> int:
        s = s.strip().lower()
        if s in ("-1", "unlimited"):
            return _UNLIMITED
        if not s.isdigit():
            raise InvalidArgument(f"{where}: {excerpt(item)} has a bad number")
        return int(s)

    soft = num(soft_s)
    hard = num(hard_s) if hard_s else soft
    if soft > hard:
        raise InvalidArgument(f"{where}: {excerpt(item)}: soft limit above hard limit")
    return name, soft, hard


# --- security --------------------------------------------------------------------------


def _profile_of(profile: api_pb2.SecurityProfile | None, legacy: str) -> tuple[str, str]:
    """(kind, localhost ref) from the typed field, else the deprecated string form."""
    if profile is not None:
        kind = api_pb2.SecurityProfile.ProfileType.Name(profile.profile_type)
        return kind, profile.localhost_ref
    if legacy in ("runtime/default", "docker/default"):
        return "RuntimeDefault", ""
    if legacy.startswith("localhost/"):
        return "Localhost", legacy.removeprefix("localhost/")
    return "Unconfined", ""


def seccomp_profile(
    sc: api_pb2.LinuxContainerSecurityContext,
    host: HostFacts,
    caps: list[str],
    privileged: bool,
) -> dict[str, Any] | None:
    """RuntimeDefault: the built-in profile; Localhost: that file; unset/Unconfined: none."""
    kind, ref = _profile_of(sc.seccomp if sc.HasField("seccomp") else None, sc.seccomp_profile_path)
    if privileged or kind == "Unconfined":
        return None
    if kind == "RuntimeDefault":
        return seccomp.default_profile(caps, host.machine)
    if not ref.startswith("/"):
        raise InvalidArgument(f"seccomp: localhost profile {excerpt(ref)} is not an absolute path")
    text = host.seccomp_profiles.get(ref)
    if text is None:
        raise InvalidArgument(f"seccomp: localhost profile {excerpt(ref)} cannot be read")
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise InvalidArgument(f"seccomp: profile {excerpt(ref)} is not JSON: {exc}") from None
    if not isinstance(doc, dict) or "defaultAction" not in doc:
        raise InvalidArgument(f"seccomp: profile {excerpt(ref)} has no defaultAction")
    return doc


def _apparmor(
    sc: api_pb2.LinuxContainerSecurityContext, host: HostFacts, settings: Settings, privileged: bool
) -> str:
    if not host.apparmor or privileged:
        return ""
    kind, ref = _profile_of(sc.apparmor if sc.HasField("apparmor") else None, sc.apparmor_profile)
    if kind == "Localhost":
        if not ref:
            raise InvalidArgument("apparmor: Localhost profile without a name")
        return ref
    if kind == "RuntimeDefault":
        return settings.apparmor_default_profile
    return ""


def sysctls(pod: api_pb2.PodSandboxConfig) -> dict[str, str]:
    """The pod's sysctls; only namespaced ones, and not for a namespace shared with the host."""
    ns = pod.linux.security_context.namespace_options
    out = {}
    for key, value in pod.linux.sysctls.items():
        name = key.replace("/", ".")
        if name.startswith(_IPC_SYSCTLS):
            if ns.ipc == api_pb2.NODE:
                raise InvalidArgument(f"sysctls: {excerpt(key)} needs the pod's own IPC namespace")
        elif name.startswith("net."):
            if ns.network == api_pb2.NODE:
                raise InvalidArgument(
                    f"sysctls: {excerpt(key)} needs the pod's own network namespace"
                )
        elif name not in ("kernel.domainname", "kernel.hostname"):
            raise InvalidArgument(f"sysctls: {excerpt(key)} is not a namespaced sysctl")
        if "\x00" in value or "\n" in value:
            raise InvalidArgument(f"sysctls: bad value for {excerpt(key)}")
        out[name] = value
    return out


# --- namespaces, cgroups ---------------------------------------------------------------


def namespaces(
    pod: api_pb2.PodSandboxConfig,
    sc: api_pb2.LinuxContainerSecurityContext,
    sandbox: Sandbox,
    cgroup_v2: bool,
) -> list[dict[str, str]]:
    """Join the pod's pinned namespaces by path; NODE modes use the host's."""
    ns = sc.namespace_options if sc.HasField("namespace_options") else None
    pod_ns = pod.linux.security_context.namespace_options
    out: list[dict[str, str]] = [{"type": "mount"}]
    network = ns.network if ns else pod_ns.network
    ipc = ns.ipc if ns else pod_ns.ipc
    pid = ns.pid if ns else pod_ns.pid
    if sandbox.userns:
        for kind, mode in (("network", network), ("ipc", ipc), ("pid", pid)):
            if mode == api_pb2.NODE:
                raise InvalidArgument(
                    f"namespace_options.{kind}: a container in a pod user namespace "
                    "cannot use the host's"
                )
        out.append({"type": "user", "path": sandbox.userns})
    if network != api_pb2.NODE:
        out.append(_ns("network", sandbox.netns))
    if ipc != api_pb2.NODE:
        out.append(_ns("ipc", sandbox.ipcns))
    if network != api_pb2.NODE or sandbox.utsns:
        out.append(_ns("uts", sandbox.utsns))
    if pid == api_pb2.POD and sandbox.pidns:
        out.append({"type": "pid", "path": sandbox.pidns})
    elif pid == api_pb2.TARGET:
        raise InvalidArgument("namespace_options.pid: TARGET is not supported")
    elif pid != api_pb2.NODE:
        out.append({"type": "pid"})
    if cgroup_v2:
        out.append({"type": "cgroup"})
    return out


def _check_mapped(user: users.ResolvedUser, maps: userns.Mappings) -> None:
    """The process's ids must exist in the pod's user namespace (runc fails late otherwise)."""
    if not 0 <= user.uid < maps.uids.size:
        raise InvalidArgument(
            f"user {user.uid} is not mapped in the pod's user namespace (uids 0-{maps.uids.size - 1})"
        )
    for gid in (user.gid, *user.additional_gids):
        if not 0 <= gid < maps.gids.size:
            raise InvalidArgument(
                f"group {gid} is not mapped in the pod's user namespace "
                f"(gids 0-{maps.gids.size - 1})"
            )


def _ns(kind: str, path: str) -> dict[str, str]:
    return {"type": kind, "path": path} if path else {"type": kind}


def _cgroup_path(inp: SpecInput) -> str:
    parent = (
        inp.sandbox.cgroup_parent
        or inp.sandbox_config.linux.cgroup_parent
        or inp.settings.default_cgroup_parent
    )
    if inp.host.cgroup_driver == "systemd":
        slice_ = parent if parent.endswith(".slice") else "system.slice"
        return f"{posixpath.basename(slice_)}:sycri:{inp.container_id}"
    if not parent.startswith("/"):
        parent = "/" + parent
    if ".." in parent.split("/"):
        raise InvalidArgument(f"cgroup_parent: {excerpt(parent)} climbs out of the hierarchy")
    return posixpath.join(parent, "sycri-" + inp.container_id)


_HUGEPAGE = re.compile(r"^\d+(KB|MB|GB)$")
_CPU_ITEM = re.compile(r"^(\d{1,5})(?:-(\d{1,5}))?$")
# A cgroup v2 interface file of a resource controller ("memory.high", "io.weight");
# never a core file such as cgroup.procs, which would move processes.
_UNIFIED_KEY = re.compile(r"^[a-z][a-z0-9_]*\.[a-z0-9_]+(\.[a-z0-9_]+)*$")

# The kernel's CFS bandwidth bounds (kernel/sched/core.c), in microseconds.
MIN_CFS = 1000
MAX_CFS_PERIOD = 1_000_000
MAX_CFS_QUOTA = (1 << 44) - 1
# cgroup v1 cpu.shares range; runc maps it onto v2's cpu.weight 1-10000.
MIN_SHARES, MAX_SHARES = 2, 262144
# Below this runc's own init cannot start in the cgroup (CRI-O refuses the same).
MIN_MEMORY = 12 * 1024 * 1024


def cpu_list(value: str, field_name: str, online: frozenset[int] | None) -> set[int]:
    """The CPUs (or memory nodes) of a cpuset list such as ``0-3,8``; InvalidArgument
    when it is not one or names one the node does not have."""
    out: set[int] = set()
    for item in value.split(","):
        m = _CPU_ITEM.match(item.strip())
        if not m:
            raise InvalidArgument(f"{field_name}: {excerpt(value)} is not a CPU list like 0-3,8")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise InvalidArgument(f"{field_name}: {excerpt(value)} has a range that runs backwards")
        if online is not None and not set(range(lo, hi + 1)) <= online:
            missing = min(set(range(lo, hi + 1)) - online)
            raise InvalidArgument(f"{field_name}: {missing} is not online on this node")
        out.update(range(lo, min(hi, lo + 65536) + 1))
    return out


def _ranged(value: int, name: str, lo: int, hi: int) -> int:
    if not lo <= value <= hi:
        raise InvalidArgument(f"{name}: {value} is out of the range {lo}-{hi} the kernel takes")
    return value


def cgroup_resources(
    res: api_pb2.LinuxContainerResources,
    cgroup_v2: bool,
    hugetlb_sizes: frozenset[str] | None = None,
    node: CgroupFacts = CgroupFacts(),
) -> dict[str, Any]:
    """CRI resources as OCI ``linux.resources`` (zero means unset, as in the CRI).

    Every value runc or the kernel would refuse is refused here first, naming its field:
    a refusal inside ``runc update`` can leave some files written and others not.
    """
    out: dict[str, Any] = {}
    cpu: dict[str, Any] = {}
    if res.cpu_shares:
        cpu["shares"] = _ranged(res.cpu_shares, "cpu_shares", MIN_SHARES, MAX_SHARES)
    if res.cpu_quota:
        cpu["quota"] = (
            res.cpu_quota
            if res.cpu_quota == -1
            else _ranged(res.cpu_quota, "cpu_quota", MIN_CFS, MAX_CFS_QUOTA)
        )
    if res.cpu_period:
        cpu["period"] = _ranged(res.cpu_period, "cpu_period", MIN_CFS, MAX_CFS_PERIOD)
    for field_name, key, online in (
        ("cpuset_cpus", "cpus", node.cpus),
        ("cpuset_mems", "mems", node.mems),
    ):
        value = getattr(res, field_name)
        if value:
            cpu_list(value, field_name, online)
            cpu[key] = value
    if cpu:
        out["cpu"] = cpu
    memory: dict[str, Any] = {}
    if res.memory_limit_in_bytes:
        limit = _positive(res.memory_limit_in_bytes, "memory_limit_in_bytes")
        if limit < MIN_MEMORY:
            raise InvalidArgument(
                f"memory_limit_in_bytes: {limit} is below the minimum of {MIN_MEMORY} bytes"
            )
        memory["limit"] = limit
    if res.memory_swap_limit_in_bytes:
        swap = res.memory_swap_limit_in_bytes
        if swap != -1:
            _positive(swap, "memory_swap_limit_in_bytes")
            if "limit" not in memory:
                raise InvalidArgument(
                    "memory_swap_limit_in_bytes: a swap limit needs memory_limit_in_bytes"
                )
            if memory["limit"] > swap:
                raise InvalidArgument("memory_swap_limit_in_bytes: below memory_limit_in_bytes")
        memory["swap"] = swap
    if memory:
        out["memory"] = memory
    pages = hugepage_limits(res.hugepage_limits, hugetlb_sizes)
    if pages:
        out["hugepageLimits"] = pages
    if res.unified:
        if not cgroup_v2:
            raise InvalidArgument("unified: cgroup v2 settings on a cgroup v1 host")
        for key, value in res.unified.items():
            controller = key.split(".", 1)[0]
            if not _UNIFIED_KEY.match(key) or controller == "cgroup":
                raise InvalidArgument(f"unified: bad cgroup file {excerpt(key)}")
            if node.controllers is not None and controller not in node.controllers:
                raise InvalidArgument(
                    f"unified: {excerpt(key)}: the node has no {excerpt(controller)} controller"
                )
            if "\n" in value or not value.strip():
                raise InvalidArgument(f"unified: bad value {excerpt(value)} for {excerpt(key)}")
        out["unified"] = dict(res.unified)
    return out


def hugepage_limits(
    limits: Iterable[api_pb2.HugepageLimit], sizes: frozenset[str] | None
) -> list[dict[str, Any]]:
    """The limits the node can apply (``sizes``; None: all of them).

    kubelet sends a limit (often 0) for every size under /sys/kernel/mm/hugepages, even
    where no hugetlb cgroup controller is mounted; runc then fails the whole container.
    Like containerd and CRI-O, limits the node cannot apply are left out.
    """
    pages = []
    for hp in limits:
        if not _HUGEPAGE.match(hp.page_size):
            raise InvalidArgument(f"hugepage_limits: bad page size {excerpt(hp.page_size)}")
        if sizes is not None and hp.page_size not in sizes:
            log.debug(
                "hugepage limit for %s left out: the node has no hugetlb cgroup for it",
                hp.page_size,
            )
            continue
        pages.append({"pageSize": hp.page_size, "limit": hp.limit})
    return pages


def _positive(value: int, name: str) -> int:
    if value < 0:
        raise InvalidArgument(f"{name}: {value} is negative")
    return value


# --- devices ---------------------------------------------------------------------------

_ACCESS = re.compile(r"^[rwm]{1,3}$")


def _devices(
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
        nodes.append(_node(node, d["path"]))
        rules.append(_rule(node, d.get("permissions") or "rwm"))
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


# --- mounts ----------------------------------------------------------------------------

_PROPAGATION = {
    api_pb2.PROPAGATION_PRIVATE: "rprivate",
    api_pb2.PROPAGATION_HOST_TO_CONTAINER: "rslave",
    api_pb2.PROPAGATION_BIDIRECTIONAL: "rshared",
}


def _container_path(path: str, what: str) -> str:
    if not path.startswith("/") or "\x00" in path:
        raise InvalidArgument(f"{what}: container path {excerpt(path)} is not absolute")
    return posixpath.normpath(path)


def _check_rro(m: api_pb2.Mount, target: str, host: HostFacts) -> None:
    """kubelet's rules for recursive read-only: read-only, private, and a runtime that can."""
    if not m.readonly:
        raise InvalidArgument(f"mounts: {excerpt(target)} is recursive_read_only but not readonly")
    if m.propagation != api_pb2.PROPAGATION_PRIVATE:
        raise InvalidArgument(
            f"mounts: {excerpt(target)} is recursive_read_only, which needs private propagation"
        )
    if not host.recursive_read_only:
        raise InvalidArgument(
            f"mounts: {excerpt(target)} is recursive_read_only, which this runtime handler "
            "cannot do on this node"
        )


def _check_propagation(m: api_pb2.Mount, target: str, host: HostFacts) -> None:
    """As containerd: Bidirectional needs a shared host mount, HostToContainer a shared or
    slave one; otherwise the volume would silently propagate nothing."""
    if m.host_path not in host.propagation:
        return
    point, kind = host.propagation[m.host_path]
    if m.propagation == api_pb2.PROPAGATION_BIDIRECTIONAL and kind != "shared":
        need = "a shared mount (Bidirectional)"
    elif m.propagation == api_pb2.PROPAGATION_HOST_TO_CONTAINER and kind == "private":
        need = "a shared or slave mount (HostToContainer)"
    else:
        return
    raise InvalidArgument(
        f"mounts: host path {excerpt(m.host_path)} for {excerpt(target)} is on the {kind} "
        f"mount {excerpt(point)}, but its propagation needs {need}"
    )


def rootfs_propagation(cfg: api_pb2.ContainerConfig) -> str:
    """``rshared`` when a mount is Bidirectional, else ``rslave`` for HostToContainer.

    runc turns the container's whole mount tree slave by default, so a mount made
    inside a Bidirectional volume would never reach the host; containerd does the same.
    """
    kinds = {m.propagation for m in cfg.mounts}
    if api_pb2.PROPAGATION_BIDIRECTIONAL in kinds:
        return "rshared"
    if api_pb2.PROPAGATION_HOST_TO_CONTAINER in kinds:
        return "rslave"
    return ""


def mounts(
    cfg: api_pb2.ContainerConfig,
    sandbox: Sandbox,
    host: HostFacts,
    privileged: bool,
    readonly_rootfs: bool,
    edits: cdi.Edits,
) -> list[dict[str, Any]]:
    """Default filesystems, the pod's files, then the request's mounts (parents first)."""
    user: list[dict[str, Any]] = []
    for m in cfg.mounts:
        target = _container_path(m.container_path, "mounts")
        if m.HasField("image") and m.image.image:
            raise InvalidArgument(f"mounts: image volume at {excerpt(target)} is not supported")
        if not m.host_path.startswith("/"):
            raise InvalidArgument(
                f"mounts: host path {excerpt(m.host_path)} for {excerpt(target)} is not absolute"
            )
        kind = host.paths.get(m.host_path, "missing")
        if kind == "missing":
            raise InvalidArgument(
                f"mounts: host path {excerpt(m.host_path)} for {excerpt(target)} does not exist"
            )
        if m.recursive_read_only:
            _check_rro(m, target, host)
        _check_propagation(m, target, host)
        opts = ["rbind", _PROPAGATION.get(m.propagation, "rprivate")]
        opts.append("ro" if m.readonly else "rw")
        if m.recursive_read_only:
            opts.append("rro")
        user.append({"destination": target, "type": "bind", "source": m.host_path, "options": opts})
    for m in edits.mounts:
        user.append(
            {
                "destination": _container_path(m["containerPath"], "CDI mount"),
                "type": m.get("type") or "bind",
                "source": m["hostPath"],
                "options": list(m.get("options") or ["rbind", "rprivate", "ro"]),
            }
        )
    taken = {m["destination"] for m in user}
    ro = "ro" if readonly_rootfs else "rw"
    defaults: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "rw" if privileged else "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "rw" if privileged else "ro"]},
    ]  # fmt: skip
    if sandbox.shm:
        defaults.append({"destination": "/dev/shm", "type": "bind", "source": sandbox.shm, "options": ["rbind", "rprivate", "rw"]})  # fmt: skip
    else:
        defaults.append({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]})  # fmt: skip
    for source, dest in (
        (sandbox.hosts, "/etc/hosts"),
        (sandbox.resolv, "/etc/resolv.conf"),
        (sandbox.hostname_file, "/etc/hostname"),
    ):
        if source:
            defaults.append({"destination": dest, "type": "bind", "source": source, "options": ["rbind", "rprivate", ro]})  # fmt: skip
    out = [m for m in defaults if m["destination"] not in taken]
    # Parents before children: a mount at /a/b must come after one at /a.
    user.sort(key=lambda m: len([p for p in m["destination"].split("/") if p]))
    return out + user


def _hooks(hooks: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for h in hooks:
        name = h.get("hookName") or "createContainer"
        entry = {k: v for k, v in h.items() if k in ("path", "args", "env", "timeout")}
        out.setdefault(name, []).append(entry)
    return out


def _annotations(inp: SpecInput) -> dict[str, str]:
    out = dict(inp.config.annotations)
    meta = inp.sandbox_config.metadata
    out.update(
        {
            "io.kubernetes.cri.container-type": "container",
            "io.kubernetes.cri.container-name": inp.config.metadata.name,
            "io.kubernetes.cri.sandbox-id": inp.sandbox.id,
            "io.kubernetes.cri.sandbox-name": meta.name,
            "io.kubernetes.cri.sandbox-namespace": meta.namespace,
            "io.kubernetes.cri.image-name": inp.config.image.image,
        }
    )
    return out
