"""A pod user namespace's uid and gid mappings, validated from the CRI request (pure).

The CRI asks for one uid and one gid mapping per pod (kubelet allocates a 64 Ki-aligned
range of host ids; container id 0 must be mapped). ``plan`` refuses what sycri cannot
honour before anything is created; the OCI spec and the edge (``userns``) take the
resulting :class:`Mappings`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sycri.api import api_pb2
from sycri.errors import InvalidArgument

MAX_ID = 2**32 - 1


@dataclass(frozen=True)
class IDMap:
    """One ``container_id host_id size`` line of a uid_map or gid_map."""

    container_id: int
    host_id: int
    size: int

    def line(self) -> str:
        return f"{self.container_id} {self.host_id} {self.size}\n"

    def oci(self) -> dict[str, int]:
        return {"containerID": self.container_id, "hostID": self.host_id, "size": self.size}


@dataclass(frozen=True)
class Mappings:
    """A pod user namespace's one uid and one gid mapping."""

    uids: IDMap
    gids: IDMap

    @property
    def root_uid(self) -> int:
        """The host uid of the namespace's root (owner of the container's upper dir)."""
        return self.uids.host_id

    @property
    def root_gid(self) -> int:
        return self.gids.host_id

    def to_json(self) -> dict[str, list[int]]:
        return {
            "uids": [self.uids.container_id, self.uids.host_id, self.uids.size],
            "gids": [self.gids.container_id, self.gids.host_id, self.gids.size],
        }

    @classmethod
    def from_json(cls, doc: dict[str, list[int]]) -> Mappings:
        return cls(IDMap(*doc["uids"]), IDMap(*doc["gids"]))


def _one(kind: str, maps: Sequence[api_pb2.IDMapping]) -> IDMap:
    if len(maps) != 1:
        raise InvalidArgument(
            f"userns_options.{kind}: exactly one mapping is supported, got {len(maps)}"
        )
    m = maps[0]
    if m.container_id != 0:
        raise InvalidArgument(
            f"userns_options.{kind}: container id 0 must be mapped (the mapping starts at "
            f"{m.container_id})"
        )
    if m.length < 1 or m.host_id + m.length - 1 > MAX_ID:
        raise InvalidArgument(
            f"userns_options.{kind}: mapping of length {m.length} from host id {m.host_id} "
            "is empty or out of range"
        )
    if m.host_id == 0:
        raise InvalidArgument(
            f"userns_options.{kind}: the mapping must not include host id 0 (host root)"
        )
    return IDMap(m.container_id, m.host_id, m.length)


def plan(nsopt: api_pb2.NamespaceOption) -> Mappings | None:
    """The pod's user namespace mappings; None for the host's (NODE, or unset).

    Pure: InvalidArgument for modes and mappings sycri cannot honour, and for the
    host namespaces Kubernetes forbids with ``hostUsers: false`` (the pod's network,
    IPC and PID namespaces must be owned by its user namespace).
    """
    if not nsopt.HasField("userns_options"):
        return None
    opts = nsopt.userns_options
    if opts.mode == api_pb2.NODE:
        if opts.uids or opts.gids:
            raise InvalidArgument("userns_options: NODE mode takes no uid or gid mappings")
        return None
    if opts.mode != api_pb2.POD:
        name = api_pb2.NamespaceMode.Name(opts.mode) if opts.mode in (1, 2, 3) else opts.mode
        raise InvalidArgument(f"userns_options.mode {name} is not supported (POD or NODE)")
    for kind, mode in (("network", nsopt.network), ("ipc", nsopt.ipc), ("pid", nsopt.pid)):
        if mode == api_pb2.NODE:
            raise InvalidArgument(
                f"userns_options: a pod user namespace cannot use the host's {kind} namespace"
            )
    return Mappings(_one("uids", opts.uids), _one("gids", opts.gids))


def container_mode_ok(pod: Mappings | None, sc_opts: api_pb2.NamespaceOption | None) -> None:
    """A container must use its pod's user namespace (CONTAINER/TARGET are not offered)."""
    if sc_opts is None or not sc_opts.HasField("userns_options"):
        return
    mode = sc_opts.userns_options.mode
    want = api_pb2.NODE if pod is None else api_pb2.POD
    if mode != want:
        raise InvalidArgument(
            "security_context.namespace_options.userns_options: a container must use its "
            f"pod's user namespace ({api_pb2.NamespaceMode.Name(want)})"
        )
