"""The CRI proxy under its own supervisor, as the installer runs it on hosts without
systemd, for tests that talk to it as kubelet would."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from sycri.api import api_pb2, api_pb2_grpc

from tests.support.server import sycri_cmd, sycri_env


@dataclass
class SupervisedProxy:
    base: Path
    runtime_endpoint: str
    sycri_endpoint: str
    handlers: tuple[str, ...] = ("runc",)
    proc: subprocess.Popen | None = None  # the supervisor

    @property
    def socket(self) -> Path:
        return self.base / "proxy.sock"

    @property
    def endpoint(self) -> str:
        return f"unix://{self.socket}"

    @property
    def pidfile(self) -> Path:
        return self.base / "supervisor.pid"

    def start(self) -> SupervisedProxy:
        self.base.mkdir(parents=True, exist_ok=True)
        log = open(self.base / "proxy.log", "ab")  # noqa: SIM115 - handed to the child
        args = [
            "proxy", "supervise",
            "--listen", self.endpoint,
            "--runtime-endpoint", self.runtime_endpoint,
            "--sycri-endpoint", self.sycri_endpoint,
            "--pidfile", str(self.pidfile),
            "--log-level", "debug",
        ]  # fmt: skip
        for h in self.handlers:
            args += ["--sycri-handler", h]
        self.proc = subprocess.Popen(
            sycri_cmd(*args), stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=sycri_env()
        )
        log.close()
        self.wait_serving()
        return self

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.base / "proxy.log").read_text(errors="replace")[-6000:]
        return ""

    def child_pid(self) -> int | None:
        """The ``proxy serve`` process the supervisor runs now."""
        assert self.proc is not None
        out = subprocess.run(
            ["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True
        ).stdout.split()
        return int(out[0]) if out else None

    def wait_serving(self, timeout: float = 30, not_pid: int | None = None) -> int:
        """Wait until a proxy (other than ``not_pid``) answers Version itself (its
        backends' answer, or its own UNAVAILABLE naming one); its pid."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"supervisor exited {self.proc.returncode}:\n{self.log()}")
            pid = self.child_pid()
            if pid is not None and pid != not_pid and self.socket.exists():
                with grpc.insecure_channel(self.endpoint) as ch:
                    try:
                        api_pb2_grpc.RuntimeServiceStub(ch).Version(
                            api_pb2.VersionRequest(), timeout=10
                        )
                        return pid
                    except grpc.RpcError as exc:
                        if "is unavailable:" in (exc.details() or ""):
                            return pid  # the proxy answered, naming a backend it lacks
            if time.monotonic() > deadline:
                raise RuntimeError(f"proxy not serving:\n{self.log()}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            pid = self.child_pid()
            if pid:
                os.kill(pid, signal.SIGKILL)
            self.proc.kill()
            self.proc.wait()
