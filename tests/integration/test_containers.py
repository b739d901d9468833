"""Containers with real runc and conmon, from a busybox squashfs mounted by offset."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sycri.api import api_pb2
from sycri.errors import DeadlineExceeded, Internal, InvalidArgument, NotFound
from sycri.runtime.container import launch, rootfs
from sycri.runtime.container.containers import Containers, SandboxInfo, read_spec

from tests.support.containers import (
    IMAGE_CONFIG,
    Pods,
    StaticImages,
    containers,
    squashfs_image,
    with_fields,
)
from tests.support.node import remove_cgroups

pytestmark = pytest.mark.root

SIF_PREFIX = b"SIF-like header " * 256  # the squashfs sits at a non-zero offset, as in a SIF
CRI_LINE = re.compile(r"^(\S+) (stdout|stderr) ([FP]) (.*)$")


@dataclass
class Env:
    loop: asyncio.AbstractEventLoop
    ctrs: Containers
    pods: Pods
    pod: SandboxInfo
    images: StaticImages
    base: Path
    watcher: asyncio.Task | None = None  # the exit monitor, as server.serve runs it

    def watch(self) -> None:
        self.watcher = self.loop.create_task(self.ctrs.watch_exits())

    def unwatch(self) -> None:
        if self.watcher is not None:
            self.watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                self.run(self.watcher)
            self.watcher = None

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    def config(self, name: str, args: list[str], **kw) -> api_pb2.ContainerConfig:
        cfg = api_pb2.ContainerConfig(
            metadata=api_pb2.ContainerMetadata(name=name),
            image=api_pb2.ImageSpec(image="busybox"),
            args=args,
            log_path=f"{name}/0.log",
        )
        return with_fields(cfg, **kw)

    def create(self, cfg: api_pb2.ContainerConfig) -> str:
        return self.run(self.ctrs.create(self.pod.id, cfg, self.pod.config))

    def start(self, name: str, args: list[str], **kw) -> str:
        cid = self.create(self.config(name, args, **kw))
        self.run(self.ctrs.start(cid))
        return cid

    def wait_exit(self, cid: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while self.ctrs.get(cid).state != "exited":
            assert time.monotonic() < deadline, f"{cid} still {self.ctrs.get(cid).state}"
            self.run(asyncio.sleep(0.05))

    def log_lines(self, cid: str) -> list[tuple[str, str]]:
        out = []
        for line in Path(self.ctrs.get(cid).log_path).read_text().splitlines():
            m = CRI_LINE.match(line)
            assert m, f"not CRI log format: {line!r}"
            out.append((m.group(2), m.group(4)))
        return out


@pytest.fixture(scope="module")
def image_file(tmp_path_factory) -> Path:
    return squashfs_image(tmp_path_factory.mktemp("image"), prefix=SIF_PREFIX)


@pytest.fixture
def env(tmp_path: Path, image_file: Path) -> Iterator[Env]:
    loop = asyncio.new_event_loop()
    images = StaticImages()
    images.add("busybox", image_file, len(SIF_PREFIX), IMAGE_CONFIG)
    pods = Pods(tmp_path / "logs")
    pod = pods.add("pod1")
    ctrs = containers(tmp_path / "state", images, pods)
    e = Env(loop, ctrs, pods, pod, images, tmp_path)
    e.watch()
    try:
        yield e
    finally:
        e.unwatch()
        for rec in e.ctrs.list():
            with contextlib.suppress(Exception):
                e.run(e.ctrs.remove(rec.id))
        leftover = [m for m in rootfs.mounted_targets() if m.startswith(str(tmp_path))]
        for m in leftover:
            os.system(f"umount -l {m}")
        remove_cgroups(e.ctrs.settings.default_cgroup_parent.strip("/"))
        loop.close()
        assert not leftover, f"mounts left behind: {leftover}"


def test_prints_args_env_user_mounts_into_cri_log(env: Env, tmp_path: Path):
    host_dir = tmp_path / "hostdir"
    host_dir.mkdir()
    (host_dir / "note").write_text("from the host")
    script = (
        'echo "args: $0 $1"; echo "env: $IMAGE_VAR $REQ_VAR"; echo "user: $(id -u):$(id -g)"; '
        'echo "cwd: $(pwd)"; echo "mount: $(cat /mnt/host/note)"; '
        "grep -q ' /mnt/host ro,' /proc/self/mountinfo && echo 'mount ro: yes'; "
        "echo to-stderr >&2"
    )
    cid = env.start(
        "printer",
        [script, "first", "second"],
        envs=[api_pb2.KeyValue(key="REQ_VAR", value=b"from-request")],
        mounts=[api_pb2.Mount(container_path="/mnt/host", host_path=str(host_dir), readonly=True)],
        sc=api_pb2.LinuxContainerSecurityContext(run_as_username="alice"),
    )
    env.wait_exit(cid)
    lines = env.log_lines(cid)
    # conmon reads the two pipes separately: order is kept within a stream only.
    assert [t for s, t in lines if s == "stdout"] == [
        "args: first second",
        "env: from-image from-request",
        "user: 1000:1000",
        "cwd: /data",
        "mount: from the host",
        "mount ro: yes",
    ]
    assert [t for s, t in lines if s == "stderr"] == ["to-stderr"]
    rec = env.ctrs.get(cid)
    assert (rec.state, rec.exit_code, rec.reason) == ("exited", 0, "Completed")
    assert rec.created_at <= rec.started_at <= rec.finished_at
    assert Path(rec.log_path).parent.parent == Path(env.pod.log_directory)


def test_exit_code_reported_as_error(env: Env):
    cid = env.start("fails", ["exit 3"])
    env.wait_exit(cid)
    rec = env.ctrs.get(cid)
    assert (rec.exit_code, rec.reason) == (3, "Error")


def test_exec_sync_output_exit_code_and_timeout(env: Env):
    cid = env.start("sleeper", ["sleep 600"])
    res = env.run(env.ctrs.exec_sync(cid, ["sh", "-c", "echo out; echo err >&2; exit 7"], 10))
    assert (res.stdout, res.stderr, res.exit_code) == (b"out\n", b"err\n", 7)
    res = env.run(env.ctrs.exec_sync(cid[:12], ["cat", "/data/hello.txt"], 0))
    assert res.stdout == b"hello from the image\n" and res.exit_code == 0
    with pytest.raises(DeadlineExceeded):
        env.run(env.ctrs.exec_sync(cid, ["sleep", "300"], 1))
    ps = env.run(env.ctrs.exec_sync(cid, ["ps", "-o", "args"], 10)).stdout.decode()
    assert "sleep 300" not in ps, ps  # the timed-out process is gone
    assert "sleep 600" in ps


def test_stream_target_names_conmon_attach_socket(env: Env):
    cid = env.start("attachable", ["sleep 600"], stdin=True)
    target = env.ctrs.stream_target(cid[:10])
    assert target.container_id == cid and target.pod_id == env.pod.id
    assert target.state == "running" and target.stdin
    assert stat.S_ISSOCK(os.stat(target.attach_socket).st_mode)
    state = env.run(target.runtime.state(cid))
    assert state is not None and state["status"] == "running"


def test_log_size_limit(env: Env):
    env.ctrs.log_size_max = 4096
    cid = env.start("chatty", ["i=0; while [ $i -lt 2000 ]; do echo line-$i; i=$((i+1)); done"])
    env.wait_exit(cid)
    size = os.path.getsize(env.ctrs.get(cid).log_path)
    assert 0 < size <= 4096 + 512, size


def test_stop_honours_grace_period_then_kills(env: Env):
    graceful = env.start("graceful", ["trap 'sleep 1; exit 0' TERM; while :; do sleep 0.1; done"])
    stubborn = env.start("stubborn", ["trap '' TERM; while :; do sleep 0.1; done"])
    time.sleep(0.3)  # let the shells install their traps
    env.run(env.ctrs.stop(graceful, 10))
    rec = env.ctrs.get(graceful)
    # exit 0: it got its StopSignal and was let finish its handler (a kill is 137)
    assert rec.state == "exited" and rec.exit_code == 0, rec
    env.run(env.ctrs.stop(stubborn, 1))
    rec = env.ctrs.get(stubborn)
    assert rec.state == "exited" and rec.exit_code == 137, rec


def test_memory_limit_oom_killed(env: Env):
    limit = 24 * 1024 * 1024
    res = api_pb2.LinuxContainerResources(
        memory_limit_in_bytes=limit, memory_swap_limit_in_bytes=limit
    )
    cid = env.start("hog", ["tail /dev/zero"], res=res)
    env.wait_exit(cid, 60)
    rec = env.ctrs.get(cid)
    assert rec.reason == "OOMKilled", rec
    assert rec.exit_code == 137


def test_readonly_rootfs_refuses_writes(env: Env):
    sc = api_pb2.LinuxContainerSecurityContext(readonly_rootfs=True)
    cid = env.start("ro", ["touch /data/new && echo wrote || echo refused"], sc=sc)
    env.wait_exit(cid)
    lines = env.log_lines(cid)
    assert [t for s, t in lines if s == "stdout"] == ["refused"]
    assert any("Read-only file system" in t for s, t in lines if s == "stderr")


def test_run_as_user_and_capabilities_take_effect(env: Env):
    sc = api_pb2.LinuxContainerSecurityContext()
    sc.run_as_user.value = 1234
    sc.supplemental_groups.append(777)
    cid = env.start("uid", ["id -u; id -G"], sc=sc)
    env.wait_exit(cid)
    assert [t for _, t in env.log_lines(cid)] == ["1234", "0 777"]

    def bnd(cid: str) -> int:
        env.wait_exit(cid)
        (line,) = [t for _, t in env.log_lines(cid) if t.startswith("CapBnd")]
        return int(line.split()[1], 16)

    caps = api_pb2.LinuxContainerSecurityContext()
    caps.capabilities.drop_capabilities.append("ALL")
    caps.capabilities.add_capabilities.append("NET_ADMIN")
    assert bnd(env.start("caps", ["grep CapBnd /proc/self/status"], sc=caps)) == 1 << 12
    # Without CAP_CHOWN (default set minus CHOWN) chown fails even for root.
    nochown = api_pb2.LinuxContainerSecurityContext()
    nochown.capabilities.drop_capabilities.append("CHOWN")
    cid = env.start("nochown", ["chown 5 /tmp && echo chowned || echo denied"], sc=nochown)
    env.wait_exit(cid)
    lines = env.log_lines(cid)
    assert [t for s, t in lines if s == "stdout"] == ["denied"]
    assert any("Operation not permitted" in t for s, t in lines if s == "stderr")


def _image(env: Env, name: str, change, **config) -> None:
    """Another image for ``env``: the busybox tree edited by ``change``, ``config`` over
    IMAGE_CONFIG's."""
    path = squashfs_image(env.base / f"image-{name}", change=change)
    env.images.add(name, path, 0, {"config": {**IMAGE_CONFIG["config"], **config}})


def test_the_images_account_files_are_found_by_its_own_symlinks(env: Env):
    """/etc/passwd an absolute link and /etc/group a relative one, both into /lib: the
    image's USER name resolves through them inside the image, as in a shell there."""

    def move_accounts(tree: Path) -> None:
        (tree / "lib/accounts").mkdir(parents=True)
        for name, extra in (("passwd", "app:x:4321:4322::/:/bin/sh\n"), ("group", "app:x:4322:\n")):
            data = (tree / "etc" / name).read_text() + extra
            (tree / "lib/accounts" / name).write_text(data)
            (tree / "etc" / name).unlink()
        (tree / "etc/passwd").symlink_to("/lib/accounts/passwd")
        (tree / "etc/group").symlink_to("../lib/accounts/group")

    _image(env, "accounts", move_accounts, User="app")
    cid = env.start("app", ["id -u; id -g"], image=api_pb2.ImageSpec(image="accounts"))
    env.wait_exit(cid)
    assert [t for _, t in env.log_lines(cid)] == ["4321", "4322"]


def test_an_image_whose_etc_passwd_is_a_fifo_is_refused_at_create(env: Env):
    """An image's /etc/passwd may be anything. Opening a FIFO blocks until a writer comes:
    sycri must not (every call shares its event loop), and runc, which reads the file
    when the container starts, would hang until StartContainer timed out. So
    CreateContainer refuses it, naming the file and what it is, and leaves nothing."""

    def fifo(tree: Path) -> None:
        (tree / "etc/passwd").unlink()
        os.mkfifo(tree / "etc/passwd")

    _image(env, "fifo", fifo)
    mounts = set(rootfs.mounted_targets())
    with pytest.raises(InvalidArgument, match=r"/etc/passwd is a FIFO, not a regular file"):
        env.create(env.config("fifo", ["id -u"], image=api_pb2.ImageSpec(image="fifo")))
    assert env.ctrs.list() == []
    assert set(rootfs.mounted_targets()) == mounts
    # The node goes on: the next container of a sound image runs.
    cid = env.start("after", ["id -u"])
    env.wait_exit(cid)
    assert [t for _, t in env.log_lines(cid)] == ["0"]


def test_privileged_and_add_all_get_exactly_sycris_bounding_set(env: Env):
    """Here sycri lacks CAP_SYS_RESOURCE: asking runc for it failed with 'unable to apply caps'."""
    own = next(
        int(line.split()[1], 16)
        for line in Path("/proc/self/status").read_text().splitlines()
        if line.startswith("CapBnd:")
    )
    pod = env.pods.add("privileged")
    pod.config.linux.security_context.privileged = True
    priv = env.config("priv", ["grep CapBnd /proc/self/status"])
    priv.linux.security_context.privileged = True
    all_ = env.config("all", ["grep CapBnd /proc/self/status"])
    all_.linux.security_context.capabilities.add_capabilities.append("ALL")
    for cfg in (priv, all_):
        cid = env.run(env.ctrs.create(pod.id, cfg, pod.config))
        env.run(env.ctrs.start(cid))
        env.wait_exit(cid)
        (line,) = [t for _, t in env.log_lines(cid) if t.startswith("CapBnd")]
        assert int(line.split()[1], 16) == own, cfg.metadata.name


def test_runtime_default_seccomp_is_applied_by_runc(env: Env):
    """runc must accept the built-in profile on this node and the process runs filtered."""
    sc = api_pb2.LinuxContainerSecurityContext()
    sc.seccomp.profile_type = api_pb2.SecurityProfile.RuntimeDefault
    cid = env.start("seccomp", ["grep Seccomp: /proc/self/status"], sc=sc)
    env.wait_exit(cid)
    out = [t for s, t in env.log_lines(cid) if s == "stdout"]
    assert [t.split() for t in out] == [["Seccomp:", "2"]]  # 2: filter mode


def test_bidirectional_volume_mount_reaches_the_host(env: Env, tmp_path: Path):
    """A mount made inside a Bidirectional volume shows on the host (runc's default rslave
    root kept it inside), and a private volume's does not."""
    shared, private = tmp_path / "shared", tmp_path / "private"
    made: list[Path] = []
    try:
        for src, flag in ((shared, "--make-rshared"), (private, "--make-rprivate")):
            (src / "sub").mkdir(parents=True)
            for argv in (["mount", "--bind", src, src], ["mount", flag, src]):
                subprocess.run([str(a) for a in argv], check=True)
            made.append(src)
        pod = env.pods.add("propagation")
        pod.config.linux.security_context.privileged = True
        for name, src, kind in (
            ("rshared", shared, api_pb2.PROPAGATION_BIDIRECTIONAL),
            ("rprivate", private, api_pb2.PROPAGATION_PRIVATE),
        ):
            cfg = env.config(name, [f"mount -t tmpfs {name} /vol/sub && echo mounted"])
            cfg.linux.security_context.privileged = True
            cfg.mounts.add(host_path=str(src), container_path="/vol", propagation=kind)
            cid = env.run(env.ctrs.create(pod.id, cfg, pod.config))
            env.run(env.ctrs.start(cid))
            env.wait_exit(cid)
            assert [t for s, t in env.log_lines(cid) if s == "stdout"] == ["mounted"], name
        targets = _mountinfo_targets()
        assert str(shared / "sub") in targets
        assert str(private / "sub") not in targets
        # Bidirectional on a private host mount could never propagate: refused up front.
        cfg = env.config("refused", ["true"])
        cfg.mounts.add(
            host_path=str(private),
            container_path="/vol",
            propagation=api_pb2.PROPAGATION_BIDIRECTIONAL,
        )
        with pytest.raises(InvalidArgument, match="needs a shared mount"):
            env.create(cfg)
    finally:
        for src in made:
            subprocess.run(["umount", "-R", "-l", str(src)], check=False)


def test_recursive_read_only_mount_covers_submounts(env: Env, tmp_path: Path):
    """With rro a tmpfs mounted under the volume is read-only too; with plain ro it is not."""
    vol = tmp_path / "vol"
    (vol / "tmpfs").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "none", str(vol / "tmpfs")], check=True)
    try:
        for name, rro in (("plain", False), ("recursive", True)):
            cfg = env.config(name, ["touch /mnt/tmpfs/f && echo wrote || echo refused"])
            cfg.mounts.add(
                host_path=str(vol), container_path="/mnt", readonly=True, recursive_read_only=rro
            )
            cid = env.create(cfg)
            env.run(env.ctrs.start(cid))
            env.wait_exit(cid)
            out = [t for s, t in env.log_lines(cid) if s == "stdout"]
            assert out == (["refused"] if rro else ["wrote"]), name
    finally:
        subprocess.run(["umount", "-l", str(vol / "tmpfs")], check=False)


def test_two_containers_share_one_image_mount(env: Env):
    image = env.images.images["busybox"]
    target = str(env.ctrs.image_mounts.target(image.id))
    a = env.start("a", ["sleep 600"])
    b = env.start("b", ["sleep 600"])
    mounts = [m for m in _mountinfo_targets() if m == target]
    assert mounts == [target]
    assert env.ctrs.image_mounts.users(image.id) == {a, b}
    env.run(env.ctrs.remove(a))
    assert target in _mountinfo_targets()
    env.run(env.ctrs.remove(b))
    assert target not in _mountinfo_targets()
    with pytest.raises(NotFound):
        env.ctrs.get(b)


def test_update_resources_reaches_the_live_cgroup(env: Env):
    cid = env.start("upd", ["sleep 600"])
    env.run(
        env.ctrs.update_resources(
            cid, api_pb2.LinuxContainerResources(memory_limit_in_bytes=100 * 1024 * 1024)
        )
    )
    rec = env.ctrs.get(cid)
    res = env.run(
        env.ctrs.exec_sync(cid, ["cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"], 10)
    )
    if not os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        assert res.stdout.strip() == str(100 * 1024 * 1024).encode()
    assert rec.resources["memoryLimitInBytes"] == str(100 * 1024 * 1024)


def test_reopen_log_after_rotation(env: Env):
    cid = env.start("logger", ["while :; do echo tick; sleep 0.1; done"])
    log_path = Path(env.ctrs.get(cid).log_path)
    time.sleep(0.3)
    log_path.rename(log_path.with_suffix(".1"))
    env.run(env.ctrs.reopen_log(cid))
    time.sleep(0.4)
    assert "stdout F tick" in log_path.read_text()


def test_bad_command_fails_cleanly(env: Env):
    # runc would find out only at StartContainer: the image is looked at first.
    with pytest.raises(InvalidArgument, match=r"/nonexistent.*not found"):
        env.create(env.config("bad", [], command=["/nonexistent"]))
    with pytest.raises(InvalidArgument, match=r"no-such-tool.*not found in PATH"):
        env.create(env.config("bad", [], command=["no-such-tool"]))
    with pytest.raises(InvalidArgument, match=r"/data/hello\.txt.*not executable"):
        env.create(env.config("bad", [], command=["/data/hello.txt"]))
    assert env.ctrs.list() == []
    assert not [m for m in _mountinfo_targets() if m.startswith(str(env.base))]
    # The name is free again after the failure.
    cid = env.create(env.config("bad", ["true"]))
    assert env.ctrs.get(cid).state == "created"


def test_bad_mount_and_duplicate_name(env: Env):
    with pytest.raises(InvalidArgument, match="does not exist"):
        env.create(
            env.config(
                "m", ["true"], mounts=[api_pb2.Mount(container_path="/x", host_path="/no/such")]
            )
        )
    env.create(env.config("dup", ["true"]))
    with pytest.raises(Exception, match="already used"):
        env.create(env.config("dup", ["true"]))
    with pytest.raises(NotFound):
        env.run(env.ctrs.create("0" * 64, env.config("x", ["true"]), env.pod.config))


def _mountinfo_targets() -> list[str]:
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            out.append(line.split(" ")[4])
    return out


def _processes_of(cid: str) -> list[int]:
    """Host processes whose command line names the container (its conmon, runc's init)."""
    out = []
    for pid in os.listdir("/proc"):
        with contextlib.suppress(OSError):
            if pid.isdigit() and cid.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                out.append(int(pid))
    return out


def test_created_container_has_no_process_until_started(env: Env):
    cid = env.create(env.config("lazy", ["echo ran; exec sleep 600"]))
    rec = env.ctrs.get(cid)
    runc_root = Path(env.ctrs.runtime("").root)
    # As containerd's: CreateContainer made the rootfs and the records, nothing runs.
    assert (rec.state, rec.pid) == ("created", 0)
    assert (Path(rec.bundle) / "config.json").exists()
    assert not (runc_root / cid).exists()
    assert _processes_of(cid) == []
    assert not Path(rec.log_path).exists()
    # The record keeps the spec it wrote (verbose ContainerStatus shows it from memory).
    config = Path(rec.bundle) / "config.json"
    assert rec.spec_json == read_spec(config)
    # Resources changed before the start are what the started container gets.
    limit = 100 * 1024 * 1024
    res = api_pb2.LinuxContainerResources(memory_limit_in_bytes=limit)
    env.run(env.ctrs.update_resources(cid, res))
    assert env.ctrs.get(cid).resources["memoryLimitInBytes"] == str(limit)
    assert rec.spec_json == read_spec(config)
    assert json.loads(rec.spec_json)["linux"]["resources"]["memory"]["limit"] == limit
    env.run(env.ctrs.start(cid))
    rec = env.ctrs.get(cid)
    assert rec.state == "running" and rec.pid > 0
    v2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
    memory = "/sys/fs/cgroup/memory.max" if v2 else "/sys/fs/cgroup/memory/memory.limit_in_bytes"
    out = env.run(env.ctrs.exec_sync(cid, ["cat", memory], 10))
    assert out.stdout.strip() == str(limit).encode()
    deadline = time.monotonic() + 10
    while ("stdout", "ran") not in env.log_lines(cid):
        assert time.monotonic() < deadline, "no output from the started container"
        time.sleep(0.05)
    env.run(env.ctrs.stop(cid, 0))


def test_failed_launch_at_start_leaves_nothing(env: Env):
    # Under /dev (a mount of the container) only runc can tell the command is missing.
    cid = env.create(env.config("doomed", [], command=["/dev/no-such-command"]))
    log_dir = Path(env.ctrs.get(cid).log_path).parent
    with pytest.raises(Internal, match="no-such-command"):
        env.run(env.ctrs.start(cid))
    rec = env.ctrs.get(cid)
    assert (rec.state, rec.exit_code, rec.reason) == ("exited", 128, "ContainerCannotRun")
    assert _processes_of(cid) == []
    assert not (Path(env.ctrs.runtime("").root) / cid).exists()
    assert not log_dir.exists()  # the log dir the start made went with it
    assert not (env.ctrs.paths.exits / cid).exists()
    assert not os.path.lexists(env.ctrs.paths.sockets / cid)  # conmon's attach entry
    env.run(env.ctrs.remove(cid))
    assert env.ctrs.list() == []
    assert not [m for m in _mountinfo_targets() if m.startswith(str(env.base))]


def test_restart_tells_created_containers_of_both_versions_apart(env: Env):
    fresh_cid = env.create(env.config("fresh", ["echo fresh"]))
    # The sycri before this one ran conmon and runc create at CreateContainer and
    # recorded conmon's pid: a DaemonSet upgrade finds such a container created.
    old_cid = env.create(env.config("old", ["echo old"]))
    old = env.ctrs.get(old_cid)
    pid = env.run(launch.launch(env.ctrs, old))
    env.run(env.ctrs.store.set_status(old, old.status.but(pid=pid)))
    conmon_pid = int((Path(old.bundle) / "conmon.pid").read_text())

    env.unwatch()
    fresh = containers(env.base / "state", env.images, env.pods)
    fresh.settings = env.ctrs.settings
    env.run(fresh.recover())
    env.ctrs = fresh
    env.watch()
    # The old one keeps its conmon and runc's waiting init; the new one has neither.
    assert (fresh.get(old_cid).state, fresh.get(old_cid).pid) == ("created", pid)
    assert os.path.exists(f"/proc/{conmon_pid}")
    assert (fresh.get(fresh_cid).state, fresh.get(fresh_cid).pid) == ("created", 0)
    assert _processes_of(fresh_cid) == []
    for cid, word in ((old_cid, "old"), (fresh_cid, "fresh")):
        env.run(fresh.start(cid))
        env.wait_exit(cid)
        assert (fresh.get(cid).exit_code, env.log_lines(cid)) == (0, [("stdout", word)])
        env.run(fresh.remove(cid))
    assert fresh.list() == []
    assert not [m for m in _mountinfo_targets() if m.startswith(str(env.base))]


def _cgroup_exists(path: str) -> bool:
    """Whether cgroup ``path`` exists in any hierarchy (v2's one or v1's)."""
    root = Path("/sys/fs/cgroup")
    tops = [root, *(p for p in root.iterdir() if p.is_dir() and not p.is_symlink())]
    return any((top / path.lstrip("/")).is_dir() for top in tops)


def _released(env: Env, cid: str) -> bool:
    """runc knows no such container, its cgroup is gone and its rootfs is unmounted."""
    rec = env.ctrs.get(cid)
    runc = env.ctrs.runtime(rec.runtime_handler)
    parent = env.ctrs.settings.default_cgroup_parent
    return (
        env.run(runc.state(cid)) is None
        and not _cgroup_exists(f"{parent}/sycri-{cid}")
        and str(Path(rec.bundle) / "rootfs") not in _mountinfo_targets()
    )


def _nothing_left(env: Env, cid: str, bundle: Path) -> None:
    parent = env.ctrs.settings.default_cgroup_parent
    with pytest.raises(NotFound):
        env.ctrs.get(cid)
    assert not bundle.exists()
    assert not [m for m in _mountinfo_targets() if m.startswith(str(bundle))]
    assert not _cgroup_exists(f"{parent}/sycri-{cid}")
    assert not _cgroup_exists(f"{parent}/sycri-conmon-{cid}")
    assert not env.ctrs.exit_file(cid).exists()
    assert not os.path.lexists(env.ctrs.paths.sockets / cid)  # conmon's attach entry
    assert str(env.ctrs.image_mounts.target(env.images.images["busybox"].id)) not in (
        _mountinfo_targets()
    )


def test_an_exit_the_monitor_sees_releases_the_container_and_remove_leaves_nothing(env: Env):
    """As containerd's shim at an exit: runc's container and cgroup and the rootfs mount
    go when the exit is recorded; the exited container's status and log stay."""
    env.unwatch()  # the monitor is driven by hand below
    cid = env.start("short", ["echo bye; exit 4"])
    rec = env.ctrs.get(cid)
    deadline = time.monotonic() + 20
    while not env.ctrs.exit_file(cid).exists():  # conmon wrote the exit
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert env.run(env.ctrs.exits.reap()) == 1
    env.run(env.ctrs.exits.releases_done())
    assert (rec.state, rec.exit_code) == ("exited", 4)
    assert _released(env, cid)
    assert ("stdout", "bye") in env.log_lines(cid)
    env.run(env.ctrs.remove(cid))
    _nothing_left(env, cid, Path(rec.bundle))
    assert Path(rec.log_path).exists()  # the log stays for kubelet


def test_stop_releases_the_container_before_it_replies(env: Env):
    cid = env.start("stopped", ["sleep 600"])
    bundle = Path(env.ctrs.get(cid).bundle)
    env.run(env.ctrs.stop(cid, 0))
    assert env.ctrs.get(cid).exit_code == 137
    assert _released(env, cid)
    env.run(env.ctrs.remove(cid))
    _nothing_left(env, cid, bundle)


def test_remove_of_a_running_container_leaves_nothing(env: Env):
    cid = env.start("running", ["sleep 600"])
    bundle = Path(env.ctrs.get(cid).bundle)
    env.run(env.ctrs.remove(cid))
    _nothing_left(env, cid, bundle)


def test_restart_recovers_running_containers_and_sweeps_leftovers(env: Env):
    running = env.start("survivor", ["sleep 600"])
    exited = env.start("done", ["exit 5"])
    env.wait_exit(exited)
    image = env.images.images["busybox"]
    # A create interrupted by a crash: a bundle with a mounted overlay but no record.
    half = env.ctrs.paths.containers / ("f" * 64)
    lower = env.ctrs.image_mounts.target(image.id)
    env.run(rootfs.mount_overlay(lower, half))
    # ...and what its conmon had left under the run dir: an exit file, an attach entry.
    for d in (env.ctrs.paths.exits, env.ctrs.paths.sockets):
        d.mkdir(parents=True, exist_ok=True)
    env.ctrs.exit_file(half.name).write_text("0")
    (env.ctrs.paths.sockets / half.name).mkdir()

    env.unwatch()  # sycri stops: no exit monitor until the next one recovers
    fresh = containers(env.base / "state", env.images, env.pods)
    fresh.settings = env.ctrs.settings
    env.run(fresh.recover())
    stale, env.ctrs = env.ctrs, fresh
    assert fresh.get(running).state == "running"
    assert (fresh.get(exited).exit_code, fresh.get(exited).reason) == (5, "Error")
    assert not half.exists()
    assert str(half / "rootfs") not in _mountinfo_targets()
    assert not env.ctrs.exit_file(half.name).exists()
    assert not os.path.lexists(env.ctrs.paths.sockets / half.name)
    assert fresh.image_mounts.users(image.id) == {running, exited}
    env.run(fresh.stop(running, 0))
    assert fresh.get(running).exit_code == 137
    env.run(fresh.remove(running))
    env.run(fresh.remove(exited))
    assert str(lower) not in _mountinfo_targets()
    # An index that outlived its container (runc and conmon know nothing): stopping it
    # ends (it does not wait for an exit that cannot come) and says what happened.
    env.run(stale.stop(running, 0))
    assert (stale.get(running).state, stale.get(running).message) == (
        "exited",
        "the container disappeared",
    )


def _cgroups_of(pid: int) -> dict[str, str]:
    """hierarchy (controllers, or "" on the unified one) -> the cgroup path of ``pid``."""
    out = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, ctrl, path = line.split(":", 2)
        out[ctrl] = path
    return out


def test_conmon_lives_in_a_leaf_of_the_pod_cgroup_not_in_sycris(env: Env):
    cid = env.start("watched", ["sleep 600"])
    rec = env.ctrs.get(cid)
    conmon_pid = int((Path(rec.bundle) / "conmon.pid").read_text())
    parent = env.ctrs.settings.default_cgroup_parent  # the pod's cgroup here
    leaf = f"{parent}/sycri-conmon-{cid}"
    mine = _cgroups_of(os.getpid())
    theirs = _cgroups_of(conmon_pid)
    # Every hierarchy sycri (this process) is in: conmon is in its own leaf there.
    for ctrl, path in theirs.items():
        if ctrl in mine:
            assert path == leaf, f"{ctrl}: conmon in {path}, not {leaf}"
    assert set(theirs) & set(mine)
    ctrl = "memory" if "memory" in theirs else ""  # v1, or the one v2 hierarchy
    assert theirs[ctrl] == leaf
    assert _cgroups_of(rec.pid)[ctrl] == f"{parent}/sycri-{cid}"  # the container's, beside it
    env.run(env.ctrs.stop(cid, 0))
    env.run(env.ctrs.remove(cid))
    assert not any((top / leaf.lstrip("/")).exists() for top in Path("/sys/fs/cgroup").iterdir()), (
        "conmon's cgroup outlived its container"
    )


def test_host_paths_come_from_host_root(env: Env, tmp_path: Path):
    """sycri in the node image sees the host at host_root: a volume gets the host's files,
    a symlink in the host's tree to /etc means the host's /etc, a miss is refused."""
    host = tmp_path / "fakehost"
    (host / "root").mkdir(parents=True)
    (host / "root/.bashrc").write_text("host bashrc\n")
    (host / "etc/ssl/certs").mkdir(parents=True)
    (host / "etc/ssl/certs/ca.pem").write_text("host ca\n")
    (host / "srv").mkdir()
    (host / "srv/certs").symlink_to("/etc/ssl/certs")
    own = tmp_path / "own"
    own.mkdir()
    (own / "hosts").write_text("sycri's own file\n")
    env.ctrs.host_root = str(host)
    env.ctrs.own_dirs = (str(own),)
    cid = env.start(
        "hostpaths",
        ["cat /mnt/root/.bashrc /mnt/certs/ca.pem /mnt/own"],
        mounts=[
            api_pb2.Mount(container_path="/mnt/root", host_path="/root", readonly=True),
            api_pb2.Mount(container_path="/mnt/certs", host_path="/srv/certs", readonly=True),
            api_pb2.Mount(container_path="/mnt/own", host_path=str(own / "hosts")),
        ],
    )
    env.wait_exit(cid)
    assert [text for _, text in env.log_lines(cid)] == [
        "host bashrc",
        "host ca",
        "sycri's own file",
    ]
    # ContainerStatus echoes kubelet's paths, not the resolved ones.
    assert [m.host_path for m in env.ctrs.get(cid).config.mounts][:2] == ["/root", "/srv/certs"]
    with pytest.raises(InvalidArgument, match=r"host path '/srv/nothing' for '/x' does not exist"):
        env.create(
            env.config(
                "missing",
                ["true"],
                mounts=[api_pb2.Mount(container_path="/x", host_path="/srv/nothing")],
            )
        )
    assert [r.name for r in env.ctrs.list()] == ["hostpaths"]  # nothing half-made
