"""A pod's state as kubelet sees it through the socket: status calls read, never write;
a pod whose init exits says so on its own; a pod whose creation failed is never
forgotten before everything it made is gone."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from sycri.api import api_pb2
from sycri.runtime import linux

from tests.support.events import EventStream
from tests.support.node import remove_cgroups
from tests.support.pods import PodNet, footprint, pod_config, unmount_all, wait_gone
from tests.support.server import SycriServer

pytestmark = pytest.mark.root

R = api_pb2


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[SycriServer, PodNet, Path]]:
    net = PodNet.new()
    conf = tmp_path / "net.d"
    conf.mkdir()
    server = SycriServer(tmp_path / "s", flags=[*net.flags(), "--cni-conf-dir", str(conf)]).start()
    try:
        yield server, net, conf
    finally:
        if server.proc is not None and server.proc.poll() is None:
            rt = server.runtime()
            for p in rt.ListPodSandbox(R.ListPodSandboxRequest()).items:
                with_retry = R.RemovePodSandboxRequest(pod_sandbox_id=p.id)
                try:
                    rt.RemovePodSandbox(with_retry)
                except grpc.RpcError as exc:
                    print("cleanup:", exc)
        server.stop()
        unmount_all(tmp_path)
        net.cleanup()


def files_under(*dirs: Path) -> dict[str, tuple[int, int, int]]:
    """Every file and dir below ``dirs`` with its inode, size and mtime: an atomic
    rewrite changes the inode, an in-place write the mtime."""
    out = {}
    for d in dirs:
        for p in [d, *d.rglob("*")]:
            try:
                st = p.lstat()
            except FileNotFoundError:
                continue
            out[str(p)] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return out


def read_everything(rt, pod: str) -> R.PodSandboxStatusResponse:
    """What kubelet asks about a pod, every second: status (verbose too) and lists."""
    st = rt.PodSandboxStatus(R.PodSandboxStatusRequest(pod_sandbox_id=pod))
    rt.PodSandboxStatus(R.PodSandboxStatusRequest(pod_sandbox_id=pod, verbose=True))
    rt.ListPodSandbox(R.ListPodSandboxRequest())
    for state in (R.SANDBOX_READY, R.SANDBOX_NOTREADY):
        f = R.PodSandboxFilter(state=R.PodSandboxStateValue(state=state))
        rt.ListPodSandbox(R.ListPodSandboxRequest(filter=f))
    return st


def test_init_exit_makes_the_pod_notready_with_an_event_and_reads_never_write(node):
    server, _, _ = node
    rt = server.runtime()
    events = EventStream(server)
    pod = rt.RunPodSandbox(
        R.RunPodSandboxRequest(config=pod_config("fragile", pid=R.POD))
    ).pod_sandbox_id
    events.wait_for(pod, R.CONTAINER_STARTED_EVENT)
    verbose = rt.PodSandboxStatus(R.PodSandboxStatusRequest(pod_sandbox_id=pod, verbose=True))
    init_pid = json.loads(verbose.info["info"])["pid"]
    assert init_pid > 0
    state_dirs = (server.base / "root", server.base / "run")

    before = files_under(*state_dirs)
    for _ in range(3):
        assert read_everything(rt, pod).status.state == R.SANDBOX_READY
    assert files_under(*state_dirs) == before

    os.kill(init_pid, signal.SIGKILL)
    assert wait_gone(init_pid)
    # Nobody asks about the pod: sycri sees its init exit and tells kubelet.
    ev = events.wait_for(pod, R.CONTAINER_STOPPED_EVENT)
    assert ev.pod_sandbox_status.id == pod
    assert ev.pod_sandbox_status.state == R.SANDBOX_NOTREADY

    before = files_under(*state_dirs)
    for _ in range(3):
        assert read_everything(rt, pod).status.state == R.SANDBOX_NOTREADY
    assert files_under(*state_dirs) == before
    info = json.loads(
        rt.PodSandboxStatus(R.PodSandboxStatusRequest(pod_sandbox_id=pod, verbose=True)).info[
            "info"
        ]
    )
    assert "init" in info["reason"]
    events.close()

    # The state outlives a restart, and the pod is still removable.
    server.stop()
    server.start()
    assert rt_state(server, pod) == R.SANDBOX_NOTREADY
    server.runtime().RemovePodSandbox(R.RemovePodSandboxRequest(pod_sandbox_id=pod))
    assert server.runtime().ListPodSandbox(R.ListPodSandboxRequest()).items == []


def rt_state(server: SycriServer, pod: str) -> int:
    req = R.PodSandboxStatusRequest(pod_sandbox_id=pod)
    return server.runtime().PodSandboxStatus(req).status.state


# --- a RunPodSandbox whose undoing fails ---------------------------------------------

# A CNI plugin that fails its ADD after leaving a process in the pod's cgroup, so the
# cgroup cannot be removed (EBUSY) until that process is gone: a teardown failure of
# the kind a busy mount or a stuck process makes.
TRAP = """#!/bin/sh
if [ "$CNI_COMMAND" = ADD ]; then
  sleep 3600 </dev/null >/dev/null 2>&1 &
  echo $! > {pidfile}
  echo $! > {cgroup}/cgroup.procs
  echo '{{"cniVersion":"1.0.0","code":11,"msg":"trap: refused on purpose"}}'
  exit 1
fi
exit 0
"""


def trap_network(conf: Path, bin_dir: Path, cgroup: Path, pidfile: Path) -> None:
    bin_dir.mkdir()
    plugin = bin_dir / "trap"
    plugin.write_text(TRAP.format(pidfile=pidfile, cgroup=cgroup))
    plugin.chmod(0o755)
    doc = {"cniVersion": "1.0.0", "name": "trap", "plugins": [{"type": "trap"}]}
    (conf / "10-trap.conflist").write_text(json.dumps(doc))


def test_failed_run_keeps_its_record_until_its_teardown_really_finished(tmp_path):
    net = PodNet.new()
    conf = tmp_path / "net.d"
    conf.mkdir()
    cg_root = f"sycri-teardown-{secrets.token_hex(4)}"
    pids_cgroup = Path("/sys/fs/cgroup/pids") / cg_root / "pod"
    if not Path("/sys/fs/cgroup/pids").is_dir():
        pids_cgroup = Path("/sys/fs/cgroup") / cg_root / "pod"  # cgroup v2
    pidfile = tmp_path / "sleeper.pid"
    trap_network(conf, tmp_path / "cni-bin", pids_cgroup, pidfile)
    flags = [*net.flags(), "--cni-conf-dir", str(conf)]
    flags += ["--cni-bin-dirs", f"{tmp_path / 'cni-bin'},/usr/lib/cni"]
    server = SycriServer(tmp_path / "s", flags=flags).start()
    sleeper = 0
    try:
        rt = server.runtime()
        cfg = pod_config("doomed", cgroup_parent=f"/{cg_root}/pod")
        with pytest.raises(grpc.RpcError) as err:
            rt.RunPodSandbox(R.RunPodSandboxRequest(config=cfg))
        assert "refused on purpose" in (err.value.details() or "")
        sleeper = int(pidfile.read_text())

        # The pod is not forgotten: kubelet lists it NOTREADY, and the status names
        # what its teardown could not release yet.
        (item,) = rt.ListPodSandbox(R.ListPodSandboxRequest()).items
        assert item.metadata.name == "doomed" and item.state == R.SANDBOX_NOTREADY
        st = rt.PodSandboxStatus(R.PodSandboxStatusRequest(pod_sandbox_id=item.id, verbose=True))
        info = json.loads(st.info["info"])
        assert any(str(pids_cgroup) in what for what in info["teardownLeft"])
        assert "refused on purpose" in info["reason"]
        assert pids_cgroup.is_dir()

        # Still held: a RemovePodSandbox says so and keeps the record.
        with pytest.raises(grpc.RpcError) as err:
            rt.RemovePodSandbox(R.RemovePodSandboxRequest(pod_sandbox_id=item.id))
        assert str(pids_cgroup) in (err.value.details() or "")
        assert [p.id for p in rt.ListPodSandbox(R.ListPodSandboxRequest()).items] == [item.id]

        # The process leaves; kubelet's next StopPodSandbox finishes the teardown, and
        # its RemovePodSandbox then has nothing left to do.
        os.kill(sleeper, signal.SIGKILL)
        assert wait_gone(sleeper)
        rt.StopPodSandbox(R.StopPodSandboxRequest(pod_sandbox_id=item.id))
        assert rt.ListPodSandbox(R.ListPodSandboxRequest()).items == []
        rt.RemovePodSandbox(R.RemovePodSandboxRequest(pod_sandbox_id=item.id))
        fp = footprint(server.base / "run", net, {item.id}, cg_root)
        assert (fp.ns_files, fp.pod_dirs, fp.cgroups) == (0, 0, 0)
        assert linux.mount_targets_under(server.base / "run" / "pods") == []
        assert list((server.base / "root" / "sandboxes").iterdir()) == []
    finally:
        if sleeper:
            subprocess.run(["kill", "-9", str(sleeper)], capture_output=True)
        server.stop()
        unmount_all(tmp_path)
        remove_cgroups(cg_root)
        net.cleanup()
