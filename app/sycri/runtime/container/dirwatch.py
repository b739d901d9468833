"""Wake up when a file in a directory is written (inotify), so the exit monitor records
an exit when conmon writes it rather than at its next poll."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import os
from pathlib import Path

log = logging.getLogger("sycri.containers")

IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.inotify_init1.argtypes = [ctypes.c_int]
_libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]


class DirWatch:
    """An inotify watch on one directory, readable from the event loop: :meth:`wait`
    returns when a file there was written (or renamed into it), or at ``timeout``."""

    def __init__(self, directory: Path) -> None:
        self.fd = -1
        self._changed = asyncio.Event()
        directory.mkdir(parents=True, exist_ok=True)
        fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        if _libc.inotify_add_watch(fd, os.fsencode(directory), IN_CLOSE_WRITE | IN_MOVED_TO) < 0:
            err = ctypes.get_errno()
            os.close(fd)
            raise OSError(err, f"inotify_add_watch {directory}")
        self.fd = fd
        asyncio.get_running_loop().add_reader(fd, self._readable)

    def _readable(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self.fd, 65536):  # the events themselves do not matter
                pass
        self._changed.set()

    async def wait(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)
        self._changed.clear()

    def close(self) -> None:
        if self.fd >= 0:
            asyncio.get_running_loop().remove_reader(self.fd)
            os.close(self.fd)
            self.fd = -1


def open_watch(directory: Path) -> DirWatch | None:
    """A watch on ``directory``, or None where inotify is not to be had (then the
    caller polls)."""
    try:
        return DirWatch(directory)
    except OSError as exc:
        log.warning("no inotify on %s (%s): polling it", directory, exc)
        return None
