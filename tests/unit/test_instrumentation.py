"""Where the domain code feeds metrics: exits counted once across restarts, the image
store's snapshot for scrapes, CNI operations by result, conversion failures marked."""

from __future__ import annotations

import asyncio
import json

import pytest
from sycri.images.convert import converting, failed_converting
from sycri.images.store import Store
from sycri.network import cni
from sycri.observability.metrics import REGISTRY, StoreStats
from sycri.runtime.container.container_store import ContainerStore
from sycri.runtime.container.record import EXITED, RUNNING, ContainerRecord

from tests.unit.test_container_store import record


def val(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_an_exit_is_counted_once_when_first_recorded_and_never_after_a_restart(tmp_path):
    store = ContainerStore(tmp_path)
    done, oom, live = (
        record("a" * 64, name="a"),
        record("b" * 64, name="b"),
        record("c" * 64, name="c"),
    )
    for rec in (done, oom, live):
        asyncio.run(store.add(rec))  # created: nothing exited
    before = (val("sycri_container_exits_total", reason="Completed"),
              val("sycri_container_exits_total", reason="OOMKilled"),
              val("sycri_container_oom_kills_total"))  # fmt: skip

    def change(s: ContainerStore, rec: ContainerRecord, **kw: object) -> None:
        asyncio.run(s.set_status(rec, rec.status.but(**kw)))

    change(store, live, state=RUNNING)
    change(store, done, state=EXITED, reason="Completed")
    change(store, done, message="x")  # a later status change: not a second exit
    change(store, oom, state=EXITED, reason="OOMKilled")
    after = (val("sycri_container_exits_total", reason="Completed"),
             val("sycri_container_exits_total", reason="OOMKilled"),
             val("sycri_container_oom_kills_total"))  # fmt: skip
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1]

    # A restarted sycri reloads the exits already recorded and does not count them again;
    # the container that exited while it was down is counted when it is first recorded.
    again = ContainerStore(tmp_path)
    loaded = {r.id: r for r in again.load()}
    for rec in loaded.values():
        change(again, rec, message="y")
    assert val("sycri_container_exits_total", reason="Completed") == after[0]
    change(again, loaded[live.id], state=EXITED, reason="Completed")
    assert val("sycri_container_exits_total", reason="Completed") == after[0] + 1


def config(cmd: str) -> bytes:
    return json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": [cmd]}}).encode()


def test_image_store_stats_follow_adds_and_removals_without_io_at_scrape(tmp_path):
    store = Store(tmp_path)
    assert store.stats() == StoreStats(images=0, bytes=0)
    sif = tmp_path / "sif" / "1.sif"
    sif.write_bytes(b"x" * 1000)
    (store.blob_dir / ("b" * 64)).write_bytes(b"y" * 300)
    store.add("sha256:" + "1" * 64, str(sif), 1000, config("a"), layers=["sha256:" + "b" * 64])
    local = tmp_path / "mine.sif"
    local.write_bytes(b"z" * 5000)
    store.add("sha256:" + "2" * 64, str(local), 5000, config("b"), local=True)
    # a local SIF is the user's file, used in place: an image, but not the store's bytes
    assert store.stats() == StoreStats(images=2, bytes=1000 + 300)
    store.remove("sha256:" + "1" * 64)  # its SIF and its now unused blob go
    assert store.stats() == StoreStats(images=1, bytes=0)
    store.close()
    assert Store(tmp_path).stats() == StoreStats(images=1, bytes=0)  # known at start-up


def test_a_failing_cni_chain_counts_a_failed_operation(tmp_path):
    runner = cni.Runner((str(tmp_path),))  # no plugins there
    att = cni.Attachment(container_id="c" * 64, netns="/nonexistent")
    fails = val("sycri_cni_operations_total", operation="ADD", result="failure")
    timed = val("sycri_cni_operation_duration_seconds_count", operation="ADD")
    with pytest.raises(cni.CniError, match="plugin 'loopback' not found"):
        asyncio.run(runner.add(cni.LOOPBACK, att))
    assert val("sycri_cni_operations_total", operation="ADD", result="failure") == fails + 1
    assert val("sycri_cni_operation_duration_seconds_count", operation="ADD") == timed + 1


def test_conversion_failures_are_told_apart_from_pull_failures():
    with pytest.raises(OSError) as err, converting():
        raise OSError(28, "No space left on device")
    assert failed_converting(err.value)
    with pytest.raises(OSError) as err, converting(), converting():  # nested: one note
        raise OSError(28, "No space left on device")
    assert err.value.__notes__.count(err.value.__notes__[0]) == 1
    assert not failed_converting(ConnectionResetError("registry went away"))
