"""Debian's containerd as "the node's existing runtime" (the proxy's tests) and as the
reference runtime of ``bench/side_by_side.py``: its own socket, root, state, runc root,
CNI conf dir, bridge and subnet, and a pause image from the test registry."""

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
PAUSE_REPO = "proxy-test/pause"


def pause_image() -> oci.Image:
    """The sandbox image: busybox's sleep as the pod's first process (containerd kills it
    with SIGKILL when the pod stops, so it needs no signal handling)."""
    return oci.busybox_image(entrypoint=["/bin/sleep", "2147483647"], cmd=[])


def _config(
    base: Path, net: PodNet, registry_host: str, pause: str, plain_http: tuple[str, ...] = ()
) -> str:
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    mirrors = "".join(
        f'[{cri}.registry.mirrors."{host}"]\n  endpoint = ["http://{host}"]\n'
        for host in (registry_host, *plain_http)
    )
    return f"""\
version = 2
root = "{base}/root"
state = "{base}/state"
disabled_plugins = ["io.containerd.internal.v1.tracing", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
                    "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "{base}/containerd.sock"
[ttrpc]
  address = "{base}/containerd.sock.ttrpc"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{base}/opt"
[{cri}]
  sandbox_image = "{pause}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_cdi = false
  # the tests run where a negative oom_score_adj is refused; containerd clamps to its own
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
{mirrors}"""


def _private_mounts(base: Path, argv: list[str]) -> list[str]:
    """``argv`` in a mount namespace of its own where /run/netns and /run/containerd are
    the test's: containerd 1.6 puts pod network namespaces and shim sockets at those
    fixed paths, and another runtime's (or test's) mounts there must not change a result.
    When containerd and its shims are gone, their mounts go with the namespace."""
    script = (
        f"mount -t tmpfs -o mode=0755 sycri-test-netns /run/netns"
        f" && mount --bind {shlex.quote(str(base / 'run'))} /run/containerd"
        f' && exec "$@"'
    )
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *argv]


def _cni_conf(net: PodNet, ip_masq: bool = False) -> str:
    return json.dumps(
        {
            "cniVersion": "1.0.0",
            "name": f"ctrd-{net.bridge}",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": net.bridge,
                    "isGateway": True,
                    "ipMasq": ip_masq,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": net.subnet}]],
                        "dataDir": "/run/cni-ipam-" + net.bridge,
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }
    )


@dataclass
class Containerd:
    base: Path
    net: PodNet
    # The benches give containerd the masquerading bridge sycri's built-in network has
    # (as containerd's own example conflist does), so both pay for the same NAT rules.
    ip_masq: bool = False
    proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"unix://{self.base}/containerd.sock"

    def runtime(self, channel: grpc.Channel) -> api_pb2_grpc.RuntimeServiceStub:
        return api_pb2_grpc.RuntimeServiceStub(channel)

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.base / "containerd.log").read_text(errors="replace")[-6000:]
        return ""

    def start(
        self, registry_host: str, pause: str, timeout: float = 60, plain_http: tuple[str, ...] = ()
    ) -> None:
        (self.base / "net.d").mkdir(parents=True, exist_ok=True)
        (self.base / "net.d" / "10-test.conflist").write_text(_cni_conf(self.net, self.ip_masq))
        conf = self.base / "config.toml"
        conf.write_text(_config(self.base, self.net, registry_host, pause, plain_http))
        log = open(self.base / "containerd.log", "ab")  # noqa: SIM115 - handed to the child
        (self.base / "run").mkdir(exist_ok=True)
        self.proc = subprocess.Popen(
            _private_mounts(self.base, [BINARY, "--config", str(conf)]),
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.endpoint) as ch:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"containerd exited {self.proc.returncode}:\n{self.log()}")
                try:
                    self.runtime(ch).Version(api_pb2.VersionRequest(), timeout=2)
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
        return _shim_pids(self.base)

    def disk_paths(self) -> list[Path]:
        """Where an image's bytes live: the content store, overlay snapshots, metadata."""
        root = self.base / "root"
        return [
            root / "io.containerd.content.v1.content",
            root / "io.containerd.snapshotter.v1.overlayfs",
            root / "io.containerd.metadata.v1.bolt",
        ]

    def remove_pods(self) -> None:
        with grpc.insecure_channel(self.endpoint) as ch:
            rt = self.runtime(ch)
            for pod in rt.ListPodSandbox(api_pb2.ListPodSandboxRequest(), timeout=30).items:
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


@contextlib.contextmanager
def containerd(
    base: Path,
    registry,
    cgroup_root: str,
    plain_http: tuple[str, ...] = (),
    ip_masq: bool = False,
) -> Iterator[Containerd]:
    """containerd under ``base``, its pods' cgroups under ``cgroup_root``; afterwards
    every pod removed, containerd stopped, its mounts, dirs, bridge and cgroups gone.
    ``plain_http``: more registries (host:port) it may pull from over plain HTTP;
    ``ip_masq``: its bridge masquerades pod traffic, as sycri's built-in network does."""
    oci.push(registry, PAUSE_REPO, "3.9", pause_image())
    made = []  # mount points for the private namespace, removed again if made here
    for d in (Path("/run/netns"), Path("/run/containerd")):
        if not d.exists():
            d.mkdir(mode=0o711)
            made.append(d)
    ctrd = Containerd(base, PodNet.new(), ip_masq=ip_masq)
    try:
        ctrd.start(registry.host, f"{registry.host}/{PAUSE_REPO}:3.9", plain_http=plain_http)
        try:
            yield ctrd
        finally:
            ctrd.remove_pods()
    finally:
        ctrd.stop()
        _kill_shims(base)
        _kill_cgroup(cgroup_root)
        unmount_all(base)
        ctrd.net.cleanup()
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree("/run/cni-ipam-" + ctrd.net.bridge, ignore_errors=True)
        remove_cgroups(cgroup_root)
        for d in made:
            with contextlib.suppress(OSError):
                d.rmdir()


def _shim_pids(base: Path) -> list[int]:
    out = subprocess.run(
        ["pgrep", "-f", f"containerd-shim.*{base}"], capture_output=True, text=True
    )
    return [int(p) for p in out.stdout.split() if p.isdigit()]


def _kill_shims(base: Path) -> None:
    """containerd-shim-runc-v2 processes outlive containerd by design; ours go with it."""
    for pid in _shim_pids(base):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)


def _kill_cgroup(name: str) -> None:
    """Processes left in the test's pod cgroups (a teardown after a failed removal)."""
    for top in Path("/sys/fs/cgroup").iterdir():
        root = top / name
        if not root.is_dir():
            continue
        for procs in root.rglob("cgroup.procs"):
            for pid in procs.read_text().split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), 9)
    time.sleep(0.2)  # let the kernel reap them before the cgroups are removed
