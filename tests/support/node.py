"""A whole node for e2e tests and benches: sycri on its own CNI bridge and subnet, and
the teardown that leaves the host as it found it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import grpc
from sycri.api import api_pb2

from tests.support.pods import PodNet, unmount_all
from tests.support.server import SycriServer


@contextmanager
def served(
    base: Path,
    *,
    flags: Sequence[str] = (),
    env: dict[str, str] | None = None,
    cgroup_root: str | None = None,
    forgiving: bool = False,
    own_cgroups: Sequence[Path] = (),
    prefix: Sequence[str] = (),
    start_timeout: float = 20.0,
) -> Iterator[tuple[SycriServer, PodNet]]:
    """sycri under ``base`` (keep it short: conmon socket paths) on a fresh bridge and free
    subnet. Afterwards, even when the body fails: every pod stopped and removed, sycri
    stopped, and its mounts, ``base``, the bridge and the ``cgroup_root`` cgroups gone.
    ``own_cgroups``: the cgroup directories sycri runs in (the caller made them).
    ``prefix``: a command sycri runs under (``nsenter --net=...``).
    ``start_timeout``: longer in an emulated guest (tests/vm), where Python starts slowly.

    A failed pod removal is raised, unless ``forgiving`` (for bodies that may leave sycri
    dead or unreachable): then it is printed and the teardown goes on."""
    net = PodNet.new()
    server = SycriServer(
        base,
        flags=[*net.flags(), *flags],
        env=dict(env or {}),
        cgroups=list(own_cgroups),
        prefix=list(prefix),
    )
    try:
        server.start(start_timeout)
        try:
            yield server, net
        finally:
            remove_pods(server, forgiving=forgiving)
    finally:
        server.stop()
        unmount_all(base)
        net.cleanup()
        shutil.rmtree(base, ignore_errors=True)
        if cgroup_root is not None:
            remove_cgroups(cgroup_root)


def remove_pods(server: SycriServer, *, forgiving: bool = False) -> None:
    """StopPodSandbox and RemovePodSandbox for every pod sycri lists, as kubelet would."""
    if forgiving and (server.proc is None or server.proc.poll() is not None):
        return
    try:
        rt = server.runtime()
        for pod in rt.ListPodSandbox(api_pb2.ListPodSandboxRequest()).items:
            rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod.id))
            rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod.id))
    except grpc.RpcError as exc:
        if not forgiving:
            raise
        print(f"cleanup: {exc}")


def remove_cgroups(name: str) -> None:
    """Remove the cgroup ``name`` (a top-level cgroup parent a test gave its pods) and
    everything below it, in every hierarchy, deepest first."""
    for top in Path("/sys/fs/cgroup").iterdir():
        d = top / name
        if d.is_dir():
            for sub in sorted(d.rglob("*"), key=lambda p: len(str(p)), reverse=True):
                if sub.is_dir():
                    sub.rmdir()
            d.rmdir()
