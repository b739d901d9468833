"""SIF version 01 on-disk structures: the global header and the descriptor table.

Pure encode/decode with no I/O, so the same code checks hostile bytes from disk and
builds the bytes the writer emits. Layout facts (little-endian, packed, no padding)
follow the reference Go implementation: a 128-byte header and 585-byte descriptors.
"""

from __future__ import annotations

import enum
import struct
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from sycri.errors import InvalidArgument, excerpt


class SifError(InvalidArgument):
    """A SIF file (or a request to build one) is malformed; the message says how."""


MAGIC = b"SIF_MAGIC\x00"
VERSION = b"01\x00"
HEADER_SIZE = 128
DESCRIPTOR_SIZE = 585
NAME_LEN = 128
EXTRA_LEN = 384
ENTITY_LEN = 256
LAUNCH_LEN = 32
GROUP_MASK = 0xF0000000
DEFAULT_LAUNCH_SCRIPT = "#!/usr/bin/env run-singularity\n"
DEFAULT_DESCRIPTORS_OFFSET = 4096
DEFAULT_DESCRIPTOR_CAPACITY = 48
PARTITION_ALIGNMENT = 4096
# A bound on the descriptor table we are willing to load (the reference default is 48).
MAX_DESCRIPTORS = 65536

_HEADER = struct.Struct("<32s10s3s3s16s8q")
_DESCRIPTOR = struct.Struct("<i?III7q128s384s")
assert _HEADER.size == HEADER_SIZE and _DESCRIPTOR.size == DESCRIPTOR_SIZE


class DataType(enum.IntEnum):
    DEFFILE = 0x4001
    ENVVAR = 0x4002
    LABELS = 0x4003
    PARTITION = 0x4004
    SIGNATURE = 0x4005
    GENERIC_JSON = 0x4006
    GENERIC = 0x4007
    CRYPTO_MESSAGE = 0x4008
    SBOM = 0x4009
    OCI_ROOT_INDEX = 0x400A
    OCI_BLOB = 0x400B


class FsType(enum.IntEnum):
    SQUASHFS = 1
    EXT3 = 2
    ARCHIVE = 3
    RAW = 4
    ENCRYPTED_SQUASHFS = 5


class PartType(enum.IntEnum):
    SYSTEM = 1
    PRIMARY_SYSTEM = 2
    DATA = 3
    OVERLAY = 4


class HashType(enum.IntEnum):
    SHA256 = 1
    SHA384 = 2
    SHA512 = 3
    BLAKE2S = 4
    BLAKE2B = 5


class FormatType(enum.IntEnum):
    OPENPGP = 1
    PEM = 2


class MessageType(enum.IntEnum):
    CLEAR_SIGNATURE = 0x100
    RSA_OAEP = 0x200


class SbomFormat(enum.IntEnum):
    CYCLONEDX_JSON = 1
    CYCLONEDX_XML = 2
    GITHUB_JSON = 3
    SPDX_JSON = 4
    SPDX_RDF = 5
    SPDX_TAG_VALUE = 6
    SPDX_YAML = 7
    SYFT_JSON = 8


# Display names as the reference tools print them.
DATA_TYPE_NAMES = {
    DataType.DEFFILE: "Def.FILE",
    DataType.ENVVAR: "Env.Vars",
    DataType.LABELS: "JSON.Labels",
    DataType.PARTITION: "FS",
    DataType.SIGNATURE: "Signature",
    DataType.GENERIC_JSON: "JSON.Generic",
    DataType.GENERIC: "Generic/Raw",
    DataType.CRYPTO_MESSAGE: "Cryptographic Message",
    DataType.SBOM: "SBOM",
    DataType.OCI_ROOT_INDEX: "OCI.RootIndex",
    DataType.OCI_BLOB: "OCI.Blob",
}
FS_TYPE_NAMES = {
    FsType.SQUASHFS: "Squashfs",
    FsType.EXT3: "Ext3",
    FsType.ARCHIVE: "Archive",
    FsType.RAW: "Raw",
    FsType.ENCRYPTED_SQUASHFS: "Encrypted squashfs",
}
PART_TYPE_NAMES = {
    PartType.SYSTEM: "System",
    PartType.PRIMARY_SYSTEM: "*System",
    PartType.DATA: "Data",
    PartType.OVERLAY: "Overlay",
}
HASH_TYPE_NAMES = {
    HashType.SHA256: "SHA-256",
    HashType.SHA384: "SHA-384",
    HashType.SHA512: "SHA-512",
    HashType.BLAKE2S: "BLAKE2s-256",
    HashType.BLAKE2B: "BLAKE2b-256",
}
FORMAT_TYPE_NAMES = {FormatType.OPENPGP: "OpenPGP", FormatType.PEM: "PEM"}
MESSAGE_TYPE_NAMES = {
    MessageType.CLEAR_SIGNATURE: "Clear Signature",
    MessageType.RSA_OAEP: "RSA-OAEP",
}
SBOM_FORMAT_NAMES = {
    SbomFormat.CYCLONEDX_JSON: "cyclonedx-json",
    SbomFormat.CYCLONEDX_XML: "cyclonedx-xml",
    SbomFormat.GITHUB_JSON: "github-json",
    SbomFormat.SPDX_JSON: "spdx-json",
    SbomFormat.SPDX_RDF: "spdx-rdf",
    SbomFormat.SPDX_TAG_VALUE: "spdx-tag-value",
    SbomFormat.SPDX_YAML: "spdx-yaml",
    SbomFormat.SYFT_JSON: "syft-json",
}

# Architecture codes of the header and partition descriptors, by Go architecture name.
ARCH_CODES = {
    "386": b"01\x00",
    "amd64": b"02\x00",
    "arm": b"03\x00",
    "arm64": b"04\x00",
    "ppc64": b"05\x00",
    "ppc64le": b"06\x00",
    "mips": b"07\x00",
    "mipsle": b"08\x00",
    "mips64": b"09\x00",
    "mips64le": b"10\x00",
    "s390x": b"11\x00",
    "riscv64": b"12\x00",
    "loong64": b"13\x00",
}
ARCH_UNKNOWN = b"00\x00"
_ARCH_NAMES = {v: k for k, v in ARCH_CODES.items()}


def arch_name(code: bytes) -> str:
    return _ARCH_NAMES.get(bytes(code), "unknown")


def arch_code(name: str) -> bytes:
    try:
        return ARCH_CODES[name]
    except KeyError:
        raise SifError(f"unknown architecture {excerpt(name)}") from None


_Code = TypeVar("_Code", bound=int)  # a code enum of the format


def type_name(names: Mapping[_Code, str], value: int | None, unknown: str = "Unknown") -> str:
    for key, text in names.items():
        if int(key) == value:
            return text
    return unknown


@dataclass(frozen=True)
class Header:
    """The global header."""

    launch_script: str
    version: str
    arch: str  # Go architecture name of the primary partition, or "unknown"
    id: uuid.UUID
    created_at: int
    modified_at: int
    descriptors_free: int
    descriptors_total: int
    descriptors_offset: int
    descriptors_size: int
    data_offset: int
    data_size: int
    raw_launch: bytes = b"\x00" * LAUNCH_LEN
    raw_arch: bytes = ARCH_UNKNOWN

    def pack(self) -> bytes:
        return _HEADER.pack(
            self.raw_launch,
            MAGIC,
            VERSION,
            self.raw_arch,
            self.id.bytes,
            self.created_at,
            self.modified_at,
            self.descriptors_free,
            self.descriptors_total,
            self.descriptors_offset,
            self.descriptors_size,
            self.data_offset,
            self.data_size,
        )


@dataclass(frozen=True)
class Descriptor:
    """One data object's descriptor, with the type-specific extra field parsed.

    ``group_id`` and ``link`` are without the group flag bits (0 means none);
    ``link_is_group`` tells whether ``link`` names a group rather than an object.
    Extra fields that do not apply to ``data_type`` are None.
    """

    data_type: int
    used: bool
    id: int
    group_id: int
    link: int
    link_is_group: bool
    offset: int
    size: int
    size_with_padding: int
    created_at: int
    modified_at: int
    name: str
    uid: int = 0
    gid: int = 0
    raw_group: int = GROUP_MASK
    raw_link: int = 0
    raw_name: bytes = b"\x00" * NAME_LEN
    extra: bytes = b"\x00" * EXTRA_LEN
    index: int = 0  # slot in the descriptor table
    # DataType.PARTITION
    fstype: int | None = None
    parttype: int | None = None
    arch: str | None = None
    # DataType.SIGNATURE
    hash_type: int | None = None
    entity: bytes | None = None  # signing key fingerprint, None when absent
    # DataType.CRYPTO_MESSAGE
    format_type: int | None = None
    message_type: int | None = None
    # DataType.SBOM
    sbom_format: int | None = None
    # DataType.OCI_BLOB / OCI_ROOT_INDEX
    digest: str | None = None

    @property
    def type_name(self) -> str:
        return type_name(DATA_TYPE_NAMES, self.data_type)

    @property
    def end(self) -> int:
        return self.offset + self.size

    def pack(self) -> bytes:
        return _DESCRIPTOR.pack(
            self.data_type,
            self.used,
            self.id,
            self.raw_group,
            self.raw_link,
            self.offset,
            self.size,
            self.size_with_padding,
            self.created_at,
            self.modified_at,
            self.uid,
            self.gid,
            self.raw_name,
            self.extra,
        )


EMPTY_DESCRIPTOR_BYTES = b"\x00" * DESCRIPTOR_SIZE


def decode_header(raw: bytes) -> Header:
    if len(raw) < HEADER_SIZE:
        raise SifError(f"truncated SIF: {len(raw)} bytes, the header alone needs {HEADER_SIZE}")
    (launch, magic, version, arch, ident, *nums) = _HEADER.unpack_from(raw)
    if magic != MAGIC:
        raise SifError(f"not a SIF file: bad magic {excerpt(magic)}")
    if version != VERSION:
        raise SifError(f"unsupported SIF version {excerpt(version)} (only 01 is supported)")
    created, modified, free, total, doff, dsize, data_off, data_size = nums
    return Header(
        launch_script=launch.split(b"\x00", 1)[0].decode("utf-8", "replace"),
        version=version.rstrip(b"\x00").decode("ascii"),
        arch=arch_name(arch),
        id=uuid.UUID(bytes=ident),
        created_at=created,
        modified_at=modified,
        descriptors_free=free,
        descriptors_total=total,
        descriptors_offset=doff,
        descriptors_size=dsize,
        data_offset=data_off,
        data_size=data_size,
        raw_launch=launch,
        raw_arch=arch,
    )


def check_header(h: Header, file_size: int) -> None:
    """Refuse header fields that cannot describe a file of ``file_size`` bytes."""
    if not 0 <= h.descriptors_total <= MAX_DESCRIPTORS:
        raise SifError(
            f"absurd descriptor count {h.descriptors_total} (at most {MAX_DESCRIPTORS} supported)"
        )
    if not 0 <= h.descriptors_free <= h.descriptors_total:
        raise SifError(
            f"free descriptor count {h.descriptors_free} outside 0..{h.descriptors_total}"
        )
    table = h.descriptors_total * DESCRIPTOR_SIZE
    if h.descriptors_size < table:
        raise SifError(
            f"descriptor table size {h.descriptors_size} too small for "
            f"{h.descriptors_total} descriptors ({table} bytes)"
        )
    if h.descriptors_offset < HEADER_SIZE:
        raise SifError(f"descriptor table offset {h.descriptors_offset} overlaps the header")
    if h.descriptors_offset + table > file_size:
        raise SifError(
            f"truncated SIF: descriptor table ends at {h.descriptors_offset + table}, "
            f"the file has {file_size} bytes"
        )
    if h.data_offset < 0 or h.data_size < 0:
        raise SifError(f"negative data section ({h.data_offset}, {h.data_size})")


def _parse_extra(data_type: int, extra: bytes) -> dict[str, Any]:
    if data_type == DataType.PARTITION:
        fstype, parttype = struct.unpack_from("<ii", extra)
        return {"fstype": fstype, "parttype": parttype, "arch": arch_name(extra[8:11])}
    if data_type == DataType.SIGNATURE:
        (hash_type,) = struct.unpack_from("<i", extra)
        fp = extra[4:24]
        return {"hash_type": hash_type, "entity": None if fp == b"\x00" * 20 else bytes(fp)}
    if data_type == DataType.CRYPTO_MESSAGE:
        ft, mt = struct.unpack_from("<ii", extra)
        return {"format_type": ft, "message_type": mt}
    if data_type == DataType.SBOM:
        return {"sbom_format": struct.unpack_from("<i", extra)[0]}
    if data_type in (DataType.OCI_BLOB, DataType.OCI_ROOT_INDEX):
        text = extra.split(b"\x00", 1)[0].decode("ascii", "replace")
        return {"digest": text}
    return {}


def decode_descriptor(raw: bytes, index: int = 0) -> Descriptor:
    (dt, used, ident, group, link, off, size, padded, ctime, mtime, uid, gid, name, extra) = (
        _DESCRIPTOR.unpack_from(raw)
    )
    if used and b"\x00" not in name:
        raise SifError(f"descriptor {index + 1} (id {ident}): name is not NUL-terminated")
    return Descriptor(
        data_type=dt,
        used=used,
        id=ident,
        group_id=group & ~GROUP_MASK & 0xFFFFFFFF,
        link=link & ~GROUP_MASK & 0xFFFFFFFF,
        link_is_group=(link & GROUP_MASK) == GROUP_MASK,
        offset=off,
        size=size,
        size_with_padding=padded,
        created_at=ctime,
        modified_at=mtime,
        name=name.split(b"\x00", 1)[0].decode("utf-8", "replace"),
        uid=uid,
        gid=gid,
        raw_group=group,
        raw_link=link,
        raw_name=name,
        extra=extra,
        index=index,
        **_parse_extra(dt, extra),
    )


def check_descriptors(h: Header, descriptors: list[Descriptor], file_size: int) -> None:
    """Refuse objects outside the file, overlapping each other or the tables, or duplicate ids."""
    table_end = h.descriptors_offset + h.descriptors_total * DESCRIPTOR_SIZE
    seen: set[int] = set()
    spans = []
    for d in descriptors:
        what = f"object {d.id} ({excerpt(d.name)})" if d.name else f"object {d.id}"
        if d.id == 0 or d.id in seen:
            raise SifError(f"descriptor {d.index + 1}: duplicate or zero object id {d.id}")
        seen.add(d.id)
        if d.offset < 0 or d.size < 0:
            raise SifError(f"{what}: negative offset {d.offset} or size {d.size}")
        if d.offset + d.size > file_size:
            raise SifError(
                f"{what}: data {d.offset}-{d.offset + d.size} lies outside the file "
                f"({file_size} bytes)"
            )
        if d.size and d.offset < table_end:
            raise SifError(f"{what}: data at {d.offset} overlaps the header or descriptor table")
        if d.size:
            spans.append((d.offset, d.end, what))
    spans.sort()
    reach, owner = -1, ""
    for start, end, what in spans:
        if start < reach:
            raise SifError(f"{owner} and {what} overlap")
        if end > reach:
            reach, owner = end, what


def encode_extra_partition(fstype: int, parttype: int, arch: str) -> bytes:
    return struct.pack("<ii3s", fstype, parttype, arch_code(arch)).ljust(EXTRA_LEN, b"\x00")


def encode_name(name: str) -> bytes:
    raw = name.encode()
    if len(raw) >= NAME_LEN or b"\x00" in raw:
        raise SifError(f"object name {excerpt(name)} must be under {NAME_LEN} bytes without NUL")
    return raw.ljust(NAME_LEN, b"\x00")


def encode_launch_script(script: str) -> bytes:
    raw = script.encode()
    if len(raw) >= LAUNCH_LEN:
        raise SifError(f"launch script {excerpt(script)} must be under {LAUNCH_LEN} bytes")
    return raw.ljust(LAUNCH_LEN, b"\x00")


def cleared(d: Descriptor) -> Descriptor:
    """An unused slot at ``d``'s index."""
    return replace(decode_descriptor(EMPTY_DESCRIPTOR_BYTES, d.index), index=d.index)
