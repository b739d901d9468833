"""The node agent: sycri's own voice in the Kubernetes API.

With in-cluster credentials it labels and annotates the Node it runs on (version,
runtime handlers, SIF support) and posts Events about failed pulls and conversions
against the pod that asked. Without credentials it does nothing and says so once.

Every API call happens on one worker thread fed by a bounded queue, with short
request timeouts: a slow or absent API server never blocks a CRI call, and an error
from it is logged, never raised into the CRI server.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kubernetes.client import ApiClient, CoreV1Api

from sycri import __version__
from sycri.config import Config
from sycri.k8s import node_info

log = logging.getLogger("sycri.k8s")

TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount/token"
CA_PATH = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
NODE_NAME_ENV = "NODE_NAME"  # set by the chart from the Downward API (spec.nodeName)

REQUEST_TIMEOUT = (5.0, 15.0)  # connect, read
QUEUE_LIMIT = 256
REGISTER_RETRY_MAX = 300.0
# Repeats of one failure (kubelet retries pulls with back-off) bump the count of the
# event already posted instead of flooding the pod's event list.
AGGREGATE_SECONDS = 600.0
AGGREGATE_KEYS = 512
MESSAGE_LIMIT = 1024

REASON_PULL = "SycriPullFailed"
REASON_CONVERT = "SycriConversionFailed"


@dataclass(frozen=True)
class PodRef:
    """The pod an event is about, as kubelet named it in the CRI request."""

    namespace: str
    name: str
    uid: str


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _clip(text: str, limit: int = MESSAGE_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


class NodeAgent:
    """Registers this node and reports pod-level failures; a no-op when disabled.

    Call :meth:`start` once the CRI socket serves and :meth:`close` at shutdown. The
    reporting methods return at once; their work runs on the agent's own thread.
    """

    def __init__(
        self,
        api_client: ApiClient | None,
        node_name: str,
        cfg: Config,
        *,
        clock: Callable[[], float] = time.monotonic,
        retry_delay: float = 1.0,
        queue_limit: int = QUEUE_LIMIT,
    ) -> None:
        self.node_name = node_name
        self.enabled = api_client is not None and bool(node_name)
        self._cfg = cfg
        self._api_client = api_client
        self._clock = clock
        # None stops the worker
        self._queue: queue.Queue[Callable[[], None] | None] = queue.Queue(maxsize=queue_limit)
        self._thread: threading.Thread | None = None
        self._registered = threading.Event()
        self._retry_delay = retry_delay
        self._retry_at = 0.0
        self._recent: OrderedDict[tuple[str, ...], tuple[str, int, float]] = OrderedDict()
        self._dropped = 0
        self._v1: CoreV1Api | None = None
        if api_client is not None:
            from kubernetes import client

            self._v1 = client.CoreV1Api(api_client)

    # --- construction ---------------------------------------------------------------

    @classmethod
    def disabled(cls, cfg: Config | None = None) -> NodeAgent:
        return cls(None, "", cfg or Config())

    @classmethod
    def from_environment(
        cls,
        cfg: Config,
        environ: Mapping[str, str] | None = None,
        token_path: str | None = None,
        ca_path: str | None = None,
        retry_delay: float = 1.0,
        queue_limit: int = QUEUE_LIMIT,
    ) -> NodeAgent:
        """The agent with in-cluster credentials, or a disabled one (logged once, here)."""
        environ = os.environ if environ is None else environ
        node_name = environ.get(NODE_NAME_ENV, "")
        if not environ.get("KUBERNETES_SERVICE_HOST"):  # not in a pod: skip the client import
            log.info("not running in a Kubernetes pod: node labels and events are off")
            return cls.disabled(cfg)
        try:  # an optional extra: sycri[node-agent]
            from kubernetes import client
            from kubernetes.config.config_exception import ConfigException
            from kubernetes.config.incluster_config import InClusterConfigLoader
        except ImportError:
            log.warning(
                "the Kubernetes client is not installed (sycri[node-agent]): "
                "node labels and events are off"
            )
            return cls.disabled(cfg)

        configuration = client.Configuration()
        try:
            # kubernetes' config loaders carry no annotations
            InClusterConfigLoader(  # type: ignore[no-untyped-call]
                token_filename=token_path or TOKEN_PATH,
                cert_filename=ca_path or CA_PATH,
                environ=environ,
            ).load_and_set(configuration)
        except ConfigException as exc:
            log.info(
                "no in-cluster Kubernetes credentials (%s): node labels and events are off", exc
            )
            return cls.disabled(cfg)
        if not node_name:
            log.info(
                "%s is not set: sycri does not know its Node, node labels and events are off",
                NODE_NAME_ENV,
            )
            return cls.disabled(cfg)
        return cls(
            client.ApiClient(configuration),
            node_name,
            cfg,
            retry_delay=retry_delay,
            queue_limit=queue_limit,
        )

    # --- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker thread and queue the node registration."""
        if not self.enabled or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="sycri-node-agent", daemon=True)
        self._thread.start()
        self._submit(self._register)

    def close(self, timeout: float = 2.0) -> None:
        """Let queued work finish for up to ``timeout`` seconds, then stop."""
        if self._thread is None:
            return
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout)
        self._thread.join(timeout)
        self._thread = None
        if self._api_client is not None:
            with contextlib.suppress(Exception):
                self._api_client.close()  # type: ignore[no-untyped-call]  # unannotated upstream

    def wait_registered(self, timeout: float) -> bool:
        """True once the Node carries sycri's labels (for tests and diagnostics)."""
        return self._registered.wait(timeout)

    # --- what the image service calls -------------------------------------------------

    def pull_failed(
        self, pod_namespace: str, pod_name: str, pod_uid: str, image: str, reason: str
    ) -> None:
        """Post a Warning event on the pod that asked for ``image``; returns at once."""
        self._report(PodRef(pod_namespace, pod_name, pod_uid), REASON_PULL, image, reason)

    def conversion_failed(
        self, pod_namespace: str, pod_name: str, pod_uid: str, image: str, reason: str
    ) -> None:
        """Post a Warning event: ``image`` was fetched but could not become a SIF."""
        self._report(PodRef(pod_namespace, pod_name, pod_uid), REASON_CONVERT, image, reason)

    # --- internals ------------------------------------------------------------------

    def _report(self, pod: PodRef, event_reason: str, image: str, detail: str) -> None:
        if not self.enabled or not (pod.namespace and pod.name):
            return
        verb = "pull" if event_reason == REASON_PULL else "convert to SIF"
        message = _clip(f"sycri could not {verb} image {image!r}: {detail}")
        self._submit(lambda: self._post_event(pod, event_reason, image, message))

    def _submit(self, task: Callable[[], None]) -> None:
        try:
            self._queue.put_nowait(task)
        except queue.Full:
            self._dropped += 1
            if self._dropped == 1 or self._dropped % 100 == 0:
                log.warning("Kubernetes API is not keeping up: %d report(s) dropped", self._dropped)

    def _run(self) -> None:
        while True:
            timeout = None
            if not self._registered.is_set():
                timeout = max(0.0, self._retry_at - self._clock())
            try:
                task = self._queue.get(timeout=timeout)
            except queue.Empty:
                task = self._register
            if task is None:
                return
            try:
                task()
            except Exception as exc:  # the API server's trouble is never sycri's crash
                log.warning("Kubernetes API call failed: %s", _describe(exc))

    @property
    def _core(self) -> CoreV1Api:
        """The API; only tasks of an enabled agent (which has one) call it."""
        if self._v1 is None:
            raise RuntimeError("the node agent has no Kubernetes client")
        return self._v1

    def _register(self) -> None:
        if self._registered.is_set():
            return
        try:
            node = self._core.read_node(self.node_name, _request_timeout=REQUEST_TIMEOUT)
            current = (node.metadata.labels if node.metadata else None) or {}
            self._core.patch_node(
                self.node_name,
                node_info.node_patch(self._cfg, __version__, current),
                _content_type="application/merge-patch+json",
                _request_timeout=REQUEST_TIMEOUT,
            )
        except Exception as exc:
            self._retry_at = self._clock() + self._retry_delay
            log.warning(
                "cannot label Node %s (retrying in %.0fs): %s",
                self.node_name,
                self._retry_delay,
                _describe(exc),
            )
            self._retry_delay = min(self._retry_delay * 2, REGISTER_RETRY_MAX)
            return
        self._registered.set()
        log.info("labelled Node %s as a sycri node", self.node_name)

    def _post_event(self, pod: PodRef, event_reason: str, image: str, message: str) -> None:
        from kubernetes import client

        key = (pod.namespace, pod.name, pod.uid, event_reason, image, message)
        now = _now()
        seen = self._recent.get(key)
        if seen is not None and self._clock() - seen[2] < AGGREGATE_SECONDS:
            name, count, _ = seen
            try:
                self._core.patch_namespaced_event(
                    name,
                    pod.namespace,
                    {"count": count + 1, "lastTimestamp": now.isoformat().replace("+00:00", "Z")},
                    _content_type="application/merge-patch+json",
                    _request_timeout=REQUEST_TIMEOUT,
                )
            except client.ApiException as exc:
                if exc.status != 404:  # an expired event is posted afresh below
                    raise
            else:
                self._remember(key, name, count + 1)
                return
        suffix = f".sycri-{uuid.uuid4().hex[:12]}"  # like kubelet's <pod>.<unique> names
        name = pod.name[: 253 - len(suffix)].rstrip(".-") + suffix
        event = client.CoreV1Event(
            api_version="v1",
            kind="Event",
            metadata=client.V1ObjectMeta(name=name, namespace=pod.namespace),
            involved_object=client.V1ObjectReference(
                api_version="v1",
                kind="Pod",
                namespace=pod.namespace,
                name=pod.name,
                uid=pod.uid or None,
            ),
            reason=event_reason,
            message=message,
            type="Warning",
            count=1,
            first_timestamp=now,
            last_timestamp=now,
            source=client.V1EventSource(component="sycri", host=self.node_name),
            reporting_component="sycri",
            reporting_instance=self.node_name,
        )
        self._core.create_namespaced_event(pod.namespace, event, _request_timeout=REQUEST_TIMEOUT)
        self._remember(key, name, 1)

    def _remember(self, key: tuple[str, ...], name: str, count: int) -> None:
        self._recent[key] = (name, count, self._clock())
        self._recent.move_to_end(key)
        while len(self._recent) > AGGREGATE_KEYS:
            self._recent.popitem(last=False)


def _describe(exc: BaseException) -> str:
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", None)
    if status is not None:
        return f"HTTP {status} {reason or ''}".strip()
    return f"{type(exc).__name__}: {exc}"
