"""HPC images through sycri's socket: a shared SIF store served in place (no pull, no
copy, never removed, a clear error when it goes away) and image volumes (CRI
``Mount.image``) from a store SIF and from an OCI image."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from sycri.api import api_pb2
from sycri.images.convert import CONFIG_OBJECT
from sycri.sif import JsonObject, PartitionObject, write_sif

from tests.support import oci
from tests.support.containers import busybox_rootfs
from tests.support.node import served
from tests.support.pods import pod_config
from tests.support.server import SycriServer
from tests.support.sif import make_squashfs

pytestmark = pytest.mark.root

# A name under a domain that never resolves (RFC 2606): any download attempt would fail.
STORE_NAME = "sifstore.invalid/hpc/app:1"
MARKER = "served from the shared store\n"


def store_sif(dest: Path, work: Path) -> Path:
    """A runnable SIF (static busybox) carrying ``/data/store.txt``."""
    tree = busybox_rootfs(work / "tree")
    (tree / "data/store.txt").write_text(MARKER)
    squash = make_squashfs(tree, work / "rootfs.squashfs")
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/sleep", "3600"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": []},
    }
    write_sif(
        dest,
        [
            PartitionObject(str(squash), arch="amd64"),
            JsonObject(CONFIG_OBJECT, json.dumps(config).encode()),
        ],
    )
    return dest


class Store:
    """A read-only tmpfs standing in for an NFS/Lustre mount: it can be unmounted."""

    def __init__(self, path: Path, work: Path) -> None:
        self.path = path
        self.work = work
        self.sif_bytes = b""

    def mount(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(self.path)], check=True
        )
        if not self.sif_bytes:
            self.sif_bytes = store_sif(self.work / "app.sif", self.work).read_bytes()
        (self.path / "app.sif").write_bytes(self.sif_bytes)
        (self.path / "sycri-index.yaml").write_text(f"images:\n  {STORE_NAME}: app.sif\n")
        subprocess.run(["mount", "-o", "remount,ro", str(self.path)], check=True)

    def unmount(self) -> None:
        subprocess.run(["umount", str(self.path)], check=True)


@pytest.fixture
def hpc_node() -> Iterator[tuple[SycriServer, Store]]:
    top = Path("/tmp") / f"syhpc-{secrets.token_hex(4)}"  # short: conmon socket paths
    (top / "work").mkdir(parents=True)
    store = Store(top / "store", top / "work")
    store.mount()
    try:
        flags = [
            "--images-sif-stores", str(store.path),
            "--max-ulimits", "memlock=unlimited,stack=unlimited",
        ]  # fmt: skip
        with served(top / "n", flags=flags) as (server, _net):
            yield server, store
    finally:
        subprocess.run(["umount", "-l", str(store.path)], capture_output=True)
        subprocess.run(["rm", "-rf", str(top)], check=True)


def spec(image: str) -> api_pb2.ImageSpec:
    return api_pb2.ImageSpec(image=image)


def run_pod(server: SycriServer, image: str, mounts: list[api_pb2.Mount] = ()) -> tuple[str, str]:
    rt = server.runtime()
    cfg = pod_config("hpc-" + secrets.token_hex(3))
    cfg.log_directory = str(server.base / "logs" / cfg.metadata.uid)
    pod = rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
    c = api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name="main"),
        image=spec(image),
        command=["/bin/sleep", "3600"],
        log_path="main/0.log",
        mounts=list(mounts),
    )
    cid = rt.CreateContainer(
        api_pb2.CreateContainerRequest(pod_sandbox_id=pod, config=c, sandbox_config=cfg)
    ).container_id
    rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid))
    return pod, cid


def sh(server: SycriServer, cid: str, script: str) -> tuple[int, str, str]:
    out = server.runtime().ExecSync(
        api_pb2.ExecSyncRequest(container_id=cid, cmd=["/bin/sh", "-c", script], timeout=30)
    )
    return out.exit_code, out.stdout.decode(), out.stderr.decode()


def files_over(root: Path, size: int) -> list[str]:
    """Regular files under ``root`` at least ``size`` bytes (a copy of the SIF would be),
    not looking into mounts (a container's root filesystem shows the image's files)."""
    found = []
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not os.path.ismount(os.path.join(dirpath, d))]
        for name in files:
            p = os.path.join(dirpath, name)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            if os.path.isfile(p) and not os.path.islink(p) and st.st_size >= size:
                found.append(p)
    return found


def test_a_pod_runs_from_a_sif_store_with_no_pull_and_no_copy(hpc_node):
    server, store = hpc_node
    svc = server.images()
    sif_size = len(store.sif_bytes)

    pulled = svc.PullImage(api_pb2.PullImageRequest(image=spec(STORE_NAME)), timeout=60)
    status = svc.ImageStatus(api_pb2.ImageStatusRequest(image=spec(STORE_NAME), verbose=True))
    image = status.image
    assert image.id == pulled.image_ref
    assert list(image.repo_tags) == [STORE_NAME]
    assert image.pinned, "kubelet's image GC would be free to pick it"
    assert image.size == sif_size
    info = json.loads(status.info["info"])
    assert info["sifPath"] == str(store.path / "app.sif")
    assert info["sifStore"] == str(store.path)
    assert image.id in [i.id for i in svc.ListImages(api_pb2.ListImagesRequest()).images]

    _pod, cid = run_pod(server, image.id)
    assert sh(server, cid, "cat /data/store.txt") == (0, MARKER, "")
    # Nothing of the SIF's size under sycri's directories: used in place, not copied.
    assert files_over(server.base, sif_size) == []
    fs = svc.ImageFsInfo(api_pb2.ImageFsInfoRequest())
    assert fs.image_filesystems[0].used_bytes.value < sif_size

    with pytest.raises(grpc.RpcError) as err:
        svc.RemoveImage(api_pb2.RemoveImageRequest(image=spec(image.id)))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "read-only SIF store" in err.value.details()
    assert str(store.path) in err.value.details()
    assert sh(server, cid, "cat /data/store.txt") == (0, MARKER, "")


def test_a_store_that_goes_away_makes_its_images_unavailable(hpc_node):
    server, store = hpc_node
    svc = server.images()
    rt = server.runtime()
    image_id = svc.PullImage(api_pb2.PullImageRequest(image=spec(STORE_NAME))).image_ref
    store.unmount()  # the NFS mount is gone: an empty directory is left

    with pytest.raises(grpc.RpcError) as err:
        run_pod(server, image_id)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert f"SIF store {store.path}" in err.value.details()
    assert "unavailable" in err.value.details()
    assert rt.ListContainers(api_pb2.ListContainersRequest()).containers == []
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(server.base / "run/images/") not in mounts, "an image mount was left"

    with pytest.raises(grpc.RpcError) as err:
        svc.PullImage(api_pb2.PullImageRequest(image=spec(STORE_NAME)))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "is the file system mounted?" in err.value.details()
    assert not svc.ImageStatus(api_pb2.ImageStatusRequest(image=spec(STORE_NAME))).HasField("image")
    # Once the store was read again its image is not listed; kubelet's CreateContainer by
    # id still gets the reason, not "not present".
    with pytest.raises(grpc.RpcError) as err:
        run_pod(server, image_id)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "is the file system mounted?" in err.value.details()

    store.mount()  # back: the same bytes, the same image
    assert svc.PullImage(api_pb2.PullImageRequest(image=spec(STORE_NAME))).image_ref == image_id
    _pod, cid = run_pod(server, image_id)
    assert sh(server, cid, "cat /data/store.txt") == (0, MARKER, "")


def test_image_volumes_are_read_only_mounts_of_other_images(hpc_node, registry):
    server, _store = hpc_node
    svc = server.images()
    repo = "hpc/" + secrets.token_hex(4)
    dataset = oci.Image(
        layers=[oci.layer([oci.directory("dataset"), oci.file("dataset/README", "oci dataset\n")])]
    )
    oci.push(registry, repo, "v1", dataset)
    oci_id = svc.PullImage(
        api_pb2.PullImageRequest(image=spec(f"{registry.host}/{repo}:v1"))
    ).image_ref
    sif_id = svc.PullImage(api_pb2.PullImageRequest(image=spec(STORE_NAME))).image_ref

    volumes = [
        api_pb2.Mount(container_path="/opt/data", image=spec(oci_id), readonly=True),
        api_pb2.Mount(container_path="/opt/app", image=spec(sif_id), readonly=True),
        api_pb2.Mount(
            container_path="/opt/sub", image=spec(oci_id), readonly=True, image_sub_path="dataset"
        ),
    ]
    status = server.runtime().Status(api_pb2.StatusRequest(verbose=True))
    assert json.loads(status.info["features"])["imageVolumes"] is True
    _pod, cid = run_pod(server, sif_id, volumes)
    assert sh(server, cid, "cat /opt/data/dataset/README /opt/sub/README") == (
        0,
        "oci dataset\noci dataset\n",
        "",
    )
    assert sh(server, cid, "cat /opt/app/data/store.txt")[1] == MARKER
    code, _out, err = sh(server, cid, "touch /opt/data/x")
    assert code != 0 and "Read-only file system" in err
    # kubelet's image GC: an image used as a volume is not removed under the container,
    # also after sycri restarted
    server.stop()
    server.start()
    svc = server.images()
    assert sh(server, cid, "cat /opt/sub/README")[1] == "oci dataset\n"
    with pytest.raises(grpc.RpcError) as refused:
        svc.RemoveImage(api_pb2.RemoveImageRequest(image=spec(oci_id)))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"{cid} (as an image volume)" in refused.value.details()

    rt = server.runtime()
    rt.StopContainer(api_pb2.StopContainerRequest(container_id=cid, timeout=0))
    rt.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=cid))
    svc.RemoveImage(api_pb2.RemoveImageRequest(image=spec(oci_id)))
    assert not svc.ImageStatus(api_pb2.ImageStatusRequest(image=spec(oci_id))).HasField("image")
    mounts = Path("/proc/self/mountinfo").read_text()
    oci_mount = server.base / "run/images" / oci_id.split(":")[1]
    assert f" {oci_mount} " not in mounts, "the removed image's mount was left"
    # The store's image (never removed) idles (images.mount_idle_seconds) until sycri
    # stops cleanly.
    assert f" {server.base / 'run/images' / sif_id.split(':')[1]} " in mounts
    assert server.stop() == 0
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(server.base / "run/images/") not in mounts, "an image mount was left"
    server.start()


def test_bad_image_volumes_get_precise_answers(hpc_node):
    server, _store = hpc_node
    sif_id = server.images().PullImage(api_pb2.PullImageRequest(image=spec(STORE_NAME))).image_ref
    cases = [
        (
            api_pb2.Mount(container_path="/v", image=spec(sif_id)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "image volume at '/v' must be readonly",
        ),
        (
            api_pb2.Mount(container_path="/v", image=spec("sha256:" + "0" * 64), readonly=True),
            grpc.StatusCode.NOT_FOUND,
            "image volume at '/v': image",
        ),
        (
            api_pb2.Mount(
                container_path="/v", image=spec(sif_id), readonly=True, image_sub_path="nope"
            ),
            grpc.StatusCode.NOT_FOUND,
            "image_sub_path 'nope' does not exist",
        ),
        (
            api_pb2.Mount(
                container_path="/v", image=spec(sif_id), readonly=True, image_sub_path="../.."
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "escapes",
        ),
    ]
    for mount, code, words in cases:
        with pytest.raises(grpc.RpcError) as err:
            run_pod(server, sif_id, [mount])
        assert err.value.code() == code, err.value.details()
        assert words in err.value.details()
    assert server.runtime().ListContainers(api_pb2.ListContainersRequest()).containers == []
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(server.base / "run/images/") not in mounts, "an image mount was left"


def test_an_mpi_pod_gets_the_limits_and_shared_memory_hpc_md_describes(hpc_node):
    """docs/hpc.md's MPI pod, as kubelet sends it: rlimits set within the node's policy,
    a sized /dev/shm both containers share; a raise past the ceiling is refused naming
    the rlimit."""
    server, _store = hpc_node
    rt = server.runtime()
    sif_id = server.images().PullImage(api_pb2.PullImageRequest(image=spec(STORE_NAME))).image_ref
    cfg = pod_config(
        "mpi",
        annotations={
            # memlock=unlimited needs CAP_SYS_RESOURCE in sycri's bounding set, which this
            # machine's root lacks (a privileged DaemonSet has it): stack and nofile show
            # the same rule.
            "sycri.io/ulimits": "stack=unlimited,nofile=4096:4096",
            "sycri.io/shm-size": "256Mi",
        },
    )
    cfg.log_directory = str(server.base / "logs" / cfg.metadata.uid)
    pod = rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
    ranks = []
    for name in ("rank-0-1", "rank-2-3"):
        c = api_pb2.ContainerConfig(
            metadata=api_pb2.ContainerMetadata(name=name),
            image=spec(sif_id),
            command=["/bin/sleep", "3600"],
            log_path=f"{name}/0.log",
        )
        cid = rt.CreateContainer(
            api_pb2.CreateContainerRequest(pod_sandbox_id=pod, config=c, sandbox_config=cfg)
        ).container_id
        rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid))
        ranks.append(cid)
    for cid in ranks:
        assert sh(server, cid, "ulimit -s; ulimit -n; ulimit -H -n") == (
            0,
            "unlimited\n4096\n4096\n",
            "",
        )
        code, out, _ = sh(server, cid, "df -k /dev/shm | tail -1")
        assert code == 0 and out.split()[1] == str(256 * 1024), out
    assert sh(server, ranks[0], "echo segment > /dev/shm/mpi-seg")[0] == 0
    assert sh(server, ranks[1], "cat /dev/shm/mpi-seg") == (0, "segment\n", "")

    greedy = pod_config("greedy", annotations={"sycri.io/ulimits": "rtprio=99"})
    greedy.log_directory = str(server.base / "logs" / greedy.metadata.uid)
    gpod = rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=greedy)).pod_sandbox_id
    c = api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name="x"), image=spec(sif_id), log_path="x/0.log"
    )
    with pytest.raises(grpc.RpcError) as err:
        rt.CreateContainer(
            api_pb2.CreateContainerRequest(pod_sandbox_id=gpod, config=c, sandbox_config=greedy)
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "rtprio hard limit 99 is above the node's" in err.value.details()
