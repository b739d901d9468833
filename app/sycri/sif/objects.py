"""The objects a SIF is written from: one typed value per kind of data object, each
turning into the one :class:`RawObject` the writer places (data type, bytes or a file,
name, extra field, group, link, alignment). Pure values, no I/O.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from sycri.sif.format import (
    PARTITION_ALIGNMENT,
    DataType,
    FsType,
    PartType,
    encode_extra_partition,
)


@dataclass(frozen=True, kw_only=True)
class RawObject:
    """Any data object: bytes in memory or a file copied by the kernel."""

    data_type: int
    data: bytes = b""
    source_path: str | None = None
    name: str = ""
    extra: bytes = b""
    group_id: int = 1  # 0: no group
    link: int = 0
    link_is_group: bool = False
    alignment: int = 0

    def to_raw(self) -> RawObject:
        return self


@dataclass(frozen=True)
class DefinitionObject:
    """The definition (recipe) file an image was built from."""

    data: bytes
    name: str = ""

    def to_raw(self) -> RawObject:
        return RawObject(data_type=DataType.DEFFILE, data=self.data, name=self.name)


@dataclass(frozen=True)
class JsonObject:
    """A named generic JSON object, e.g. the OCI image config as ``oci-config.json``."""

    name: str
    data: bytes

    def to_raw(self) -> RawObject:
        return RawObject(data_type=DataType.GENERIC_JSON, data=self.data, name=self.name)


@dataclass(frozen=True)
class LabelsObject:
    """Image labels as a JSON object."""

    data: bytes
    name: str = ""

    def to_raw(self) -> RawObject:
        return RawObject(data_type=DataType.LABELS, data=self.data, name=self.name)


@dataclass(frozen=True)
class GenericObject:
    """Named raw bytes."""

    name: str
    data: bytes

    def to_raw(self) -> RawObject:
        return RawObject(data_type=DataType.GENERIC, data=self.data, name=self.name)


@dataclass(frozen=True)
class PartitionObject:
    """A filesystem image (squashfs by default) copied from ``source_path``, 4096-aligned."""

    source_path: str
    fstype: int = FsType.SQUASHFS
    parttype: int = PartType.PRIMARY_SYSTEM
    arch: str = "amd64"
    name: str = ""
    group_id: int = 1

    def to_raw(self) -> RawObject:
        return RawObject(
            data_type=DataType.PARTITION,
            source_path=os.fspath(self.source_path),
            name=self.name,
            extra=encode_extra_partition(self.fstype, self.parttype, self.arch),
            group_id=self.group_id,
            alignment=PARTITION_ALIGNMENT,
        )


SifObject = (
    RawObject | DefinitionObject | JsonObject | LabelsObject | GenericObject | PartitionObject
)
