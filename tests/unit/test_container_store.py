"""Container records: metadata written once, status rewritten apart from it, both on
disk before the reply; records of the previous sycri and of a newer one read without
losing a container; unreadable ones set aside, never dropped."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from sycri.api import api_pb2
from sycri.errors import AlreadyExists, InvalidArgument, NotFound
from sycri.observability.metrics import REGISTRY
from sycri.runtime.container.container_store import ContainerStore
from sycri.runtime.container.record import (
    EXITED,
    RUNNING,
    ContainerRecord,
    Metadata,
    Status,
    encode_config,
)


def record(cid: str, pod: str = "p" * 64, name: str = "c", attempt: int = 0) -> ContainerRecord:
    cfg = api_pb2.ContainerConfig(metadata=api_pb2.ContainerMetadata(name=name, attempt=attempt))
    meta = Metadata(
        id=cid,
        pod_id=pod,
        name=name,
        attempt=attempt,
        image_id="sha256:" + "1" * 64,
        image_ref="img@sha256:" + "1" * 64,
        runtime_handler="runc",
        bundle="/b/" + cid,
        log_path="/logs/c.log",
        config_b64=encode_config(cfg),
        created_at=1,
        groups=(5, 6),
    )
    return ContainerRecord(meta, Status(pid=42))


def saved(store: ContainerStore, rec: ContainerRecord) -> ContainerRecord:
    asyncio.run(store.add(rec))
    return rec


def legacy(rec: ContainerRecord, **more: object) -> dict[str, object]:
    """The record as the sycri before the split wrote it: one state.json with both."""
    obj: dict[str, object] = {
        **{k: getattr(rec.meta, k) for k in Metadata.__dataclass_fields__ if k != "extra"},
        **{
            k: getattr(rec.status, k)
            for k in Status.__dataclass_fields__
            if k not in ("extra", "oom_killed")
        },
    }
    obj["groups"] = list(rec.meta.groups)
    obj.update(more)
    return obj


def stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns


def test_metadata_and_status_are_two_files_and_reload(tmp_path):
    store = ContainerStore(tmp_path)
    rec = record("a" * 64)
    store.reserve(rec.pod_id, rec.name, rec.attempt, rec.id)
    saved(store, rec)
    meta = json.loads((tmp_path / rec.id / "meta.json").read_text())
    status = json.loads((tmp_path / rec.id / "status.json").read_text())
    assert meta["id"] == rec.id and "state" not in meta
    assert status["state"] == "created" and status["pid"] == 42 and "name" not in status
    again = ContainerStore(tmp_path)
    (loaded,) = again.load()
    assert loaded == rec and loaded.config.metadata.name == "c"
    # The name stays reserved after a restart.
    with pytest.raises(AlreadyExists):
        again.reserve(rec.pod_id, "c", 0, "b" * 64)


def test_a_status_change_rewrites_the_status_only(tmp_path):
    store = ContainerStore(tmp_path)
    rec = saved(store, record("a" * 64))
    before = stamp(tmp_path / rec.id / "meta.json")
    asyncio.run(store.set_status(rec, rec.status.but(state=RUNNING, started_at=5)))
    assert rec.state == RUNNING
    assert stamp(tmp_path / rec.id / "meta.json") == before
    (loaded,) = ContainerStore(tmp_path).load()
    assert (loaded.state, loaded.started_at) == (RUNNING, 5)


def test_a_record_of_the_previous_sycri_is_split_and_nothing_is_lost(tmp_path):
    """The DaemonSet upgrade path: one state.json per container, status inside."""
    rec = record("a" * 64)
    rec.status = Status(state=EXITED, pid=42, exit_code=137, reason="OOMKilled", finished_at=9)
    (tmp_path / rec.id).mkdir()
    (tmp_path / rec.id / "state.json").write_text(json.dumps(legacy(rec)))
    store = ContainerStore(tmp_path)
    (loaded,) = store.load()
    assert loaded.meta == rec.meta
    assert (loaded.state, loaded.exit_code, loaded.reason) == (EXITED, 137, "OOMKilled")
    assert loaded.status.oom_killed
    assert sorted(os.listdir(tmp_path / rec.id)) == ["meta.json", "status.json"]
    assert store.quarantined == set()
    (again,) = ContainerStore(tmp_path).load()
    assert again == loaded


def test_fields_of_a_newer_sycri_are_kept(tmp_path):
    """A rollback: the newer sycri wrote fields this one does not know. The container
    is loaded, and the fields survive this sycri's status writes."""
    rec = record("a" * 64)
    (tmp_path / rec.id).mkdir()
    meta = legacy(rec)
    meta = {k: v for k, v in meta.items() if k in Metadata.__dataclass_fields__}
    meta["sandbox_checkpoint"] = {"v": 2}
    (tmp_path / rec.id / "meta.json").write_text(json.dumps(meta))
    (tmp_path / rec.id / "status.json").write_text(
        json.dumps({"state": "running", "pid": 42, "restarts_seen": 3})
    )
    store = ContainerStore(tmp_path)
    (loaded,) = store.load()
    assert loaded.state == RUNNING and loaded.meta == rec.meta
    asyncio.run(store.set_status(loaded, loaded.status.but(state=EXITED, exit_code=1)))
    status = json.loads((tmp_path / rec.id / "status.json").read_text())
    assert status["restarts_seen"] == 3 and status["exit_code"] == 1
    on_disk = json.loads((tmp_path / rec.id / "meta.json").read_text())
    assert on_disk["sandbox_checkpoint"] == {"v": 2}


@pytest.mark.parametrize(
    "name, text",
    [
        ("meta.json", "{half"),
        ("meta.json", json.dumps({"id": "a" * 64, "attempt": "zero"})),
        ("meta.json", "[]"),
        ("state.json", json.dumps({"id": "a" * 64, "state": "running"})),
        ("state.json", b"\xff\xfe".decode("latin-1")),
    ],
)
def test_an_unreadable_record_is_quarantined_not_dropped(tmp_path, name, text):
    cid = "a" * 64
    (tmp_path / cid).mkdir()
    (tmp_path / cid / name).write_text(text, encoding="latin-1")
    store = ContainerStore(tmp_path)
    assert store.load() == []
    assert store.quarantined == {cid}
    assert REGISTRY.get_sample_value("sycri_containers_quarantined") == 1
    # Moved aside, byte for byte, and still known as quarantined at the next start.
    assert (tmp_path / cid / (name + ".unreadable")).read_text(encoding="latin-1") == text
    assert not (tmp_path / cid / name).exists()
    again = ContainerStore(tmp_path)
    assert again.load() == [] and again.quarantined == {cid}


def test_an_unreadable_status_is_set_aside_and_rebuilt(tmp_path):
    store = ContainerStore(tmp_path)
    rec = saved(store, record("a" * 64))
    (tmp_path / rec.id / "status.json").write_text('{"state": "dancing"}')
    before = REGISTRY.get_sample_value("sycri_container_status_unreadable_total") or 0
    (loaded,) = ContainerStore(tmp_path).load()
    assert loaded.meta == rec.meta and loaded.state == "created"
    assert "could not read" in loaded.message
    assert (tmp_path / rec.id / "status.json.unreadable").exists()
    assert REGISTRY.get_sample_value("sycri_container_status_unreadable_total") == before + 1


def test_unique_prefix_lookup(tmp_path):
    store = ContainerStore(tmp_path)
    saved(store, record("abc" + "0" * 61, name="x"))
    saved(store, record("abd" + "0" * 61, name="y"))
    assert store.get("abc").name == "x"
    assert store.get("abd0").name == "y"
    with pytest.raises(InvalidArgument, match="ambiguous"):
        store.get("ab")
    with pytest.raises(NotFound):
        store.get("fff")
    with pytest.raises(NotFound):
        store.get("../../etc")
    with pytest.raises(InvalidArgument):
        store.get("")


def test_names_reserved_per_pod_and_attempt(tmp_path):
    store = ContainerStore(tmp_path)
    store.reserve("pod1", "web", 0, "1" * 64)
    with pytest.raises(AlreadyExists, match="web"):
        store.reserve("pod1", "web", 0, "2" * 64)
    store.reserve("pod1", "web", 1, "2" * 64)  # the next attempt
    store.reserve("pod2", "web", 0, "3" * 64)  # another pod
    store.unreserve("pod1", "web", 0, "1" * 64)
    store.reserve("pod1", "web", 0, "4" * 64)


def test_a_removal_drops_the_metadata_first_then_the_name(tmp_path):
    store = ContainerStore(tmp_path)
    rec = record("e" * 64)
    store.reserve(rec.pod_id, rec.name, 0, rec.id)
    saved(store, rec)
    asyncio.run(store.drop_metadata(rec))
    # On disk it is no record any more: a restart would remove its bundle...
    assert not ContainerStore(tmp_path).load()
    assert store.get(rec.id) is rec  # ...while the removal runs, it is still listed
    store.forget(rec)
    with pytest.raises(NotFound):
        store.get(rec.id)
    store.reserve(rec.pod_id, rec.name, 0, "f" * 64)
