"""Pod sandboxes with real namespaces, real CNI plugins (Debian's containernetworking-
plugins), real iptables and cgroups: what a pod's users would notice."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sycri.api import api_pb2
from sycri.config import CniConfig, Config
from sycri.errors import AlreadyExists, InvalidArgument, NotFound
from sycri.network import cni
from sycri.runtime.cgroups import cgroups
from sycri.runtime.pod import netcheck
from sycri.runtime.pod.sandbox import NOTREADY, READY
from sycri.runtime.pod.sandbox_manager import SandboxManager

from tests.support.node import remove_cgroups
from tests.support.pods import (
    PodNet,
    connect_from,
    connect_host,
    footprint,
    free_subnet6,
    listen_in,
    pod_config,
    unmount_all,
    wait_gone,
)

pytestmark = pytest.mark.root


@dataclass
class Env:
    base: Path
    net: PodNet
    loop: asyncio.AbstractEventLoop
    manager: SandboxManager
    conf_dir: Path

    def config(self, **cni_overrides) -> Config:
        return Config(
            root_dir=str(self.base / "root"),
            run_dir=str(self.base / "run"),
            pod_log_dir=str(self.base / "logs"),
            cni=CniConfig(
                bin_dirs=("/usr/lib/cni",),
                conf_dir=str(self.conf_dir),
                default_subnet=self.net.subnet,
                default_bridge=self.net.bridge,
                **cni_overrides,
            ),
        )

    def restart(self) -> SandboxManager:
        """A new manager over the same dirs, as a restarted sycri builds it."""
        self.manager.close()
        self.manager = SandboxManager(self.config(), "cgroupfs")
        self.call(self.manager.recover())
        return self.manager

    def call(self, coro):
        return self.loop.run_until_complete(coro)

    def run(self, cfg: api_pb2.PodSandboxConfig, handler: str = ""):
        return self.call(self.manager.run(cfg, handler))


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    net = PodNet.new()
    loop = asyncio.new_event_loop()
    conf = tmp_path / "net.d"
    conf.mkdir()
    e = Env(tmp_path, net, loop, None, conf)  # type: ignore[arg-type]
    e.manager = SandboxManager(e.config(), "cgroupfs")
    try:
        yield e
    finally:
        for sb in list(e.manager.list()) + [s for s in e.manager.store.all() if s.state != READY]:
            try:
                e.call(e.manager.remove(sb.id))
            except Exception as exc:  # keep cleaning
                print("cleanup:", exc)
        e.manager.close()
        loop.run_until_complete(asyncio.sleep(0))  # let cancelled tasks finish
        loop.close()
        unmount_all(tmp_path)
        net.cleanup()


def test_two_pods_reach_each_other_by_ip(env: Env):
    a = env.run(pod_config("alpha"))
    b = env.run(pod_config("beta"))
    assert a.ips[0].startswith(env.net.prefix()) and b.ips[0].startswith(env.net.prefix())
    assert a.ips != b.ips
    # The built-in network routes pod traffic through the host.
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == "1"
    server = listen_in(a.netns_path, 8080, "alpha")
    try:
        reply = connect_from(b.netns_path, a.ips[0], 8080)
    finally:
        server.kill()
        server.wait()
    # The server saw beta's own pod IP: pod-to-pod traffic is not masqueraded.
    assert reply == f"alpha {b.ips[0]}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_host_port_reaches_server_inside_pod_from_localhost(env: Env):
    port = _free_port()
    sb = env.run(pod_config("web", ports=[(port, 8080)]))
    server = listen_in(sb.netns_path, 8080, "inside")
    try:
        reply = connect_host("127.0.0.1", port)
    finally:
        server.kill()
        server.wait()
    assert reply.startswith("inside ")
    env.call(env.manager.stop(sb.id))
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


def test_host_network_pod_sees_host_interfaces(env: Env):
    sb = env.run(pod_config("hostnet", host_network=True, pid=api_pb2.POD))
    assert sb.netns_path is None and sb.uts_ns_path is None
    assert sb.ips == []
    assert sb.hostname == socket.gethostname()
    # The pod's init lives in the host's network namespace: it sees eth0 and lo.
    assert os.readlink(f"/proc/{sb.init_pid}/ns/net") == os.readlink("/proc/self/ns/net")
    devs = Path(f"/proc/{sb.init_pid}/net/dev").read_text()
    assert set(_ifnames(devs)) == set(_ifnames(Path("/proc/self/net/dev").read_text()))
    assert Path(sb.hosts_path).read_text() == Path("/etc/hosts").read_text()


def _ifnames(dev: str) -> list[str]:
    return [line.split(":")[0].strip() for line in dev.splitlines()[2:]]


def test_dns_hosts_hostname_and_shm(env: Env):
    dns = api_pb2.DNSConfig(
        servers=["10.96.0.10", "10.96.0.11"],
        searches=["ns1.svc.cluster.local", "svc.cluster.local"],
        options=["ndots:5", "edns0"],
    )
    sb = env.run(
        pod_config("dns", hostname="dns-host", dns=dns, annotations={"sycri.io/shm-size": "256Mi"})
    )
    assert Path(sb.resolv_path).read_text() == (
        "search ns1.svc.cluster.local svc.cluster.local\n"
        "nameserver 10.96.0.10\nnameserver 10.96.0.11\noptions ndots:5 edns0\n"
    )
    hosts = Path(sb.hosts_path).read_text()
    assert "127.0.0.1\tlocalhost\n" in hosts
    assert f"{sb.ips[0]}\tdns-host\n" in hosts
    assert Path(sb.hostname_path).read_text() == "dns-host\n"
    uts = subprocess.run(
        ["nsenter", f"--uts={sb.uts_ns_path}", "hostname"], capture_output=True, text=True
    )
    assert uts.stdout.strip() == "dns-host"
    st = os.statvfs(sb.shm_path)
    assert st.f_blocks * st.f_frsize == 256 * 1024 * 1024


def test_default_shm_is_64mi(env: Env):
    sb = env.run(pod_config("shm"))
    st = os.statvfs(sb.shm_path)
    assert st.f_blocks * st.f_frsize == 64 * 1024 * 1024


def test_sysctls_apply_inside_the_pod_only(env: Env):
    host_value = Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text()
    sb = env.run(
        pod_config(
            "sysctl",
            sysctls={"net.ipv4.ip_unprivileged_port_start": "53", "kernel.shm_rmid_forced": "1"},
        )
    )
    inside = subprocess.run(
        [
            "nsenter",
            f"--net={sb.netns_path}",
            "cat",
            "/proc/sys/net/ipv4/ip_unprivileged_port_start",
        ],
        capture_output=True,
        text=True,
    )
    assert inside.stdout.strip() == "53"
    ipc = subprocess.run(
        ["nsenter", f"--ipc={sb.ipc_ns_path}", "cat", "/proc/sys/kernel/shm_rmid_forced"],
        capture_output=True,
        text=True,
    )
    assert ipc.stdout.strip() == "1"
    assert Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text() == host_value


@pytest.mark.parametrize(
    ("sysctls", "host_network", "words"),
    [
        ({"kernel.pid_max": "4096"}, False, "not namespaced"),
        ({"vm.swappiness": "1"}, False, "not namespaced"),
        ({"net.ipv4.tcp_syncookies": "1"}, True, "host net"),
        ({"net.ipv4.no_such_thing": "1"}, False, "unknown"),
        ({"net.ipv4.ip_local_port_range": "banana"}, False, "refused"),
    ],
)
def test_unsafe_or_unknown_sysctls_are_refused_leaving_nothing(env, sysctls, host_network, words):
    before = footprint(env.base / "run", env.net, set())
    with pytest.raises(InvalidArgument, match=words):
        env.run(pod_config("bad", sysctls=sysctls, host_network=host_network))
    assert env.manager.list() == []
    after = footprint(env.base / "run", env.net, set())
    assert (after.ns_files, after.veths, after.pod_dirs) == (0, 0, 0)
    assert after.mounts <= max(before.mounts, 1)  # only the shared run dir itself


def test_shared_pid_namespace_has_catatonit_as_pid_1(env: Env):
    sb = env.run(pod_config("pidpod", pid=api_pb2.POD))
    status = Path(f"/proc/{sb.init_pid}/status").read_text()
    nspid = next(line for line in status.splitlines() if line.startswith("NSpid:")).split()
    assert nspid[-1] == "1"
    assert Path(f"/proc/{sb.init_pid}/comm").read_text().strip() == "catatonit"
    # catatonit lives in the pod's network namespace and its PID namespace is pinned.
    assert os.stat(f"/proc/{sb.init_pid}/ns/net").st_ino == os.stat(sb.netns_path).st_ino
    assert os.stat(f"/proc/{sb.init_pid}/ns/pid").st_ino == os.stat(sb.pid_ns_path).st_ino
    init = sb.init_pid
    env.call(env.manager.stop(sb.id))
    assert wait_gone(init)
    assert env.manager.get(sb.id).state == NOTREADY


def test_names_are_reserved_and_handlers_checked(env: Env):
    cfg = pod_config("same", uid="fixed-uid")
    sb = env.run(cfg)
    with pytest.raises(AlreadyExists, match="is reserved"):
        env.run(cfg)
    cfg2 = pod_config("same", uid="fixed-uid", attempt=1)
    assert env.run(cfg2).id != sb.id
    with pytest.raises(InvalidArgument, match=r"unknown runtime handler.*known handlers: runc"):
        env.run(pod_config("h"), handler="kata")
    env.call(env.manager.remove(sb.id))
    assert env.run(cfg).id != sb.id  # the name is free again


def test_ids_prefixes_and_idempotent_stop_remove(env: Env):
    sb = env.run(pod_config("ids"))
    assert len(sb.id) == 64 and all(c in "0123456789abcdef" for c in sb.id)
    assert env.manager.get(sb.id[:6]) is sb
    with pytest.raises(NotFound):
        env.manager.get("f" * 64 if not sb.id.startswith("f") else "0" * 64)
    env.call(env.manager.stop(sb.id[:10]))
    env.call(env.manager.stop(sb.id))  # twice is fine
    assert env.call(env.manager.remove(sb.id)) is True
    assert env.call(env.manager.remove(sb.id)) is False  # already gone: still succeeds
    with pytest.raises(NotFound):
        env.manager.get(sb.id)


def test_ambiguous_prefix_is_invalid_argument(env: Env):
    ids = [env.run(pod_config(f"amb{i}")).id for i in range(17)]
    firsts = {}
    for i in ids:
        firsts.setdefault(i[0], []).append(i)
    shared = next(k for k, v in firsts.items() if len(v) > 1)  # pigeonhole: 17 > 16
    with pytest.raises(InvalidArgument, match="ambiguous"):
        env.manager.get(shared)


def test_remove_running_pod_with_hooks_in_order(env: Env):
    calls: list[str] = []

    async def on_stop(pod_id: str) -> None:
        # Containers are stopped while the network is still up.
        calls.append("stop:" + str(env.manager.get(pod_id).network_up))

    async def on_remove(pod_id: str) -> None:
        calls.append("remove")

    env.manager.on_stop.append(on_stop)
    env.manager.on_remove.append(on_remove)
    sb = env.run(pod_config("hooks"))
    env.call(env.manager.remove(sb.id))
    assert calls == ["stop:True", "remove"]


def test_restart_lists_same_pods_and_del_works_after_restart(env: Env):
    port = _free_port()
    sb = env.run(pod_config("survivor", ports=[(port, 80)], pid=api_pb2.POD))
    stopped = env.run(pod_config("stopped"))
    env.call(env.manager.stop(stopped.id))
    ids = {sb.id, stopped.id}
    m2 = env.restart()
    states = {s.id: s.state for s in m2.list()}
    assert states == {sb.id: READY, stopped.id: NOTREADY}
    again = m2.get(sb.id)
    assert again.ips == sb.ips and again.init_pid == sb.init_pid
    env.call(m2.remove(sb.id))
    env.call(m2.remove(stopped.id))
    fp = footprint(env.base / "run", env.net, ids)
    assert (fp.veths, fp.iptables_rules, fp.ns_files, fp.pod_dirs) == (0, 0, 0, 0)


def test_pod_recorded_by_the_previous_version_survives_the_upgrade(env: Env):
    """A DaemonSet upgrade: a running pod whose record is the single ``sandbox.json`` of
    sycri before the metadata/status split is READY after the restart, its init watched,
    and removed without leaving anything."""
    port = _free_port()
    sb = env.run(pod_config("veteran", ports=[(port, 80)], pid=api_pb2.POD))
    d = env.base / "root" / "sandboxes" / sb.id
    legacy = {**json.loads((d / "metadata.json").read_text())}
    legacy.update(json.loads((d / "status.json").read_text()))
    for new_field in ("reason", "failed", "left"):  # the old version had none of these
        del legacy[new_field]
    (d / "sandbox.json").write_text(json.dumps(legacy))
    (d / "metadata.json").unlink()
    (d / "status.json").unlink()
    m2 = env.restart()
    again = m2.get(sb.id)
    assert (again.state, again.ips, again.init_pid) == (READY, sb.ips, sb.init_pid)
    assert again.network == sb.network and again.status.cgroup_created == []
    assert sorted(p.name for p in d.iterdir()) == ["metadata.json", "status.json"]
    heard: list[str] = []
    m2.on_exit.append(lambda pod: heard.append(pod.id))
    os.kill(sb.init_pid, 9)

    async def until_heard() -> None:
        while not heard:
            await asyncio.sleep(0.01)

    env.call(asyncio.wait_for(until_heard(), 20))
    assert m2.get(sb.id).state == NOTREADY
    env.call(m2.remove(sb.id))
    fp = footprint(env.base / "run", env.net, {sb.id})
    assert (fp.veths, fp.iptables_rules, fp.ns_files, fp.pod_dirs) == (0, 0, 0, 0)


def test_crash_during_creation_is_cleaned_up_at_start(env: Env):
    sb = env.run(pod_config("half"))
    sb.status.state = "creating"  # as if sycri died before replying
    env.call(env.manager.store.save_status(sb))
    m2 = env.restart()
    assert m2.list() == []
    fp = footprint(env.base / "run", env.net, {sb.id})
    assert (fp.veths, fp.iptables_rules, fp.ns_files, fp.pod_dirs) == (0, 0, 0, 0)


def test_teardown_a_restart_cannot_finish_is_kept_and_retried(env: Env):
    """Start-up recovery of a pod a crash left half-created, whose cgroup is busy: the
    record stays (listed NOTREADY, with what is left) instead of being forgotten, and
    the periodic retry finishes the teardown once the cgroup empties."""
    cg = f"sycri-test-{secrets.token_hex(4)}"
    sb = env.run(pod_config("stuck", cgroup_parent=f"/{cg}/pod"))
    busy = Path("/sys/fs/cgroup/pids") / cg / "pod"
    sleeper = subprocess.Popen(["sleep", "3600"])
    try:
        (busy / "cgroup.procs").write_text(str(sleeper.pid))
        sb.status.state = "creating"  # as if sycri died before replying
        env.call(env.manager.store.save_status(sb))
        env.manager.close()
        env.manager = SandboxManager(env.config(), "cgroupfs", retry_interval=0.05)
        env.call(env.manager.recover())
        (kept,) = env.manager.list()
        assert (kept.id, kept.state, kept.status.failed) == (sb.id, NOTREADY, True)
        assert any(str(busy) in what for what in kept.status.left)
        assert busy.is_dir()
        sleeper.kill()
        sleeper.wait()

        async def until_gone() -> None:
            while env.manager.store.find(sb.id) is not None:
                await asyncio.sleep(0.02)

        env.call(asyncio.wait_for(until_gone(), 20))
        assert env.manager.list() == []
        fp = footprint(env.base / "run", env.net, {sb.id}, cg)
        assert (fp.veths, fp.iptables_rules, fp.ns_files, fp.pod_dirs, fp.cgroups) == (
            0,
            0,
            0,
            0,
            0,
        )
        assert list((env.base / "root" / "sandboxes").iterdir()) == []
    finally:
        sleeper.kill()
        sleeper.wait()
        remove_cgroups(cg)


@pytest.fixture
def cg(env: Env) -> Iterator[str]:
    """A top-level cgroup of the test's own: afterwards its pods go (a failed test leaves
    them running in it), then every directory below it, then it."""
    name = f"sycri-test-{secrets.token_hex(4)}"
    yield name
    for sb in env.manager.store.all():
        with contextlib.suppress(Exception):
            env.call(env.manager.remove(sb.id))
    remove_cgroups(name)


def _hierarchies() -> list[str]:
    return [h.name for h in Path("/sys/fs/cgroup").iterdir() if (h / "cgroup.procs").exists()]


def _tree(top: str) -> set[str]:
    """Every directory at or below ``top`` in every hierarchy, as ``hierarchy/path``."""
    out: set[str] = set()
    for h in Path("/sys/fs/cgroup").iterdir():
        d = h / top
        if d.is_dir():
            out |= {str(p.relative_to(h.parent)) for p in [d, *d.rglob("*")] if p.is_dir()}
    return out


def _everywhere(*paths: str) -> set[str]:
    return {f"{h}/{p}" for h in _hierarchies() for p in paths}


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_pods_under_a_missing_parent_share_it_and_never_claim_it(env: Env, cg: str, caplog):
    """kubelet's path with parents nobody made yet (as in the v1 hierarchies kubelet
    leaves alone): the first pod's sycri makes them, yet they are every pod's. Removing
    the first pod takes only its own cgroup, quietly; the second keeps its own and the
    parents; after the last, only the shared parents are left (runc leaves them too)."""
    caplog.set_level(logging.WARNING, logger="sycri")
    qos = f"{cg}/kubepods/burstable"
    shared = _everywhere(cg, f"{cg}/kubepods", qos)
    first = env.run(pod_config("first", pid=api_pb2.POD, cgroup_parent=f"/{qos}/pod-a"))
    second = env.run(pod_config("second", pid=api_pb2.POD, cgroup_parent=f"/{qos}/pod-b"))
    assert shared | _everywhere(f"{qos}/pod-a", f"{qos}/pod-b") <= _tree(cg)
    of_second = {d for d in _tree(cg) if "/pod-b" in d}  # its cgroup and its init's leaf

    assert env.call(env.manager.remove(first.id))
    assert _warnings(caplog) == []
    assert _tree(cg) == shared | of_second
    assert [sb.id for sb in env.manager.list()] == [second.id]

    assert env.call(env.manager.remove(second.id))
    assert _warnings(caplog) == []
    assert _tree(cg) == shared


def test_a_parent_and_a_pod_cgroup_kubelet_made_stay_kubelets(env: Env, cg: str, caplog):
    """kubelet (the test) made the parent everywhere and the pod's own cgroup where it
    manages controllers (cpu, memory here). sycri makes the pod's cgroup in the other
    hierarchies only, writes no limit into kubelet's, and at removal takes only what
    it made."""
    caplog.set_level(logging.WARNING, logger="sycri")
    rel = f"{cg}/kubepods/pod-k"
    for h in _hierarchies():
        (Path("/sys/fs/cgroup") / h / cg / "kubepods").mkdir(parents=True)
    cpuset = Path("/sys/fs/cgroup/cpuset")
    for d in (cpuset / cg, cpuset / cg / "kubepods"):  # as kubelet's docs ask of its root
        for f in ("cpuset.cpus", "cpuset.mems"):
            (d / f).write_text((cpuset / f).read_text())
    cpu, mem = (Path("/sys/fs/cgroup") / h / rel for h in ("cpu", "memory"))
    cpu.mkdir()
    mem.mkdir()
    limit = (mem / "memory.limit_in_bytes").read_text()
    cfg = pod_config("kube", pid=api_pb2.POD, cgroup_parent=f"/{rel}")
    cfg.linux.resources.memory_limit_in_bytes = 64 * 2**20
    cfg.linux.resources.cpu_quota = 20000
    cfg.linux.resources.cpu_period = 100000
    sb = env.run(cfg)
    made = {f"{h}/{rel}" for h in _hierarchies() if h not in ("cpu", "memory")}
    recorded = env.manager.get(sb.id).status.cgroup_created
    assert {str(Path(d).relative_to("/sys/fs/cgroup")) for d in recorded} == made
    assert (mem / "memory.limit_in_bytes").read_text() == limit
    assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "-1"

    assert env.call(env.manager.remove(sb.id))
    assert _warnings(caplog) == []
    assert _tree(cg) == _everywhere(cg, f"{cg}/kubepods") | {f"cpu/{rel}", f"memory/{rel}"}


def test_a_pod_recorded_by_an_older_sycri_leaves_the_shared_parents(env: Env, cg: str, caplog):
    """An older sycri recorded the parents it made as the pod's too: removing such a pod
    takes its own cgroup and leaves the parents (another pod's path) quietly."""
    caplog.set_level(logging.WARNING, logger="sycri")
    old = env.run(pod_config("old", cgroup_parent=f"/{cg}/kubepods/pod-o"))
    other = env.run(pod_config("other", cgroup_parent=f"/{cg}/kubepods/pod-n"))
    sb = env.manager.get(old.id)
    sb.status.cgroup_created += [
        f"/sys/fs/cgroup/{d}" for d in sorted(_everywhere(cg, f"{cg}/kubepods"))
    ]
    env.call(env.manager.store.save_status(sb))
    env.restart()
    assert env.call(env.manager.remove(old.id))
    assert _warnings(caplog) == []
    assert _tree(cg) == _everywhere(cg, f"{cg}/kubepods", f"{cg}/kubepods/pod-n")
    assert env.call(env.manager.remove(other.id))


def test_crash_after_the_cgroup_was_made_removes_the_pods_own_at_start(env: Env, cg: str):
    """The record names the pod's own dirs before they exist: a crash once they do is
    undone at the restart (the shared parents stay)."""
    sb = env.run(pod_config("half", pid=api_pb2.POD, cgroup_parent=f"/{cg}/kubepods/pod-h"))
    assert _everywhere(f"{cg}/kubepods/pod-h") <= _tree(cg)
    sb.status.state = "creating"  # as if sycri died before replying
    env.call(env.manager.store.save_status(sb))
    env.restart()
    assert env.manager.list() == []
    assert _tree(cg) == _everywhere(cg, f"{cg}/kubepods")


def test_pod_cgroup_with_resources_and_overhead(env: Env, cg: str):
    parent = f"/{cg}/pod-a"
    cfg = pod_config("cg", cgroup_parent=parent, pid=api_pb2.POD)
    cfg.linux.resources.memory_limit_in_bytes = 256 * 2**20
    cfg.linux.resources.cpu_quota = 50000
    cfg.linux.resources.cpu_period = 100000
    cfg.linux.overhead.memory_limit_in_bytes = 64 * 2**20
    cfg.linux.overhead.cpu_quota = 10000
    sb = env.run(cfg)
    mem = Path("/sys/fs/cgroup/memory") / parent.strip("/")
    assert int((mem / "memory.limit_in_bytes").read_text()) == 320 * 2**20
    cpu = Path("/sys/fs/cgroup/cpu") / parent.strip("/")
    assert int((cpu / "cpu.cfs_quota_us").read_text()) == 60000
    # The init runs under the pod's limits, in a leaf of its own: the pod's cgroup holds
    # no process (cgroup v2 refuses containers below a cgroup that does).
    leaf = mem / f"sycri-init-{sb.id}"
    assert str(sb.init_pid) in (leaf / "cgroup.procs").read_text().split()
    assert (mem / "cgroup.procs").read_text().split() == []
    env.call(env.manager.remove(sb.id))
    assert not mem.exists() and not cpu.exists()
    assert mem.parent.is_dir()  # the parent is shared: it stays, as runc leaves it


def test_resize_leaves_a_cgroup_sycri_did_not_make_to_its_owner(env: Env):
    # kubelet made (and sizes) the pod cgroup: as RunPodSandbox, a resize only records.
    top = f"sycri-test-{secrets.token_hex(4)}"
    mem = Path("/sys/fs/cgroup/memory") / top
    made = cgroups.PodCgroup.ensure(1, f"/{top}")  # in every hierarchy, as kubelet does
    try:
        cfg = pod_config("own", cgroup_parent=f"/{top}")
        cfg.linux.resources.memory_limit_in_bytes = 256 * 2**20
        sb = env.run(cfg)
        before = (mem / "memory.limit_in_bytes").read_text()
        new = api_pb2.LinuxContainerResources(memory_limit_in_bytes=512 * 2**20)
        env.call(env.manager.update_resources(sb.id, new, None))
        assert (mem / "memory.limit_in_bytes").read_text() == before
        assert env.manager.get(sb.id).config.linux.resources.memory_limit_in_bytes == 512 * 2**20
        with pytest.raises(NotFound):
            env.call(env.manager.update_resources("0" * 64, new, None))
        with pytest.raises(InvalidArgument):
            env.call(env.manager.update_resources("", new, None))
        env.call(env.manager.remove(sb.id))
        assert mem.is_dir()  # not sycri's to remove
    finally:
        made.remove()


def test_first_config_in_conf_dir_is_used_with_cni_args_and_capabilities(env: Env, tmp_path):
    # A recorder plugin (a shell script that logs what the runtime passes, then runs the
    # real portmap plugin) sits in the chain after a real bridge on its own subnet.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "calls"
    log.mkdir()
    rec = bindir / "recorder"
    rec.write_text(
        "#!/bin/sh\n"
        f"env | grep ^CNI_ > {log}/env.$CNI_COMMAND\n"
        f"tee {log}/stdin.$CNI_COMMAND | exec /usr/lib/cni/portmap\n"
    )
    rec.chmod(0o755)
    other = PodNet.new()
    conflist = {
        "cniVersion": "1.0.0",
        "name": "first",
        "plugins": [
            {
                "type": "bridge",
                "bridge": other.bridge,
                "isGateway": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": other.subnet}]],
                    "dataDir": str(tmp_path / "ipam"),
                },
            },
            {"type": "recorder", "capabilities": {"portMappings": True}},
        ],
    }
    (env.conf_dir / "10-first.conflist").write_text(json.dumps(conflist))
    (env.conf_dir / "20-second.conf").write_text('{"name": "x", "type": "nonexistent"}')
    (env.conf_dir / "05-ignored.txt").write_text("not a config")
    env.manager.net.cni = cni.Runner(("/usr/lib/cni", str(bindir)))
    port = _free_port()
    try:
        cfg = pod_config("args", ports=[(port, 80)])
        sb = env.run(cfg)
        assert sb.ips[0].startswith(other.prefix())
        add_env = (log / "env.ADD").read_text()
        md = cfg.metadata
        for want in (
            f"K8S_POD_NAMESPACE={md.namespace}",
            f"K8S_POD_NAME={md.name}",
            f"K8S_POD_INFRA_CONTAINER_ID={sb.id}",
            f"K8S_POD_UID={md.uid}",
            "CNI_IFNAME=eth0",
            f"CNI_NETNS={sb.netns_path}",
        ):
            assert want in add_env
        stdin = json.loads((log / "stdin.ADD").read_text())
        assert stdin["runtimeConfig"]["portMappings"] == [
            {"hostPort": port, "containerPort": 80, "protocol": "tcp"}
        ]
        assert stdin["prevResult"]["ips"][0]["address"].startswith(other.prefix())
        assert stdin["name"] == "first"
        # The conf dir changes; DEL still uses the network the pod was added to.
        (env.conf_dir / "10-first.conflist").unlink()
        env.call(env.manager.remove(sb.id))
        deleted = json.loads((log / "stdin.DEL").read_text())
        assert deleted["prevResult"]["ips"] == stdin["prevResult"]["ips"]
        veths = subprocess.run(
            ["ip", "-o", "link", "show", "master", other.bridge], capture_output=True, text=True
        ).stdout
        assert veths.strip() == ""
    finally:
        other.cleanup()


def test_broken_first_config_fails_run_cleanly(env: Env):
    (env.conf_dir / "00-broken.conflist").write_text("{not json")
    with pytest.raises(Exception, match="cannot load CNI config"):
        env.run(pod_config("broken"))
    assert env.manager.list() == []
    assert footprint(env.base / "run", env.net, set()).ns_files == 0


@pytest.mark.slow
def test_fifty_create_remove_cycles_leave_nothing_behind(env: Env, cg: str):
    cg_root = cg
    port = _free_port()

    def cycle(i: int) -> str:
        cfg = pod_config(
            f"cycle{i}",
            ports=[(port, 80)],
            pid=api_pb2.POD,
            cgroup_parent=f"/{cg_root}/pod{i}",
            sysctls={"net.ipv4.tcp_syncookies": "1"},
        )
        sb = env.run(cfg)
        env.call(env.manager.remove(sb.id))
        return sb.id

    warm = cycle(-1)  # the bridge and portmap's top-level chains are made once
    run_dir = env.base / "run"
    before = footprint(run_dir, env.net, {warm}, cg_root)
    # The counts do see a live pod's objects.
    live = env.run(
        pod_config("live", ports=[(port, 80)], pid=api_pb2.POD, cgroup_parent=f"/{cg_root}/live")
    )
    during = footprint(run_dir, env.net, {live.id}, cg_root)
    assert during.veths == 1 and during.ns_files == 4 and during.pod_dirs == 1
    assert during.iptables_rules > 0 and during.cgroups > 0 and during.mounts >= 6
    assert len(during.cni_chains) >= 2  # masquerade and hostPort DNAT chains
    env.call(env.manager.remove(live.id))
    ids = {cycle(i) for i in range(50)}
    after = footprint(run_dir, env.net, ids | {warm}, cg_root)
    assert after == before, f"before {before}\nafter {after}"
    assert before.iptables_rules == 0 and before.cni_chains == frozenset()
    assert before.iptables_rules == 0 and before.veths == 0 and before.ns_files == 0
    assert before.cgroups == 0
    assert list((env.base / "root" / "sandboxes").iterdir()) == []


def test_pod_whose_init_dies_turns_notready(env: Env):
    sb = env.run(pod_config("fragile", pid=api_pb2.POD))
    heard: list[str] = []
    env.manager.on_exit.append(lambda pod: heard.append(pod.id))
    os.kill(sb.init_pid, 9)
    assert wait_gone(sb.init_pid)

    async def until_notready() -> None:  # nobody asks: the watch on the init sees it
        while not heard:
            await asyncio.sleep(0.01)

    env.call(asyncio.wait_for(until_notready(), 20))
    assert heard == [sb.id] and env.manager.get(sb.id).state == NOTREADY
    assert "init" in env.manager.get(sb.id).status.reason
    env.call(env.manager.remove(sb.id))
    assert footprint(env.base / "run", env.net, {sb.id}).ns_files == 0


def test_run_dir_is_a_shared_mount_once_pods_exist(env: Env):
    env.run(pod_config("shared"))
    run = os.path.realpath(env.base / "run")
    line = next(
        line
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if line.split()[4] == run
    )
    assert "shared:" in line.split(" - ")[0]


def test_bad_pod_cidr_is_refused(env: Env):
    with pytest.raises(InvalidArgument, match="not a network"):
        env.call(env.manager.set_pod_cidr("10.0.0.0/33"))
    env.call(env.manager.set_pod_cidr("10.9.0.0/24,fd00:9::/64"))
    assert env.manager.pod_subnets() == ["10.9.0.0/24", "fd00:9::/64"]


def test_dual_stack_pods_get_both_ips_and_talk_over_ipv6(env: Env):
    v6 = free_subnet6()
    env.call(env.manager.set_pod_cidr(f"{env.net.subnet},{v6}"))
    a = env.run(pod_config("v6a"))
    b = env.run(pod_config("v6b"))
    assert len(a.ips) == 2 and ":" not in a.ips[0] and ":" in a.ips[1]
    assert ipaddress.ip_address(a.ips[1]) in ipaddress.ip_network(v6)
    server = listen_in(a.netns_path, 8080, "alpha6")
    try:
        reply = connect_from(b.netns_path, a.ips[1], 8080)
    finally:
        server.kill()
        server.wait()
    assert reply == f"alpha6 {b.ips[1]}"


def test_bandwidth_annotations_shape_the_pod_interface(env: Env):
    pre = _ifbs()
    sb = env.run(
        pod_config(
            "slow",
            annotations={
                "kubernetes.io/ingress-bandwidth": "10M",
                "kubernetes.io/egress-bandwidth": "20M",
            },
        )
    )
    links = subprocess.run(
        ["ip", "-o", "link", "show", "master", env.net.bridge], capture_output=True, text=True
    ).stdout
    veth = links.split(":")[1].strip().split("@")[0]
    qdisc = subprocess.run(["tc", "qdisc", "show", "dev", veth], capture_output=True, text=True)
    assert "tbf" in qdisc.stdout and "10Mbit" in qdisc.stdout
    mine = _ifbs() - pre
    assert mine and all(n.startswith("bwp") for n in mine)  # egress goes through an ifb
    env.call(env.manager.remove(sb.id))
    assert not mine & _ifbs()


def _ifbs() -> set[str]:
    out = subprocess.run(
        ["ip", "-o", "link", "show", "type", "ifb"], capture_output=True, text=True
    )
    return {line.split(":")[1].strip() for line in out.stdout.splitlines()}


def test_concurrent_runs_and_removes(env: Env):
    async def many():
        pods = await asyncio.gather(
            *(env.manager.run(pod_config(f"par{i}", pid=api_pb2.POD), "") for i in range(8))
        )
        ips = {p.ips[0] for p in pods}
        await asyncio.gather(*(env.manager.remove(p.id) for p in pods))
        return pods, ips

    pods, ips = env.call(many())
    assert len(ips) == 8
    fp = footprint(env.base / "run", env.net, {p.id for p in pods})
    assert (fp.veths, fp.iptables_rules, fp.ns_files, fp.pod_dirs) == (0, 0, 0, 0)


def test_cni_check_passes_when_healthy_and_names_the_broken_plugin(env: Env):
    # (No hostPorts here: Debian's portmap CHECK wrongly demands IPv6 rules for an
    # IPv4-only pod, containernetworking/plugins#819.)
    sb = env.run(pod_config("checked"))
    assert env.call(env.manager.check_network(sb)) == "ok"
    addr = f"{sb.ips[0]}/{env.net.subnet.split('/')[1]}"
    ip_in_pod = ["nsenter", f"--net={sb.netns_path}", "ip", "addr"]
    subprocess.run([*ip_in_pod, "del", addr, "dev", "eth0"], check=True)
    try:
        assert "plugin 'bridge' CHECK" in env.call(env.manager.check_network(sb))
    finally:
        # bridge DEL finds the masquerade rules to remove by the interface's addresses.
        subprocess.run([*ip_in_pod, "add", addr, "dev", "eth0"], check=True)


def test_verbose_network_check_answers_from_memory_and_refreshes_in_the_background(env: Env):
    """A verbose status never waits on a plugin: it reports the last CHECK and when it
    ran (the pod's ADD is its first), and starts a new one once that is older than the
    refresh period; a broken network shows in the first report after that CHECK."""
    before = time.time_ns()
    sb = env.run(pod_config("kept"))
    ok = env.call(_report(env, sb))  # the ADD's success, with no plugin run
    assert ok.result == "ok" and before <= ok.checked_at <= time.time_ns()
    assert ok.when().endswith("Z")
    assert not env.manager.checks._running
    now = [ok.checked_at]
    env.manager.checks.clock = lambda: now[0]
    addr = f"{sb.ips[0]}/{env.net.subnet.split('/')[1]}"
    ip_in_pod = ["nsenter", f"--net={sb.netns_path}", "ip", "addr"]
    subprocess.run([*ip_in_pod, "del", addr, "dev", "eth0"], check=True)
    try:
        now[0] += int(netcheck.MAX_AGE * 1e9) // 2
        assert env.call(_report(env, sb)) == ok  # within the period: kept, no CHECK
        assert not env.manager.checks._running
        now[0] += int(netcheck.MAX_AGE * 1e9)
        assert env.call(_report(env, sb)) == ok  # stale: still answered at once...
        env.call(env.manager.checks.idle())  # ...while a new CHECK runs
        broken = env.call(_report(env, sb))
        assert "plugin 'bridge' CHECK" in broken.result
        assert broken.checked_at == now[0]
    finally:
        subprocess.run([*ip_in_pod, "add", addr, "dev", "eth0"], check=True)
    env.call(env.manager.stop(sb.id))
    assert env.call(_report(env, sb)).result == netcheck.NOT_ATTACHED


def test_verbose_network_check_of_a_pod_with_no_result_yet_starts_one(env: Env):
    """A pod whose last result is gone (a sycri restarted since its ADD) is reported
    "not checked yet" at once, and the CHECK that report started gives the next one."""
    sb = env.run(pod_config("fresh"))
    env.manager.checks.forget(sb.id)  # what a restart leaves: no result in memory
    first = env.call(_report(env, sb))
    assert (first.result, first.checked_at, first.when()) == (netcheck.PENDING, 0, "")
    env.call(env.manager.checks.idle())
    assert env.call(_report(env, sb)).result == "ok"


async def _report(env: Env, sb):
    return env.manager.network_check(sb)  # on the loop, as the RPC calls it


def test_host_ipc_and_host_pid_use_the_hosts_namespaces(env: Env):
    cfg = pod_config("hostipc", pid=api_pb2.NODE)
    cfg.linux.security_context.namespace_options.ipc = api_pb2.NODE
    sb = env.run(cfg)
    assert sb.ipc_ns_path is None and sb.pid_ns_path is None and sb.init_pid is None
    assert sb.shm_path == "/dev/shm"
    assert sb.netns_path is not None  # the network is still the pod's own
    before = footprint(env.base / "run", env.net, {sb.id})
    assert before.ns_files == 2  # net and uts only
    env.call(env.manager.remove(sb.id))
    assert os.path.isdir("/dev/shm")  # the host's /dev/shm is left alone


def test_code_can_run_inside_a_pods_network_namespace(env: Env):
    from sycri.runtime.pod import namespaces

    sb = env.run(pod_config("enter"))
    trie = "/proc/thread-self/net/fib_trie"
    inside = env.call(namespaces.call_in({"net": sb.netns_path}, lambda: Path(trie).read_text()))
    entry = f"-- {sb.ips[0]}\n"  # the pod's address as a fib_trie leaf
    assert entry in inside
    assert entry not in Path(trie).read_text()  # this thread stayed in the host's
