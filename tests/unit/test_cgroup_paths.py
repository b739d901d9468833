"""Pod cgroup parents for both drivers and both cgroup versions (pure)."""

from __future__ import annotations

import os

import pytest
from sycri.errors import InvalidArgument
from sycri.runtime.cgroups import cgroups, conmon_cgroup


def test_cgroupfs_parent_is_a_path():
    assert cgroups.relative_path("cgroupfs", "/kubepods/burstable/pod123") == (
        "/kubepods/burstable/pod123"
    )
    assert cgroups.relative_path("cgroupfs", "kubepods/pod1") == "/kubepods/pod1"


def test_systemd_slice_expands_like_systemd():
    assert cgroups.relative_path("systemd", "kubepods-burstable-pod123.slice") == (
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod123.slice"
    )
    assert cgroups.relative_path("systemd", "system.slice") == "/system.slice"
    assert cgroups.relative_path("systemd", "-.slice") == "/"


@pytest.mark.parametrize(
    ("driver", "parent"),
    [
        ("cgroupfs", "/kubepods/../../etc"),
        ("cgroupfs", "/a b"),
        ("systemd", "/kubepods/pod1"),
        ("systemd", "kubepods--x.slice"),
        ("systemd", "kubepods-.slice"),
        ("systemd", "nope"),
    ],
)
def test_bad_parents_are_refused(driver, parent):
    with pytest.raises(InvalidArgument, match="cgroup_parent"):
        cgroups.relative_path(driver, parent)


def test_limits_plus_overhead_and_files_per_version():
    res = cgroups.Limits(cpu_period=100000, cpu_quota=50000, cpu_shares=512, memory=256 << 20)
    over = cgroups.Limits(cpu_quota=10000, cpu_shares=2, memory=64 << 20)
    total = res.plus_overhead(over)
    assert (total.cpu_quota, total.memory, total.cpu_shares) == (60000, 320 << 20, 514)
    assert cgroups.limit_files(1, total) == {
        "cpu/cpu.cfs_period_us": "100000",
        "cpu/cpu.cfs_quota_us": "60000",
        "cpu/cpu.shares": "514",
        "memory/memory.limit_in_bytes": str(320 << 20),
    }
    v2 = cgroups.limit_files(2, total)
    assert v2["cpu.max"] == "60000 100000"
    assert v2["memory.max"] == str(320 << 20)
    assert v2["cpu.weight"] == str(cgroups.shares_to_weight(514))


def test_unlimited_stays_unlimited():
    total = cgroups.Limits().plus_overhead(cgroups.Limits(cpu_quota=1000, memory=1 << 20))
    assert cgroups.limit_files(1, total) == {}
    assert cgroups.limit_files(2, total) == {}


def test_shares_to_weight_matches_runc():
    assert cgroups.shares_to_weight(2) == 1
    assert cgroups.shares_to_weight(1024) == 39
    assert cgroups.shares_to_weight(262144) == 10000


def test_missing_lists_only_the_pods_own_directories(tmp_path):
    # The parents (kubepods) are every pod's: never the pod's to record or remove.
    (tmp_path / "memory" / "kubepods").mkdir(parents=True)
    (tmp_path / "cpu").mkdir()
    missing = cgroups.PodCgroup.missing(1, "/kubepods/pod1", str(tmp_path))
    assert missing == [
        str(tmp_path / "cpu" / "kubepods" / "pod1"),
        str(tmp_path / "memory" / "kubepods" / "pod1"),
    ]


def test_ensure_makes_parents_but_claims_exactly_what_missing_listed(tmp_path):
    # The pod's status records missing() before ensure() makes the dirs: the two must agree.
    (tmp_path / "memory" / "kubepods").mkdir(parents=True)
    (tmp_path / "cpuset").mkdir()
    (tmp_path / "cpuset" / "cpuset.cpus").write_text("0-1\n")
    (tmp_path / "cpuset" / "cpuset.mems").write_text("0\n")
    listed = cgroups.PodCgroup.missing(1, "/kubepods/pod1", str(tmp_path))
    pc = cgroups.PodCgroup.ensure(1, "/kubepods/pod1", str(tmp_path))
    assert pc.created == listed
    assert all(os.path.isdir(d) for d in listed)
    assert (tmp_path / "cpuset" / "kubepods").is_dir()  # made, shared, not claimed
    assert cgroups.PodCgroup.missing(1, "/kubepods/pod1", str(tmp_path)) == []
    # A new v1 cpuset cgroup gets its parent's sets, or it would take no process.
    assert (tmp_path / "cpuset" / "kubepods" / "pod1" / "cpuset.cpus").read_text() == "0-1"


def test_limits_go_only_where_sycri_made_the_pods_directory(tmp_path):
    # kubelet made the pod's memory cgroup (and sizes it); sycri made the cpu one.
    (tmp_path / "memory" / "kubepods" / "pod1").mkdir(parents=True)
    (tmp_path / "cpu").mkdir()
    pc = cgroups.PodCgroup.ensure(1, "/kubepods/pod1", str(tmp_path))
    assert pc.created == [str(tmp_path / "cpu" / "kubepods" / "pod1")]
    pc.apply(cgroups.Limits(cpu_period=100000, cpu_quota=50000, memory=1 << 30))
    assert (tmp_path / "cpu" / "kubepods" / "pod1" / "cpu.cfs_quota_us").read_text() == "50000"
    assert list((tmp_path / "memory" / "kubepods" / "pod1").iterdir()) == []


def test_update_files_reset_what_became_unlimited():
    # A resize may lift a limit: the old value must not stay in the cgroup.
    limited = cgroups.Limits(cpu_period=100000, cpu_quota=80000, cpu_shares=256, memory=1 << 30)
    assert cgroups.update_files(1, limited) == cgroups.limit_files(1, limited)
    assert cgroups.update_files(2, limited) == cgroups.limit_files(2, limited)
    lifted = cgroups.Limits(cpu_shares=256)
    assert cgroups.update_files(1, lifted) == {
        "cpu/cpu.cfs_quota_us": "-1",
        "cpu/cpu.shares": "256",
        "memory/memory.limit_in_bytes": "-1",
    }
    v2 = cgroups.update_files(2, lifted)
    assert (v2["cpu.max"], v2["memory.max"]) == ("max 100000", "max")


def test_pod_limits_from_a_config_add_the_overhead():
    from sycri.api import api_pb2
    from sycri.runtime.pod.sandbox_manager import pod_limits

    cfg = api_pb2.PodSandboxConfig()
    cfg.linux.resources.memory_limit_in_bytes = 512 << 20
    cfg.linux.resources.cpu_quota = 80000
    cfg.linux.resources.cpu_period = 100000
    cfg.linux.overhead.memory_limit_in_bytes = 32 << 20
    cfg.linux.overhead.cpu_quota = 5000
    got = pod_limits(cfg)
    assert (got.memory, got.cpu_quota, got.cpu_period) == (544 << 20, 85000, 100000)
    assert cgroups.limit_files(1, got)["memory/memory.limit_in_bytes"] == str(544 << 20)


# --- conmon's cgroup (conmon_cgroup) ---------------------------------------------------

CID = "ab" * 32


def test_conmon_goes_in_a_leaf_beside_the_container_in_the_pod_cgroup():
    place = conmon_cgroup.placement("pod", "cgroupfs", f"/kubepods/burstable/pod1/sycri-{CID}", CID)
    assert place == conmon_cgroup.Placement(
        "cgroupfs", f"/kubepods/burstable/pod1/sycri-conmon-{CID}"
    )


def test_conmon_under_a_configured_cgroupfs_path_or_slice():
    assert conmon_cgroup.placement("/system/monitors", "cgroupfs", f"/p/sycri-{CID}", CID).path == (
        f"/system/monitors/sycri-conmon-{CID}"
    )
    # A slice name with cgroupfs: where systemd would have put that slice.
    assert conmon_cgroup.placement("system.slice", "cgroupfs", f"/p/sycri-{CID}", CID).path == (
        f"/system.slice/sycri-conmon-{CID}"
    )


def test_systemd_conmon_is_a_scope_in_the_pod_slice_or_the_configured_one():
    pod = conmon_cgroup.placement("pod", "systemd", f"kubepods-pod1.slice:sycri:{CID}", CID)
    assert pod == conmon_cgroup.Placement(
        "systemd", "kubepods-pod1.slice", f"sycri-conmon-{CID}.scope"
    )
    assert conmon_cgroup.placement("system.slice", "systemd", f"x.slice:sycri:{CID}", CID).path == (
        "system.slice"
    )
    assert conmon_cgroup.leaf_dirs(pod, 2) == []
    assert conmon_cgroup.prefix(pod, []) == [
        "systemd-run", "--scope", "--quiet", f"--unit=sycri-conmon-{CID}.scope",
        "--slice=kubepods-pod1.slice", "--",
    ]  # fmt: skip


def test_systemd_refuses_a_cgroupfs_path_for_conmon():
    with pytest.raises(InvalidArgument, match="slice name"):
        conmon_cgroup.placement("/monitors", "systemd", f"x.slice:sycri:{CID}", CID)


def test_conmon_leaf_in_every_hierarchy(tmp_path):
    for h in ("memory", "cpu,cpuacct", "net_cls", "systemd"):
        (tmp_path / h).mkdir()
        (tmp_path / h / "cgroup.procs").write_text("")
    (tmp_path / "cpu").symlink_to("cpu,cpuacct")  # an alias, not a hierarchy of its own
    place = conmon_cgroup.placement("pod", "cgroupfs", f"/pod/sycri-{CID}", CID)
    dirs = conmon_cgroup.leaf_dirs(place, 1, str(tmp_path))
    assert sorted(dirs) == sorted(
        str(tmp_path / h / "pod" / f"sycri-conmon-{CID}")
        for h in ("memory", "cpu,cpuacct", "net_cls", "systemd")
    )
    (tmp_path / "cgroup.controllers").write_text("cpu memory\n")
    assert conmon_cgroup.leaf_dirs(place, 2, str(tmp_path)) == [
        str(tmp_path / "pod" / f"sycri-conmon-{CID}")
    ]
    # The wrapper joins each leaf before it execs conmon.
    pre = conmon_cgroup.prefix(place, dirs)
    assert pre[:2] == ["/bin/sh", "-c"] and pre[-1] == "--"
    assert pre[4:-1] == [d + "/cgroup.procs" for d in dirs]


@pytest.mark.parametrize("value", ["pod", "/", "/a/b", "system.slice", "kubepods-x.slice"])
def test_conmon_cgroup_settings_accepted(value):
    assert conmon_cgroup.check_setting(value) is None


@pytest.mark.parametrize("value", ["", "sycri", "/a/../b", "a-.slice", "/a b"])
def test_conmon_cgroup_settings_refused(value):
    assert conmon_cgroup.check_setting(value)


def test_squashfuse_goes_in_a_node_level_leaf_never_a_pod_cgroup():
    # It serves every pod of its image: the node's own part of the tree by default...
    assert conmon_cgroup.mount_placement("pod", "cgroupfs", "0123abcd") == (
        conmon_cgroup.Placement("cgroupfs", "/sycri-mounts/sycri-mount-0123abcd")
    )
    assert conmon_cgroup.mount_placement("pod", "systemd", "0123abcd") == (
        conmon_cgroup.Placement("systemd", "system.slice", "sycri-mount-0123abcd.scope")
    )
    # ...else where conmon_cgroup puts monitors.
    assert conmon_cgroup.mount_placement("/monitors", "cgroupfs", "0123abcd").path == (
        "/monitors/sycri-mount-0123abcd"
    )
    with pytest.raises(InvalidArgument, match="slice name"):
        conmon_cgroup.mount_placement("/monitors", "systemd", "0123abcd")


def test_pod_init_gets_a_leaf_of_the_pod_cgroup_never_the_pod_cgroup_itself():
    pid = "a" * 64
    fs = conmon_cgroup.init_placement("cgroupfs", "/kubepods/burstable/pod1", pid)
    assert fs == conmon_cgroup.Placement("cgroupfs", f"/kubepods/burstable/pod1/sycri-init-{pid}")
    sd = conmon_cgroup.init_placement("systemd", "kubepods-burstable-pod1.slice", pid)
    assert sd == conmon_cgroup.Placement(
        "systemd", "kubepods-burstable-pod1.slice", f"sycri-init-{pid}.scope"
    )
    # Its leaf is one that release() may remove.
    assert conmon_cgroup.is_ours(f"/sys/fs/cgroup/x/sycri-init-{pid}")


def test_pod_slice_properties_for_systemd():
    from sycri.runtime.cgroups import slices

    lim = cgroups.Limits(cpu_period=100000, cpu_quota=50000, cpu_shares=512, memory=1 << 28)
    props = dict((n, (sig, v)) for n, sig, v in slices.properties(lim))
    assert props["CPUQuotaPerSecUSec"] == ("t", "500000")
    assert props["CPUQuotaPeriodUSec"] == ("t", "100000")
    assert props["CPUWeight"] == ("t", str(cgroups.shares_to_weight(512)))
    assert props["MemoryMax"] == ("t", str(1 << 28))
    assert props["MemoryAccounting"] == ("b", "true")
    # An update lifts what became unlimited; a start leaves it out.
    assert "MemoryMax" not in dict((n, v) for n, _, v in slices.properties(cgroups.Limits()))
    upd = dict((n, v) for n, _, v in slices.properties(cgroups.Limits(), update=True))
    assert upd["MemoryMax"] == upd["CPUQuotaPerSecUSec"] == str(slices.INFINITY)
    argv = slices.start_argv("kubepods-pod1.slice", lim)
    i = argv.index("StartTransientUnit")
    assert argv[i + 1 : i + 4] == ["ssa(sv)a(sa(sv))", "kubepods-pod1.slice", "fail"]
    assert int(argv[i + 4]) == len(slices.properties(lim)) + 1  # with Description
    assert argv[-1] == "0"  # no auxiliary units


def test_pod_slice_cpuset_as_systemd_cpu_sets():
    from sycri.runtime.cgroups import slices

    assert slices.cpu_mask("0") == [1]
    assert slices.cpu_mask("1") == [2]
    assert slices.cpu_mask("0-3,8") == [0x0F, 0x01]
    assert slices.cpu_mask("9") == [0, 2]
    with pytest.raises(InvalidArgument, match="'a-b'"):
        slices.cpu_mask("a-b")
    lim = cgroups.Limits(cpuset_cpus="1,3", cpuset_mems="0")
    props = dict((n, (sig, v)) for n, sig, v in slices.properties(lim))
    assert props["AllowedCPUs"] == ("ay", "1 10")
    assert props["AllowedMemoryNodes"] == ("ay", "1 1")
    # An update without a cpuset leaves the slice's as it is (as cgroupfs does).
    assert "AllowedCPUs" not in dict((n, v) for n, _, v in slices.properties(
        cgroups.Limits(), update=True))  # fmt: skip
    argv = slices.set_argv("kubepods-pod1.slice", lim)
    i = argv.index("AllowedCPUs")
    assert argv[i : i + 4] == ["AllowedCPUs", "ay", "1", "10"]
    # A string with spaces stays one argument.
    argv = slices.start_argv("kubepods-pod1.slice", lim)
    assert argv[argv.index("Description") + 2] == "sycri pod slice kubepods-pod1.slice"


@pytest.mark.parametrize(
    ("parent", "kept"),
    [
        ("kubepods-burstable-podx.slice", "kubepods-burstable-podx.slice"),  # kubelet's
        ("/test.slice", "test.slice"),  # critest's, with the systemd driver
        ("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pody.slice",
         "kubepods-besteffort-pody.slice"),
        ("system.slice:sycri:abc", "system.slice:sycri:abc"),
    ],
)  # fmt: skip
def test_a_path_of_slices_is_its_last_slice_as_containerd_takes_it(parent, kept):
    assert cgroups.pod_parent("systemd", parent) == kept
    assert cgroups.relative_path("systemd", parent) == cgroups.systemd_slice_path(
        kept.split(":", 1)[0]
    )
    assert cgroups.pod_parent("cgroupfs", parent) == parent


def test_a_path_that_is_not_of_slices_is_still_refused_with_systemd():
    with pytest.raises(InvalidArgument, match="not a systemd slice name"):
        cgroups.relative_path("systemd", "/kubepods/burstable/podx")
