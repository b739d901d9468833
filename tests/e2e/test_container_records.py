"""A container's records through the socket: reads answer from memory and never write,
the exit monitor alone records an exit and publishes it; records of the previous sycri
and of a newer one are read without losing a container; an unreadable one never costs
the container its life.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sycri.api import api_pb2

from tests.e2e.test_containers_cri import container, pull
from tests.support.load import EventCounter
from tests.support.node import served
from tests.support.pods import pod_config
from tests.support.server import SycriServer
from tests.support.telemetry import scrape, value

pytestmark = pytest.mark.root

# Every field of a container record as the sycri before the split wrote it (state.json).
OLD_FIELDS = {
    "id", "pod_id", "name", "attempt", "image_id", "image_ref", "runtime_handler", "bundle",
    "log_path", "config_b64", "created_at", "state", "started_at", "finished_at",
    "exit_code", "reason", "message", "pid", "stop_signal", "uid", "gid", "groups",
    "resources", "cgroup_path", "removing",
}  # fmt: skip


class Node:
    def __init__(self, server: SycriServer, cg_root: str) -> None:
        self.server = server
        self.cg_root = cg_root
        self.cfg = pod_config("rec", cgroup_parent=f"/{cg_root}/pod")
        self.cfg.log_directory = str(server.base / "logs")
        self.pod = ""

    @property
    def rt(self):
        return self.server.runtime()

    def run(self, name: str, image: str, script: str, **kw) -> str:
        if not self.pod:
            req = api_pb2.RunPodSandboxRequest(config=self.cfg)
            self.pod = self.rt.RunPodSandbox(req).pod_sandbox_id
        req = api_pb2.CreateContainerRequest(
            pod_sandbox_id=self.pod, config=container(name, image, [script], **kw),
            sandbox_config=self.cfg,
        )  # fmt: skip
        cid = self.rt.CreateContainer(req).container_id
        self.rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid))
        return cid

    def status(self, cid: str) -> api_pb2.ContainerStatus:
        return self.rt.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=cid)).status

    def record_dir(self, cid: str) -> Path:
        return self.server.base / "root/containers" / cid

    def restart(self) -> None:
        self.server.stop()  # SIGTERM: as a DaemonSet rollout replaces sycri
        self.server.start()

    def metrics(self) -> str:
        """The metrics URL the running sycri logged last (each start binds a new port)."""
        urls = re.findall(r"metrics on (http://\S+/metrics)", self.server.log_path.read_text())
        assert urls, "sycri logged no metrics address"
        return urls[-1]


@pytest.fixture
def node() -> Iterator[Node]:
    base = Path("/tmp") / f"syrec-{secrets.token_hex(4)}"
    cg_root = f"sycri-rec-{secrets.token_hex(4)}"
    flags = ["--metrics-address", "127.0.0.1:0"]
    with served(base, cgroup_root=cg_root, flags=flags) as (server, _net):
        yield Node(server, cg_root)


def files_under(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every file under ``root`` (mounts below it not entered): inode, size, mtime."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not os.path.ismount(os.path.join(dirpath, d))]
        for name in filenames:
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            out[path] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return out


def all_reads(node: Node, cid: str) -> list[api_pb2.ContainerState]:
    """Every read RPC kubelet makes about containers; the states they report."""
    rt = node.rt
    states = [c.state for c in rt.ListContainers(api_pb2.ListContainersRequest()).containers]
    states.append(node.status(cid).state)
    pod = rt.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id=node.pod))
    states += [c.state for c in pod.containers_statuses]
    rt.ListContainerStats(api_pb2.ListContainerStatsRequest())
    rt.ContainerStats(api_pb2.ContainerStatsRequest(container_id=cid))
    rt.ListPodSandboxStats(api_pb2.ListPodSandboxStatsRequest())
    return states


def test_reads_never_write_and_the_exit_monitor_alone_records_an_exit(node, registry):
    image = pull(node.server, registry, entrypoint=["/bin/sh", "-c"], cmd=["true"])
    signals = node.server.base / "signal"
    signals.mkdir()
    waiter = node.run(
        "waiter",
        image,
        "while [ ! -e /signal/go ]; do sleep 0.1; done; exit 7",
        mounts=[api_pb2.Mount(container_path="/signal", host_path=str(signals))],
    )
    # The container's records become read-only mounts: any write sycri makes to them
    # (an atomic rename onto a mount point) fails. Whatever they are called: the sycri
    # before the split had one state.json.
    names = ("state.json", "meta.json", "status.json")
    records = [f for f in node.record_dir(waiter).iterdir() if f.name in names]
    assert records
    for f in records:
        subprocess.run(["mount", "--bind", str(f), str(f)], check=True)
    try:
        for f in records:
            subprocess.run(["mount", "-o", "remount,bind,ro", str(f)], check=True)
        events = EventCounter(node.server).start()
        try:
            (signals / "go").touch()
            exit_file = node.server.base / "run/exits" / waiter
            deadline = time.monotonic() + 30
            while not exit_file.exists():
                assert time.monotonic() < deadline, "conmon wrote no exit file"
                time.sleep(0.05)
            # The exit is on disk but not in sycri's records: reads answer from memory
            # (still running), without an error, and publish nothing.
            for _ in range(5):
                states = all_reads(node, waiter)
                assert set(states) == {api_pb2.CONTAINER_RUNNING}, states
            assert api_pb2.CONTAINER_STOPPED_EVENT not in events.seen[waiter]
        finally:
            for f in records:
                subprocess.run(["umount", str(f)], check=True)
        # The exit monitor records it once it can, and publishes STOPPED: nobody asks
        # for a status meanwhile.
        deadline = time.monotonic() + 30
        while api_pb2.CONTAINER_STOPPED_EVENT not in events.seen[waiter]:
            assert time.monotonic() < deadline, "no STOPPED event"
            time.sleep(0.05)
    finally:
        events.stop()
    # The exit's release (runc's container, conmon's cgroup, the rootfs mount) is the
    # exit monitor's too, in the background: done once the rootfs is unmounted.
    rootfs = str(node.record_dir(waiter) / "rootfs")
    deadline = time.monotonic() + 30
    while rootfs in Path("/proc/self/mountinfo").read_text():
        assert time.monotonic() < deadline, "the exited container was not released"
        time.sleep(0.05)
    root = node.server.base / "root"
    before = files_under(root)
    for _ in range(5):
        states = all_reads(node, waiter)
        assert set(states) == {api_pb2.CONTAINER_EXITED}, states
    assert files_under(root) == before, "a read RPC wrote under sycri's root"
    st = node.status(waiter)
    assert (st.exit_code, st.reason) == (7, "Error")


def test_a_record_of_the_previous_sycri_keeps_its_running_container(node, registry):
    """The DaemonSet upgrade path: the old sycri's one-file record is read and split,
    and its container is reported, runs on, and execs."""
    image = pull(node.server, registry, entrypoint=["/bin/sh", "-c"], cmd=["true"])
    cid = node.run("upgraded", image, "exec sleep 3600")
    node.server.stop()
    records = node.record_dir(cid)
    meta = json.loads((records / "meta.json").read_text())
    status = json.loads((records / "status.json").read_text())
    old = {**meta, **{k: v for k, v in status.items() if k != "oom_killed"}}
    assert set(old) == OLD_FIELDS
    (records / "state.json").write_text(json.dumps(old))
    (records / "meta.json").unlink()
    (records / "status.json").unlink()
    node.server.start()

    listed = node.rt.ListContainers(api_pb2.ListContainersRequest()).containers
    assert [(c.id, c.state) for c in listed] == [(cid, api_pb2.CONTAINER_RUNNING)]
    st = node.status(cid)
    assert (st.state, st.started_at, st.metadata.name) == (
        api_pb2.CONTAINER_RUNNING,
        status["started_at"],
        "upgraded",
    )
    out = node.rt.ExecSync(api_pb2.ExecSyncRequest(container_id=cid, cmd=["echo", "here"]))
    assert (out.exit_code, out.stdout) == (0, b"here\n")
    assert sorted(p.name for p in records.glob("*.json")) == [
        "config.json",
        "meta.json",
        "status.json",
    ]
    node.rt.StopContainer(api_pb2.StopContainerRequest(container_id=cid, timeout=0))
    assert node.status(cid).exit_code == 137


def metadata_file(records: Path) -> Path:
    """The file that holds the container's metadata (before the split: its one record)."""
    return records / "meta.json" if (records / "meta.json").exists() else records / "state.json"


def test_fields_of_a_newer_sycri_cost_no_container(node, registry):
    """A rollback: the records hold fields this sycri does not know."""
    image = pull(node.server, registry, entrypoint=["/bin/sh", "-c"], cmd=["true"])
    cid = node.run("rolled-back", image, "exec sleep 3600")
    node.server.stop()
    records = node.record_dir(cid)
    for f in (metadata_file(records), records / "status.json"):
        if f.exists():
            obj = json.loads(f.read_text())
            f.write_text(json.dumps({**obj, f"newer_{f.stem}": {"at": 1}}))
    node.server.start()
    assert node.status(cid).state == api_pb2.CONTAINER_RUNNING
    out = node.rt.ExecSync(api_pb2.ExecSyncRequest(container_id=cid, cmd=["echo", "ok"]))
    assert out.stdout == b"ok\n"
    node.rt.StopContainer(api_pb2.StopContainerRequest(container_id=cid, timeout=0))
    # The status written since keeps the field the newer sycri will want back.
    assert json.loads((records / "status.json").read_text())["newer_status"] == {"at": 1}
    assert json.loads((records / "meta.json").read_text())["newer_meta"] == {"at": 1}


def _alive(pid: int) -> bool:
    """Running (a zombie is a process that was killed)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def test_an_unreadable_record_is_quarantined_and_its_container_lives(node, registry):
    image = pull(node.server, registry, entrypoint=["/bin/sh", "-c"], cmd=["true"])
    cid = node.run("kept", image, "exec sleep 3600")
    records = node.record_dir(cid)
    pid = json.loads(next(records.glob("stat*.json")).read_text())["pid"]
    conmon_pid = int((records / "conmon.pid").read_text())
    node.server.stop()
    meta = metadata_file(records)
    good = meta.read_bytes()
    meta.write_bytes(good[: len(good) // 2])  # a torn write
    node.server.start()

    # Not listed (nothing can be said of it), but nothing of it was touched: the
    # process, its conmon, its rootfs, its exit and attach files.
    listed = node.rt.ListContainers(api_pb2.ListContainersRequest()).containers
    assert cid not in [c.id for c in listed]
    assert _alive(pid) and _alive(conmon_pid)
    assert os.path.ismount(records / "rootfs")
    assert (node.server.base / "run/s" / cid).exists()
    assert (records / "meta.json.unreadable").read_bytes() == good[: len(good) // 2]
    assert f"container {cid}: record" in node.server.log_path.read_text()
    samples = scrape(node.metrics())
    assert value(samples, "sycri_containers_quarantined") == 1

    # Still so after another restart; then the operator repairs the record.
    node.restart()
    assert _alive(pid) and _alive(conmon_pid)
    (records / "meta.json.unreadable").unlink()
    (records / "meta.json").write_bytes(good)
    node.restart()
    assert node.status(cid).state == api_pb2.CONTAINER_RUNNING
    assert value(scrape(node.metrics()), "sycri_containers_quarantined") == 0
