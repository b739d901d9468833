"""Metrics across real work, read through the ``/metrics`` endpoint of a live ``sycri serve``:
pulls from the test registry, a pod on the built-in CNI network, containers that complete,
fail and are OOM-killed."""

from __future__ import annotations

import grpc
import pytest
from sycri.api import api_pb2

from tests.support import workload
from tests.support.telemetry import metrics_url, scrape, value

pytestmark = pytest.mark.root


class Reading:
    """Two scrapes and the change between them."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.before = self.after = scrape(url)

    def step(self) -> Reading:
        self.before, self.after = self.after, scrape(self.url)
        return self

    def delta(self, name: str, **labels: str) -> float:
        return value(self.after, name, **labels) - value(self.before, name, **labels)

    def now(self, name: str, **labels: str) -> float:
        return value(self.after, name, **labels)


def test_metrics_follow_pulls_pods_and_container_lifecycles(registry):
    with workload.node(["--metrics-address", "127.0.0.1:0", "--images-keep-layers", "true"]) as n:
        m = Reading(metrics_url(n.server))
        assert m.now("sycri_image_store_images") == 0
        assert m.now("sycri_pod_sandboxes", state="ready") == 0

        # A first pull downloads every byte: manifest, config and both layers.
        first = workload.two_layer_image("first")
        ref = n.push(registry, first)
        image_id = n.pull(ref)
        m.step()
        wire = len(first.manifest()) + len(first.config()) + sum(len(x.blob) for x in first.layers)
        assert m.delta("sycri_image_pulls_total", source="docker", result="success") == 1
        assert m.delta("sycri_image_downloaded_bytes_total", source="docker") == wire
        assert m.delta("sycri_image_layers_total", result="downloaded") == 2
        assert m.delta("sycri_image_layers_total", result="reused") == 0
        assert (
            m.delta("sycri_image_pull_duration_seconds_count", source="docker", result="success")
            == 1
        )
        assert m.delta("sycri_image_conversion_duration_seconds_count") == 1
        assert m.delta("sycri_command_duration_seconds_count", command="tar2sqfs") == 1
        assert m.now("sycri_image_pulls_in_progress", source="docker") == 0
        assert m.now("sycri_image_store_images") == 1
        status = n.server.images().ImageStatus(
            api_pb2.ImageStatusRequest(image=api_pb2.ImageSpec(image=image_id))
        )
        # the SIF and the kept layer blobs
        blobs = sum(len(x.blob) for x in first.layers)
        assert m.now("sycri_image_store_bytes") == status.image.size + blobs

        # A second image sharing the busybox layer: that layer is reused, not downloaded.
        second = workload.two_layer_image("second")
        n.pull(n.push(registry, second))
        m.step()
        assert m.delta("sycri_image_layers_total", result="downloaded") == 1
        assert m.delta("sycri_image_layers_total", result="reused") == 1
        assert m.delta("sycri_image_downloaded_bytes_total", source="docker") == len(
            second.manifest()
        ) + len(second.config()) + len(second.layers[1].blob)
        assert m.now("sycri_image_store_images") == 2

        # A pull that fails is counted as a failure, and the server keeps serving.
        with pytest.raises(grpc.RpcError) as err:
            n.pull(f"{registry.host}/obs/never-pushed:v1")
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        m.step()
        assert m.delta("sycri_image_pulls_total", source="docker", result="failure") == 1
        assert m.delta("sycri_image_pulls_total", source="docker", result="success") == 0

        # A pod: two CNI ADDs (loopback, then the built-in bridge chain).
        pod = n.run_pod("metrics")
        m.step()
        assert m.now("sycri_pod_sandboxes", state="ready") == 1
        assert m.delta("sycri_cni_operations_total", operation="ADD", result="success") == 2
        assert m.delta("sycri_cni_operation_duration_seconds_count", operation="ADD") == 2
        for plugin in ("loopback", "bridge", "portmap"):
            assert m.delta("sycri_command_duration_seconds_count", command=plugin) == 1, plugin

        # Containers that complete, fail, and run out of memory.
        done = n.run(pod, "done", ref, "exit 0")
        failed = n.run(pod, "failed", ref, "exit 3")
        hog = n.run(pod, "hog", ref, "tail /dev/zero", memory=workload.OOM_LIMIT)
        reasons = {cid: n.wait_exited(cid).reason for cid in (done, failed, hog)}
        assert reasons == {done: "Completed", failed: "Error", hog: "OOMKilled"}
        m.step()
        assert m.delta("sycri_container_starts_total") == 3
        assert m.delta("sycri_container_start_failures_total") == 0
        assert m.delta("sycri_command_duration_seconds_count", command="conmon") == 3
        assert m.delta("sycri_command_duration_seconds_count", command="runc start") == 3
        for reason in ("Completed", "Error", "OOMKilled"):
            assert m.delta("sycri_container_exits_total", reason=reason) == 1, reason
        assert m.delta("sycri_container_oom_kills_total") == 1
        assert m.now("sycri_containers", state="exited") == 3
        assert m.now("sycri_containers", state="running") == 0

        # A container whose runc create fails at StartContainer: a start failure.
        doomed = n.create_unstartable(pod, "doomed", ref)
        with pytest.raises(grpc.RpcError) as err:
            n.start(doomed)
        assert "no-such-command" in (err.value.details() or "")
        assert n.wait_exited(doomed).reason == "ContainerCannotRun"
        m.step()
        assert m.delta("sycri_container_start_failures_total") == 1
        assert m.delta("sycri_container_starts_total") == 0
        assert m.delta("sycri_container_exits_total", reason="ContainerCannotRun") == 1

        # Asking about the exits again (as kubelet does every second) counts nothing twice.
        for cid in (done, failed, hog):
            n.wait_exited(cid)
        n.rt.ListContainers(api_pb2.ListContainersRequest())
        m.step()
        assert m.delta("sycri_container_exits_total", reason="Completed") == 0
        assert m.delta("sycri_container_oom_kills_total") == 0

        # Removing the pod: one CNI DEL (the loopback goes with the namespace), nothing left.
        n.remove_pod(pod[0])
        m.step()
        assert m.delta("sycri_cni_operations_total", operation="DEL", result="success") == 1
        assert m.now("sycri_pod_sandboxes", state="ready") == 0
        assert m.now("sycri_pod_sandboxes", state="notready") == 0
        assert m.now("sycri_containers", state="exited") == 0


class Seen:
    """An RPC observer remembering which answers it was told of."""

    def __init__(self) -> None:
        self.answers: list[tuple[str, grpc.StatusCode]] = []

    def started(self, method: str) -> None:
        pass

    def finished(self, method: str, code: grpc.StatusCode, seconds: float) -> None:
        self.answers.append((method, code))


def test_a_failed_rpc_is_counted_before_the_client_has_its_answer(tmp_path):
    """A client that scrapes right after an error must already see it counted."""
    import asyncio

    from sycri import config, server
    from sycri.api import api_pb2_grpc
    from sycri.cri.service import Dispatcher

    seen = Seen()
    cfg = config.build(
        {"socket": str(tmp_path / "s.sock"), "root_dir": str(tmp_path / "root"),
         "run_dir": str(tmp_path / "run"), "metrics_address": ""}
    )  # fmt: skip

    async def main() -> list[bool]:
        node = server.assemble(cfg)
        srv = grpc.aio.server()
        srv.add_generic_rpc_handlers(Dispatcher(node, server.handlers(), [seen]).generic_handlers())
        srv.add_insecure_port(f"unix:{cfg.socket}")
        await srv.start()
        counted = []
        try:
            async with grpc.aio.insecure_channel(f"unix:{cfg.socket}") as ch:
                stub = api_pb2_grpc.RuntimeServiceStub(ch)
                for i in range(50):
                    rpc = "ContainerStatus" if i % 2 else "CheckpointContainer"
                    with pytest.raises(grpc.aio.AioRpcError):
                        if i % 2:
                            await stub.ContainerStatus(
                                api_pb2.ContainerStatusRequest(container_id="f" * 64)
                            )
                        else:
                            await stub.CheckpointContainer(
                                api_pb2.CheckpointContainerRequest(container_id="x")
                            )
                    counted.append(len(seen.answers) == i + 1 and seen.answers[-1][0] == rpc)
        finally:
            await srv.stop(1)
            node.images.close()
        return counted

    assert all(asyncio.run(main()))
