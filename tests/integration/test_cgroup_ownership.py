"""Which cgroup directories are the pod's, on the host's real cgroupfs: the pod's own
directory where sycri made it; never a parent, never one someone else made, even at
the same moment; and sycri's own makes and removals never pull a directory from under
each other."""

from __future__ import annotations

import os
import secrets
import threading
from pathlib import Path

import pytest
from sycri.runtime.cgroups import cgroups, conmon_cgroup

from tests.support.node import remove_cgroups

pytestmark = pytest.mark.root

V = cgroups.detect_version()


@pytest.fixture
def top() -> str:
    name = f"sycri-test-{secrets.token_hex(4)}"
    yield name
    remove_cgroups(name)


def test_a_directory_made_between_the_record_and_the_mkdir_is_not_claimed(top: str):
    rel = f"/{top}/kubepods/pod1"
    recorded = cgroups.PodCgroup.missing(V, rel)
    assert recorded and all(d.endswith(rel) for d in recorded)
    kubelets = recorded[0]  # kubelet makes it (and its parents) meanwhile
    os.makedirs(kubelets)
    pc = cgroups.PodCgroup.ensure(V, rel)
    assert pc.created == recorded[1:]
    assert all(os.path.isdir(d) for d in recorded)
    pc.remove()
    assert os.path.isdir(kubelets)
    assert not any(os.path.exists(d) for d in recorded[1:])
    assert all(os.path.isdir(os.path.dirname(d)) for d in recorded)  # the shared parents


def test_a_record_written_before_a_crash_removes_what_was_made(top: str):
    # Recorded, then the crash came half-way through the mkdirs: recovery removes the
    # recorded dirs that exist and passes over those that were never made.
    rel = f"/{top}/pod1"
    recorded = cgroups.PodCgroup.missing(V, rel)
    half = recorded[: len(recorded) // 2]
    for d in half:
        os.makedirs(d)
    cgroups.remove_dirs(recorded)
    assert not any(os.path.exists(d) for d in recorded)


def test_makes_and_removals_of_the_same_parent_take_turns(top: str, tmp_path: Path):
    """Two image mounts' cgroups under one parent that the last release removes
    (``/sycri-mounts``): one thread's release emptying and removing the parent must
    never make the other's prepare fail half-way down the path."""
    errors: list[BaseException] = []

    def churn(name: str) -> None:
        place = conmon_cgroup.Placement(
            "cgroupfs", f"/{top}{conmon_cgroup.MOUNTS_CGROUP}/{conmon_cgroup.MOUNT_PREFIX}{name}"
        )
        record = tmp_path / f"{name}.cgroup"
        try:
            for _ in range(150):
                dirs = conmon_cgroup.prepare(record, place, V)
                assert all(os.path.isdir(d) for d in dirs)
                conmon_cgroup.release(record)
        except BaseException as exc:  # reported below, with the thread's own traceback
            errors.append(exc)

    threads = [threading.Thread(target=churn, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    # The last release took the parent too: nothing of the test's is left below top.
    assert not any(
        (Path("/sys/fs/cgroup") / h / top / conmon_cgroup.MOUNTS_CGROUP.strip("/")).exists()
        for h in os.listdir("/sys/fs/cgroup")
    )
