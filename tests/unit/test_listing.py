"""Stream* RPCs answer exactly what their List counterparts answer, in batches."""

from __future__ import annotations

from sycri.api import api_pb2
from sycri.cri import listing, stats
from sycri.server import handlers

from tests.support.aio import run_async

SEEN: list = []


async def list_containers(node, request: api_pb2.ListContainersRequest):
    SEEN.append(request)
    items = [
        api_pb2.Container(id=f"c{i}", labels={"tier": "web" if i % 2 else "db"}) for i in range(5)
    ]
    sel = dict(request.filter.label_selector)
    return api_pb2.ListContainersResponse(
        containers=[c for c in items if all(c.labels.get(k) == v for k, v in sel.items())]
    )


@run_async
async def test_stream_sends_the_list_in_batches(monkeypatch):
    monkeypatch.setattr(stats, "STREAM_BATCH", 2)
    h = listing.stream_variants({"ListContainers": list_containers})
    assert set(h) == {"StreamContainers"}
    got = [m async for m in h["StreamContainers"](None, api_pb2.StreamContainersRequest())]
    assert [len(m.containers) for m in got] == [2, 2, 1]
    assert [c.id for m in got for c in m.containers] == [f"c{i}" for i in range(5)]


@run_async
async def test_stream_passes_the_filter():
    h = listing.stream_variants({"ListContainers": list_containers})["StreamContainers"]
    req = api_pb2.StreamContainersRequest(
        filter=api_pb2.ContainerFilter(label_selector={"tier": "web"})
    )
    got = [c.id for m in [m async for m in h(None, req)] for c in m.containers]
    assert got == ["c1", "c3"]
    assert SEEN[-1].filter.label_selector["tier"] == "web"


def test_existing_stream_handlers_are_kept_and_missing_lists_add_nothing():
    own = object()
    h = listing.stream_variants({"ListContainers": list_containers, "StreamContainers": own})
    assert h == {}
    assert listing.stream_variants({}) == {}


def test_server_serves_stream_variants_of_its_lists():
    hs = handlers()
    for name, pair in listing.PAIRS.items():
        assert (name in hs) == (pair.list_rpc in hs)
