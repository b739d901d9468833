"""Pod test plumbing: a private network (bridge, subnet) per test, helpers that look
inside namespaces, and counts of the host objects a pod may leak.

Other suites run on this machine at the same time, so everything here is named after
the test's own bridge, subnet and directories, and only those are counted or removed.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from sycri.api import api_pb2
from sycri.runtime import linux

CNI_BIN = "/usr/lib/cni"


def _used_networks() -> list[ipaddress.IPv4Network]:
    out = subprocess.run(
        ["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=True
    ).stdout
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
    nets = []
    for line in out.splitlines():
        nets.append(ipaddress.ip_interface(line.split()[3]).network)
    for line in routes.splitlines():
        first = line.split()[0]
        if first != "default":
            with contextlib.suppress(ValueError):
                nets.append(ipaddress.ip_network(first, strict=False))
    return nets


def free_subnet() -> str:
    """A /24 in 10.200.0.0-10.254.255.0 that no interface or route on the host uses."""
    used = _used_networks()
    for _ in range(200):
        net = ipaddress.ip_network(f"10.{random.randint(200, 254)}.{random.randint(0, 255)}.0/24")
        if not any(net.overlaps(u) for u in used):
            return str(net)
    raise RuntimeError("no free 10.2xx subnet on this host")


def free_subnet6() -> str:
    """A /64 in fd00::/8 that no interface or route on the host uses."""
    out = subprocess.run(["ip", "-6", "route"], capture_output=True, text=True).stdout
    used = []
    for line in out.splitlines():
        with contextlib.suppress(ValueError):
            used.append(ipaddress.ip_network(line.split()[0], strict=False))
    while True:
        net = ipaddress.ip_network(f"fd{random.randint(16, 255):02x}:{secrets.token_hex(2)}::/64")
        if not any(net.overlaps(u) for u in used if u.version == 6):
            return str(net)


@dataclass
class PodNet:
    """A test's own bridge and subnet."""

    bridge: str
    subnet: str

    @classmethod
    def new(cls) -> PodNet:
        return cls(f"syt{secrets.token_hex(5)}", free_subnet())

    def flags(self) -> list[str]:
        return [
            "--cni-default-bridge", self.bridge,
            "--cni-default-subnet", self.subnet,
            "--cni-bin-dirs", CNI_BIN,
        ]  # fmt: skip

    def prefix(self) -> str:
        return self.subnet.rsplit(".", 1)[0] + "."

    def cleanup(self) -> None:
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)


def unmount_all(base: Path) -> None:
    """Undo every mount under ``base`` (deepest first); for test teardown."""
    for target in sorted(linux.mount_targets_under(base), key=len, reverse=True):
        with contextlib.suppress(OSError):
            linux.umount(target, linux.MNT_DETACH)


def pod_config(
    name: str,
    *,
    uid: str | None = None,
    attempt: int = 0,
    hostname: str = "",
    host_network: bool = False,
    pid: int = api_pb2.CONTAINER,
    ports: list[tuple[int, int]] = (),
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    dns: api_pb2.DNSConfig | None = None,
    sysctls: dict[str, str] | None = None,
    cgroup_parent: str = "",
) -> api_pb2.PodSandboxConfig:
    cfg = api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(
            name=name, namespace="sycri-test", uid=uid or secrets.token_hex(8), attempt=attempt
        ),
        hostname=hostname,
        labels=labels or {},
        annotations=annotations or {},
        port_mappings=[
            api_pb2.PortMapping(container_port=c, host_port=h, protocol=api_pb2.TCP)
            for h, c in ports
        ],
    )
    if dns is not None:
        cfg.dns_config.CopyFrom(dns)
    ns = cfg.linux.security_context.namespace_options
    ns.network = api_pb2.NODE if host_network else api_pb2.POD
    ns.pid = pid
    ns.ipc = api_pb2.POD
    for k, v in (sysctls or {}).items():
        cfg.linux.sysctls[k] = v
    cfg.linux.cgroup_parent = cgroup_parent
    return cfg


# --- looking inside a pod's network namespace ---------------------------------------

_IN_NETNS = r"""
import ctypes, os, socket, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
if ctypes.CDLL(None, use_errno=True).setns(fd, 0x40000000) != 0:
    sys.exit("setns failed")
mode = sys.argv[2]
if mode == "listen":
    s = socket.socket(socket.AF_INET6); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", int(sys.argv[3]))); s.listen(8)
    print("ready", flush=True)
    while True:
        c, addr = s.accept(); peer = addr[0].removeprefix("::ffff:")
        c.sendall(sys.argv[4].encode() + b" " + peer.encode()); c.close()
elif mode == "connect":
    deadline = time.monotonic() + 10
    while True:
        try:
            c = socket.create_connection((sys.argv[3], int(sys.argv[4])), timeout=3)
            print(c.recv(200).decode()); break
        except OSError as exc:
            if time.monotonic() > deadline:
                sys.exit(f"connect failed: {exc}")
            time.sleep(0.1)
"""


def listen_in(netns: str, port: int, banner: str) -> subprocess.Popen:
    """A TCP server inside ``netns`` answering every connection with ``banner <peer ip>``."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _IN_NETNS, netns, "listen", str(port), banner],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        raise RuntimeError(f"listener in {netns} did not start: {line!r}")
    return proc


def connect_from(netns: str, host: str, port: int) -> str:
    r = subprocess.run(
        [sys.executable, "-c", _IN_NETNS, netns, "connect", host, str(port)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def connect_host(host: str, port: int, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=3) as c:
                return c.recv(200).decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def in_netns(netns: str, *argv: str) -> str:
    return subprocess.run(
        ["nsenter", f"--net={netns}", *argv], capture_output=True, text=True, check=True
    ).stdout


# --- leak accounting ------------------------------------------------------------------


@dataclass(frozen=True)
class Footprint:
    mounts: int
    ns_files: int
    veths: int
    iptables_rules: int
    cni_chains: frozenset[str]
    cgroups: int
    pod_dirs: int


def _iptables_save() -> str:
    out = ""
    for tool in ("iptables-save", "ip6tables-save"):
        out += subprocess.run([tool], capture_output=True, text=True).stdout
    return out


def footprint(run_dir: Path, net: PodNet, ids: set[str], cgroup_rel: str = "") -> Footprint:
    """Counts of what this test's pods could leave behind, and nothing else's."""
    rules = _iptables_save()
    mine = [
        line
        for line in rules.splitlines()
        if line.startswith("-A")
        and (net.prefix() in line or any(i in line for i in ids) or net.bridge in line)
    ]
    # Chains our rules live in or jump to (other runs' CNI chains are not ours to count).
    chains = frozenset(
        word
        for line in mine
        for word in line.split()
        if word.startswith("CNI-") and not word.startswith("CNI-HOSTPORT")
    )
    veths = subprocess.run(
        ["ip", "-o", "link", "show", "master", net.bridge], capture_output=True, text=True
    ).stdout
    pods = run_dir / "pods"
    ns_files = sum(1 for _ in pods.glob("*/ns/*")) if pods.exists() else 0
    # Below cgroup_rel (the parent the test's pods share): their own cgroups, which go
    # with them. The parent itself is shared and stays, as runc leaves it.
    cg = 0
    if cgroup_rel:
        for top in Path("/sys/fs/cgroup").iterdir():
            d = top / cgroup_rel.strip("/")
            if d.is_dir():
                cg += sum(1 for p in d.rglob("*") if p.is_dir())
    return Footprint(
        mounts=len(linux.mount_targets_under(run_dir)),
        ns_files=ns_files,
        veths=len([line for line in veths.splitlines() if line.strip()]),
        iptables_rules=len(mine),
        cni_chains=chains,
        cgroups=cg,
        pod_dirs=sum(1 for _ in pods.iterdir()) if pods.exists() else 0,
    )


def wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not os.path.exists(f"/proc/{pid}"):
            return True
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        except OSError:
            return True
        time.sleep(0.02)
    return False
