"""sycri replaced (SIGTERM) or killed (SIGKILL), with containers running and exiting.

What kubelet must see after the restart: the same pods and containers with the same ids
and states, a container that exited while sycri was down with its real exit code and
time, exec and stats still working; and after a kill -9 in the middle of container
creates, every container either fully there or fully gone, with nothing leaked.
"""

from __future__ import annotations

import secrets
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from sycri.api import api_pb2

from tests.support import oci
from tests.support.load import leftovers
from tests.support.node import served
from tests.support.pods import PodNet, pod_config
from tests.support.server import SycriServer

pytestmark = pytest.mark.root


@pytest.fixture
def node() -> Iterator[tuple[SycriServer, PodNet, str]]:
    base = Path("/tmp") / f"synr-{secrets.token_hex(4)}"
    cg_root = f"sycri-rst-{secrets.token_hex(4)}"
    with served(base, cgroup_root=cg_root) as (server, net):
        try:
            yield server, net, cg_root
        finally:
            if server.proc is None or server.proc.poll() is not None:
                server.stop()
                server.start()


def pull(server: SycriServer, registry) -> str:
    repo = "rst/" + secrets.token_hex(4)
    oci.push(registry, repo, "v1", oci.busybox_image(entrypoint=["/bin/sh", "-c"]))
    image = f"{registry.host}/{repo}:v1"
    server.images().PullImage(api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=image)))
    return image


def container(name: str, image: str, script: str) -> api_pb2.ContainerConfig:
    return api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name=name),
        image=api_pb2.ImageSpec(image=image),
        args=[script],
        log_path=f"{name}.log",
    )


def snapshot(rt) -> tuple[dict, dict]:
    pods = {p.id: p.state for p in rt.ListPodSandbox(api_pb2.ListPodSandboxRequest()).items}
    ctrs = {c.id: c.state for c in rt.ListContainers(api_pb2.ListContainersRequest()).containers}
    return pods, ctrs


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
def test_restart_keeps_truth(node, registry, how):
    server, _net, cg_root = node
    rt = server.runtime()
    image = pull(server, registry)
    cfg = pod_config("rst", cgroup_parent=f"/{cg_root}/pod")
    cfg.log_directory = str(server.base / "logs")
    pod = rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=cfg)).pod_sandbox_id

    def run(name: str, script: str) -> str:
        req = api_pb2.CreateContainerRequest(
            pod_sandbox_id=pod, config=container(name, image, script), sandbox_config=cfg
        )
        cid = rt.CreateContainer(req).container_id
        rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid))
        return cid

    long = run("long", "exec sleep 3600")
    short = run("short", "sleep 2; exit 7")
    created = rt.CreateContainer(
        api_pb2.CreateContainerRequest(
            pod_sandbox_id=pod, config=container("idle", image, "true"), sandbox_config=cfg
        )
    ).container_id
    before = snapshot(rt)
    assert before[1][short] == api_pb2.CONTAINER_RUNNING

    down_at = time.time_ns()
    server.signal(how)
    server.wait()
    server.stop()  # closes the client channel
    time.sleep(3)  # "short" exits while sycri is down
    up_at = time.time_ns()
    server.start()
    rt = server.runtime()

    pods, ctrs = snapshot(rt)
    assert pods == before[0]
    assert set(ctrs) == set(before[1])
    assert ctrs[long] == api_pb2.CONTAINER_RUNNING
    assert ctrs[created] == api_pb2.CONTAINER_CREATED
    st = rt.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=short)).status
    assert st.state == api_pb2.CONTAINER_EXITED
    assert (st.exit_code, st.reason) == (7, "Error")
    assert down_at < st.finished_at < up_at  # when it really exited, not when we noticed

    out = rt.ExecSync(
        api_pb2.ExecSyncRequest(container_id=long, cmd=["sh", "-c", "echo still-here"], timeout=10)
    )
    assert (out.exit_code, out.stdout) == (0, b"still-here\n")
    stats = rt.ContainerStats(api_pb2.ContainerStatsRequest(container_id=long)).stats
    assert stats.memory.working_set_bytes.value > 0
    st = rt.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=created)).status
    assert (st.created_at > 0, st.started_at) == (True, 0)
    rt.StartContainer(api_pb2.StartContainerRequest(container_id=created))  # still startable
    deadline = time.monotonic() + 30
    while True:
        st = rt.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=created)).status
        if st.state == api_pb2.CONTAINER_EXITED:
            break
        assert time.monotonic() < deadline, "the container created before the restart never ran"
        time.sleep(0.05)
    assert (st.exit_code, st.reason) == (0, "Completed")
    rt.StopContainer(api_pb2.StopContainerRequest(container_id=long, timeout=0))
    assert (
        rt.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=long)).status.exit_code
        == 137
    )


def test_kill_9_during_creates_leaves_whole_or_nothing(node, registry):
    server, net, cg_root = node
    rt = server.runtime()
    image = pull(server, registry)
    cfg = pod_config("crash", cgroup_parent=f"/{cg_root}/pod")
    cfg.log_directory = str(server.base / "logs")
    pod = rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
    base_footprint = leftovers(server, net, cg_root)

    answered: list[str] = []
    errors: list[grpc.StatusCode] = []

    def create(i: int) -> None:
        try:
            req = api_pb2.CreateContainerRequest(
                pod_sandbox_id=pod,
                config=container(f"c{i}", image, "exec sleep 3600"),
                sandbox_config=cfg,
            )
            cid = server.runtime().CreateContainer(req, timeout=60).container_id
            server.runtime().StartContainer(api_pb2.StartContainerRequest(container_id=cid))
            answered.append(cid)
        except grpc.RpcError as exc:
            errors.append(exc.code())

    threads = [threading.Thread(target=create, args=(i,)) for i in range(30)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(answered) < 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    server.signal(signal.SIGKILL)  # three done, the others queued or half way
    server.wait()
    for t in threads:
        t.join(60)
    server.stop()
    assert set(errors) <= {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}
    server.start()
    rt = server.runtime()

    listed = {c.id: c for c in rt.ListContainers(api_pb2.ListContainersRequest()).containers}
    assert set(answered) <= set(listed)  # nothing sycri said it made is lost
    for cid, c in listed.items():
        # Whole: its status answers, it can be (re)started or is running, and removed.
        st = rt.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=cid)).status
        assert st.metadata.name == c.metadata.name
        if st.state == api_pb2.CONTAINER_CREATED:
            rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid))
        if cid in answered:
            assert st.state == api_pb2.CONTAINER_RUNNING
        rt.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=cid))
    assert list(rt.ListContainers(api_pb2.ListContainersRequest()).containers) == []
    # The image's mount (adopted at the restart) idles after its last container
    # (images.mount_idle_seconds); RemoveImage takes it.
    server.images().RemoveImage(api_pb2.RemoveImageRequest(image=api_pb2.ImageSpec(image=image)))
    assert leftovers(server, net, cg_root) == base_footprint
