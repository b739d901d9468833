"""Container records: one JSON file per container, written atomically before any reply,
and an in-memory index that answers List/Status without touching the disk.

Ids are 64 hex digits; any unique prefix finds a container. Names are reserved per pod
(name + attempt), so two CreateContainer calls for the same container cannot both win.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import re
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sycri.api import api_pb2
from sycri.errors import AlreadyExists, InvalidArgument, NotFound, excerpt
from sycri.fsutil import atomic_write_json
from sycri.observability import metrics

log = logging.getLogger("sycri.containers")

_HEX = re.compile(r"^[0-9a-f]{1,64}$")

CREATED, RUNNING, EXITED = "created", "running", "exited"
STATE_PROTO = {
    CREATED: api_pb2.CONTAINER_CREATED,
    RUNNING: api_pb2.CONTAINER_RUNNING,
    EXITED: api_pb2.CONTAINER_EXITED,
}


def new_id() -> str:
    return secrets.token_hex(32)


@dataclass
class ContainerRecord:
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
    state: str = CREATED
    started_at: int = 0
    finished_at: int = 0
    exit_code: int = 0
    reason: str = ""
    message: str = ""
    pid: int = 0
    stop_signal: int = 15
    uid: int = 0
    gid: int = 0
    groups: list[int] = field(default_factory=list)
    resources: dict[str, Any] = field(default_factory=dict)  # LinuxContainerResources JSON
    cgroup_path: str = ""
    removing: bool = False  # RemoveContainer began: a restart finishes it

    @property
    def config(self) -> api_pb2.ContainerConfig:
        """The config as sent, parsed once per value of ``config_b64`` (list and status
        calls read it for every container). Shared: read it, never modify it."""
        cached = self.__dict__.get("_parsed")
        if cached is None or cached[0] is not self.config_b64:
            cfg = api_pb2.ContainerConfig()
            cfg.ParseFromString(base64.b64decode(self.config_b64))
            cached = self.__dict__["_parsed"] = (self.config_b64, cfg)
        return cached[1]

    @staticmethod
    def encode_config(cfg: api_pb2.ContainerConfig) -> str:
        return base64.b64encode(cfg.SerializeToString()).decode()

    @property
    def reservation(self) -> str:
        return f"{self.pod_id}/{self.name}/{self.attempt}"


class ContainerStore:
    """The index of every container and its on-disk state under ``base/<id>/state.json``."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self._records: dict[str, ContainerRecord] = {}
        self._names: dict[str, str] = {}
        self._exited: set[str] = set()  # exits already on disk: counted once, ever

    def state_path(self, container_id: str) -> Path:
        return self.base / container_id / "state.json"

    def load(self) -> list[ContainerRecord]:
        """Read every record from disk (start-up); unreadable ones are logged and skipped."""
        self.base.mkdir(parents=True, exist_ok=True)
        for entry in sorted(self.base.iterdir()):
            path = entry / "state.json"
            if not path.is_file():
                continue
            try:
                rec = ContainerRecord(**json.loads(path.read_text()))
            except (OSError, ValueError, TypeError) as exc:
                log.error("skipping unreadable container state %s: %s", path, exc)
                continue
            self._records[rec.id] = rec
            self._names[rec.reservation] = rec.id
            if rec.state == EXITED:
                self._exited.add(rec.id)  # counted by the sycri that recorded it
        return list(self._records.values())

    def reserve(self, pod_id: str, name: str, attempt: int, container_id: str) -> None:
        key = f"{pod_id}/{name}/{attempt}"
        holder = self._names.get(key)
        if holder is not None and holder != container_id:
            raise AlreadyExists(
                f"container name {excerpt(name)} (attempt {attempt}) is already used in pod "
                f"{pod_id[:12]} by container {holder}"
            )
        self._names[key] = container_id

    def unreserve(self, pod_id: str, name: str, attempt: int, container_id: str) -> None:
        key = f"{pod_id}/{name}/{attempt}"
        if self._names.get(key) == container_id:
            del self._names[key]

    def save(self, rec: ContainerRecord) -> None:
        """Write the record to disk (atomically), then make it visible in the index."""
        atomic_write_json(self.state_path(rec.id), asdict(rec), mode=0o600)
        self._records[rec.id] = rec
        if rec.state == EXITED and rec.id not in self._exited:
            self._exited.add(rec.id)
            metrics.container_exited(rec.reason)

    def delete(self, rec: ContainerRecord) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.state_path(rec.id))
        self._records.pop(rec.id, None)
        self._exited.discard(rec.id)
        self.unreserve(rec.pod_id, rec.name, rec.attempt, rec.id)

    def all(self) -> list[ContainerRecord]:
        return list(self._records.values())

    def get(self, ref: str) -> ContainerRecord:
        """By full id or unique prefix; NotFound or InvalidArgument (ambiguous) otherwise."""
        if not ref:
            raise InvalidArgument("container_id is empty")
        rec = self._records.get(ref)
        if rec is not None:
            return rec
        if not _HEX.match(ref):
            raise NotFound(f"container {excerpt(ref)} not found")
        matches = [r for i, r in self._records.items() if i.startswith(ref)]
        if not matches:
            raise NotFound(f"container {excerpt(ref)} not found")
        if len(matches) > 1:
            raise InvalidArgument(f"container id prefix {excerpt(ref)} is ambiguous")
        return matches[0]

    def find(self, ref: str) -> ContainerRecord | None:
        try:
            return self.get(ref)
        except (NotFound, InvalidArgument):
            return None
