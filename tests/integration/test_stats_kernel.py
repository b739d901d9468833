"""Stats from the kernel: real cgroups with busy and allocating processes, real netns.

These read what the kernel reports for processes this test starts; they assert that
the figures move the way a user watching ``crictl stats`` would see them move.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import pytest
from sycri.runtime.cgroups import cgroupstats
from sycri.runtime.stats import netstats
from sycri.runtime.stats.stats import ContainerInfo, StatsCollector

from tests.support.aio import run_async
from tests.support.stats_env import ALLOC, BURN, RealCgroup, RealNetns, token

pytestmark = pytest.mark.root

MiB = 1024 * 1024


@pytest.fixture
def layout() -> cgroupstats.CgroupLayout:
    return cgroupstats.detect_layout()


@pytest.fixture
def cgroup(layout) -> Iterator[RealCgroup]:
    cg = RealCgroup(layout, f"/sycri-ntst-{token()}").create()
    try:
        yield cg
    finally:
        cg.remove()


@pytest.fixture
def netns() -> Iterator[RealNetns]:
    ns = RealNetns.create()
    try:
        yield ns
    finally:
        ns.remove()


def test_cpu_usage_grows_while_a_process_burns(layout, cgroup):
    before = cgroupstats.read_cgroup(layout, cgroup.rel)
    assert before.cpu_usage_ns is not None and before.cpu_usage_ns < 50_000_000
    p = cgroup.spawn(BURN.format(secs=0.6))
    assert p.stdout.readline().strip() == "burnt"
    # The child used 0.6 s of CPU (by its own clock): the cgroup sees at least that once
    # the scheduler has charged the child's last slice (it does so when the child sleeps).
    deadline = time.monotonic() + 5
    while True:
        after = cgroupstats.read_cgroup(layout, cgroup.rel)
        if after.cpu_usage_ns - before.cpu_usage_ns >= 600_000_000 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert after.cpu_usage_ns - before.cpu_usage_ns >= 600_000_000


@run_async
async def test_nano_cores_of_a_busy_container(layout, cgroup):
    collector = StatsCollector("cgroupfs", layout, cpu_min_interval=0.2)
    info = ContainerInfo(id="c1", pod_sandbox_id="p1", name="burn", cgroup_path=cgroup.rel)
    cgroup.spawn(BURN.format(secs=60))
    [first] = await collector.containers([info])
    assert first.nano_cores is None  # one sample is not a rate
    time.sleep(1.0)
    [second] = await collector.containers([info])
    # One single-threaded busy loop: up to one core, well above idle.
    assert second.nano_cores is not None
    assert 200_000_000 < second.nano_cores < 1_150_000_000


def test_memory_working_set_follows_allocation(layout, cgroup):
    cgroup.set_memory_limit(512 * MiB)
    idle = cgroupstats.read_cgroup(layout, cgroup.rel)
    assert idle.memory is not None and idle.memory.working_set_bytes < 8 * MiB
    p = cgroup.spawn(ALLOC.format(mib=96))
    assert p.stdout.readline().strip() == "ready"
    s = cgroupstats.read_cgroup(layout, cgroup.rel)
    m = s.memory
    assert m.working_set_bytes >= 96 * MiB
    assert m.rss_bytes >= 96 * MiB
    assert m.usage_bytes >= m.working_set_bytes
    assert m.page_faults >= 96 * MiB // 4096 // 2  # a fault per touched page (THP halves it)
    assert m.limit_bytes == 512 * MiB
    assert m.available_bytes == 512 * MiB - m.working_set_bytes
    assert s.pids == 1


def test_process_count_counts_threads(layout, cgroup):
    p = cgroup.spawn(
        "import threading,time,sys\n"
        "[threading.Thread(target=time.sleep,args=(600,),daemon=True).start() for _ in range(4)]\n"
        "sys.stdout.write('ready\\n'); sys.stdout.flush(); time.sleep(600)\n"
    )
    assert p.stdout.readline().strip() == "ready"
    assert cgroupstats.read_cgroup(layout, cgroup.rel).pids == 5


def test_oom_kill_is_counted(layout, cgroup):
    cgroup.set_memory_limit(32 * MiB)
    p = cgroup.spawn(ALLOC.format(mib=128))
    assert p.wait(30) == -9
    m = cgroupstats.read_cgroup(layout, cgroup.rel).memory
    assert m.oom_kills == 1
    assert m.failcnt > 0


def test_removed_cgroup_reads_as_absent(layout, cgroup):
    cgroup.remove()
    s = cgroupstats.read_cgroup(layout, cgroup.rel)
    assert not s.exists


def _netns_inode() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


def test_pod_network_counters_move_with_traffic(netns):
    before = {i.name: i for i in netstats.read_netns(netns.path)}
    assert set(before) == {"lo", "eth0"}
    netns.ping_host(count=5, size=1000)
    after = {i.name: i for i in netstats.read_netns(netns.path)}
    eth0_b, eth0_a = before["eth0"], after["eth0"]
    # 5 echo requests out and 5 replies in, each 1000 bytes of payload plus headers.
    assert after["eth0"].tx_bytes - eth0_b.tx_bytes >= 5 * 1000
    assert eth0_a.rx_bytes - eth0_b.rx_bytes >= 5 * 1000
    assert eth0_a.tx_packets - eth0_b.tx_packets >= 5
    assert eth0_a.rx_errors == eth0_a.tx_errors == 0


def test_reading_many_namespaces_reports_each_and_leaves_ours_alone(netns):
    home = _netns_inode()
    got = netstats.read_netns_many([netns.path, f"/run/netns/missing-{token()}"])
    assert {i.name for i in got[netns.path]} == {"lo", "eth0"}
    missing = [v for k, v in got.items() if k != netns.path]
    assert len(missing) == 1 and isinstance(missing[0], FileNotFoundError)
    assert _netns_inode() == home
    # Threads of the pool are not switched either.
    seen = []
    t = threading.Thread(target=lambda: seen.append(_netns_inode()))
    t.start()
    t.join()
    assert seen == [home]
