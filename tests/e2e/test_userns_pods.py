"""Pods in their own user namespace (Kubernetes ``hostUsers: false``) through the socket."""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from sycri.api import api_pb2
from sycri.runtime import linux

from tests.e2e.test_containers_cri import container, log_of, pull, wait_state
from tests.support.pods import PodNet, pod_config, unmount_all
from tests.support.server import SycriServer

pytestmark = pytest.mark.root


@pytest.fixture
def userns_node() -> Iterator[SycriServer]:
    net = PodNet.new()
    base = Path("/tmp") / f"syuns-{secrets.token_hex(4)}"  # short: conmon socket paths
    server = SycriServer(base, flags=net.flags())
    server.start()
    try:
        yield server
    finally:
        rt = server.runtime()
        try:
            for pod in rt.ListPodSandbox(api_pb2.ListPodSandboxRequest()).items:
                rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod.id))
                rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod.id))
        except grpc.RpcError:
            pass
        server.stop()
        unmount_all(base)
        net.cleanup()
        shutil.rmtree(base, ignore_errors=True)


def userns_pod(name: str, host_id: int, size: int = 65536, **kw) -> api_pb2.PodSandboxConfig:
    cfg = pod_config(name, **kw)
    opts = cfg.linux.security_context.namespace_options.userns_options
    opts.mode = api_pb2.POD
    opts.uids.add(container_id=0, host_id=host_id, length=size)
    opts.gids.add(container_id=0, host_id=host_id, length=size)
    return cfg


def processes_in(ns_inode: int) -> list[int]:
    """Every live process in the user namespace with this nsfs inode. Zombies do not
    count: after a sycri restart the pod's init holder is an orphan, and this machine's
    PID 1 never reaps orphans (a node's init does)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z" and os.stat(f"/proc/{entry}/ns/user").st_ino == ns_inode:
                    found.append(int(entry))
            except OSError:
                continue
    return found


def test_status_claims_user_namespaces_for_every_handler(userns_node):
    st = userns_node.runtime().Status(api_pb2.StatusRequest())
    assert {h.name: h.features.user_namespaces for h in st.runtime_handlers} == {
        "": True,
        "runc": True,
    }


def test_pod_user_namespace_maps_root_and_owns_its_rootfs(userns_node, registry, tmp_path):
    server = userns_node
    rt = server.runtime()
    image = pull(server, registry)
    host_id = 65536 * random.randint(20, 200)  # kubelet hands out 64 Ki-aligned ranges
    # IPC sysctls of a userns-owned namespace are writable only by that namespace's root.
    sysctls = {"kernel.shmmni": "3000", "net.ipv4.ip_unprivileged_port_start": "80"}
    pod_cfg = userns_pod("uns", host_id, pid=api_pb2.POD, sysctls=sysctls)
    pod_cfg.log_directory = str(server.base / "pods" / "uns")
    pod = rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=pod_cfg)).pod_sandbox_id
    verbose = rt.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod, verbose=True))
    info = json.loads(verbose.info["info"])
    assert info["namespaces"]["user"] == str(server.base / "run" / "pods" / pod / "ns" / "user")
    assert info["idMappings"] == {"uids": [0, host_id, 65536], "gids": [0, host_id, 65536]}

    def run(name: str, script: str, **kw) -> tuple[str, list[str]]:
        cfg = container(name, image, ["/bin/sh", "-c", script], **kw)
        cfg.linux.security_context.namespace_options.CopyFrom(
            pod_cfg.linux.security_context.namespace_options
        )
        req = api_pb2.CreateContainerRequest(pod_sandbox_id=pod, config=cfg, sandbox_config=pod_cfg)
        cid = rt.CreateContainer(req).container_id
        rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid))
        st = wait_state(rt, cid, api_pb2.CONTAINER_EXITED)
        lines = [text for _, text in log_of(st.log_path)]
        assert st.exit_code == 0, lines
        return cid, lines

    volume = tmp_path / "volume"  # host root's, 0755: only root may write
    volume.mkdir(mode=0o755)
    (volume / "config").write_text("from the host\n")
    cid, lines = run(
        "probe",
        "cat /proc/self/uid_map /proc/self/gid_map; id -u; id -g; stat -c %u:%g /bin/busybox; "
        "echo mine > /etc/written && cat /etc/written; hostname; "
        "stat -c %u:%g /vol/config; echo out > /vol/made; "
        "cat /proc/sys/kernel/shmmni /proc/sys/net/ipv4/ip_unprivileged_port_start; "
        "ls /sys/class/net",
        mounts=[api_pb2.Mount(container_path="/vol", host_path=str(volume))],
    )
    assert [ln.split() for ln in lines[:2]] == [["0", str(host_id), "65536"]] * 2
    assert lines[2:5] == ["0", "0", "0:0"]  # the image's root files are the pod root's
    assert lines[5] == "mine"  # root can write its own root filesystem
    assert lines[6] == "uns"
    # The volume is idmapped: host root's files are the pod root's, and what the pod's
    # root writes there is host root's on disk (not the mapped host id).
    assert lines[7] == "0:0"
    assert (volume / "made").read_text() == "out\n"
    assert ((volume / "made").stat().st_uid, (volume / "made").stat().st_gid) == (0, 0)
    assert lines[8:10] == ["3000", "80"]
    assert "eth0" in lines[10:]  # sysfs of the pod's network namespace
    # On the host the new file belongs to the mapped root, not to host root.
    upper = server.base / "root" / "containers" / cid / "upper" / "etc" / "written"
    assert (upper.stat().st_uid, upper.stat().st_gid) == (host_id, host_id)

    # A restart keeps the pod (its pinned user namespace) usable.
    server.stop()
    server.start()
    rt = server.runtime()
    status = rt.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod)).status
    assert status.state == api_pb2.SANDBOX_READY
    _, lines = run("again", "cat /proc/self/uid_map")
    assert lines[0].split() == ["0", str(host_id), "65536"]

    # Removal leaves no mount, pinned namespace or process behind.
    pinned = server.base / "run" / "pods" / pod / "ns" / "user"
    ns_inode = pinned.stat().st_ino
    assert processes_in(ns_inode)  # the pod's init (a shared PID namespace)
    rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod))
    rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod))
    assert linux.mount_targets_under(server.base / "root") == []
    assert linux.mount_targets_under(server.base / "run" / "pods") == []
    assert not (server.base / "run" / "pods" / pod).exists()
    left = {p: Path(f"/proc/{p}/cmdline").read_bytes() for p in processes_in(ns_inode)}
    assert left == {}


def test_a_process_outside_the_mapping_is_refused(userns_node, registry):
    rt = userns_node.runtime()
    image = pull(userns_node, registry)
    pod_cfg = userns_pod("small", 65536 * 300, size=1000)
    pod = rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=pod_cfg)).pod_sandbox_id
    cfg = container("far", image, ["true"])
    cfg.linux.security_context.run_as_user.value = 5000
    with pytest.raises(grpc.RpcError) as err:
        rt.CreateContainer(
            api_pb2.CreateContainerRequest(pod_sandbox_id=pod, config=cfg, sandbox_config=pod_cfg)
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "user 5000 is not mapped" in err.value.details()
    assert os.listdir(userns_node.base / "root" / "containers") == []


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda o: o.uids.add(container_id=0, host_id=900000, length=10), "exactly one mapping"),
        (lambda o: o.uids[0].__setattr__("container_id", 1), "container id 0 must be mapped"),
        (lambda o: o.__setattr__("mode", api_pb2.CONTAINER), "CONTAINER is not supported"),
        (lambda o: o.__setattr__("mode", api_pb2.TARGET), "TARGET is not supported"),
        (lambda o: o.gids[0].__setattr__("host_id", 0), "host id 0"),
    ],
)
def test_bad_user_namespace_requests_are_invalid(sycri, edit, message):
    cfg = userns_pod("bad", 65536 * 10)
    edit(cfg.linux.security_context.namespace_options.userns_options)
    with pytest.raises(grpc.RpcError) as err:
        sycri.runtime().RunPodSandbox(api_pb2.RunPodSandboxRequest(config=cfg))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in err.value.details()
    assert sycri.runtime().ListPodSandbox(api_pb2.ListPodSandboxRequest()).items == []


def test_host_network_with_a_pod_user_namespace_is_invalid(sycri):
    cfg = userns_pod("hostnet", 65536 * 10, host_network=True)
    with pytest.raises(grpc.RpcError) as err:
        sycri.runtime().RunPodSandbox(api_pb2.RunPodSandboxRequest(config=cfg))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "host's network namespace" in err.value.details()
