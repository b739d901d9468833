"""Interface counters of a pod's network namespace.

``/proc/net/dev`` shows the namespace of the reader, so a reader thread joins the pod's
namespace with setns(2), reads ``/proc/thread-self/net/dev`` and leaves. The thread is a
fresh one that ends afterwards: a namespace switch never leaks into the thread pool that
serves everything else, even if switching back fails. Pods are read in one thread per
call, not one per pod.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass

CLONE_NEWNET = 0x40000000


@dataclass(frozen=True)
class InterfaceStats:
    name: str
    rx_bytes: int
    rx_packets: int
    rx_errors: int
    rx_dropped: int
    tx_bytes: int
    tx_packets: int
    tx_errors: int
    tx_dropped: int


class NetDevParseError(ValueError):
    pass


def parse_net_dev(text: str) -> list[InterfaceStats]:
    """The interfaces of ``/proc/net/dev`` (two header lines, then ``name: 16 counters``)."""
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if lineno <= 2 or not line.strip():
            continue
        name, sep, rest = line.partition(":")
        if not sep:
            raise NetDevParseError(f"/proc/net/dev line {lineno}: no ':' in {line[:60]!r}")
        cols = rest.split()
        if len(cols) < 16 or not all(c.isdigit() for c in cols):
            raise NetDevParseError(f"/proc/net/dev line {lineno}: expected 16 counters")
        v = [int(c) for c in cols]
        out.append(
            InterfaceStats(
                name=name.strip(),
                rx_bytes=v[0],
                rx_packets=v[1],
                rx_errors=v[2],
                rx_dropped=v[3],
                tx_bytes=v[8],
                tx_packets=v[9],
                tx_errors=v[10],
                tx_dropped=v[11],
            )
        )
    return out


def default_interface(ifaces: Iterable[InterfaceStats], preferred: str = "eth0") -> str | None:
    """The pod's main interface: ``eth0`` (the CNI convention), else the first non-lo."""
    names = [i.name for i in ifaces if i.name != "lo"]
    if preferred in names:
        return preferred
    return names[0] if names else None


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _setns(fd: int, nstype: int) -> None:
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _read_in(netns_path: str) -> list[InterfaceStats]:
    fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(fd, CLONE_NEWNET)
    finally:
        os.close(fd)
    with open("/proc/thread-self/net/dev", encoding="ascii", errors="replace") as f:
        return parse_net_dev(f.read())


_Reads = dict[str, list[InterfaceStats] | OSError | NetDevParseError]


def _reader(paths: list[str], fut: Future[_Reads]) -> None:
    results: _Reads = {}
    try:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            for p in paths:
                try:
                    results[p] = _read_in(p)
                except (OSError, NetDevParseError) as exc:
                    results[p] = exc
            _setns(home, CLONE_NEWNET)
        finally:
            os.close(home)
        fut.set_result(results)
    except BaseException as exc:
        if not fut.done():
            fut.set_exception(exc)


def read_netns_many(
    paths: Iterable[str],
) -> dict[str, list[InterfaceStats] | OSError | NetDevParseError]:
    """Interfaces of each namespace file (blocking); a failure is returned per path."""
    todo = list(dict.fromkeys(paths))
    if not todo:
        return {}
    fut: Future[_Reads] = Future()
    t = threading.Thread(target=_reader, args=(todo, fut), name="sycri-netns", daemon=True)
    t.start()
    return fut.result()


def read_netns(path: str) -> list[InterfaceStats]:
    """Interfaces of one namespace; raises OSError when it cannot be entered."""
    res = read_netns_many([path])[path]
    if isinstance(res, Exception):
        raise res
    return res
