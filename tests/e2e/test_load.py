"""Many pods at once through the socket: every call succeeds, nothing is left behind.

CI size (24 pods, 2 rounds); bench/load.py runs the full 200-pod rounds.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sycri.api import api_pb2

from tests.support import oci
from tests.support.load import EventCounter, leftovers, run_round
from tests.support.node import served
from tests.support.pods import PodNet, pod_config
from tests.support.server import SycriServer

pytestmark = [pytest.mark.root, pytest.mark.slow]

PODS = int(os.environ.get("SYCRI_TEST_LOAD_PODS", "24"))


@pytest.fixture
def loaded() -> Iterator[tuple[SycriServer, PodNet, str]]:
    cg_root = f"sycri-load-{secrets.token_hex(4)}"
    base = Path("/tmp") / f"synl-{secrets.token_hex(4)}"
    with served(base, cgroup_root=cg_root) as (server, net):
        yield server, net, cg_root


def test_concurrent_pod_rounds_leave_nothing_behind(loaded, registry):
    server, net, cg_root = loaded
    repo = "load/" + secrets.token_hex(4)
    oci.push(registry, repo, "v1", oci.busybox_image(entrypoint=["/bin/sh", "-c"]))
    image = f"{registry.host}/{repo}:v1"
    server.images().PullImage(api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=image)))
    # A pod that lives through the rounds, as kubelet's cgroup parents and the node's
    # first pod do: the shared run-dir mount and the cgroup root exist before counting.
    warm = pod_config("warm", cgroup_parent=f"/{cg_root}/warm")
    server.runtime().RunPodSandbox(api_pb2.RunPodSandboxRequest(config=warm))
    before = leftovers(server, net, cg_root)
    events = EventCounter(server).start()
    all_containers: list[str] = []
    try:
        for r in range(2):
            result, containers = run_round(server, image, PODS, 12, cg_root, f"r{r}")
            assert result.failures == [], result.failures
            assert len(containers) == PODS
            all_containers += containers
    finally:
        events.stop()
    rt = server.runtime()
    assert [p.metadata.name for p in rt.ListPodSandbox(api_pb2.ListPodSandboxRequest()).items] == [
        "warm"
    ]
    assert list(rt.ListContainers(api_pb2.ListContainersRequest()).containers) == []
    # The image's mount idles after its last container (images.mount_idle_seconds);
    # removing the image takes it, so the node is back where it was before the rounds.
    server.images().RemoveImage(api_pb2.RemoveImageRequest(image=api_pb2.ImageSpec(image=image)))
    after = leftovers(server, net, cg_root)
    assert after == before
    # kubelet's evented PLEG saw every container's whole life, in order.
    full = [
        api_pb2.CONTAINER_CREATED_EVENT,
        api_pb2.CONTAINER_STARTED_EVENT,
        api_pb2.CONTAINER_STOPPED_EVENT,
        api_pb2.CONTAINER_DELETED_EVENT,
    ]
    wrong = {c: events.seen.get(c) for c in all_containers if events.seen.get(c) != full}
    assert wrong == {}
