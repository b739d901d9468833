"""``sycri health``: ask a running sycri over its socket whether it is alive and ready.

The container HEALTHCHECK and the chart's probes run it. Alive means Version answers;
ready (the default) also needs the RuntimeReady condition of Status. NetworkReady is
reported but not required: kubelet already holds pods back until the network is ready,
and a node without CNI config must still be able to start sycri.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import grpc

from sycri import config
from sycri.api import api_pb2, api_pb2_grpc


@dataclass(frozen=True)
class Health:
    ok: bool
    message: str


def check(socket: str, *, timeout: float = 5.0, live_only: bool = False) -> Health:
    """Version (and unless ``live_only``, Status) over ``socket``; never raises for RPC errors."""
    channel = grpc.insecure_channel(f"unix://{socket}")
    try:
        stub = api_pb2_grpc.RuntimeServiceStub(channel)
        try:
            version = stub.Version(api_pb2.VersionRequest(), timeout=timeout)
        except grpc.RpcError as exc:
            return Health(False, f"no answer on unix://{socket}: {_rpc_error(exc)}")
        name = f"{version.runtime_name} {version.runtime_version}"
        if live_only:
            return Health(True, f"{name} answers on unix://{socket}")
        try:
            status = stub.Status(api_pb2.StatusRequest(), timeout=timeout)
        except grpc.RpcError as exc:
            return Health(False, f"{name}: Status failed: {_rpc_error(exc)}")
        conditions = {c.type: c for c in status.status.conditions}
        runtime = conditions.get("RuntimeReady")
        network = conditions.get("NetworkReady")
        net = "NetworkReady" if network and network.status else _not_ready("NetworkReady", network)
        if runtime is None or not runtime.status:
            return Health(False, f"{name}: {_not_ready('RuntimeReady', runtime)}; {net}")
        return Health(True, f"{name}: RuntimeReady; {net}")
    finally:
        channel.close()


def _not_ready(kind: str, cond: api_pb2.RuntimeCondition | None) -> str:
    if cond is None:
        return f"{kind} not reported"
    detail = cond.message or cond.reason or "no reason given"
    return f"{kind}=false ({detail})"


def _rpc_error(exc: grpc.RpcError) -> str:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return f"{code.name if code else 'error'}: {details}"


def _cmd_health(opts: argparse.Namespace) -> int:
    socket = opts.socket or config.load(opts.config).socket
    result = check(socket, timeout=opts.timeout, live_only=opts.live)
    print(("ok: " if result.ok else "unhealthy: ") + result.message, file=sys.stdout)
    return 0 if result.ok else 1


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("health", help="check a running sycri over its socket (exit 0 or 1)")
    p.add_argument("--config", metavar="FILE", help="YAML config file naming the socket")
    p.add_argument("--socket", metavar="PATH", help="the socket (default: from the config)")
    p.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS")
    p.add_argument("--live", action="store_true", help="only check that sycri answers")
    p.set_defaults(func=_cmd_health)
