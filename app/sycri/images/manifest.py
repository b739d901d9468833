"""OCI and Docker manifests, indexes and image configs: parsing and platform choice. Pure."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sycri.errors import InvalidArgument, NotFound, excerpt
from sycri.images.reference import is_digest

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_SCHEMA1 = (
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
)
SIF_CONFIG = "application/vnd.sylabs.sif.config.v1+json"
SIF_LAYER = "application/vnd.sylabs.sif.layer.v1.sif"

INDEXES = (OCI_INDEX, DOCKER_LIST)
MANIFESTS = (OCI_MANIFEST, DOCKER_MANIFEST)
ACCEPT = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST))

MAX_MANIFEST = 4 * 1024 * 1024
MAX_CONFIG = 8 * 1024 * 1024

GZIP_LAYERS = (
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
)
ZSTD_LAYERS = (
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
)
PLAIN_LAYERS = (
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.docker.image.rootfs.diff.tar",
)


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: dict[str, Any] | None = None
    urls: tuple[str, ...] = ()

    @property
    def compression(self) -> str:
        """``gzip``, ``zstd`` or ``none`` for a layer; ValueError for anything else."""
        if self.media_type in GZIP_LAYERS:
            return "gzip"
        if self.media_type in ZSTD_LAYERS:
            return "zstd"
        if self.media_type in PLAIN_LAYERS:
            return "none"
        raise InvalidArgument(
            f"layer {self.digest}: unsupported media type {excerpt(self.media_type)}"
        )


@dataclass(frozen=True)
class Manifest:
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    annotations: dict[str, str]


def _json(data: bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgument(f"{what} is not valid JSON") from None
    if not isinstance(obj, dict):
        raise InvalidArgument(f"{what} is not a JSON object")
    return obj


def _descriptor(raw: Any, what: str) -> Descriptor:
    if not isinstance(raw, dict):
        raise InvalidArgument(f"{what}: descriptor is not an object")
    digest, size = raw.get("digest"), raw.get("size")
    if not isinstance(digest, str) or not is_digest(digest):
        raise InvalidArgument(f"{what}: bad digest {excerpt(digest)}")
    if not digest.startswith("sha256:"):
        raise InvalidArgument(f"{what}: digest algorithm of {excerpt(digest)} is not supported")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidArgument(f"{what}: bad size {excerpt(size)}")
    platform = raw.get("platform")
    return Descriptor(
        media_type=str(raw.get("mediaType", "")),
        digest=digest,
        size=size,
        platform=platform if isinstance(platform, dict) else None,
        urls=tuple(raw.get("urls") or ()),
    )


def kind(data: bytes, content_type: str) -> str:
    """The media type of a manifest body: its ``mediaType`` field, else the HTTP header."""
    obj = _json(data, "manifest")
    mt = obj.get("mediaType") or content_type.split(";")[0].strip()
    if not mt:
        mt = OCI_INDEX if "manifests" in obj else OCI_MANIFEST
    if mt in DOCKER_SCHEMA1 or obj.get("schemaVersion") == 1:
        raise InvalidArgument("Docker schema 1 manifests are not supported; push the image again")
    return mt


def parse_index(data: bytes) -> list[Descriptor]:
    obj = _json(data, "image index")
    manifests = obj.get("manifests")
    if not isinstance(manifests, list):
        raise InvalidArgument("image index has no manifests list")
    return [_descriptor(m, f"image index entry {i}") for i, m in enumerate(manifests)]


def choose_platform(
    entries: list[Descriptor], arch: str, variant: str, os_: str = "linux"
) -> Descriptor:
    """The manifest for ``os_/arch[/variant]``: exact variant first, then any variant."""
    candidates = [
        (d, d.platform)
        for d in entries
        if d.platform
        and d.platform.get("os") == os_
        and d.platform.get("architecture") == arch
        and d.media_type not in INDEXES
    ]
    for d, platform in candidates:
        if variant and platform.get("variant") == variant:
            return d
    for d, platform in candidates:
        if not platform.get("variant") or not variant:
            return d
    if candidates:
        return candidates[0][0]
    have = sorted(
        {
            "/".join(filter(None, (p.get("os"), p.get("architecture"), p.get("variant"))))
            for p in (d.platform for d in entries)
            if p
        }
    )
    raise NotFound(
        f"image has no manifest for {os_}/{arch}{'/' + variant if variant else ''}"
        f" (it has: {', '.join(have) or 'none'})"
    )


def parse_manifest(data: bytes, media_type: str) -> Manifest:
    obj = _json(data, "image manifest")
    config = _descriptor(obj.get("config"), "manifest config")
    raw_layers = obj.get("layers")
    if not isinstance(raw_layers, list):
        raise InvalidArgument("image manifest has no layers list")
    layers = tuple(_descriptor(raw, f"layer {i}") for i, raw in enumerate(raw_layers))
    raw_ann = obj.get("annotations")
    ann: dict[Any, Any] = raw_ann if isinstance(raw_ann, dict) else {}
    return Manifest(media_type, config, layers, {str(k): str(v) for k, v in ann.items()})


def diff_ids(raw: dict[str, Any], layers: int) -> tuple[str, ...]:
    """The config's ``rootfs.diff_ids``, one sha256 digest per manifest layer."""
    rootfs = raw.get("rootfs")
    ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(ids, list) or not all(isinstance(d, str) and is_digest(d) for d in ids):
        raise InvalidArgument("image config: rootfs.diff_ids is not a list of digests")
    if len(ids) != layers:
        raise InvalidArgument(
            f"image config lists {len(ids)} rootfs.diff_ids for a manifest of {layers} layers"
        )
    for d in ids:
        if not d.startswith("sha256:"):
            raise InvalidArgument(f"image config: diff_id {excerpt(d)} is not sha256")
    return tuple(ids)


@dataclass(frozen=True)
class ImageConfig:
    """The parts of an OCI image config a runtime uses (``config`` section)."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    user: str = ""
    working_dir: str = ""
    stop_signal: str = ""
    labels: dict[str, str] | None = None
    exposed_ports: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    created: str = ""
    architecture: str = ""
    os: str = ""


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"image config: {what} is not a list of strings")
    return tuple(value)


def parse_config(data: bytes) -> tuple[dict[str, Any], ImageConfig]:
    """The raw JSON object and its typed runtime view."""
    obj = _json(data, "image config")
    c = obj.get("config") or {}
    if not isinstance(c, dict):
        raise InvalidArgument("image config: 'config' is not an object")
    labels = c.get("Labels") or {}
    if not isinstance(labels, dict):
        raise InvalidArgument("image config: Labels is not an object")
    return obj, ImageConfig(
        entrypoint=_strings(c.get("Entrypoint"), "Entrypoint"),
        cmd=_strings(c.get("Cmd"), "Cmd"),
        env=_strings(c.get("Env"), "Env"),
        user=str(c.get("User") or ""),
        working_dir=str(c.get("WorkingDir") or ""),
        stop_signal=str(c.get("StopSignal") or ""),
        labels={str(k): str(v) for k, v in labels.items()},
        exposed_ports=tuple(sorted((c.get("ExposedPorts") or {}).keys())),
        volumes=tuple(sorted((c.get("Volumes") or {}).keys())),
        created=str(obj.get("created") or ""),
        architecture=str(obj.get("architecture") or ""),
        os=str(obj.get("os") or ""),
    )
