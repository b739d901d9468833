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
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from sycri.api import api_pb2, api_pb2_grpc

from tests.support import oci, workload
from tests.support.node import served
from tests.support.pods import PodNet, pod_config, unmount_all
from tests.support.server import SycriServer, sycri_cmd, sycri_env

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


PIDS_LIMIT = 48  # the node's pids_limit: every container's pids.max


@pytest.fixture(params=DRIVERS)
def node(request, image) -> Iterator[tuple[workload.Node, str]]:
    base = Path("/tmp") / f"syvm-{secrets.token_hex(4)}"
    env = {"SYCRI_CGROUP_DRIVER": request.param, "SYCRI_PIDS_LIMIT": str(PIDS_LIMIT)}
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


def unit_property(unit: str, name: str) -> str:
    out = subprocess.run(
        ["systemctl", "show", "--value", "-p", name, unit],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return out.strip()


def test_cpuset_on_scopes_and_slices(node, image):
    """cpuset_cpus in the v2 files (and, with systemd, as AllowedCPUs of the scope and the
    pod slice): at create, UpdateContainerResources and UpdatePodSandboxResources."""
    n, driver = node
    online = sorted(cpu_list((CG / "cpuset.cpus.effective").read_text().strip()))
    first, last = str(online[0]), str(online[-1])
    pod, _ = run_pod(n, driver)
    cid = container(n, pod, "pinned", image, "sleep 3600", cpuset_cpus=first)
    cdir = CG / cgroup_of(info(n, cid)["pid"]).strip("/")
    assert (cdir / "cpuset.cpus").read_text().strip() == first
    assert (cdir / "cpuset.cpus.effective").read_text().strip() == first
    if driver == "systemd":
        assert unit_property(f"sycri-{cid}.scope", "AllowedCPUs") == first
    n.rt.UpdateContainerResources(
        api_pb2.UpdateContainerResourcesRequest(
            container_id=cid, linux=api_pb2.LinuxContainerResources(cpuset_cpus=last)
        )
    )
    assert (cdir / "cpuset.cpus").read_text().strip() == last
    if driver == "systemd":
        assert unit_property(f"sycri-{cid}.scope", "AllowedCPUs") == last
    n.rt.UpdatePodSandboxResources(
        api_pb2.UpdatePodSandboxResourcesRequest(
            pod_sandbox_id=pod[0],
            resources=api_pb2.LinuxContainerResources(cpuset_cpus=last, cpuset_mems="0"),
        )
    )
    pdir = pod_dir(driver, pod[1])
    assert (pdir / "cpuset.cpus").read_text().strip() == last
    assert (pdir / "cpuset.mems").read_text().strip() == "0"
    if driver == "systemd":
        assert unit_property(pod[1].linux.cgroup_parent, "AllowedCPUs") == last
        assert unit_property(pod[1].linux.cgroup_parent, "AllowedMemoryNodes") == "0"
    # The process runs where the files say.
    affinity = os.sched_getaffinity(info(n, cid)["pid"])
    assert affinity == {int(last)}, affinity


def cpu_list(text: str) -> set[int]:
    out: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


def test_pids_limit_in_pids_max(node, image):
    """The node's pids_limit is each container's pids.max (TasksMax of its scope with
    systemd), and a process in the container that forks past it is refused."""
    n, driver = node
    pod, _ = run_pod(n, driver)
    cid = container(n, pod, "forks", image, "sleep 3600")
    cdir = CG / cgroup_of(info(n, cid)["pid"]).strip("/")
    assert (cdir / "pids.max").read_text().strip() == str(PIDS_LIMIT)
    if driver == "systemd":
        assert unit_property(f"sycri-{cid}.scope", "TasksMax") == str(PIDS_LIMIT)
    spawn = (
        f"i=0; while [ $i -lt {PIDS_LIMIT + 16} ]; do sleep 3600 >/dev/null 2>&1 & i=$((i+1)); done"
    )
    r = n.rt.ExecSync(
        api_pb2.ExecSyncRequest(container_id=cid, cmd=["/bin/sh", "-c", spawn], timeout=120)
    )
    # busybox sh gives up at the first fork the kernel refuses.
    assert r.exit_code != 0 and b"can't fork" in r.stderr, r
    events = dict(line.split() for line in (cdir / "pids.events").read_text().splitlines())
    assert int(events["max"]) >= 1
    # The shell has gone; the sleeps it started fill the limit but for its own slot.
    assert PIDS_LIMIT - 3 <= int((cdir / "pids.current").read_text()) < PIDS_LIMIT


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
    other, _ = run_pod(n, driver)  # a second burstable pod: same parents
    cid = container(n, pod, "web", image, "sleep 3600")
    pdir = pod_dir(driver, pod[1])
    assert pdir.is_dir()
    n.remove_pod(pod[0])
    assert not pdir.exists()
    assert pod_dir(driver, other[1]).is_dir()
    n.remove_pod(other[0])
    assert not pod_dir(driver, other[1]).exists()
    if driver == "cgroupfs":
        # kubelet's QoS parents (sycri made them here) are every pod's: they stay, as
        # runc leaves them.
        assert pdir.parent.is_dir()
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


# --- the node's host services: sycri and the CRI proxy as systemd units -----------------

SYCRI_UNIT = "sycri.service"
PROXY_UNIT = "sycri-proxy.service"
PROXY_VERSION = "vmcheck"
PROXY_SOCKET = "/run/sycri-proxy/cri.sock"
NO_RUNTIME = "unix:///run/sycri-vm-none/cri.sock"  # no node runtime here: only sycri's pods


def wait_serving(endpoint: str, what: str, timeout: float = START):
    """A stub once ``endpoint`` answers Version."""

    def answers():
        ch = grpc.insecure_channel(endpoint)
        try:
            stub = api_pb2_grpc.RuntimeServiceStub(ch)
            stub.Version(api_pb2.VersionRequest(), timeout=5)
            return stub
        except grpc.RpcError:
            ch.close()
            return None

    return wait_for(answers, f"{what} does not answer on {endpoint}", timeout)


def wait_proxy(endpoint: str, what: str, timeout: float = START):
    """A stub once the proxy at ``endpoint`` answers. With no node runtime behind it,
    Version (the node runtime's to answer) is UNAVAILABLE naming that runtime: an answer
    from the proxy, unlike a socket nobody serves."""

    def answers():
        ch = grpc.insecure_channel(endpoint)
        stub = api_pb2_grpc.RuntimeServiceStub(ch)
        try:
            stub.Version(api_pb2.VersionRequest(), timeout=5)
            return stub
        except grpc.RpcError as exc:
            if NO_RUNTIME in (exc.details() or ""):
                return stub
            ch.close()
            return None

    return wait_for(answers, f"{what} does not answer on {endpoint}", timeout)


def start_sycri_unit(argv: list[str], env: dict[str, str], log: Path) -> None:
    """sycri as the host service ``sycri.service`` (systemd's default KillMode, which
    kills its whole cgroup on stop), as a node without the chart would run it."""
    subprocess.run(
        ["systemd-run", f"--unit={SYCRI_UNIT}", "--collect", "--property=KillMode=control-group",
         f"--property=StandardOutput=append:{log}", f"--property=StandardError=append:{log}",
         *(f"--setenv={k}={v}" for k, v in env.items()), *argv],
        check=True, capture_output=True,
    )  # fmt: skip


def proxy_rootfs(rootfs: Path) -> list[Path]:
    """Stand in for the node image's files under ``rootfs`` (what ``proxy install``
    copies there): this guest's /usr and the repository and venv sycri runs from, bound
    read-only, and a ``/opt/sycri/bin/sycri`` that starts the guest's venv. Returns the
    bind mounts, deepest last."""
    venvs = {Path(p).parents[2] for p in sys.path if p.endswith("site-packages")}
    repo = Path(__file__).resolve().parents[2]
    rootfs.mkdir(parents=True)
    for link in ("bin", "sbin", "lib", "lib64"):
        (rootfs / link).symlink_to(f"usr/{link}")
    for d in ("proc", "sys", "dev", "run", "tmp", "etc/sycri-proxy", "opt/sycri/bin"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    for f in ("passwd", "group", "nsswitch.conf", "hosts"):
        if (Path("/etc") / f).exists():
            (rootfs / "etc" / f).write_bytes((Path("/etc") / f).read_bytes())
    sycri = rootfs / "opt/sycri/bin/sycri"
    sycri.write_text(
        f"#!/bin/sh\nexport PYTHONPATH={repo}/app PYTHONDONTWRITEBYTECODE=1\n"
        f'exec {sys.executable} -m sycri "$@"\n'
    )
    sycri.chmod(0o755)
    mounts = []
    for src in (Path("/usr"), repo, *sorted(v for v in venvs if not str(v).startswith("/run"))):
        target = rootfs / str(src).lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "--bind", str(src), str(target)], check=True)
        mounts.append(target)
        # private: a bind nested in this one must not propagate back to the source
        subprocess.run(["mount", "--make-private", str(target)], check=True)
        subprocess.run(["mount", "-o", "remount,bind,ro", str(target)], check=True)
    return mounts


def read_only_mounts_under(root: Path) -> dict[str, bool]:
    out = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        f = line.split()
        if f[4] == str(root) or f[4].startswith(f"{root}/"):
            out[f[4]] = "ro" in f[5].split(",")
    return out


def test_proxy_and_sycri_units_keep_containers_through_restarts(image):
    """The installer's ``sycri-proxy.service`` live, in front of sycri run as
    ``sycri.service``: KillMode and cgroups as designed (containers and their conmons
    in neither unit's cgroup), a proxy restart and ``systemctl stop`` of sycri leave the
    containers running, their logs flowing, and after sycri's start they are reported
    through the proxy again, one that exited meanwhile with its real exit code."""
    base = Path("/run") / f"syvm-{secrets.token_hex(4)}"  # the proxy's root sees /run
    net = PodNet.new()
    server = SycriServer(base, flags=net.flags(), env={"SYCRI_CGROUP_DRIVER": "systemd"})
    base.mkdir(parents=True)
    env = {k: v for k, v in sycri_env(server.env).items()
           if k.startswith(("SYCRI_", "PYTHON")) or k == "PATH"}  # fmt: skip
    argv = sycri_cmd(*server.args())
    rootfs = Path("/opt/sycri") / PROXY_VERSION / "rootfs"
    settings = ["--listen", f"unix://{PROXY_SOCKET}", "--runtime-endpoint", NO_RUNTIME,
                "--sycri-endpoint", server.endpoint, "--sycri-handler", "runc"]  # fmt: skip
    mounts: list[Path] = []
    try:
        start_sycri_unit(argv, env, server.log_path)
        direct = wait_serving(server.endpoint, "sycri.service")
        direct_images = server.images()
        direct_images.PullImage(api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=image)))
        mounts = proxy_rootfs(rootfs)
        assert all(read_only_mounts_under(rootfs).values())
        installed = subprocess.run(
            [*sycri_cmd("proxy", "install", "--host-root", "/", "--version", PROXY_VERSION),
             *settings],
            capture_output=True, text=True, env=sycri_env(),
        )  # fmt: skip
        assert installed.returncode == 0, installed.stderr + installed.stdout
        assert f"systemctl start {PROXY_UNIT}" in installed.stdout or (
            f"systemctl restart {PROXY_UNIT}" in installed.stdout
        ), installed.stdout
        proxy = wait_proxy(f"unix://{PROXY_SOCKET}", PROXY_UNIT)

        # As designed: Restart=always, KillMode=mixed, each service in its own cgroup.
        assert unit_property(PROXY_UNIT, "ActiveState") == "active"
        assert unit_property(PROXY_UNIT, "KillMode") == "mixed"
        assert unit_property(PROXY_UNIT, "Restart") == "always"
        assert unit_property(PROXY_UNIT, "UnitFileState") == "enabled"
        proxy_cg = unit_property(PROXY_UNIT, "ControlGroup")
        sycri_cg = unit_property(SYCRI_UNIT, "ControlGroup")
        assert proxy_cg == f"/system.slice/{PROXY_UNIT}"
        assert sycri_cg == f"/system.slice/{SYCRI_UNIT}"
        proxy_pid = int(unit_property(PROXY_UNIT, "MainPID"))
        assert cgroup_of(proxy_pid) == proxy_cg

        # A pod with sycri's handler through the proxy, as kubelet would.
        uid = secrets.token_hex(8)
        cfg = pod_config("vmunit", uid=uid, pid=api_pb2.POD,
                         cgroup_parent=parent_for("systemd", uid))  # fmt: skip
        cfg.log_directory = str(base / "pods" / uid)
        pod_id = proxy.RunPodSandbox(
            api_pb2.RunPodSandboxRequest(config=cfg, runtime_handler="runc")
        ).pod_sandbox_id
        assert direct.PodSandboxStatus(
            api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod_id)
        ).status.state == api_pb2.SANDBOX_READY  # fmt: skip

        def create(name: str, script: str) -> str:
            c = api_pb2.ContainerConfig(
                metadata=api_pb2.ContainerMetadata(name=name),
                image=api_pb2.ImageSpec(image=image),
                command=["/bin/sh", "-c"], args=[script], log_path=f"{name}/0.log",
            )  # fmt: skip
            cid = proxy.CreateContainer(
                api_pb2.CreateContainerRequest(pod_sandbox_id=pod_id, config=c, sandbox_config=cfg)
            ).container_id
            proxy.StartContainer(api_pb2.StartContainerRequest(container_id=cid))
            return cid

        ticker = create("ticker", "i=0; while :; do echo line $i; i=$((i+1)); sleep 0.5; done")
        sevens = create("sevens", "trap 'exit 7' TERM; while :; do sleep 0.2; done")
        log = Path(cfg.log_directory) / "ticker/0.log"

        def status(cid: str):
            return proxy.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=cid)).status

        def pid_of(cid: str) -> int:
            r = api_pb2.ContainerStatusRequest(container_id=cid, verbose=True)
            return int(json.loads(direct.ContainerStatus(r).info["info"])["pid"])

        pids = {cid: pid_of(cid) for cid in (ticker, sevens)}
        monitors = [
            int(p.name) for p in Path("/proc").iterdir()
            if p.name.isdigit() and (p / "comm").exists()
            and (p / "comm").read_text().strip() == "conmon"
            and any(cid in (p / "cmdline").read_text() for cid in pids)
        ]  # fmt: skip
        assert len(monitors) == 2, monitors
        for pid in [*pids.values(), *monitors]:
            cg = cgroup_of(pid)
            assert not cg.startswith((proxy_cg, sycri_cg)), (pid, cg)
            assert f"kubepods-burstable-pod{uid}.slice" in cg, (pid, cg)

        def lines() -> int:
            return log.read_text().count("line ") if log.exists() else 0

        # The proxy's restart: kubelet's endpoint is back, nothing else moved.
        subprocess.run(["systemctl", "restart", PROXY_UNIT], check=True)
        proxy = wait_proxy(f"unix://{PROXY_SOCKET}", f"{PROXY_UNIT} after a restart")
        assert int(unit_property(PROXY_UNIT, "MainPID")) != proxy_pid
        for pid in [*pids.values(), *monitors]:
            os.kill(pid, 0)
        assert status(ticker).state == api_pb2.CONTAINER_RUNNING

        # systemctl stop sycri: systemd kills every process of sycri.service's cgroup.
        subprocess.run(["systemctl", "stop", SYCRI_UNIT], check=True)
        assert not (CG / sycri_cg.strip("/")).exists()
        for pid in [*pids.values(), *monitors]:
            os.kill(pid, 0)  # alive: neither in sycri's cgroup
        with pytest.raises(grpc.RpcError) as down:
            status(ticker)
        assert down.value.code() == grpc.StatusCode.UNAVAILABLE, down.value
        before = lines()
        wait_for(lambda: lines() > before + 2, "the log stopped while sycri was down")
        os.kill(pids[sevens], signal.SIGTERM)  # exits 7 while nobody but conmon watches
        wait_for(lambda: not Path(f"/proc/{pids[sevens]}").exists(), "sevens did not exit")

        start_sycri_unit(argv, env, server.log_path)
        direct = wait_serving(server.endpoint, "sycri.service after a stop")
        assert status(ticker).state == api_pb2.CONTAINER_RUNNING
        assert pid_of(ticker) == pids[ticker]
        exited = wait_for(
            lambda: (s := status(sevens)).state == api_pb2.CONTAINER_EXITED and s,
            "sevens is not reported EXITED",
        )
        assert exited.exit_code == 7, exited
        before = lines()
        wait_for(lambda: lines() > before, "the log does not flow after sycri's restart")
        proxy.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod_id))
        proxy.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
        assert units(f"*{uid}*") == []
    finally:
        try:  # a failed body may have left the pod: sycri removes it, if it still serves
            rt = wait_serving(server.endpoint, "sycri", timeout=10)
            for p in rt.ListPodSandbox(api_pb2.ListPodSandboxRequest()).items:
                rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=p.id))
                rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=p.id))
        except (AssertionError, grpc.RpcError) as exc:
            print(f"cleanup: {exc}")
        subprocess.run(["systemctl", "stop", PROXY_UNIT], capture_output=True)
        for m in reversed(mounts):
            subprocess.run(["umount", "-R", "-l", str(m)], check=False, capture_output=True)
        left = read_only_mounts_under(Path("/opt/sycri"))
        if not left:  # uninstall removes /opt/sycri: never with a bind mount in it
            removed = subprocess.run(
                [*sycri_cmd("proxy", "uninstall", "--host-root", "/"), *settings],
                capture_output=True, text=True, env=sycri_env(),
            )  # fmt: skip
        subprocess.run(["systemctl", "stop", SYCRI_UNIT], capture_output=True)
        unmount_all(base)
        net.cleanup()
        subprocess.run(["rm", "-rf", "--one-file-system", str(base)], check=False)
    assert not left, f"bind mounts left under /opt/sycri: {left}"
    assert removed.returncode == 0, removed.stderr + removed.stdout
    assert not Path("/opt/sycri").exists()
    assert not Path("/etc/systemd/system", PROXY_UNIT).exists()
    assert units("sycri-proxy*") == [] and units(SYCRI_UNIT) == []
