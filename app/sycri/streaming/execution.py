"""Exec: a command in a running container through ``runc exec``, with pipes or a TTY.

runc runs in the foreground, so its exit status is the command's. With a TTY, runc
gets a pseudo-terminal we own as its stdio and copies it to the container's own
terminal; a resize sets our terminal's size and sends runc SIGWINCH, which runc
applies inside. runc's own failures (no such command, container gone) go to a JSON
log file and exit status 255, so they reach the client as an error, not as output.

The runc child is long-lived and interactive, which ``sycri.command.run`` (collect
output, then return) does not fit; this module spawns it itself and always reaps it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import logging
import os
import pty
import shutil
import signal
import struct
import tempfile
import termios
from collections.abc import Awaitable, Callable
from tty import setraw
from typing import Any

from sycri.streaming.channel import (
    Inbox,
    Outbound,
    Stdio,
    StreamError,
    TerminalSize,
    parse_resizes,
    resize_events,
)
from sycri.streaming.targets import ContainerTarget, runc_state

log = logging.getLogger("sycri.streaming.exec")

RUNC_FAILED = 255  # runc exec's own exit status when it could not run the command
_STOP_GRACE = 2.0
_CHUNK = 64 * 1024
FIRST_SIZE_WAIT = 0.5  # seconds a TTY exec waits for the client's first window size


class ExitCode(int):
    """The command's exit status."""


async def wait_fd(fd: int, *, write: bool) -> None:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    (loop.add_writer if write else loop.add_reader)(fd, ready)
    try:
        await fut
    finally:
        (loop.remove_writer if write else loop.remove_reader)(fd)


async def fd_read(fd: int) -> bytes:
    """Read from a non-blocking fd; b"" at EOF (EIO is how a pty master says it)."""
    while True:
        try:
            return os.read(fd, _CHUNK)
        except BlockingIOError:
            await wait_fd(fd, write=False)
        except OSError as exc:
            if exc.errno == errno.EIO:
                return b""
            raise


async def fd_write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            await wait_fd(fd, write=True)


def set_winsize(fd: int, width: int, height: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))


async def _copy_out(read: Callable[[], Awaitable[bytes]], out: Outbound | None) -> None:
    while True:
        data = await read()
        if not data:
            return
        if out is not None:
            await out.write(data)


def _runc_error(path: str) -> str:
    """The last error runc logged, or ""."""
    message = ""
    with contextlib.suppress(OSError), open(path, errors="replace") as f:
        for line in f:
            with contextlib.suppress(ValueError, AttributeError):
                entry = json.loads(line)
                if entry.get("level") in ("error", "fatal"):
                    message = str(entry.get("msg", ""))
    return message


async def _stop(proc: asyncio.subprocess.Process, pidfile: str) -> None:
    """The client left: SIGTERM to runc (which forwards it to the command), then
    SIGKILL to the command itself (its pid from runc's --pid-file) and to runc."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.shield(asyncio.wait_for(proc.wait(), _STOP_GRACE))
        return
    except (TimeoutError, asyncio.CancelledError):
        pass
    with contextlib.suppress(OSError, ValueError), open(pidfile) as f:
        os.kill(int(f.read().strip()), signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    await asyncio.shield(proc.wait())


async def run_exec(target: ContainerTarget, cmd: tuple[str, ...], tty: bool, io: Stdio) -> ExitCode:
    """Run ``cmd`` in the container; returns its exit status or raises StreamError.

    With pipes, runc's own check ("cannot exec in a stopped container") is the only
    one: a separate ``runc state`` would cost every exec a third of its time. A TTY
    exec needs the state anyway (the bundle holds the process to start from).
    """
    state: dict[str, Any] = {}
    if tty:
        state = await runc_state(target)
        status = state.get("status", "")
        if status != "running":
            what = f"is {status}" if status else "does not exist"
            raise StreamError(f"container {target.container_id} {what}; cannot exec in it")
    work = tempfile.mkdtemp(prefix="sycri-exec-")
    logfile, pidfile = os.path.join(work, "log.json"), os.path.join(work, "pid")
    argv = target.runtime_argv("--log", logfile, "--log-format", "json", "exec")
    argv += ["--pid-file", pidfile]
    try:
        if tty:
            size = await _first_size(io)
            process_file = _tty_process(work, state, cmd, size)
            argv += ["--tty", "--process", process_file, target.runtime_id]
            code = await _exec_tty(argv, io, size, pidfile)
        else:
            code = await _exec_pipes([*argv, target.runtime_id, *cmd], io, pidfile)
        if code == RUNC_FAILED:
            error = _runc_error(logfile)
            if error:
                raise StreamError(f"container {target.container_id}: {error}")
        return ExitCode(code)
    finally:
        shutil.rmtree(work, ignore_errors=True)


async def _first_size(io: Stdio) -> TerminalSize | None:
    """The window size the client sends as the session opens (waiting briefly for it).

    runc gives the command's terminal this size before the command starts; resizing
    only afterwards would race with a command that asks for its size at once.
    """
    if io.resize is None:
        return None
    try:
        chunk = await asyncio.wait_for(io.resize.peek(), FIRST_SIZE_WAIT)
    except TimeoutError:
        return None
    sizes, _ = parse_resizes(chunk)
    return sizes[-1] if sizes else None


def _tty_process(
    work: str, state: dict[str, Any], cmd: tuple[str, ...], size: TerminalSize | None
) -> str:
    """An OCI process for ``runc exec --process``: the container's own (env, user, cwd,
    capabilities), running ``cmd`` on a terminal of the client's size."""
    process: dict[str, Any] = {}
    bundle = state.get("bundle", "")
    if bundle:
        config = os.path.join(bundle, "config.json")
        with contextlib.suppress(OSError, ValueError), open(config) as f:
            process = dict(json.load(f).get("process") or {})
    process.setdefault("cwd", "/")
    process.setdefault("user", {"uid": 0, "gid": 0})
    process["args"] = list(cmd)
    process["terminal"] = True
    if size is not None:
        process["consoleSize"] = {"height": size.height, "width": size.width}
    else:
        process.pop("consoleSize", None)
    path = os.path.join(work, "process.json")
    with open(path, "w") as f:
        json.dump(process, f)
    return path


async def _feed_stdin(
    inbox: Inbox,
    write: Callable[[bytes], Awaitable[None]],
    close: Callable[[], Awaitable[None]],
) -> None:
    while True:
        data = await inbox.read()
        if not data:
            break
        try:
            await write(data)
        except (BrokenPipeError, ConnectionResetError):
            inbox.discard()
            return
    await close()


async def _exec_pipes(argv: list[str], io: Stdio, pidfile: str) -> int:
    pipe, null = asyncio.subprocess.PIPE, asyncio.subprocess.DEVNULL
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=pipe if io.stdin else null,
        stdout=pipe if io.stdout else null,
        stderr=pipe if io.stderr else null,
        start_new_session=True,
    )
    tasks = []
    try:
        if io.stdin is not None and proc.stdin is not None:
            stdin = proc.stdin

            async def write(data: bytes) -> None:
                stdin.write(data)
                await stdin.drain()

            async def close() -> None:
                stdin.close()

            tasks.append(asyncio.ensure_future(_feed_stdin(io.stdin, write, close)))
        outputs = []
        if proc.stdout is not None:
            stdout = proc.stdout
            outputs.append(_copy_out(lambda: stdout.read(_CHUNK), io.stdout))
        if proc.stderr is not None:
            stderr = proc.stderr
            outputs.append(_copy_out(lambda: stderr.read(_CHUNK), io.stderr))
        await asyncio.gather(*outputs)
        return await proc.wait()
    finally:
        for t in tasks:
            t.cancel()
        await _stop(proc, pidfile)
        if io.stdin is not None:
            io.stdin.discard()


async def _exec_tty(argv: list[str], io: Stdio, size: TerminalSize | None, pidfile: str) -> int:
    master, slave = pty.openpty()
    os.set_blocking(master, False)
    setraw(slave)  # runc does this too, but only once it runs: no echo of early input
    if size is not None:
        set_winsize(master, size.width, size.height)
    tasks: list[asyncio.Future[None]] = []
    proc: asyncio.subprocess.Process | None = None

    async def resize(inbox: Inbox) -> None:
        async for size in resize_events(inbox):
            with contextlib.suppress(OSError):
                set_winsize(master, size.width, size.height)
            if proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGWINCH)

    try:
        if io.resize is not None:
            tasks.append(asyncio.ensure_future(resize(io.resize)))
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True
        )
    except BaseException:
        for t in tasks:
            t.cancel()
        os.close(master)
        raise
    finally:
        os.close(slave)
    try:
        if io.stdin is not None:

            async def write(data: bytes) -> None:
                await fd_write(master, data)

            async def eot() -> None:
                # A terminal has no half-close: end-of-input is ^D, as a user types it.
                with contextlib.suppress(OSError):
                    await fd_write(master, b"\x04")

            tasks.append(asyncio.ensure_future(_feed_stdin(io.stdin, write, eot)))
        await _copy_out(lambda: fd_read(master), io.stdout)
        return await proc.wait()
    finally:
        for t in tasks:
            t.cancel()
        await _stop(proc, pidfile)
        os.close(master)
        for inbox in (io.stdin, io.resize):
            if inbox is not None:
                inbox.discard()
