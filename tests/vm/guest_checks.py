"""cgroup v2 + systemd checks, run inside the VM guest only (``tests/vm/guest_run.sh``;
the host's ``tests/vm/test_cgroup_v2.py`` reports each as a test of its own).

A real sycri through its socket, pods with kubelet's cgroup parents, the kernel's v2
files and systemd's units read back.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sycri.api import api_pb2

from tests.support import oci, workload
from tests.support.node import served
from tests.support.pods import pod_config

CG = Path("/sys/fs/cgroup")
MiB = 1024 * 1024
DRIVERS = ("systemd", "cgroupfs")
START = 180.0  # sycri's start under TCG emulation on a loaded 2-core host


def parent_for(driver: str, uid: str) -> str:
    """The pod cgroup parent kubelet gives a burstable pod with each driver."""
    u = uid.replace("-", "_")
    if driver == "systemd":
        return f"kubepods-burstable-pod{u}.slice"
    return f"/kubepods/burstable/pod{u}"


def cgroup_of(pid: int) -> str:
    """The v2 cgroup path of a process (``0::/...``)."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return line[3:]
    raise AssertionError(f"no v2 cgroup for {pid}")


def units(pattern: str) -> list[str]:
    out = subprocess.run(
        ["systemctl", "list-units", "--all", "--plain", "--no-legend", pattern],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def wait_for(cond, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


@pytest.fixture(scope="module")
def image(registry) -> Iterator[str]:
    repo = "vm/" + secrets.token_hex(4)
    oci.push(registry, repo, "v1", oci.busybox_image())
    yield f"{registry.host}/{repo}:v1"


@pytest.fixture(params=DRIVERS)
def node(request, image) -> Iterator[tuple[workload.Node, str]]:
    base = Path("/tmp") / f"syvm-{secrets.token_hex(4)}"
    env = {"SYCRI_CGROUP_DRIVER": request.param}
    with served(base, env=env, forgiving=True, start_timeout=START) as (server, net):
        n = workload.Node(server, net)
        n.pull(image)
        yield n, request.param
    if request.param == "cgroupfs":
        for top in ("kubepods",):
            if (CG / top).is_dir():
                for d in sorted((CG / top).rglob("*"), key=lambda p: -len(str(p))):
                    if d.is_dir():
                        d.rmdir()
                (CG / top).rmdir()


def run_pod(n: workload.Node, driver: str, *, memory: int = 256 * MiB, quota: int = 100000):
    uid = secrets.token_hex(8)
    cfg = pod_config("vm", uid=uid, pid=api_pb2.POD, cgroup_parent=parent_for(driver, uid))
    cfg.log_directory = str(n.server.base / "pods" / uid)
    cfg.linux.resources.memory_limit_in_bytes = memory
    cfg.linux.resources.cpu_quota = quota
    cfg.linux.resources.cpu_period = 100000
    pod_id = n.rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
    return (pod_id, cfg), uid


def container(n: workload.Node, pod, name: str, image: str, script: str, **res) -> str:
    cfg = api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name=name),
        image=api_pb2.ImageSpec(image=image),
        command=["/bin/sh", "-c"],
        args=[script],
        log_path=f"{name}/0.log",
    )
    for k, v in res.items():
        setattr(cfg.linux.resources, k, v)
    req = api_pb2.CreateContainerRequest(pod_sandbox_id=pod[0], config=cfg, sandbox_config=pod[1])
    cid = n.rt.CreateContainer(req).container_id
    n.start(cid)
    return cid


def info(n: workload.Node, cid: str) -> dict:
    req = api_pb2.ContainerStatusRequest(container_id=cid, verbose=True)
    return json.loads(n.rt.ContainerStatus(req).info["info"])


def pod_dir(driver: str, cfg) -> Path:
    parent = cfg.linux.cgroup_parent
    if driver == "systemd":
        parts = parent[: -len(".slice")].split("-")
        return CG.joinpath(*("-".join(parts[: i + 1]) + ".slice" for i in range(len(parts))))
    return CG / parent.strip("/")


def test_auto_picks_systemd(tmp_path):
    with served(Path("/tmp") / f"syvm-{secrets.token_hex(4)}", start_timeout=START) as (server, _):
        cfg = server.runtime().RuntimeConfig(api_pb2.RuntimeConfigRequest())
        assert cfg.linux.cgroup_driver == api_pb2.SYSTEMD


def test_pod_and_container_run_with_limits(node, image):
    n, driver = node
    pod, _ = run_pod(n, driver)
    cid = container(
        n, pod, "web", image, "sleep 3600",
        memory_limit_in_bytes=64 * MiB, cpu_quota=50000, cpu_period=100000, cpu_shares=512,
    )  # fmt: skip
    st = n.rt.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=cid)).status
    assert st.state == api_pb2.CONTAINER_RUNNING
    pid = info(n, cid)["pid"]
    cg = cgroup_of(pid)
    pdir = pod_dir(driver, pod[1])
    # The container's cgroup is a child of the pod's, named as kubelet expects.
    assert (CG / cg.strip("/")).parent == pdir, cg
    if driver == "systemd":
        assert cg.endswith(f"/sycri-{cid}.scope"), cg
        assert units(f"sycri-{cid}.scope") == [f"sycri-{cid}.scope"]
        assert units(pod[1].linux.cgroup_parent) == [pod[1].linux.cgroup_parent]
    cdir = CG / cg.strip("/")
    assert (cdir / "memory.max").read_text().split() == [str(64 * MiB)]
    assert (cdir / "cpu.max").read_text().split() == ["50000", "100000"]
    assert (pdir / "memory.max").read_text().split() == [str(256 * MiB)]
    assert (pdir / "cpu.max").read_text().split() == ["100000", "100000"]
    assert int((cdir / "pids.current").read_text()) >= 1
    # Nothing lives in the pod's own cgroup: the init has a leaf, conmon one of its own.
    assert (pdir / "cgroup.procs").read_text().split() == []
    pinfo = json.loads(
        n.rt.PodSandboxStatus(
            api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod[0], verbose=True)
        ).info["info"]
    )
    init_cg = cgroup_of(pinfo["pid"])
    assert Path(CG / init_cg.strip("/")).parent == pdir
    assert Path(init_cg).name.startswith(f"sycri-init-{pod[0]}"), init_cg
    conmon = [
        int(pid)
        for procs in pdir.rglob("cgroup.procs")
        for pid in procs.read_text().split()
        if Path(f"/proc/{pid}/comm").exists()
        and Path(f"/proc/{pid}/comm").read_text().strip() == "conmon"
    ]
    assert conmon, "no conmon in the pod's cgroup tree"
    assert Path(cgroup_of(conmon[0])).name.startswith(f"sycri-conmon-{cid}")


def test_stats_follow_the_v2_files(node, image):
    n, driver = node
    pod, _ = run_pod(n, driver)
    cid = container(
        n, pod, "busy", image, "head -c 20000000 /dev/zero | md5sum; sleep 3600",
        memory_limit_in_bytes=128 * MiB,
    )  # fmt: skip
    cdir = CG / cgroup_of(info(n, cid)["pid"]).strip("/")

    def busy_done():
        usage = int(
            next(line for line in (cdir / "cpu.stat").read_text().splitlines()
                 if line.startswith("usage_usec")).split()[1]
        )  # fmt: skip
        return usage > 0 and usage

    wait_for(busy_done, "no CPU time in cpu.stat")
    s = n.rt.ContainerStats(api_pb2.ContainerStatsRequest(container_id=cid)).stats
    after = busy_done()
    current = int((cdir / "memory.current").read_text())
    assert s.cpu.usage_core_nano_seconds.value > 0
    assert s.cpu.usage_core_nano_seconds.value <= after * 1000
    assert 0 < s.memory.working_set_bytes.value <= max(current, s.memory.usage_bytes.value)
    ps = n.rt.PodSandboxStats(api_pb2.PodSandboxStatsRequest(pod_sandbox_id=pod[0])).stats
    assert ps.linux.cpu.usage_core_nano_seconds.value >= s.cpu.usage_core_nano_seconds.value
    assert ps.linux.memory.working_set_bytes.value > 0


def test_oom_killed_from_memory_events(node, image):
    n, driver = node
    pod, _ = run_pod(n, driver)
    cid = container(
        n, pod, "hog", image, "tail /dev/zero",
        memory_limit_in_bytes=workload.OOM_LIMIT, memory_swap_limit_in_bytes=workload.OOM_LIMIT,
    )  # fmt: skip
    assert n.wait_exited(cid).reason == "OOMKilled"


def test_update_container_and_pod_resources(node, image):
    n, driver = node
    pod, _ = run_pod(n, driver)
    cid = container(n, pod, "web", image, "sleep 3600", memory_limit_in_bytes=64 * MiB)
    cdir = CG / cgroup_of(info(n, cid)["pid"]).strip("/")
    n.rt.UpdateContainerResources(
        api_pb2.UpdateContainerResourcesRequest(
            container_id=cid,
            linux=api_pb2.LinuxContainerResources(
                memory_limit_in_bytes=96 * MiB, cpu_quota=20000, cpu_period=100000
            ),
        )
    )
    assert (cdir / "memory.max").read_text().split() == [str(96 * MiB)]
    assert (cdir / "cpu.max").read_text().split() == ["20000", "100000"]
    n.rt.UpdatePodSandboxResources(
        api_pb2.UpdatePodSandboxResourcesRequest(
            pod_sandbox_id=pod[0],
            resources=api_pb2.LinuxContainerResources(
                memory_limit_in_bytes=512 * MiB, cpu_quota=200000, cpu_period=100000
            ),
        )
    )
    pdir = pod_dir(driver, pod[1])
    assert (pdir / "memory.max").read_text().split() == [str(512 * MiB)]
    assert (pdir / "cpu.max").read_text().split() == ["200000", "100000"]


def test_hugetlb_limits(node, image):
    n, driver = node
    assert "hugetlb" in (CG / "cgroup.controllers").read_text().split()
    pod, _ = run_pod(n, driver)
    cfg_limit = api_pb2.HugepageLimit(page_size="2MB", limit=4 * MiB)
    c = api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name="huge"),
        image=api_pb2.ImageSpec(image=image),
        command=["/bin/sh", "-c"],
        args=["sleep 3600"],
        log_path="huge/0.log",
    )
    c.linux.resources.hugepage_limits.append(cfg_limit)
    req = api_pb2.CreateContainerRequest(pod_sandbox_id=pod[0], config=c, sandbox_config=pod[1])
    cid = n.rt.CreateContainer(req).container_id
    n.start(cid)
    cdir = CG / cgroup_of(info(n, cid)["pid"]).strip("/")
    assert (cdir / "hugetlb.2MB.max").read_text().split() == [str(4 * MiB)]


def test_removal_leaves_no_unit_or_cgroup(node, image):
    n, driver = node
    pod, uid = run_pod(n, driver)
    cid = container(n, pod, "web", image, "sleep 3600")
    pdir = pod_dir(driver, pod[1])
    assert pdir.is_dir()
    n.remove_pod(pod[0])
    assert not pdir.exists()
    if driver == "systemd":
        assert units(f"*{uid}*") == []
        assert units(f"*{cid}*") == []
        assert units(f"*{pod[0]}*") == []


def test_kill_9_and_restart_recovery(image):
    base = Path("/tmp") / f"syvm-{secrets.token_hex(4)}"
    env = {"SYCRI_CGROUP_DRIVER": "systemd"}
    with served(base, env=env, forgiving=True, start_timeout=START) as (server, net):
        n = workload.Node(server, net)
        n.pull(image)
        pod, uid = run_pod(n, "systemd")
        cid = container(n, pod, "web", image, "sleep 3600")
        pid = info(n, cid)["pid"]
        server.signal(signal.SIGKILL)
        server.wait()
        # The container and its monitor outlive sycri: they are not in sycri's cgroup.
        os.kill(pid, 0)
        server.start(START)
        st = n.rt.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=cid)).status
        assert st.state == api_pb2.CONTAINER_RUNNING
        n.remove_pod(pod[0])
        assert units(f"*{uid}*") == []
