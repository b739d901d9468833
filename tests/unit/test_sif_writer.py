"""Writing SIF files: layout, determinism, add/delete, atomicity."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import pytest
from sycri.sif import (
    DataType,
    DefinitionObject,
    GenericObject,
    JsonObject,
    LabelsObject,
    PartitionObject,
    PartType,
    SifError,
    add_object,
    delete_object,
    open_sif,
    sif_id_for,
    write_sif,
)


@pytest.fixture
def partition(tmp_path: Path) -> Path:
    p = tmp_path / "part.img"
    p.write_bytes(os.urandom(3 * 4096 + 123))
    return p


def _objects(partition: Path) -> list:
    return [
        DefinitionObject(b"Bootstrap: docker\nFrom: busybox\n"),
        JsonObject("oci-config.json", b'{"config":{"Cmd":["sh"]}}'),
        LabelsObject(b'{"org.label":"x"}'),
        PartitionObject(str(partition), arch="arm64"),
    ]


def test_written_file_reads_back(tmp_path: Path, partition: Path) -> None:
    out = tmp_path / "img.sif"
    header = write_sif(out, _objects(partition), created=1700000000)
    assert header.arch == "arm64" and header.created_at == 1700000000
    with open_sif(out) as img:
        ds = img.descriptors
        assert [d.data_type for d in ds] == [
            DataType.DEFFILE,
            DataType.GENERIC_JSON,
            DataType.LABELS,
            DataType.PARTITION,
        ]
        assert [d.id for d in ds] == [1, 2, 3, 4]
        assert all(d.group_id == 1 for d in ds)
        assert ds[1].name == "oci-config.json"
        assert img.read_object(ds[1]) == b'{"config":{"Cmd":["sh"]}}'
        part = img.primary_partition()
        assert part.offset % 4096 == 0
        assert (part.parttype, part.arch) == (PartType.PRIMARY_SYSTEM, "arm64")
        assert img.read_object(part) == partition.read_bytes()
        assert img.header.descriptors_free == 44
        assert img.header.data_offset + img.header.data_size == part.end == out.stat().st_size


def test_same_inputs_give_identical_bytes(tmp_path: Path, partition: Path) -> None:
    a, b, c = tmp_path / "a.sif", tmp_path / "b.sif", tmp_path / "c.sif"
    write_sif(a, _objects(partition), created=42)
    write_sif(b, _objects(partition), created=42)
    assert a.read_bytes() == b.read_bytes()
    write_sif(c, _objects(partition), created=43)
    assert a.read_bytes() != c.read_bytes()


def test_id_follows_content(tmp_path: Path, partition: Path) -> None:
    write_sif(tmp_path / "a.sif", _objects(partition))
    ida = open_sif(tmp_path / "a.sif").header.id
    with partition.open("r+b") as f:
        f.write(b"changed")
    write_sif(tmp_path / "b.sif", _objects(partition))
    idb = open_sif(tmp_path / "b.sif").header.id
    assert ida != idb and ida.version == 5
    write_sif(tmp_path / "c.sif", [], sif_id=sif_id_for("sha256:abc"))
    assert open_sif(tmp_path / "c.sif").header.id == uuid.uuid5(
        uuid.UUID("5f0d8c1e-3a41-5b7e-9c2d-7e1b0f6a4c39"), "sha256:abc"
    )


def test_source_date_epoch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_sif(tmp_path / "a.sif", [GenericObject("x", b"1")])
    assert open_sif(tmp_path / "a.sif").header.created_at == 0
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1234567")
    write_sif(tmp_path / "b.sif", [GenericObject("x", b"1")])
    with open_sif(tmp_path / "b.sif") as img:
        assert img.header.created_at == img.descriptors[0].created_at == 1234567
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "soon")
    with pytest.raises(SifError, match="SOURCE_DATE_EPOCH"):
        write_sif(tmp_path / "c.sif", [])


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "img.sif"
    with pytest.raises(SifError, match="cannot read"):
        write_sif(out, [JsonObject("a", b"{}"), PartitionObject(str(tmp_path / "missing"))])
    assert list(tmp_path.iterdir()) == []
    out.write_bytes(b"old")
    with pytest.raises(SifError):
        write_sif(out, [GenericObject("n" * 200, b"")])
    assert out.read_bytes() == b"old" and len(list(tmp_path.iterdir())) == 1


def test_bad_inputs_are_refused(tmp_path: Path, partition: Path) -> None:
    with pytest.raises(SifError, match="more than one primary"):
        write_sif(tmp_path / "a.sif", [PartitionObject(str(partition))] * 2)
    with pytest.raises(SifError, match="unknown architecture"):
        write_sif(tmp_path / "a.sif", [PartitionObject(str(partition), arch="vax")])
    with pytest.raises(SifError, match="launch script"):
        write_sif(tmp_path / "a.sif", [], launch_script="#" * 40)


def test_add_and_delete(tmp_path: Path, partition: Path) -> None:
    out = tmp_path / "img.sif"
    write_sif(out, [JsonObject("oci-config.json", b"{}")], created=7)
    d = add_object(out, PartitionObject(str(partition)))
    assert (d.id, d.offset % 4096) == (2, 0)
    with open_sif(out) as img:
        assert img.header.arch == "amd64"
        assert img.read_object(img.primary_partition()) == partition.read_bytes()
    with pytest.raises(SifError, match="already holds a primary"):
        add_object(out, PartitionObject(str(partition)))
    add_object(out, LabelsObject(b'{"a":"b"}'))
    before = out.read_bytes()
    delete_object(out, 2)
    with open_sif(out) as img:
        assert [d.id for d in img.descriptors] == [1, 3]
        assert img.header.arch == "unknown" and img.header.descriptors_free == 46
        assert img.read_object(img.descriptor(3)) == b'{"a":"b"}'
        with pytest.raises(SifError, match="no primary"):
            img.primary_partition()
    assert partition.read_bytes()[:4096] not in out.read_bytes()
    assert len(out.read_bytes()) == len(before)  # the labels object still ends the file
    delete_object(out, 3)
    with open_sif(out) as img:
        assert [d.id for d in img.descriptors] == [1]
        assert out.stat().st_size == img.descriptors[0].end  # compacted
    # The freed slot is reused, as the reference tools do.
    assert add_object(out, GenericObject("g", b"x")).id == 2
    with pytest.raises(SifError, match="no object with id 9"):
        delete_object(out, 9)


def test_add_is_deterministic(tmp_path: Path) -> None:
    for name in ("a.sif", "b.sif"):
        write_sif(tmp_path / name, [JsonObject("x", b"{}")], created=5)
        add_object(tmp_path / name, GenericObject("y", b"data"))
    assert (tmp_path / "a.sif").read_bytes() == (tmp_path / "b.sif").read_bytes()
    assert open_sif(tmp_path / "a.sif").descriptor(2).created_at == 5


def test_descriptor_table_full(tmp_path: Path) -> None:
    out = tmp_path / "img.sif"
    write_sif(out, [GenericObject(f"o{i}", b"x") for i in range(3)], descriptor_capacity=3)
    with pytest.raises(SifError, match="no free descriptor"):
        add_object(out, GenericObject("more", b""))


def test_large_object_count_grows_table(tmp_path: Path) -> None:
    objs = [GenericObject(f"o{i}", hashlib.sha256(bytes([i])).digest()) for i in range(60)]
    write_sif(tmp_path / "many.sif", objs)
    with open_sif(tmp_path / "many.sif") as img:
        assert len(img.descriptors) == 60 and img.header.descriptors_free == 0


def test_mode_is_set_and_kept(tmp_path: Path) -> None:
    out = tmp_path / "img.sif"
    write_sif(out, [], mode=0o755)
    assert out.stat().st_mode & 0o777 == 0o755
    add_object(out, GenericObject("x", b"y"))
    assert out.stat().st_mode & 0o777 == 0o755
