"""Real things for the streaming tests: busybox containers under runc (optionally
monitored by conmon), network namespaces with a server inside, and a running
StreamingServer. Every name is unique per test run and everything is removed after."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

BUSYBOX = "/bin/busybox"
APPLETS = ("sh", "cat", "echo", "sleep", "stty", "ls", "tr", "wc", "head", "true", "false")


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def make_rootfs(root: Path) -> None:
    (root / "bin").mkdir(parents=True)
    for d in ("proc", "sys", "dev", "tmp", "etc"):
        (root / d).mkdir()
    shutil.copy(BUSYBOX, root / "bin" / "busybox")
    for applet in APPLETS:
        os.symlink("busybox", root / "bin" / applet)


def make_bundle(bundle: Path, args: list[str], *, terminal: bool = False) -> None:
    make_rootfs(bundle / "rootfs")
    subprocess.run(["runc", "spec", "--bundle", str(bundle)], check=True)
    spec = json.loads((bundle / "config.json").read_text())
    spec["process"]["args"] = args
    spec["process"]["terminal"] = terminal
    spec["process"]["env"] = ["PATH=/bin", "TERM=xterm", "HOME=/"]
    spec["root"]["readonly"] = True
    (bundle / "config.json").write_text(json.dumps(spec))


@dataclass
class Container:
    id: str
    root: str  # runc --root
    bundle: Path
    attach_socket: str = ""
    ctl_fifo: str = ""

    def state(self) -> str:
        r = subprocess.run(["runc", "--root", self.root, "state", self.id], capture_output=True)
        return json.loads(r.stdout)["status"] if r.returncode == 0 else ""

    def kill(self) -> None:
        subprocess.run(["runc", "--root", self.root, "kill", self.id, "KILL"], capture_output=True)
        for _ in range(100):
            if self.state() in ("stopped", ""):
                return
            time.sleep(0.05)

    def delete(self) -> None:
        subprocess.run(
            ["runc", "--root", self.root, "delete", "--force", self.id], capture_output=True
        )


def run_container(tmp: Path, root: str, args: list[str]) -> Container:
    """A detached busybox container started by plain ``runc run -d``."""
    cid = unique("sycri-st")
    bundle = tmp / cid
    make_bundle(bundle, args)
    subprocess.run(
        ["runc", "--root", root, "run", "-d", "--bundle", str(bundle), cid],
        check=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,  # the container inherits it: a pipe would never end
        timeout=30,
    )
    return Container(cid, root, bundle)


def run_conmon_container(tmp: Path, root: str, args: list[str], *, tty: bool) -> Container:
    """A busybox container monitored by conmon, with an attach socket and a ctl fifo."""
    cid = unique("sycri-st")
    bundle = tmp / cid
    make_bundle(bundle, args, terminal=tty)
    sockdir = tmp / "sock"
    exitdir = tmp / "exit"
    sockdir.mkdir(exist_ok=True)
    exitdir.mkdir(exist_ok=True)
    argv = [
        "conmon", "--api-version", "1", "-c", cid, "-u", cid, "-n", cid,
        "-r", shutil.which("runc") or "runc", "-b", str(bundle),
        "-l", f"k8s-file:{bundle / 'ctr.log'}", "--persist-dir", str(bundle),
        "--exit-dir", str(exitdir), "--socket-dir-path", str(sockdir),
        "--runtime-arg", "--root", "--runtime-arg", root, "-i", "--log-level", "error",
        "--container-pidfile", str(bundle / "ctr.pid"),
    ]  # fmt: skip
    if tty:
        argv.append("-t")
    subprocess.run(
        argv,
        check=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=30,
        cwd=bundle,
    )
    c = Container(cid, root, bundle, str(bundle / "attach"), str(bundle / "ctl"))
    deadline = time.monotonic() + 30  # conmon's first process returns before runc create ends
    while c.state() != "created":
        if time.monotonic() > deadline:
            raise RuntimeError(f"conmon did not create {cid}")
        time.sleep(0.02)
    subprocess.run(["runc", "--root", root, "start", cid], check=True, timeout=30)
    return c


SERVER = r"""
import hashlib, os, socket, sys, threading
def serve(conn):
    with conn:
        f = conn.makefile("rb")
        head = f.readline().split()
        if len(head) != 2:  # a probe that connected and left
            return
        want_in, want_out = (int(x) for x in head)
        h, got = hashlib.sha256(), 0
        while got < want_in:
            chunk = f.read1(min(1 << 20, want_in - got))
            if not chunk:
                break
            h.update(chunk); got += len(chunk)
        conn.sendall(h.hexdigest().encode())
        out, sent = hashlib.sha256(), 0
        block = os.urandom(1 << 20)
        while sent < want_out:
            piece = block[: min(len(block), want_out - sent)]
            out.update(piece); conn.sendall(piece); sent += len(piece)
        conn.sendall(out.hexdigest().encode())
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0)); s.listen(64)
print(s.getsockname()[1], flush=True)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""


@dataclass
class Netns:
    name: str
    path: str
    port: int  # the checksum server's port inside


@contextlib.contextmanager
def checksum_server(netns_path: str):
    """The checksum server on 127.0.0.1 inside the network namespace at ``netns_path``
    (started with nsenter by the test; sycri itself never uses it). Yields its port.

    The server reads a line "IN OUT", then IN bytes; it answers with the sha256 hex of
    what it read, OUT random bytes, and the sha256 hex of those.
    """
    proc = subprocess.Popen(
        ["nsenter", f"--net={netns_path}", sys.executable, "-c", SERVER],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        yield int(proc.stdout.readline())
    finally:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def netns_with_server():
    """A fresh network namespace (loopback up) running the checksum server."""
    name = unique("sycri-st")
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        path = f"/run/netns/{name}"
        with checksum_server(path) as port:
            yield Netns(name, path, port)
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


@dataclass
class FixedTargets:
    """Targets from what the test started (the registries' stand-in)."""

    containers: dict
    netns: dict

    def container(self, container_id: str):
        from sycri.errors import NotFound
        from sycri.streaming.targets import ContainerTarget

        c = self.containers.get(container_id)
        if c is None:
            raise NotFound(f"container {container_id!r} not found")
        runc = shutil.which("runc") or "runc"
        return ContainerTarget(container_id, runc, c.root, c.id, c.attach_socket, c.ctl_fifo)

    def sandbox_netns(self, sandbox_id: str) -> str:
        from sycri.errors import NotFound

        if sandbox_id not in self.netns:
            raise NotFound(f"pod sandbox {sandbox_id!r} not found")
        return self.netns[sandbox_id]


class ServerThread:
    """A StreamingServer on its own event loop in a thread, for blocking clients."""

    def __init__(self, config, targets) -> None:
        import asyncio
        import threading

        from sycri.streaming.server import StreamingServer

        self.loop = asyncio.new_event_loop()
        self.server = StreamingServer(config, targets)
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(self.server.start())
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        if not ready.wait(10):
            raise RuntimeError("streaming server did not start")

    def call(self, fn, *args):
        """Run ``fn(*args)`` on the server's loop (the token cache is not thread-safe)."""
        import asyncio

        async def wrapped():
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(wrapped(), self.loop).result(10)

    def url(self, request) -> str:
        return self.call(self.server.url_for, request)

    def stop(self) -> None:
        import asyncio

        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, timeout: float = 20) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")
