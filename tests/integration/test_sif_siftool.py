"""SIF files round-trip with Debian's siftool both ways, and PGP signatures verify with gpgv."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sycri.sif import (
    DataType,
    DefinitionObject,
    GenericObject,
    JsonObject,
    LabelsObject,
    PartitionObject,
    add_object,
    delete_object,
    open_sif,
    verify,
    write_sif,
)

from tests.support.sif import IMAGES, PGP_FINGERPRINT, pgp_public_key, reference_images

pytestmark = pytest.mark.root


def siftool(*args: str | Path) -> str:
    return subprocess.run(
        ["siftool", *map(str, args)], check=True, capture_output=True, text=True
    ).stdout


def sycri_sif(*args: str | Path) -> str:
    return subprocess.run(
        [sys.executable, "-m", "sycri", "sif", *map(str, args)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


# Debian's siftool (2.8.3) predates these data types and prints them as "Unknown".
_NEWER_TYPES = {"OCI.Blob", "OCI.RootIndex"}


def _same_listing(ours: str, theirs: str) -> None:
    a, b = ours.splitlines(), theirs.splitlines()
    assert len(a) == len(b), (ours, theirs)
    for mine, ref in zip(a, b, strict=True):
        if ref.endswith("|Unknown") and mine.rsplit("|", 1)[1] in _NEWER_TYPES:
            assert mine.rsplit("|", 1)[0] == ref.rsplit("|", 1)[0]
        else:
            assert mine == ref


@pytest.mark.parametrize("path", reference_images(), ids=lambda p: p.name)
def test_list_header_info_match_siftool(path: Path) -> None:
    _same_listing(sycri_sif("list", path), siftool("list", path))
    assert sycri_sif("header", path) == siftool("header", path)
    with open_sif(path) as img:
        for d in img.descriptors:
            if d.data_type in (DataType.OCI_BLOB, DataType.OCI_ROOT_INDEX):
                continue
            assert sycri_sif("info", d.id, path) == siftool("info", d.id, path)


@pytest.fixture
def squashfs(tmp_path: Path) -> Path:
    from tests.support.sif import make_squashfs, tree

    src = tree(tmp_path / "rootfs", {"etc/os-release": b"NAME=test\n", "bin/hello": b"#!/bin/sh\n"})
    return make_squashfs(src, tmp_path / "rootfs.sqfs")


def test_siftool_reads_what_sycri_writes(tmp_path: Path, squashfs: Path) -> None:
    out = tmp_path / "image.sif"
    config = b'{"config":{"Entrypoint":["/bin/hello"]}}'
    write_sif(
        out,
        [
            DefinitionObject(b"Bootstrap: docker\nFrom: busybox\n"),
            JsonObject("oci-config.json", config),
            LabelsObject(b'{"maintainer":"x"}'),
            PartitionObject(str(squashfs)),
        ],
        created=1700000000,
    )
    listing = siftool("list", out)
    assert "|FS (Squashfs/*System/amd64)" in listing
    assert "|JSON.Generic" in listing and "|Def.FILE" in listing and "|JSON.Labels" in listing
    _same_listing(sycri_sif("list", out), listing)
    header = siftool("header", out)
    assert "Primary Architecture: amd64" in header
    assert "Created At:           2023-11-14 22:13:20 +0000 UTC" in header
    assert header == sycri_sif("header", out)
    for i in (1, 2, 3, 4):
        assert siftool("info", i, out) == sycri_sif("info", i, out)
    assert "  Name:         oci-config.json\n" in siftool("info", 2, out)
    dumped = subprocess.run(["siftool", "dump", "2", str(out)], capture_output=True, check=True)
    assert dumped.stdout == config
    part = subprocess.run(["siftool", "dump", "4", str(out)], capture_output=True, check=True)
    assert part.stdout == squashfs.read_bytes()


def test_sycri_reads_what_siftool_writes(tmp_path: Path, squashfs: Path) -> None:
    out = tmp_path / "tool.sif"
    siftool("new", out)
    (tmp_path / "def").write_bytes(b"Bootstrap: library\n")
    siftool("add", "--datatype", "1", out, tmp_path / "def")
    siftool(
        "add",
        "--datatype",
        "4",
        "--parttype",
        "2",
        "--partfs",
        "1",
        "--partarch",
        "2",
        out,
        squashfs,
    )
    siftool("add", "--datatype", "6", "--filename", "oci-config.json", out, tmp_path / "def")
    with open_sif(out) as img:
        ds = img.descriptors
        assert [d.data_type for d in ds] == [
            DataType.DEFFILE,
            DataType.PARTITION,
            DataType.GENERIC_JSON,
        ]
        assert img.read_object(ds[0]) == b"Bootstrap: library\n"
        assert ds[2].name == "oci-config.json"
        part = img.primary_partition()
        assert part.arch == "amd64" and part.offset % 4096 == 0
        assert img.read_object(part) == squashfs.read_bytes()
    _same_listing(sycri_sif("list", out), siftool("list", out))
    # and we can change their file, and they read the change
    delete_object(out, 1)
    add_object(out, GenericObject("notes", b"hello"))
    listing = siftool("list", out)
    assert "|Def.FILE" not in listing and "|Generic/Raw" in listing
    assert (
        subprocess.run(["siftool", "dump", "1", str(out)], capture_output=True).stdout == b"hello"
    )  # the freed slot 1 took the new object, as siftool does


def test_siftool_changes_what_sycri_wrote(tmp_path: Path) -> None:
    out = tmp_path / "image.sif"
    write_sif(out, [JsonObject("oci-config.json", b"{}")])
    (tmp_path / "extra").write_bytes(b"more data")
    siftool("add", "--datatype", "7", "--filename", "extra", out, tmp_path / "extra")
    siftool("del", "1", out)
    with open_sif(out) as img:
        (d,) = img.descriptors
        assert (d.id, d.name, img.read_object(d)) == (2, "extra", b"more data")


@pytest.fixture(scope="module")
def pgp_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pgp_public_key(tmp_path_factory.mktemp("keys") / "public.asc")


PGP_FILES = [p for p in reference_images() if "signed-legacy" in p.name or "signed-pgp" in p.name]


@pytest.mark.parametrize("path", PGP_FILES, ids=lambda p: p.name)
def test_pgp_signatures_verify_with_gpgv(path: Path, pgp_key: Path) -> None:
    results = asyncio.run(verify(path, [pgp_key]))
    assert results and all(r.ok for r in results), results
    assert {r.signer for r in results} == {PGP_FINGERPRINT}
    assert {r.kind for r in results} == {"legacy-pgp" if "legacy" in path.name else "pgp"}


@pytest.mark.parametrize("path", PGP_FILES, ids=lambda p: p.name)
def test_pgp_changed_byte_names_the_object(tmp_path: Path, path: Path, pgp_key: Path) -> None:
    bad = tmp_path / "bad.sif"
    shutil.copy(path, bad)
    with open_sif(bad) as img:
        target = img.descriptor(2)  # signed by every one of these files
    with bad.open("r+b") as f:
        f.seek(target.offset)
        b = f.read(1)
        f.seek(target.offset)
        f.write(bytes([b[0] ^ 0x80]))
    results = asyncio.run(verify(bad, [pgp_key]))
    failed = [r for r in results if not r.ok]
    assert failed and all(2 in r.signed_ids for r in failed)
    assert all("object 2" in r.message and "integrity compromised" in r.message for r in failed)


def test_pgp_tampered_signature_is_rejected_by_gpgv(tmp_path: Path, pgp_key: Path) -> None:
    bad = tmp_path / "bad.sif"
    shutil.copy(IMAGES / "one-group-signed-pgp.sif", bad)
    with open_sif(bad) as img:
        sig = img.descriptor(3)
        text = img.read_object(sig)
    pos = sig.offset + text.index(b'"objectDigest":"sha256:') + 30
    with bad.open("r+b") as f:
        f.seek(pos)
        f.write(b"0" if text[pos - sig.offset : pos - sig.offset + 1] != b"0" else b"1")
    (r,) = asyncio.run(verify(bad, [pgp_key]))
    assert not r.ok and "PGP signature not valid" in r.message


def test_pgp_without_key(pgp_key: Path) -> None:
    (r,) = asyncio.run(verify(IMAGES / "one-group-signed-pgp.sif", []))
    assert not r.ok and "no PGP public key" in r.message


def test_cli_verify(pgp_key: Path) -> None:
    out = sycri_sif("verify", "--key", pgp_key, IMAGES / "two-groups-signed-pgp.sif")
    assert out.count(": OK signer " + PGP_FINGERPRINT) == 2
    failed = subprocess.run(
        [sys.executable, "-m", "sycri", "sif", "verify", str(IMAGES / "one-group.sif")],
        capture_output=True,
        text=True,
    )
    assert failed.returncode == 1 and "no signatures" in failed.stdout
