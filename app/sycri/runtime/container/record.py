"""A container as sycri records it, in containerd's split: metadata written once at
create and never changed, and a status that only the lifecycle calls and the exit
monitor change. Both are frozen values; a status change is a new value.

The JSON codec is here too, pure: fields a newer sycri added are kept (and written back
with the status) rather than refused, so a rollback never loses a container; a record
of the sycri before the split (one ``state.json`` holding both) splits in two.
"""

from __future__ import annotations

import base64
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from sycri.api import api_pb2

CREATED, RUNNING, EXITED = "created", "running", "exited"
STATES = (CREATED, RUNNING, EXITED)
STATE_PROTO = {
    CREATED: api_pb2.CONTAINER_CREATED,
    RUNNING: api_pb2.CONTAINER_RUNNING,
    EXITED: api_pb2.CONTAINER_EXITED,
}


class RecordError(ValueError):
    """A record that cannot be read as one: not JSON, a required field missing or of
    the wrong type."""


@dataclass(frozen=True)
class Metadata:
    """What CreateContainer decided; written once, before the reply."""

    id: str
    pod_id: str
    name: str
    attempt: int
    image_id: str
    image_ref: str
    runtime_handler: str
    bundle: str
    log_path: str
    config_b64: str  # the ContainerConfig as sent, so status can echo it
    created_at: int  # nanoseconds since the epoch
    stop_signal: int = 15
    uid: int = 0
    gid: int = 0
    groups: tuple[int, ...] = ()
    cgroup_path: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)  # unknown fields


@dataclass(frozen=True)
class Status:
    """What happened to the container since; replaced whole on every change."""

    state: str = CREATED
    pid: int = 0
    started_at: int = 0
    finished_at: int = 0
    exit_code: int = 0
    reason: str = ""
    message: str = ""
    oom_killed: bool = False
    resources: dict[str, Any] = field(default_factory=dict)  # LinuxContainerResources JSON
    removing: bool = False  # RemoveContainer began: a restart finishes it
    extra: dict[str, Any] = field(default_factory=dict, compare=False)  # unknown fields

    def but(self, **changes: Any) -> Status:
        """This status with ``changes``; unknown fields travel along."""
        return dataclasses.replace(self, **changes)


class ContainerRecord:
    """One container: its metadata and its current status, read by attribute.

    The index holds one per container; readers see the status as it was when they
    read it. Only the store assigns :attr:`status`.
    """

    __slots__ = ("_config", "meta", "spec_json", "status")

    def __init__(self, meta: Metadata, status: Status | None = None) -> None:
        self.meta = meta
        self.status = status if status is not None else Status()
        self._config: api_pb2.ContainerConfig | None = None
        # The OCI spec as the bundle's config.json holds it, as compact JSON text, for
        # verbose ContainerStatus: set by whoever writes that file (CreateContainer,
        # UpdateContainerResources before the start); None until read after a restart.
        self.spec_json: str | None = None

    def __repr__(self) -> str:
        return f"ContainerRecord({self.meta!r}, {self.status!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ContainerRecord):
            return NotImplemented
        return (self.meta, self.status) == (other.meta, other.status)

    __hash__ = None  # type: ignore[assignment]

    @property
    def config(self) -> api_pb2.ContainerConfig:
        """The config as sent, parsed once (list and status calls read it for every
        container). Shared: read it, never modify it."""
        if self._config is None:
            cfg = api_pb2.ContainerConfig()
            cfg.ParseFromString(base64.b64decode(self.meta.config_b64))
            self._config = cfg
        return self._config

    @property
    def reservation(self) -> str:
        return f"{self.meta.pod_id}/{self.meta.name}/{self.meta.attempt}"

    # Metadata and status, by attribute (read-only).
    @property
    def id(self) -> str:
        return self.meta.id

    @property
    def pod_id(self) -> str:
        return self.meta.pod_id

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def attempt(self) -> int:
        return self.meta.attempt

    @property
    def image_id(self) -> str:
        return self.meta.image_id

    @property
    def image_ref(self) -> str:
        return self.meta.image_ref

    @property
    def runtime_handler(self) -> str:
        return self.meta.runtime_handler

    @property
    def bundle(self) -> str:
        return self.meta.bundle

    @property
    def log_path(self) -> str:
        return self.meta.log_path

    @property
    def created_at(self) -> int:
        return self.meta.created_at

    @property
    def stop_signal(self) -> int:
        return self.meta.stop_signal

    @property
    def uid(self) -> int:
        return self.meta.uid

    @property
    def gid(self) -> int:
        return self.meta.gid

    @property
    def groups(self) -> tuple[int, ...]:
        return self.meta.groups

    @property
    def cgroup_path(self) -> str:
        return self.meta.cgroup_path

    @property
    def state(self) -> str:
        return self.status.state

    @property
    def pid(self) -> int:
        return self.status.pid

    @property
    def started_at(self) -> int:
        return self.status.started_at

    @property
    def finished_at(self) -> int:
        return self.status.finished_at

    @property
    def exit_code(self) -> int:
        return self.status.exit_code

    @property
    def reason(self) -> str:
        return self.status.reason

    @property
    def message(self) -> str:
        return self.status.message

    @property
    def resources(self) -> dict[str, Any]:
        return self.status.resources

    @property
    def removing(self) -> bool:
        return self.status.removing


def encode_config(cfg: api_pb2.ContainerConfig) -> str:
    return base64.b64encode(cfg.SerializeToString()).decode()


# --- the JSON codec ------------------------------------------------------------------

_INT, _STR, _BOOL = (int,), (str,), (bool,)
_META_TYPES: dict[str, tuple[type, ...]] = {
    "id": _STR,
    "pod_id": _STR,
    "name": _STR,
    "attempt": _INT,
    "image_id": _STR,
    "image_ref": _STR,
    "runtime_handler": _STR,
    "bundle": _STR,
    "log_path": _STR,
    "config_b64": _STR,
    "created_at": _INT,
    "stop_signal": _INT,
    "uid": _INT,
    "gid": _INT,
    "groups": (list,),
    "cgroup_path": _STR,
}
_META_REQUIRED = frozenset(
    f.name
    for f in dataclasses.fields(Metadata)
    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
)
_STATUS_TYPES: dict[str, tuple[type, ...]] = {
    "state": _STR,
    "pid": _INT,
    "started_at": _INT,
    "finished_at": _INT,
    "exit_code": _INT,
    "reason": _STR,
    "message": _STR,
    "oom_killed": _BOOL,
    "resources": (dict,),
    "removing": _BOOL,
}


def _typed(obj: object, types: dict[str, tuple[type, ...]], what: str) -> dict[str, Any]:
    """The known fields of ``obj`` checked against ``types``; the rest under ``extra``."""
    if not isinstance(obj, dict):
        raise RecordError(f"{what} is not a JSON object")
    known: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in obj.items():
        want = types.get(key)
        if want is None:
            extra[key] = value
            continue
        # bool is an int to Python; a record's ints are never true/false.
        if not isinstance(value, want) or (bool not in want and isinstance(value, bool)):
            raise RecordError(f"{what} field {key!r} is not a {want[0].__name__}")
        known[key] = value
    known["extra"] = extra
    return known


def metadata_from_json(obj: object) -> Metadata:
    fields = _typed(obj, _META_TYPES, "container metadata")
    missing = sorted(_META_REQUIRED - fields.keys())
    if missing:
        raise RecordError(f"container metadata lacks {', '.join(missing)}")
    groups = fields.get("groups", [])
    if not all(isinstance(g, int) and not isinstance(g, bool) for g in groups):
        raise RecordError("container metadata field 'groups' is not a list of ints")
    fields["groups"] = tuple(groups)
    return Metadata(**fields)


def status_from_json(obj: object) -> Status:
    fields = _typed(obj, _STATUS_TYPES, "container status")
    if fields.get("state", CREATED) not in STATES:
        raise RecordError(f"container status state {fields['state']!r} is unknown")
    return Status(**fields)


def _plain(value: Metadata | Status) -> dict[str, Any]:
    out = {f.name: getattr(value, f.name) for f in dataclasses.fields(value) if f.name != "extra"}
    return {**value.extra, **out}


def metadata_to_json(meta: Metadata) -> dict[str, Any]:
    out = _plain(meta)
    out["groups"] = list(meta.groups)
    return out


def status_to_json(status: Status) -> dict[str, Any]:
    return _plain(status)


def split_legacy(obj: object) -> tuple[Metadata, Status]:
    """A record of the sycri before the split: one object with every field of both.
    A field neither part knows goes with the metadata (kept, written once)."""
    if not isinstance(obj, dict):
        raise RecordError("container record is not a JSON object")
    status_part = {k: v for k, v in obj.items() if k in _STATUS_TYPES}
    meta_part = {k: v for k, v in obj.items() if k not in _STATUS_TYPES}
    # The old record had no oom flag: its reason said it.
    if status_part.get("reason") == "OOMKilled":
        status_part.setdefault("oom_killed", True)
    return metadata_from_json(meta_part), status_from_json(status_part)
