"""The container RPC adapters validate requests before touching the runtime."""

from __future__ import annotations

import asyncio

import pytest
from sycri.api import api_pb2
from sycri.config import Config
from sycri.cri import container
from sycri.errors import InvalidArgument, NotFound
from sycri.node import Node
from sycri.server import assemble


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def node(tmp_path) -> Node:
    """The node as the server assembles it (every part there, nothing started)."""
    cfg = Config(root_dir=str(tmp_path / "root"), run_dir=str(tmp_path / "run"))
    n = assemble(cfg)
    yield n
    n.images.close()


@pytest.mark.parametrize(
    ("rpc", "request_", "error"),
    [
        (container.create_container, api_pb2.CreateContainerRequest(), InvalidArgument),
        (
            container.create_container,
            api_pb2.CreateContainerRequest(pod_sandbox_id="p"),
            InvalidArgument,
        ),
        (
            container.create_container,
            api_pb2.CreateContainerRequest(
                pod_sandbox_id="p",
                config=api_pb2.ContainerConfig(
                    metadata=api_pb2.ContainerMetadata(name="c"),
                    image=api_pb2.ImageSpec(image="busybox"),
                ),
            ),
            NotFound,
        ),
        (
            container.create_container,
            api_pb2.CreateContainerRequest(
                pod_sandbox_id="p",
                config=api_pb2.ContainerConfig(image=api_pb2.ImageSpec(image="x")),
            ),
            InvalidArgument,
        ),
        (container.start_container, api_pb2.StartContainerRequest(container_id="abc"), NotFound),
        (
            container.stop_container,
            api_pb2.StopContainerRequest(container_id="a", timeout=-1),
            InvalidArgument,
        ),
        (
            container.container_status,
            api_pb2.ContainerStatusRequest(container_id=""),
            InvalidArgument,
        ),
        (container.exec_sync, api_pb2.ExecSyncRequest(container_id="abc"), InvalidArgument),
        (container.exec_sync, api_pb2.ExecSyncRequest(container_id="abc", cmd=["x"]), NotFound),
        (
            container.update_container_resources,
            api_pb2.UpdateContainerResourcesRequest(container_id="a"),
            InvalidArgument,
        ),
        (
            container.reopen_container_log,
            api_pb2.ReopenContainerLogRequest(container_id="abc"),
            NotFound,
        ),
    ],
)
def test_bad_requests_get_typed_errors(node, rpc, request_, error):
    with pytest.raises(error):
        run(rpc(node, request_))


def test_remove_unknown_container_is_idempotent(node):
    run(container.remove_container(node, api_pb2.RemoveContainerRequest(container_id="ab" * 32)))


def test_empty_list(node):
    assert (
        list(run(container.list_containers(node, api_pb2.ListContainersRequest())).containers) == []
    )


def test_stop_unknown_container_is_idempotent_but_status_is_not(node):
    """kubelet retries stops of containers that are gone; containerd and CRI-O answer OK."""
    for cid in ("ab" * 32, "c450e0c0-ca58-4263-80ca-bbc13adeea93"):
        run(container.stop_container(node, api_pb2.StopContainerRequest(container_id=cid)))
    with pytest.raises(NotFound):
        run(container.container_status(node, api_pb2.ContainerStatusRequest(container_id="ab")))
    with pytest.raises(InvalidArgument):
        run(container.stop_container(node, api_pb2.StopContainerRequest(container_id="")))
