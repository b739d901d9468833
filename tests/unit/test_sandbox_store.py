"""Sandbox ids, prefixes, name reservation and the on-disk store (no root needed)."""

from __future__ import annotations

import pytest
from sycri.api import api_pb2
from sycri.errors import AlreadyExists, InvalidArgument, NotFound
from sycri.runtime import idindex
from sycri.runtime.pod.sandbox import READY, Sandbox, SandboxStore, encode_config


def _sandbox(sid: str, name: str = "web") -> Sandbox:
    cfg = api_pb2.PodSandboxConfig(labels={"app": name})
    return Sandbox(
        id=sid,
        name=name,
        namespace="default",
        uid="u",
        attempt=0,
        created_at=1,
        state=READY,
        runtime_handler="runc",
        config_bytes=encode_config(cfg),
        run_dir="/run/x",
        hostname=name,
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
    store.save(sb)
    again = SandboxStore(tmp_path)
    (loaded,) = again.load()
    assert loaded == sb
    assert loaded.config.labels["app"] == "web"
    with pytest.raises(AlreadyExists, match="is reserved"):
        again.reserve(sb.name_key, "b" * 64)
    again.delete(loaded)
    again.reserve(sb.name_key, "b" * 64)  # free after removal
    assert SandboxStore(tmp_path).load() == []


def test_unreadable_record_is_skipped(tmp_path):
    store = SandboxStore(tmp_path)
    store.save(_sandbox("c" * 64))
    (tmp_path / ("d" * 64)).mkdir()
    (tmp_path / ("d" * 64) / "sandbox.json").write_text("{truncated")
    assert [s.id for s in SandboxStore(tmp_path).load()] == ["c" * 64]


def test_config_follows_config_bytes(tmp_path):
    """The parsed config is kept for list and status calls; a resize that writes new
    config bytes is what the next read sees, and the record on disk has no parse in it."""
    sb = _sandbox("d" * 64, "web")
    assert dict(sb.config.labels) == {"app": "web"}
    sb.config_bytes = encode_config(api_pb2.PodSandboxConfig(labels={"app": "api"}))
    assert dict(sb.config.labels) == {"app": "api"}
    assert "_parsed" not in sb.to_json()
    store = SandboxStore(tmp_path)
    store.save(sb)
    (loaded,) = SandboxStore(tmp_path).load()
    assert dict(loaded.config.labels) == {"app": "api"}
