"""The CRI proxy between kubelet and two runtimes: Debian's containerd (the node's
existing runtime) and sycri, on one machine, everything driven through the proxy's
socket as kubelet would.

An ordinary pod (no RuntimeClass) must land on containerd, a pod of sycri's handler on
sycri; listing, status, stats, events and exec work for both through the one socket; a
killed proxy comes back under its supervisor and sees the same pods; a stopped sycri is
named in UNAVAILABLE while containerd's pods keep being served.
"""

from __future__ import annotations

import contextlib
import os
import queue
import secrets
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from sycri.api import api_pb2, api_pb2_grpc

from tests.support import oci
from tests.support.containerd import containerd
from tests.support.node import served
from tests.support.pods import pod_config
from tests.support.proxy import SupervisedProxy

pytestmark = [pytest.mark.root, pytest.mark.slow]

HANDLER = "runc"  # sycri's handler (sycri's default config); containerd's pods send ""


class Cluster:
    """kubelet's view: one socket (the proxy's), plus direct sockets to check routing."""

    def __init__(self, proxy: SupervisedProxy, ctrd_endpoint: str, sycri_endpoint: str):
        self.proxy = proxy
        self.ch = grpc.insecure_channel(proxy.endpoint)
        self.rt = api_pb2_grpc.RuntimeServiceStub(self.ch)
        self.img = api_pb2_grpc.ImageServiceStub(self.ch)
        self.ctrd_ch = grpc.insecure_channel(ctrd_endpoint)
        self.sycri_ch = grpc.insecure_channel(sycri_endpoint)

    def direct(self, which: str) -> api_pb2_grpc.RuntimeServiceStub:
        return api_pb2_grpc.RuntimeServiceStub(self.ctrd_ch if which == "ctrd" else self.sycri_ch)

    def direct_images(self, which: str) -> api_pb2_grpc.ImageServiceStub:
        return api_pb2_grpc.ImageServiceStub(self.ctrd_ch if which == "ctrd" else self.sycri_ch)

    def reconnect(self) -> None:
        self.ch.close()
        self.ch = grpc.insecure_channel(self.proxy.endpoint)
        self.rt = api_pb2_grpc.RuntimeServiceStub(self.ch)
        self.img = api_pb2_grpc.ImageServiceStub(self.ch)

    def close(self) -> None:
        for ch in (self.ch, self.ctrd_ch, self.sycri_ch):
            ch.close()


@pytest.fixture
def cluster(registry) -> Iterator[tuple[Cluster, object, str]]:
    tag = secrets.token_hex(3)
    cg = f"sycri-pxy-{tag}"
    ctrd_base = Path("/tmp") / f"pxc-{tag}"
    sycri_base = Path("/tmp") / f"pxs-{tag}"
    with (
        containerd(ctrd_base, registry, cg) as ctrd,
        served(sycri_base, forgiving=True, cgroup_root=cg + "-s") as (server, _net),
    ):
        proxy = SupervisedProxy(Path("/tmp") / f"pxp-{tag}", ctrd.endpoint, server.endpoint)
        try:
            proxy.start()
            c = Cluster(proxy, ctrd.endpoint, server.endpoint)
            try:
                yield c, server, cg
            finally:
                c.close()
        finally:
            proxy.stop()
            import shutil

            shutil.rmtree(proxy.base, ignore_errors=True)


def _pod(c: Cluster, name: str, handler: str, cg: str, logs: Path) -> tuple[str, object]:
    cfg = pod_config(name, cgroup_parent=f"/{cg}/{name}" if not handler else "")
    cfg.log_directory = str(logs / name)
    req = api_pb2.RunPodSandboxRequest(config=cfg, runtime_handler=handler)
    return c.rt.RunPodSandbox(req, timeout=180).pod_sandbox_id, cfg


def _container(c: Cluster, pod: tuple[str, object], image: str) -> str:
    pod_id, cfg = pod
    # kubelet pulls for the pod it is about to start a container in
    ref = c.img.PullImage(
        api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=image), sandbox_config=cfg),
        timeout=180,
    ).image_ref
    ccfg = api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name="main"),
        image=api_pb2.ImageSpec(image=ref, user_specified_image=image),
        command=["/bin/sh", "-c", "echo hello-$HOSTNAME; exec sleep 1000"],
        log_path="main/0.log",
    )
    req = api_pb2.CreateContainerRequest(pod_sandbox_id=pod_id, config=ccfg, sandbox_config=cfg)
    cid = c.rt.CreateContainer(req, timeout=120).container_id
    c.rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid), timeout=60)
    return cid


def _events(c: Cluster) -> tuple[queue.Queue, grpc.Future]:
    got: queue.Queue = queue.Queue()
    stream = c.rt.GetContainerEvents(api_pb2.GetEventsRequest())

    def read() -> None:
        with contextlib.suppress(grpc.RpcError):
            for ev in stream:
                got.put(ev)

    threading.Thread(target=read, daemon=True).start()
    return got, stream


def _wait_event(got: queue.Queue, cid: str, kind: int, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ev = got.get(timeout=1)
        except queue.Empty:
            continue
        if ev.container_id == cid and ev.container_event_type == kind:
            return ev
    raise AssertionError(f"no event {kind} for {cid}")


def _ids(c: Cluster) -> tuple[set[str], set[str]]:
    pods = {p.id for p in c.rt.ListPodSandbox(api_pb2.ListPodSandboxRequest(), timeout=30).items}
    ctrs = {
        x.id for x in c.rt.ListContainers(api_pb2.ListContainersRequest(), timeout=30).containers
    }
    return pods, ctrs


def test_pods_go_to_their_runtime_and_kubelet_sees_both(cluster, registry, tmp_path):
    c, server, cg = cluster
    image = f"{registry.host}/proxy-test/busybox:1"
    oci.push(registry, "proxy-test/busybox", "1", oci.busybox_image())
    events, stream = _events(c)
    try:
        plain = _pod(c, "plain", "", cg, tmp_path)
        mine = _pod(c, "mine", HANDLER, cg, tmp_path)
        # routing: each pod is on its runtime, and only there
        ctrd_pods = {
            p.id for p in c.direct("ctrd").ListPodSandbox(api_pb2.ListPodSandboxRequest()).items
        }
        sycri_pods = {
            p.id for p in c.direct("sycri").ListPodSandbox(api_pb2.ListPodSandboxRequest()).items
        }
        assert plain[0] in ctrd_pods and plain[0] not in sycri_pods
        assert mine[0] in sycri_pods and mine[0] not in ctrd_pods

        c_plain = _container(c, plain, image)
        c_mine = _container(c, mine, image)
        # the pull for each pod went to the runtime that runs it
        spec = api_pb2.ImageSpec(image=image)
        for which in ("ctrd", "sycri"):
            st = c.direct_images(which).ImageStatus(api_pb2.ImageStatusRequest(image=spec))
            assert st.image.id, f"{which} has no {image}"
        # the two listings merged, with the existing runtime's ids unchanged
        pods, ctrs = _ids(c)
        assert {plain[0], mine[0]} <= pods and {c_plain, c_mine} <= ctrs
        for cid in (c_plain, c_mine):
            st = c.rt.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=cid)).status
            assert st.state == api_pb2.CONTAINER_RUNNING, (cid, st)
            out = c.rt.ExecSync(
                api_pb2.ExecSyncRequest(container_id=cid, cmd=["cat", "/etc/hostname"], timeout=30),
                timeout=60,
            )
            assert out.exit_code == 0 and out.stdout.strip(), out
            url = c.rt.Exec(api_pb2.ExecRequest(container_id=cid, cmd=["true"], stdout=True)).url
            assert url.startswith("http://127.0.0.1:"), url
        # each exec URL is the owning runtime's own streaming server
        urls = {
            cid: c.rt.Exec(api_pb2.ExecRequest(container_id=cid, cmd=["true"], stdout=True)).url
            for cid in (c_plain, c_mine)
        }
        assert urls[c_plain].split("/")[2] != urls[c_mine].split("/")[2]
        for pid in (plain[0], mine[0]):
            st = c.rt.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pid))
            assert st.status.state == api_pb2.SANDBOX_READY
            assert st.status.network.ip
        # stats of both runtimes' containers, one call
        stats = c.rt.ListContainerStats(api_pb2.ListContainerStatsRequest(), timeout=60).stats
        assert {c_plain, c_mine} <= {s.attributes.id for s in stats}
        one = c.rt.ContainerStats(api_pb2.ContainerStatsRequest(container_id=c_mine)).stats
        assert one.attributes.id == c_mine
        pstats = c.rt.ListPodSandboxStats(api_pb2.ListPodSandboxStatsRequest(), timeout=60).stats
        assert mine[0] in {s.attributes.id for s in pstats}
        fs = c.img.ImageFsInfo(api_pb2.ImageFsInfoRequest())
        assert len(fs.image_filesystems) >= 2  # containerd's snapshotter and sycri's root
        images = {i.id for i in c.img.ListImages(api_pb2.ListImagesRequest()).images}
        for which in ("ctrd", "sycri"):
            st = c.direct_images(which).ImageStatus(api_pb2.ImageStatusRequest(image=spec))
            assert st.image.id in images
        # Status: the existing runtime's readiness decides; sycri's is shown beside it
        status = c.rt.Status(api_pb2.StatusRequest())
        conds = {x.type: x.status for x in status.status.conditions}
        assert conds["RuntimeReady"] and conds["NetworkReady"]
        assert conds["SycriRuntimeReady"] is True
        # sycri's container events reach kubelet through the proxy
        _wait_event(events, c_mine, api_pb2.CONTAINER_STARTED_EVENT)

        # kubelet without RuntimeClassInImageCriApi: ImageStatus (no handler) is answered
        # by containerd, which has the image, so kubelet skips the pull and names
        # containerd's image id for a container of sycri's pod: sycri gets it pulled.
        other = f"{registry.host}/proxy-test/other:1"
        oci.push(registry, "proxy-test/other", "1", oci.busybox_image(labels={"x": "y"}))
        c.img.PullImage(
            api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=other), sandbox_config=plain[1]),
            timeout=180,
        )
        ctrd_ref = c.img.ImageStatus(
            api_pb2.ImageStatusRequest(image=api_pb2.ImageSpec(image=other))
        ).image.id
        assert ctrd_ref
        sycri_images = c.direct_images("sycri")
        assert not sycri_images.ImageStatus(
            api_pb2.ImageStatusRequest(image=api_pb2.ImageSpec(image=other))
        ).image.id
        ccfg = api_pb2.ContainerConfig(
            metadata=api_pb2.ContainerMetadata(name="second"),
            image=api_pb2.ImageSpec(image=ctrd_ref, user_specified_image=other),
            command=["/bin/sh", "-c", "exec sleep 1000"],
            log_path="second/0.log",
        )
        c_second = c.rt.CreateContainer(
            api_pb2.CreateContainerRequest(
                pod_sandbox_id=mine[0], config=ccfg, sandbox_config=mine[1]
            ),
            timeout=180,
        ).container_id
        c.rt.StartContainer(api_pb2.StartContainerRequest(container_id=c_second), timeout=60)
        st = c.rt.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=c_second)).status
        assert st.state == api_pb2.CONTAINER_RUNNING, st
        assert sycri_images.ImageStatus(
            api_pb2.ImageStatusRequest(image=api_pb2.ImageSpec(image=other))
        ).image.id

        # kill -9 of the proxy: its supervisor restarts it; the same pods, by the same ids
        old = c.proxy.child_pid()
        assert old is not None
        os.kill(old, signal.SIGKILL)
        c.proxy.wait_serving(not_pid=old)
        c.reconnect()
        for cid in (c_plain, c_mine):  # owners relearned from the backends' lists
            st = c.rt.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=cid)).status
            assert st.state == api_pb2.CONTAINER_RUNNING
        pods, ctrs = _ids(c)
        assert {plain[0], mine[0]} <= pods and {c_plain, c_mine} <= ctrs

        # sycri away: named in UNAVAILABLE, containerd's pods still served
        server.stop()
        with pytest.raises(grpc.RpcError) as err:
            c.rt.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=c_mine))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "sycri" in err.value.details()
        with pytest.raises(grpc.RpcError) as err:
            c.rt.ListPodSandbox(api_pb2.ListPodSandboxRequest())
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "sycri" in err.value.details()
        st = c.rt.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=c_plain)).status
        assert st.state == api_pb2.CONTAINER_RUNNING
        other = _pod(c, "plain2", "", cg, tmp_path)
        assert other[0]
        status = c.rt.Status(api_pb2.StatusRequest())
        conds = {x.type: x for x in status.status.conditions}
        assert conds["RuntimeReady"].status is True
        assert conds["SycriRuntimeReady"].status is False
        assert "sycri" in conds["SycriRuntimeReady"].message
        with pytest.raises(grpc.RpcError) as err:
            _pod(c, "mine2", HANDLER, cg, tmp_path)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "sycri" in err.value.details()
        # sycri back: its pod is listed again through the same proxy
        server.start()
        pods, ctrs = _ids(c)
        assert {plain[0], mine[0], other[0]} <= pods and c_mine in ctrs
    finally:
        stream.cancel()
