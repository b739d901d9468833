"""conmon outlives sycri: the sycri pod stopped the way a container engine stops it (every
process of its cgroup SIGKILLed at once) costs no log line, no attach and no exit code;
and a conmon that dies while sycri runs is noticed, not left RUNNING forever.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes.client import Configuration
from kubernetes.stream.ws_client import WSClient
from sycri.api import api_pb2
from sycri.runtime.container.containers import LOST_EXIT, UNMONITORED

from tests.e2e.test_containers_cri import container, pull, wait_state
from tests.support import own_cgroup
from tests.support.load import EventCounter
from tests.support.node import served
from tests.support.pods import PodNet, pod_config
from tests.support.server import SycriServer

pytestmark = pytest.mark.root

LINE = re.compile(r"^\S+ stdout F line (\d+)$")
COUNTER = 'i=0; while true; do echo "line $i"; i=$((i+1)); sleep 0.2; done'


@pytest.fixture
def node() -> Iterator[tuple[SycriServer, PodNet, str, list[Path]]]:
    tag = secrets.token_hex(4)
    base = Path("/tmp") / f"symon-{tag}"
    cg_root = f"sycri-mon-{tag}"
    own = own_cgroup.make(f"sycri-self-{tag}")
    try:
        with served(base, cgroup_root=cg_root, own_cgroups=own, forgiving=True) as (server, net):
            try:
                yield server, net, cg_root, own
            finally:
                if server.proc is None or server.proc.poll() is not None:
                    server.stop()
                    server.start()  # the teardown removes the pods through it
    finally:
        own_cgroup.remove(own)


@dataclass
class Pod:
    """A pod whose containers log under the server's base, in a cgroup of the test's."""

    server: SycriServer
    cfg: api_pb2.PodSandboxConfig
    id: str

    @classmethod
    def start(cls, server: SycriServer, name: str, cg_root: str) -> Pod:
        cfg = pod_config(name, cgroup_parent=f"/{cg_root}/pod")
        cfg.log_directory = str(server.base / "logs")
        req = api_pb2.RunPodSandboxRequest(config=cfg)
        return cls(server, cfg, server.runtime().RunPodSandbox(req).pod_sandbox_id)

    def run(self, c: api_pb2.ContainerConfig) -> str:
        """Create and start a container; its id."""
        rt = self.server.runtime()
        req = api_pb2.CreateContainerRequest(pod_sandbox_id=self.id, config=c, sandbox_config=self.cfg)
        cid = rt.CreateContainer(req).container_id
        rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid))
        return cid


def waiter_config(image: str, signals: Path) -> api_pb2.ContainerConfig:
    """A container that exits 7 once ``signals/go`` exists."""
    return container(
        "waiter",
        image,
        ["while [ ! -e /signal/go ]; do sleep 0.1; done; exit 7"],
        mounts=[api_pb2.Mount(container_path="/signal", host_path=str(signals))],
    )


def numbers(log: Path) -> list[int]:
    out = []
    for line in log.read_text().splitlines():
        m = LINE.match(line)
        assert m, f"not a counter line: {line!r}"
        out.append(int(m.group(1)))
    return out


def wait_for(what: str, check, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while not (got := check()):
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.1)
    return got


def cgroup_of(pid: int) -> set[str]:
    return {ln.split(":", 2)[2] for ln in Path(f"/proc/{pid}/cgroup").read_text().splitlines()}


def attach_stdout(server: SycriServer, cid: str, needle: str) -> str:
    """Attach (stdout only) as kubectl attach does, and read until ``needle`` arrives."""
    url = server.runtime().Attach(api_pb2.AttachRequest(container_id=cid, stdout=True)).url
    ws = WSClient(Configuration(), url.replace("http://", "ws://"), None, capture_all=True)
    try:
        deadline = time.monotonic() + 20
        while needle not in (ws.peek_stdout() or "") and time.monotonic() < deadline:
            ws.update(timeout=1)
        return ws.peek_stdout() or ""
    finally:
        ws.close()


def test_killing_sycris_cgroup_loses_no_log_attach_or_exit_code(node, registry):
    server, _net, cg_root, own = node
    rt = server.runtime()
    image = pull(server, registry, entrypoint=["/bin/sh", "-c"], cmd=["true"])
    signals = server.base / "signal"
    signals.mkdir()
    started = Pod.start(server, "mon", cg_root)
    cfg, pod, run = started.cfg, started.id, started.run

    chatty = run(container("chatty", image, [COUNTER]))
    waiter = run(waiter_config(image, signals))
    log = Path(cfg.log_directory) / "chatty/0.log"
    wait_for("the first lines", lambda: len(numbers(log)) >= 3)
    sycri_pid = server.proc.pid
    assert own_cgroup.pids(own) >= {sycri_pid}
    for cid in (chatty, waiter):
        conmon_pid = int((server.base / "root/containers" / cid / "conmon.pid").read_text())
        assert conmon_pid not in own_cgroup.pids(own)
        assert cgroup_of(conmon_pid) != cgroup_of(sycri_pid)

    # The container engine stops the sycri pod: every process of its cgroup, at once.
    down_at = time.time_ns()
    own_cgroup.kill_all(own)
    server.wait()
    at_kill = len(numbers(log))
    (signals / "go").touch()  # the waiter exits 7 while sycri is down
    exit_file = server.base / "run/exits" / waiter
    wait_for("conmon's exit file for the waiter", exit_file.exists)
    wait_for("log lines written while sycri is down", lambda: len(numbers(log)) >= at_kill + 5)
    server.stop()
    up_at = time.time_ns()
    server.start()
    rt = server.runtime()

    st = rt.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=waiter)).status
    assert (st.state, st.exit_code, st.reason) == (api_pb2.CONTAINER_EXITED, 7, "Error")
    assert down_at < st.finished_at < up_at
    st = rt.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=chatty)).status
    assert (st.state, st.message) == (api_pb2.CONTAINER_RUNNING, "")
    pods = rt.ListPodSandbox(api_pb2.ListPodSandboxRequest()).items
    assert [(p.id, p.state) for p in pods] == [(pod, api_pb2.SANDBOX_READY)]

    at_restart = len(numbers(log))
    wait_for("log lines after the restart", lambda: len(numbers(log)) >= at_restart + 3)
    seen = numbers(log)
    assert seen == list(range(len(seen))), "the log has a gap or a repeat"
    assert len(seen) > at_kill + 5  # lines from the outage are in it

    # attach still reaches the container's live stdout through its conmon
    last = numbers(log)[-1]
    out = attach_stdout(server, chatty, f"line {last + 2}\n")
    assert f"line {last + 2}\n" in out
    rt.StopContainer(api_pb2.StopContainerRequest(container_id=chatty, timeout=0))
    st = rt.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=chatty)).status
    assert (st.state, st.exit_code) == (api_pb2.CONTAINER_EXITED, 137)


def test_a_dead_conmon_is_noticed_while_sycri_runs(node, registry):
    server, _net, cg_root, _own = node
    rt = server.runtime()
    image = pull(server, registry, entrypoint=["/bin/sh", "-c"], cmd=["true"])
    signals = server.base / "signal"
    signals.mkdir()
    run = Pod.start(server, "monk", cg_root).run

    quiet = run(container("quiet", image, ["exec sleep 3600"]))
    waiter = run(waiter_config(image, signals))
    events = EventCounter(server).start()
    try:
        for cid in (quiet, waiter):
            pid = int((server.base / "root/containers" / cid / "conmon.pid").read_text())
            os.kill(pid, 9)

        def status(cid: str) -> api_pb2.ContainerStatus:
            return rt.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=cid)).status

        # Both run on without their monitor, and say so.
        for cid in (quiet, waiter):
            wait_for(f"{cid} marked unmonitored", lambda c=cid: status(c).message == UNMONITORED)
            assert status(cid).state == api_pb2.CONTAINER_RUNNING
        (signals / "go").touch()
        st = wait_state(rt, waiter, api_pb2.CONTAINER_EXITED, timeout=60)
        # No conmon saw the exit, and sycri is not the container's parent: the code is
        # unknown, and the status says so instead of passing 255 off as the real one.
        assert (st.exit_code, st.reason, st.message) == (255, "Error", LOST_EXIT)
        wait_for(
            "the STOPPED event", lambda: api_pb2.CONTAINER_STOPPED_EVENT in events.seen[waiter]
        )
    finally:
        events.stop()
    rt.StopContainer(api_pb2.StopContainerRequest(container_id=quiet, timeout=0))
    st = status(quiet)
    assert (st.state, st.exit_code) == (api_pb2.CONTAINER_EXITED, 137)


def test_a_squashfuse_image_outlives_sycris_cgroup(node, registry):
    """A SIF sycri did not build is served by squashfuse (``images.kernel_mount``), which
    every container of that image reads its files through: like conmon, it must not die
    with sycri's pod."""
    server, _net, cg_root, own = node
    rt = server.runtime()
    ref = pull(server, registry, entrypoint=["/bin/sh", "-c"], cmd=["true"])
    stored = server.images().ImageStatus(
        api_pb2.ImageStatusRequest(image=api_pb2.ImageSpec(image=ref)), timeout=30
    )
    sif_path = server.base / "foreign.sif"  # a copy is a SIF sycri did not build
    sif_path.write_bytes(
        (server.base / "root/images/sif" / (stored.image.id.split(":")[1] + ".sif")).read_bytes()
    )
    server.images().PullImage(
        api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=str(sif_path))), timeout=60
    )
    started = Pod.start(server, "fuse", cg_root)
    cfg, pod = started.cfg, started.id
    cid = started.run(container("chatty", str(sif_path), [COUNTER]))
    log = Path(cfg.log_directory) / "chatty/0.log"
    wait_for("the first lines", lambda: len(numbers(log)) >= 3)

    fuse = [
        int(p)
        for p in os.listdir("/proc")
        if p.isdigit()
        and _cmdline(int(p))[:1] == ["squashfuse"]
        and str(server.base) in " ".join(_cmdline(int(p)))
    ]
    assert len(fuse) == 1, "the image is not served by one squashfuse"
    assert fuse[0] not in own_cgroup.pids(own)
    assert cgroup_of(fuse[0]) != cgroup_of(server.proc.pid)
    fuse_leaves = [
        top / path.lstrip("/")
        for path in cgroup_of(fuse[0])
        if "sycri-mount-" in path
        for top in Path("/sys/fs/cgroup").iterdir()
        if (top / path.lstrip("/")).is_dir()
    ]
    assert fuse_leaves, "squashfuse is not in a leaf of its own"

    own_cgroup.kill_all(own)
    server.wait()
    at_kill = len(numbers(log))
    # Each line runs the image's `sleep`: lines keep coming only while squashfuse serves.
    wait_for("log lines written while sycri is down", lambda: len(numbers(log)) >= at_kill + 5)
    server.stop()
    server.start()
    rt = server.runtime()
    out = rt.ExecSync(api_pb2.ExecSyncRequest(container_id=cid, cmd=["/bin/echo", "still"]))
    assert (out.exit_code, out.stdout) == (0, b"still\n")
    rt.StopContainer(api_pb2.StopContainerRequest(container_id=cid, timeout=0))
    rt.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=cid))
    rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod))
    rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod))
    # The mount idles (images.mount_idle_seconds) until RemoveImage of its image.
    assert os.path.exists(f"/proc/{fuse[0]}"), "the idle mount's squashfuse went"
    server.images().RemoveImage(
        api_pb2.RemoveImageRequest(image=api_pb2.ImageSpec(image=str(sif_path)))
    )
    wait_for(
        "squashfuse gone with the image's mount", lambda: not os.path.exists(f"/proc/{fuse[0]}")
    )
    assert [leaf for leaf in fuse_leaves if leaf.exists()] == [], "squashfuse's cgroup was left"


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
    except OSError:
        return []
