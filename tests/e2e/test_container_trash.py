"""RemoveContainer's trash, through sycri's socket: once the call has returned nothing of
the container is left under its id (its bundle was renamed into ``<root>/trash``) and
the trash empties on its own; a start after ``kill -9`` empties it before serving,
never deleting through a mount or a symlink; a trash that cannot take a bundle (another
filesystem) means the bundle is deleted in place, before the reply."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from sycri.api import api_pb2

from tests.e2e.test_containers_cri import container, pull, wait_state
from tests.support.node import served
from tests.support.pods import pod_config
from tests.support.server import SycriServer

pytestmark = pytest.mark.root

# Writes a tree into the container's writable layer, then waits to be stopped.
WRITER = (
    "mkdir -p /junk/a/b && for i in $(seq 200); do echo $i > /junk/a/b/f$i; done; "
    "ln -s /etc /junk/etc-link; touch /junk/done; exec sleep 3600"
)


@pytest.fixture
def server() -> Iterator[SycriServer]:
    base = Path("/tmp") / f"sytr-{secrets.token_hex(4)}"  # short: conmon socket paths
    with served(base) as (srv, _net):
        try:
            yield srv
        finally:
            if srv.proc is None or srv.proc.poll() is not None:
                srv.stop()
                srv.start()


def trash_of(server: SycriServer) -> Path:
    return server.base / "root" / "trash"


def entries(d: Path) -> list[str]:
    return sorted(os.listdir(d)) if d.exists() else []


def named_after(server: SycriServer, cid: str, *, skip: Path | None = None) -> list[str]:
    """Every path under sycri's dirs (root and run) whose name holds ``cid``, and every
    mount whose target does; ``skip``: a dir not walked."""
    found = []
    for top in (server.base / "root", server.base / "run"):
        for d, dirs, files in os.walk(top):
            if skip is not None and Path(d) == skip:
                dirs[:] = []
                continue
            found += [os.path.join(d, n) for n in dirs + files if cid in n]
    with open("/proc/self/mountinfo") as f:
        found += [line.split(" ")[4] for line in f if cid in line.split(" ")[4]]
    return found


def running_writer(server: SycriServer, image: str) -> tuple[str, str]:
    """A pod whose container has written its tree: (pod id, container id)."""
    rt = server.runtime()
    cfg = pod_config("trash-" + secrets.token_hex(3))
    cfg.log_directory = str(server.base / "logs" / cfg.metadata.uid)
    pod = rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
    req = api_pb2.CreateContainerRequest(
        pod_sandbox_id=pod,
        config=container("w", image, ["/bin/sh", "-c", WRITER]),
        sandbox_config=cfg,
    )
    cid = rt.CreateContainer(req).container_id
    rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid))
    deadline = time.monotonic() + 30
    while True:
        res = rt.ExecSync(
            api_pb2.ExecSyncRequest(container_id=cid, cmd=["test", "-f", "/junk/done"])
        )
        if res.exit_code == 0:
            return pod, cid
        assert time.monotonic() < deadline, "the container never wrote its tree"
        time.sleep(0.1)


def wait_empty(d: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while entries(d):
        assert time.monotonic() < deadline, f"the trash keeps {entries(d)}"
        time.sleep(0.05)


@pytest.mark.parametrize("stop_first", [True, False], ids=["stopped", "running"])
def test_remove_leaves_nothing_under_the_id_and_the_trash_empties(server, registry, stop_first):
    image = pull(server, registry)
    rt = server.runtime()
    _pod, cid = running_writer(server, image)
    if stop_first:  # as kubelet: the exit releases runc's container and the rootfs first
        rt.StopContainer(api_pb2.StopContainerRequest(container_id=cid, timeout=0))
        wait_state(rt, cid, api_pb2.CONTAINER_EXITED)
    rt.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=cid))

    ids = [c.id for c in rt.ListContainers(api_pb2.ListContainersRequest()).containers]
    assert cid not in ids
    with pytest.raises(grpc.RpcError) as err:
        rt.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=cid))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    # At once: no bundle, exit file, attach entry or mount under its id (the trash aside).
    assert named_after(server, cid, skip=trash_of(server)) == []
    # Soon: the bundle with its writable layer is deleted too; the trash is left empty.
    wait_empty(trash_of(server))
    assert named_after(server, cid) == []
    assert not list((server.base / "root").rglob("f200"))  # no file the container wrote
    rt.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=cid))  # idempotent, as before


def test_a_start_after_kill_9_empties_the_trash_first(server, registry, tmp_path):
    """What a crash left in the trash is gone before sycri serves again; a symlink is
    removed, not followed, and a mount found in an entry is unmounted, never deleted
    through."""
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "precious").write_text("mine\n")
    server.signal(signal.SIGKILL)
    assert server.wait() == -signal.SIGKILL
    server.stop()
    trash = trash_of(server)
    tree = trash / ("0" * 64 + "-1a2b3c4d")
    (tree / "upper" / "a" / "b").mkdir(parents=True)
    for i in range(50):
        (tree / "upper" / "a" / "b" / f"f{i}").write_text(str(i))
    (tree / "upper" / "link").symlink_to(keep)
    (tree / "upper" / "mnt").mkdir()
    subprocess.run(["mount", "--bind", str(keep), str(tree / "upper" / "mnt")], check=True)
    try:
        (trash / "stray-file").write_text("x")
        (trash / "stray-link").symlink_to(keep / "precious")
        server.start()
        assert entries(trash) == []  # emptied before the socket answered
        assert (keep / "precious").read_text() == "mine\n"
        with open("/proc/self/mountinfo") as f:
            assert not [line for line in f if str(trash) in line.split(" ")[4]]
    finally:
        subprocess.run(["umount", "-l", str(tree / "upper" / "mnt")], capture_output=True)
    image = pull(server, registry)  # and it serves as before
    _pod, cid = running_writer(server, image)
    server.runtime().RemoveContainer(api_pb2.RemoveContainerRequest(container_id=cid))
    wait_empty(trash)


def test_a_trash_on_another_filesystem_deletes_the_bundle_in_place(server, registry):
    """rename(2) cannot cross filesystems: the bundle is deleted where it is, before the
    reply, and RemoveContainer succeeds as before."""
    trash = trash_of(server)
    trash.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "trash", str(trash)], check=True)
    try:
        image = pull(server, registry)
        rt = server.runtime()
        _pod, cid = running_writer(server, image)
        rt.StopContainer(api_pb2.StopContainerRequest(container_id=cid, timeout=0))
        rt.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=cid))
        assert named_after(server, cid) == []  # the trash included: nothing went there
        assert entries(trash) == []
        assert not list((server.base / "root").rglob("f200"))
        assert "deleting it in place" in server.log()
    finally:
        subprocess.run(["umount", "-l", str(trash)], check=True)
