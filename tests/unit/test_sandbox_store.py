"""Sandbox ids, prefixes, name reservation and the on-disk store (no root needed)."""

from __future__ import annotations

import asyncio
import json

import pytest
from sycri.api import api_pb2
from sycri.errors import AlreadyExists, InvalidArgument, NotFound
from sycri.runtime import idindex
from sycri.runtime.pod.sandbox import NOTREADY, READY, Sandbox, SandboxStatus, encode_config
from sycri.runtime.pod.store import METADATA, STATUS, SandboxStore


def _sandbox(sid: str, name: str = "web") -> Sandbox:
    cfg = api_pb2.PodSandboxConfig(labels={"app": name})
    return Sandbox(
        id=sid,
        name=name,
        namespace="default",
        uid="u",
        attempt=0,
        created_at=1,
        runtime_handler="runc",
        config_bytes=encode_config(cfg),
        run_dir="/run/x",
        hostname=name,
        status=SandboxStatus(state=READY),
    )


def test_ids_are_64_hex():
    i = idindex.new_id()
    assert len(i) == 64 and int(i, 16) >= 0


def test_prefix_resolution():
    ids = ["abc1" + "0" * 60, "abc2" + "0" * 60]
    assert idindex.resolve("abc1", ids, "pod") == ids[0]
    with pytest.raises(InvalidArgument, match="ambiguous"):
        idindex.resolve("abc", ids, "pod")
    with pytest.raises(NotFound):
        idindex.resolve("ff", ids, "pod")
    with pytest.raises(NotFound):
        idindex.resolve("../etc", ids, "pod")
    with pytest.raises(InvalidArgument, match="empty"):
        idindex.resolve("", ids, "pod")


def test_store_survives_a_restart_with_reservations(tmp_path):
    store = SandboxStore(tmp_path)
    sb = _sandbox("a" * 64)
    store.reserve(sb.name_key, sb.id)
    asyncio.run(store.create(sb))
    again = SandboxStore(tmp_path)
    (loaded,) = again.load()
    assert loaded == sb
    assert loaded.config.labels["app"] == "web"
    with pytest.raises(AlreadyExists, match="is reserved"):
        again.reserve(sb.name_key, "b" * 64)
    asyncio.run(again.delete(loaded))
    again.reserve(sb.name_key, "b" * 64)  # free after removal
    assert SandboxStore(tmp_path).load() == []


def test_metadata_and_status_are_apart(tmp_path):
    """A status change rewrites the status record only; the metadata cannot change."""
    store = SandboxStore(tmp_path)
    sb = _sandbox("e" * 64)
    asyncio.run(store.create(sb))
    meta_before = (tmp_path / sb.id / METADATA).read_bytes()
    sb.status.state = NOTREADY
    sb.status.reason = "stopped"
    asyncio.run(store.save_status(sb))
    assert (tmp_path / sb.id / METADATA).read_bytes() == meta_before
    assert json.loads((tmp_path / sb.id / STATUS).read_text())["state"] == NOTREADY
    with pytest.raises(AttributeError):
        sb.hostname = "other"  # type: ignore[misc]
    (loaded,) = SandboxStore(tmp_path).load()
    assert (loaded.state, loaded.status.reason) == (NOTREADY, "stopped")


def test_failed_pod_holds_no_name_after_a_restart(tmp_path):
    """kubelet may run the same pod again while a failed one's teardown is still owed."""
    store = SandboxStore(tmp_path)
    sb = _sandbox("f" * 64)
    sb.status.state, sb.status.failed, sb.status.left = NOTREADY, True, ["cgroup /x"]
    asyncio.run(store.create(sb))
    again = SandboxStore(tmp_path)
    (loaded,) = again.load()
    assert loaded.status.left == ["cgroup /x"]
    again.reserve(sb.name_key, "b" * 64)


def test_record_of_the_previous_version_loads(tmp_path):
    """A DaemonSet upgrade: the single sandbox.json of sycri before the split loads as
    metadata and status, and is rewritten as the two records."""
    sid = "1" * 64
    cfg = api_pb2.PodSandboxConfig(labels={"app": "old"})
    legacy = {
        "id": sid,
        "name": "old",
        "namespace": "default",
        "uid": "u1",
        "attempt": 3,
        "created_at": 7,
        "state": "ready",
        "runtime_handler": "runc",
        "config_bytes": encode_config(cfg),
        "run_dir": "/run/sycri/pods/" + sid,
        "hostname": "old",
        "net_mode": "POD",
        "ipc_mode": "POD",
        "pid_mode": "POD",
        "netns_path": f"/run/sycri/pods/{sid}/ns/net",
        "ipc_ns_path": f"/run/sycri/pods/{sid}/ns/ipc",
        "uts_ns_path": f"/run/sycri/pods/{sid}/ns/uts",
        "pid_ns_path": f"/run/sycri/pods/{sid}/ns/pid",
        "userns_path": None,
        "userns_maps": None,
        "init_pid": 4242,
        "init_start": 99,
        "holder_pid": 4241,
        "holder_start": 98,
        "cgroup_parent": "/kubepods/pod-u1",
        "cgroup_path": "/kubepods/pod-u1",
        "cgroup_version": 1,
        "cgroup_created": ["/sys/fs/cgroup/pids/kubepods/pod-u1"],
        "hosts_path": f"/run/sycri/pods/{sid}/hosts",
        "resolv_path": f"/run/sycri/pods/{sid}/resolv.conf",
        "hostname_path": f"/run/sycri/pods/{sid}/hostname",
        "shm_path": f"/run/sycri/pods/{sid}/shm",
        "shm_mounted": True,
        "log_directory": "/var/log/pods/x",
        "ips": ["10.88.0.5"],
        "network": {"name": "sycri", "cniVersion": "1.0.0", "plugins": []},
        "cni_result": {"ips": [{"address": "10.88.0.5/16"}]},
        "network_up": True,
        "removing": False,
    }
    (tmp_path / sid).mkdir()
    (tmp_path / sid / "sandbox.json").write_text(json.dumps(legacy))
    store = SandboxStore(tmp_path)
    (sb,) = store.load()
    assert (sb.id, sb.name, sb.attempt, sb.state, sb.ready) == (sid, "old", 3, READY, True)
    assert sb.ips == ["10.88.0.5"] and sb.network_up and sb.init_pid == 4242
    assert sb.status.cgroup_created == ["/sys/fs/cgroup/pids/kubepods/pod-u1"]
    assert sb.status.shm_mounted and sb.status.holder_start == 98
    assert sb.pid_ns_path == legacy["pid_ns_path"] and sb.config.labels["app"] == "old"
    assert sb.network == legacy["network"] and sb.cni_result == legacy["cni_result"]
    assert not (tmp_path / sid / "sandbox.json").exists()
    with pytest.raises(AlreadyExists):
        store.reserve(sb.name_key, "2" * 64)
    (again,) = SandboxStore(tmp_path).load()
    assert again == sb


def test_unreadable_record_is_skipped(tmp_path):
    store = SandboxStore(tmp_path)
    asyncio.run(store.create(_sandbox("c" * 64)))
    (tmp_path / ("d" * 64)).mkdir()
    (tmp_path / ("d" * 64) / METADATA).write_text("{truncated")
    assert [s.id for s in SandboxStore(tmp_path).load()] == ["c" * 64]


def test_metadata_without_status_is_a_pod_being_created(tmp_path):
    """Killed between the two first writes: the pod is still "creating" (undone at start)."""
    store = SandboxStore(tmp_path)
    sb = _sandbox("9" * 64)
    asyncio.run(store.create(sb))
    (tmp_path / sb.id / STATUS).unlink()
    (loaded,) = SandboxStore(tmp_path).load()
    assert loaded.state == "creating"


def test_config_is_parsed_once_and_never_saved(tmp_path):
    """The parsed config is kept for list and status calls; the record has no parse in it."""
    sb = _sandbox("d" * 64, "web")
    assert dict(sb.config.labels) == {"app": "web"}
    assert sb.config is sb.config
    assert "_parsed" not in sb.metadata_json()
    store = SandboxStore(tmp_path)
    asyncio.run(store.create(sb))
    (loaded,) = SandboxStore(tmp_path).load()
    assert dict(loaded.config.labels) == {"app": "web"}
