"""cgroup parsers and readers against recorded files.

``data/cgroup/v1/*`` were copied from real cgroups on a cgroup-v1 host (a process that
touched 20 MiB of anonymous memory and read an 8 MiB file under a 64 MiB limit; a
process killed by the OOM killer under 16 MiB; an unlimited 4-thread process).
``data/cgroup/v2/*`` follow the kernel's cgroup-v2 documentation formats (cpu.stat of
``limited`` was recorded from a real v2 cgroup); the figures mirror the v1 ones.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sycri.runtime.cgroups import cgroupstats as cs

DATA = Path(__file__).parent / "data" / "cgroup"


def text(version: str, case: str, name: str) -> str:
    return (DATA / version / case / name).read_text()


def v1_memory(case: str) -> cs.MemoryStats:
    return cs.memory_v1(
        text("v1", case, "memory.usage_in_bytes"),
        text("v1", case, "memory.stat"),
        text("v1", case, "memory.limit_in_bytes"),
        text("v1", case, "memory.failcnt"),
        text("v1", case, "memory.oom_control"),
    )


def v2_memory(case: str) -> cs.MemoryStats:
    d = DATA / "v2" / case
    swap = d / "memory.swap.current"
    return cs.memory_v2(
        text("v2", case, "memory.current"),
        text("v2", case, "memory.stat"),
        text("v2", case, "memory.max"),
        text("v2", case, "memory.events"),
        swap.read_text() if swap.exists() else None,
    )


def test_v1_limited_memory_is_what_kubelet_computes():
    m = v1_memory("limited")
    assert m.usage_bytes == 45182976
    # 8 MiB of the usage is the file just read: inactive page cache, not working set.
    assert m.working_set_bytes == 45182976 - 8388608
    assert m.rss_bytes == 36392960
    assert m.cache_bytes == 8388608
    assert m.page_faults == 18595 and m.major_page_faults == 0
    assert m.limit_bytes == 64 * 1024 * 1024
    assert m.available_bytes == 64 * 1024 * 1024 - m.working_set_bytes
    assert m.oom_kills == 0 and m.failcnt == 0


def test_v1_unlimited_has_no_limit_and_no_available():
    m = v1_memory("unlimited")
    assert m.limit_bytes is None and m.available_bytes is None
    assert m.working_set_bytes == m.usage_bytes == 12562432  # no inactive file pages


def test_v1_oom_killed_cgroup_counts_the_kill_and_limit_hits():
    m = v1_memory("oomkilled")
    assert m.oom_kills == 1
    assert m.failcnt == 110
    assert m.limit_bytes == 16 * 1024 * 1024


def test_v1_cpu_and_pids():
    assert cs.cpu_v1(text("v1", "limited", "cpuacct.usage")) == 372278388
    assert cs.parse_int(text("v1", "unlimited", "pids.current")) == 4


def test_v2_limited_matches_the_v1_figures():
    m2, m1 = v2_memory("limited"), v1_memory("limited")
    assert m2.usage_bytes == m1.usage_bytes
    assert m2.working_set_bytes == m1.working_set_bytes
    assert m2.rss_bytes == m1.rss_bytes
    assert m2.available_bytes == m1.available_bytes
    assert m2.page_faults == 18595 and m2.major_page_faults == 3
    assert m2.swap_bytes == 0


def test_v2_unlimited_and_oom():
    m = v2_memory("unlimited")
    assert m.limit_bytes is None and m.available_bytes is None
    assert m.working_set_bytes == 12562432 - 6930432
    assert m.rss_bytes == 5505024
    o = v2_memory("oomkilled")
    assert o.oom_kills == 1 and o.failcnt == 110
    # inactive_file (12288) above usage (8192): the working set floors at 0.
    assert o.working_set_bytes == 0
    assert o.available_bytes == 16 * 1024 * 1024


def test_v2_cpu_is_usage_usec_in_nanoseconds():
    assert cs.cpu_v2(text("v2", "limited", "cpu.stat")) == 240087 * 1000
    assert cs.cpu_v2(text("v2", "unlimited", "cpu.stat")) == 1_500_000_000


def test_working_set_floor():
    assert cs.working_set(100, 30) == 70
    assert cs.working_set(100, 100) == 0
    assert cs.working_set(100, 150) == 0


@pytest.mark.parametrize(
    "bad, msg",
    [
        ("usage_usec\n", "expected 'key value'"),
        ("usage_usec twelve\n", "usage_usec is not an integer"),
        ("user_usec 1\n", "no usage_usec"),
    ],
)
def test_malformed_cpu_stat_names_the_file(bad, msg):
    with pytest.raises(cs.CgroupParseError, match=msg) as err:
        cs.cpu_v2(bad)
    assert "cpu.stat" in str(err.value)


def test_malformed_single_values():
    with pytest.raises(cs.CgroupParseError, match=r"memory\.current"):
        cs.memory_v2("lots", "", "max")
    with pytest.raises(cs.CgroupParseError, match=r"memory\.max"):
        cs.parse_limit_v2("unbounded")


def test_cpu_rates_from_two_samples():
    r = cs.CpuRates(min_interval_ns=500_000_000)
    assert r.update("c", 1_000_000_000, 5_000_000_000) is None  # no baseline yet
    # 0.5 CPU-seconds in 1 s: half a core.
    assert r.update("c", 2_000_000_000, 5_500_000_000) == 500_000_000
    # A second caller 10 ms later gets the same rate, not a noisy one.
    assert r.update("c", 2_010_000_000, 5_500_100_000) == 500_000_000
    # Two full cores over 2 s.
    assert r.update("c", 4_000_000_000, 9_500_000_000) == 2_000_000_000
    # The counter went back (a new cgroup under the same key): start over.
    assert r.update("c", 5_000_000_000, 10) is None
    r.retain([])
    assert len(r) == 0


def test_layout_of_this_kind_of_hybrid_host_is_v1():
    layout = cs.parse_mountinfo(text("v1", "", "mountinfo"))
    assert layout.version == 1
    assert layout.v1["memory"] == ("/sys/fs/cgroup/memory", "/")
    assert layout.v2 == ("/sys/fs/cgroup/unified", "/")
    dirs = cs.cgroup_dirs(layout, "/kubepods/pod1/sycri-abc")
    assert dirs == {
        "cpuacct": "/sys/fs/cgroup/cpuacct/kubepods/pod1/sycri-abc",
        "memory": "/sys/fs/cgroup/memory/kubepods/pod1/sycri-abc",
        "pids": "/sys/fs/cgroup/pids/kubepods/pod1/sycri-abc",
    }


def test_layout_of_combined_controllers_and_subtree_mounts():
    mi = (
        "30 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
        "31 25 0:27 /kubepods/x /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
    )
    layout = cs.parse_mountinfo(mi)
    assert layout.version == 1
    d = cs.cgroup_dirs(layout, "/kubepods/x/c1")
    assert d["cpuacct"] == "/sys/fs/cgroup/cpu,cpuacct/kubepods/x/c1"
    assert d["memory"] == "/sys/fs/cgroup/memory/c1"  # the mount shows only /kubepods/x


def test_layout_v2():
    layout = cs.parse_mountinfo(text("v2", "", "mountinfo"))
    assert layout.version == 2
    assert cs.cgroup_dirs(layout, "/kubepods.slice/x.scope") == {
        "unified": "/sys/fs/cgroup/kubepods.slice/x.scope"
    }


@pytest.mark.parametrize(
    "given, driver, expected",
    [
        ("/kubepods/burstable/pod1/sycri-abc", "cgroupfs", "/kubepods/burstable/pod1/sycri-abc"),
        ("kubepods/pod1//sycri-abc", "cgroupfs", "/kubepods/pod1/sycri-abc"),
        (
            "kubepods-burstable-pod1.slice:sycri:abc",
            "systemd",
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/sycri-abc.scope",
        ),
        (":sycri:abc", "systemd", "/system.slice/sycri-abc.scope"),
        ("kubepods-pod2.slice", "systemd", "/kubepods.slice/kubepods-pod2.slice"),
        ("/kubepods.slice/x", "systemd", "/kubepods.slice/x"),
    ],
)
def test_hierarchy_path(given, driver, expected):
    assert cs.hierarchy_path(given, driver) == expected


@pytest.mark.parametrize(
    "given, driver", [("/kubepods/../../etc", "cgroupfs"), ("a--b.slice:p:n", "systemd")]
)
def test_hierarchy_path_refuses_bad_paths(given, driver):
    with pytest.raises(ValueError):
        cs.hierarchy_path(given, driver)


def _fake_hierarchy(tmp_path: Path, version: str, case: str) -> cs.CgroupLayout:
    """Recorded files laid out like a mounted hierarchy, for the reading edge."""
    rel = "kubepods/pod1/ctr"
    if version == "v2":
        d = tmp_path / "unified" / rel
        d.mkdir(parents=True)
        for f in (DATA / "v2" / case).iterdir():
            shutil.copy(f, d / f.name)
        return cs.CgroupLayout(2, v2=(str(tmp_path / "unified"), "/"))
    mounts = {}
    for ctl, prefix in (("cpuacct", "cpuacct."), ("memory", "memory."), ("pids", "pids.")):
        d = tmp_path / ctl / rel
        d.mkdir(parents=True)
        for f in (DATA / "v1" / case).iterdir():
            if f.name.startswith(prefix):
                shutil.copy(f, d / f.name)
        mounts[ctl] = (str(tmp_path / ctl), "/")
    return cs.CgroupLayout(1, v1=mounts)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_read_cgroup_both_versions(tmp_path, version):
    layout = _fake_hierarchy(tmp_path, version, "limited")
    s = cs.read_cgroup(layout, "/kubepods/pod1/ctr", now_ns=42)
    assert s.timestamp_ns == 42 and s.exists
    assert s.memory is not None and s.memory.working_set_bytes == 45182976 - 8388608
    assert s.pids == 1
    assert s.cpu_usage_ns == (372278388 if version == "v1" else 240087000)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_read_cgroup_that_is_gone(tmp_path, version):
    layout = _fake_hierarchy(tmp_path, version, "limited")
    s = cs.read_cgroup(layout, "/kubepods/pod1/removed")
    assert not s.exists and s.memory is None and s.cpu_usage_ns is None


def test_pressure_files():
    p = cs.parse_pressure(text("v2", "limited", "cpu.pressure"), "cpu.pressure")
    assert p.some == cs.PsiData(total_us=1234567, avg10=1.5, avg60=0.75, avg300=0.2)
    assert p.full is not None and p.full.total_us == 345678
    # Older kernels have no "full" line for CPU.
    only_some = cs.parse_pressure("some avg10=0.00 avg60=0.00 avg300=0.00 total=7\n")
    assert only_some.full is None and only_some.some.total_us == 7
    with pytest.raises(cs.CgroupParseError, match=r"io\.pressure line 1"):
        cs.parse_pressure("some avg10=x total=1\n", "io.pressure")
    with pytest.raises(cs.CgroupParseError, match="no 'some' line"):
        cs.parse_pressure("full avg10=0 avg60=0 avg300=0 total=0\n")


def test_v2_read_includes_pressure_v1_has_none(tmp_path):
    s2 = cs.read_cgroup(_fake_hierarchy(tmp_path / "2", "v2", "limited"), "/kubepods/pod1/ctr")
    assert s2.io_pressure is not None and s2.io_pressure.some.total_us == 987654
    assert s2.memory_pressure is not None and s2.memory_pressure.full.total_us == 40
    s1 = cs.read_cgroup(_fake_hierarchy(tmp_path / "1", "v1", "limited"), "/kubepods/pod1/ctr")
    assert s1.cpu_pressure is None and s1.io_pressure is None
