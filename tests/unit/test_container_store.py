"""Container records: on disk before the reply, found by unique id prefix, names reserved."""

from __future__ import annotations

import json

import pytest
from sycri.api import api_pb2
from sycri.errors import AlreadyExists, InvalidArgument, NotFound
from sycri.runtime.container.container_store import ContainerRecord, ContainerStore


def record(cid: str, pod: str = "p" * 64, name: str = "c", attempt: int = 0) -> ContainerRecord:
    cfg = api_pb2.ContainerConfig(metadata=api_pb2.ContainerMetadata(name=name, attempt=attempt))
    return ContainerRecord(
        id=cid,
        pod_id=pod,
        name=name,
        attempt=attempt,
        image_id="sha256:" + "1" * 64,
        image_ref="img@sha256:" + "1" * 64,
        runtime_handler="runc",
        bundle="/b/" + cid,
        log_path="/logs/c.log",
        config_b64=ContainerRecord.encode_config(cfg),
        created_at=1,
    )


def test_saved_record_is_on_disk_and_reloads(tmp_path):
    store = ContainerStore(tmp_path)
    rec = record("a" * 64)
    store.reserve(rec.pod_id, rec.name, rec.attempt, rec.id)
    store.save(rec)
    on_disk = json.loads((tmp_path / rec.id / "state.json").read_text())
    assert on_disk["id"] == rec.id
    again = ContainerStore(tmp_path)
    (loaded,) = again.load()
    assert loaded == rec and loaded.config.metadata.name == "c"
    # The name stays reserved after a restart.
    with pytest.raises(AlreadyExists):
        again.reserve(rec.pod_id, "c", 0, "b" * 64)


def test_unreadable_record_is_skipped(tmp_path):
    (tmp_path / ("d" * 64)).mkdir()
    (tmp_path / ("d" * 64) / "state.json").write_text("{half")
    assert ContainerStore(tmp_path).load() == []


def test_unique_prefix_lookup(tmp_path):
    store = ContainerStore(tmp_path)
    store.save(record("abc" + "0" * 61, name="x"))
    store.save(record("abd" + "0" * 61, name="y"))
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


def test_delete_frees_name_and_file(tmp_path):
    store = ContainerStore(tmp_path)
    rec = record("e" * 64)
    store.reserve(rec.pod_id, rec.name, 0, rec.id)
    store.save(rec)
    store.delete(rec)
    assert not (tmp_path / rec.id / "state.json").exists()
    with pytest.raises(NotFound):
        store.get(rec.id)
    store.reserve(rec.pod_id, rec.name, 0, "f" * 64)


def test_config_follows_the_record_and_is_saved_without_its_parse(tmp_path):
    """The parsed config is kept for list calls, but a new config_b64 is what is read,
    and the record on disk holds only the fields."""
    rec = record("c" * 64, name="first")
    assert rec.config.metadata.name == "first"
    changed = api_pb2.ContainerConfig(metadata=api_pb2.ContainerMetadata(name="second"))
    rec.config_b64 = ContainerRecord.encode_config(changed)
    assert rec.config.metadata.name == "second"
    store = ContainerStore(tmp_path)
    store.save(rec)
    on_disk = json.loads((tmp_path / rec.id / "state.json").read_text())
    assert "_parsed" not in on_disk
    (loaded,) = ContainerStore(tmp_path).load()
    assert loaded == rec and loaded.config.metadata.name == "second"
