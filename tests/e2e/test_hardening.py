"""Hostile requests through the socket get a precise answer and change nothing (issue 17).

One node for the module: a pulled busybox image, a pod, and a running container the
tests exec into and update.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from sycri.api import api_pb2, api_pb2_grpc

from tests.support import oci
from tests.support.node import served
from tests.support.pods import pod_config
from tests.support.server import SycriServer

pytestmark = pytest.mark.root

BAD = grpc.StatusCode.INVALID_ARGUMENT
MiB = 1024 * 1024


@dataclass
class Node:
    server: SycriServer
    image: str
    pod: str
    pod_cfg: api_pb2.PodSandboxConfig
    sleeper: str

    @property
    def rt(self) -> api_pb2_grpc.RuntimeServiceStub:
        return self.server.runtime()

    def config(self, name: str, args: list[str], **kw) -> api_pb2.ContainerConfig:
        cfg = api_pb2.ContainerConfig(
            metadata=api_pb2.ContainerMetadata(name=name),
            image=api_pb2.ImageSpec(image=self.image),
            command=["/bin/sh", "-c"],
            args=args,
            log_path=f"{name}.log",
        )
        for k, v in kw.items():
            getattr(cfg, k).CopyFrom(v) if hasattr(v, "DESCRIPTOR") else getattr(cfg, k).extend(v)
        return cfg

    def create(self, cfg: api_pb2.ContainerConfig, pod: str = "", pod_cfg=None) -> str:
        req = api_pb2.CreateContainerRequest(
            pod_sandbox_id=pod or self.pod, config=cfg, sandbox_config=pod_cfg or self.pod_cfg
        )
        return self.rt.CreateContainer(req).container_id

    def state(self, cid: str) -> int:
        req = api_pb2.ContainerStatusRequest(container_id=cid)
        return self.rt.ContainerStatus(req).status.state

    def run_pod(self, cfg: api_pb2.PodSandboxConfig) -> str:
        return self.rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=cfg)).pod_sandbox_id


@pytest.fixture(scope="module")
def node(registry) -> Iterator[Node]:
    base = Path("/tmp") / f"syhard-{secrets.token_hex(4)}"  # short: conmon socket paths
    with served(base, forgiving=True) as (server, _net):
        repo = "hard/" + secrets.token_hex(4)
        oci.push(registry, repo, "v1", oci.busybox_image())
        image = f"{registry.host}/{repo}:v1"
        server.images().PullImage(api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=image)))
        pod_cfg = pod_config("hard")
        pod_cfg.log_directory = str(base / "pods" / "hard")
        n = Node(server, image, "", pod_cfg, "")
        n.pod = n.run_pod(pod_cfg)
        n.sleeper = n.create(n.config("sleeper", ["sleep 3600"]))
        n.rt.StartContainer(api_pb2.StartContainerRequest(container_id=n.sleeper))
        yield n


def _code(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code(), err.value.details()


# --- 1: undecodable requests ------------------------------------------------------------


NOT_UTF8 = b"\x0a\x02\xc3\x28"  # field 1, a string: bytes that are not UTF-8


@pytest.mark.parametrize(
    "method, stream, raw",
    [("/runtime.v1.RuntimeService/Version", False, b"\xff\xff\xff\xff"),
     ("/runtime.v1.RuntimeService/Version", False, b"\x0a\x05ab"),  # truncated
     ("/runtime.v1.RuntimeService/Version", False, NOT_UTF8),
     ("/runtime.v1.RuntimeService/RunPodSandbox", False, b"\x0a\xff"),
     # config.metadata.name
     ("/runtime.v1.RuntimeService/RunPodSandbox", False, b"\x0a\x06\x0a\x04" + NOT_UTF8),
     ("/runtime.v1.RuntimeService/GetContainerEvents", True, b"\xff\xff\xff\xff"),
     ("/runtime.v1.ImageService/PullImage", False, b"\x0a\x04" + NOT_UTF8)],  # image.image
)  # fmt: skip
def test_undecodable_request_is_invalid_argument_naming_the_rpc(sycri, method, stream, raw):
    ident = dict(request_serializer=None, response_deserializer=None)
    ch = sycri.channel()
    call = ch.unary_stream(method, **ident) if stream else ch.unary_unary(method, **ident)

    def send():
        out = call(raw, timeout=10)
        return list(out) if stream else out

    code, details = _code(send)
    assert code == BAD, details
    assert method.rsplit("/", 1)[1] in details
    assert sycri.runtime().Version(api_pb2.VersionRequest()).runtime_name == "sycri"


# --- 2: fields that would reach the OS ---------------------------------------------------


def test_nul_bytes_are_invalid_argument_naming_the_field(node: Node):
    def exec_sync(cmd):
        return node.rt.ExecSync(api_pb2.ExecSyncRequest(container_id=node.sleeper, cmd=cmd))

    code, details = _code(lambda: exec_sync(["echo", "a\x00b"]))
    assert (code, "cmd[1]" in details) == (BAD, True), details
    for cfg, field in [
        (node.config("nul-args", ["echo a\x00b"]), "config.args[0]"),
        (node.config("nul-cwd", ["true"]), "config.working_dir"),
        (
            node.config("nul-mount", ["true"], mounts=[api_pb2.Mount(
                container_path="/m", host_path="/tmp\x00x")]),
            "config.mounts[0].host_path",
        ),
    ]:  # fmt: skip
        if field == "config.working_dir":
            cfg.working_dir = "/tmp\x00x"
        code, details = _code(lambda cfg=cfg: node.create(cfg))
        assert (code, field in details) == (BAD, True), details


@pytest.mark.parametrize("name", ["\u0080", "a b", "tab\there", "x/y", "é"])
def test_container_names_that_are_no_names_are_invalid_argument(node: Node, name):
    """Found by the fuzz test: a control character in the name reached conmon, which
    failed, and the answer was INTERNAL."""
    code, details = _code(lambda: node.create(node.config(name, ["true"])))
    assert (code, "config.metadata.name" in details) == (BAD, True), details
    assert node.create(node.config(f"ok-{secrets.token_hex(3)}", ["true"]))  # still serves


def test_argv_longer_than_the_kernel_takes_is_refused_before_running(node: Node):
    big = "x" * 200_000  # over MAX_ARG_STRLEN (128 KiB): the kernel's E2BIG
    many = ["y" * 100_000] * 24  # 2.4 MB: over ARG_MAX (2 MiB)
    for cmd in (["echo", big], ["echo", *many]):
        code, details = _code(
            lambda cmd=cmd: node.rt.ExecSync(
                api_pb2.ExecSyncRequest(container_id=node.sleeper, cmd=cmd, timeout=10)
            )
        )
        assert code == BAD and "Argument list too long" in details, details
    code, details = _code(lambda: node.create(node.config("huge-args", many)))
    assert code == BAD and "Argument list too long" in details, details


def test_non_ascii_registry_credentials_are_invalid_argument(node: Node):
    for auth, field in [
        (api_pb2.AuthConfig(username="jürgen", password="pw"), "username"),
        (api_pb2.AuthConfig(username="u", password="pässword"), "password"),
        (api_pb2.AuthConfig(registry_token="tok\r\nX-Evil: 1"), "registry_token"),
    ]:
        req = api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=node.image), auth=auth)
        code, details = _code(lambda req=req: node.server.images().PullImage(req))
        assert (code, f"AuthConfig.{field}" in details) == (BAD, True), details


@pytest.mark.parametrize(
    "resources, field",
    [(dict(cpu_quota=500), "cpu_quota"),
     (dict(cpu_quota=-7), "cpu_quota"),
     (dict(cpu_quota=1 << 50), "cpu_quota"),
     (dict(cpu_period=5_000_000), "cpu_period"),
     (dict(cpu_shares=10_000_000), "cpu_shares"),
     (dict(cpuset_cpus="3-1"), "cpuset_cpus"),
     (dict(cpuset_cpus="0-"), "cpuset_cpus"),
     (dict(cpuset_cpus="4000"), "cpuset_cpus"),
     (dict(cpuset_mems="77"), "cpuset_mems"),
     (dict(memory_limit_in_bytes=4096), "memory_limit_in_bytes"),
     (dict(memory_swap_limit_in_bytes=64 * MiB), "memory_swap_limit_in_bytes"),
     (dict(oom_score_adj=5000), "oom_score_adj"),
     (dict(unified={"memory.high": "1\n2"}), "unified"),
     (dict(unified={"nosuch.max": "1"}), "unified")],
)  # fmt: skip
def test_resources_runc_refuses_are_invalid_argument(node: Node, resources, field):
    res = api_pb2.LinuxContainerResources(**resources)
    if field != "oom_score_adj":  # oom_score_adj is set at create only
        code, details = _code(
            lambda: node.rt.UpdateContainerResources(
                api_pb2.UpdateContainerResourcesRequest(container_id=node.sleeper, linux=res)
            )
        )
        assert code == BAD and field in details, details
        assert node.state(node.sleeper) == api_pb2.CONTAINER_RUNNING
    cfg = node.config("res-" + secrets.token_hex(3), ["true"])
    cfg.linux.resources.CopyFrom(res)
    code, details = _code(lambda: node.create(cfg))
    assert code == BAD and field in details, details


# --- 3: rlimits are the node's ------------------------------------------------------------


@pytest.mark.parametrize("ulimits", ["rtprio=99", "nice=40", "memlock=-1"])
def test_pod_cannot_raise_rlimits(node: Node, ulimits):
    pod_cfg = pod_config("ul-" + secrets.token_hex(3), annotations={"sycri.io/ulimits": ulimits})
    pod = node.run_pod(pod_cfg)
    try:
        code, details = _code(lambda: node.create(node.config("c", ["true"]), pod, pod_cfg))
        assert code == BAD and ulimits.split("=")[0] in details, details
    finally:
        node.rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod))
        node.rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod))


def test_pod_can_lower_rlimits(node: Node):
    pod_cfg = pod_config("low", annotations={"sycri.io/ulimits": "nofile=512:1024"})
    pod = node.run_pod(pod_cfg)
    try:
        cid = node.create(node.config("c", ["sleep 3600"]), pod, pod_cfg)
        node.rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid))
        # The container's own process (what runc set at start; runc's exec processes
        # may see the soft limit raised by runc's Go runtime).
        out = node.rt.ExecSync(
            api_pb2.ExecSyncRequest(
                container_id=cid, cmd=["grep", "Max open files", "/proc/1/limits"], timeout=10
            )
        )
        assert out.stdout.split()[3:5] == [b"512", b"1024"], out
    finally:
        node.rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod))
        node.rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod))


# --- 6: ExecSync output ---------------------------------------------------------------


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {key} in /proc/{pid}/status")


def test_exec_sync_of_endless_output_keeps_sycris_memory_bounded(node: Node):
    """A probe like ``yes``: sycri reads and drops what is over the limit as it comes."""
    pid = node.server.proc.pid
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset the peak (VmHWM) to now
    before = _status_kib(pid, "VmRSS")
    code, details = _code(
        lambda: node.rt.ExecSync(
            api_pb2.ExecSyncRequest(container_id=node.sleeper, cmd=["cat", "/dev/zero"], timeout=3),
            timeout=60,
        )
    )
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED, details
    peak = _status_kib(pid, "VmHWM")
    # Two 8 MiB buffers and their copies at most; unbounded, it is gigabytes.
    assert (peak - before) * 1024 < 96 * MiB, (before, peak)


def test_exec_sync_output_is_cut_at_the_limit_and_fits_a_reply(node: Node):
    ch = grpc.insecure_channel(
        node.server.endpoint, options=[("grpc.max_receive_message_length", 16 * MiB)]
    )
    try:
        rt = api_pb2_grpc.RuntimeServiceStub(ch)
        cmd = ["sh", "-c", "head -c 20000000 /dev/zero; head -c 20000000 /dev/zero >&2; exit 3"]
        out = rt.ExecSync(
            api_pb2.ExecSyncRequest(container_id=node.sleeper, cmd=cmd, timeout=60), timeout=120
        )
    finally:
        ch.close()
    assert out.exit_code == 3
    assert 0 < len(out.stdout) < 8 * MiB and set(out.stdout) == {0}
    assert len(out.stderr) == len(out.stdout)


# --- 7: StopContainer of a container never started ------------------------------------


def test_a_created_container_refuses_exec_and_attach_until_started(node: Node):
    cid = node.create(node.config("not-yet", ["exec sleep 600"]))
    calls = {
        "ExecSync": lambda: node.rt.ExecSync(
            api_pb2.ExecSyncRequest(container_id=cid, cmd=["true"], timeout=5)
        ),
        "Exec": lambda: node.rt.Exec(
            api_pb2.ExecRequest(container_id=cid, cmd=["true"], stdout=True)
        ),
        "Attach": lambda: node.rt.Attach(api_pb2.AttachRequest(container_id=cid, stdout=True)),
    }
    for name, call in calls.items():
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION, name
        assert cid in (err.value.details() or ""), name
    node.rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid))
    assert node.rt.Exec(api_pb2.ExecRequest(container_id=cid, cmd=["true"], stdout=True)).url
    assert node.rt.Attach(api_pb2.AttachRequest(container_id=cid, stdout=True)).url


def test_stop_of_a_never_started_container_leaves_it_created(node: Node):
    cid = node.create(node.config("never-started", ["echo ran"]))
    node.rt.StopContainer(api_pb2.StopContainerRequest(container_id=cid, timeout=5))
    st = node.rt.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=cid)).status
    assert (st.state, st.reason, st.finished_at) == (api_pb2.CONTAINER_CREATED, "", 0)
    node.rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid))  # still startable
    deadline = time.monotonic() + 30
    while node.state(cid) != api_pb2.CONTAINER_EXITED:
        assert time.monotonic() < deadline, "the started container never exited"
        time.sleep(0.05)
