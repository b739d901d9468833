"""host_root through the socket: sycri configured as the node image runs it (the host's
/ mounted elsewhere) gives a hostPath volume the host's files, never its own."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from sycri.api import api_pb2

from tests.e2e.test_containers_cri import container, log_of, pull, wait_state
from tests.support.node import served
from tests.support.pods import pod_config
from tests.support.server import SycriServer

pytestmark = pytest.mark.root


@pytest.fixture
def node() -> Iterator[tuple[SycriServer, Path]]:
    base = Path("/tmp") / f"syhr-{secrets.token_hex(4)}"
    host = base.with_name(base.name + "-host")  # the fake host's /
    (host / "root").mkdir(parents=True)
    (host / "root/.bashrc").write_text("the host's bashrc\n")
    (host / "etc/kubernetes").mkdir(parents=True)
    (host / "etc/kubernetes/kubelet.conf").write_text("the host's kubelet.conf\n")
    (host / "srv").mkdir()
    (host / "srv/kube").symlink_to("/etc/kubernetes")  # the host's /etc, not sycri's
    try:
        with served(base, flags=["--host-root", str(host)]) as (server, _net):
            yield server, host
    finally:
        shutil.rmtree(host, ignore_errors=True)


def test_host_path_volumes_show_the_hosts_files(node, registry):
    server, _host = node
    rt = server.runtime()
    image = pull(server, registry, entrypoint=["/bin/sh", "-c"], cmd=["true"])
    cfg = pod_config("hostroot")
    cfg.log_directory = str(server.base / "pods" / "hostroot")
    pod = rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
    mounts = [
        api_pb2.Mount(container_path="/h/root", host_path="/root", readonly=True),
        api_pb2.Mount(container_path="/h/kube", host_path="/srv/kube", readonly=True),
    ]
    req = api_pb2.CreateContainerRequest(
        pod_sandbox_id=pod,
        config=container(
            "reader", image, ["cat /h/root/.bashrc /h/kube/kubelet.conf"], mounts=mounts
        ),
        sandbox_config=cfg,
    )
    cid = rt.CreateContainer(req).container_id
    rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid))
    st = wait_state(rt, cid, api_pb2.CONTAINER_EXITED)
    assert st.exit_code == 0
    assert [text for _, text in log_of(st.log_path)] == [
        "the host's bashrc",
        "the host's kubelet.conf",
    ]
    assert [m.host_path for m in st.mounts] == ["/root", "/srv/kube"]  # as kubelet sent them

    missing = api_pb2.CreateContainerRequest(
        pod_sandbox_id=pod,
        config=container(
            "lost",
            image,
            ["true"],
            mounts=[api_pb2.Mount(container_path="/data", host_path="/srv/data")],
        ),
        sandbox_config=cfg,
    )
    with pytest.raises(grpc.RpcError) as err:
        rt.CreateContainer(missing)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "host path '/srv/data' for '/data' does not exist on the host" in err.value.details()
    names = [c.metadata.name for c in rt.ListContainers(api_pb2.ListContainersRequest()).containers]
    assert names == ["reader"]
