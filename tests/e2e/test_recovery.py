"""Restarts and crashes: SIGTERM, lost conmons, kill -9 at a random moment, and kill -9
at every named step of every operation, each followed by a restart: whole or gone.

For the named steps, sycri is started with ``SYCRI_TEST_CRASH_AT=<point>`` (see
``sycri.crashpoint``) and SIGKILLs itself exactly when that step is done. A new sycri
then starts on the same directories. What must hold, as kubelet and the node's owner would see it:

- the object the operation was making or changing is fully there (usable: a pod takes
  containers, a container starts, execs, stops, is removed) or fully gone;
- a removal that began is finished; a stop that began is finishable;
- nothing half-made is left: mounts, namespace pins, veths, iptables rules, cgroups,
  conmon processes, files under the run dir, container dirs, pull temp files, stray
  SIFs are back to what they were before the operation;
- a container that was running elsewhere on the node (the bystander) still runs,
  under the same id, keeps logging, and exec into it works.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from sycri import crashpoint
from sycri.api import api_pb2

from tests.support import oci, spdy_client
from tests.support.load import leftovers
from tests.support.node import served
from tests.support.pods import PodNet, pod_config
from tests.support.server import SycriServer

pytestmark = pytest.mark.root

R = api_pb2


@dataclass
class Node:
    server: SycriServer
    net: PodNet
    cg_root: str
    image: str  # pulled before any crash; the bystander runs it
    registry: object

    @property
    def rt(self):
        return self.server.runtime()

    def pod(self, name: str, **kw) -> tuple[str, R.PodSandboxConfig]:
        cfg = pod_config(name, cgroup_parent=f"/{self.cg_root}/{name}", **kw)
        cfg.log_directory = str(self.server.base / "logs" / name)
        return self.rt.RunPodSandbox(R.RunPodSandboxRequest(config=cfg)).pod_sandbox_id, cfg

    def create(self, pod: str, cfg: R.PodSandboxConfig, name: str, script: str) -> str:
        c = R.ContainerConfig(
            metadata=R.ContainerMetadata(name=name),
            image=R.ImageSpec(image=self.image),
            args=[script],
            log_path=f"{name}.log",
        )
        req = R.CreateContainerRequest(pod_sandbox_id=pod, config=c, sandbox_config=cfg)
        return self.rt.CreateContainer(req).container_id

    def run(self, pod: str, cfg: R.PodSandboxConfig, name: str, script: str) -> str:
        cid = self.create(pod, cfg, name, script)
        self.rt.StartContainer(R.StartContainerRequest(container_id=cid))
        return cid

    def pods(self) -> dict[str, int]:
        return {p.id: p.state for p in self.rt.ListPodSandbox(R.ListPodSandboxRequest()).items}

    def containers(self) -> dict[str, int]:
        return {c.id: c.state for c in self.rt.ListContainers(R.ListContainersRequest()).containers}

    def status(self, cid: str) -> R.ContainerStatus:
        return self.rt.ContainerStatus(R.ContainerStatusRequest(container_id=cid)).status

    def exec(self, cid: str, script: str) -> bytes:
        res = self.rt.ExecSync(R.ExecSyncRequest(container_id=cid, cmd=["sh", "-c", script]))
        assert res.exit_code == 0, res.stderr
        return res.stdout

    def crash_during(self, point: str, call: Callable[[], object]) -> None:
        """Restart sycri armed at ``point``, make ``call`` (which must die there),
        then start a clean sycri on the same directories."""
        assert point in crashpoint.POINTS
        self.server.stop()
        self.server.env = {crashpoint.ENV: point}
        self.server.start()
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value
        assert self.server.wait() == -signal.SIGKILL, f"sycri did not stop at {point}"
        self.server.stop()
        self.server.env = {}
        self.server.start()


@pytest.fixture
def node(registry) -> Iterator[Node]:
    base = Path("/tmp") / f"sycp-{secrets.token_hex(4)}"  # short: conmon socket paths
    cg_root = f"sycri-crash-{secrets.token_hex(4)}"
    with served(base, cgroup_root=cg_root) as (server, net):
        repo = "crash/" + secrets.token_hex(4)
        oci.push(registry, repo, "v1", oci.busybox_image(entrypoint=["/bin/sh", "-c"]))
        image = f"{registry.host}/{repo}:v1"
        server.images().PullImage(R.PullImageRequest(image=R.ImageSpec(image=image)))
        try:
            yield Node(server, net, cg_root, image, registry)
        finally:
            if server.proc is None or server.proc.poll() is not None:
                server.stop()
                server.env = {}
                server.start()


def holders(node: Node) -> int:
    """Host processes (not in a container) with a file or cwd under the node's dirs,
    sycri itself aside: conmons, pod inits, anything a crash could strand."""
    base = str(node.server.base)
    n = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == node.server.proc.pid:
            continue
        try:
            if os.readlink(f"/proc/{pid}/root") != "/":
                continue  # a container's process: its pod accounts for it
            links = [os.readlink(f"/proc/{pid}/cwd")]
            fd_dir = f"/proc/{pid}/fd"
            links += [os.readlink(f"{fd_dir}/{fd}") for fd in os.listdir(fd_dir)]
        except OSError:
            continue
        n += any(link.startswith(base) for link in links)
    return n


def footprint(node: Node) -> tuple:
    return leftovers(node.server, node.net, node.cg_root), holders(node)


TICKER = "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.1; done"
# Exits 3 on SIGTERM, so a stop's real exit code is visible.
TRAPPER = 'trap "exit 3" TERM; while true; do sleep 0.1; done'


def bystander(node: Node) -> tuple[str, str, Path]:
    pod, cfg = node.pod("bystander")
    cid = node.run(pod, cfg, "ticker", TICKER)
    return pod, cid, Path(cfg.log_directory) / "ticker.log"


def bystander_survived(node: Node, pod: str, cid: str, log: Path) -> None:
    assert node.pods()[pod] == R.SANDBOX_READY
    assert node.containers()[cid] == R.CONTAINER_RUNNING
    assert node.exec(cid, "echo alive") == b"alive\n"
    n = len(log.read_text().splitlines())
    deadline = time.monotonic() + 5
    while len(log.read_text().splitlines()) <= n:  # conmon still logs it
        assert time.monotonic() < deadline, "the bystander stopped logging"
        time.sleep(0.05)


def remove_all_but(node: Node, keep: str) -> None:
    for pod in node.pods():
        if pod != keep:
            node.rt.StopPodSandbox(R.StopPodSandboxRequest(pod_sandbox_id=pod))
            node.rt.RemovePodSandbox(R.RemovePodSandboxRequest(pod_sandbox_id=pod))


# --- pull ----------------------------------------------------------------------------


@pytest.mark.parametrize("point", ["pull.fetched", "pull.built", "pull.renamed"])
def test_kill_9_during_pull(node, point):
    store = node.server.base / "root" / "images"
    repo = "crash/" + secrets.token_hex(4)
    oci.push(node.registry, repo, "v1", oci.busybox_image(env=["PATH=/bin", f"X={repo}"]))
    ref = f"{node.registry.host}/{repo}:v1"
    before = {i.id for i in node.server.images().ListImages(R.ListImagesRequest()).images}

    def pull():
        node.server.images().PullImage(R.PullImageRequest(image=R.ImageSpec(image=ref)))

    node.crash_during(point, pull)
    after = {i.id for i in node.server.images().ListImages(R.ListImagesRequest()).images}
    assert after == before  # the pull never answered: no image
    assert list((store / "tmp").iterdir()) == []  # its temp dir is gone
    assert len(list((store / "sif").iterdir())) == len(before)  # and no unindexed SIF
    pull()  # a retry works
    status = node.server.images().ImageStatus(R.ImageStatusRequest(image=R.ImageSpec(image=ref)))
    assert status.image.repo_tags == [ref]


# --- pod sandboxes -----------------------------------------------------------------------

POD_RUN = [p for p in crashpoint.POINTS if p.startswith("pod.run.")]


@pytest.mark.parametrize("point", POD_RUN)
def test_kill_9_during_run_pod_sandbox(node, point):
    by_pod, by_cid, by_log = bystander(node)
    base = footprint(node)
    made: list[str] = []

    def run():
        made.append(node.pod("victim", pid=R.POD)[0])

    node.crash_during(point, run)
    bystander_survived(node, by_pod, by_cid, by_log)
    others = set(node.pods()) - {by_pod}
    if point == "pod.run.ready":
        # Saved READY before the reply was lost: fully there and usable.
        (victim,) = others
        assert node.pods()[victim] == R.SANDBOX_READY
        cfg = R.PodSandboxStatusRequest(pod_sandbox_id=victim)
        assert node.rt.PodSandboxStatus(cfg).status.network.ip.startswith(node.net.prefix())
    else:
        assert others == set()
        assert footprint(node) == base
    # kubelet retries: the same pod name runs again.
    pod, cfg = node.pod("victim-retry", pid=R.POD)
    cid = node.run(pod, cfg, "c", "exec sleep 3600")
    assert node.exec(cid, "echo in-pod") == b"in-pod\n"
    remove_all_but(node, by_pod)
    assert footprint(node) == base


@pytest.mark.parametrize("point", ["pod.stop.containers", "pod.stop.network"])
def test_kill_9_during_stop_pod_sandbox(node, point):
    by_pod, by_cid, by_log = bystander(node)
    base = footprint(node)
    pod, cfg = node.pod("victim", pid=R.POD)
    cid = node.run(pod, cfg, "c", TRAPPER)
    node.crash_during(
        point, lambda: node.rt.StopPodSandbox(R.StopPodSandboxRequest(pod_sandbox_id=pod))
    )
    bystander_survived(node, by_pod, by_cid, by_log)
    assert node.pods()[pod] == R.SANDBOX_NOTREADY  # says what it is: no longer ready
    st = node.status(cid)
    assert st.state == R.CONTAINER_EXITED and st.exit_code == 137  # StopPod kills
    node.rt.StopPodSandbox(R.StopPodSandboxRequest(pod_sandbox_id=pod))  # finishable
    node.rt.RemovePodSandbox(R.RemovePodSandboxRequest(pod_sandbox_id=pod))
    assert set(node.pods()) == {by_pod}
    assert footprint(node) == base


@pytest.mark.parametrize("point", ["pod.remove.containers", "pod.remove.teardown"])
def test_kill_9_during_remove_pod_sandbox(node, point):
    by_pod, by_cid, by_log = bystander(node)
    base = footprint(node)
    pod, cfg = node.pod("victim", pid=R.POD)
    node.run(pod, cfg, "c", "exec sleep 3600")
    node.crash_during(
        point, lambda: node.rt.RemovePodSandbox(R.RemovePodSandboxRequest(pod_sandbox_id=pod))
    )
    bystander_survived(node, by_pod, by_cid, by_log)
    assert set(node.pods()) == {by_pod}  # the removal was finished at start
    assert set(node.containers()) == {by_cid}
    assert footprint(node) == base


# --- containers --------------------------------------------------------------------------

CREATE = [p for p in crashpoint.POINTS if p.startswith("container.create.")]


@pytest.mark.parametrize("point", CREATE)
def test_kill_9_during_create_container(node, point):
    by_pod, by_cid, by_log = bystander(node)
    pod, cfg = node.pod("victim")
    base = footprint(node)
    node.crash_during(point, lambda: node.create(pod, cfg, "c", "exec sleep 3600"))
    bystander_survived(node, by_pod, by_cid, by_log)
    # No record was ever saved: fully gone, with its mounts, conmon and files.
    assert set(node.containers()) == {by_cid}
    assert footprint(node) == base
    cid = node.run(pod, cfg, "c", "exec sleep 3600")  # the same name is free again
    assert node.exec(cid, "echo ok") == b"ok\n"


def test_kill_9_after_conmon_at_start(node):
    by_pod, by_cid, by_log = bystander(node)
    pod, cfg = node.pod("victim")
    base = footprint(node)
    cid = node.create(pod, cfg, "c", "echo started; exec sleep 3600")
    created = footprint(node)  # overlay and records: what CreateContainer made
    node.crash_during(
        "container.start.conmon",
        lambda: node.rt.StartContainer(R.StartContainerRequest(container_id=cid)),
    )
    bystander_survived(node, by_pod, by_cid, by_log)
    # conmon and runc's container existed, runc never started it: both are taken back,
    # and the container is created again, as it was before the start.
    st = node.status(cid)
    assert (st.state, st.started_at, st.finished_at) == (R.CONTAINER_CREATED, 0, 0)
    assert footprint(node) == created
    node.rt.StartContainer(R.StartContainerRequest(container_id=cid))
    assert node.exec(cid, "echo ok") == b"ok\n"
    assert Path(st.log_path).read_text().count("started") == 1
    node.rt.StopContainer(R.StopContainerRequest(container_id=cid, timeout=0))
    node.rt.RemoveContainer(R.RemoveContainerRequest(container_id=cid))
    assert footprint(node) == base


def test_kill_9_after_runc_start(node):
    by_pod, by_cid, by_log = bystander(node)
    pod, cfg = node.pod("victim")
    cid = node.create(pod, cfg, "c", "echo started; exec sleep 3600")
    node.crash_during(
        "container.start.runc",
        lambda: node.rt.StartContainer(R.StartContainerRequest(container_id=cid)),
    )
    bystander_survived(node, by_pod, by_cid, by_log)
    st = node.status(cid)
    assert st.state == R.CONTAINER_RUNNING  # runc's state wins over the "created" record
    assert st.started_at > st.created_at
    assert node.exec(cid, "echo ok") == b"ok\n"
    assert "started" in Path(st.log_path).read_text()


def test_kill_9_after_stop_signal(node):
    by_pod, by_cid, by_log = bystander(node)
    pod, cfg = node.pod("victim")
    cid = node.run(pod, cfg, "c", TRAPPER)
    time.sleep(0.3)  # the trap is set
    node.crash_during(
        "container.stop.signal",
        lambda: node.rt.StopContainer(R.StopContainerRequest(container_id=cid, timeout=10)),
    )
    bystander_survived(node, by_pod, by_cid, by_log)
    st = node.status(cid)
    # It died of the signal while sycri was down: conmon's exit file gives the truth.
    assert (st.state, st.exit_code, st.reason) == (R.CONTAINER_EXITED, 3, "Error")
    assert st.finished_at > st.started_at


def test_kill_9_after_an_exit_is_recorded(node):
    """Killed after StopContainer recorded the exit, before runc's container and the
    rootfs mount were released: the exit stands, and a removal takes all that is left."""
    by_pod, by_cid, by_log = bystander(node)
    pod, cfg = node.pod("victim")
    base = footprint(node)
    cid = node.run(pod, cfg, "c", TRAPPER)
    time.sleep(0.3)  # the trap is set
    node.crash_during(
        "container.exit.recorded",
        lambda: node.rt.StopContainer(R.StopContainerRequest(container_id=cid, timeout=10)),
    )
    bystander_survived(node, by_pod, by_cid, by_log)
    st = node.status(cid)
    assert (st.state, st.exit_code, st.reason) == (R.CONTAINER_EXITED, 3, "Error")
    node.rt.RemoveContainer(R.RemoveContainerRequest(container_id=cid))
    assert set(node.containers()) == {by_cid}
    assert footprint(node) == base


REMOVE = ["container.remove.runc", "container.remove.record", "container.remove.trashed"]


def trash(node: Node) -> list[str]:
    """What is left in the trash, which a start empties before it serves."""
    d = node.server.base / "root" / "trash"
    return os.listdir(d) if d.exists() else []


@pytest.mark.parametrize("point", REMOVE)
def test_kill_9_during_remove_of_a_stopped_container(node, point):
    """Stopped first (by the sycri that dies), so its exit released it: the removal had
    only files left."""
    by_pod, by_cid, by_log = bystander(node)
    pod, cfg = node.pod("victim")
    base = footprint(node)
    cid = node.run(pod, cfg, "c", "exec sleep 3600")

    def stop_then_remove() -> None:
        node.rt.StopContainer(R.StopContainerRequest(container_id=cid, timeout=0))
        node.rt.RemoveContainer(R.RemoveContainerRequest(container_id=cid))

    node.crash_during(point, stop_then_remove)
    bystander_survived(node, by_pod, by_cid, by_log)
    assert set(node.containers()) == {by_cid}  # the removal was finished at start
    assert footprint(node) == base
    assert trash(node) == []


@pytest.mark.parametrize("point", REMOVE)
def test_kill_9_during_remove_container(node, point):
    by_pod, by_cid, by_log = bystander(node)
    pod, cfg = node.pod("victim")
    base = footprint(node)
    cid = node.run(pod, cfg, "c", "exec sleep 3600")
    node.crash_during(
        point, lambda: node.rt.RemoveContainer(R.RemoveContainerRequest(container_id=cid))
    )
    bystander_survived(node, by_pod, by_cid, by_log)
    assert set(node.containers()) == {by_cid}  # the removal was finished at start
    assert footprint(node) == base
    assert trash(node) == []


def test_sigterm_restart_keeps_containers_exec_and_logs(node):
    """A DaemonSet rollout: SIGTERM, a new sycri; the same ids and states, ExecSync and
    the streaming Exec (SPDY, as kubectl) work, conmon kept logging across the gap."""
    by_pod, by_cid, by_log = bystander(node)
    pod, cfg = node.pod("other")
    done = node.run(pod, cfg, "done", "exit 0")
    # Its exit is part of the state kept: taken once it is seen (under load, "exit 0" may
    # still run when StartContainer returns).
    for _ in range(600):
        if node.status(done).state == R.CONTAINER_EXITED:
            break
        time.sleep(0.05)
    before = (node.pods(), node.containers())
    lines = len(by_log.read_text().splitlines())
    node.server.stop()
    assert node.server.proc.returncode == 0
    time.sleep(0.5)
    node.server.start()
    assert (node.pods(), node.containers()) == before
    assert node.status(done).exit_code == 0
    bystander_survived(node, by_pod, by_cid, by_log)
    ticks = [int(line.rsplit(" ", 1)[1]) for line in by_log.read_text().splitlines()]
    assert ticks == list(range(1, len(ticks) + 1)) and len(ticks) > lines + 3  # no gap
    url = node.rt.Exec(
        R.ExecRequest(container_id=by_cid, cmd=["sh", "-c", "echo streamed; exit 5"], stdout=True)
    ).url

    async def spdy_exec() -> tuple[bytes, int]:
        client, streams = await spdy_client.exec_session(
            url, stdin=False, stdout=True, stderr=False, tty=False
        )
        try:
            status = spdy_client.parse_status(await streams["error"].read_all())
            return await streams["stdout"].read_all(), spdy_client.exit_code(status)
        finally:
            await client.close()

    assert asyncio.run(spdy_exec()) == (b"streamed\n", 5)


@pytest.mark.parametrize("lost", ["conmon", "conmon+container"])
def test_lost_conmon(node, lost):
    """Reality wins over the record: a container whose conmon (and process) died while
    sycri was down (OOM killer, an admin, a reboot) is EXITED after the restart, or, if
    its process still runs, RUNNING and stoppable."""
    pod, cfg = node.pod("victim")
    base = footprint(node)
    cid = node.run(pod, cfg, "c", "exec sleep 3600")
    info = node.rt.ContainerStatus(R.ContainerStatusRequest(container_id=cid, verbose=True)).info
    pid = json.loads(info["info"])["pid"]
    monitor = next(int(p) for p in os.listdir("/proc") if p.isdigit() and _is_conmon_of(p, cid))
    node.server.stop()
    os.kill(monitor, signal.SIGKILL)
    if lost == "conmon+container":
        os.kill(pid, signal.SIGKILL)
    node.server.start()
    st = node.status(cid)
    if lost == "conmon":
        assert st.state == R.CONTAINER_RUNNING
        assert node.exec(cid, "echo ok") == b"ok\n"
        node.rt.StopContainer(R.StopContainerRequest(container_id=cid, timeout=0))
        st = node.status(cid)
        assert (st.state, st.exit_code) == (R.CONTAINER_EXITED, 137)
    else:
        assert (st.state, st.exit_code, st.reason) == (R.CONTAINER_EXITED, 255, "Error")
    assert st.finished_at > st.started_at
    node.rt.RemoveContainer(R.RemoveContainerRequest(container_id=cid))
    # The image's mount idles after its last container (images.mount_idle_seconds),
    # also one adopted at the restart; RemoveImage takes it.
    node.server.images().RemoveImage(R.RemoveImageRequest(image=R.ImageSpec(image=node.image)))
    assert footprint(node) == base


def _is_conmon_of(pid: str, cid: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().decode(errors="replace").split("\0")
    except OSError:
        return False
    return os.path.basename(args[0]) == "conmon" and f"--cid {cid}" in " ".join(args)


@pytest.mark.parametrize("seed", [1, 2])
def test_kill_9_at_a_random_moment_of_mixed_work(node, seed):
    """Pods and containers made, stopped and removed by 6 clients at once; SIGKILL from
    outside at a random moment (the seed fixes it). Nothing answered is lost, every
    object left is whole, and removing them all leaves nothing behind."""
    rng = random.Random(seed)
    by_pod, by_cid, by_log = bystander(node)
    base = footprint(node)
    lock = threading.Lock()
    live_pods: set[str] = set()
    live_ctrs: set[str] = set()
    stop = threading.Event()
    unexpected: list[grpc.RpcError] = []

    def worker(w: int) -> None:
        rt = node.server.runtime()
        i = 0
        while not stop.is_set():
            i += 1
            try:
                pod, cfg = node.pod(f"w{w}-{i}", pid=R.POD if (w + i) % 2 else R.CONTAINER)
                with lock:
                    live_pods.add(pod)
                cid = node.run(pod, cfg, "c", TRAPPER)
                with lock:
                    live_ctrs.add(cid)
                rt.StopContainer(R.StopContainerRequest(container_id=cid, timeout=2))
                with lock:
                    live_ctrs.discard(cid)  # a removal cut short may be finished at start
                rt.RemoveContainer(R.RemoveContainerRequest(container_id=cid))
                rt.StopPodSandbox(R.StopPodSandboxRequest(pod_sandbox_id=pod))
                with lock:
                    live_pods.discard(pod)
                rt.RemovePodSandbox(R.RemovePodSandboxRequest(pod_sandbox_id=pod))
            except grpc.RpcError as exc:
                if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                    unexpected.append(exc)  # before the kill, every call must succeed
                return

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    time.sleep(rng.uniform(1.0, 4.0))
    node.server.signal(signal.SIGKILL)
    node.server.wait()
    stop.set()
    for t in threads:
        t.join(60)
    assert unexpected == []
    node.server.stop()
    node.server.start()
    bystander_survived(node, by_pod, by_cid, by_log)
    pods, ctrs = node.pods(), node.containers()
    assert live_pods <= set(pods) and live_ctrs <= set(ctrs)  # nothing answered is lost
    for cid, state in ctrs.items():
        assert node.status(cid).id == cid  # whole: its status answers
        if state == R.CONTAINER_RUNNING:
            assert node.exec(cid, "echo ok") == b"ok\n"
    remove_all_but(node, by_pod)
    assert footprint(node) == base


def test_pod_that_lost_its_namespace_while_down_is_notready(node):
    """The pinned network namespace is gone after the restart (unmounted by someone):
    the pod is NOTREADY, not a READY record with nothing behind it; others stay READY."""
    by_pod, by_cid, by_log = bystander(node)
    base = footprint(node)
    pod, _ = node.pod("victim")
    req = R.PodSandboxStatusRequest(pod_sandbox_id=pod, verbose=True)
    netns = json.loads(node.rt.PodSandboxStatus(req).info["info"])["namespaces"]["network"]
    node.server.stop()
    subprocess.run(["umount", netns], check=True)
    node.server.start()
    assert node.pods() == {by_pod: R.SANDBOX_READY, pod: R.SANDBOX_NOTREADY}
    bystander_survived(node, by_pod, by_cid, by_log)
    node.rt.RemovePodSandbox(R.RemovePodSandboxRequest(pod_sandbox_id=pod))
    assert footprint(node) == base


def test_every_point_is_tested():
    tested = {"pull.fetched", "pull.built", "pull.renamed", "container.start.runc"}
    tested |= {"container.start.conmon"}
    tested |= {"container.stop.signal", "pod.stop.containers", "pod.stop.network"}
    tested |= {"pod.remove.containers", "pod.remove.teardown"}
    tested |= {*REMOVE, "container.exit.recorded"}
    tested |= set(POD_RUN) | set(CREATE)
    assert tested == set(crashpoint.POINTS)
