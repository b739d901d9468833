"""DSSE signature verification (pure: cryptography only) and unsigned files."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from sycri.sif import SifError, open_sif, verify

from tests.support.sif import IMAGES, KEYS

DSSE_KEYS = [KEYS / "ed25519-public.pem", KEYS / "rsa-public.pem"]


def _verify(path: Path, keys) -> list:
    return asyncio.run(verify(path, keys))


@pytest.mark.parametrize("name", ["one-group-signed-dsse.sif", "two-groups-signed-dsse.sif"])
def test_dsse_signatures_verify(name: str) -> None:
    results = _verify(IMAGES / name, DSSE_KEYS)
    assert results and all(r.ok and r.kind == "dsse" for r in results), results
    assert results[0].signed_ids == (1, 2)


@pytest.mark.parametrize("key", DSSE_KEYS, ids=lambda p: p.name)
def test_each_dsse_key_alone_verifies(key: Path) -> None:
    (r,) = _verify(IMAGES / "one-group-signed-dsse.sif", [key])
    assert r.ok and r.signer == str(key)


def test_dsse_wrong_key_fails() -> None:
    (r,) = _verify(IMAGES / "one-group-signed-dsse.sif", [KEYS / "ecdsa-public.pem"])
    assert not r.ok and "not signed by any given key" in r.message
    (r,) = _verify(IMAGES / "one-group-signed-dsse.sif", [])
    assert not r.ok and "no PEM public key" in r.message


def _flip(src: Path, dst: Path, object_id: int, at: int = 0) -> Path:
    shutil.copy(src, dst)
    with open_sif(dst) as img:
        offset = img.descriptor(object_id).offset + at
    with dst.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x01]))
    return dst


def test_dsse_changed_byte_names_the_object(tmp_path: Path) -> None:
    bad = _flip(IMAGES / "two-groups-signed-dsse.sif", tmp_path / "bad.sif", 3, at=100)
    results = _verify(bad, DSSE_KEYS)
    by_id = {r.signature_id: r for r in results}
    assert by_id[4].ok  # group 1 untouched
    assert not by_id[5].ok and "object 3: data integrity compromised" in by_id[5].message


def test_dsse_changed_header_id_fails(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sif"
    data = bytearray((IMAGES / "one-group-signed-dsse.sif").read_bytes())
    data[50] ^= 0xFF  # inside the header's ID
    bad.write_bytes(bytes(data))
    (r,) = _verify(bad, DSSE_KEYS)
    assert not r.ok and "header integrity" in r.message


def test_dsse_changed_envelope_fails(tmp_path: Path) -> None:
    bad = _flip(IMAGES / "one-group-signed-dsse.sif", tmp_path / "bad.sif", 3, at=40)
    (r,) = _verify(bad, DSSE_KEYS)
    assert not r.ok


@pytest.mark.parametrize("name", ["one-group.sif", "empty.sif", "one-object-sbom.sif"])
def test_unsigned_file_has_no_signatures(name: str) -> None:
    assert _verify(IMAGES / name, DSSE_KEYS) == []


def test_private_key_block_is_refused() -> None:
    with pytest.raises(SifError, match="private key"):
        _verify(IMAGES / "one-group-signed-pgp.sif", [KEYS / "private.asc"])


def test_garbage_key_is_refused(tmp_path: Path) -> None:
    (tmp_path / "k").write_text("hello")
    with pytest.raises(SifError, match="not a PGP or PEM"):
        _verify(IMAGES / "one-group.sif", [tmp_path / "k"])
