"""The README flow through sycri's socket: pull, pod, containers, logs, exec, stop, restart."""

from __future__ import annotations

import json
import re
import secrets
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from sycri.api import api_pb2

from tests.support import oci
from tests.support.node import served
from tests.support.pods import PodNet, pod_config
from tests.support.server import SycriServer

pytestmark = pytest.mark.root

CRI_LINE = re.compile(r"^(\S+) (stdout|stderr) ([FP]) (.*)$")


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[SycriServer, PodNet]]:
    base = Path("/tmp") / f"sye2e-{secrets.token_hex(4)}"  # short: conmon socket paths
    with served(base, forgiving=True) as (server, net):
        yield server, net


def pull(server: SycriServer, registry, **image_kw) -> str:
    repo = "e2e/" + secrets.token_hex(4)
    oci.push(registry, repo, "v1", oci.busybox_image(**image_kw))
    ref = f"{registry.host}/{repo}:v1"
    server.images().PullImage(api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=ref)))
    return ref


def container(name: str, image: str, args: list[str], **kw) -> api_pb2.ContainerConfig:
    cfg = api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name=name),
        image=api_pb2.ImageSpec(image=image),
        args=args,
        log_path=f"{name}/0.log",
    )
    for k, v in kw.items():
        if isinstance(v, list):
            getattr(cfg, k).extend(v)
        elif isinstance(v, dict):
            getattr(cfg, k).update(v)
        elif hasattr(v, "DESCRIPTOR"):
            getattr(cfg, k).CopyFrom(v)
        else:
            setattr(cfg, k, v)
    return cfg


def wait_state(rt, cid: str, state: int, timeout: float = 20) -> api_pb2.ContainerStatus:
    deadline = time.monotonic() + timeout
    while True:
        st = rt.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=cid)).status
        if st.state == state:
            return st
        assert time.monotonic() < deadline, f"container {cid} stays {st.state}"
        time.sleep(0.05)


def log_of(path: str) -> list[tuple[str, str]]:
    out = []
    for line in Path(path).read_text().splitlines():
        m = CRI_LINE.match(line)
        assert m, line
        out.append((m.group(2), m.group(4)))
    return out


def test_readme_flow_through_the_socket(node, registry, tmp_path):
    server, _net = node
    rt = server.runtime()
    image = pull(server, registry, entrypoint=["/bin/sh", "-c"], cmd=["echo default"])
    logs = server.base / "pods" / "web"
    pod_cfg = pod_config("web")
    pod_cfg.log_directory = str(logs)
    pod = rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=pod_cfg)).pod_sandbox_id
    ip = rt.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod)).status.network.ip
    assert ip

    def create(cfg: api_pb2.ContainerConfig) -> str:
        req = api_pb2.CreateContainerRequest(pod_sandbox_id=pod, config=cfg, sandbox_config=pod_cfg)
        cid = rt.CreateContainer(req).container_id
        rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid))
        return cid

    # A web server reachable on the pod IP.
    web = create(
        container(
            "web",
            image,
            ["mkdir -p /tmp/www && echo hello-web > /tmp/www/index.html && "
             "exec httpd -f -p 8080 -h /tmp/www"],
            labels={"app": "web"},
        )
    )  # fmt: skip
    deadline = time.monotonic() + 15
    while True:
        try:
            body = urllib.request.urlopen(f"http://{ip}:8080/", timeout=2).read()
            break
        except OSError:
            assert time.monotonic() < deadline, "web server not reachable on the pod IP"
            time.sleep(0.1)
    assert body == b"hello-web\n"

    # A container that prints its args, env, user and mounts, then exits.
    hostdir = tmp_path / "shared"
    hostdir.mkdir()
    (hostdir / "f").write_text("host-file")
    sc = api_pb2.LinuxContainerSecurityContext()
    sc.run_as_user.value = 65534
    printer = create(
        container(
            "printer",
            image,
            ['echo "args: $0 $1"; echo "env: $GREETING"; echo "user: $(id -u)"; '
             'echo "mount: $(cat /mnt/f)"; echo "hostname: $(hostname)"', "a1", "a2"],
            envs=[api_pb2.KeyValue(key="GREETING", value=b"hi there")],
            mounts=[api_pb2.Mount(container_path="/mnt", host_path=str(hostdir), readonly=True)],
            linux=api_pb2.LinuxContainerConfig(security_context=sc),
        )
    )  # fmt: skip
    st = wait_state(rt, printer, api_pb2.CONTAINER_EXITED)
    assert (st.exit_code, st.reason) == (0, "Completed")
    assert st.log_path == str(logs / "printer" / "0.log")
    assert log_of(st.log_path) == [
        ("stdout", "args: a1 a2"),
        ("stdout", "env: hi there"),
        ("stdout", "user: 65534"),
        ("stdout", "mount: host-file"),
        ("stdout", "hostname: web"),
    ]
    assert st.user.linux.uid == 65534

    # ExecSync in the running web container.
    res = rt.ExecSync(
        api_pb2.ExecSyncRequest(container_id=web[:16], cmd=["sh", "-c", "cat /tmp/www/index.html; exit 4"], timeout=10)
    )  # fmt: skip
    assert (res.stdout, res.exit_code) == (b"hello-web\n", 4)

    # Status and lists.
    full = rt.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=web, verbose=True))
    assert full.status.state == api_pb2.CONTAINER_RUNNING
    info = json.loads(full.info["info"])
    assert info["pid"] > 0 and info["runtimeSpec"]["process"]["args"][0] == "/bin/sh"
    assert full.status.image_ref.startswith(registry.host)
    listed = rt.ListContainers(
        api_pb2.ListContainersRequest(filter=api_pb2.ContainerFilter(label_selector={"app": "web"}))
    ).containers
    assert [c.id for c in listed] == [web]
    running = rt.ListContainers(
        api_pb2.ListContainersRequest(
            filter=api_pb2.ContainerFilter(
                pod_sandbox_id=pod,
                state=api_pb2.ContainerStateValue(state=api_pb2.CONTAINER_EXITED),
            )
        )
    ).containers
    assert [c.id for c in running] == [printer]

    # sycri restarts; the container keeps running and is still managed.
    server.stop()
    assert urllib.request.urlopen(f"http://{ip}:8080/", timeout=5).read() == b"hello-web\n"
    server.start()
    rt = server.runtime()
    st = rt.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=web)).status
    assert st.state == api_pb2.CONTAINER_RUNNING
    t0 = time.monotonic()
    rt.StopContainer(api_pb2.StopContainerRequest(container_id=web, timeout=2))
    took = time.monotonic() - t0
    # httpd is PID 1 of its namespace with no SIGTERM handler, so SIGTERM does nothing:
    # the grace period runs out, then SIGKILL.
    assert 1.9 <= took < 10
    st = wait_state(rt, web, api_pb2.CONTAINER_EXITED)
    assert (st.exit_code, st.reason) == (137, "Error")
    assert st.finished_at >= st.started_at > 0

    # Errors a user would meet.
    with pytest.raises(grpc.RpcError) as err:
        rt.CreateContainer(
            api_pb2.CreateContainerRequest(
                pod_sandbox_id=pod, config=container("x", "no/such:image", ["true"])
            )
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        rt.CreateContainer(
            api_pb2.CreateContainerRequest(
                pod_sandbox_id="f" * 64, config=container("x", image, ["true"])
            )
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        rt.CreateContainer(
            api_pb2.CreateContainerRequest(
                pod_sandbox_id=pod,
                config=container("bad-log", image, ["true"], log_path="../../escape.log"),
            )
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    # The image is in use while its containers exist.
    remove_image = api_pb2.RemoveImageRequest(image=api_pb2.ImageSpec(image=image))
    with pytest.raises(grpc.RpcError) as err:
        server.images().RemoveImage(remove_image)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    # Removing the pod removes its containers; the logs stay for kubelet.
    rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod))
    rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod))
    assert rt.ListContainers(api_pb2.ListContainersRequest()).containers == []
    # Stopping a container that is gone succeeds (idempotent); its status is NOT_FOUND.
    rt.StopContainer(api_pb2.StopContainerRequest(container_id=web, timeout=1))
    with pytest.raises(grpc.RpcError) as err:
        rt.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=web))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    server.images().RemoveImage(remove_image)
    assert (logs / "printer" / "0.log").exists()
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(server.base / "run" / "images") not in mounts  # the image mount went too
    assert str(server.base / "root" / "containers") not in mounts  # and every overlay
