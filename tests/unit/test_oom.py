"""The OOM fallback: the parent's hierarchical oom_kill counter, before and after."""

from __future__ import annotations

from sycri.runtime.cgroups import oom

EVENTS = "low 0\nhigh 0\nmax 12\noom 3\noom_kill {}\noom_group_kill 0\n"


def test_parent_of_a_container_cgroup_for_each_driver(tmp_path):
    cid = "ab" * 32
    got = oom.parent_dir(2, "systemd", f"kubepods-pod1.slice:sycri:{cid}", str(tmp_path))
    assert got == tmp_path / "kubepods.slice/kubepods-pod1.slice"
    got = oom.parent_dir(2, "cgroupfs", f"/kubepods/pod1/sycri-{cid}", str(tmp_path))
    assert got == tmp_path / "kubepods/pod1"
    assert oom.parent_dir(1, "cgroupfs", f"/kubepods/pod1/sycri-{cid}") is None


def test_a_kill_counted_after_the_start_is_an_oom_kill(tmp_path):
    parent, bundle = tmp_path / "pod", tmp_path / "bundle"
    parent.mkdir()
    bundle.mkdir()
    (parent / "memory.events").write_text(EVENTS.format(2))
    oom.record_base(bundle, parent)
    assert not oom.killed_since_start(bundle, parent)  # an earlier kill is not this one
    (parent / "memory.events").write_text(EVENTS.format(3))
    assert oom.killed_since_start(bundle, parent)


def test_no_count_no_verdict(tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    oom.record_base(bundle, tmp_path / "gone")  # nothing to read: nothing recorded
    assert not (bundle / oom.BASE).exists()
    assert not oom.killed_since_start(bundle, tmp_path / "gone")
    assert not oom.killed_since_start(bundle, None)
    assert oom.kills("low 0\n") is None
