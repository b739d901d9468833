"""NodeTargets maps the container and sandbox registries onto what streaming needs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from sycri.errors import FailedPrecondition, NotFound
from sycri.streaming.targets import ContainerTarget, NodeTargets


@dataclass
class Runc:  # the shape of sycri.runtime.container.runc.Runc
    binary: str
    root: str
    systemd_cgroup: bool = False


@dataclass
class StreamTarget:  # the shape of sycri.runtime.container.containers.StreamTarget
    container_id: str
    runtime: Runc
    attach_socket: Path
    control_fifo: Path
    state: str = "running"


class Containers:
    def stream_target(self, ref: str) -> StreamTarget:
        if ref not in ("abc", "new"):
            raise NotFound(f"container {ref!r} not found")
        return StreamTarget(
            ref,
            Runc("/usr/sbin/runc", "/run/r", True),
            Path("/s/a"),
            Path("/b/ctl"),
            "created" if ref == "new" else "running",
        )


@dataclass
class Sandbox:
    netns_path: str | None


class Sandboxes:
    def get(self, ref: str) -> Sandbox:
        if ref == "host":
            return Sandbox(None)
        if ref != "pod":
            raise NotFound(f"pod sandbox {ref!r} not found")
        return Sandbox("/run/sycri/pods/pod/ns/net")


def test_registries_answer_when_attached():
    t = NodeTargets(Containers(), Sandboxes())  # type: ignore[arg-type]
    assert t.container("abc") == ContainerTarget(
        "abc", "/usr/sbin/runc", "/run/r", "abc", "/s/a", "/b/ctl", ("--systemd-cgroup",)
    )
    assert t.container("abc").runtime_argv("state", "abc") == [
        "/usr/sbin/runc", "--root", "/run/r", "--systemd-cgroup", "state", "abc",
    ]  # fmt: skip
    assert t.sandbox_netns("pod") == "/run/sycri/pods/pod/ns/net"
    assert t.sandbox_netns("host") == ""  # host network: sycri's own namespace
    with pytest.raises(NotFound):
        t.container("zzz")
    with pytest.raises(FailedPrecondition, match="new is created, not started"):
        t.container("new")  # no process, no conmon to exec into or attach to yet
    with pytest.raises(NotFound):
        t.sandbox_netns("zzz")
