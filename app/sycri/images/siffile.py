"""A SIF file as an image: its OCI config and its digest.

A SIF sycri did not build (oras, library, a local file, a shared store) is named by the
digest of the file itself, and runs with the ``oci-config.json`` object it carries, or
its runscript when it carries none. Blocking I/O: call these from a worker thread.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from sycri import sif
from sycri.errors import InvalidArgument, Unavailable
from sycri.images import manifest as mf

CONFIG_OBJECT = "oci-config.json"  # the SIF object holding the image's OCI config


def default_config(arch: str) -> bytes:
    """The OCI config given to a SIF that carries none: run its runscript."""
    cfg = {
        "architecture": arch,
        "os": "linux",
        "config": {
            "Cmd": ["/.singularity.d/runscript"],
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        },
        "rootfs": {"type": "layers", "diff_ids": []},
    }
    return json.dumps(cfg, sort_keys=True).encode()


def config_of(path: Path, arch: str) -> bytes:
    """The ``oci-config.json`` object of a SIF, after checking it has a squashfs to run."""
    try:
        with sif.open_sif(path) as img:
            part = img.primary_partition()
            if part.fstype != sif.FsType.SQUASHFS:
                raise InvalidArgument(f"SIF {path}: primary partition is not squashfs")
            found = img.find(name=CONFIG_OBJECT)
            if found:
                data = img.read_object(found[0], limit=mf.MAX_CONFIG)
                mf.parse_config(data)
                return data
    except sif.SifError as exc:
        raise InvalidArgument(f"{path} is not a usable SIF file: {exc}") from None
    return default_config(arch)


def config_digest(path: str) -> str:
    """The digest of the SIF's ``oci-config.json`` object ("" when it has none)."""
    with sif.open_sif(path) as img:
        found = img.find(name=CONFIG_OBJECT)
        if not found:
            return ""
        return "sha256:" + hashlib.sha256(img.read_object(found[0], limit=8 << 20)).hexdigest()


def stat_key(st: os.stat_result) -> str:
    """A file's identity for "has it changed since it was hashed": device, inode, size,
    mtime."""
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def file_digest(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def hash_stable(path: str | os.PathLike[str]) -> tuple[str, os.stat_result]:
    """The file's digest and the stat it was taken under; refused if it changed meanwhile."""
    before = os.stat(path)
    digest = file_digest(path)
    after = os.stat(path)
    if stat_key(before) != stat_key(after):
        raise Unavailable(f"{path} changed while it was being hashed; try again")
    return digest, after
