"""catatonit as PID 1 of a pod's shared PID namespace.

``unshare --pid --fork --kill-child`` makes the namespace and forks catatonit into it;
the ``unshare`` parent stays as its holder and dies with it. This child must outlive
the RPC (and sycri itself), so it is not run through :mod:`sycri.command`: a
background task reaps it while this sycri lives; after a restart it belongs to init.
Process identity is checked by start time before any signal, so a recycled pid is
never killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from sycri.errors import Internal
from sycri.runtime import procfs

log = logging.getLogger("sycri.pod_init")

_reapers: set[asyncio.Task[int]] = set()

MARK = "SYCRI_POD_INIT"


@dataclass(frozen=True)
class PodInit:
    pid: int  # catatonit, as the host sees it
    start: int
    holder_pid: int
    holder_start: int


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks (field 22 of /proc/PID/stat), None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def alive(pid: int | None, start: int | None) -> bool:
    return pid is not None and start is not None and start_time(pid) == start


async def start(
    namespaces: dict[str, str],
    log_path: Path,
    timeout: float = 10.0,
    owner: str = "",
    prefix: list[str] | None = None,
) -> PodInit:
    """Start catatonit in a new PID namespace, inside the pod's other ``namespaces``.

    ``prefix`` runs first and execs the rest (it places the processes in their cgroup
    before they start; :func:`sycri.runtime.cgroups.conmon_cgroup.prefix`).

    Both processes carry ``SYCRI_POD_INIT=<owner>`` in their environment: a crash
    before their pids are recorded leaves them findable (:func:`kill_marked`).
    """
    argv = ["unshare", "--pid", "--fork", "--kill-child=SIGKILL", "catatonit", "-P"]
    if namespaces:
        argv = ["nsenter", *(f"--{k}={p}" for k, p in namespaces.items()), "--", *argv]
    argv = [*(prefix or []), *argv]
    with open(log_path, "ab") as err:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
            env={"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), MARK: owner},
        )
    reaper = asyncio.create_task(proc.wait())
    _reapers.add(reaper)
    reaper.add_done_callback(_reapers.discard)
    holder_start = start_time(proc.pid)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        child = _catatonit_child(proc.pid)
        if child is not None:
            child_start = start_time(child)
            if child_start is not None and holder_start is not None:
                return PodInit(child, child_start, proc.pid, holder_start)
        if reaper.done():
            break
        await asyncio.sleep(0.002)
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGKILL)
    await proc.wait()
    text = log_path.read_text(errors="replace")[-500:] if log_path.exists() else ""
    raise Internal(f"the pod's init (catatonit) did not start: {text.strip() or 'no output'}")


def _catatonit_child(holder: int) -> int | None:
    try:
        children = Path(f"/proc/{holder}/task/{holder}/children").read_text().split()
    except OSError:
        return None
    for c in children:
        try:
            if Path(f"/proc/{c}/comm").read_text().strip() == "catatonit":
                return int(c)
        except OSError:
            continue
    return None


async def stop(
    init_pid: int | None,
    init_start: int | None,
    holder_pid: int | None,
    holder_start: int | None,
    timeout: float = 10.0,
) -> None:
    """Kill the pod's init (and with it every process of its PID namespace) and its holder."""
    for pid, st in ((init_pid, init_start), (holder_pid, holder_start)):
        if pid is not None and alive(pid, st):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if not alive(init_pid, init_start) and not alive(holder_pid, holder_start):
            return
        await asyncio.sleep(0.005)
    log.warning("pod init %s / holder %s still present after SIGKILL", init_pid, holder_pid)


def marked(owner: str) -> list[int]:
    """Pids whose environment says they are the init (or its holder) of pod ``owner``."""
    if not owner:
        return []
    needle = f"{MARK}={owner}".encode()
    return [pid for pid, env in procfs.fields("environ") if needle in env]


async def kill_marked(owner: str) -> None:
    """Recovery: end a pod's init whose pid a crash kept from being recorded."""
    pids = [(p, start_time(p)) for p in marked(owner)]
    for pid, st in pids:
        log.warning("killing pod %s's unrecorded init process %d", owner[:12], pid)
        await stop(pid, st, None, None)
