"""Debian's containerd (1.6, its CRI plugin) as the reference runtime for benches: its
own socket, root, state, runc root, CNI conf dir, bridge and subnet, and a pause image
pushed to the bench's registry. It runs in a private mount namespace where /run/netns
and /run/containerd are its own (containerd 1.6 uses those fixed paths), so nothing of
another containerd on the machine is seen or touched; afterwards pods, containerd, its
shims, mounts, dirs, bridge and cgroups are gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from sycri.api import api_pb2, api_pb2_grpc

from tests.support import oci
from tests.support.node import remove_cgroups
from tests.support.pods import CNI_BIN, PodNet, unmount_all

BINARY = "/usr/bin/containerd"
PAUSE = "bench/pause:3.9"


def _toml(base: Path, registry_host: str, pause: str) -> str:
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{base}/root"
state = "{base}/state"
disabled_plugins = ["io.containerd.internal.v1.tracing", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "{base}/c.sock"
[ttrpc]
  address = "{base}/c.sock.ttrpc"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{base}/opt"
[{cri}]
  sandbox_image = "{pause}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  restrict_oom_score_adj = true
[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[{cri}.containerd.runtimes.runc.options]
  Root = "{base}/runc"
  SystemdCgroup = false
[{cri}.cni]
  bin_dir = "{CNI_BIN}"
  conf_dir = "{base}/net.d"
  max_conf_num = 1
[{cri}.registry.mirrors."{registry_host}"]
  endpoint = ["http://{registry_host}"]
"""


def _conflist(net: PodNet) -> str:
    ipam = {"type": "host-local", "ranges": [[{"subnet": net.subnet}]]}
    ipam["dataDir"] = f"/run/cni-ipam-{net.bridge}"
    bridge = {"type": "bridge", "bridge": net.bridge, "isGateway": True, "ipam": ipam}
    return json.dumps(
        {
            "cniVersion": "1.0.0",
            "name": f"bench-{net.bridge}",
            "plugins": [bridge, {"type": "portmap", "capabilities": {"portMappings": True}}],
        }
    )


@dataclass
class ContainerdNode:
    base: Path
    net: PodNet
    proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"unix://{self.base}/c.sock"

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.base / "containerd.log").read_text(errors="replace")[-4000:]
        return ""

    def start(self, registry_host: str, timeout: float = 60) -> None:
        (self.base / "net.d").mkdir(parents=True)
        (self.base / "run").mkdir()
        (self.base / "net.d/10-bench.conflist").write_text(_conflist(self.net))
        conf = self.base / "config.toml"
        conf.write_text(_toml(self.base, registry_host, f"{registry_host}/{PAUSE}"))
        inner = (
            "mount -t tmpfs -o mode=0755 sycri-bench-netns /run/netns"
            f" && mount --bind {shlex.quote(str(self.base / 'run'))} /run/containerd"
            ' && exec "$@"'
        )
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", inner, "sh"]
        with open(self.base / "containerd.log", "ab") as log:
            self.proc = subprocess.Popen(
                [*argv, BINARY, "--config", str(conf)],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.endpoint) as ch:
            stub = api_pb2_grpc.RuntimeServiceStub(ch)
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"containerd exited {self.proc.returncode}:\n{self.log()}")
                try:
                    stub.Version(api_pb2.VersionRequest(), timeout=2)
                    return
                except grpc.RpcError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"containerd did not start:\n{self.log()}") from None
                time.sleep(0.1)

    def pid(self) -> int:
        """containerd's own pid (``unshare`` and ``sh`` exec into it)."""
        assert self.proc is not None
        return self.proc.pid

    def shim_pids(self) -> list[int]:
        out = subprocess.run(
            ["pgrep", "-f", f"containerd-shim-runc-v2 .*{self.base}/c.sock"],
            capture_output=True,
            text=True,
        )
        return [int(p) for p in out.stdout.split()]

    def disk_paths(self) -> list[Path]:
        """Where an image's bytes live: the content store and the overlay snapshots."""
        root = self.base / "root"
        return [
            root / "io.containerd.content.v1.content",
            root / "io.containerd.snapshotter.v1.overlayfs",
            root / "io.containerd.metadata.v1.bolt",
        ]

    def remove_pods(self) -> None:
        with grpc.insecure_channel(self.endpoint) as ch:
            rt = api_pb2_grpc.RuntimeServiceStub(ch)
            for pod in rt.ListPodSandbox(api_pb2.ListPodSandboxRequest(), timeout=60).items:
                rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod.id), timeout=60)
                rt.RemovePodSandbox(
                    api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod.id), timeout=60
                )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _kill_cgroup_procs(name: str) -> None:
    for top in Path("/sys/fs/cgroup").iterdir():
        root = top / name
        if root.is_dir():
            for procs in root.rglob("cgroup.procs"):
                for pid in procs.read_text().split():
                    with contextlib.suppress(ProcessLookupError, ValueError):
                        os.kill(int(pid), 9)
    time.sleep(0.2)


@contextlib.contextmanager
def containerd_node(base: Path, registry, cgroup_root: str) -> Iterator[ContainerdNode]:
    """containerd under ``base`` whose pods go under the cgroup ``cgroup_root``."""
    oci.push(
        registry,
        *PAUSE.split(":"),
        oci.busybox_image(entrypoint=["/bin/sleep", "2147483647"], cmd=[]),
    )
    made = []
    for d in (Path("/run/netns"), Path("/run/containerd")):
        if not d.exists():
            d.mkdir(mode=0o711)
            made.append(d)
    node = ContainerdNode(base, PodNet.new())
    try:
        node.start(registry.host)
        try:
            yield node
        finally:
            node.remove_pods()
    finally:
        node.stop()
        for pid in node.shim_pids():  # shims outlive containerd by design; these are ours
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        _kill_cgroup_procs(cgroup_root)
        unmount_all(base)
        node.net.cleanup()
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(f"/run/cni-ipam-{node.net.bridge}", ignore_errors=True)
        remove_cgroups(cgroup_root)
        for d in made:
            with contextlib.suppress(OSError):
                d.rmdir()
