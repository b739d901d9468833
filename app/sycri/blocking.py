"""Test-only: record blocking calls made on the event-loop thread.

Every RPC shares one event loop; a blocking call in any handler (an fsync, a SQLite
commit, a subprocess wait, hashing a large buffer) stalls every other RPC, streaming
included. Timing callbacks cannot prove their absence on a loaded machine, so this check
does not time anything: with ``SYCRI_TEST_LOOP_CHECK=<file>`` sycri wraps the blocking
primitives it uses, and a call made from a thread that runs an event loop appends one
JSON line to ``<file>`` naming the primitive and the sycri frames that called it. The
e2e fixture turns it on and fails the test when anything was recorded.

Wrapped: ``os.fsync``/``fdatasync``, ``os.write`` and SHA-256 updates of at least
:data:`LARGE` bytes, ``time.sleep``, ``subprocess.Popen.wait``/``communicate``, blocking
``socket.connect``, and ``execute``/``commit`` of SQLite connections opened afterwards.
Not wrapped: file writes through Python file objects, and work inside C extensions.

``SYCRI_TEST_SLOW_CALLBACKS=<file>`` turns on asyncio's debug mode with a 10 ms
slow-callback threshold and appends its warnings to ``<file>``: a measurement, for
figures, not a check. Neither is a setting (no flag, no config key), as
``SYCRI_TEST_CRASH_AT``: unset, nothing is wrapped.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

ENV = "SYCRI_TEST_LOOP_CHECK"
SLOW_ENV = "SYCRI_TEST_SLOW_CALLBACKS"
SLOW_SECONDS = 0.010
LARGE = 256 * 1024  # bytes written or hashed at once that count as blocking

_HERE = os.path.abspath(__file__)
_PACKAGE = os.path.dirname(_HERE) + os.sep
_real_write = os.write
_lock = threading.Lock()
_state: dict[str, Any] = {"path": None, "armed": False, "installed": False}


def on_loop_thread() -> bool:
    """Whether the calling thread is running an event loop (worker threads are not)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _frames() -> list[str]:
    """The sycri frames of the current stack, innermost first (this module left out)."""
    out: list[str] = []
    frame: FrameType | None = sys._getframe(2)
    while frame is not None and len(out) < 8:
        path = os.path.abspath(frame.f_code.co_filename)
        if path.startswith(_PACKAGE) and path != _HERE:
            rel = path[len(_PACKAGE) :]
            out.append(f"{rel}:{frame.f_lineno} {frame.f_code.co_name}")
        frame = frame.f_back
    return out


def record(call: str) -> None:
    """Note ``call`` when it happens on the event-loop thread while the check is armed."""
    path = _state["path"]
    if path is None or not _state["armed"] or not on_loop_thread():
        return
    frames = _frames()
    line = json.dumps({"call": call, "where": frames[0] if frames else "?", "stack": frames})
    with _lock:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            _real_write(fd, (line + "\n").encode())
        finally:
            os.close(fd)


def _wrap(owner: Any, name: str, call: str, when: Callable[..., bool] | None = None) -> None:
    real = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if when is None or when(*args, **kwargs):
            record(call)
        return real(*args, **kwargs)

    wrapper.__wrapped__ = real  # type: ignore[attr-defined]
    setattr(owner, name, wrapper)


class _Connection(sqlite3.Connection):
    def execute(self, *args: Any, **kwargs: Any) -> sqlite3.Cursor:
        record("sqlite3.execute")
        return super().execute(*args, **kwargs)

    def executemany(self, *args: Any, **kwargs: Any) -> sqlite3.Cursor:
        record("sqlite3.executemany")
        return super().executemany(*args, **kwargs)

    def executescript(self, *args: Any, **kwargs: Any) -> sqlite3.Cursor:
        record("sqlite3.executescript")
        return super().executescript(*args, **kwargs)

    def commit(self) -> None:
        record("sqlite3.commit")
        super().commit()


class _Hash:
    """A SHA-256 whose large updates are recorded."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.name = real.name
        self.digest_size = real.digest_size
        self.block_size = real.block_size

    def update(self, data: Any) -> None:
        if memoryview(data).nbytes >= LARGE:
            record("hashlib.sha256.update")
        self._real.update(data)

    def digest(self) -> bytes:
        return bytes(self._real.digest())

    def hexdigest(self) -> str:
        return str(self._real.hexdigest())

    def copy(self) -> _Hash:
        return _Hash(self._real.copy())


def _large(_fd: int, data: Any, *rest: Any) -> bool:
    return memoryview(data).nbytes >= LARGE


def _blocking_socket(sock: socket.socket, *args: Any) -> bool:
    return sock.gettimeout() != 0.0


def install(path: str) -> None:
    """Wrap the primitives (once); records go to ``path`` while :func:`arm`-ed."""
    _state["path"] = path
    if _state["installed"]:
        return
    _state["installed"] = True
    _wrap(os, "fsync", "os.fsync")
    _wrap(os, "fdatasync", "os.fdatasync")
    _wrap(os, "write", "os.write (large)", _large)
    _wrap(time, "sleep", "time.sleep")
    _wrap(subprocess.Popen, "wait", "subprocess.Popen.wait")
    _wrap(subprocess.Popen, "communicate", "subprocess.Popen.communicate")
    _wrap(socket.socket, "connect", "socket.connect (blocking)", _blocking_socket)
    real_connect = sqlite3.connect

    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        kwargs.setdefault("factory", _Connection)
        conn: sqlite3.Connection = real_connect(*args, **kwargs)
        return conn

    sqlite3.connect = connect  # type: ignore[assignment]
    real_sha256 = hashlib.sha256

    def sha256(data: Any = b"", **kwargs: Any) -> _Hash:
        h = _Hash(real_sha256(**kwargs))
        if data:
            h.update(data)
        return h

    hashlib.sha256 = sha256  # type: ignore[assignment]


def install_from_env() -> None:
    """At start: wrap the primitives when the environment asks for the check."""
    path = os.environ.get(ENV)
    if path:
        install(path)


def arm(armed: bool = True) -> None:
    """Record from now on (while serving RPCs), or no longer (start-up, shutdown)."""
    _state["armed"] = armed


def watch_slow_callbacks(loop: asyncio.AbstractEventLoop) -> None:
    """With ``SYCRI_TEST_SLOW_CALLBACKS=<file>``: asyncio's debug mode, its slow-callback
    warnings (10 ms and more) appended to ``<file>``."""
    path = os.environ.get(SLOW_ENV)
    if not path:
        return
    loop.set_debug(True)
    loop.slow_callback_duration = SLOW_SECONDS
    handler = logging.FileHandler(path)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logging.getLogger("asyncio").addHandler(handler)


def recorded(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records in ``path`` (none when it does not exist)."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]
