"""Launching conmon, the monitor that owns a container's stdio, log, exit code and OOM.

This is the one place sycri starts a long-lived process outside ``command.run``:
conmon must outlive sycri (a DaemonSet upgrade restarts sycri while pods keep
running), and it reports through an inherited sync pipe (its number in
``_OCI_SYNCPIPE``), which ``command.run`` does not pass. conmon forks itself into the
background at once (its first process exits and is reaped here; the monitor lives on
in its own session, re-parented to init), then runs ``runc create`` and writes
``{"data": PID}`` (or a negative value and a message) to the sync pipe.

Files conmon keeps per container: ``<exit_dir>/<id>`` (exit code, written when the
container exits), ``<bundle>/attach`` (attach socket, reached via
``<socket_dir>/<id>/attach``), ``<bundle>/ctl`` (control FIFO: resize and log
reopen), ``<bundle>/oom`` or ``<persist_dir>/oom`` (the container was OOM-killed).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from sycri.errors import DeadlineExceeded, Internal
from sycri.observability import metrics, tracing
from sycri.runtime import procfs

log = logging.getLogger("sycri.conmon")

CREATE_TIMEOUT = 120.0


@dataclass(frozen=True)
class Launch:
    conmon: str
    runtime: str  # the OCI runtime binary
    runtime_root: str
    container_id: str
    name: str
    bundle: Path
    log_path: str
    exit_dir: Path
    socket_dir: Path
    persist_dir: Path
    log_size_max: int = -1
    tty: bool = False
    stdin: bool = False
    stdin_once: bool = False
    systemd_cgroup: bool = False
    # Runs conmon inside its own cgroup (``conmon_cgroup.prefix``); empty: sycri's.
    prefix: tuple[str, ...] = ()

    def argv(self) -> list[str]:
        argv = [
            self.conmon,
            "--api-version", "1",
            "--cid", self.container_id,
            "--cuuid", self.container_id,
            "--name", self.name,
            "--runtime", self.runtime,
            "--bundle", str(self.bundle),
            "--container-pidfile", str(self.bundle / "pidfile"),
            "--conmon-pidfile", str(self.bundle / "conmon.pid"),
            "--log-path", f"k8s-file:{self.log_path}",
            "--exit-dir", str(self.exit_dir),
            "--socket-dir-path", str(self.socket_dir),
            "--persist-dir", str(self.persist_dir),
            "--runtime-arg", "--root",
            "--runtime-arg", self.runtime_root,
            "--log-level", "warn",
        ]  # fmt: skip
        if self.log_size_max > 0:
            argv += ["--log-size-max", str(self.log_size_max)]
        if self.systemd_cgroup:
            argv.append("--systemd-cgroup")
        if self.tty:
            argv.append("--terminal")
        if self.stdin:
            argv.append("--stdin")
            if not self.stdin_once:
                argv.append("--leave-stdin-open")
        return argv


async def create(launch: Launch) -> int:
    """Run conmon (which runs ``runc create``); the container's pid, or Internal with
    runc's error text. Timed and traced as ``command.run`` would (it cannot run conmon)."""
    t0, ok = time.monotonic(), False
    with tracing.span("conmon.start", **{"container.id": launch.container_id}):
        try:
            pid = await _create(launch)
            ok = True
            return pid
        finally:
            metrics.record_command("conmon", ok, time.monotonic() - t0)


async def _create(launch: Launch) -> int:
    launch.exit_dir.mkdir(parents=True, exist_ok=True)
    launch.socket_dir.mkdir(parents=True, exist_ok=True)
    launch.persist_dir.mkdir(parents=True, exist_ok=True)
    read_fd, write_fd = os.pipe()
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "_OCI_SYNCPIPE": str(write_fd),
    }
    t0 = time.monotonic()
    # A file, not a pipe: the backgrounded monitor inherits stderr and would hold a pipe
    # open for the container's whole life.
    stderr_path = launch.bundle / "conmon.stderr"
    try:
        with open(stderr_path, "wb") as stderr_file:
            proc = subprocess.Popen(
                [*launch.prefix, *launch.argv()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr_file,
                env=env,
                pass_fds=(write_fd,),
                start_new_session=True,
                cwd=str(launch.bundle),
            )
    except OSError as exc:
        os.close(read_fd)
        os.close(write_fd)
        raise Internal(f"cannot start conmon {launch.conmon!r}: {exc.strerror}") from None
    os.close(write_fd)
    try:
        # The first conmon process exits as soon as it has forked the monitor.
        await asyncio.to_thread(proc.wait, CREATE_TIMEOUT)
        message = await asyncio.wait_for(asyncio.to_thread(_read_sync, read_fd), CREATE_TIMEOUT)
    except (subprocess.TimeoutExpired, TimeoutError):
        proc.kill()
        proc.wait()
        raise DeadlineExceeded(
            f"conmon for {launch.container_id} did not report within {CREATE_TIMEOUT:g}s"
        ) from None
    finally:
        os.close(read_fd)
    log.debug("conmon create %s took %.3fs", launch.container_id, time.monotonic() - t0)
    if message is None:
        err = stderr_path.read_bytes()[-4000:].decode(errors="replace").strip()
        raise Internal(f"conmon exited without reporting a container pid: {err[-2000:]}")
    pid = message.get("data", message.get("pid", -1))
    if not isinstance(pid, int) or pid <= 0:
        text = str(message.get("message") or "unknown error").strip()
        raise Internal(f"runc create failed: {text[-2000:]}")
    return pid


def _read_sync(fd: int) -> dict[str, object] | None:
    """The first JSON object conmon writes to the sync pipe, or None at EOF."""
    buf = b""
    decoder = json.JSONDecoder()
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        buf += chunk
        text = buf.decode(errors="replace").lstrip()
        try:
            obj, _ = decoder.raw_decode(text)
        except ValueError:
            continue
        if isinstance(obj, dict):
            return obj
    return None


def reopen_log(bundle: Path) -> None:
    """Ask conmon to reopen the container log (kubelet rotated it): ``2 0 0`` on ctl."""
    ctl = bundle / "ctl"
    try:
        fd = os.open(ctl, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise Internal(f"cannot reach conmon's control FIFO {ctl}: {exc.strerror}") from None
    try:
        os.write(fd, b"2 0 0\n")
    finally:
        os.close(fd)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def monitors(exit_dir: Path) -> dict[str, int]:
    """Container id -> pid of every live conmon that reports to ``exit_dir`` (ours).

    Recovery uses it to end monitors of containers that have no record (a removal
    killed half way) and to find those of starts cut short: left alone they would
    outlive their container.
    """
    want = str(exit_dir).encode()
    found: dict[str, int] = {}
    for pid, args in procfs.fields("cmdline"):
        if not args or not args[0].endswith(b"conmon"):
            continue
        opts = dict(itertools.pairwise(args))
        if opts.get(b"--exit-dir") == want and b"--cid" in opts:
            found[opts[b"--cid"].decode(errors="replace")] = pid
    return found


async def kill(pid: int, timeout: float = 5.0) -> None:
    """SIGKILL one conmon and wait until it is gone (or a zombie of someone else's)."""
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return
        except OSError:
            return
        await asyncio.sleep(0.01)
    log.warning("conmon %d still present after SIGKILL", pid)


def pid_of(bundle: Path, container_id: str) -> int | None:
    """The pid of this container's live conmon (in ``bundle/conmon.pid``), or None."""
    try:
        pid = int((bundle / "conmon.pid").read_text().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
    except (OSError, ValueError):
        return None
    if args and args[0].endswith(b"conmon") and container_id.encode() in args:
        return pid
    return None


def monitors_container(bundle: Path, container_id: str) -> bool:
    """Whether the conmon of this container (its pid in ``bundle/conmon.pid``) lives."""
    return pid_of(bundle, container_id) is not None


def remove_attach_entry(entry: Path) -> None:
    """conmon's attach-socket entry of a container: a link or a dir, by conmon version."""
    with contextlib.suppress(OSError):
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
