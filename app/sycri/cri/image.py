"""The CRI ImageService: PullImage, ImageStatus, ListImages, RemoveImage, ImageFsInfo.

Thin: validate the request, call ``node.images`` (sycri.images.service.Images), build
the reply.
"""

from __future__ import annotations

import json
import time

from sycri.api import api_pb2
from sycri.cri import wire
from sycri.cri.wire import Encoded
from sycri.errors import InvalidArgument, SycriError
from sycri.images.convert import failed_converting
from sycri.images.credentials import from_auth_config
from sycri.images.store import Image
from sycri.node import Node


def _spec_image(spec: api_pb2.ImageSpec | None, rpc: str) -> str:
    if spec is None or not spec.image.strip():
        raise InvalidArgument(f"{rpc}: image.image is required")
    return spec.image


def to_cri(image: Image) -> api_pb2.Image:
    out = api_pb2.Image(
        id=image.id,
        repo_tags=list(image.repo_tags),
        repo_digests=list(image.repo_digests),
        size=image.size,
        spec=api_pb2.ImageSpec(image=image.id, user_specified_image=image.user_ref),
        pinned=image.pinned,
    )
    user = image.config.user.split(":", 1)[0]
    if user.isdigit():
        out.uid.value = int(user)
    elif user:
        out.username = user
    return out


def _item(image: Image) -> bytes:
    return to_cri(image).SerializeToString()


_IMAGE = wire.number(api_pb2.ImageStatusResponse, "image")
_IMAGES = wire.number(api_pb2.ListImagesResponse, "images")
# An Image is frozen: a retag or a new pull is a new object, encoded again.
ENCODED: wire.Encodings[Image] = wire.Encodings(_item)


def _encoded(image: Image) -> bytes:
    return ENCODED.get(image.id, image, None, image)


async def pull_image(node: Node, request: api_pb2.PullImageRequest) -> api_pb2.PullImageResponse:
    text = _spec_image(request.image if request.HasField("image") else None, "PullImage")
    auth = from_auth_config(request.auth) if request.HasField("auth") else None
    try:
        image = await node.images.pull(text, auth)
    except Exception as exc:
        _report_failure(node, request.sandbox_config.metadata, text, exc)
        raise
    return api_pb2.PullImageResponse(image_ref=image.id)


def _report_failure(
    node: Node, pod: api_pb2.PodSandboxMetadata, image: str, exc: Exception
) -> None:
    """A Warning event on the pod that asked (the node agent drops it outside a cluster)."""
    reason = exc.message if isinstance(exc, SycriError) else f"{type(exc).__name__}: {exc}"
    report = (
        node.node_agent.conversion_failed if failed_converting(exc) else node.node_agent.pull_failed
    )
    report(pod.namespace, pod.name, pod.uid, image, reason)


async def image_status(
    node: Node, request: api_pb2.ImageStatusRequest
) -> api_pb2.ImageStatusResponse | Encoded:
    text = _spec_image(request.image if request.HasField("image") else None, "ImageStatus")
    node.images.sif_stores.refresh_soon()
    image = node.images.find(text)
    if image is None:
        return api_pb2.ImageStatusResponse()
    if not request.verbose:
        return Encoded(wire.field(_IMAGE, _encoded(image)), api_pb2.ImageStatusResponse)
    resp = api_pb2.ImageStatusResponse(image=to_cri(image))
    if request.verbose:
        resp.info["info"] = json.dumps(
            {
                "sifPath": image.sif_path,
                "local": image.local,
                "sifStore": node.images.sif_stores.store_of(image.id) or "",
                "userReference": image.user_ref,
                "imageSpec": image.raw_config,
                "labels": image.config.labels or {},
            },
            sort_keys=True,
        )
    return resp


async def list_images(node: Node, request: api_pb2.ListImagesRequest) -> Encoded:
    wanted = request.filter.image.image if request.HasField("filter") else ""
    node.images.sif_stores.refresh_soon()
    if wanted:
        image = node.images.find(wanted)
        images = [image] if image is not None else []
    else:
        images = node.images.list()
        ENCODED.keep({i.id for i in images})
    data = b"".join([wire.field(_IMAGES, _encoded(i)) for i in images])
    return Encoded(data, api_pb2.ListImagesResponse)


async def remove_image(
    node: Node, request: api_pb2.RemoveImageRequest
) -> api_pb2.RemoveImageResponse:
    text = _spec_image(request.image if request.HasField("image") else None, "RemoveImage")
    await node.images.remove(text)
    return api_pb2.RemoveImageResponse()


def _usage(path: str, used: int, inodes: int) -> api_pb2.FilesystemUsage:
    return api_pb2.FilesystemUsage(
        timestamp=time.time_ns(),
        fs_id=api_pb2.FilesystemIdentifier(mountpoint=path),
        used_bytes=api_pb2.UInt64Value(value=used),
        inodes_used=api_pb2.UInt64Value(value=inodes),
    )


async def image_fs_info(
    node: Node, request: api_pb2.ImageFsInfoRequest
) -> api_pb2.ImageFsInfoResponse:
    import asyncio

    root, used, inodes = await asyncio.to_thread(node.images.fs_usage)
    # No container_filesystems: containers' writable layers live beside the images (one
    # filesystem), which kubelet reads from an empty list (no split image filesystem).
    return api_pb2.ImageFsInfoResponse(image_filesystems=[_usage(str(root), used, inodes)])


RPCS = {
    "PullImage": pull_image,
    "ImageStatus": image_status,
    "ListImages": list_images,
    "RemoveImage": remove_image,
    "ImageFsInfo": image_fs_info,
}
