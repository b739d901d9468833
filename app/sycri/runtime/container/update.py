"""Changes to a live container that are not its lifecycle: UpdateContainerResources
(runc update, then the status's resources) and ReopenContainerLog (conmon reopens)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from google.protobuf import json_format

from sycri.api import api_pb2
from sycri.errors import FailedPrecondition, Internal
from sycri.fsutil import atomic_write
from sycri.runtime.container import conmon, launch
from sycri.runtime.container.record import CREATED, RUNNING
from sycri.runtime.oci import hostfacts, ocispec

if TYPE_CHECKING:
    from sycri.runtime.container.containers import Containers


async def update_resources(
    c: Containers, ref: str, resources: api_pb2.LinuxContainerResources
) -> None:
    rec = c.store.get(ref)
    async with c.lock(rec.id):
        await c.exits.collect(rec)
        if rec.state not in (CREATED, RUNNING):
            raise FailedPrecondition(f"container {rec.id} is {rec.state}")
        oci = ocispec.cgroup_resources(
            resources,
            hostfacts.cgroup_v2(),
            hostfacts.hugetlb_sizes() if resources.hugepage_limits else frozenset(),
            hostfacts.cgroup_facts(),
        )
        if launch.launched(rec):
            await c.runtime(rec.runtime_handler).update(rec.id, oci)
        else:  # no cgroup yet: the spec StartContainer's runc create reads
            spec = await asyncio.to_thread(spec_resources, Path(rec.bundle) / "config.json", oci)
            rec.spec_json = spec
        merged = api_pb2.LinuxContainerResources()
        json_format.ParseDict(rec.resources, merged)
        merged.MergeFrom(resources)
        await c.store.set_status(rec, rec.status.but(resources=json_format.MessageToDict(merged)))


def spec_resources(config: Path, oci: dict[str, Any]) -> str:
    """Merge ``oci`` into the spec's ``linux.resources`` as ``runc update`` merges it
    into a cgroup: what it names replaces, what it leaves out stays (blocking). Returns
    the new spec as written (compact JSON)."""
    spec = json.loads(config.read_bytes())
    current = spec.setdefault("linux", {}).setdefault("resources", {})
    for key, value in oci.items():
        if key == "hugepageLimits":
            sizes = {p["pageSize"]: p for p in current.get(key, [])}
            sizes.update({p["pageSize"]: p for p in value})
            current[key] = list(sizes.values())
        elif isinstance(value, dict) and isinstance(current.get(key), dict):
            current[key] = {**current[key], **value}
        else:
            current[key] = value
    text = json.dumps(spec)
    atomic_write(config, text.encode(), 0o600)
    return text


async def reopen_log(c: Containers, ref: str) -> None:
    rec = c.store.get(ref)
    if rec.state != RUNNING:
        raise FailedPrecondition(f"container {rec.id} is not running")
    await asyncio.to_thread(conmon.reopen_log, Path(rec.bundle))
    # conmon reopens asynchronously; wait (briefly) for the file to exist again.
    for _ in range(100):
        if os.path.exists(rec.log_path):
            return
        await asyncio.sleep(0.02)
    raise Internal(f"conmon did not reopen {rec.log_path}")
