"""Container records on disk and the in-memory index that answers every read.

Each container has a directory ``base/<id>/`` with ``meta.json`` (written once, at
create) and ``status.json`` (rewritten atomically, off the event loop, on each status
change; only the lifecycle calls and the exit monitor make one). Reads (List, Status,
stats, a pod's container statuses) come from the index and never touch the disk.

Start-up reads the directory back. A record of the sycri before the split
(``state.json``) is split in two; fields a newer sycri wrote are kept. A metadata
record that cannot be read is *quarantined*: renamed ``*.unreadable`` in place, logged,
counted, and its container left alone (recovery neither kills its conmon nor removes
its overlay). An unreadable status is moved aside the same way and rebuilt from runc
and conmon by recovery. Ids are 64 hex digits; any unique prefix finds a container.
Names are reserved per pod (name + attempt), so two creates cannot both win.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
from pathlib import Path

from sycri.errors import AlreadyExists, InvalidArgument, NotFound, excerpt
from sycri.fsutil import atomic_write_json
from sycri.observability import metrics
from sycri.runtime.container.record import (
    CREATED,
    EXITED,
    RUNNING,
    STATE_PROTO,
    ContainerRecord,
    RecordError,
    Status,
    metadata_from_json,
    metadata_to_json,
    split_legacy,
    status_from_json,
    status_to_json,
)

__all__ = [
    "CREATED",
    "EXITED",
    "RUNNING",
    "STATE_PROTO",
    "ContainerRecord",
    "ContainerStore",
    "new_id",
]

log = logging.getLogger("sycri.containers")

_HEX = re.compile(r"^[0-9a-f]{1,64}$")
META, STATUS, LEGACY = "meta.json", "status.json", "state.json"
UNREADABLE = ".unreadable"  # suffix of a record moved aside
STATUS_LOST = "sycri could not read this container's status record; rebuilt from runc"


def new_id() -> str:
    return secrets.token_hex(32)


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RecordError(f"not JSON: {exc}") from None


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _set_aside(path: Path) -> Path:
    aside = path.with_name(path.name + UNREADABLE)
    os.replace(path, aside)
    return aside


class ContainerStore:
    """The index of every container and its records under ``base/<id>/``."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self._records: dict[str, ContainerRecord] = {}
        self._names: dict[str, str] = {}
        self._exited: set[str] = set()  # exits already on disk: counted once, ever
        self._writing: dict[str, asyncio.Lock] = {}
        # Containers whose metadata cannot be read: never touched, only reported.
        self.quarantined: set[str] = set()

    def meta_path(self, container_id: str) -> Path:
        return self.base / container_id / META

    def status_path(self, container_id: str) -> Path:
        return self.base / container_id / STATUS

    # --- start-up ----------------------------------------------------------------------

    def load(self) -> list[ContainerRecord]:
        """Read every record (start-up; blocking: run it in a thread)."""
        self.base.mkdir(parents=True, exist_ok=True)
        for entry in sorted(self.base.iterdir()):
            if not entry.is_dir():
                continue
            try:
                rec = self._load_one(entry)
            except OSError as exc:
                log.error("cannot read the records of container %s: %s", entry.name, exc)
                self.quarantined.add(entry.name)
                continue
            if rec is None:
                continue
            self._records[rec.id] = rec
            self._names[rec.reservation] = rec.id
            if rec.state == EXITED:
                self._exited.add(rec.id)  # counted by the sycri that recorded it
        metrics.containers_quarantined(len(self.quarantined))
        return list(self._records.values())

    def _load_one(self, entry: Path) -> ContainerRecord | None:
        meta_file, status_file, legacy = entry / META, entry / STATUS, entry / LEGACY
        if meta_file.is_file():
            try:
                meta = metadata_from_json(_read_json(meta_file))
                if meta.id != entry.name:
                    raise RecordError(f"it names container {excerpt(meta.id)}")
            except RecordError as exc:
                self._quarantine(meta_file, exc)
                return None
            return ContainerRecord(meta, self._load_status(status_file))
        if legacy.is_file():
            try:
                meta, status = split_legacy(_read_json(legacy))
                if meta.id != entry.name:
                    raise RecordError(f"it names container {excerpt(meta.id)}")
            except RecordError as exc:
                self._quarantine(legacy, exc)
                return None
            # Status first: a crash before meta.json leaves the old record to split again.
            atomic_write_json(status_file, status_to_json(status), mode=0o600)
            atomic_write_json(meta_file, metadata_to_json(meta), mode=0o600)
            legacy.unlink()
            log.info("container %s: record of an earlier sycri split in two", meta.id)
            return ContainerRecord(meta, status)
        if any(p.name.endswith(UNREADABLE) for p in entry.iterdir()):
            log.error("container %s: its record is quarantined (%s); left alone", entry.name, entry)
            self.quarantined.add(entry.name)
        return None  # no record: a create or remove cut short (recovery decides)

    def _quarantine(self, path: Path, exc: Exception) -> None:
        aside = _set_aside(path)
        self.quarantined.add(path.parent.name)
        log.error(
            "container %s: record %s cannot be read (%s); moved to %s. The container, its "
            "conmon and its overlay are left alone; repair the record and restart sycri, "
            "or remove them by hand",
            path.parent.name,
            path,
            exc,
            aside,
        )

    def _load_status(self, path: Path) -> Status:
        """The status on disk; rebuilt (as created, for recovery to reconcile with runc)
        when missing (a crash between the two writes of a create) or unreadable."""
        try:
            return status_from_json(_read_json(path))
        except FileNotFoundError:
            log.warning("container %s has no status record; recovery rebuilds it", path.parent.name)
        except RecordError as exc:
            aside = _set_aside(path)
            metrics.container_status_unreadable()
            log.error(
                "container %s: status %s cannot be read (%s); moved to %s and rebuilt",
                path.parent.name,
                path,
                exc,
                aside,
            )
        return Status(message=STATUS_LOST)

    # --- names -------------------------------------------------------------------------

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

    # --- writes (lifecycle calls and the exit monitor only) ---------------------------

    def _write_lock(self, container_id: str) -> asyncio.Lock:
        return self._writing.setdefault(container_id, asyncio.Lock())

    def _write_new(self, rec: ContainerRecord) -> None:
        # Status first: metadata on disk is what makes a record exist at start-up.
        atomic_write_json(self.status_path(rec.id), status_to_json(rec.status), mode=0o600)
        atomic_write_json(self.meta_path(rec.id), metadata_to_json(rec.meta), mode=0o600)

    async def add(self, rec: ContainerRecord) -> None:
        """Write a new container's records (off the event loop), then index it."""
        async with self._write_lock(rec.id):
            await asyncio.to_thread(self._write_new, rec)
        self._records[rec.id] = rec
        self._count_exit(rec)

    async def set_status(self, rec: ContainerRecord, status: Status) -> None:
        """Persist ``status`` (atomically, off the event loop), then show it to readers.
        Writes of one container go in call order."""
        async with self._write_lock(rec.id):
            await asyncio.to_thread(
                atomic_write_json, self.status_path(rec.id), status_to_json(status), 0o600
            )
            rec.status = status
        if rec.id in self._records:
            self._count_exit(rec)

    def _count_exit(self, rec: ContainerRecord) -> None:
        if rec.state == EXITED and rec.id not in self._exited:
            self._exited.add(rec.id)
            metrics.container_exited(rec.reason)

    async def drop_metadata(self, rec: ContainerRecord) -> None:
        """RemoveContainer's first step: delete ``meta.json`` (no fsync: an unlink a
        power loss undoes leaves an exited container kubelet removes again). A bundle
        without metadata is what a start-up removes (recovery), so from here on a crash
        still ends with the container gone. The index keeps it until :meth:`forget`."""
        async with self._write_lock(rec.id):
            await asyncio.to_thread(self.unlink_metadata, rec)

    def unlink_metadata(self, rec: ContainerRecord) -> None:
        """:meth:`drop_metadata`'s unlink (blocking), for a caller that holds the
        container's lock, so no status write of it can run meanwhile."""
        _unlink(self.meta_path(rec.id))

    def forget(self, rec: ContainerRecord) -> None:
        """Drop a removed container from the index (its files are gone with its bundle)."""
        self._writing.pop(rec.id, None)
        self._records.pop(rec.id, None)
        self._exited.discard(rec.id)
        self.unreserve(rec.pod_id, rec.name, rec.attempt, rec.id)

    # --- reads (memory only) -------------------------------------------------------------

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
