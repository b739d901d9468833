"""Namespaced sysctls: which a pod may set, and setting them inside its namespaces.

A sysctl is allowed only when the namespace it belongs to is the pod's own: IPC
sysctls (``kernel.shm*``, ``kernel.msg*``, ``kernel.sem``, ``fs.mqueue.*``) with a pod IPC
namespace, ``net.*`` with a pod network namespace. Anything else would change the
whole node and is refused, as is a key the kernel does not know.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Mapping
from dataclasses import dataclass

from sycri.errors import InvalidArgument, excerpt

_KEY = re.compile(r"^[a-z0-9_]+(\.[A-Za-z0-9_:@*+-]+)+$")
_IPC_EXACT = {"kernel.sem"}
_IPC_PREFIXES = ("kernel.shm", "kernel.msg", "fs.mqueue.")
MAX_SYSCTLS = 64


@dataclass(frozen=True)
class Sysctl:
    key: str  # dotted form
    value: str
    namespace: str  # "net" or "ipc"

    @property
    def proc_path(self) -> str:
        return "/proc/sys/" + self.key.replace(".", "/")


def normalize(key: str) -> str:
    """``net/ipv4/ip_forward`` and ``net.ipv4.ip_forward`` name the same sysctl."""
    return key.replace("/", ".")


def namespace_of(key: str) -> str | None:
    if key in _IPC_EXACT or key.startswith(_IPC_PREFIXES):
        return "ipc"
    if key.startswith("net."):
        return "net"
    return None


def plan(sysctls: Mapping[str, str], host_net: bool, host_ipc: bool) -> list[Sysctl]:
    """Validate a pod's sysctls; INVALID_ARGUMENT names the first bad one and why."""
    if len(sysctls) > MAX_SYSCTLS:
        raise InvalidArgument(f"too many sysctls ({len(sysctls)} > {MAX_SYSCTLS})")
    out = []
    for raw_key, value in sorted(sysctls.items()):
        key = normalize(raw_key)
        if not _KEY.match(key) or ".." in key or len(key) > 256:
            raise InvalidArgument(f"sysctl {excerpt(raw_key)} is not a sysctl name")
        if not value or len(value) > 1024 or any(c in value for c in "\n\x00"):
            raise InvalidArgument(f"sysctl {excerpt(raw_key)}: bad value {excerpt(value)}")
        ns = namespace_of(key)
        if ns is None:
            raise InvalidArgument(
                f"sysctl {excerpt(raw_key)} is not namespaced: setting it would change the whole node"
            )
        if (ns == "net" and host_net) or (ns == "ipc" and host_ipc):
            raise InvalidArgument(
                f"sysctl {excerpt(raw_key)} is unsafe with a host {ns} namespace: "
                "it would change the node's own setting"
            )
        out.append(Sysctl(key, value, ns))
    return out


def apply_here(items: list[Sysctl]) -> None:
    """Blocking: write each sysctl as seen from this thread's namespaces (already entered)."""
    for s in items:
        try:
            with open(s.proc_path, "w") as f:
                f.write(s.value)
        except FileNotFoundError:
            raise InvalidArgument(f"sysctl {excerpt(s.key)} is unknown to this kernel") from None
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.ERANGE):
                raise InvalidArgument(
                    f"sysctl {excerpt(s.key)}: the kernel refused value {excerpt(s.value)}"
                ) from None
            if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise InvalidArgument(
                    f"sysctl {excerpt(s.key)} cannot be set inside a pod ({exc.strerror})"
                ) from None
            raise


# A shell step per sysctl: exit 3 when the kernel has no such sysctl, else write it.
_WRITE = 'test -e "$1" || exit 3; printf "%s" "$2" > "$1"'


async def apply_as_namespace_root(items: list[Sysctl], namespaces: Mapping[str, str]) -> None:
    """Write each sysctl as the root of a pod's own user namespace (``namespaces``: kind
    -> pinned path, with ``user``). IPC sysctls of a namespace owned by another user
    namespace are writable only by that namespace's root, not by host root, and sycri's
    threads cannot enter a user namespace: so a child does (``nsenter --user`` makes it
    the namespace's uid 0)."""
    from sycri import command

    enter = [f"--{kind}={path}" for kind, path in namespaces.items()]
    for s in items:
        result = await command.run(
            ["nsenter", *enter, "--", "/bin/sh", "-c", _WRITE, "sh", s.proc_path, s.value],
            check=False,
            timeout=10,
            label="sysctl",
        )
        if result.ok:
            continue
        err = result.stderr.decode(errors="replace")
        if result.returncode == 3:
            raise InvalidArgument(f"sysctl {excerpt(s.key)} is unknown to this kernel")
        if "Invalid argument" in err or "out of range" in err:
            raise InvalidArgument(
                f"sysctl {excerpt(s.key)}: the kernel refused value {excerpt(s.value)}"
            )
        raise InvalidArgument(
            f"sysctl {excerpt(s.key)} cannot be set inside a pod ({excerpt(err.strip())})"
        )
