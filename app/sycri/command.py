"""The one way sycri runs an external program (runc, conmon, tar2sqfs, CNI plugins).

Every run is timed, reported to observers (metrics, tracing), logged with its stderr
when it fails, and reaped: a timeout or a cancelled caller kills the process and
waits for it, so no zombie is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from sycri.errors import DeadlineExceeded, Internal
from sycri.observability import tracing

log = logging.getLogger("sycri.command")


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: bytes
    seconds: float
    truncated: bool = False  # output beyond ``output_limit`` was read and dropped

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class CommandFailed(Internal):
    """A program exited non-zero; the message carries its stderr."""

    def __init__(self, result: Result, label: str) -> None:
        err = (
            result.stderr.decode(errors="replace").strip()
            or result.stdout.decode(errors="replace").strip()
        )
        super().__init__(f"{label} failed (exit {result.returncode}): {err[-2000:]}")
        self.result = result


class CommandObserver(Protocol):
    def command_finished(self, name: str, ok: bool, seconds: float) -> None: ...


observers: list[CommandObserver] = []


def label_of(argv: Sequence[str], label: str | None) -> str:
    return label or os.path.basename(argv[0])


async def run(
    argv: Sequence[str],
    *,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    timeout: float | None = None,
    check: bool = True,
    label: str | None = None,
    exit_is_answer: bool = False,
    output_limit: int | None = None,
    stdin_fd: int | None = None,
) -> Result:
    """Run ``argv`` to completion; raise CommandFailed on non-zero exit when ``check``.

    ``stdin_fd``: the program's stdin (a pipe's read end another thread writes into);
    run closes it once the program has it, so the writer sees EPIPE if it dies.

    ``exit_is_answer``: a non-zero exit is the program's answer, not a failure (``runc
    exec`` of a probe that says "not ready"): logged at debug level, not as a warning.
    ``output_limit``: keep at most this many bytes of each of stdout and stderr; the
    rest is read (so the program never blocks on a full pipe) and dropped as it comes.
    """
    name = label_of(argv, label)
    with tracing.span(
        f"exec {name}",
        **{
            "process.executable.name": os.path.basename(argv[0]),
            "process.command_args": _args(argv),
        },
    ) as span:
        result = await _run(
            argv,
            name,
            input=input,
            env=env,
            cwd=cwd,
            timeout=timeout,
            limit=output_limit,
            stdin_fd=stdin_fd,
        )
        span.set_attribute("process.exit.code", result.returncode)
        if not result.ok:
            tracing.set_error(span, f"{name} exited {result.returncode}")
    if not result.ok and exit_is_answer:
        log.debug("%s exited %d after %.3fs", name, result.returncode, result.seconds)
    elif not result.ok:
        log.warning(
            "%s exited %d after %.3fs: %s",
            " ".join(argv)[:500],
            result.returncode,
            result.seconds,
            result.stderr.decode(errors="replace").strip()[-2000:],
        )
        if check:
            raise CommandFailed(result, name)
    else:
        log.debug("%s took %.3fs", name, result.seconds)
    return result


def _args(argv: Sequence[str]) -> tuple[str, ...]:
    """The command line for a span, bounded (arguments are paths and ids, not secrets)."""
    return tuple(a[:200] for a in argv[:16])


async def _run(
    argv: Sequence[str],
    name: str,
    *,
    input: bytes | None,
    env: Mapping[str, str] | None,
    cwd: str | None,
    timeout: float | None,
    limit: int | None = None,
    stdin_fd: int | None = None,
) -> Result:
    t0 = time.monotonic()
    if stdin_fd is not None:
        stdin: int = stdin_fd
    else:
        stdin = asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=stdin,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    except OSError:  # not found, not executable: a failure of that command too
        _notify(name, False, time.monotonic() - t0)
        raise
    finally:
        if stdin_fd is not None:
            os.close(stdin_fd)
    truncated = False
    try:
        if limit is None:
            out, err = await asyncio.wait_for(proc.communicate(input), timeout)
        else:
            out, err, truncated = await asyncio.wait_for(_bounded(proc, input, limit), timeout)
    except BaseException as exc:
        _kill(proc)
        await proc.wait()
        _notify(name, False, time.monotonic() - t0)
        if isinstance(exc, asyncio.TimeoutError):
            raise DeadlineExceeded(f"{name} did not finish within {timeout:g}s") from None
        raise
    result = Result(tuple(argv), proc.returncode or 0, out, err, time.monotonic() - t0, truncated)
    _notify(name, result.ok, result.seconds)
    return result


_CHUNK = 64 * 1024


async def _bounded(
    proc: asyncio.subprocess.Process, input: bytes | None, limit: int
) -> tuple[bytes, bytes, bool]:
    """Like ``communicate()``, but memory stays bounded however much the program writes."""
    dropped = False

    async def keep(stream: asyncio.StreamReader | None) -> bytes:
        nonlocal dropped
        buf = bytearray()
        if stream is None:
            return b""
        while chunk := await stream.read(_CHUNK):
            room = limit - len(buf)
            if len(chunk) > room:
                dropped = True
            if room > 0:
                buf += chunk[:room]
        return bytes(buf)

    async def feed() -> None:
        if proc.stdin is None:
            return
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            if input:
                proc.stdin.write(input)
                await proc.stdin.drain()
            proc.stdin.close()

    _, out, err = await asyncio.gather(feed(), keep(proc.stdout), keep(proc.stderr))
    await proc.wait()
    return out, err, dropped


def _kill(proc: asyncio.subprocess.Process) -> None:
    try:
        os.killpg(proc.pid, 9)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            proc.kill()


def _notify(name: str, ok: bool, seconds: float) -> None:
    for obs in observers:
        try:
            obs.command_finished(name, ok, seconds)
        except Exception:  # an observer must never break a command
            log.exception("command observer failed")
