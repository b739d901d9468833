"""Usage figures become the CRI messages kubelet reads (recorded v2 cgroup files)."""

from __future__ import annotations

import shutil
from pathlib import Path

from sycri.cri import pod_metrics
from sycri.cri import stats as cri_stats
from sycri.runtime.cgroups import cgroupstats as cs
from sycri.runtime.stats.diskusage import DiskUsage
from sycri.runtime.stats.netstats import InterfaceStats
from sycri.runtime.stats.stats import ContainerInfo, ContainerUsage, NetworkUsage, PodInfo, PodUsage

DATA = Path(__file__).parent / "data" / "cgroup" / "v2" / "limited"


def sample(tmp_path: Path) -> cs.CgroupSample:
    d = tmp_path / "cg" / "c1"
    d.mkdir(parents=True)
    for f in DATA.iterdir():
        shutil.copy(f, d / f.name)
    return cs.read_cgroup(cs.CgroupLayout(2, v2=(str(tmp_path / "cg"), "/")), "/c1", now_ns=99)


def usage(tmp_path: Path) -> ContainerUsage:
    info = ContainerInfo(id="c1", pod_sandbox_id="p1", name="app", attempt=3, labels={"a": "b"})
    return ContainerUsage(info, sample(tmp_path), 250_000_000, DiskUsage(8192, 3), 98, "/var")


def test_container_stats_message(tmp_path):
    m = cri_stats.container_stats(usage(tmp_path))
    assert m.attributes.id == "c1" and m.attributes.metadata.attempt == 3
    assert m.cpu.timestamp == 99
    assert m.cpu.usage_core_nano_seconds.value == 240087000
    assert m.cpu.usage_nano_cores.value == 250_000_000
    assert m.cpu.psi.Some.Total == 1234567 and m.cpu.psi.Full.Avg10 == 0.5
    assert m.memory.working_set_bytes.value == 45182976 - 8388608
    assert m.memory.available_bytes.value == 67108864 - (45182976 - 8388608)
    assert m.memory.rss_bytes.value == 36392960
    assert m.memory.major_page_faults.value == 3
    assert m.memory.psi.Some.Total == 42
    assert m.io.psi.Full.Total == 876543
    assert m.swap.swap_usage_bytes.value == 0
    assert m.writable_layer.used_bytes.value == 8192
    assert m.writable_layer.inodes_used.value == 3
    assert m.writable_layer.fs_id.mountpoint == "/var"


def test_unlimited_memory_has_no_available_bytes():
    s = cs.CgroupSample(
        1, cpu_usage_ns=5, memory=cs.memory_v2("100", "inactive_file 10\n", "max"), pids=2
    )
    info = ContainerInfo(id="c", pod_sandbox_id="p", name="n")
    m = cri_stats.container_stats(ContainerUsage(info, s, None, None))
    assert not m.memory.HasField("available_bytes")
    assert m.memory.working_set_bytes.value == 90
    assert not m.cpu.HasField("usage_nano_cores")
    assert not m.HasField("writable_layer")


def test_pod_stats_and_metrics_messages(tmp_path):
    cu = usage(tmp_path)
    eth0 = InterfaceStats("eth0", 1000, 10, 1, 0, 2000, 20, 2, 0)
    lo = InterfaceStats("lo", 5, 1, 0, 0, 5, 1, 0, 0)
    pod = PodInfo(id="p1", name="web", namespace="ns", uid="u1")
    pu = PodUsage(pod, cu.sample, 7, NetworkUsage(50, (lo, eth0), "eth0"), (cu,))
    m = cri_stats.pod_stats(pu)
    assert m.attributes.metadata.namespace == "ns"
    assert m.linux.process.process_count.value == 1
    assert m.linux.network.default_interface.name == "eth0"
    assert m.linux.network.default_interface.rx_errors.value == 1
    assert [i.name for i in m.linux.network.interfaces] == ["eth0"]
    assert m.linux.containers[0].attributes.id == "c1"
    assert m.linux.io.psi.Some.Total == 987654

    pm = pod_metrics.pod_metrics(pu)
    keys = {d.name: list(d.label_keys) for d in pod_metrics.descriptors()}
    net = {x.name: x for x in pm.metrics}
    assert net["container_network_transmit_errors_total"].value.value == 2
    assert net["container_network_receive_bytes_total"].label_values == ["eth0", "ns", "web"]
    [cm] = pm.container_metrics
    by = {x.name: x for x in cm.metrics}
    assert by["container_cpu_usage_seconds_total"].value.value == 0  # 0.24 s, whole seconds
    assert by["container_spec_memory_limit_bytes"].value.value == 67108864
    assert by["container_fs_usage_bytes"].value.value == 8192
    for x in list(pm.metrics) + list(cm.metrics):
        assert len(x.label_values) == len(keys[x.name])
    labels = dict(
        zip(keys["container_memory_rss"], by["container_memory_rss"].label_values, strict=True)
    )
    assert labels == {
        "container": "app", "id": "c1", "image": "", "name": "k8s_app_web_ns_u1_3",
        "namespace": "ns", "pod": "web",
    }  # fmt: skip


def test_pod_network_without_a_default_interface_is_left_out(tmp_path):
    # kubelet's CRI stats (PodAndContainerStatsFromCRI) dereference default_interface
    # whenever network is set: a pod whose interfaces are gone (stopped) must send none.
    cu = usage(tmp_path)
    pod = PodInfo(id="p1", name="web", namespace="ns", uid="u1")
    lo = InterfaceStats("lo", 5, 1, 0, 0, 5, 1, 0, 0)
    for net in (NetworkUsage(50, (lo,), None), NetworkUsage(50, (), None)):
        m = cri_stats.pod_stats(PodUsage(pod, cu.sample, 7, net, (cu,)))
        assert not m.linux.HasField("network")
        assert m.linux.process.process_count.value == 1
