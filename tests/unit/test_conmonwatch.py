"""ConmonWatch against real processes standing in for conmon (a shell whose argv names
conmon and the container, as conmon's command line does), real pidfds and a real
descriptor limit."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sycri.runtime.container.conmonwatch import ConmonWatch

from tests.support.conmons import StandInConmon


@pytest.fixture
def conmons(tmp_path: Path) -> Iterator[list[StandInConmon]]:
    made = [StandInConmon(tmp_path / f"b{i}", f"{i:02d}" + "c" * 62) for i in range(3)]
    yield made
    for fake in made:
        with contextlib.suppress(OSError):
            fake.kill()


def running(fakes: list[StandInConmon]) -> list[tuple[str, Path]]:
    return [(f.cid, f.bundle) for f in fakes]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_killed_conmon_is_dead_at_the_next_look_and_only_it(conmons):
    watch = ConmonWatch()
    try:
        assert watch.dead(running(conmons)) == []
        assert len(watch) == 3
        conmons[1].kill()
        assert watch.dead(running(conmons)) == [conmons[1].cid]
        # Its descriptor went with it; the others are kept and still alive.
        assert len(watch) == 2
        # Still running as far as the records know: every look says so again.
        assert watch.dead(running(conmons)) == [conmons[1].cid]
    finally:
        watch.close()


def test_a_pid_file_naming_another_process_is_a_dead_conmon(conmons, tmp_path):
    watch = ConmonWatch()
    try:
        # A pid that lives but is not this container's conmon (a reused pid, another
        # container's conmon): not alive as far as this container goes.
        (conmons[0].bundle / "conmon.pid").write_text(f"{os.getpid()}\n")
        (conmons[2].bundle / "conmon.pid").write_text(f"{conmons[1].proc.pid}\n")
        missing = tmp_path / "gone"
        missing.mkdir()
        dead = watch.dead([*running(conmons), ("f" * 64, missing)])
        assert sorted(dead) == sorted([conmons[0].cid, conmons[2].cid, "f" * 64])
        assert len(watch) == 1
    finally:
        watch.close()


def test_descriptors_of_containers_no_longer_running_are_closed(conmons):
    before = open_fds()
    watch = ConmonWatch()
    assert watch.dead(running(conmons)) == []
    assert open_fds() == before + 3
    assert watch.dead(running(conmons[:1])) == []  # two exited or were removed
    assert open_fds() == before + 1
    watch.close()
    assert open_fds() == before


def test_on_a_kernel_without_pidfds_the_files_tell(conmons, monkeypatch):
    """pidfd_open(2) is Linux 5.3; before it the call fails with ENOSYS (played here,
    the one thing this machine's kernel cannot do), and each look reads the files."""

    def no_pidfd(pid: int, flags: int = 0) -> int:
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))

    monkeypatch.setattr(os, "pidfd_open", no_pidfd)
    before = open_fds()
    watch = ConmonWatch()
    try:
        assert watch.dead(running(conmons)) == []
        assert (len(watch), open_fds()) == (3, before)
        conmons[2].kill()
        assert watch.dead(running(conmons)) == [conmons[2].cid]
        assert watch.dead(running(conmons)) == [conmons[2].cid]
    finally:
        watch.close()


def test_pidfds_beyond_the_budget_are_left_to_the_files(conmons):
    """At most ``max_pidfds`` descriptors (half the soft limit by default), whatever the
    container count: the rest are looked at by their files, and still seen to die."""
    before = open_fds()
    watch = ConmonWatch(max_pidfds=2)
    try:
        assert watch.dead(running(conmons)) == []
        assert (len(watch), open_fds()) == (3, before + 2)
        conmons[2].kill()  # the one past the budget
        assert watch.dead(running(conmons)) == [conmons[2].cid]
        conmons[0].kill()
        assert sorted(watch.dead(running(conmons))) == sorted([conmons[0].cid, conmons[2].cid])
    finally:
        watch.close()
    assert open_fds() == before
