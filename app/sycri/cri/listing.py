"""Stream* variants of the List RPCs (KEP-5825), built from the List handlers.

A Stream RPC takes the same filter as its List counterpart and sends the same items,
in batches, so a node with thousands of objects never hits the gRPC message limit.
Deriving them from the List handlers keeps the two answers identical by construction.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from google.protobuf.message import Message

from sycri.api import api_pb2
from sycri.cri.service import Handler
from sycri.cri.stats import batches


@dataclass(frozen=True)
class Pair:
    list_rpc: str
    list_request: type[Message]
    list_field: str
    stream_response: type[Message]
    stream_field: str


PAIRS = {
    "StreamPodSandboxes": Pair(
        "ListPodSandbox",
        api_pb2.ListPodSandboxRequest,
        "items",
        api_pb2.StreamPodSandboxesResponse,
        "pod_sandboxes",
    ),
    "StreamContainers": Pair(
        "ListContainers",
        api_pb2.ListContainersRequest,
        "containers",
        api_pb2.StreamContainersResponse,
        "containers",
    ),
    "StreamImages": Pair(
        "ListImages",
        api_pb2.ListImagesRequest,
        "images",
        api_pb2.StreamImagesResponse,
        "images",
    ),
}


def streamed(pair: Pair, list_handler: Handler) -> Handler:
    """A server-streaming handler that answers what ``list_handler`` answers."""

    async def handler(node: object, request: Message) -> AsyncIterator[Message]:
        req = pair.list_request()
        if request.HasField("filter"):
            # every List*Request of the table has a ``filter``; Message does not say so
            req.filter.CopyFrom(request.filter)  # type: ignore[attr-defined]
        resp = await list_handler(node, req)
        for chunk in batches(list(getattr(resp, pair.list_field))):
            yield pair.stream_response(**{pair.stream_field: chunk})

    handler.__name__ = f"stream_from_{pair.list_rpc}"
    return handler


def stream_variants(handlers: dict[str, Handler]) -> dict[str, Handler]:
    """Stream handlers for every List handler present that has no Stream handler yet."""
    return {
        name: streamed(pair, handlers[pair.list_rpc])
        for name, pair in PAIRS.items()
        if pair.list_rpc in handlers and name not in handlers
    }
