"""Fuzzing every RPC of both CRI services through the socket (issue 17).

Requests are drawn from the service descriptors in ``sycri.api``: random messages of
each RPC's input type, near-valid ones (a working request with hostile fields merged
in), and raw bytes that may not decode at all. Every answer must be a precise status:
never UNKNOWN or INTERNAL; sycri must stay alive; nothing a request names may appear
outside sycri's own directories.

sycri runs in a network namespace of the test's own (``nsenter --net``): pods, bridges,
port mappings and pulls from random registries stay inside it, so no request reaches
the host's network. Pods are put under a cgroup parent of the test's.

``SYCRI_FUZZ_EXAMPLES`` sets the examples per test (CI: 1200, about a minute; the long
run in docs/hardening.md: more, with pytest's ``--timeout`` raised);
``SYCRI_FUZZ_REPORT=FILE`` writes the counts (RPCs sent, answers by code).
"""

from __future__ import annotations

import collections
import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sycri.api import api_pb2

from tests.support import oci
from tests.support.node import served
from tests.support.pods import pod_config
from tests.support.server import SycriServer, sycri_cmd, sycri_env

pytestmark = pytest.mark.root

EXAMPLES = int(os.environ.get("SYCRI_FUZZ_EXAMPLES", "1200"))
REPORT = os.environ.get("SYCRI_FUZZ_REPORT", "")
MARK = "fz" + secrets.token_hex(4)  # in every path the fuzzer makes up: found = leaked
CALL_TIMEOUT = 60
STREAM_TIMEOUT = 1.5
BAD_CODES = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}

METHODS: list[MethodDescriptor] = [
    m
    for name in ("RuntimeService", "ImageService")
    for m in api_pb2.DESCRIPTOR.services_by_name[name].methods
]
# Roots where a leaked file or directory named by a request would show up.
WATCHED = ("/", "/tmp", "/run", "/var/lib", "/var/log", "/var/log/pods", "/etc", "/dev/shm",
           "/root", "/var/tmp", "/opt", "/srv", "/home")  # fmt: skip

COUNTS: collections.Counter[str] = collections.Counter()
SENT: collections.Counter[str] = collections.Counter()


@dataclass
class Target:
    server: SycriServer
    image: str
    image_id: str
    pod: str
    pod_cfg: api_pb2.PodSandboxConfig
    container: str
    cgroup_parent: str

    def strings(self) -> list[str]:
        """Values worth trying in any string field: real ids, their prefixes, paths that
        climb out, names with the marker."""
        return [
            self.pod, self.pod[:6], self.container, self.container[:12], self.image,
            self.image_id, self.image_id[:19], "", " ", "/", ".", "..", "../../../..",
            f"../../{MARK}", f"/tmp/{MARK}", f"/run/{MARK}/x", f"/var/lib/{MARK}",
            f"/etc/{MARK}.conf", f"/dev/shm/{MARK}", f"{MARK}/../../../{MARK}",
            f"/var/log/pods/{MARK}", f"/{MARK}", "\u00e9\u2603", "a" * 300, "-1",
            "sh", "true", "/bin/sh", "busybox", "docker://busybox", "127.0.0.1:1/x/y:z",
            "sha256:" + "0" * 64, "memory.max", "cpu.weight", "net.ipv4.ip_forward",
            "kernel.shmmax", "unlimited", "0-1", "nofile=1:2", "rtprio=99",
            "localhost/" + MARK, "runtime/default", "unconfined", "%s%n", "${HOME}",
        ]  # fmt: skip


INTS = [0, 1, -1, 2, 7, 100, 1000, 65535, 65536, 2**31 - 1, -(2**31), 2**32, 2**62, -(2**62),
        2**63 - 1, -(2**63)]  # fmt: skip


def _int_range(fd: FieldDescriptor) -> tuple[int, int]:
    t = fd.type
    if t in (fd.TYPE_INT32, fd.TYPE_SINT32, fd.TYPE_SFIXED32, fd.TYPE_ENUM):
        return -(2**31), 2**31 - 1
    if t in (fd.TYPE_UINT32, fd.TYPE_FIXED32):
        return 0, 2**32 - 1
    if t in (fd.TYPE_UINT64, fd.TYPE_FIXED64):
        return 0, 2**64 - 1
    return -(2**63), 2**63 - 1


def _scalar(fd: FieldDescriptor, target: Target) -> st.SearchStrategy:
    if fd.name == "timeout":
        # A grace period or exec timeout is honoured (a stop of a process that ignores
        # SIGTERM waits it out): keep the waits short, the hostile values hostile.
        return st.sampled_from([0, 1, 2, -1, -(2**31), -(2**62)])
    if fd.type == fd.TYPE_STRING:
        return st.one_of(st.sampled_from(target.strings()), st.text(max_size=24))
    if fd.type == fd.TYPE_BYTES:
        return st.one_of(st.binary(max_size=24), st.sampled_from([b"", b"\x00", MARK.encode()]))
    if fd.type == fd.TYPE_BOOL:
        return st.booleans()
    if fd.type in (fd.TYPE_FLOAT, fd.TYPE_DOUBLE):
        return st.floats(allow_nan=True, allow_infinity=True, width=32)
    lo, hi = _int_range(fd)
    ints = st.one_of(st.sampled_from([i for i in INTS if lo <= i <= hi]), st.integers(lo, hi))
    if fd.type == fd.TYPE_ENUM:
        return st.one_of(st.sampled_from([v.number for v in fd.enum_type.values]), ints)
    return ints


@st.composite
def messages(draw, desc: Descriptor, target: Target, depth: int = 0) -> Message:
    """A message of type ``desc`` with a random subset of its fields set, nested a few
    levels deep."""
    msg = message_factory.GetMessageClass(desc)()
    for fd in desc.fields:
        if not draw(st.booleans()):
            continue
        if fd.type == fd.TYPE_MESSAGE and fd.message_type.GetOptions().map_entry:
            key_fd, val_fd = (
                fd.message_type.fields_by_name["key"],
                fd.message_type.fields_by_name["value"],
            )
            for _ in range(draw(st.integers(0, 3))):
                key = draw(_scalar(key_fd, target))
                field = getattr(msg, fd.name)
                if val_fd.type == val_fd.TYPE_MESSAGE:
                    if depth < 3:
                        field[key].CopyFrom(draw(messages(val_fd.message_type, target, depth + 1)))
                else:
                    field[key] = draw(_scalar(val_fd, target))
        elif fd.type == fd.TYPE_MESSAGE:
            if depth >= 4:
                continue
            if fd.is_repeated:
                for _ in range(draw(st.integers(0, 2))):
                    getattr(msg, fd.name).add().CopyFrom(
                        draw(messages(fd.message_type, target, depth + 1))
                    )
            else:
                getattr(msg, fd.name).CopyFrom(draw(messages(fd.message_type, target, depth + 1)))
        elif fd.is_repeated:
            getattr(msg, fd.name).extend(draw(st.lists(_scalar(fd, target), max_size=3)))
        else:
            setattr(msg, fd.name, draw(_scalar(fd, target)))
    return msg


def _template(md: MethodDescriptor, t: Target) -> Message | None:
    """A request that works (or nearly): the fuzzer merges hostile fields into it."""
    cfg = api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name="fz"),
        image=api_pb2.ImageSpec(image=t.image),
        command=["/bin/sh", "-c", "sleep 5"],
    )
    by_name: dict[str, Message] = {
        "RunPodSandbox": api_pb2.RunPodSandboxRequest(config=t.pod_cfg),
        "CreateContainer": api_pb2.CreateContainerRequest(
            pod_sandbox_id=t.pod, config=cfg, sandbox_config=t.pod_cfg
        ),
        "ExecSync": api_pb2.ExecSyncRequest(container_id=t.container, cmd=["true"], timeout=5),
        "UpdateContainerResources": api_pb2.UpdateContainerResourcesRequest(
            container_id=t.container, linux=api_pb2.LinuxContainerResources(cpu_shares=512)
        ),
        "Exec": api_pb2.ExecRequest(container_id=t.container, cmd=["sh"], stdout=True),
        "Attach": api_pb2.AttachRequest(container_id=t.container, stdout=True),
        "PortForward": api_pb2.PortForwardRequest(pod_sandbox_id=t.pod, port=[80]),
        "PullImage": api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=t.image)),
        "ContainerStatus": api_pb2.ContainerStatusRequest(container_id=t.container, verbose=True),
        "PodSandboxStatus": api_pb2.PodSandboxStatusRequest(pod_sandbox_id=t.pod, verbose=True),
        "ImageStatus": api_pb2.ImageStatusRequest(
            image=api_pb2.ImageSpec(image=t.image), verbose=True
        ),
    }
    return by_name.get(md.name)


def _confine(md: MethodDescriptor, msg: Message, t: Target) -> Message:
    """Keep what the test must own its own: pods under the test's cgroup parent."""
    if md.name == "RunPodSandbox":
        msg.config.linux.cgroup_parent = t.cgroup_parent
    if md.name == "CreateContainer":
        msg.sandbox_config.linux.cgroup_parent = t.cgroup_parent
    return msg


def _call(t: Target, md: MethodDescriptor, payload: bytes) -> grpc.StatusCode:
    path = f"/{md.containing_service.full_name}/{md.name}"
    ch = t.server.channel()
    ident = dict(request_serializer=None, response_deserializer=None)
    SENT[md.name] += 1
    try:
        if md.server_streaming:
            stream = ch.unary_stream(path, **ident)(payload, timeout=STREAM_TIMEOUT)
            for _ in stream:
                pass
        else:
            ch.unary_unary(path, **ident)(payload, timeout=CALL_TIMEOUT)
        code, details = grpc.StatusCode.OK, ""
    except grpc.RpcError as exc:
        code, details = exc.code(), exc.details() or ""
    if code == grpc.StatusCode.DEADLINE_EXCEEDED and md.server_streaming:
        pass  # a stream that keeps streaming (events) until the client's deadline: fine
    elif code == grpc.StatusCode.DEADLINE_EXCEEDED and details == "Deadline Exceeded":
        raise AssertionError(f"{md.name} hung (no answer in {CALL_TIMEOUT}s)")
    COUNTS[code.name] += 1
    assert code not in BAD_CODES, f"{md.name}: {code.name}: {details}"
    return code


def _alive(t: Target) -> None:
    assert t.server.proc is not None and t.server.proc.poll() is None, t.server.log()
    t.server.runtime().Version(api_pb2.VersionRequest(), timeout=30)


def _ensure(t: Target) -> None:
    """The fuzzer may stop or remove the pod or container it aims at: bring them back,
    so later requests still reach deep (unless it removed the image, which cannot be
    pulled again in here)."""
    rt, images = t.server.runtime(), t.server.images()
    spec = api_pb2.ImageSpec(image=t.image_id)
    if not images.ImageStatus(api_pb2.ImageStatusRequest(image=spec), timeout=30).image.id:
        return
    try:
        pod = rt.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id=t.pod), timeout=30)
        ready = pod.status.state == api_pb2.SANDBOX_READY
    except grpc.RpcError:
        ready = False
    if not ready:  # stopped (or gone): kubelet would remove it and run a new one
        rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=t.pod), timeout=60)
        rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=t.pod), timeout=60)
        t.pod = rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=t.pod_cfg)).pod_sandbox_id
    try:
        req = api_pb2.ContainerStatusRequest(container_id=t.container)
        state = rt.ContainerStatus(req, timeout=30).status.state
    except grpc.RpcError:
        state = None
    if not ready or state != api_pb2.CONTAINER_RUNNING:
        t.container = _start_target(t.server, t.pod, t.pod_cfg, t.image)


def _start_target(server: SycriServer, pod: str, pod_cfg, image: str) -> str:
    rt = server.runtime()
    cfg = api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name="target", attempt=secrets.randbelow(2**31)),
        image=api_pb2.ImageSpec(image=image),
        command=["/bin/sh", "-c", "sleep 3600"],
    )
    req = api_pb2.CreateContainerRequest(pod_sandbox_id=pod, config=cfg, sandbox_config=pod_cfg)
    cid = rt.CreateContainer(req).container_id
    rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid))
    return cid


def _leaked() -> list[str]:
    found = []
    for root in WATCHED:
        try:
            names = os.listdir(root)
        except OSError:
            continue
        found += [os.path.join(root, n) for n in names if MARK in n]
    return found


@pytest.fixture(scope="module")
def target(registry) -> Iterator[Target]:
    tag = secrets.token_hex(4)
    base = Path("/tmp") / f"syfz-{tag}"  # short: conmon socket paths
    netns = f"syfz-{tag}"
    cgroup_parent = f"syfz-{tag}"
    repo = "fuzz/" + tag
    oci.push(registry, repo, "v1", oci.busybox_image())
    image = f"{registry.host}/{repo}:v1"
    # Pulled before sycri moves into its namespace, where no registry can be reached.
    pulled = subprocess.run(
        sycri_cmd("pull", "--root-dir", str(base / "root"), "--images-registries-conf",
                  "/dev/null", image),
        env=sycri_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert pulled.returncode == 0, pulled.stderr
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
        prefix = ["nsenter", f"--net=/run/netns/{netns}", "--"]
        with served(base, forgiving=True, cgroup_root=cgroup_parent, prefix=prefix) as (
            server,
            _net,
        ):
            rt = server.runtime()
            pod_cfg = pod_config("fz", cgroup_parent=cgroup_parent)
            pod_cfg.log_directory = str(base / "pods" / "fz")
            pod = rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=pod_cfg)).pod_sandbox_id
            cid = _start_target(server, pod, pod_cfg, image)
            image_id = (
                server.images()
                .ImageStatus(api_pb2.ImageStatusRequest(image=api_pb2.ImageSpec(image=image)))
                .image.id
            )
            yield Target(server, image, image_id, pod, pod_cfg, cid, cgroup_parent)
    finally:
        subprocess.run(["ip", "netns", "del", netns], capture_output=True)
        if REPORT:
            Path(REPORT).write_text(
                json.dumps({"sent": sum(SENT.values()), "by_rpc": dict(SENT),
                            "answers": dict(COUNTS), "examples_per_test": EXAMPLES}, indent=1)
            )  # fmt: skip
        print(f"\nfuzz: {sum(SENT.values())} RPCs sent; answers {dict(COUNTS)}")


FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)


@FUZZ
@given(data=st.data())
def test_random_and_near_valid_requests_get_precise_answers(target: Target, data):
    md = data.draw(st.sampled_from(METHODS), label="rpc")
    hostile = data.draw(messages(md.input_type, target), label="fields")
    base = _template(md, target)
    if base is not None and data.draw(st.booleans(), label="near-valid"):
        msg = type(base)()
        msg.CopyFrom(base)
        msg.MergeFrom(hostile)
    else:
        msg = hostile
    _call(target, md, _confine(md, msg, target).SerializeToString())
    _alive(target)
    _ensure(target)


@FUZZ
@given(data=st.data())
def test_raw_bytes_get_precise_answers(target: Target, data):
    md = data.draw(st.sampled_from(METHODS), label="rpc")
    raw = data.draw(st.binary(max_size=256), label="bytes")
    if md.name in ("RunPodSandbox", "CreateContainer"):
        try:
            decoded = message_factory.GetMessageClass(md.input_type).FromString(raw)
        except Exception:  # undecodable: sent as it is
            pass
        else:  # it decodes: pods still go under the test's cgroup parent
            raw = _confine(md, decoded, target).SerializeToString()
    _call(target, md, raw)
    _alive(target)
    _ensure(target)


def test_nothing_named_by_a_request_exists_outside_sycris_dirs(target: Target):
    """Runs after the fuzzing above (pytest keeps file order): the marker every made-up
    path carries is nowhere outside sycri's base."""
    _alive(target)
    assert _leaked() == []
