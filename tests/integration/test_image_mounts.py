"""Idle image mounts (``images.mount_idle_seconds``): the image's mount outlives its last
container for a while, so the next container of the image takes the same mount; it goes
when the idle time passes (the test says when: ``Clock``), at shutdown, and at the next
start after a crash. Real runc, conmon, loop devices and mounts."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sycri.api import api_pb2
from sycri.errors import FailedPrecondition, InvalidArgument
from sycri.runtime.container.containers import Containers

from tests.support.containers import (
    IMAGE_CONFIG,
    Pods,
    StaticImages,
    containers,
    squashfs_image,
)
from tests.support.mounts import loop_devices, mount_of
from tests.support.node import remove_cgroups

pytestmark = pytest.mark.root

PREFIX = b"SIF-like header " * 256  # the squashfs sits at an offset, as in a SIF
IDLE = 300.0


@dataclass
class Timer:
    delay: float
    job: Callable[[], Awaitable[None]]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class Clock:
    """``ImageMounts.schedule`` that lets no time pass until the test says so."""

    timers: list[Timer] = field(default_factory=list)

    def __call__(self, delay: float, job: Callable[[], Awaitable[None]]) -> Timer:
        timer = Timer(delay, job)
        self.timers.append(timer)
        return timer

    def pending(self) -> list[Timer]:
        return [t for t in self.timers if not t.cancelled]

    async def pass_time(self) -> None:
        """Every pending timer's delay passes: their jobs run."""
        due, self.timers = self.pending(), []
        for t in due:
            await t.job()


@dataclass
class Env:
    loop: asyncio.AbstractEventLoop
    ctrs: Containers
    clock: Clock
    pods: Pods
    images: StaticImages
    base: Path
    watcher: asyncio.Task | None = None

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    def fresh(self, idle: float = IDLE) -> Containers:
        """Another sycri on the same directories (a restart), its image mounts driven by
        a clock of its own (``self.clock`` from here on)."""
        ctrs = containers(self.base / "state", self.images, self.pods, image_mount_idle=idle)
        ctrs.settings = self.ctrs.settings
        self.clock = Clock()
        ctrs.image_mounts.schedule = self.clock
        return ctrs

    def start(self, name: str, args: list[str], image: str = "busybox") -> str:
        pod = self.pods.add(name)
        cfg = api_pb2.ContainerConfig(
            metadata=api_pb2.ContainerMetadata(name=name),
            image=api_pb2.ImageSpec(image=image),
            args=args,
            log_path=f"{name}/0.log",
        )
        cid = self.run(self.ctrs.create(pod.id, cfg, pod.config))
        self.run(self.ctrs.start(cid))
        return cid

    def wait_exit(self, cid: str) -> None:
        deadline = time.monotonic() + 20
        while self.ctrs.get(cid).state != "exited":
            assert time.monotonic() < deadline, f"{cid} still {self.ctrs.get(cid).state}"
            self.run(asyncio.sleep(0.05))

    def remove(self, cid: str) -> None:
        self.run(self.ctrs.stop(cid, 0))
        self.run(self.ctrs.remove(cid))

    def target(self, name: str = "busybox") -> Path:
        return self.ctrs.image_mounts.target(self.images.images[name].id)


@pytest.fixture(scope="module")
def image_file(tmp_path_factory) -> Path:
    return squashfs_image(tmp_path_factory.mktemp("image"), prefix=PREFIX)


@pytest.fixture
def env(tmp_path: Path, image_file: Path) -> Iterator[Env]:
    loop = asyncio.new_event_loop()
    images = StaticImages()
    images.add("busybox", image_file, len(PREFIX), IMAGE_CONFIG)
    other = tmp_path / "other.sif"  # a second image: its own file, its own mount
    shutil.copy(image_file, other)
    images.add("other", other, len(PREFIX), IMAGE_CONFIG)
    pods = Pods(tmp_path / "logs")
    clock = Clock()
    ctrs = containers(tmp_path / "state", images, pods, image_mount_idle=IDLE)
    ctrs.image_mounts.schedule = clock
    e = Env(loop, ctrs, clock, pods, images, tmp_path)
    e.watcher = loop.create_task(ctrs.watch_exits())
    try:
        yield e
    finally:
        e.watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(e.watcher)
        for rec in e.ctrs.list():
            with contextlib.suppress(Exception):
                e.remove(rec.id)
        with contextlib.suppress(Exception):
            e.run(e.ctrs.close())
        loop.close()
        # runc makes the containers' parent cgroup and leaves it, as it leaves parents
        remove_cgroups(ctrs.settings.default_cgroup_parent.strip("/"))


def gone(env: Env, name: str = "busybox") -> bool:
    """Nothing of the image's mount is left: no mount, no directory, no loop device."""
    target = env.target(name)
    backing = Path(env.images.images[name].source.path)
    return mount_of(target) is None and not target.exists() and loop_devices(backing) == []


def test_the_next_container_of_an_image_takes_the_idle_mount(env: Env, image_file: Path):
    image = env.images.images["busybox"]
    first = env.start("first", ["sleep 600"])
    mounted = mount_of(env.target())
    devices = loop_devices(image_file)
    assert mounted is not None and len(devices) == 1

    env.remove(first)
    assert mount_of(env.target()) == mounted  # kept: idle
    assert env.ctrs.image_mounts.idle() == {image.id}
    assert env.ctrs.image_mounts.users(image.id) == set()

    second = env.start("second", ["cat /data/hello.txt"])
    env.wait_exit(second)
    assert (
        Path(env.ctrs.get(second).log_path).read_text().endswith("stdout F hello from the image\n")
    )
    assert mount_of(env.target()) == mounted  # the same mount: not mounted again
    assert loop_devices(image_file) == devices
    assert env.ctrs.image_mounts.idle() == set()
    env.run(env.clock.pass_time())  # the first release's timer was cancelled
    assert mount_of(env.target()) == mounted

    env.remove(second)
    assert mount_of(env.target()) == mounted
    env.run(env.clock.pass_time())
    assert gone(env)
    assert env.ctrs.image_mounts.idle() == set()


def test_a_timer_that_fires_as_a_container_takes_the_mount_leaves_it(env: Env):
    first = env.start("first", ["sleep 600"])
    env.remove(first)
    [timer] = env.clock.pending()
    second = env.start("second", ["sleep 600"])
    assert timer.cancelled
    # The timer fired before the new container's acquire took the image's lock: its
    # job runs after it, and must see the new user.
    env.run(timer.job())
    assert mount_of(env.target()) is not None
    out = env.run(env.ctrs.exec_sync(second, ["cat", "/data/hello.txt"], 10))
    assert (out.exit_code, out.stdout) == (0, b"hello from the image\n")
    # A release parks it again with a new timer; the old job is stale for that one too.
    env.remove(second)
    env.run(timer.job())
    assert mount_of(env.target()) is not None
    env.run(env.clock.pass_time())
    assert gone(env)


def test_a_failed_create_leaves_no_mount_it_made(env: Env):
    pod = env.pods.add("bad")
    cfg = api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name="bad"),
        image=api_pb2.ImageSpec(image="busybox"),
        command=["/nonexistent"],
        log_path="bad/0.log",
    )
    with pytest.raises(InvalidArgument, match="not found"):
        env.run(env.ctrs.create(pod.id, cfg, pod.config))
    assert gone(env)
    assert env.clock.pending() == []


def test_remove_image_unmounts_only_an_idle_mount(env: Env):
    image = env.images.images["busybox"]
    cid = env.start("user", ["sleep 600"])
    with pytest.raises(FailedPrecondition, match=cid):
        env.run(env.ctrs.image_mounts.drop_idle(image.id))
    assert mount_of(env.target()) is not None
    env.remove(cid)
    env.run(env.ctrs.image_mounts.drop_idle(image.id))
    assert gone(env)
    assert env.ctrs.image_mounts.idle() == set()
    env.run(env.clock.pass_time())  # its timer was cancelled: nothing to do, no error
    assert gone(env)


def test_close_unmounts_idle_mounts_and_keeps_those_in_use(env: Env):
    running = env.start("running", ["sleep 600"])
    done = env.start("done", ["sleep 600"], image="other")
    env.remove(done)
    assert mount_of(env.target("other")) is not None

    env.run(env.ctrs.close())  # sycri stops cleanly
    assert gone(env, "other")
    assert mount_of(env.target()) is not None
    assert env.ctrs.get(running).state == "running"
    out = env.run(env.ctrs.exec_sync(running, ["cat", "/data/hello.txt"], 10))
    assert out.stdout == b"hello from the image\n"


def test_a_restart_adopts_mounts_in_use_and_sweeps_idle_ones(env: Env):
    image = env.images.images["busybox"]
    running = env.start("running", ["sleep 600"])
    env.remove(env.start("done", ["sleep 600"], image="other"))
    kept = mount_of(env.target())

    # sycri is killed (no clean shutdown): the idle mount stays on the node.
    env.watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        env.run(env.watcher)
    env.ctrs = env.fresh()
    env.run(env.ctrs.recover())
    assert gone(env, "other")  # nothing used it: swept
    assert mount_of(env.target()) == kept
    assert env.ctrs.image_mounts.users(image.id) == {running}

    # The adopted mount is known to be mounted: its last user leaves it idle, and the
    # next container takes it.
    env.remove(running)
    assert mount_of(env.target()) == kept
    assert env.ctrs.image_mounts.idle() == {image.id}
    nxt = env.start("next", ["sleep 600"])
    assert mount_of(env.target()) == kept
    env.remove(nxt)
    env.run(env.clock.pass_time())
    assert gone(env)


def test_with_no_idle_time_the_mount_goes_with_its_last_container(env: Env, image_file: Path):
    env.ctrs = env.fresh(idle=0)
    cid = env.start("only", ["sleep 600"])
    assert mount_of(env.target()) is not None
    env.remove(cid)
    assert gone(env)
    assert env.clock.timers == []
