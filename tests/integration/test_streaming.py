"""The streaming server against real runc/conmon containers and real clients.

WebSocket: the Python ``kubernetes`` client's WSClient and PortForward. SPDY: the
minimal client in tests/support (written from the protocol).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import time
from pathlib import Path

import pytest
from kubernetes.client import Configuration
from kubernetes.stream.ws_client import WSClient, portforward_call
from sycri.config import StreamingConfig
from sycri.streaming.tokens import AttachRequest, ExecRequest, PortForwardRequest
from sycri.streaming.upgrade import MAX_HEAD
from websocket import WebSocketConnectionClosedException

from tests.support import spdy_client, streaming_env
from tests.support.streaming_env import FixedTargets, ServerThread
from tests.support.tls import self_signed

pytestmark = pytest.mark.root

MB = 1024 * 1024


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("streaming")
    root = str(tmp / "runc")
    made: list[streaming_env.Container] = []
    try:
        made.append(streaming_env.run_container(tmp, root, ["sleep", "3600"]))
        script = 'echo ready; while read line; do echo "got $line"; done; echo bye >&2'
        made.append(streaming_env.run_conmon_container(tmp, root, ["sh", "-c", script], tty=False))
        made.append(streaming_env.run_container(tmp, root, ["true"]))
        made[2].kill()
        made.append(streaming_env.run_conmon_container(tmp, root, ["sh"], tty=True))
        names = ("plain", "attached", "stopped", "terminal")
        targets = FixedTargets(dict(zip(names, made, strict=True)), netns={})
        with streaming_env.netns_with_server() as ns:
            targets.netns["pod"] = ns.path
            server = ServerThread(StreamingConfig(token_ttl_seconds=30), targets)
            try:
                yield server, ns
            finally:
                server.stop()
    finally:
        for c in made:
            c.kill()
            c.delete()


def ws_url(url: str) -> str:
    return url.replace("http://", "ws://", 1)


def ws_exec(server: ServerThread, req, *, stdin: bytes | None = None, v4=False) -> WSClient:
    headers = {"sec-websocket-protocol": "v4.channel.k8s.io"} if v4 else None
    client = WSClient(Configuration(), ws_url(server.url(req)), headers, capture_all=True)
    if stdin is not None:
        client.write_stdin(stdin.decode())
        if not v4:
            client.close_channel(0)
    client.run_forever(timeout=30)
    return client


def test_ws_exec_pipes_exit_code_and_streams(env):
    server, _ = env
    req = ExecRequest("plain", ("sh", "-c", "echo out; echo err >&2; exit 3"))
    client = ws_exec(server, req)
    assert client.subprotocol == "v5.channel.k8s.io"
    assert client.read_stdout() == "out\n"
    assert client.read_stderr() == "err\n"
    assert client.returncode == 3


def test_ws_exec_success_status(env):
    server, _ = env
    client = ws_exec(server, ExecRequest("plain", ("echo", "hello")))
    assert client.read_stdout() == "hello\n"
    assert client.returncode == 0


def test_ws_exec_stdin_closed_on_v5(env):
    server, _ = env
    req = ExecRequest("plain", ("sh", "-c", "wc -c; echo done"), stdin=True)
    client = ws_exec(server, req, stdin=b"x" * 1000)
    assert client.read_stdout().split() == ["1000", "done"]
    assert client.returncode == 0


def test_ws_exec_v4_protocol(env):
    server, _ = env
    client = ws_exec(server, ExecRequest("plain", ("sh", "-c", "exit 7")), v4=True)
    assert client.subprotocol == "v4.channel.k8s.io"
    assert client.returncode == 7


def test_ws_exec_tty(env):
    server, _ = env
    req = ExecRequest("plain", ("sh",), tty=True, stdin=True, stderr=False)
    client = WSClient(Configuration(), ws_url(server.url(req)), None, capture_all=True)
    client.write_channel(4, json.dumps({"Width": 120, "Height": 40}))
    client.write_stdin("stty size; tty; exit\n")
    client.run_forever(timeout=30)
    out = client.read_stdout()
    assert "40 120" in out
    assert "/dev/pts/" in out
    assert client.returncode == 0


def test_ws_exec_missing_command_is_an_error(env):
    server, _ = env
    client = ws_exec(server, ExecRequest("plain", ("no-such-command",)))
    status = json.loads(client.read_channel(3))
    assert status["status"] == "Failure"
    assert "no-such-command" in status["message"]


@pytest.mark.parametrize("cid,what", [("stopped", "stopped"), ("gone", "not found")])
def test_ws_exec_stopped_or_unknown_container(env, cid, what):
    server, _ = env
    client = ws_exec(server, ExecRequest(cid, ("true",)))
    status = json.loads(client.read_channel(3))
    assert status["status"] == "Failure"
    assert what in status["message"]


def test_ws_attach_stdio(env):
    server, _ = env
    req = AttachRequest("attached", stdin=True)
    client = WSClient(Configuration(), ws_url(server.url(req)), None, capture_all=True)
    client.write_stdin("hello\n")
    deadline = time.monotonic() + 20
    out = ""
    while "got hello" not in out and time.monotonic() < deadline:
        client.update(timeout=1)
        out = client.peek_stdout()
    assert "got hello" in out
    client.close_channel(0)  # stdin closes: the loop ends, the container exits
    client.run_forever(timeout=30)
    assert "bye" in client.read_stderr()
    assert client.returncode == 0


def test_tokens_single_use_and_expiring(env):
    server, _ = env
    url = server.url(ExecRequest("plain", ("true",)))
    assert ws_exec(server, ExecRequest("plain", ("true",))).returncode == 0
    WSClient(Configuration(), ws_url(url), None, capture_all=True).run_forever(timeout=10)
    with pytest.raises(Exception, match="404"):
        WSClient(Configuration(), ws_url(url), None, capture_all=True)
    # Expiry: a server whose tokens live 0.2 s.
    short = ServerThread(StreamingConfig(token_ttl_seconds=0.2), server.server.targets)
    try:
        late = short.url(ExecRequest("plain", ("true",)))
        time.sleep(0.4)
        with pytest.raises(Exception, match="404"):
            WSClient(Configuration(), ws_url(late), None, capture_all=True)
        with pytest.raises(spdy_client.UpgradeRefused) as refused:
            asyncio.run(spdy_client.SpdyClient.connect(late, ["v4.channel.k8s.io"]))
        assert refused.value.status == 404
    finally:
        short.stop()


def test_idle_stream_times_out(env):
    server, _ = env
    idle = ServerThread(StreamingConfig(idle_timeout_seconds=0.5), server.server.targets)
    try:
        req = ExecRequest("plain", ("sleep", "30"))
        client = WSClient(Configuration(), ws_url(idle.url(req)), None, capture_all=True)
        closed = False
        try:
            client.run_forever(timeout=20)  # returns when the server drops the connection
        except WebSocketConnectionClosedException:
            closed = True
        # Returning with it still open would mean run_forever gave up waiting: the
        # server never closed it.
        assert closed or not client.is_open()
    finally:
        idle.stop()


async def _spdy_tty_resize(url: str) -> tuple[bytes, dict]:
    client, streams = await spdy_client.exec_session(
        url, stdin=True, stdout=True, stderr=False, tty=True
    )
    try:
        assert client.protocol == "v4.channel.k8s.io"
        await streams["resize"].write(json.dumps({"Width": 100, "Height": 30}).encode())
        await streams["stdin"].write(b"stty size\n")
        await streams["stdout"].wait_for(b"30 100")
        await streams["resize"].write(json.dumps({"Width": 132, "Height": 50}).encode())
        await asyncio.sleep(0.2)
        await client.ping(1)
        await streams["stdin"].write(b"stty size; exit 5\n")
        status = spdy_client.parse_status(await streams["error"].read_all())
        out = await streams["stdout"].read_all()
        assert 1 in client.pings  # our PING came back
        return out, status
    finally:
        await client.close()


def test_spdy_exec_tty_with_resize(env):
    server, _ = env
    req = ExecRequest("plain", ("sh",), tty=True, stdin=True, stderr=False)
    out, status = asyncio.run(_spdy_tty_resize(server.url(req)))
    assert b"30 100" in out
    assert b"50 132" in out
    assert status["reason"] == "NonZeroExitCode"
    assert status["details"]["causes"][0] == {"reason": "ExitCode", "message": "5"}


async def _spdy_pipes(url: str) -> tuple[bytes, bytes, dict]:
    client, streams = await spdy_client.exec_session(
        url, stdin=True, stdout=True, stderr=True, tty=False
    )
    try:
        await streams["stdin"].write(b"abc\n" * 1000)
        await streams["stdin"].close()
        status = spdy_client.parse_status(await streams["error"].read_all())
        return await streams["stdout"].read_all(), await streams["stderr"].read_all(), status
    finally:
        await client.close()


def test_spdy_exec_pipes_stdin_eof(env):
    server, _ = env
    req = ExecRequest("plain", ("sh", "-c", "wc -l; echo e >&2"), stdin=True)
    out, err, status = asyncio.run(_spdy_pipes(server.url(req)))
    assert out.strip() == b"1000"
    assert err == b"e\n"
    assert status == {"metadata": {}, "status": "Success"}


def test_spdy_refuses_unknown_protocol(env):
    server, _ = env
    url = server.url(ExecRequest("plain", ("true",)))
    with pytest.raises(spdy_client.UpgradeRefused) as refused:
        asyncio.run(spdy_client.SpdyClient.connect(url, ["v1.channel.k8s.io"]))
    assert refused.value.status == 403


async def _spdy_forward(url: str, port: int, n_in: int, n_out: int, rid: int = 0):
    client = await spdy_client.SpdyClient.connect(url, ["portforward.k8s.io"])
    try:
        headers = {"port": str(port), "requestid": str(rid)}
        error = await client.open_stream({"streamtype": "error", **headers})
        data = await client.open_stream({"streamtype": "data", **headers})
        payload = os.urandom(n_in)
        await data.write(f"{n_in} {n_out}\n".encode())
        for i in range(0, n_in, 32 * 1024):
            await data.write(payload[i : i + 32 * 1024])
        await data.close()
        reply = await data.read_all(timeout=60)
        err = await error.read_all(timeout=10)
        return hashlib.sha256(payload).hexdigest(), reply, err
    finally:
        await client.close()


def test_spdy_portforward_10mb_each_way(env):
    server, ns = env
    url = server.url(PortForwardRequest("pod"))
    sent_digest, reply, err = asyncio.run(_spdy_forward(url, ns.port, 10 * MB, 10 * MB))
    assert err == b""
    assert reply[:64].decode() == sent_digest  # what the pod received is what we sent
    body, trailer = reply[64:-64], reply[-64:]
    assert len(body) == 10 * MB
    assert hashlib.sha256(body).hexdigest() == trailer.decode()


async def _spdy_forward_refused(url: str, port: int) -> tuple[bytes, bytes]:
    client = await spdy_client.SpdyClient.connect(url, ["portforward.k8s.io"])
    try:
        headers = {"port": str(port), "requestid": "7"}
        error = await client.open_stream({"streamtype": "error", **headers})
        data = await client.open_stream({"streamtype": "data", **headers})
        return await error.read_all(timeout=10), await data.read_all(timeout=10)
    finally:
        await client.close()


def test_spdy_portforward_nothing_listening(env):
    server, _ = env
    url = server.url(PortForwardRequest("pod"))
    closed = _free_port()
    err, data = asyncio.run(_spdy_forward_refused(url, closed))
    assert f"error forwarding port {closed} to pod pod".encode() in err
    assert b"refused" in err.lower()
    assert data == b""


def _free_port() -> int:
    # A port nobody listens on in the fresh namespace (only the checksum server is there).
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_ws_portforward_python_client(env):
    server, ns = env
    url = server.url(PortForwardRequest("pod"))
    pf = portforward_call(
        Configuration(), "GET", ws_url(url), query_params=[("ports", str(ns.port))]
    )
    sock = pf.socket(ns.port)
    sock.settimeout(30)
    payload = os.urandom(300_000)
    sock.sendall(f"{len(payload)} 200000\n".encode() + payload)
    reply = b""
    while len(reply) < 64 + 200000 + 64:
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        reply += chunk
    assert reply[:64].decode() == hashlib.sha256(payload).hexdigest()
    assert hashlib.sha256(reply[64:-64]).hexdigest() == reply[-64:].decode()
    sock.close()
    assert pf.error(ns.port) is None


def test_ws_portforward_nothing_listening(env):
    server, _ = env
    closed = _free_port()
    url = server.url(PortForwardRequest("pod"))
    pf = portforward_call(
        Configuration(), "GET", ws_url(url), query_params=[("ports", str(closed))]
    )
    sock = pf.socket(closed)
    sock.settimeout(10)
    assert sock.recv(10) == b""  # closed cleanly
    deadline = time.monotonic() + 10
    while pf.error(closed) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "error forwarding port" in (pf.error(closed) or "")


def test_bad_requests_get_http_errors(env):
    server, _ = env
    host, port = server.server.base_url.removeprefix("http://").split(":")
    for head, status in (
        (b"GET /exec/nope HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", b"404"),
        (b"GET /elsewhere/x HTTP/1.1\r\n\r\n", b"404"),
        (b"GET /exec/x HTTP/1.1\r\n\r\n", b"426"),
        (b"nonsense\r\n\r\n", b"400"),
        # a head past the connection's read limit (headers a client could grow forever)
        (b"GET /exec/x HTTP/1.1\r\nX-Big: " + b"a" * MAX_HEAD + b"\r\n\r\n", b"431"),
    ):
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(head)
            assert s.recv(100).split(b" ")[1] == status
    Path("/dev/null").exists()


async def _spdy_attach_tty(url: str) -> bytes:
    client, streams = await spdy_client.exec_session(
        url, stdin=True, stdout=True, stderr=False, tty=True
    )
    try:
        await streams["resize"].write(json.dumps({"Width": 77, "Height": 22}).encode())
        await asyncio.sleep(0.3)
        await streams["stdin"].write(b"stty size\n")
        await streams["stdout"].wait_for(b"22 77")
        await streams["resize"].write(json.dumps({"Width": 99, "Height": 33}).encode())
        await asyncio.sleep(0.3)
        await streams["stdin"].write(b"stty size\n")
        await streams["stdout"].wait_for(b"33 99")
        return bytes(streams["stdout"].data)
    finally:
        await client.close()


def test_spdy_attach_tty_resize_through_conmon(env):
    server, _ = env
    req = AttachRequest("terminal", tty=True, stdin=True, stderr=False)
    out = asyncio.run(_spdy_attach_tty(server.url(req)))
    assert b"33 99" in out
    # The session ended with the client; the container's shell keeps running.
    assert server.server.targets.containers["terminal"].state() == "running"


def test_attach_without_conmon_is_an_error(env):
    server, _ = env
    client = ws_exec(server, AttachRequest("plain", stdout=True))
    status = json.loads(client.read_channel(3))
    assert status["status"] == "Failure"
    assert "attach socket" in status["message"]


def test_tls_streaming(env, tmp_path):
    import ssl

    server, _ = env
    cert, key = map(str, self_signed(tmp_path / "tls.crt", tmp_path / "tls.key"))
    tls = ServerThread(StreamingConfig(tls_cert=cert, tls_key=key), server.server.targets)
    try:
        url = tls.url(ExecRequest("plain", ("echo", "secret")))
        assert url.startswith("https://")
        ctx = ssl.create_default_context(cafile=cert)
        ctx.check_hostname = False

        async def run():
            client, streams = await spdy_client.exec_session(
                url, stdin=False, stdout=True, stderr=True, tty=False, ssl=ctx
            )
            try:
                status = spdy_client.parse_status(await streams["error"].read_all())
                return await streams["stdout"].read_all(), status
            finally:
                await client.close()

        out, status = asyncio.run(run())
        assert out == b"secret\n" and status["status"] == "Success"
        # Plain HTTP to the TLS port gets nowhere.
        plain = tls.url(ExecRequest("plain", ("true",))).replace("https://", "http://")
        with pytest.raises(
            (spdy_client.UpgradeRefused, ConnectionError, asyncio.IncompleteReadError)
        ):
            asyncio.run(spdy_client.SpdyClient.connect(plain, ["v4.channel.k8s.io"]))
    finally:
        tls.stop()


def _alive_with(marker: str) -> bool:
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        return True
            except OSError:
                pass
    return False


async def _start_then_leave(url: str, marker: str) -> None:
    client, streams = await spdy_client.exec_session(
        url, stdin=False, stdout=True, stderr=True, tty=False
    )
    await streams["stdout"].wait_for(b"started")
    assert _alive_with(marker)
    await client.close()  # the client goes away mid-command


@pytest.mark.parametrize("trap", ["", "trap '' TERM; "])
def test_client_leaving_stops_the_command(env, trap):
    server, _ = env
    marker = f"marker-{os.urandom(4).hex()}"
    script = f"{trap}echo started; while true; do sleep 0.1; done # {marker}"
    asyncio.run(_start_then_leave(server.url(ExecRequest("plain", ("sh", "-c", script))), marker))
    deadline = time.monotonic() + 10
    while _alive_with(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive_with(marker)


def test_concurrent_execs(env):
    server, _ = env

    async def one(i: int) -> bytes:
        url = server.url(ExecRequest("plain", ("sh", "-c", f"sleep 0.5; echo {i}")))
        client, streams = await spdy_client.exec_session(
            url, stdin=False, stdout=True, stderr=True, tty=False
        )
        try:
            await streams["error"].read_all()
            return await streams["stdout"].read_all()
        finally:
            await client.close()

    async def all_of_them():
        return await asyncio.gather(*(one(i) for i in range(12)))

    outs = asyncio.run(all_of_them())
    assert outs == [f"{i}\n".encode() for i in range(12)]


async def _unread_stdin(url: str) -> dict:
    client, streams = await spdy_client.exec_session(
        url, stdin=True, stdout=True, stderr=True, tty=False
    )
    try:
        for _ in range(64):  # 4 MB the command never reads
            await streams["stdin"].write(b"z" * 65536)
        return spdy_client.parse_status(await streams["error"].read_all())
    finally:
        await client.close()


def test_status_arrives_although_stdin_went_unread(env):
    server, _ = env
    for _ in range(3):
        url = server.url(ExecRequest("plain", ("sh", "-c", "exit 6"), stdin=True))
        status = asyncio.run(_unread_stdin(url))
        assert status["details"]["causes"][0]["message"] == "6"
