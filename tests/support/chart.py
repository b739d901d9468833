"""Render sycri's Helm chart with the real Helm engine (Helm's Go SDK via helm-python-sdk)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "sycri"
RELEASE = "sycri"
NAMESPACE = "kube-system"

# Value sets an operator would plausibly install with; every test runs on all of them.
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "runtimeclass": {
        "runtimeClass": {"create": True, "overhead": {"cpu": "50m", "memory": "32Mi"}},
    },
    "observability": {
        "metrics": {
            "port": 19810,
            "serviceMonitor": {"enabled": True, "labels": {"release": "kps"}},
        },
        "otel": {
            "endpoint": "http://otel-collector.observability:4317",
            "resourceAttributes": {"deployment.environment": "prod"},
        },
    },
    "mirrors": {
        "registries": {
            "unqualifiedSearchRegistries": ["docker.io", "quay.io"],
            "entries": [
                {
                    "prefix": "docker.io",
                    "location": "registry-1.docker.io",
                    "mirrors": [
                        {"location": "mirror.internal:5000", "insecure": True},
                        {"location": "mirror2.internal"},
                    ],
                },
                {"prefix": "registry.internal:5000", "insecure": True},
                {"prefix": "evil.example.com", "blocked": True},
            ],
        },
        "registryCredentialsSecret": "sycri-pull-credentials",
    },
    "minimal": {
        "nodeAgent": {"enabled": False},
        "metrics": {"enabled": False},
        "serviceAccount": {"create": False},
        "resources": {},
        "tolerations": [],
    },
    "custom-paths": {
        "image": {"repository": "registry.internal/sycri", "digest": "sha256:" + "ab" * 32},
        "paths": {
            "socket": "/var/run/sycri-cri/cri.sock",
            "runDir": "/run/sycri-x",
            "rootDir": "/data/sycri",
            "cniBinDir": "/usr/libexec/cni",
        },
        "config": {
            "cgroupDriver": "cgroupfs",
            "runtimes": {
                "runc": {"binary": "runc"},
                "runc-debug": {"binary": "/usr/sbin/runc", "root": "/run/runc-debug"},
            },
            "images": {"squashfsCompression": "zstd", "maxConcurrentDownloads": 6},
            "log": {"level": "debug", "format": "plain"},
        },
        "nodeSelector": {"sycri.io/install": "true"},
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {"key": "node-role.kubernetes.io/hpc", "operator": "Exists"}
                            ]
                        }
                    ]
                }
            }
        },
        "updateStrategy": {"maxUnavailable": "10%"},
        "terminationGracePeriodSeconds": 60,
    },
}


def render(values: dict[str, Any] | None = None) -> dict[str, str]:
    """Template path -> rendered text, as ``helm template`` would produce it."""
    with helm.Chart.load(CHART) as chart:
        return chart.render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)


def objects(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every Kubernetes object the chart renders for ``values``."""
    out = []
    for path, text in sorted(render(values).items()):
        if path.endswith(".txt"):
            continue
        out.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return out


def notes(values: dict[str, Any] | None = None) -> str:
    return next(t for p, t in render(values).items() if p.endswith("NOTES.txt"))


def is_hook(obj: dict[str, Any]) -> bool:
    return "helm.sh/hook" in (obj.get("metadata", {}).get("annotations") or {})


def one(objs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """The one release object of ``kind`` (Helm hooks, run only at install, upgrade or
    delete, are not part of the release: see ``hook``)."""
    found = [o for o in objs if o["kind"] == kind and not is_hook(o)]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def hook(objs: list[dict[str, Any]], kind: str, event: str) -> dict[str, Any]:
    """The one hook object of ``kind`` that Helm runs on ``event`` (e.g. pre-delete)."""
    found = [
        o
        for o in objs
        if o["kind"] == kind
        and is_hook(o)
        and o["metadata"]["annotations"]["helm.sh/hook"] == event
    ]
    assert len(found) == 1, f"expected one {event} {kind} hook, found {len(found)}"
    return found[0]


def kinds(objs: list[dict[str, Any]]) -> set[str]:
    return {o["kind"] for o in objs}
