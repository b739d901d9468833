"""Linux capabilities of a container: the default set, adds and drops, ambient ones."""

from __future__ import annotations

from sycri.api import api_pb2
from sycri.errors import InvalidArgument, excerpt

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


def ambient(spec: api_pb2.Capability, held: list[str]) -> list[str]:
    ambient = [_cap_name(c) for c in spec.add_ambient_capabilities]
    missing = [c for c in ambient if c not in held]
    if missing:
        raise InvalidArgument(
            f"capabilities: ambient {missing[0]} is not among the container's capabilities"
        )
    return ambient
