"""ExecSync: a command run in a running container with ``runc exec``, killed at its
timeout, its output bounded per stream while it runs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sycri import command
from sycri.errors import DeadlineExceeded, FailedPrecondition, Internal, InvalidArgument, excerpt
from sycri.runtime.container.container_store import new_id
from sycri.runtime.container.record import RUNNING

if TYPE_CHECKING:
    from sycri.runtime.container.containers import Containers

log = logging.getLogger("sycri.containers")

# Per stream: both must fit one 16 MiB gRPC reply (sycri's and kubelet's message limit).
EXEC_OUTPUT_LIMIT = 8 * 1024 * 1024 - 4096


@dataclass(frozen=True)
class ExecResult:
    stdout: bytes
    stderr: bytes
    exit_code: int


async def exec_sync(c: Containers, ref: str, cmd: list[str], timeout: float) -> ExecResult:
    """Run ``cmd`` in the container; at ``timeout`` the process is killed (exit 137)."""
    rec = c.store.get(ref)
    if rec.state != RUNNING:
        raise FailedPrecondition(f"container {rec.id} is not running")
    if not cmd or not cmd[0]:
        raise InvalidArgument("cmd is empty")
    runc = c.runtime(rec.runtime_handler)
    pid_file = Path(rec.bundle) / f"exec-{new_id()[:16]}.pid"
    argv = runc.argv("exec", "--pid-file", str(pid_file), rec.id, *cmd)
    task = asyncio.create_task(
        command.run(
            argv,
            check=False,
            label="runc exec",
            exit_is_answer=True,
            output_limit=EXEC_OUTPUT_LIMIT,
        )
    )
    timed_out = False
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout if timeout > 0 else None)
        if not done:
            timed_out = True
            _kill_pid_file(pid_file)
            try:
                await asyncio.wait_for(asyncio.shield(task), 10)
            except TimeoutError:
                task.cancel()
        result = await task
    except asyncio.CancelledError:
        _kill_pid_file(pid_file)
        task.cancel()
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            pid_file.unlink()
    if timed_out:
        raise DeadlineExceeded(
            f"command {excerpt(' '.join(cmd))} timed out after {timeout:g}s and was killed"
        )
    code = result.returncode
    if code != 0 and b"exec failed" in result.stderr and not result.stdout:
        why = result.stderr.decode(errors="replace")[-500:]
        if b"unable to start container process" in result.stderr:
            # The command itself cannot start (not found, not executable): the
            # request named it, so it is the request's error, not sycri's.
            raise InvalidArgument(
                f"cmd: {excerpt(cmd[0])} cannot be started in {rec.id[:12]}: {why}"
            )
        raise Internal(f"exec in {rec.id[:12]} failed: {why}")
    if result.truncated:
        # As containerd (which keeps 16 MiB per stream): the start of each stream is
        # kept; the rest was read and dropped while the command ran, never held.
        log.warning(
            "exec %s in %s: output over %d bytes per stream was dropped",
            excerpt(" ".join(cmd)),
            rec.id[:12],
            EXEC_OUTPUT_LIMIT,
        )
    return ExecResult(result.stdout, result.stderr, code)


def _kill_pid_file(path: Path) -> None:
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, 9)
