"""Real cgroups and network namespaces for stats tests, always cleaned up.

Names carry a random token so parallel test runs on the same host never collide; every
process started here is killed by its own pid, and every cgroup, namespace and veth made
here is removed, even when the test fails.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from sycri.runtime.cgroups import cgroupstats

V1_CONTROLLERS = ("cpu", "cpuacct", "memory", "pids")

# Burns {secs} seconds of its own CPU time (however loaded the host is), says so, sleeps.
# Counted from the script's first line: the child's time between fork and joining its
# cgroup was charged elsewhere, so it must not count.
BURN = (
    "import sys,time\n"
    "t0=time.process_time()\n"
    "while time.process_time()-t0 < {secs}: pass\n"
    "sys.stdout.write('burnt\\n'); sys.stdout.flush()\n"
    "time.sleep(600)\n"
)
ALLOC = (
    "import sys,time\n"
    "b=bytearray({mib}*1024*1024)\n"
    "for i in range(0,len(b),4096): b[i]=1\n"
    "sys.stdout.write('ready\\n'); sys.stdout.flush()\n"
    "time.sleep(600)\n"
)


def token() -> str:
    return secrets.token_hex(4)


@dataclass
class RealCgroup:
    """A cgroup made for a test under ``rel`` (hierarchy path) on this host's layout."""

    layout: cgroupstats.CgroupLayout
    rel: str
    procs: list[subprocess.Popen] = field(default_factory=list)
    made: list[str] = field(default_factory=list)

    def create(self) -> RealCgroup:
        try:
            for d in self._dirs():
                os.makedirs(d)  # the name is unique: an existing one is an error
                self.made.append(d)
        except BaseException:
            self.remove()
            raise
        return self

    def _dirs(self) -> list[str]:
        rel = self.rel.strip("/")
        if self.layout.version == 2:
            assert self.layout.v2 is not None
            return [os.path.join(self.layout.v2[0], rel)]
        return [os.path.join(self.layout.v1[c][0], rel) for c in V1_CONTROLLERS]

    def set_memory_limit(self, limit: int) -> None:
        if self.layout.version == 2:
            Path(self._dirs()[0], "memory.max").write_text(str(limit))
        else:
            Path(
                self.layout.v1["memory"][0], self.rel.strip("/"), "memory.limit_in_bytes"
            ).write_text(str(limit))

    def spawn(self, code: str) -> subprocess.Popen:
        """A Python child placed in this cgroup before it runs ``code``."""
        dirs = self._dirs()

        def enter() -> None:
            for d in dirs:
                with open(os.path.join(d, "cgroup.procs"), "w") as f:
                    f.write(str(os.getpid()))

        p = subprocess.Popen(
            ["python3", "-c", code], preexec_fn=enter, stdout=subprocess.PIPE, text=True
        )
        self.procs.append(p)
        return p

    def kill_all(self) -> None:
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGKILL)
        for p in self.procs:
            with contextlib.suppress(Exception):
                p.wait(10)
            if p.stdout:
                p.stdout.close()
        self.procs.clear()

    def remove(self) -> None:
        self.kill_all()
        for d in reversed(self.made):
            for _ in range(50):
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.05)  # tasks still exiting
        self.made.clear()


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=30)


@dataclass
class RealNetns:
    """A named netns with a veth to the host and an address on each end."""

    name: str
    host_if: str
    pod_if: str = "eth0"
    host_ip: str = ""
    pod_ip: str = ""

    @property
    def path(self) -> str:
        return f"/run/netns/{self.name}"

    @classmethod
    def create(cls) -> RealNetns:
        t = token()
        # 198.18.0.0/15 is reserved for benchmarking: no real network uses it.
        a, b = secrets.randbelow(2), secrets.randbelow(256)
        c = secrets.randbelow(64) * 4
        ns = cls(name=f"ntst-{t}", host_if=f"ntv{t}", host_ip=f"198.{18 + a}.{b}.{c + 1}",
                 pod_ip=f"198.{18 + a}.{b}.{c + 2}")  # fmt: skip
        try:
            run("ip", "netns", "add", ns.name)
            run("ip", "link", "add", ns.host_if, "type", "veth", "peer", "name", f"ntp{t}")
            run("ip", "link", "set", f"ntp{t}", "netns", ns.name)
            run("ip", "-n", ns.name, "link", "set", f"ntp{t}", "name", ns.pod_if)
            run("ip", "-n", ns.name, "addr", "add", f"{ns.pod_ip}/30", "dev", ns.pod_if)
            run("ip", "-n", ns.name, "link", "set", ns.pod_if, "up")
            run("ip", "-n", ns.name, "link", "set", "lo", "up")
            run("ip", "addr", "add", f"{ns.host_ip}/30", "dev", ns.host_if)
            run("ip", "link", "set", ns.host_if, "up")
        except BaseException:
            ns.remove()
            raise
        return ns

    def ping_host(self, count: int, size: int) -> None:
        """``count`` echo requests from inside the namespace to the host end (and replies)."""
        run("ip", "netns", "exec", self.name, "busybox", "ping", "-c", str(count), "-s",
            str(size), "-W", "2", self.host_ip)  # fmt: skip

    def remove(self) -> None:
        run("ip", "link", "del", self.host_if, check=False)
        run("ip", "netns", "del", self.name, check=False)


# ---------------------------------------------------------------- in-test stores
# Small implementations of the Protocols the stats and events handlers need from
# node.containers and node.sandboxes; the data they point at (cgroups, namespaces,
# directories) is real.


@dataclass
class StaticContainers:
    items: dict = field(default_factory=dict)  # id -> ContainerInfo

    def stats_containers(self):
        return list(self.items.values())

    def container_statuses(self, pod_sandbox_id: str):
        from sycri.api import api_pb2

        return [
            api_pb2.ContainerStatus(
                id=c.id,
                metadata=api_pb2.ContainerMetadata(name=c.name, attempt=c.attempt),
                state=api_pb2.CONTAINER_RUNNING if c.running else api_pb2.CONTAINER_EXITED,
                labels=dict(c.labels),
            )
            for c in self.items.values()
            if c.pod_sandbox_id == pod_sandbox_id
        ]


@dataclass
class StaticPods:
    items: dict = field(default_factory=dict)  # id -> PodInfo

    def stats_pods(self):
        return list(self.items.values())

    def pod_sandbox_status(self, pod_sandbox_id: str):
        from sycri.api import api_pb2

        p = self.items.get(pod_sandbox_id)
        if p is None:
            return None
        return api_pb2.PodSandboxStatus(
            id=p.id,
            metadata=api_pb2.PodSandboxMetadata(
                name=p.name, uid=p.uid, namespace=p.namespace, attempt=p.attempt
            ),
            state=api_pb2.SANDBOX_READY if p.ready else api_pb2.SANDBOX_NOTREADY,
        )
