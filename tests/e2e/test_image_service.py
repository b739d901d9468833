"""The CRI ImageService through sycri's socket, against a real registry."""

from __future__ import annotations

import base64
import json
import os
import secrets
import threading

import grpc
import pytest
from sycri.api import api_pb2

from tests.support import oci
from tests.support.images import siftool_list

pytestmark = pytest.mark.root


def spec(image: str) -> api_pb2.ImageSpec:
    return api_pb2.ImageSpec(image=image)


def test_pull_status_list_remove_and_fsinfo(sycri, registry):
    r = "test/" + secrets.token_hex(4)
    img = oci.busybox_image(user="1000", labels={"tier": "e2e"})
    digest = oci.push(registry, r, "v1", img)
    ref = f"{registry.host}/{r}:v1"
    svc = sycri.images()

    # two kubelets asking at once share one pull
    results: list = []
    threads = [
        threading.Thread(target=lambda: results.append(svc.PullImage(
            api_pb2.PullImageRequest(image=spec(ref)), timeout=120)))
        for _ in range(2)
    ]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [x.image_ref for x in results] == [img.id, img.id]

    status = svc.ImageStatus(api_pb2.ImageStatusRequest(image=spec(ref), verbose=True))
    assert status.image.id == img.id
    assert list(status.image.repo_tags) == [ref]
    assert list(status.image.repo_digests) == [f"{registry.host}/{r}@{digest}"]
    assert status.image.uid.value == 1000
    info = json.loads(status.info["info"])
    assert info["labels"] == {"tier": "e2e"}
    assert info["imageSpec"]["config"]["User"] == "1000"
    siftool_list(info["sifPath"])
    assert status.image.size == os.path.getsize(info["sifPath"])

    by_digest = svc.ImageStatus(
        api_pb2.ImageStatusRequest(image=spec(status.image.repo_digests[0]))
    )
    assert by_digest.image.id == img.id
    listed = svc.ListImages(api_pb2.ListImagesRequest())
    assert [i.id for i in listed.images] == [img.id]
    filtered = svc.ListImages(
        api_pb2.ListImagesRequest(filter=api_pb2.ImageFilter(image=spec("busybox:nope")))
    )
    assert list(filtered.images) == []

    fs = svc.ImageFsInfo(api_pb2.ImageFsInfoRequest())
    (usage,) = fs.image_filesystems
    assert usage.used_bytes.value >= status.image.size
    assert usage.inodes_used.value >= 2
    assert usage.fs_id.mountpoint.endswith("/images")

    svc.RemoveImage(api_pb2.RemoveImageRequest(image=spec(img.id)))
    assert not svc.ImageStatus(api_pb2.ImageStatusRequest(image=spec(ref))).HasField("image")
    assert not os.path.exists(info["sifPath"])
    # removing what is not there is not an error (kubelet retries)
    svc.RemoveImage(api_pb2.RemoveImageRequest(image=spec(img.id)))


def test_bad_requests_are_invalid_argument_and_the_server_keeps_serving(sycri):
    svc = sycri.images()
    with pytest.raises(grpc.RpcError) as err:
        svc.PullImage(api_pb2.PullImageRequest(image=spec("Not/A Ref")))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not valid" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        svc.PullImage(api_pb2.PullImageRequest())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert svc.ListImages(api_pb2.ListImagesRequest()).images == []


def test_pull_with_auth_config_from_kubelet(sycri, basic_registry):
    r = "test/" + secrets.token_hex(4)
    img = oci.busybox_image(cmd=["auth"])
    oci.push(basic_registry, r, "latest", img)
    svc = sycri.images()
    ref = f"{basic_registry.host}/{r}"
    with pytest.raises(grpc.RpcError) as err:
        svc.PullImage(api_pb2.PullImageRequest(image=spec(ref)))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "requires credentials" in err.value.details()
    auth = base64.b64encode(f"{basic_registry.username}:{basic_registry.password}".encode())
    resp = svc.PullImage(
        api_pb2.PullImageRequest(image=spec(ref), auth=api_pb2.AuthConfig(auth=auth.decode()))
    )
    assert resp.image_ref == img.id
