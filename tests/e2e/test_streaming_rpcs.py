"""Exec / Attach / PortForward through the whole server: gRPC for the URL, then the
SPDY client in tests/support (written from the protocol client-go speaks) and the
Python WebSocket client against the URL, into a pod and container sycri itself runs."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
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
from tests.support import spdy_client, streaming_env
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


def exec_url(sycri: SycriServer, cid: str, cmd: list[str], *, stdin=False, tty=False) -> str:
    """The URL the real Exec RPC hands out, for the streams a kubectl/crictl exec asks for."""
    req = api_pb2.ExecRequest(
        container_id=cid, cmd=cmd, stdin=stdin, stdout=True, stderr=not tty, tty=tty
    )
    return sycri.runtime().Exec(req).url


async def _spdy_exec(url: str, stdin: bytes | None = None) -> tuple[bytes, bytes, dict]:
    """An exec over SPDY with pipes, as client-go runs one: stdin sent then half-closed."""
    client, streams = await spdy_client.exec_session(
        url, stdin=stdin is not None, stdout=True, stderr=True, tty=False
    )
    try:
        if stdin is not None:
            for i in range(0, len(stdin), 1024):
                await streams["stdin"].write(stdin[i : i + 1024])
            await streams["stdin"].close()
        status = spdy_client.parse_status(await streams["error"].read_all())
        return await streams["stdout"].read_all(), await streams["stderr"].read_all(), status
    finally:
        await client.close()


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


def test_spdy_exec_pipes_exit_code(running):
    sycri, c = running
    url = exec_url(sycri, c.id, ["sh", "-c", "echo from-spdy; echo to-err >&2; exit 4"])
    out, err, status = asyncio.run(_spdy_exec(url))
    assert out == b"from-spdy\n"
    assert err == b"to-err\n"
    assert status["reason"] == "NonZeroExitCode"
    assert spdy_client.exit_code(status) == 4  # kubectl: "command terminated with exit code 4"


def test_spdy_exec_stdin(running):
    sycri, c = running
    url = exec_url(sycri, c.id, ["wc", "-c"], stdin=True)
    out, err, status = asyncio.run(_spdy_exec(url, stdin=b"y" * 5000))
    assert out.strip() == b"5000", err
    assert spdy_client.exit_code(status) == 0


async def _spdy_tty_sizes(url: str) -> tuple[bytes, dict]:
    """A terminal session: the initial size first (as client-go sends it), then a resize."""
    client, streams = await spdy_client.exec_session(
        url, stdin=True, stdout=True, stderr=False, tty=True
    )
    try:
        await streams["resize"].write(json.dumps({"Width": 91, "Height": 27}).encode())
        await streams["stdin"].write(b"stty size\n")
        await streams["stdout"].wait_for(b"27 91")
        await streams["resize"].write(json.dumps({"Width": 140, "Height": 45}).encode())
        await asyncio.sleep(0.5)  # the resize and stdin are separate streams
        await streams["stdin"].write(b"stty size; tty; exit 3\n")
        await streams["stdout"].wait_for(b"45 140")
        status = spdy_client.parse_status(await streams["error"].read_all())
        return bytes(streams["stdout"].data), status
    finally:
        await client.close()


def test_spdy_exec_tty_sizes(running):
    """A TTY exec gets the client's initial size, then follows a resize."""
    sycri, c = running
    out, status = asyncio.run(_spdy_tty_sizes(exec_url(sycri, c.id, ["sh"], stdin=True, tty=True)))
    assert b"27 91" in out
    assert b"45 140" in out
    assert b"/dev/pts/" in out  # a real terminal, not a pipe
    assert spdy_client.exit_code(status) == 3


def test_spdy_exec_missing_command(running):
    sycri, c = running
    out, _err, status = asyncio.run(_spdy_exec(exec_url(sycri, c.id, ["no-such-binary"])))
    assert out == b""
    assert status["status"] == "Failure"
    with pytest.raises(spdy_client.ExecFailed, match="no-such-binary"):
        spdy_client.exit_code(status)  # an error naming the command, not an exit code


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


async def _spdy_forward(url: str, port: int, exchanges: list[int]) -> list[tuple]:
    """One port-forward session; each exchange is one connection (its own request id)
    sending n bytes to the pod's checksum server and reading n back."""
    client = await spdy_client.SpdyClient.connect(url, ["portforward.k8s.io"])
    results = []
    try:
        assert client.protocol == "portforward.k8s.io"
        for rid, n in enumerate(exchanges):
            headers = {"port": str(port), "requestid": str(rid)}
            error = await client.open_stream({"streamtype": "error", **headers})
            data = await client.open_stream({"streamtype": "data", **headers})
            payload = os.urandom(n)
            await data.write(f"{n} {n}\n".encode())
            for i in range(0, n, 32 * 1024):
                await data.write(payload[i : i + 32 * 1024])
            await data.close()
            reply = await data.read_all(timeout=120)
            err = await error.read_all(timeout=10)
            results.append((n, hashlib.sha256(payload).hexdigest(), reply, err))
        return results
    finally:
        await client.close()


def test_spdy_port_forward_10mb_each_way(running):
    """SPDY port-forward through the real PortForward RPC to a server in the pod's netns."""
    sycri, c = running
    url = sycri.runtime().PortForward(api_pb2.PortForwardRequest(pod_sandbox_id=c.pod)).url
    with streaming_env.checksum_server(f"/proc/{c.pid}/ns/net") as port:
        # 10 MB each way, then a second connection in the same session.
        results = asyncio.run(_spdy_forward(url, port, [10 * MB, 1000]))
    for n, sent_digest, reply, err in results:
        assert err == b""
        assert reply[:64].decode() == sent_digest  # the pod received exactly what we sent
        assert len(reply) == 64 + n + 64
        assert hashlib.sha256(reply[64:-64]).hexdigest() == reply[-64:].decode()


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
