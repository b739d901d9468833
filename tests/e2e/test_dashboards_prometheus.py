"""Every dashboard query, evaluated by Debian's real Prometheus scraping a live sycri.

The test drives sycri (RPCs, and through ``WORKLOAD`` rounds of real work: pulls from
the test registry, one that fails, a pod with containers that complete, fail, are
OOM-killed or cannot start) while Prometheus scrapes it every second, then evaluates each panel query
the way Grafana sends it (variables substituted, with this node and instance chosen).

Which queries must return data is decided from what happened, never from a fixed
list alone: a query is *required* when every metric selector in it has a sample
above zero in Prometheus (something was counted, observed or exists) and every
counter in it grew within the last minute (what a rate needs). A required
query passes only if it returns at least one non-NaN value; one that returns
nothing fails the test. Queries about things that did not happen yet (no pull, no
pod) are reported as not checked. A floor of RPC and process panels must always be
required, so the test cannot pass by checking nothing.
"""

from __future__ import annotations

import contextlib
import functools
import math
import secrets
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable

import grpc
import pytest
from sycri.api import api_pb2

from tests.support import workload
from tests.support.server import SycriServer
from tests.support.telemetry import (
    Prometheus,
    dashboards,
    expand,
    metrics_url,
    panel_queries,
    selectors,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.root]

# Panels whose data the current server always produces; the test fails if any of
# them is not required and passing.
FLOOR = {
    "RPC rate by method",
    "RPC errors by method and code",
    "RPC error ratio",
    "RPC latency",
    "RPC latency p99 by method",
    "CPU",
    "Resident memory",
    "Open file descriptors",
    "Versions",
}
# Panels the real work below must make checkable (their counters moved during the test).
WORKED = {
    "Pulls by source and result",
    "Pulls in progress",
    "Pull failure ratio",
    "Download rate",
    "Layers downloaded vs reused",
    "Pull duration (successful pulls)",
    "SIF conversion duration",
    "Image store size",
    "Images stored",
    "Pods by state",
    "Containers by state",
    "Container starts",
    "Container start failures",
    "Command failures by command",
    "OOM kills",
    "Container exits by reason",
    "Commands run by command",
    "Command latency p99 by command",
    "CNI operations by result",
    "CNI latency",
}


def _rpc_traffic(server: SycriServer) -> None:
    rt = server.runtime()
    rt.Version(api_pb2.VersionRequest())
    rt.Status(api_pb2.StatusRequest())
    rt.RuntimeConfig(api_pb2.RuntimeConfigRequest())
    # a container that does not exist: an error answer whatever is implemented
    with contextlib.suppress(grpc.RpcError):
        rt.ContainerStatus(api_pb2.ContainerStatusRequest(container_id="e" * 64))


def _inventory_reads(server: SycriServer) -> None:
    """List calls: harmless, and they exercise the pod/container/image indexes once wired."""
    for call in (
        lambda: server.runtime().ListPodSandbox(api_pb2.ListPodSandboxRequest()),
        lambda: server.runtime().ListContainers(api_pb2.ListContainersRequest()),
        lambda: server.images().ListImages(api_pb2.ListImagesRequest()),
    ):
        try:
            call()
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise


def _real_work(registry, node: workload.Node, state: dict) -> None:
    """One round: pull a new image (one layer new, busybox reused after the first round)
    and fail to pull another; replace the previous round's pod by a new one whose
    containers complete, fail, are OOM-killed or cannot start. The last pod stays for
    the queries."""
    ref = node.push(registry, workload.two_layer_image(secrets.token_hex(8)))
    node.pull(ref)
    with contextlib.suppress(grpc.RpcError):
        node.pull(f"{registry.host}/obs/never-pushed:v1")
    if "pod" in state:
        node.remove_pod(state.pop("pod")[0])
    pod = state["pod"] = node.run_pod(f"dash-{secrets.token_hex(3)}")
    ids = [
        node.run(pod, "done", ref, "exit 0"),
        node.run(pod, "failed", ref, "exit 3"),
        node.run(pod, "hog", ref, "tail /dev/zero", memory=workload.OOM_LIMIT),
    ]
    doomed = node.create_unstartable(pod, "doomed", ref)  # a start failure
    with contextlib.suppress(grpc.RpcError):
        node.start(doomed)
    for cid in [*ids, doomed]:
        node.wait_exited(cid)


# What the test does to sycri while Prometheus watches, repeated for a few seconds.
WORKLOAD: list[Callable[[SycriServer], None]] = [_rpc_traffic, _inventory_reads]


def _counter(selector: str) -> bool:
    name = selector.split("{", 1)[0]
    return name.endswith(("_total", "_bucket", "_count", "_sum"))


def _drive(
    server: SycriServer, steps: list, stop: threading.Event, errors: list[BaseException]
) -> None:
    try:
        while not stop.is_set():
            for step in steps:
                step(server)
            time.sleep(0.05)
    except BaseException as exc:  # reported by the test thread
        errors.append(exc)


def test_every_dashboard_query_returns_data_from_prometheus(tmp_path, registry):
    with workload.node(["--metrics-address", "127.0.0.1:0", "--images-keep-layers", "true"]) as n:
        _check_dashboards(tmp_path, n, registry)


def _check_dashboards(tmp_path, n: workload.Node, registry) -> None:
    server = n.server
    prom = stall = stalled = None
    rounds: dict = {}
    work = functools.partial(_real_work, registry, n, rounds)
    try:
        target = urllib.parse.urlsplit(metrics_url(server)).netloc
        node = f"node-{secrets.token_hex(4)}"
        prom = Prometheus(tmp_path / "prometheus", [target], {"node": node})
        wait_until(lambda: prom.scrapes() >= 1, 60, "a first scrape of sycri")
        stop, errors = threading.Event(), []
        steps = [*WORKLOAD, lambda _server: work()]
        driver = threading.Thread(target=_drive, args=(server, steps, stop, errors), daemon=True)
        driver.start()
        try:
            # Rates over 1m need two scrapes seeing the workload; allow a few more.
            wait_until(lambda: prom.scrapes() >= 7, 90, "six more scrapes of sycri")
        finally:
            stop.set()
            driver.join(120)
        assert not errors, errors
        # A pull from a registry that never answers stays in progress while Prometheus looks.
        stall = socket.create_server(("127.0.0.1", 0))
        stalled = server.images().PullImage.future(
            api_pb2.PullImageRequest(
                image=api_pb2.ImageSpec(image=f"127.0.0.1:{stall.getsockname()[1]}/stall/x:v1")
            ),
            timeout=120,
        )
        wait_until(
            lambda: prom.query(f'sycri_image_pulls_in_progress{{node="{node}"}} > 0'),
            30,
            "a scrape during the stalled pull",
        )

        # the dashboards' node and instance variables offer this node and target
        nodes = prom.api("label/node/values", **{"match[]": "sycri_build_info"})
        assert node in nodes
        instances = prom.api(
            "label/instance/values", **{"match[]": f'sycri_build_info{{node=~"{node}"}}'}
        )
        assert instances == [target]

        report = []
        failures = []
        for q in panel_queries():
            promql = expand(q.expr, node=node, instance=target)
            sels = selectors(promql)
            # A counter counted once long ago (a one-off command such as `runc features`)
            # exists but has no rate: the query is required only if it grew in the window.
            required = all(prom.query(f"({s}) > 0") for s in sels) and all(
                prom.query(f"increase({s}[1m]) > 0") for s in sels if _counter(s)
            )
            values = [float(s["value"][1]) for s in prom.query(promql)]
            has_data = any(not math.isnan(v) for v in values)
            status = "data" if has_data else ("empty" if not values else "NaN only")
            report.append((q.label, required, status, values[:3]))
            if required and not has_data:
                failures.append(f"{q.label}: {status}\n    {promql}")

        checked = [label for label, req, status, _ in report if req and status == "data"]
        unchecked = [label for label, req, _, _ in report if not req]
        print("\nchecked (returned data):\n  " + "\n  ".join(checked))
        print("not checked yet (nothing of theirs happened):\n  " + "\n  ".join(unchecked))
        assert not failures, "queries returned no data:\n" + "\n".join(failures)
        print(f"{len(checked)} of {len(report)} queries checked with data")
        required_titles = {label.split(" / ")[1].rsplit(" [", 1)[0] for label in checked}
        assert required_titles >= FLOOR | WORKED, (
            f"not checked: {(FLOOR | WORKED) - required_titles}"
        )
        # a selector that names this node but another instance finds nothing
        q = expand(panel_queries()[0].expr, node=node, instance="10.255.255.1:1")
        assert prom.query(q) == []
    finally:
        if stalled is not None:
            stalled.cancel()
        if stall is not None:
            stall.close()
        if prom is not None:
            prom.close()


def test_dashboards_use_the_rate_window_grafana_provides():
    for board in dashboards().values():
        for panel in board["panels"]:
            for t in panel["targets"]:
                assert "[5m]" not in t["expr"] and "[1m]" not in t["expr"], t["expr"]
