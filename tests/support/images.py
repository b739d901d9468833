"""Helpers for image tests: an Images service on a temp root, SIF inspection with real tools."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from sycri.config import Config, ImageConfig
from sycri.images.service import Images
from sycri.sif import mount_partition, unmount


def make_images(base: Path, **image_settings) -> Images:
    # An explicit (empty) registries.conf: the host's /etc/containers files must not
    # change what a test pulls from where.
    image_settings.setdefault("registries_conf", "/dev/null")
    cfg = Config(
        socket=str(base / "sycri.sock"),
        root_dir=str(base / "root"),
        run_dir=str(base / "run"),
        images=dataclasses.replace(ImageConfig(), **image_settings),
    )
    images = Images(cfg)
    images.start()
    return images


def siftool_list(path: str) -> str:
    """``siftool list``; raises when siftool rejects the file."""
    res = subprocess.run(["siftool", "list", path], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, f"siftool list {path} failed: {res.stderr}"
    return res.stdout


@contextlib.contextmanager
def mounted(sif_path: str) -> Iterator[Path]:
    """The SIF's squashfs mounted read-only in place, with sycri's own SIF mount code."""
    with tempfile.TemporaryDirectory(prefix="sycri-test-mnt.") as target:
        asyncio.run(mount_partition(sif_path, target))
        try:
            yield Path(target)
        finally:
            asyncio.run(unmount(target))


def dsse_sign(path: Path, key) -> None:
    """Sign the SIF's object group 1 (its system partition and config) with ``key`` (an
    ed25519 private key) the way SIF DSSE signatures are made: digests of the header and
    of each object's descriptor and data in a JSON document, in a DSSE envelope, as a
    signature object linked to the group."""
    import base64
    import hashlib
    import json
    import struct

    from sycri.sif import DataType, RawObject, add_object, open_sif
    from sycri.sif.verify import (
        DSSE_PAYLOAD_TYPE,
        _pae,
        descriptor_integrity_bytes,
        header_integrity_bytes,
    )

    with open_sif(path) as img:
        group = [d for d in img.descriptors if d.group_id == 1]
        first = min(d.id for d in group)
        objects = []
        for d in group:
            data = hashlib.sha256()
            for chunk in img.iter_object(d):
                data.update(chunk)
            desc = hashlib.sha256(descriptor_integrity_bytes(d, d.id - first)).hexdigest()
            objects.append(
                {
                    "relativeId": d.id - first,
                    "descriptorDigest": f"sha256:{desc}",
                    "objectDigest": f"sha256:{data.hexdigest()}",
                }
            )
        header = hashlib.sha256(header_integrity_bytes(img)).hexdigest()
    payload = json.dumps(
        {"version": 1, "header": {"digest": f"sha256:{header}"}, "objects": objects}
    ).encode()
    sig = key.sign(_pae(DSSE_PAYLOAD_TYPE, payload))
    envelope = {
        "payloadType": DSSE_PAYLOAD_TYPE,
        "payload": base64.b64encode(payload).decode(),
        "signatures": [{"sig": base64.b64encode(sig).decode()}],
    }
    extra = struct.pack("<i", 1) + b"\0" * 20  # hash type SHA-256, no PGP entity
    add_object(
        path,
        RawObject(
            data_type=DataType.SIGNATURE,
            data=json.dumps(envelope).encode(),
            group_id=0,
            link=1,
            link_is_group=True,
            extra=extra,
        ),
    )
