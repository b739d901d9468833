"""The Singularity Image Format (SIF v01): read, write, verify and mount SIF files.

Pure file I/O with no knowledge of containers. The rest of sycri uses only the names
exported here:

- ``open_sif(path) -> SifImage``: header + descriptors, objects read on demand;
  ``SifImage.primary_partition()`` gives the squashfs a container runs from.
- ``write_sif(path, objects, ...)``: a new SIF, byte-identical for identical inputs;
  ``add_object`` / ``delete_object`` change an existing file atomically.
- ``verify(path, keys)``: check the signatures (legacy PGP, PGP, DSSE).
- ``mount_partition`` / ``unmount``: the primary partition read-only, in place.
"""

from sycri.sif.format import (
    DataType,
    Descriptor,
    FsType,
    HashType,
    Header,
    PartType,
    SbomFormat,
    SifError,
)
from sycri.sif.mount import mount_partition, partition_location, unmount
from sycri.sif.objects import (
    DefinitionObject,
    GenericObject,
    JsonObject,
    LabelsObject,
    PartitionObject,
    RawObject,
    SifObject,
)
from sycri.sif.reader import SifImage, open_sif
from sycri.sif.verify import SignatureResult, verify
from sycri.sif.writer import add_object, delete_object, sif_id_for, write_sif

__all__ = [
    "DataType",
    "DefinitionObject",
    "Descriptor",
    "FsType",
    "GenericObject",
    "HashType",
    "Header",
    "JsonObject",
    "LabelsObject",
    "PartType",
    "PartitionObject",
    "RawObject",
    "SbomFormat",
    "SifError",
    "SifImage",
    "SifObject",
    "SignatureResult",
    "add_object",
    "delete_object",
    "mount_partition",
    "open_sif",
    "partition_location",
    "sif_id_for",
    "unmount",
    "verify",
    "write_sif",
]
