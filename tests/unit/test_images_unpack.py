"""Layer application against diff_ids and limits, on real tar streams (no registry)."""

from __future__ import annotations

import gzip
import io
import tarfile

import pytest
from sycri.errors import InvalidArgument, ResourceExhausted
from sycri.images.unpack import Applier, DiffIdMismatch, LimitExceeded, Limits, apply_layer

from tests.support import oci


def _apply(tmp_path, raw: bytes, diff_id: str | None, limits: Limits | None = None):
    root = tmp_path / "rootfs"
    root.mkdir(exist_ok=True)
    applier = Applier(root, limits)
    applier.apply(io.BytesIO(raw), "layer 1/1 (test)", diff_id)
    return root


def test_a_layer_matching_its_diff_id_is_applied(tmp_path):
    raw = oci.tar_bytes([oci.file("etc/hello", "hi")])
    root = _apply(tmp_path, raw, oci.sha256(raw))
    assert (root / "etc/hello").read_text() == "hi"


def test_a_layer_with_another_diff_id_is_refused_naming_the_layer(tmp_path):
    raw = oci.tar_bytes([oci.file("etc/hello", "hi")])
    other = oci.sha256(b"something else")
    with pytest.raises(DiffIdMismatch) as err:
        _apply(tmp_path, raw, other)
    assert "layer 1/1 (test)" in err.value.message
    assert oci.sha256(raw) in err.value.message and other in err.value.message


def test_bytes_after_the_end_of_the_archive_count_in_the_digest(tmp_path):
    """Data hidden after the tar end blocks changes the digest, so it cannot ride along."""
    raw = oci.tar_bytes([oci.file("a", "1")])
    with pytest.raises(DiffIdMismatch):
        _apply(tmp_path, raw + b"hidden" * 1000, oci.sha256(raw))


def test_uncompressed_bytes_past_the_limit_are_refused_naming_the_key(tmp_path):
    raw = oci.tar_bytes([oci.file("big", b"\0" * (3 << 20))])
    with pytest.raises(LimitExceeded) as err:
        _apply(tmp_path, raw, None, Limits(max_image_bytes=1 << 20))
    assert isinstance(err.value, ResourceExhausted)
    assert "images.max_image_bytes" in err.value.message and "layer 1/1" in err.value.message


def test_the_byte_limit_counts_over_all_layers(tmp_path):
    root = tmp_path / "rootfs"
    root.mkdir()
    applier = Applier(root, Limits(max_image_bytes=3 << 20))
    raw = oci.tar_bytes([oci.file("f", b"x" * (2 << 20))])
    applier.apply(io.BytesIO(raw), "layer 1/2", None)
    with pytest.raises(LimitExceeded, match="layer 2/2"):
        applier.apply(io.BytesIO(raw), "layer 2/2", None)


def test_entries_past_the_limit_are_refused(tmp_path):
    raw = oci.tar_bytes([oci.file(f"f{i}", "") for i in range(50)])
    with pytest.raises(LimitExceeded, match=r"images\.max_image_entries \(20\)"):
        _apply(tmp_path, raw, None, Limits(max_image_entries=20))


def test_a_file_over_the_single_file_limit_is_refused_before_it_is_written(tmp_path):
    raw = oci.tar_bytes([oci.file("big", b"x" * 5000)])
    with pytest.raises(LimitExceeded, match=r"'big' is 5000 bytes.*images\.max_file_bytes"):
        _apply(tmp_path, raw, None, Limits(max_file_bytes=4096))
    assert not (tmp_path / "rootfs/big").exists()


def test_a_huge_pax_header_is_refused_before_it_is_read(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("f")
        info.pax_headers = {"comment": "x" * (2 << 20)}
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(InvalidArgument, match="extended header"):
        _apply(tmp_path, buf.getvalue(), None)


def test_gzip_layer_is_verified_against_the_uncompressed_digest(tmp_path):
    raw = oci.tar_bytes([oci.file("etc/x", "y")])
    path = tmp_path / "blob"
    path.write_bytes(gzip.compress(raw, mtime=0))
    root = tmp_path / "rootfs"
    root.mkdir()
    apply_layer(Applier(root), path, "gzip", "layer 1/1", oci.sha256(raw))
    assert (root / "etc/x").read_text() == "y"
    with pytest.raises(DiffIdMismatch):
        apply_layer(Applier(root), path, "gzip", "layer 1/1", oci.sha256(path.read_bytes()))


def test_a_sparse_file_is_refused(tmp_path):
    """Sparse maps are read whole into memory, one version from the entry's data."""
    header = tarfile.TarInfo("sparse")
    header.type = tarfile.GNUTYPE_SPARSE
    raw = header.tobuf(tarfile.GNU_FORMAT) + bytes(1024)
    with pytest.raises(InvalidArgument, match="'sparse' is a sparse file"):
        _apply(tmp_path, raw, None)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("pax-sparse")
        info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0"}
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(InvalidArgument, match="sparse file"):
        _apply(tmp_path, buf.getvalue(), None)
