"""The container event bus: fan-out, bounded buffers, drop accounting, threads."""

from __future__ import annotations

import asyncio
import threading

import pytest
from sycri.runtime.events import ContainerEvent, ContainerEventType, EventBus

from tests.support.aio import run_async


def ev(n: int, kind: ContainerEventType = ContainerEventType.STARTED) -> ContainerEvent:
    return ContainerEvent(container_id=f"c{n}", type=kind, pod_sandbox_id="p")


@run_async
async def test_every_subscriber_gets_every_event_in_order():
    bus = EventBus(buffer=10)
    with bus.subscribe() as a, bus.subscribe() as b:
        for i in range(5):
            bus.publish(ev(i))
        got_a = [(await a.get()).container_id for _ in range(5)]
        got_b = [(await b.get()).container_id for _ in range(5)]
    assert got_a == got_b == [f"c{i}" for i in range(5)]
    assert bus.subscribers == 0 and bus.dropped_total == 0


@run_async
async def test_slow_subscriber_loses_oldest_and_never_blocks_publisher():
    bus = EventBus(buffer=3)
    with bus.subscribe() as slow, bus.subscribe(buffer=100) as fast:
        for i in range(10):
            bus.publish(ev(i))  # returns at once: nobody is reading yet
        assert slow.dropped == 7 and fast.dropped == 0
        assert bus.dropped_total == 7 and bus.published == 10
        assert [(await slow.get()).container_id for _ in range(3)] == ["c7", "c8", "c9"]
        assert fast.pending() == 10


@run_async
async def test_subscriber_wakes_when_an_event_arrives():
    bus = EventBus()
    with bus.subscribe() as sub:
        waiter = asyncio.create_task(sub.get())
        await asyncio.sleep(0.01)
        assert not waiter.done()
        bus.publish(ev(1, ContainerEventType.STOPPED))
        got = await asyncio.wait_for(waiter, 1)
    assert got.type == ContainerEventType.STOPPED


@run_async
async def test_publish_from_another_thread():
    bus = EventBus()
    with bus.subscribe() as sub:
        t = threading.Thread(target=lambda: [bus.publish(ev(i)) for i in range(3)])
        t.start()
        got = [(await asyncio.wait_for(sub.get(), 1)).container_id for _ in range(3)]
        t.join()
    assert got == ["c0", "c1", "c2"]


@run_async
async def test_close_ends_iteration_and_unsubscribes():
    bus = EventBus()
    sub = bus.subscribe()
    bus.publish(ev(1))

    async def drain():
        return [e.container_id async for e in sub]

    task = asyncio.create_task(drain())
    await asyncio.sleep(0.01)
    sub.close()
    assert await asyncio.wait_for(task, 1) == ["c1"]
    assert bus.subscribers == 0
    bus.publish(ev(2))  # nobody to deliver to, nothing dropped
    assert bus.dropped_total == 0


@run_async
async def test_snapshot_is_taken_at_publish_time_once():
    state = {"status": "running"}
    calls = []

    def snap(e):
        calls.append(e.container_id)
        return dict(state)

    bus = EventBus(snapshot=snap)
    bus.publish(ev(0))  # no subscriber: no snapshot work
    with bus.subscribe() as a, bus.subscribe() as b:
        bus.publish(ev(1, ContainerEventType.DELETED))
        state["status"] = "gone"
        ea, eb = await a.get(), await b.get()
    assert ea.snapshot == eb.snapshot == {"status": "running"}
    assert calls == ["c1"]


@run_async
async def test_broken_snapshot_still_delivers():
    def snap(e):
        raise RuntimeError("store locked")

    bus = EventBus(snapshot=snap)
    with bus.subscribe() as sub:
        bus.publish(ev(1))
        got = await sub.get()
    assert got.container_id == "c1" and got.snapshot is None


def test_buffer_must_hold_something():
    with pytest.raises(ValueError):
        EventBus(buffer=0)


@run_async
async def test_drops_are_reported_to_the_metrics_hook():
    told = []
    bus = EventBus(buffer=2, on_drop=told.append)
    with bus.subscribe():
        for i in range(5):
            bus.publish(ev(i))
    assert sum(told) == bus.dropped_total == 3
