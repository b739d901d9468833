"""The test-only crash hook: dead at the named point, inert everywhere else."""

from __future__ import annotations

import signal
import subprocess
import sys

from sycri import crashpoint

from tests.support.server import sycri_env

SCRIPT = """
from sycri import crashpoint
print("before", flush=True)
crashpoint.reach("pod.run.saved")
print("between", flush=True)
crashpoint.reach("pod.run.ready")
print("after", flush=True)
"""


def run(point: str | None) -> subprocess.CompletedProcess:
    env = sycri_env({crashpoint.ENV: point} if point else None)
    return subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=30
    )


def test_kills_itself_exactly_at_the_named_point():
    res = run("pod.run.ready")
    assert res.returncode == -signal.SIGKILL
    assert res.stdout.split() == ["before", "between"]


def test_unset_or_other_point_is_inert():
    for point in (None, "pull.fetched"):
        res = run(point)
        assert (res.returncode, res.stdout.split()) == (0, ["before", "between", "after"])


def test_point_names_are_unique_and_dotted():
    assert len(set(crashpoint.POINTS)) == len(crashpoint.POINTS)
    assert all(p.count(".") >= 1 for p in crashpoint.POINTS)
