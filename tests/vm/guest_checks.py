"""Run inside the VM guest only (tests/vm/guest_run.sh): cgroup v2 + systemd checks."""

from pathlib import Path


def test_unified_hierarchy():
    assert Path("/sys/fs/cgroup/cgroup.controllers").exists()
