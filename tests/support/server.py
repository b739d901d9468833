"""Run the real ``sycri serve`` as a subprocess on a temporary socket, and talk to it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import grpc
from sycri import blocking
from sycri.api import api_pb2_grpc

APP = Path(__file__).resolve().parents[2] / "app"


def sycri_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a sycri subprocess: this tree's code, no stray SYCRI_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYCRI_")}
    env["PYTHONPATH"] = str(APP) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra or {})
    return env


def sycri_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "sycri", *args]


@dataclass
class SycriServer:
    """A live sycri with its own socket, root and run dirs under ``base``."""

    base: Path
    flags: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    # cgroup directories sycri runs in (joined before it starts, as a container engine
    # would place it); empty: the test's own
    cgroups: list[Path] = field(default_factory=list)
    # a command sycri runs under (e.g. nsenter into a network namespace of the test's)
    prefix: list[str] = field(default_factory=list)
    proc: subprocess.Popen | None = None
    _channel: grpc.Channel | None = None
    _blocked: list[dict] | None = None
    # every server started, for tests/conftest.py's check of blocking calls (loopcheck.py)
    started: ClassVar[list[SycriServer]] = []

    @property
    def socket(self) -> Path:
        return self.base / "sycri.sock"

    @property
    def endpoint(self) -> str:
        return f"unix://{self.socket}"

    @property
    def log_path(self) -> Path:
        return self.base / "sycri.log"

    @property
    def loop_check_path(self) -> Path:
        """Where sycri records blocking calls made on its event loop (sycri.blocking)."""
        return self.base / "loop-check.jsonl"

    def blocking_calls(self) -> list[dict]:
        """Blocking calls sycri made on its event loop while serving (none, if it is right);
        kept once it stopped, as a teardown may remove ``base`` before the check reads it."""
        if self._blocked is not None:
            return self._blocked
        return blocking.recorded(self.loop_check_path)

    def args(self) -> list[str]:
        # Its own (empty) CNI config dir unless a flag names one: a network config some
        # other runtime left in the host's /etc/cni/net.d must not change a result.
        return [
            "serve",
            "--cni-conf-dir", str(self.base / "cni-net.d"),
            "--socket", str(self.socket),
            "--root-dir", str(self.base / "root"),
            "--run-dir", str(self.base / "run"),
            "--pod-log-dir", str(self.base / "pods"),
            "--metrics-address", "",
            "--log-level", "debug",
            # not the host's /etc/containers/registries.conf (flags below may override)
            "--images-registries-conf", "/dev/null",
            *self.flags,
        ]  # fmt: skip

    def start(self, timeout: float = 20.0) -> SycriServer:
        self.base.mkdir(parents=True, exist_ok=True)
        self._blocked = None
        SycriServer.started.append(self)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        cmd = sycri_cmd(*self.args())
        if self.cgroups:
            cmd = [*_JOIN, *(str(d / "cgroup.procs") for d in self.cgroups), "--", *cmd]
        cmd = [*self.prefix, *cmd]
        checks = {blocking.ENV: str(self.loop_check_path)}
        if os.environ.get(blocking.SLOW_ENV):  # a measurement run (docs/performance.md)
            checks[blocking.SLOW_ENV] = os.environ[blocking.SLOW_ENV]
        env = sycri_env({**checks, **self.env})
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sycri exited {self.proc.returncode}:\n{self.log()}")
            if self.socket.exists():
                try:
                    self.runtime().Version(_version_request(), timeout=2)
                    return self
                except grpc.RpcError:
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"sycri did not start within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-8000:]
        except FileNotFoundError:
            return ""

    def channel(self) -> grpc.Channel:
        if self._channel is None:
            self._channel = grpc.insecure_channel(self.endpoint)
        return self._channel

    def runtime(self) -> api_pb2_grpc.RuntimeServiceStub:
        return api_pb2_grpc.RuntimeServiceStub(self.channel())

    def images(self) -> api_pb2_grpc.ImageServiceStub:
        return api_pb2_grpc.ImageServiceStub(self.channel())

    def signal(self, signum: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> int | None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        try:
            if self.proc is None or self.proc.poll() is not None:
                return self.proc.returncode if self.proc else None
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return self.proc.wait()
        finally:
            if self.proc is not None and self.proc.poll() is not None:
                self._blocked = (self._blocked or []) + blocking.recorded(self.loop_check_path)
                self.loop_check_path.unlink(missing_ok=True)


# A shell that joins each cgroup.procs named before "--", then execs the rest.
_JOIN = [
    "/bin/sh", "-c",
    'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"',
    "join",
]  # fmt: skip


def _version_request():
    from sycri.api import api_pb2

    return api_pb2.VersionRequest()
