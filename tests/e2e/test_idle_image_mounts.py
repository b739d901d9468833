"""Idle image mounts through sycri's socket (``images.mount_idle_seconds``): a pod's first
container of an image that ran a moment ago takes the mount that is still there;
RemoveImage, the idle time and a clean shutdown take idle mounts away, never one in use."""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from sycri.api import api_pb2

from tests.e2e.test_containers_cri import container, pull
from tests.support.mounts import loop_devices, mount_of
from tests.support.node import served
from tests.support.pods import pod_config
from tests.support.server import SycriServer

pytestmark = pytest.mark.root


@contextlib.contextmanager
def node(*flags: str) -> Iterator[SycriServer]:
    base = Path("/tmp") / f"syidle-{secrets.token_hex(4)}"  # short: conmon socket paths
    with served(base, flags=list(flags)) as (server, _net):
        yield server


def image_id(server: SycriServer, ref: str) -> str:
    req = api_pb2.ImageStatusRequest(image=api_pb2.ImageSpec(image=ref))
    return server.images().ImageStatus(req).image.id


def mount_dir(server: SycriServer, image: str) -> Path:
    return server.base / "run" / "images" / image.split(":")[1]


def sif_of(server: SycriServer, image: str) -> Path:
    return server.base / "root" / "images" / "sif" / (image.split(":")[1] + ".sif")


def nothing_left(server: SycriServer, image: str) -> bool:
    target = mount_dir(server, image)
    return (
        mount_of(target) is None
        and not target.exists()
        and loop_devices(sif_of(server, image)) == []
    )


def run_container(server: SycriServer, ref: str, args: list[str]) -> tuple[str, str]:
    """A new pod with one started container, as kubelet makes them: (pod id, container id)."""
    rt = server.runtime()
    cfg = pod_config("idle-" + secrets.token_hex(3))
    cfg.log_directory = str(server.base / "logs" / cfg.metadata.uid)
    pod = rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
    req = api_pb2.CreateContainerRequest(
        pod_sandbox_id=pod, config=container("c", ref, args), sandbox_config=cfg
    )
    cid = rt.CreateContainer(req).container_id
    rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid))
    return pod, cid


def remove_pod(server: SycriServer, pod: str) -> None:
    rt = server.runtime()
    rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod))
    rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod))


def remove_container(server: SycriServer, cid: str) -> None:
    rt = server.runtime()
    rt.StopContainer(api_pb2.StopContainerRequest(container_id=cid, timeout=0))
    rt.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=cid))


def test_the_next_pod_takes_the_idle_mount_and_remove_image_takes_it_away(registry):
    with node() as server:  # the default idle time
        ref = pull(server, registry, entrypoint=["/bin/sh", "-c"], cmd=["true"])
        image = image_id(server, ref)
        target = mount_dir(server, image)
        first_pod, first = run_container(server, ref, ["sleep 600"])
        mounted = mount_of(target)
        devices = loop_devices(sif_of(server, image))
        assert mounted is not None and len(devices) == 1

        remove_container(server, first)
        remove_pod(server, first_pod)
        assert mount_of(target) == mounted, "the idle mount went with its last container"

        pod, cid = run_container(server, ref, ["sleep 600"])
        assert mount_of(target) == mounted, "the image was mounted again"
        assert loop_devices(sif_of(server, image)) == devices
        out = server.runtime().ExecSync(
            api_pb2.ExecSyncRequest(container_id=cid, cmd=["/bin/echo", "ran"], timeout=10)
        )
        assert (out.exit_code, out.stdout) == (0, b"ran\n")

        # In use: RemoveImage is refused and the mount stays.
        remove = api_pb2.RemoveImageRequest(image=api_pb2.ImageSpec(image=ref))
        with pytest.raises(grpc.RpcError) as refused:
            server.images().RemoveImage(remove)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert cid in refused.value.details()
        assert mount_of(target) == mounted

        remove_pod(server, pod)
        assert mount_of(target) == mounted
        server.images().RemoveImage(remove)
        assert nothing_left(server, image)
        assert not sif_of(server, image).exists()


def test_an_idle_mount_goes_once_its_idle_time_passed(registry):
    with node("--images-mount-idle-seconds", "1") as server:
        ref = pull(server, registry, entrypoint=["/bin/sh", "-c"], cmd=["true"])
        image = image_id(server, ref)
        pod, _cid = run_container(server, ref, ["sleep 600"])
        assert mount_of(mount_dir(server, image)) is not None
        remove_pod(server, pod)
        deadline = time.monotonic() + 60  # a bound for a loaded machine, not a measure
        while not nothing_left(server, image):
            assert time.monotonic() < deadline, "the idle mount never went"
            time.sleep(0.2)
        # The image is still there: its next container mounts it again.
        pod, _cid = run_container(server, ref, ["sleep 600"])
        assert mount_of(mount_dir(server, image)) is not None
        remove_pod(server, pod)


def test_with_no_idle_time_the_mount_goes_with_its_last_container(registry):
    with node("--images-mount-idle-seconds", "0") as server:
        ref = pull(server, registry, entrypoint=["/bin/sh", "-c"], cmd=["true"])
        image = image_id(server, ref)
        pod, cid = run_container(server, ref, ["sleep 600"])
        assert mount_of(mount_dir(server, image)) is not None
        remove_container(server, cid)
        assert nothing_left(server, image)
        remove_pod(server, pod)


def test_a_clean_shutdown_unmounts_idle_mounts_and_keeps_those_in_use(registry):
    with node() as server:
        used_ref = pull(server, registry, entrypoint=["/bin/sh", "-c"], cmd=["true"])
        idle_ref = pull(server, registry, entrypoint=["/bin/sh", "-c"], cmd=["false"])
        used, idle = image_id(server, used_ref), image_id(server, idle_ref)
        assert used != idle
        _pod, running = run_container(server, used_ref, ["sleep 600"])
        done_pod, done = run_container(server, idle_ref, ["sleep 600"])
        remove_container(server, done)
        remove_pod(server, done_pod)
        kept = mount_of(mount_dir(server, used))
        assert kept is not None and mount_of(mount_dir(server, idle)) is not None

        assert server.stop() == 0  # SIGTERM: a clean shutdown
        assert nothing_left(server, idle)
        assert mount_of(mount_dir(server, used)) == kept
        state = subprocess.run(
            ["runc", "--root", str(server.base / "run/runtime/runc"), "state", running],
            capture_output=True,
            text=True,
            check=True,
        )
        assert json.loads(state.stdout)["status"] == "running"

        server.start()  # the container still runs from the mount it kept
        out = server.runtime().ExecSync(
            api_pb2.ExecSyncRequest(container_id=running, cmd=["/bin/echo", "here"], timeout=10)
        )
        assert (out.exit_code, out.stdout) == (0, b"here\n")
        assert mount_of(mount_dir(server, used)) == kept
