"""Layer application against diff_ids and limits, and the merged tar stream it gives,
on real tar streams (no registry)."""

from __future__ import annotations

import gzip
import io
import tarfile

import pytest
from sycri.errors import InvalidArgument, ResourceExhausted
from sycri.images import tarstream
from sycri.images.unpack import Applier, DiffIdMismatch, LimitExceeded, Limits, apply_layer

from tests.support import oci


def _apply(tmp_path, raw: bytes, diff_id: str | None, limits: Limits | None = None):
    applier = Applier(limits)
    applier.apply(io.BytesIO(raw), "layer 1/1 (test)", diff_id)
    return applier


def stream(tmp_path, *layers: bytes) -> bytes:
    """Apply uncompressed layers in order; the merged tar stream."""
    applier = Applier()
    blobs = []
    for i, raw in enumerate(layers):
        blob = tmp_path / f"blob-{i}"
        blob.write_bytes(raw)
        apply_layer(applier, blob, "none", f"layer {i + 1}/{len(layers)}", oci.sha256(raw))
        blobs.append((blob, "none"))
    out = io.BytesIO()
    tarstream.write(out, applier.root, blobs)
    return out.getvalue()


def merged(tmp_path, *layers: bytes) -> dict[str, tuple[tarfile.TarInfo, bytes]]:
    """name -> (entry, data) of the merged stream of ``layers``."""
    got = {}
    with tarfile.open(fileobj=io.BytesIO(stream(tmp_path, *layers)), mode="r:") as tar:
        for m in tar:
            assert m.name not in got, f"{m.name} twice in the stream"
            f = tar.extractfile(m) if m.isreg() else None
            got[m.name] = (m, f.read() if f else b"")
    return got


def test_a_layer_matching_its_diff_id_is_applied(tmp_path):
    raw = oci.tar_bytes([oci.file("etc/hello", "hi")])
    assert merged(tmp_path, raw)["etc/hello"][1] == b"hi"


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
    applier = Applier(Limits(max_image_bytes=3 << 20))
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
    applier = Applier()
    apply_layer(applier, path, "gzip", "layer 1/1", oci.sha256(raw))
    out = io.BytesIO()
    tarstream.write(out, applier.root, [(path, "gzip")])
    out.seek(0)
    with tarfile.open(fileobj=out) as tar:
        assert tar.extractfile("etc/x").read() == b"y"
    with pytest.raises(DiffIdMismatch):
        apply_layer(Applier(), path, "gzip", "layer 1/1", oci.sha256(path.read_bytes()))


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


# -- the merged stream ------------------------------------------------------------------------


def test_upper_layers_win_whiteouts_and_opaque_dirs_hide_what_is_below(tmp_path):
    lower = oci.tar_bytes(
        [
            oci.directory("data", mode=0o700, uid=7),
            oci.file("data/keep", "keep"),
            oci.file("data/gone", "gone"),
            oci.directory("data/sub"),
            oci.file("data/sub/deep", "deep"),
            oci.directory("opq"),
            oci.file("opq/old", "old"),
            oci.file("changed", "old"),
            oci.file("becomes-dir", "a file"),
            oci.symlink("link", "data/keep"),
        ]
    )
    upper = oci.tar_bytes(
        [
            oci.whiteout("data/gone"),
            oci.whiteout("data/sub"),
            oci.opaque("opq"),
            oci.file("opq/new", "new"),
            oci.file("changed", "new", mode=0o600, uid=5, gid=6),
            oci.directory("becomes-dir"),
            oci.file("becomes-dir/inside", "inside"),
        ]
    )
    got = merged(tmp_path, lower, upper)
    names = sorted(n for n in got if n != ".")
    assert names == [
        "becomes-dir", "becomes-dir/inside", "changed", "data", "data/keep", "link",
        "opq", "opq/new",
    ]  # fmt: skip
    m, data = got["changed"]
    assert (data, m.mode, m.uid, m.gid) == (b"new", 0o600, 5, 6)
    assert (got["data"][0].mode, got["data"][0].uid) == (0o700, 7)
    assert got["link"][0].issym() and got["link"][0].linkname == "data/keep"
    assert got["opq/new"][1] == b"new" and got["becomes-dir/inside"][1] == b"inside"


def test_a_hardlink_keeps_the_bytes_its_target_had_when_it_was_made(tmp_path):
    """An upper layer replacing one name of a hardlinked file leaves the other name the
    old bytes, as on disk; the stream carries them under the name that survives."""
    lower = oci.tar_bytes(
        [oci.file("bin/tool", "v1", mode=0o755), oci.hardlink("bin/alias", "bin/tool")]
    )
    upper = oci.tar_bytes([oci.file("bin/tool", "v2")])
    got = merged(tmp_path, lower, upper)
    assert got["bin/tool"][1] == b"v2"
    alias, data = got["bin/alias"]
    assert alias.isreg() and data == b"v1" and alias.mode == 0o755
    both = merged(tmp_path, oci.tar_bytes([oci.file("a", "x"), oci.hardlink("b", "a")]))
    assert both["a"][1] == b"x" and both["b"][0].islnk() and both["b"][0].linkname == "a"


def test_device_nodes_are_left_out_and_xattrs_squashfs_cannot_store_dropped(tmp_path):
    raw = oci.tar_bytes(
        [
            oci.Entry("dev-null", "chr"),
            oci.Entry("pipe", "fifo"),
            oci.file("f", "x", xattrs={"user.kept": "v", "system.posix_acl_access": "acl"}),
        ]
    )
    got = merged(tmp_path, raw)
    assert "dev-null" not in got and got["pipe"][0].isfifo()
    assert got["f"][0].pax_headers == {"SCHILY.xattr.user.kept": "v"}


def test_long_names_and_links_survive_the_stream(tmp_path):
    deep = "/".join(["d" * 60] * 4) + "/file"
    raw = oci.tar_bytes([oci.file(deep, "deep"), oci.symlink("s", "/" + deep)])
    got = merged(tmp_path, raw)
    assert got[deep][1] == b"deep" and got["s"][0].linkname == "/" + deep


def test_the_same_layers_give_the_same_stream(tmp_path):
    raw = oci.tar_bytes([oci.file(f"d{i % 7}/f{i}", str(i)) for i in range(200)])
    upper = oci.tar_bytes([oci.whiteout("d3"), oci.file("d1/f1", "new")])
    first = stream(tmp_path, raw, upper)
    assert stream(tmp_path, raw, upper) == first
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        names = tar.getnames()
    dirs = [n for n in names if n.count("/") == 0 and n.startswith("d")]
    assert dirs == sorted(dirs) and "d3" not in dirs


def test_header_checksums_signed_or_unsigned_are_accepted_a_wrong_one_refused(tmp_path):
    """Old tars summed header bytes as signed chars; a name with bytes >= 0x80 tells."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo("caf\xe9-\u00fc")  # UTF-8 bytes in the name field
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    raw = bytearray(buf.getvalue())
    head = bytes(raw[:148]) + b" " * 8 + bytes(raw[156:512])
    signed = sum(b - 256 if b > 127 else b for b in head)
    assert signed != sum(head)  # the name has high bytes, so the two differ
    raw[148:156] = b"%06o\0 " % signed
    assert merged(tmp_path, bytes(raw))["caf\xe9-\u00fc"][1] == b"x"
    raw[148:156] = b"%06o\0 " % (signed + 1)
    with pytest.raises(InvalidArgument, match="not a valid tar stream"):
        _apply(tmp_path, bytes(raw), None)


def test_gzip_layers_of_several_members_or_zero_padded_are_read_as_gzip_reads_them(tmp_path):
    raw = oci.tar_bytes([oci.file("a", "1" * 5000), oci.file("b", "2")])
    half = len(raw) // 2
    padded = gzip.compress(raw[:half]) + gzip.compress(raw[half:]) + bytes(4096)
    assert gzip.decompress(padded) == raw
    path = tmp_path / "blob"
    path.write_bytes(padded)
    applier = Applier()
    apply_layer(applier, path, "gzip", "layer 1/1", oci.sha256(raw))
    out = io.BytesIO()
    tarstream.write(out, applier.root, [(path, "gzip")])
    out.seek(0)
    with tarfile.open(fileobj=out) as tar:
        assert tar.extractfile("a").read() == b"1" * 5000
    path.write_bytes(gzip.compress(raw) + b"\0\0not gzip")
    with pytest.raises(InvalidArgument, match="not a valid tar stream"):
        apply_layer(Applier(), path, "gzip", "layer 1/1", oci.sha256(raw))
