"""Reading SIF files: the reference files, and hostile ones."""

from __future__ import annotations

import struct
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sycri.errors import InvalidArgument
from sycri.sif import DataType, FsType, PartType, SifError, open_sif
from sycri.sif.format import DESCRIPTOR_SIZE, HEADER_SIZE

from tests.support.sif import IMAGES, PGP_FINGERPRINT, reference_images


@pytest.mark.parametrize("path", reference_images(), ids=lambda p: p.name)
def test_every_reference_file_reads(path: Path) -> None:
    with open_sif(path) as img:
        assert img.header.version == "01"
        for d in img.descriptors:
            assert len(img.read_object(d)) == d.size


def test_two_groups_objects() -> None:
    with open_sif(IMAGES / "two-groups-signed-pgp.sif") as img:
        ds = img.descriptors
        assert [d.id for d in ds] == [1, 2, 3, 4, 5]
        assert [d.group_id for d in ds] == [1, 1, 2, 0, 0]
        assert [(d.link, d.link_is_group) for d in ds[3:]] == [(1, True), (2, True)]
        assert [(d.fstype, d.parttype, d.arch) for d in ds[:3]] == [
            (FsType.RAW, PartType.SYSTEM, "386"),
            (FsType.SQUASHFS, PartType.PRIMARY_SYSTEM, "386"),
            (FsType.EXT3, PartType.SYSTEM, "amd64"),
        ]
        assert ds[3].entity.hex().upper() == PGP_FINGERPRINT
        assert img.header.arch == "386"
        prim = img.primary_partition()
        assert (prim.id, prim.offset, prim.size) == (2, 36864, 4096)


def test_extra_fields_of_other_types() -> None:
    with open_sif(IMAGES / "one-object-oci-blob.sif") as img:
        d = img.descriptors[0]
        assert d.data_type == DataType.OCI_BLOB
        import hashlib

        assert d.digest == "sha256:" + hashlib.sha256(img.read_object(d)).hexdigest()
    with open_sif(IMAGES / "one-object-sbom.sif") as img:
        assert img.descriptors[0].sbom_format == 1  # cyclonedx-json
    with open_sif(IMAGES / "one-object-generic-json.sif") as img:
        d = img.descriptors[0]
        assert (d.name, img.read_object(d)) == ("data.json", b"{}")


def test_no_primary_partition_is_an_error() -> None:
    with (
        open_sif(IMAGES / "one-object-generic-json.sif") as img,
        pytest.raises(SifError, match="no primary"),
    ):
        img.primary_partition()


def test_sif_error_is_invalid_argument() -> None:
    assert issubclass(SifError, InvalidArgument)


# --- hostile files -------------------------------------------------------------------

GOOD = IMAGES / "two-groups.sif"


def _mutated(tmp_path: Path, edit) -> Path:
    data = bytearray(GOOD.read_bytes())
    edit(data)
    out = tmp_path / "bad.sif"
    out.write_bytes(bytes(data))
    return out


def _desc_field(data: bytearray, index: int, fmt: str, at: int, value) -> None:
    struct.pack_into(fmt, data, 4096 + index * DESCRIPTOR_SIZE + at, value)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.__delitem__(slice(100, None)), "truncated"),
        (lambda d: d.__delitem__(slice(5000, None)), "truncated"),
        (lambda d: d.__setitem__(slice(32, 42), b"NOT_MAGIC\x00"), "bad magic"),
        (lambda d: d.__setitem__(slice(42, 45), b"02\x00"), "unsupported SIF version"),
        (lambda d: struct.pack_into("<q", d, 88, 1 << 40), "absurd descriptor count"),
        (lambda d: struct.pack_into("<q", d, 88, -1), "absurd descriptor count"),
        (lambda d: struct.pack_into("<q", d, 80, 49), "free descriptor count"),
        (lambda d: struct.pack_into("<q", d, 96, 0), "overlaps the header"),
        (lambda d: struct.pack_into("<q", d, 104, 10), "too small"),
        (lambda d: _desc_field(d, 2, "<q", 17, 1 << 50), "outside the file"),
        (lambda d: _desc_field(d, 2, "<q", 25, 1 << 40), "outside the file"),
        (lambda d: _desc_field(d, 2, "<q", 17, -5), "negative"),
        (lambda d: _desc_field(d, 1, "<q", 17, 32768), "overlap"),
        (lambda d: _desc_field(d, 0, "<q", 17, 4096), "overlaps the header or descriptor"),
        (lambda d: _desc_field(d, 1, "<I", 5, 1), "duplicate"),
        (lambda d: _desc_field(d, 0, "128s", 73, b"x" * 128), "not NUL-terminated"),
    ],
)
def test_hostile_file_gets_one_clear_error(tmp_path: Path, edit, message: str) -> None:
    with pytest.raises(SifError, match=message) as info:
        open_sif(_mutated(tmp_path, edit))
    assert str(tmp_path / "bad.sif") in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SifError, match="cannot open SIF"):
        open_sif(tmp_path / "nope.sif")


def test_empty_and_tiny_files(tmp_path: Path) -> None:
    for size in (0, 1, HEADER_SIZE - 1):
        p = tmp_path / f"f{size}"
        p.write_bytes(b"\x00" * size)
        with pytest.raises(SifError, match="truncated"):
            open_sif(p)


def test_object_read_limit() -> None:
    with open_sif(IMAGES / "two-groups.sif") as img:
        d = img.descriptor(3)
        with pytest.raises(SifError, match="read limit"):
            img.read_object(d, limit=10)
        assert b"".join(img.iter_object(d, chunk=1000)) == img.read_object(d)


_SEED = GOOD.read_bytes()[: 4096 + 4 * DESCRIPTOR_SIZE]


def _check(path: Path) -> None:
    try:
        with open_sif(path) as img:
            for d in img.descriptors:
                assert d.offset >= 0 and d.end <= img.file_size
                img.read_object(d)
            _ = img.header.id == uuid.UUID(int=0)
    except SifError as exc:
        assert exc.message


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    edits=st.lists(
        st.tuples(st.integers(0, len(_SEED) - 1), st.binary(min_size=1, max_size=8)), max_size=6
    ),
    cut=st.integers(0, len(_SEED) + 300000),
)
def test_fuzz_mutated_reference_file(tmp_path: Path, edits, cut: int) -> None:
    """Any mutation of a real file opens or fails with SifError: nothing else escapes."""
    data = bytearray(GOOD.read_bytes())
    # Aim mutations at the header and descriptor table, where the parser works.
    for pos, blob in edits:
        data[pos : pos + len(blob)] = blob
    path = tmp_path / "fuzz.sif"
    path.write_bytes(bytes(data[:cut]))
    _check(path)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    total=st.integers(-(2**63), 2**63 - 1),
    offset=st.integers(-(2**63), 2**63 - 1),
    size=st.integers(-(2**63), 2**63 - 1),
    body=st.binary(max_size=2048),
)
def test_fuzz_header_numbers(
    tmp_path: Path, total: int, offset: int, size: int, body: bytes
) -> None:
    """Absurd counts and offsets never allocate or read beyond the file."""
    head = bytearray(GOOD.read_bytes()[:HEADER_SIZE])
    struct.pack_into("<qqq", head, 88, total, offset, size)
    path = tmp_path / "fuzz.sif"
    path.write_bytes(bytes(head) + body)
    _check(path)
