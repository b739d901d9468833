"""What one small CRI call costs, layer by layer: a bare grpc.aio server, the same with
sycri's Dispatcher (observers, decode, NUL scan, error mapping), each with asyncio's
loop and with uvloop, and sycri itself, all answering Version to the same Python client
on a unix socket, in interleaved blocks. Then the Dispatcher's own cost without gRPC
(its behaviour awaited directly), in µs per call.

The difference between "bare" and "Dispatcher" is sycri's own per-call overhead; the
difference between "bare" and containerd's figure in side_by_side.py is the Python gRPC
server stack. Nothing here asserts on time.

``--bare NAME:SETTING`` adds a bare grpc.aio server started as a process of its own with
one setting: ``option:K=V`` (a server channel argument, e.g. ``grpc.http2.bdp_probe=0``),
``env:K=V`` (its environment before gRPC starts, e.g. ``GRPC_EXPERIMENTS=...``) or
``cpus:LIST`` (pinned with taskset), beside a plain one started the same way.

Run as root from the repository root (sycri needs a bridge for its pods):
  .venv/bin/python bench/call_floor.py [--rounds 20] [--no-sycri] [--sycri-flag=...]
      [--bare NAME:SETTING ...]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "app"), str(ROOT)]

import grpc  # noqa: E402
from sycri.api import api_pb2, api_pb2_grpc  # noqa: E402
from sycri.cri import runtime_info  # noqa: E402
from sycri.cri.service import Dispatcher  # noqa: E402
from sycri.observability import metrics, tracing  # noqa: E402

BLOCK = 200
TICK = os.sysconf("SC_CLK_TCK")
OPTIONS = [
    ("grpc.max_receive_message_length", 16 << 20),
    ("grpc.max_send_message_length", 16 << 20),
]
RESPONSE = api_pb2.VersionResponse(
    version="0.1.0", runtime_name="bare", runtime_version="1", runtime_api_version="v1"
)


def _bare_handlers() -> list[grpc.GenericRpcHandler]:
    async def version(raw: bytes, context: Any) -> api_pb2.VersionResponse:
        return RESPONSE

    h = grpc.unary_unary_rpc_method_handler(
        version, None, api_pb2.VersionResponse.SerializeToString
    )
    return [grpc.method_handlers_generic_handler("runtime.v1.RuntimeService", {"Version": h})]


def _dispatcher() -> Dispatcher:
    """sycri's, with every handler and the observers it has when tracing is off."""
    from sycri import server

    return Dispatcher(None, server.handlers(), [metrics.RpcMetrics(), tracing.RpcSpans()])


def fork_server(sock: str, dispatcher: bool, uvloop: bool) -> int:
    """A child process serving Version on ``sock``; returns its pid."""
    pid = os.fork()
    if pid:
        return pid
    try:

        async def main() -> None:
            handlers = _dispatcher().generic_handlers() if dispatcher else _bare_handlers()
            server = grpc.aio.server(options=OPTIONS, interceptors=[])
            server.add_generic_rpc_handlers(handlers)
            server.add_insecure_port(f"unix:{sock}")
            await server.start()
            await server.wait_for_termination()

        if uvloop:
            import uvloop as uv

            uv.run(main())
        else:
            asyncio.run(main())
    finally:
        os._exit(0)


def spawn_bare(sock: str, setting: str) -> int:
    """A bare server as a process of its own (this file with ``--serve-bare``), so an
    environment setting reaches gRPC before it starts; returns its pid."""
    kind, _, value = setting.partition(":")
    env, cmd = dict(os.environ), [sys.executable, __file__, "--serve-bare", sock]
    if kind == "option":
        cmd += ["--option", value]
    elif kind == "env":
        k, v = value.split("=", 1)
        env[k] = v
    elif kind == "cpus":
        cmd = ["taskset", "-c", value, *cmd]
    elif kind:
        raise SystemExit(f"--bare: unknown setting {setting!r}")
    return subprocess.Popen(cmd, env=env).pid


def serve_bare(sock: str, options: list[str]) -> None:
    """``--serve-bare``: the bare Version server with ``options`` (K=V, ints as ints)."""
    extra = [
        (k, int(v) if v.lstrip("-").isdigit() else v) for k, v in (o.split("=", 1) for o in options)
    ]

    async def main() -> None:
        server = grpc.aio.server(options=[*OPTIONS, *extra], interceptors=[])
        server.add_generic_rpc_handlers(_bare_handlers())
        server.add_insecure_port(f"unix:{sock}")
        await server.start()
        await server.wait_for_termination()

    asyncio.run(main())


def timed(call: Callable[..., Any], n: int) -> list[float]:
    out = []
    req = api_pb2.VersionRequest(version="v1")
    for _ in range(n):
        t0 = time.perf_counter()
        call(req)
        out.append(time.perf_counter() - t0)
    return out


def wait_ready(stub: api_pb2_grpc.RuntimeServiceStub) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            stub.Version(api_pb2.VersionRequest(), timeout=1)
            return
        except grpc.RpcError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def cpu_seconds(pid: int) -> dict[str, float]:
    """CPU time (user + system) of each of the process's threads, by thread name."""
    out: dict[str, float] = collections.Counter()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except FileNotFoundError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        out[name] += (int(fields[11]) + int(fields[12])) / TICK
    return out


def over_grpc(targets: dict[str, tuple[int, api_pb2_grpc.RuntimeServiceStub]], rounds: int) -> None:
    """Wall time per call at the client, and the server's CPU per call (steadier than
    wall time on a shared machine: it does not count waiting for a CPU)."""
    for _pid, stub in targets.values():
        timed(stub.Version, BLOCK)  # warm
    ms: dict[str, list[float]] = {name: [] for name in targets}
    cpu: dict[str, collections.Counter[str]] = {n: collections.Counter() for n in targets}
    for _ in range(rounds):
        for name, (pid, stub) in targets.items():
            c0 = cpu_seconds(pid)
            ms[name] += timed(stub.Version, BLOCK)
            for thread, seconds in cpu_seconds(pid).items():
                cpu[name][thread] += seconds - c0.get(thread, 0.0)
    print(f"\n## Version over gRPC ({rounds} x {BLOCK} calls each, interleaved)\n")
    print("| server | median | p99 | server CPU per call | of which, by thread |")
    print("| --- | --- | --- | --- | --- |")
    for name, values in ms.items():
        values.sort()
        med, p99 = statistics.median(values) * 1000, values[int(len(values) * 0.99)] * 1000
        per = {t: s / len(values) * 1e6 for t, s in cpu[name].most_common() if s > 0}
        split = ", ".join(f"{t} {us:.0f}" for t, us in per.items())
        total = sum(per.values())
        print(f"| {name} | {med:.3f} ms | {p99:.3f} ms | {total:.0f} µs | {split} |")


class _Context:
    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise RuntimeError(details)


async def _direct(n: int) -> tuple[float, float]:
    """µs per call: the Dispatcher's behaviour plus serialising, and the handler alone."""
    md = api_pb2.DESCRIPTOR.services_by_name["RuntimeService"].methods_by_name["Version"]
    handler = _dispatcher()._method_handler(md)
    behaviour, serialize = handler.unary_unary, handler.response_serializer
    raw, ctx = api_pb2.VersionRequest(version="v1").SerializeToString(), _Context()
    req = api_pb2.VersionRequest.FromString(raw)
    out = []
    for with_dispatcher in (True, False):
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(n):
                if with_dispatcher:
                    serialize(await behaviour(raw, ctx))
                else:
                    serialize(await runtime_info.version(None, req))  # type: ignore[arg-type]
            best = min(best, (time.perf_counter() - t0) / n * 1e6)
        out.append(best)
    return out[0], out[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--no-sycri", action="store_true", help="only the bare servers")
    ap.add_argument("--sycri-flag", action="append", default=[], help="passed to sycri serve")
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:K=V",
        help="one more sycri, with K=V in its environment (e.g. a loop to compare)",
    )
    ap.add_argument(
        "--bare",
        action="append",
        default=[],
        metavar="NAME:SETTING",
        help="one more bare server: option:K=V, env:K=V or cpus:LIST (and a plain one)",
    )
    ap.add_argument("--serve-bare", metavar="SOCK", help=argparse.SUPPRESS)
    ap.add_argument("--option", action="append", default=[], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_bare:
        serve_bare(args.serve_bare, args.option)
        return 0

    try:
        import uvloop  # noqa: F401

        loops = (False, True)
    except ImportError:
        loops = (False,)
    work = Path(tempfile.mkdtemp(prefix="cf", dir="/tmp"))
    pids: list[int] = []
    channels: list[grpc.Channel] = []
    stubs: dict[str, tuple[int, api_pb2_grpc.RuntimeServiceStub]] = {}
    try:
        for dispatcher in (False, True):
            for uv in loops:
                name = ("Dispatcher" if dispatcher else "bare") + (", uvloop" if uv else "")
                sock = str(work / f"{len(pids)}.sock")
                pid = fork_server(sock, dispatcher, uv)
                pids.append(pid)
                ch = grpc.insecure_channel(f"unix:{sock}")
                channels.append(ch)
                stubs[f"grpc.aio {name}"] = (pid, api_pb2_grpc.RuntimeServiceStub(ch))
        for name, setting in (
            [("plain", ""), *(b.split(":", 1) for b in args.bare)] if args.bare else []
        ):
            sock = str(work / f"{len(pids)}.sock")
            pids.append(spawn_bare(sock, setting))
            ch = grpc.insecure_channel(f"unix:{sock}")
            channels.append(ch)
            stubs[f"bare process, {name}"] = (pids[-1], api_pb2_grpc.RuntimeServiceStub(ch))
        for _pid, stub in stubs.values():
            wait_ready(stub)
        if args.no_sycri:
            over_grpc(stubs, args.rounds)
        else:
            from tests.support.node import served

            flags = ["--log-level", "info", *args.sycri_flag]
            variants = [("sycri", {})]
            for v in args.variant:
                name, kv = v.split(":", 1)
                variants.append((name, dict([kv.split("=", 1)])))
            with contextlib.ExitStack() as stack:
                for i, (name, env) in enumerate(variants):
                    server, _net = stack.enter_context(served(work / f"s{i}", flags=flags, env=env))
                    assert server.proc is not None
                    stubs[name] = (server.proc.pid, server.runtime())
                over_grpc(stubs, args.rounds)
    finally:
        for ch in channels:
            ch.close()
        for pid in pids:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        for sock in work.glob("*.sock"):
            sock.unlink()
        work.rmdir() if not any(work.iterdir()) else None
    with_d, alone = asyncio.run(_direct(20000))
    print("\n## The Dispatcher without gRPC (best of 5 x 20,000 calls)\n")
    print(f"Version through the Dispatcher, serialised: {with_d:.1f} µs per call")
    print(f"the handler alone, serialised:              {alone:.1f} µs per call")
    print(f"the Dispatcher's own cost:                  {with_d - alone:.1f} µs per call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
