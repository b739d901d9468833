"""conmon's cgroup at a container's exit: removed when conmon has gone, left (never
waited on, never killed) while a process is still in it."""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
from pathlib import Path

import pytest
from sycri.runtime.cgroups import cgroups, conmon_cgroup

from tests.support.node import remove_cgroups

pytestmark = pytest.mark.root


def test_release_if_empty_waits_for_nothing_and_kills_nothing(tmp_path: Path):
    top = f"sycri-test-{secrets.token_hex(4)}"
    place = conmon_cgroup.Placement("cgroupfs", f"/{top}/{conmon_cgroup.PREFIX}c1")
    record = tmp_path / conmon_cgroup.RECORD
    dirs = conmon_cgroup.prepare(record, place, cgroups.detect_version())
    proc = subprocess.Popen(["sleep", "600"])
    try:
        for d in dirs:
            Path(d, "cgroup.procs").write_text(str(proc.pid))
        assert not conmon_cgroup.release_if_empty(record)
        assert proc.poll() is None  # still running: nothing was killed
        assert all(os.path.isdir(d) for d in dirs) and record.exists()
        proc.kill()
        proc.wait()
        assert conmon_cgroup.release_if_empty(record)
        assert not any(os.path.isdir(d) for d in dirs)
        assert not record.exists()
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()
        remove_cgroups(top)
