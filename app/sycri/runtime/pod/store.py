"""The sandbox store: records on disk, the id and name indexes in memory.

Each pod has a directory ``<root>/<id>/`` with two records: ``metadata.json``, written
when the pod is planned (and replaced by a resize), and ``status.json``, written on
every status change. Both are written atomically in a worker thread, in the order
the changes were made, before the lifecycle call that made them replies; queries read
the in-memory index only. Start-up reads both, and also the single ``sandbox.json`` of
sycri before the split, which it rewrites as the two records.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from sycri.errors import AlreadyExists
from sycri.fsutil import atomic_write_json
from sycri.runtime import idindex
from sycri.runtime.pod.sandbox import Sandbox

log = logging.getLogger("sycri.sandbox")

METADATA = "metadata.json"
STATUS = "status.json"
LEGACY = "sandbox.json"  # one record with both halves, before the split


def _write(path: Path, doc: dict[str, Any]) -> None:
    atomic_write_json(path, doc, mode=0o600)


class SandboxStore:
    """Records under ``<root>/<id>/`` plus the id and name indexes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._by_id: dict[str, Sandbox] = {}
        self._names: dict[str, str] = {}
        self._writes: dict[str, asyncio.Lock] = {}

    # ----- start-up -------------------------------------------------------------

    def load(self) -> list[Sandbox]:
        """Rebuild the index from disk (start-up, before serving); unreadable records are
        logged and skipped. A pod whose creation failed holds no name: kubelet may run
        the same pod again while its teardown is still owed."""
        self._by_id.clear()
        self._names.clear()
        for entry in sorted(os.listdir(self.root)):
            try:
                sb = self._read(self.root / entry)
            except (OSError, ValueError, TypeError) as exc:
                log.error("skipping unreadable sandbox record %s: %s", self.root / entry, exc)
                continue
            if sb is None:
                continue
            self._by_id[sb.id] = sb
            if not sb.status.failed:
                self._names[sb.name_key] = sb.id
        return list(self._by_id.values())

    def _read(self, d: Path) -> Sandbox | None:
        meta_path, legacy = d / METADATA, d / LEGACY
        if meta_path.exists():
            meta = json.loads(meta_path.read_text())
            try:
                status = json.loads((d / STATUS).read_text())
            except FileNotFoundError:
                status = {}  # killed between the two first writes: still "creating"
            return Sandbox.from_records(meta, status)
        if legacy.exists():
            sb = Sandbox.from_legacy(json.loads(legacy.read_text()))
            _write(d / METADATA, sb.metadata_json())
            _write(d / STATUS, sb.status.to_json())
            legacy.unlink()
            log.info("pod sandbox record %s converted to metadata and status", sb.id[:12])
            return sb
        shutil.rmtree(d, ignore_errors=True)  # a half-made dir
        return None

    # ----- names ----------------------------------------------------------------

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

    # ----- writes (lifecycle calls only) ----------------------------------------

    def _lock(self, sandbox_id: str) -> asyncio.Lock:
        return self._writes.setdefault(sandbox_id, asyncio.Lock())

    async def create(self, sb: Sandbox) -> None:
        """Index a new pod and write both of its records."""
        self._by_id[sb.id] = sb
        async with self._lock(sb.id):
            await asyncio.to_thread(_write, self.root / sb.id / METADATA, sb.metadata_json())
            await asyncio.to_thread(_write, self.root / sb.id / STATUS, sb.status.to_json())

    async def save_status(self, sb: Sandbox) -> None:
        """Write the pod's status as it is now. Writes of one pod run one at a time, each
        taking the status when its turn comes, so the last on disk is the newest."""
        async with self._lock(sb.id):
            if self._by_id.get(sb.id) is None:
                return  # deleted while this write waited: nothing to bring back
            doc = sb.status.to_json()
            await asyncio.to_thread(_write, self.root / sb.id / STATUS, doc)

    async def replace_metadata(self, sb: Sandbox) -> None:
        """A resize: the pod's new metadata (same id, same status object)."""
        async with self._lock(sb.id):
            await asyncio.to_thread(_write, self.root / sb.id / METADATA, sb.metadata_json())
            self._by_id[sb.id] = sb

    async def delete(self, sb: Sandbox) -> None:
        self._by_id.pop(sb.id, None)
        self.release(sb.name_key, sb.id)
        async with self._lock(sb.id):
            await asyncio.to_thread(shutil.rmtree, self.root / sb.id, True)
        self._writes.pop(sb.id, None)

    # ----- reads (memory only) --------------------------------------------------

    def resolve(self, prefix: str) -> Sandbox:
        return self._by_id[idindex.resolve(prefix, self._by_id, "pod sandbox")]

    def find(self, sandbox_id: str) -> Sandbox | None:
        return self._by_id.get(sandbox_id)

    def all(self) -> list[Sandbox]:
        return list(self._by_id.values())
