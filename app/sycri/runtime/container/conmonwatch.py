"""Which running containers' conmons have died, in one poll(2) per look.

Reading each running container's ``conmon.pid`` and ``/proc/<pid>/cmdline`` costs ~20 µs,
so at 500 containers the exit monitor's once-a-second look held the event loop ~10 ms:
any call arriving then waited. A pidfd (pidfd_open(2), Linux 5.3) turns readable when
its process ends, whoever the parent is, and names that process, not a pid that may be
reused. Each conmon's pidfd is taken once (after its ``cmdline`` is checked) and a look
polls them all, ~16 µs at 500. A container whose pidfd cannot be had (an older kernel,
no descriptor left) is checked by reading its files at every look, as before; so is
any beyond half of sycri's descriptor limit (a node that runs sycri with a soft limit
of 1024 keeps the other half for sockets and files, whatever the container count).
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import select
from collections.abc import Iterable
from pathlib import Path

from sycri.runtime.container import conmon

_BY_FILES = -1  # no pidfd for this container: read its files at every look


class ConmonWatch:
    """A pidfd per running container's live conmon, kept between looks."""

    def __init__(self, max_pidfds: int | None = None) -> None:
        if max_pidfds is None:
            soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            max_pidfds = soft // 2 if soft != resource.RLIM_INFINITY else 1 << 20
        self.max_pidfds = max_pidfds
        self._fds: dict[str, int] = {}
        self._ids: dict[int, str] = {}
        self._poll = select.poll()

    def dead(self, running: Iterable[tuple[str, Path]]) -> list[str]:
        """The ids among ``running`` (id, bundle) whose conmon does not live. Descriptors
        of containers not in ``running`` any more (exited, removed) are closed."""
        seen: set[str] = set()
        out: list[str] = []
        for cid, bundle in running:
            seen.add(cid)
            fd = self._fds.get(cid)
            if fd is None:
                fd = self._open(cid, bundle)
                if fd is None:
                    out.append(cid)
                    continue
            if fd == _BY_FILES and not conmon.monitors_container(bundle, cid):
                out.append(cid)
        for fd, _events in self._poll.poll(0):
            cid = self._ids.get(fd, "")
            self._close(cid)  # its process ended: a later look reads the files again
            if cid in seen:
                out.append(cid)
        for cid in [c for c in self._fds if c not in seen]:
            self._close(cid)
        return out

    def close(self) -> None:
        for cid in list(self._fds):
            self._close(cid)

    def __len__(self) -> int:
        return len(self._fds)

    def _open(self, cid: str, bundle: Path) -> int | None:
        """A verified pidfd of the container's conmon; None when it is not alive;
        ``_BY_FILES`` when the kernel gives no pidfd."""
        pid = conmon.pid_of(bundle, cid)
        if pid is None:
            return None
        if len(self._ids) >= self.max_pidfds:
            self._fds[cid] = _BY_FILES
            return _BY_FILES
        try:
            fd = os.pidfd_open(pid)
        except OSError as exc:
            if exc.errno == errno.ESRCH:
                return None
            self._fds[cid] = _BY_FILES  # ENOSYS, EMFILE, ...
            return _BY_FILES
        # The pid was read before the pidfd was taken: the process must still be that
        # conmon, or the pidfd may name whatever reused the pid meanwhile.
        if conmon.pid_of(bundle, cid) != pid:
            os.close(fd)
            return None
        self._fds[cid] = fd
        self._ids[fd] = cid
        self._poll.register(fd, select.POLLIN)
        return fd

    def _close(self, cid: str) -> None:
        fd = self._fds.pop(cid, None)
        if fd is None or fd == _BY_FILES:
            return
        self._ids.pop(fd, None)
        with contextlib.suppress(KeyError, ValueError):
            self._poll.unregister(fd)
        os.close(fd)
