"""Prometheus metrics: every metric sycri exports is defined here, once.

Names follow the Prometheus conventions (``sycri_`` prefix, base units, ``_total`` for
counters, ``_seconds`` and ``_bytes`` suffixes). The metrics live in their own
registry (:data:`REGISTRY`) with the standard process and Python collectors, served
over HTTP by :func:`serve_http`.

Domain code records events through the small functions below (``pull()``,
``container_started()``, ...) rather than touching metric objects, so names and
labels stay consistent. Counts of things that exist (pods, containers, images) are
not gauges updated everywhere: :data:`inventory` asks the node components for them at
scrape time. Label values are always from small fixed sets, never ids or names from
requests, so cardinality stays bounded.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TypeVar
from wsgiref.simple_server import WSGIServer

import grpc
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from sycri import __version__

log = logging.getLogger("sycri.metrics")
_T = TypeVar("_T")


# The ``*_created`` timestamp series double the series count and no dashboard uses them.
disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated in prometheus_client
REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

# Fixed label values; anything else is folded into "other" so a bug or a hostile
# request can never create unbounded series.
SOURCES = ("docker", "oras", "library", "local")
RESULTS = ("success", "failure")
LAYER_RESULTS = ("downloaded", "reused")
EXIT_REASONS = ("Completed", "Error", "OOMKilled", "ContainerCannotRun", "Unknown")
CNI_OPERATIONS = ("ADD", "DEL", "CHECK", "STATUS", "GC")
POD_STATES = ("ready", "notready")
CONTAINER_STATES = ("created", "running", "exited", "unknown")

# Latency buckets: RPCs range from sub-millisecond List calls to minute-long pulls.
RPC_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
)
PULL_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200)
COMMAND_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

BUILD_INFO = Info("sycri_build", "sycri's version (always 1).", registry=REGISTRY)
BUILD_INFO.info({"version": __version__})

# -- RPCs ---------------------------------------------------------------------------
RPC_REQUESTS = Counter(
    "sycri_rpc_requests_total",
    "CRI RPCs answered, by method and gRPC status code.",
    ["method", "code"],
    registry=REGISTRY,
)
RPC_DURATION = Histogram(
    "sycri_rpc_duration_seconds",
    "Time to answer a CRI RPC, by method.",
    ["method"],
    buckets=RPC_BUCKETS,
    registry=REGISTRY,
)
RPC_IN_FLIGHT = Gauge(
    "sycri_rpc_requests_in_flight",
    "CRI RPCs being answered now, by method.",
    ["method"],
    registry=REGISTRY,
)

# -- images -------------------------------------------------------------------------
IMAGE_PULLS = Counter(
    "sycri_image_pulls_total",
    "Image pulls finished, by source transport and result.",
    ["source", "result"],
    registry=REGISTRY,
)
IMAGE_PULL_DURATION = Histogram(
    "sycri_image_pull_duration_seconds",
    "Time from the start of a pull to a stored SIF (or failure), by source and result.",
    ["source", "result"],
    buckets=PULL_BUCKETS,
    registry=REGISTRY,
)
IMAGE_PULLS_IN_PROGRESS = Gauge(
    "sycri_image_pulls_in_progress",
    "Image pulls under way now, by source (shared downloads count once).",
    ["source"],
    registry=REGISTRY,
)
IMAGE_DOWNLOADED = Counter(
    "sycri_image_downloaded_bytes_total",
    "Bytes received from registries and libraries (compressed, as on the wire), by source.",
    ["source"],
    registry=REGISTRY,
)
IMAGE_LAYERS = Counter(
    "sycri_image_layers_total",
    "Image layers needed by pulls: downloaded, or reused from a local copy.",
    ["result"],
    registry=REGISTRY,
)
IMAGE_CONVERSION_DURATION = Histogram(
    "sycri_image_conversion_duration_seconds",
    "Time to turn unpacked layers into a SIF (squashfs build and SIF write).",
    buckets=PULL_BUCKETS,
    registry=REGISTRY,
)

# -- runtime ------------------------------------------------------------------------
CONTAINER_STARTS = Counter(
    "sycri_container_starts_total",
    "Containers started successfully.",
    registry=REGISTRY,
)
CONTAINER_START_FAILURES = Counter(
    "sycri_container_start_failures_total",
    "Container starts that failed.",
    registry=REGISTRY,
)
CONTAINER_OOM_KILLS = Counter(
    "sycri_container_oom_kills_total",
    "Containers whose process was killed by the kernel OOM killer.",
    registry=REGISTRY,
)
CONTAINER_EXITS = Counter(
    "sycri_container_exits_total",
    "Containers that exited, by CRI reason (Completed, Error, OOMKilled, ...).",
    ["reason"],
    registry=REGISTRY,
)
CONTAINERS_QUARANTINED = Gauge(
    "sycri_containers_quarantined",
    "Containers whose record could not be read at start-up: left running, untouched.",
    registry=REGISTRY,
)
CONTAINER_STATUS_REBUILT = Counter(
    "sycri_container_status_unreadable_total",
    "Container status records that could not be read and were rebuilt from runc.",
    registry=REGISTRY,
)
EVENTS_DROPPED = Counter(
    "sycri_container_events_dropped_total",
    "Container events not delivered because a GetContainerEvents client fell behind.",
    registry=REGISTRY,
)
COMMAND_DURATION = Histogram(
    "sycri_command_duration_seconds",
    "Run time of external commands (runc, conmon, tar2sqfs, CNI plugins), by command.",
    ["command"],
    buckets=COMMAND_BUCKETS,
    registry=REGISTRY,
)
COMMAND_FAILURES = Counter(
    "sycri_command_failures_total",
    "External commands that exited non-zero, timed out or were cancelled, by command.",
    ["command"],
    registry=REGISTRY,
)
CNI_OPS = Counter(
    "sycri_cni_operations_total",
    "CNI operations on pod networks, by operation (ADD, DEL, CHECK) and result.",
    ["operation", "result"],
    registry=REGISTRY,
)
CNI_DURATION = Histogram(
    "sycri_cni_operation_duration_seconds",
    "Time of a CNI operation over the whole plugin chain, by operation.",
    ["operation"],
    buckets=COMMAND_BUCKETS,
    registry=REGISTRY,
)


def _zero_init() -> None:
    """Create every fixed label combination at 0, so rates and ratios exist before events."""
    for source in SOURCES:
        IMAGE_DOWNLOADED.labels(source)
        IMAGE_PULLS_IN_PROGRESS.labels(source)
        for result in RESULTS:
            IMAGE_PULLS.labels(source, result)
    for result in LAYER_RESULTS:
        IMAGE_LAYERS.labels(result)
    for reason in EXIT_REASONS:
        CONTAINER_EXITS.labels(reason)
    for op in ("ADD", "DEL"):
        for result in RESULTS:
            CNI_OPS.labels(op, result)


_zero_init()


def _one_of(value: str, allowed: tuple[str, ...], fallback: str) -> str:
    return value if value in allowed else fallback


# -- the RPC and command observers ---------------------------------------------------
# Subscriptions that stay open for hours: their lifetime is not a latency.
SUBSCRIPTIONS = frozenset({"GetContainerEvents"})


class RpcMetrics:
    """An ``RpcObserver`` (see ``sycri.cri.service``): counts, times and tracks RPCs.

    The labelled children are looked up once per method (and code), not per call:
    ``labels()`` takes a lock and builds a tuple each time, which was most of the
    Dispatcher's own cost per call.
    """

    def __init__(self) -> None:
        self._methods: dict[str, _RpcChildren] = {}

    def _of(self, method: str) -> _RpcChildren:
        children = self._methods.get(method)
        if children is None:
            children = self._methods[method] = _RpcChildren(method)
        return children

    def started(self, method: str) -> None:
        self._of(method).in_flight.inc()

    def finished(self, method: str, code: grpc.StatusCode, seconds: float) -> None:
        children = self._of(method)
        children.in_flight.dec()
        children.answered(code).inc()
        if children.duration is not None:
            children.duration.observe(seconds)


class _RpcChildren:
    """One method's metric children."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.in_flight = RPC_IN_FLIGHT.labels(method)
        self.duration = None if method in SUBSCRIPTIONS else RPC_DURATION.labels(method)
        self._codes: dict[grpc.StatusCode, Counter] = {}

    def answered(self, code: grpc.StatusCode) -> Counter:
        child = self._codes.get(code)
        if child is None:
            child = self._codes[code] = RPC_REQUESTS.labels(self.method, code.name)
        return child


class CommandMetrics:
    """A ``CommandObserver`` (see ``sycri.command``): latency and failures by command."""

    def command_finished(self, name: str, ok: bool, seconds: float) -> None:
        record_command(name, ok, seconds)


def record_command(name: str, ok: bool, seconds: float) -> None:
    """Count a program run outside ``command.run`` (a daemon child such as conmon)."""
    COMMAND_DURATION.labels(name).observe(seconds)
    if not ok:
        COMMAND_FAILURES.labels(name).inc()


# -- image events ---------------------------------------------------------------------
@dataclass
class Pull:
    """One pull being measured; see :func:`pull`."""

    source: str

    def downloaded(self, nbytes: int) -> None:
        """Count bytes as they arrive from the network (call per chunk or per layer)."""
        image_downloaded(self.source, nbytes)

    def layer(self, reused: bool) -> None:
        """Count one layer, fetched over the network or found locally."""
        image_layer(reused)


@contextlib.contextmanager
def pull(source: str) -> Iterator[Pull]:
    """Measure one image pull: in progress while inside, then counted and timed.

    Leaving by an exception counts a failure. ``source`` is the transport
    (docker, oras, library, local).
    """
    source = _one_of(source, SOURCES, "other")
    IMAGE_PULLS_IN_PROGRESS.labels(source).inc()
    t0 = time.monotonic()
    result = "failure"
    try:
        yield Pull(source)
        result = "success"
    finally:
        IMAGE_PULLS_IN_PROGRESS.labels(source).dec()
        record_pull(source, result == "success", time.monotonic() - t0)


def record_pull(source: str, ok: bool, seconds: float) -> None:
    """Count a finished pull (for code that cannot use :func:`pull`)."""
    source = _one_of(source, SOURCES, "other")
    result = "success" if ok else "failure"
    IMAGE_PULLS.labels(source, result).inc()
    IMAGE_PULL_DURATION.labels(source, result).observe(seconds)


def image_downloaded(source: str, nbytes: int) -> None:
    if nbytes > 0:
        IMAGE_DOWNLOADED.labels(_one_of(source, SOURCES, "other")).inc(nbytes)


def image_layer(reused: bool) -> None:
    IMAGE_LAYERS.labels("reused" if reused else "downloaded").inc()


@contextlib.contextmanager
def conversion() -> Iterator[None]:
    """Time one conversion of unpacked layers to a SIF (only successful ones are observed)."""
    t0 = time.monotonic()
    yield
    IMAGE_CONVERSION_DURATION.observe(time.monotonic() - t0)


# -- runtime events -------------------------------------------------------------------
def container_started() -> None:
    CONTAINER_STARTS.inc()


def container_start_failed() -> None:
    CONTAINER_START_FAILURES.inc()


def container_exited(reason: str) -> None:
    """Count an exit by its CRI reason; an OOMKilled exit also counts an OOM kill."""
    reason = _one_of(reason, EXIT_REASONS, "Unknown")
    CONTAINER_EXITS.labels(reason).inc()
    if reason == "OOMKilled":
        CONTAINER_OOM_KILLS.inc()


def containers_quarantined(count: int) -> None:
    CONTAINERS_QUARANTINED.set(count)


def container_status_unreadable() -> None:
    CONTAINER_STATUS_REBUILT.inc()


def event_dropped(count: int = 1) -> None:
    EVENTS_DROPPED.inc(count)


@contextlib.contextmanager
def cni_operation(operation: str) -> Iterator[None]:
    """Count and time one CNI operation (ADD, DEL, CHECK) over the plugin chain."""
    operation = _one_of(operation.upper(), CNI_OPERATIONS, "other")
    t0 = time.monotonic()
    result = "failure"
    try:
        yield
        result = "success"
    finally:
        CNI_OPS.labels(operation, result).inc()
        CNI_DURATION.labels(operation).observe(time.monotonic() - t0)


# -- what exists, read at scrape time ---------------------------------------------------
@dataclass(frozen=True)
class StoreStats:
    images: int
    bytes: int


class Inventory(Collector):
    """Gauges computed at scrape time from the node components that own the state.

    The components register a callable each (``pods``, ``containers``, ``images``);
    a metric whose source is not registered is simply absent. A source that raises
    is logged and skipped, so a scrape never fails because of one component.
    Sources run in the metrics HTTP server's thread, not the event loop: they must
    only read a snapshot of in-memory state (no awaiting, no disk walk per scrape).
    """

    def __init__(self) -> None:
        self.pods: Callable[[], Mapping[str, int]] | None = None
        self.containers: Callable[[], Mapping[str, int]] | None = None
        self.images: Callable[[], StoreStats] | None = None

    def reset(self) -> None:
        self.pods = self.containers = self.images = None

    def describe(self) -> list[Metric]:
        return []  # computed at scrape time; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        by_state = (
            ("sycri_pod_sandboxes", "Pod sandboxes on this node, by state.", self.pods, POD_STATES),
            (
                "sycri_containers",
                "Containers on this node, by state.",
                self.containers,
                CONTAINER_STATES,
            ),
        )
        for name, doc, source, states in by_state:
            counts = self._read(name, source)
            if counts is None:
                continue
            family = GaugeMetricFamily(name, doc, labels=["state"])
            for state in states:
                family.add_metric([state], counts.get(state, 0))
            yield family
        stats = self._read("images", self.images)
        if stats is not None:
            yield GaugeMetricFamily(
                "sycri_image_store_images", "Images in the image store.", value=stats.images
            )
            yield GaugeMetricFamily(
                "sycri_image_store_bytes",
                "Bytes used by the image store (SIF files and blobs).",
                value=stats.bytes,
            )

    @staticmethod
    def _read(name: str, source: Callable[[], _T] | None) -> _T | None:
        if source is None:
            return None
        try:
            return source()
        except Exception:
            log.exception("reading %s for metrics failed", name)
            return None


inventory = Inventory()
REGISTRY.register(inventory)


# -- the HTTP endpoint ----------------------------------------------------------------
@dataclass
class MetricsServer:
    """The running ``/metrics`` endpoint; :attr:`port` is the bound one (useful with :0)."""

    httpd: WSGIServer
    host: str

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def split_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT``, ``:PORT`` for all addresses) as host and port."""
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


def serve_http(address: str) -> MetricsServer | None:
    """Serve :data:`REGISTRY` on ``address``; ``None`` when the address is empty (off)."""
    if not address:
        return None
    host, port = split_address(address)
    httpd, _thread = start_http_server(port, addr=host, registry=REGISTRY)
    server = MetricsServer(httpd, host)
    log.info("metrics on %s", server.url)
    return server
