"""The container and pod stores' records as the plain records stats need.

``Containers.stats_containers`` and ``SandboxManager.stats_pods`` call these, so the
stores carry no stats code and the stats code knows nothing of how records are kept.
A record's decoded config is cached by id: kubelet asks for stats of every container
every few seconds and the config never changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from sycri.runtime.container.container_store import RUNNING, ContainerRecord
from sycri.runtime.pod.sandbox import READY, Sandbox
from sycri.runtime.stats.stats import ContainerInfo, PodInfo

_labels: dict[str, tuple[dict[str, str], dict[str, str]]] = {}


def _labels_of(rec: ContainerRecord) -> tuple[dict[str, str], dict[str, str]]:
    got = _labels.get(rec.id)
    if got is None:
        cfg = rec.config
        got = (dict(cfg.labels), dict(cfg.annotations))
        if len(_labels) > 20000:  # ids never come back; keep the cache bounded anyway
            _labels.clear()
        _labels[rec.id] = got
    return got


def container_infos(records: Iterable[ContainerRecord]) -> list[ContainerInfo]:
    out = []
    for rec in records:
        labels, annotations = _labels_of(rec)
        out.append(
            ContainerInfo(
                id=rec.id,
                pod_sandbox_id=rec.pod_id,
                name=rec.name,
                attempt=rec.attempt,
                labels=labels,
                annotations=annotations,
                cgroup_path=rec.cgroup_path,
                upper_dir=str(Path(rec.bundle) / "upper") if rec.bundle else "",
                running=rec.state == RUNNING,
                image=rec.image_ref,
            )
        )
    return out


def forget(container_id: str) -> None:
    _labels.pop(container_id, None)


def pod_infos(sandboxes: Iterable[Sandbox]) -> list[PodInfo]:
    out = []
    for sb in sandboxes:
        cfg = sb.config
        out.append(
            PodInfo(
                id=sb.id,
                name=sb.name,
                namespace=sb.namespace,
                uid=sb.uid,
                attempt=sb.attempt,
                labels=dict(cfg.labels),
                annotations=dict(cfg.annotations),
                netns_path=sb.netns_path if sb.net_mode == "POD" else None,
                cgroup_path=sb.cgroup_path,
                ready=sb.state == READY,
            )
        )
    return out
