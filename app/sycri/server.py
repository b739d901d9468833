"""Server assembly: the node, the gRPC server on the unix socket, signals and shutdown.

Shutdown never touches containers: a DaemonSet upgrade replaces sycri while pods keep
running, and the next sycri picks them up from disk. Idle image mounts (no container
uses them) are unmounted.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import stat
from collections import Counter
from pathlib import Path

import grpc

from sycri import adapters, blocking
from sycri.config import Config, detect_cgroup_driver
from sycri.cri import (
    container,
    events,
    image,
    listing,
    pod_metrics,
    runtime_info,
    sandbox,
    stats,
    streaming,
)
from sycri.cri.service import Dispatcher, Handler, RpcObserver
from sycri.k8s.agent import NodeAgent
from sycri.node import Node
from sycri.observability import metrics, telemetry
from sycri.runtime.container import containers
from sycri.runtime.events import EventBus
from sycri.runtime.pod.sandbox_manager import SandboxManager
from sycri.runtime.stats.stats import StatsCollector
from sycri.streaming.server import StreamingServer
from sycri.streaming.targets import NodeTargets

log = logging.getLogger("sycri.server")

MAX_MESSAGE = 16 * 1024 * 1024


class StartupError(RuntimeError):
    """sycri cannot start; the message says why."""


def prepare_socket(path: Path) -> None:
    """Make the socket's directory; replace a stale socket, refuse a live one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise StartupError(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        log.info("replacing stale socket %s", path)
        path.unlink(missing_ok=True)
        return
    except OSError as exc:
        raise StartupError(f"cannot probe existing socket {path}: {exc}") from None
    finally:
        probe.close()
    raise StartupError(f"{path} is held by a running server; stop it first")


def private_socket(path: Path) -> Path:
    """Where this process binds before renaming into ``path``: gRPC unlinks the path it
    bound when its listener goes, so it must never be the shared one."""
    return path.parent / f".sycri-{os.getpid()}.sock"


def publish_socket(private: Path, path: Path) -> tuple[int, int]:
    """Rename the bound socket into place (atomic: kubelet never sees no socket or a
    half-made one); returns its (device, inode), which says later whether it is still
    ours."""
    os.chmod(private, 0o660)
    os.replace(private, path)
    st = path.lstat()
    return st.st_dev, st.st_ino


def unlink_socket_if_ours(path: Path, ours: tuple[int, int]) -> None:
    """Remove ``path`` only while it is the socket this process published: during an
    upgrade the next sycri may already have put its own there."""
    with contextlib.suppress(FileNotFoundError):
        st = path.lstat()
        if (st.st_dev, st.st_ino) == ours:
            path.unlink()
        else:
            log.info("%s belongs to another sycri now; leaving it", path)


def handlers() -> dict[str, Handler]:
    out: dict[str, Handler] = {}
    for module in (
        runtime_info,
        image,
        sandbox,
        container,
        streaming,
        stats,
        pod_metrics,
        events,
    ):
        out.update(module.RPCS)
    out.update(listing.stream_variants(out))
    return out


def assemble(cfg: Config) -> Node:
    for d in (cfg.root_dir, cfg.run_dir):
        Path(d).mkdir(parents=True, exist_ok=True, mode=0o711)
    from sycri.images.registries import RegistriesConfError
    from sycri.images.service import Images

    try:
        images = Images(cfg)
    except RegistriesConfError as exc:
        raise StartupError(str(exc)) from None
    images.start()
    driver = detect_cgroup_driver(cfg)
    sandboxes = SandboxManager(cfg, driver)
    stored_images = adapters.StoredImages(images)
    conts = containers.from_config(cfg, driver, adapters.PodSandboxes(sandboxes), stored_images)
    conts.image_users.append(stored_images.track)
    images.users.append(conts.image_volumes.user_of)
    conts.follow_pods(sandboxes)
    conts.image_mounts.method_for = images.mount_method  # images.kernel_mount
    images.before_remove.append(conts.image_mounts.drop_idle)  # an idle mount holds the SIF
    bus = EventBus(cfg.event_buffer, on_drop=metrics.event_dropped)
    events.connect(sandboxes, conts, bus)
    node = Node(
        config=cfg,
        cgroup_driver=driver,
        images=images,
        sandboxes=sandboxes,
        containers=conts,
        events=bus,
        stats=StatsCollector(driver, disk_max_age=cfg.stats_disk_max_age_seconds),
        streaming=StreamingServer(cfg.streaming, NodeTargets(conts, sandboxes)),
        node_agent=NodeAgent.from_environment(cfg),
    )
    watch(node)
    return node


def watch(node: Node) -> None:
    """Let the metrics endpoint count what the node holds. The sources run in the metrics
    thread at scrape time, so they read in-memory indexes only (no disk, no awaiting)."""
    metrics.inventory.images = node.images.store.stats
    pods, conts = node.sandboxes, node.containers
    metrics.inventory.pods = lambda: Counter(
        "ready" if sb.ready else "notready" for sb in pods.list()
    )
    metrics.inventory.containers = lambda: Counter(r.state for r in conts.store.all())


def settle_heap() -> None:
    """Move what start-up made (modules, descriptors, recovered records) out of the
    collector's reach before serving. A full collection walked them all on the event
    loop, 11-16 ms with nothing but the server loaded, so a call arriving during one
    waited for it; they live as long as the process anyway."""
    gc.collect()
    gc.freeze()


async def serve(cfg: Config, observers: list[RpcObserver] | None = None) -> int:
    blocking.install_from_env()  # tests only: record blocking calls on the loop
    blocking.watch_slow_callbacks(asyncio.get_running_loop())
    sock = Path(cfg.socket)
    prepare_socket(sock)
    node = assemble(cfg)
    try:
        await node.streaming.start()
    except OSError as exc:  # address in use, unreadable TLS key, ...
        raise StartupError(
            f"cannot start the streaming server on {cfg.streaming.address}: {exc}"
        ) from None
    # Containers first: finishing a pod removal a crash cut short removes its containers.
    await node.containers.recover()
    await node.sandboxes.recover()
    try:
        obs = telemetry.start(cfg)
    except telemetry.TelemetryError as exc:
        raise StartupError(str(exc)) from None
    dispatcher = Dispatcher(node, handlers(), [*obs.rpc_observers, *(observers or [])])
    server = grpc.aio.server(
        interceptors=obs.interceptors,
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", MAX_MESSAGE),
        ],
    )
    server.add_generic_rpc_handlers(dispatcher.generic_handlers())
    settle_heap()
    private = private_socket(sock)
    private.unlink(missing_ok=True)  # a pid reused after a crash
    server.add_insecure_port(f"unix:{private}")
    old_umask = os.umask(0o117)  # the socket is born 0660
    try:
        await server.start()
    finally:
        os.umask(old_umask)
    ours = publish_socket(private, sock)
    blocking.arm()  # from here on, every blocking call on the loop stalls an RPC
    log.info("sycri serving on unix://%s (root %s, run %s)", sock, cfg.root_dir, cfg.run_dir)
    node.node_agent.start()  # labels the Node from its own thread once the socket serves

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            log.warning("second %s: exiting at once", signal.Signals(signum).name)
            with contextlib.suppress(OSError):
                unlink_socket_if_ours(sock, ours)
            os._exit(1)
        log.info("%s: draining and stopping", signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    # Containers that exit on their own are seen (and their STOPPED event sent) at once.
    exit_watch = asyncio.create_task(node.containers.watch_exits())
    await stop.wait()
    node.events.close_all()  # event streams end; other calls drain
    await server.stop(cfg.shutdown_grace_seconds)
    blocking.arm(False)
    exit_watch.cancel()
    await node.containers.close()  # idle image mounts; what containers use stays
    await node.streaming.stop()
    obs.close()
    await asyncio.to_thread(node.node_agent.close)
    unlink_socket_if_ours(sock, ours)
    log.info("sycri stopped; containers keep running")
    return 0
