"""The image index: tags move to the newest image, digests stay, removal and recovery."""

from __future__ import annotations

import json

from sycri.images.store import Store


def config(cmd: str) -> bytes:
    return json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": [cmd]}}).encode()


def test_a_tag_moves_to_the_image_pulled_last_and_the_old_one_stays_listed(tmp_path):
    store = Store(tmp_path)
    old = store.add("sha256:" + "1" * 64, "/x/1.sif", 10, config("old"),
                    tags=["docker.io/library/app:latest"], digests=["docker.io/library/app@sha256:" + "a" * 64])  # fmt: skip
    assert old.repo_tags == ("docker.io/library/app:latest",)
    new = store.add("sha256:" + "2" * 64, "/x/2.sif", 20, config("new"),
                    tags=["docker.io/library/app:latest"], digests=["docker.io/library/app@sha256:" + "b" * 64])  # fmt: skip
    assert new.repo_tags == ("docker.io/library/app:latest",)
    dangling = store.get(old.id)
    assert dangling.repo_tags == () and dangling.repo_digests == old.repo_digests
    assert [i.id for i in store.list()] == [old.id, new.id]
    assert store.by_tag("docker.io/library/app:latest").config.cmd == ("new",)
    assert store.by_digest(old.repo_digests[0]).id == old.id
    assert store.by_id_prefix("2222") == [new.id]
    assert store.by_id_prefix("%") == []  # LIKE wildcards are escaped


def test_remove_and_reopen(tmp_path):
    store = Store(tmp_path)
    sif = store.sif_path_for("sha256:" + "3" * 64)
    sif.write_bytes(b"sif")
    store.add(
        "sha256:" + "3" * 64,
        str(sif),
        3,
        config("x"),
        tags=["r/a:1"],
        layers=["sha256:" + "c" * 64],
    )
    (store.blob_dir / ("c" * 64)).write_bytes(b"layer")
    (store.blob_dir / ("d" * 64)).write_bytes(b"orphan")
    store.close()
    again = Store(tmp_path)
    again.recover()
    assert sorted(p.name for p in again.blob_dir.iterdir()) == ["c" * 64]
    assert again.by_tag("r/a:1") is not None
    again.remove("sha256:" + "3" * 64)
    assert not sif.exists()
    assert list(again.blob_dir.iterdir()) == []
    assert again.list() == []
