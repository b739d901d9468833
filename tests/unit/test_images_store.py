"""The image index: tags move to the newest image, digests stay, removal and recovery."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from sycri.errors import InvalidArgument
from sycri.images.store import Store

from tests.support.images import make_images


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


def test_rows_from_before_origins_are_migrated_and_foreign_sifs_rekeyed(tmp_path):
    """An index written before images carried their origin: a SIF sycri built keeps its
    id; a foreign SIF indexed under the digest of oras' ``{}`` config gets its own digest."""
    import hashlib
    import shutil
    import sqlite3

    from sycri import sif
    from sycri.images.store import SCHEMA

    from tests.support.sif import IMAGES

    root = tmp_path / "images"
    (root / "sif").mkdir(parents=True)
    db = sqlite3.connect(root / "index.db")
    db.executescript(SCHEMA)  # the first release's tables, without the new columns
    cfg = config("own")
    own_id = "sha256:" + hashlib.sha256(cfg).hexdigest()
    own_path = root / "sif" / (own_id[7:] + ".sif")
    sif.write_sif(own_path, [sif.JsonObject("oci-config.json", cfg)])
    empty_id = "sha256:" + hashlib.sha256(b"{}").hexdigest()
    foreign_path = root / "sif" / (empty_id[7:] + ".sif")
    shutil.copyfile(IMAGES / "one-group.sif", foreign_path)
    foreign_id = "sha256:" + hashlib.sha256(foreign_path.read_bytes()).hexdigest()
    for image_id, path, tag in (
        (own_id, own_path, "r/own:1"),
        (empty_id, foreign_path, "oras://r/f:1"),
    ):
        db.execute(
            "INSERT INTO images (id, sif_path, size, config, user_ref) VALUES (?,?,?,?,?)",
            (image_id, str(path), path.stat().st_size, cfg, tag),
        )
        db.execute("INSERT INTO tags (tag, image_id) VALUES (?,?)", (tag, image_id))
    db.commit()
    db.close()

    store = Store(root)
    store.recover()
    assert store.get(own_id).origin == "own"
    assert store.get(empty_id) is None
    moved = store.by_tag("oras://r/f:1")
    assert moved.id == foreign_id and moved.origin == "foreign"
    assert hashlib.sha256(Path(moved.sif_path).read_bytes()).hexdigest() == foreign_id[7:]
    assert sorted(p.name for p in (root / "sif").iterdir()) == sorted(
        [own_id[7:] + ".sif", foreign_id[7:] + ".sif"]
    )


def test_lookups_answer_while_a_commit_waits_for_the_disk(tmp_path):
    """A pull committing its image (here: held up by another writer of the database) does
    not hold up ImageStatus: lookups answer from the index as of the last commit."""
    import sqlite3
    import threading

    store = Store(tmp_path)
    old = store.add("sha256:" + "4" * 64, "/x/4.sif", 4, config("old"), tags=["r/a:1"])
    blocker = sqlite3.connect(tmp_path / "index.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # the database's write lock, as a slow commit holds it
    new_id = "sha256:" + "5" * 64
    adding = threading.Thread(
        target=store.add, args=(new_id, "/x/5.sif", 5, config("new")), kwargs={"tags": ["r/a:1"]}
    )
    adding.start()
    try:
        while not store._lock.locked():  # the writer is inside its transaction
            adding.join(0.01)
        assert store.by_tag("r/a:1") == old
        assert store.get(new_id) is None and [i.id for i in store.list()] == [old.id]
        assert adding.is_alive() and store._lock.locked()  # answered while the commit waits
    finally:
        blocker.execute("ROLLBACK")
        adding.join()
    assert store.by_tag("r/a:1").id == new_id
    assert store.get(old.id).repo_tags == ()


def test_every_form_kubelet_and_critest_send_finds_the_image_and_changes_show_at_once(tmp_path):
    """ImageStatus's lookup: by id (with and without ``sha256:``, a unique prefix), repo
    tag, short name (docker.io/library/...:latest), repo digest, whatever the spaces
    around it; a name is parsed once, so these repeat the same lookup, which must still
    follow every change to the index."""
    images = make_images(tmp_path)
    try:
        store = images.store
        digest = "docker.io/library/busybox@sha256:" + "b" * 64
        one = store.add("sha256:" + "1" * 64, "/x/1.sif", 10, config("one"),
                        tags=["docker.io/library/busybox:latest", "127.0.0.1:5000/c/bb:v1"],
                        digests=[digest])  # fmt: skip
        forms = [one.id, one.id[7:], one.id[:19], one.id[7:19], "busybox", "busybox:latest",
                 "docker.io/library/busybox", "docker://busybox", " busybox\n",
                 "127.0.0.1:5000/c/bb:v1", "busybox@" + digest.split("@")[1], digest]  # fmt: skip
        for _ in range(2):
            assert [images.find(f) for f in forms] == [one] * len(forms)
        assert images.find("busybox:1") is None and images.find("c/bb:v1") is None
        # The tag moves to a newer image; a second image makes the short prefix ambiguous.
        two = store.add("sha256:" + "1" * 12 + "2" * 52, "/x/2.sif", 20, config("two"),
                        tags=["docker.io/library/busybox:latest"])  # fmt: skip
        assert images.find("busybox") == two and images.find(" busybox\n") == two
        assert images.find(digest) == store.get(one.id)  # the digest stays
        with pytest.raises(InvalidArgument, match="ambiguous"):
            images.find(one.id[:19])
        assert images.find(one.id[:20]) == store.get(one.id)
        asyncio.run(images.remove(two.id))
        assert images.find("busybox") is None and images.find(two.id) is None
        for bad in ("", "  ", "Busybox", "a" * 5000):
            for _ in range(2):  # refused every time, not only the first
                with pytest.raises(InvalidArgument):
                    images.find(bad)
    finally:
        images.close()
