"""The proxy's supervisor for hosts without systemd: restarts ``sycri proxy serve``
whenever it exits, for as long as the supervisor lives.

On systemd hosts the unit's ``Restart=always`` does this job instead (unit.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

log = logging.getLogger("sycri.proxy.supervisor")

BACKOFF_START = 0.5
BACKOFF_MAX = 10.0
STEADY_SECONDS = 30.0  # a child that ran this long restarts without back-off


def serve_command(flags: Sequence[str]) -> list[str]:
    """``proxy serve`` with the supervisor's own settings flags: a restart re-reads the
    settings file, so an upgrade that rewrote it takes effect."""
    return [sys.executable, "-m", "sycri", "proxy", "serve", *flags]


def join_cgroup(name: str, pid: int | None = None, root: Path = Path("/sys/fs/cgroup")) -> None:
    """Move ``pid`` into the cgroup ``name`` at the top of every hierarchy, so that the
    container engine that stops the installer's pod does not stop the proxy with it."""
    pid = pid or os.getpid()
    if (root / "cgroup.controllers").exists():  # v2: one hierarchy
        targets = [root / name]
    else:
        targets = [h / name for h in root.iterdir() if h.is_dir() and not h.is_symlink()]
    for target in targets:
        target.mkdir(exist_ok=True)
        (target / "cgroup.procs").write_text(f"{pid}\n")


class Supervisor:
    def __init__(self, command: Sequence[str], pidfile: Path | None = None) -> None:
        self.command = list(command)
        self.pidfile = pidfile
        self.child: subprocess.Popen[bytes] | None = None
        self.stopping = False
        self.restart_now = False

    def _on_term(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True
        self._signal_child(signal.SIGTERM)

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        """An upgrade: stop the child; the loop starts the (new) command at once."""
        self.restart_now = True
        self._signal_child(signal.SIGTERM)

    def _signal_child(self, sig: int) -> None:
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(sig)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        signal.signal(signal.SIGHUP, self._on_hup)
        if self.pidfile is not None:
            self.pidfile.parent.mkdir(parents=True, exist_ok=True)
            self.pidfile.write_text(f"{os.getpid()}\n")
        backoff = BACKOFF_START
        try:
            while not self.stopping:
                started = time.monotonic()
                self.child = subprocess.Popen(self.command, stdin=subprocess.DEVNULL)
                log.info("proxy started, pid %d", self.child.pid)
                code = self.child.wait()
                if self.stopping:
                    break
                log.warning("proxy exited with %d; restarting", code)
                if self.restart_now or time.monotonic() - started > STEADY_SECONDS:
                    backoff = BACKOFF_START
                if not self.restart_now:
                    time.sleep(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX)
                self.restart_now = False
        finally:
            self._signal_child(signal.SIGTERM)
            if self.child is not None:
                try:
                    self.child.wait(10)
                except subprocess.TimeoutExpired:
                    self.child.kill()
                    self.child.wait()
            if self.pidfile is not None:
                with contextlib.suppress(FileNotFoundError):
                    self.pidfile.unlink()
        return 0


def running(pidfile: Path) -> int | None:
    """The pid of a live supervisor recorded in ``pidfile``, else None."""
    try:
        pid = int(pidfile.read_text().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return None
    return pid
