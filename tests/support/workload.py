"""Real work for observability tests: images pushed to the test registry and pulled, a pod
on the test's own network, containers that complete, fail and get OOM-killed.

Everything goes through sycri's socket, as kubelet would drive it.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sycri.api import api_pb2

from tests.support import oci
from tests.support.node import served
from tests.support.pods import PodNet, pod_config
from tests.support.server import SycriServer

OOM_LIMIT = 24 * 1024 * 1024


@contextmanager
def node(flags: list[str] = (), env: dict[str, str] | None = None) -> Iterator[Node]:
    """A live sycri with its own bridge and subnet; pods removed and everything unmounted
    afterwards, even when the test fails."""
    base = Path("/tmp") / f"syobs-{secrets.token_hex(4)}"  # short: conmon socket paths
    with served(base, flags=flags, env=env, forgiving=True) as (server, net):
        yield Node(server, net)


def two_layer_image(extra: str) -> oci.Image:
    """busybox (one layer, the same in every such image) plus a small layer of its own."""
    return oci.Image(
        layers=[oci.layer(oci.busybox_entries()), oci.layer([oci.file("etc/extra", extra)])],
        entrypoint=["/bin/sh", "-c"],
        cmd=["exit 0"],
    )


@dataclass
class Node:
    server: SycriServer
    net: PodNet

    @property
    def rt(self):
        return self.server.runtime()

    def push(self, registry, image: oci.Image) -> str:
        repo = "obs/" + secrets.token_hex(4)
        oci.push(registry, repo, "v1", image)
        return f"{registry.host}/{repo}:v1"

    def pull(self, ref: str, metadata=()) -> str:
        req = api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=ref))
        return self.server.images().PullImage(req, metadata=metadata).image_ref

    def run_pod(self, name: str, metadata=()) -> tuple[str, api_pb2.PodSandboxConfig]:
        cfg = pod_config(name)
        cfg.log_directory = str(self.server.base / "pods" / name)
        req = api_pb2.RunPodSandboxRequest(config=cfg)
        return self.rt.RunPodSandbox(req, metadata=metadata).pod_sandbox_id, cfg

    def create(
        self,
        pod: tuple[str, api_pb2.PodSandboxConfig],
        name: str,
        image: str,
        script: str,
        memory: int = 0,
        metadata=(),
        command: tuple[str, ...] = (),
    ) -> str:
        cfg = api_pb2.ContainerConfig(
            metadata=api_pb2.ContainerMetadata(name=name),
            image=api_pb2.ImageSpec(image=image),
            command=command,
            args=[script],
            log_path=f"{name}/0.log",
        )
        if memory:
            cfg.linux.resources.memory_limit_in_bytes = memory
            cfg.linux.resources.memory_swap_limit_in_bytes = memory
        req = api_pb2.CreateContainerRequest(
            pod_sandbox_id=pod[0], config=cfg, sandbox_config=pod[1]
        )
        return self.rt.CreateContainer(req, metadata=metadata).container_id

    def start(self, cid: str, metadata=()) -> None:
        self.rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid), metadata=metadata)

    def create_unstartable(self, pod, name: str, image: str) -> str:
        """A container whose start fails inside runc: its command is under /dev, a mount
        of the container (CreateContainer cannot look for it in the image), and is not there."""
        return self.create(pod, name, image, "", command=("/dev/no-such-command",))

    def run(self, pod, name: str, image: str, script: str, memory: int = 0) -> str:
        cid = self.create(pod, name, image, script, memory)
        self.start(cid)
        return cid

    def wait_exited(self, cid: str, timeout: float = 60) -> api_pb2.ContainerStatus:
        deadline = time.monotonic() + timeout
        while True:
            st = self.rt.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=cid)).status
            if st.state == api_pb2.CONTAINER_EXITED:
                return st
            assert time.monotonic() < deadline, f"container {cid} did not exit: {st.state}"
            time.sleep(0.05)

    def remove_pod(self, pod_id: str) -> None:
        self.rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod_id))
        self.rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
