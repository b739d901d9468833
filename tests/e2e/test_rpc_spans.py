"""The span tree of RPCs through sycri's real dispatcher, gRPC server and tracing interceptor.

kubelet sends its span in the ``traceparent`` metadata; sycri's server span must be its
child, and everything sycri does inside (child spans, external commands) must hang
below the server span. Spans go to an in-memory exporter.
"""

from __future__ import annotations

import asyncio
import secrets

import grpc
import pytest
from opentelemetry.trace import SpanKind, StatusCode
from sycri import command
from sycri.api import api_pb2, api_pb2_grpc
from sycri.observability import tracing

from tests.support.telemetry import serve_traced

TRACE_ID = secrets.token_hex(16)
PARENT_ID = secrets.token_hex(8)
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


async def pull_like(node, request: api_pb2.PullImageRequest) -> api_pb2.PullImageResponse:
    """Stands in for PullImage until the image service lands: the steps it will trace."""
    with tracing.span("registry.request", **{"http.request.method": "GET"}):
        await command.run(["true"], label="registry-probe")
    with tracing.span("squashfs.build"):
        await command.run(["sh", "-c", "exit 0"], label="mksquashfs")
    return api_pb2.PullImageResponse(image_ref="sha256:" + "0" * 64)


async def failing(node, request):
    from sycri.errors import NotFound

    raise NotFound(f"image {request.image.image!r} not found")


@pytest.fixture
def trace_md():
    return (("traceparent", TRACEPARENT),)


def test_server_span_is_a_child_of_the_incoming_traceparent(tmp_path, trace_md):
    async def body(ch):
        await api_pb2_grpc.RuntimeServiceStub(ch).Version(
            api_pb2.VersionRequest(), metadata=trace_md
        )

    spans = asyncio.run(serve_traced(tmp_path, body))
    (sp,) = [s for s in spans if s.name == "/runtime.v1.RuntimeService/Version"]
    assert sp.kind == SpanKind.SERVER
    assert format(sp.context.trace_id, "032x") == TRACE_ID
    assert format(sp.parent.span_id, "016x") == PARENT_ID
    assert sp.parent.is_remote
    assert sp.attributes["rpc.method"] == "Version"


def test_kubelets_decision_not_to_sample_is_followed(tmp_path):
    unsampled = (("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-00"),)

    async def body(ch):
        stub = api_pb2_grpc.RuntimeServiceStub(ch)
        await stub.Version(api_pb2.VersionRequest(), metadata=unsampled)
        await stub.Status(api_pb2.StatusRequest())  # sampled: proves spans still flow

    spans = asyncio.run(serve_traced(tmp_path, body))
    assert [s.name for s in spans if s.kind == SpanKind.SERVER] == [
        "/runtime.v1.RuntimeService/Status"
    ]


def test_without_traceparent_the_server_span_is_a_root(tmp_path):
    async def body(ch):
        await api_pb2_grpc.RuntimeServiceStub(ch).Version(api_pb2.VersionRequest())

    (sp,) = asyncio.run(serve_traced(tmp_path, body))
    assert sp.parent is None


def test_pull_span_tree_has_steps_and_commands_below_the_server_span(tmp_path, trace_md):
    async def body(ch):
        await api_pb2_grpc.ImageServiceStub(ch).PullImage(
            api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image="busybox")), metadata=trace_md
        )

    spans = asyncio.run(serve_traced(tmp_path, body, handlers={"PullImage": pull_like}))
    by_name = {s.name: s for s in spans}
    root = by_name["/runtime.v1.ImageService/PullImage"]
    assert format(root.parent.span_id, "016x") == PARENT_ID
    assert {s.context.trace_id for s in spans} == {int(TRACE_ID, 16)}
    parent_of = {s.name: s.parent.span_id for s in spans}
    assert parent_of["registry.request"] == root.context.span_id
    assert parent_of["squashfs.build"] == root.context.span_id
    assert parent_of["exec registry-probe"] == by_name["registry.request"].context.span_id
    assert parent_of["exec mksquashfs"] == by_name["squashfs.build"].context.span_id


def test_a_failed_rpc_has_an_error_span_with_code_and_message(tmp_path, trace_md):
    async def body(ch):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await api_pb2_grpc.ImageServiceStub(ch).ImageStatus(
                api_pb2.ImageStatusRequest(image=api_pb2.ImageSpec(image="nope")),
                metadata=trace_md,
            )
        assert err.value.code() == grpc.StatusCode.NOT_FOUND

    spans = asyncio.run(serve_traced(tmp_path, body, handlers={"ImageStatus": failing}))
    (sp,) = [s for s in spans if s.name.endswith("/ImageStatus")]
    assert sp.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    (event,) = [
        e for e in sp.events if e.attributes.get("exception.type", "").endswith(".NotFound")
    ]
    assert event.attributes["exception.message"] == "image 'nope' not found"
    # NOT_FOUND is the client's problem: by the conventions the status stays unset.
    assert sp.status.status_code != StatusCode.ERROR


def test_a_server_fault_is_an_error_span(tmp_path, trace_md):
    async def crash(node, request):
        raise RuntimeError("store index corrupt")

    async def body(ch):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await api_pb2_grpc.ImageServiceStub(ch).ListImages(
                api_pb2.ListImagesRequest(), metadata=trace_md
            )
        assert err.value.code() == grpc.StatusCode.INTERNAL

    spans = asyncio.run(serve_traced(tmp_path, body, handlers={"ListImages": crash}))
    (sp,) = [s for s in spans if s.name.endswith("/ListImages")]
    assert sp.status.status_code == StatusCode.ERROR
    assert "store index corrupt" in sp.status.description
    assert any(e.attributes.get("exception.type") == "RuntimeError" for e in sp.events)


def test_unimplemented_rpcs_are_error_spans(tmp_path, trace_md):
    async def body(ch):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await api_pb2_grpc.RuntimeServiceStub(ch).CheckpointContainer(
                api_pb2.CheckpointContainerRequest(container_id="x"), metadata=trace_md
            )
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED

    spans = asyncio.run(serve_traced(tmp_path, body))
    (sp,) = [s for s in spans if s.name.endswith("/CheckpointContainer")]
    assert sp.status.status_code == StatusCode.ERROR
    assert sp.attributes["rpc.grpc.status_code"] == grpc.StatusCode.UNIMPLEMENTED.value[0]
