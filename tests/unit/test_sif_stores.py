"""The SIF store index: names normalized as pulls are, paths confined to the store."""

from __future__ import annotations

import pytest
from sycri.images import reference
from sycri.images.reference import tag_key
from sycri.images.sif_store_index import INDEX, read_store


def key(name: str) -> str:
    return tag_key(reference.parse(name))


def test_index_names_are_normalized_and_files_resolved(tmp_path):
    (tmp_path / "a.sif").write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub/b.sif").write_bytes(b"y")
    (tmp_path / INDEX).write_text("images:\n  hpc/app:1: a.sif\n  r.example/x/b: sub/b.sif\n")
    listing = read_store(str(tmp_path), key)
    assert listing.down == ""
    assert {e.key: e.path for e in listing.entries} == {
        "docker.io/hpc/app:1": str(tmp_path / "a.sif"),
        "r.example/x/b:latest": str(tmp_path / "sub/b.sif"),
    }


@pytest.mark.parametrize(
    "text, why",
    [
        ("images: [a.sif]\n", "expected a mapping"),
        ("images:\n  app:1: ../etc/passwd\n", "is not a path inside the store"),
        ("images:\n  app:1: /etc/passwd\n", "is not a path inside the store"),
        ("images: {a: [1]}\n", "is not 'name: file'"),
        ("images: {: \n", "is not YAML"),
    ],
)
def test_a_bad_index_makes_the_store_unavailable_saying_why(tmp_path, text, why):
    (tmp_path / INDEX).write_text(text)
    listing = read_store(str(tmp_path), key)
    assert listing.entries == ()
    assert why in listing.down


def test_a_store_without_its_index_says_it_may_not_be_mounted(tmp_path):
    assert (
        "has no sycri-index.yaml (is the file system mounted?)"
        in read_store(str(tmp_path), key).down
    )
    assert "does not exist" in read_store(str(tmp_path / "gone"), key).down


def test_a_symlink_leaving_the_store_is_ignored(tmp_path):
    (tmp_path / "out.sif").symlink_to("/etc/hostname")
    (tmp_path / INDEX).write_text("images:\n  app:1: out.sif\n")
    assert read_store(str(tmp_path), key).entries == ()


def test_a_name_that_is_no_image_reference_makes_the_store_unavailable(tmp_path):
    (tmp_path / INDEX).write_text("images:\n  'UPPER/Case::': a.sif\n")
    assert "UPPER/Case::" in read_store(str(tmp_path), key).down


def stores_for(store, tmp_path):
    from sycri.images.sif_stores import SifStores
    from sycri.sif.policy import Trust

    async def trust(_path):
        return Trust()

    return SifStores(
        [str(store)],
        tmp_path / "cache.json",
        name_key=key,
        config_of=lambda _p: b'{"architecture": "amd64", "os": "linux", "config": {}}',
        trust_of=trust,
        policy="accept",
    )


def test_a_store_that_hangs_is_unavailable_and_holds_one_thread(tmp_path, monkeypatch):
    """An NFS server that stops answering: here an index that is a FIFO nobody writes."""
    import asyncio
    import os
    import threading

    from sycri.errors import Unavailable
    from sycri.images import sif_stores

    monkeypatch.setattr(sif_stores, "TIMEOUT", 0.2)
    store = tmp_path / "store"
    store.mkdir()
    (store / "a.sif").write_bytes(b"sif bytes")
    (store / INDEX).write_text("images:\n  hpc/app:1: a.sif\n")
    stores = stores_for(store, tmp_path)

    async def scenario():
        await stores.refresh()
        image = stores.by_key("docker.io/hpc/app:1")
        assert image is not None and image.pinned and image.sif_path == str(store / "a.sif")
        (store / INDEX).unlink()
        os.mkfifo(store / INDEX)
        try:
            for _ in range(3):
                await stores.refresh()
            hung = [t for t in threading.enumerate() if t.name == "sif-store"]
            assert len(hung) == 1, "each refresh started another blocked read"
            assert stores.by_key("docker.io/hpc/app:1") is None
            for what in ("docker.io/hpc/app:1", image.id):
                err = stores.error_for(what)
                assert isinstance(err, Unavailable)
                assert f"SIF store {store}" in err.message and "no answer within" in err.message
        finally:
            fd = os.open(store / INDEX, os.O_WRONLY | os.O_NONBLOCK)  # let the read end
            os.close(fd)

    asyncio.run(scenario())
