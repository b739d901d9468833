"""The proxy's own supervisor (hosts without systemd), run for real: it keeps a proxy
serving through kill -9 and SIGHUP, and leaves nothing behind when told to stop."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
from pathlib import Path

import grpc
import pytest
from sycri.api import api_pb2, api_pb2_grpc

from tests.support.proxy import SupervisedProxy


@pytest.fixture
def proxy():
    base = Path("/tmp") / f"pxsup-{secrets.token_hex(4)}"
    p = SupervisedProxy(
        base, f"unix://{base}/absent-runtime.sock", f"unix://{base}/absent-sycri.sock"
    )
    try:
        yield p.start()
    finally:
        p.stop()
        shutil.rmtree(base, ignore_errors=True)


def _version_error(p: SupervisedProxy) -> grpc.RpcError:
    with grpc.insecure_channel(p.endpoint) as ch, pytest.raises(grpc.RpcError) as err:
        api_pb2_grpc.RuntimeServiceStub(ch).Version(api_pb2.VersionRequest(), timeout=10)
    return err.value


def test_an_unreachable_runtime_is_named(proxy):
    err = _version_error(proxy)
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert err.details().startswith(f"runtime ({proxy.runtime_endpoint}) is unavailable")
    with grpc.insecure_channel(proxy.endpoint) as ch:
        rt = api_pb2_grpc.RuntimeServiceStub(ch)
        with pytest.raises(grpc.RpcError) as err2:
            rt.ContainerStatus(api_pb2.ContainerStatusRequest(container_id="abc"), timeout=10)
    assert err2.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "is unavailable" in err2.value.details()


def test_the_supervisor_restarts_a_killed_or_hupped_proxy_and_cleans_up(proxy):
    first = proxy.child_pid()
    assert first is not None
    os.kill(first, signal.SIGKILL)
    second = proxy.wait_serving(not_pid=first)
    assert _version_error(proxy).code() == grpc.StatusCode.UNAVAILABLE  # serving again
    proxy.proc.send_signal(signal.SIGHUP)  # an upgrade: a new proxy at once
    third = proxy.wait_serving(not_pid=second)
    assert third not in (first, second)
    assert int(proxy.pidfile.read_text()) == proxy.proc.pid
    proxy.proc.send_signal(signal.SIGTERM)
    assert proxy.proc.wait(30) == 0
    with pytest.raises(ProcessLookupError):
        os.kill(third, 0)
    assert not proxy.socket.exists()
    assert not proxy.pidfile.exists()


def test_a_request_that_does_not_parse_is_refused_naming_it(proxy):
    with grpc.insecure_channel(proxy.endpoint) as ch:
        call = ch.unary_unary("/runtime.v1.RuntimeService/RunPodSandbox")
        with pytest.raises(grpc.RpcError) as err:
            call(b"\xff\xff\xff", timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == (
        "/runtime.v1.RuntimeService/RunPodSandbox: the request is not a "
        "runtime.v1.RunPodSandboxRequest"
    )
    assert _version_error(proxy).code() == grpc.StatusCode.UNAVAILABLE  # still serving
