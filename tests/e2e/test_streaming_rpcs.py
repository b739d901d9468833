"""Exec / Attach / PortForward through the whole server: gRPC for the URL, then
crictl (client-go's SPDY executor, the real Go client) and the Python WebSocket
client against the URL, into a pod and container sycri itself runs."""

from __future__ import annotations

import hashlib
import json
import os
import pty
import signal
import socket
import subprocess
import time
from dataclasses import dataclass

import grpc
import pytest
from kubernetes.client import Configuration
from kubernetes.stream.ws_client import WSClient
from sycri.api import api_pb2

from tests.e2e.test_containers_cri import container, node, pull  # noqa: F401
from tests.support import streaming_env
from tests.support.pods import pod_config
from tests.support.server import SycriServer

pytestmark = pytest.mark.root

MB = 1024 * 1024


@dataclass
class Running:
    id: str  # the container
    pod: str
    pid: int  # the container's init, for its network namespace


@pytest.fixture
def running(node, registry):  # noqa: F811
    sycri, _net = node
    rt = sycri.runtime()
    image = pull(sycri, registry, entrypoint=["/bin/sh", "-c"], cmd=["sleep 3600"])
    pod_cfg = pod_config("stream")
    pod_cfg.log_directory = str(sycri.base / "pods" / "stream")
    pod = rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=pod_cfg)).pod_sandbox_id
    req = api_pb2.CreateContainerRequest(
        pod_sandbox_id=pod,
        config=container("sleeper", image, ["sleep 3600"]),
        sandbox_config=pod_cfg,
    )
    cid = rt.CreateContainer(req).container_id
    rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid))
    state = subprocess.run(
        ["runc", "--root", str(sycri.base / "run" / "runtime" / "runc"), "state", cid],
        capture_output=True, check=True,
    )  # fmt: skip
    yield sycri, Running(cid, pod, json.loads(state.stdout)["pid"])


def crictl(sycri: SycriServer, *args: str, input: bytes | None = None, timeout: float = 60):
    return subprocess.run(
        ["crictl", "--runtime-endpoint", sycri.endpoint, "--timeout", "20s", *args],
        input=input,
        capture_output=True,
        timeout=timeout,
    )


def test_exec_rpc_returns_single_use_url(running):
    sycri, c = running
    url = (
        sycri.runtime().Exec(api_pb2.ExecRequest(container_id=c.id, cmd=["true"], stdout=True)).url
    )
    assert url.startswith("http://127.0.0.1:")
    assert "/exec/" in url
    other = sycri.runtime().Exec(api_pb2.ExecRequest(container_id=c.id, cmd=["true"], stdout=True))
    assert other.url != url


def test_exec_rpc_validates(running):
    sycri, c = running
    rt = sycri.runtime()
    cases = [
        (api_pb2.ExecRequest(container_id="nope", cmd=["true"], stdout=True), "NOT_FOUND"),
        (api_pb2.ExecRequest(container_id=c.id, stdout=True), "INVALID_ARGUMENT"),
        (api_pb2.ExecRequest(container_id=c.id, cmd=["sh"]), "INVALID_ARGUMENT"),
        (
            api_pb2.ExecRequest(container_id=c.id, cmd=["sh"], tty=True, stderr=True),
            "INVALID_ARGUMENT",
        ),
    ]
    for req, code in cases:
        with pytest.raises(grpc.RpcError) as err:
            rt.Exec(req)
        assert err.value.code().name == code
    with pytest.raises(grpc.RpcError) as err:
        rt.PortForward(api_pb2.PortForwardRequest(pod_sandbox_id="no-such-pod"))
    assert err.value.code().name == "NOT_FOUND"
    with pytest.raises(grpc.RpcError) as err:
        rt.Attach(api_pb2.AttachRequest(container_id="", stdout=True))
    assert err.value.code().name == "INVALID_ARGUMENT"


def test_crictl_exec_over_spdy(running):
    sycri, c = running
    r = crictl(sycri, "exec", c.id, "sh", "-c", "echo from-crictl; exit 4")
    assert r.stdout == b"from-crictl\n", r.stderr
    assert r.returncode != 0
    assert b"command terminated with exit code 4" in r.stderr


def test_crictl_exec_stdin(running):
    sycri, c = running
    r = crictl(sycri, "exec", "-i", c.id, "wc", "-c", input=b"y" * 5000)
    assert r.stdout.strip() == b"5000", r.stderr
    assert r.returncode == 0


def test_crictl_exec_tty_sizes(running):
    """crictl on a real terminal: its size goes along, and a resize follows SIGWINCH."""
    sycri, c = running
    master, slave = pty.openpty()
    streaming_env.set_size(slave, 91, 27)
    proc = subprocess.Popen(
        ["crictl", "--runtime-endpoint", sycri.endpoint, "exec", "-i", "-t", c.id, "sh"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    try:
        out = streaming_env.PtyReader(master)
        os.write(master, b"stty size\n")
        out.wait_for(b"27 91")
        streaming_env.set_size(master, 140, 45)
        proc.send_signal(signal.SIGWINCH)
        time.sleep(0.5)
        os.write(master, b"stty size; exit 3\n")
        out.wait_for(b"45 140")
        assert proc.wait(30) != 0  # crictl reports the non-zero exit
        out.wait_for(b"exit code 3")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def test_crictl_exec_missing_command(running):
    sycri, c = running
    r = crictl(sycri, "exec", c.id, "no-such-binary")
    assert r.returncode != 0
    assert b"no-such-binary" in r.stderr


def test_ws_exec_through_rpc_url(running):
    sycri, c = running
    url = (
        sycri.runtime()
        .Exec(api_pb2.ExecRequest(container_id=c.id, cmd=["echo", "ws"], stdout=True, stderr=True))
        .url
    )
    client = WSClient(Configuration(), url.replace("http://", "ws://"), None, capture_all=True)
    client.run_forever(timeout=30)
    assert client.read_stdout() == "ws\n"
    assert client.returncode == 0
    status = json.loads(client.read_channel(3) or '{"status": "Success"}')
    assert status["status"] == "Success"


def _checksum_exchange(port: int, n_in: int, n_out: int) -> None:
    """Send n_in bytes to the pod's checksum server, get n_out back; both intact."""
    payload = os.urandom(n_in)
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(f"{n_in} {n_out}\n".encode() + payload)
        s.shutdown(socket.SHUT_WR)
        reply = bytearray()
        while chunk := s.recv(1 << 20):
            reply += chunk
    assert reply[:64].decode() == hashlib.sha256(payload).hexdigest()
    assert len(reply) == 64 + n_out + 64
    assert hashlib.sha256(reply[64:-64]).hexdigest() == reply[-64:].decode()


def test_crictl_port_forward_10mb_each_way(running):
    """client-go's SPDY port-forwarder (in crictl) to a server inside the pod's netns."""
    sycri, c = running
    with streaming_env.checksum_server(f"/proc/{c.pid}/ns/net") as port:
        local = streaming_env.free_port()
        proc = subprocess.Popen(
            ["crictl", "--runtime-endpoint", sycri.endpoint, "port-forward", c.pod,
             f"{local}:{port}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            streaming_env.wait_listening(local)
            _checksum_exchange(local, 10 * MB, 10 * MB)
            _checksum_exchange(local, 1000, 1000)  # a second connection, same session
        finally:
            proc.terminate()
            proc.wait(10)


def test_streaming_address_in_use_is_a_clear_startup_error(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = SycriServer(tmp_path / "sycri", flags=["--streaming-address", f"127.0.0.1:{port}"])
        with pytest.raises(RuntimeError, match="cannot start the streaming server"):
            server.start()
        assert server.wait(10) != 0


def test_attach_to_a_container_with_stdin(node, registry):  # noqa: F811
    """Attach through conmon's socket to a container sycri runs with stdin open."""
    sycri, _net = node
    rt = sycri.runtime()
    image = pull(sycri, registry, entrypoint=["/bin/sh", "-c"], cmd=["true"])
    pod_cfg = pod_config("attach")
    pod_cfg.log_directory = str(sycri.base / "pods" / "attach")
    pod = rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=pod_cfg)).pod_sandbox_id
    cfg = container("talker", image, ['while read line; do echo "heard $line"; done'], stdin=True)
    req = api_pb2.CreateContainerRequest(pod_sandbox_id=pod, config=cfg, sandbox_config=pod_cfg)
    cid = rt.CreateContainer(req).container_id
    rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid))
    url = rt.Attach(
        api_pb2.AttachRequest(container_id=cid, stdin=True, stdout=True, stderr=True)
    ).url
    ws = WSClient(Configuration(), url.replace("http://", "ws://"), None, capture_all=True)
    try:
        ws.write_stdin("hi there\n")
        deadline = time.monotonic() + 20
        while "heard hi there" not in (ws.peek_stdout() or "") and time.monotonic() < deadline:
            ws.update(timeout=1)
        assert "heard hi there" in ws.peek_stdout()
    finally:
        ws.close()
