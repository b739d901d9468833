"""Exec, Attach and PortForward: validate, check the target exists, hand back a URL.

The work happens later, when kubelet connects to the URL; see ``sycri.streaming``.
"""

from __future__ import annotations

from sycri.api import api_pb2
from sycri.errors import InvalidArgument, Unavailable, excerpt
from sycri.node import Node
from sycri.runtime.oci import argv
from sycri.streaming.server import StreamingServer
from sycri.streaming.tokens import AttachRequest, ExecRequest, PortForwardRequest

MAX_ARGS = 4096
RUNTIME_ARGS = 8192  # room for runc's own arguments


def _server(node: Node) -> StreamingServer:
    if not node.streaming.base_url:  # not listening (yet)
        raise Unavailable("the streaming server is not running")
    return node.streaming


def _check_stdio(kind: str, stdin: bool, stdout: bool, stderr: bool, tty: bool) -> None:
    if tty and stderr:
        raise InvalidArgument(f"{kind}: tty and stderr cannot both be true (a TTY merges them)")
    if not (stdin or stdout or stderr):
        raise InvalidArgument(f"{kind}: one of stdin, stdout or stderr must be set")


async def exec_(node: Node, request: api_pb2.ExecRequest) -> api_pb2.ExecResponse:
    server = _server(node)
    if not request.container_id:
        raise InvalidArgument("Exec: container_id is required")
    cmd = tuple(request.cmd)
    if not cmd or not cmd[0]:
        raise InvalidArgument("Exec: cmd is required")
    if len(cmd) > MAX_ARGS:
        raise InvalidArgument(f"Exec: command {excerpt(cmd[0])} has too many arguments")
    argv.check("Exec: cmd", cmd, reserve=argv.environ_size() + RUNTIME_ARGS)
    _check_stdio("Exec", request.stdin, request.stdout, request.stderr, request.tty)
    server.targets.container(request.container_id)  # NotFound before any URL exists
    url = server.url_for(
        ExecRequest(
            request.container_id,
            cmd,
            tty=request.tty,
            stdin=request.stdin,
            stdout=request.stdout,
            stderr=request.stderr,
        )
    )
    return api_pb2.ExecResponse(url=url)


async def attach(node: Node, request: api_pb2.AttachRequest) -> api_pb2.AttachResponse:
    server = _server(node)
    if not request.container_id:
        raise InvalidArgument("Attach: container_id is required")
    _check_stdio("Attach", request.stdin, request.stdout, request.stderr, request.tty)
    server.targets.container(request.container_id)
    url = server.url_for(
        AttachRequest(
            request.container_id,
            tty=request.tty,
            stdin=request.stdin,
            stdout=request.stdout,
            stderr=request.stderr,
        )
    )
    return api_pb2.AttachResponse(url=url)


async def port_forward(
    node: Node, request: api_pb2.PortForwardRequest
) -> api_pb2.PortForwardResponse:
    server = _server(node)
    if not request.pod_sandbox_id:
        raise InvalidArgument("PortForward: pod_sandbox_id is required")
    for port in request.port:
        if not 0 < port < 65536:
            raise InvalidArgument(f"PortForward: port {port} is out of range 1-65535")
    server.targets.sandbox_netns(request.pod_sandbox_id)
    url = server.url_for(PortForwardRequest(request.pod_sandbox_id, tuple(request.port)))
    return api_pb2.PortForwardResponse(url=url)


RPCS = {"Exec": exec_, "Attach": attach, "PortForward": port_forward}
