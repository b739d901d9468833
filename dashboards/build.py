"""Writes the Grafana dashboards of this directory from one description.

Run ``python dashboards/build.py`` after changing a panel; a unit test fails when the
JSON files differ from what this script writes. Every query selects
``node=~"$node", instance=~"$instance"`` and uses the ``$datasource`` variable, so one
dashboard serves a whole fleet.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'node=~"$node", instance=~"$instance"'
RATE = "$__rate_interval"


def q(expr: str, legend: str = "") -> dict:
    return {"expr": expr, "legendFormat": legend or "__auto"}


def quantiles(metric: str, by: str = "", extra: str = "") -> list[dict]:
    """p50, p90 and p99 of a histogram, optionally split ``by`` labels."""
    labels = f"le, {by}" if by else "le"
    sel = f"{SEL}, {extra}" if extra else SEL
    legend = "{{" + by + "}} " if by else ""
    return [
        q(
            f"histogram_quantile({p}, sum by ({labels}) (rate({metric}_bucket{{{sel}}}[{RATE}])))",
            f"{legend}p{int(p * 100)}",
        )
        for p in (0.5, 0.9, 0.99)
    ]


def panel(title: str, targets: list[dict], unit: str = "short", kind: str = "timeseries",
          description: str = "", stack: bool = False) -> dict:  # fmt: skip
    defaults: dict = {"unit": unit}
    if kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line",
            "fillOpacity": 20 if stack else 10,
            "stacking": {"mode": "normal" if stack else "none"},
        }
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "bottom"}}
        if kind == "timeseries"
        else {},
        "targets": [dict(t, refId=chr(ord("A") + i), datasource=DS) for i, t in enumerate(targets)],
    }


def variables() -> dict:
    def query_var(name: str, label: str, query: str) -> dict:
        return {
            "name": name,
            "label": label,
            "type": "query",
            "datasource": DS,
            "definition": query,
            "query": {"query": query, "refId": f"{name}-var"},
            "refresh": 2,
            "includeAll": True,
            "multi": True,
            "allValue": ".*",
            "current": {"selected": True, "text": "All", "value": "$__all"},
            "sort": 1,
        }

    return {
        "list": [
            {
                "name": "datasource",
                "label": "Data source",
                "type": "datasource",
                "query": "prometheus",
                "current": {},
                "hide": 0,
            },
            query_var("node", "Node", "label_values(sycri_build_info, node)"),
            query_var(
                "instance", "Instance", 'label_values(sycri_build_info{node=~"$node"}, instance)'
            ),
        ]
    }


def dashboard(uid: str, title: str, description: str, rows: list[list[dict]]) -> dict:
    panels = []
    y = 0
    for row in rows:
        width = 24 // len(row)
        for i, p in enumerate(row):
            panels.append(
                dict(p, id=len(panels) + 1, gridPos={"h": 8, "w": width, "x": i * width, "y": y})
            )
        y += 8
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["sycri", "kubernetes", "cri"],
        "editable": True,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "timezone": "browser",
        "graphTooltip": 1,
        "templating": variables(),
        "annotations": {"list": []},
        "links": [{"type": "dashboards", "tags": ["sycri"], "title": "sycri", "asDropdown": True}],
        "panels": panels,
    }


def node_overview() -> dict:
    rpc = f"sycri_rpc_requests_total{{{SEL}}}"
    errors = f'sycri_rpc_requests_total{{{SEL}, code!="OK"}}'
    return dashboard(
        "sycri-node",
        "sycri / Node overview",
        "CRI traffic, errors and latency, and what runs on each node.",
        [
            [
                panel("RPC rate by method", [q(f"sum by (method) (rate({rpc}[{RATE}]))", "{{method}}")], "reqps", stack=True),
                panel("RPC errors by method and code",
                      [q(f"sum by (method, code) (rate({errors}[{RATE}]))", "{{method}} {{code}}")], "reqps",
                      description="Every answer that was not OK, including UNIMPLEMENTED and NOT_FOUND."),
            ],
            [
                panel("RPC error ratio", [q(f"sum(rate({errors}[{RATE}])) / sum(rate({rpc}[{RATE}]))", "errors")], "percentunit"),
                panel("RPC latency", quantiles("sycri_rpc_duration_seconds"), "s"),
                panel("RPC latency p99 by method",
                      [q(f"histogram_quantile(0.99, sum by (le, method) (rate(sycri_rpc_duration_seconds_bucket{{{SEL}}}[{RATE}])))", "{{method}}")], "s"),
            ],
            [
                panel("RPCs in flight", [q(f"sum by (method) (sycri_rpc_requests_in_flight{{{SEL}}})", "{{method}}")], stack=True),
                panel("Pods by state", [q(f"sum by (state) (sycri_pod_sandboxes{{{SEL}}})", "{{state}}")], stack=True),
                panel("Containers by state", [q(f"sum by (state) (sycri_containers{{{SEL}}})", "{{state}}")], stack=True),
            ],
            [
                panel("CPU", [q(f"rate(process_cpu_seconds_total{{{SEL}}}[{RATE}])", "{{instance}}")], "percentunit"),
                panel("Resident memory", [q(f"process_resident_memory_bytes{{{SEL}}}", "{{instance}}")], "bytes"),
                panel("Open file descriptors", [q(f"process_open_fds{{{SEL}}}", "{{instance}}")]),
                panel("Versions", [q(f"count by (version) (sycri_build_info{{{SEL}}})", "{{version}}")], kind="stat"),
            ],
        ],
    )  # fmt: skip


def image_pulls() -> dict:
    pulls = f"sycri_image_pulls_total{{{SEL}}}"
    return dashboard(
        "sycri-images",
        "sycri / Image pulls",
        "Pull rate, failures, bytes, layers, pull and SIF conversion time, and the image store.",
        [
            [
                panel("Pulls by source and result",
                      [q(f"sum by (source, result) (rate({pulls}[{RATE}]))", "{{source}} {{result}}")], "ops", stack=True),
                panel("Pull failure ratio",
                      [q(f'sum(rate(sycri_image_pulls_total{{{SEL}, result="failure"}}[{RATE}])) / sum(rate({pulls}[{RATE}]))', "failures")],
                      "percentunit"),
                panel("Pulls in progress", [q(f"sum by (source) (sycri_image_pulls_in_progress{{{SEL}}})", "{{source}}")], stack=True),
            ],
            [
                panel("Download rate", [q(f"sum by (source) (rate(sycri_image_downloaded_bytes_total{{{SEL}}}[{RATE}]))", "{{source}}")], "Bps", stack=True),
                panel("Layers downloaded vs reused",
                      [q(f"sum by (result) (rate(sycri_image_layers_total{{{SEL}}}[{RATE}]))", "{{result}}")], "ops", stack=True),
            ],
            [
                panel("Pull duration (successful pulls)", quantiles("sycri_image_pull_duration_seconds", extra='result="success"'), "s"),
                panel("SIF conversion duration", quantiles("sycri_image_conversion_duration_seconds"), "s"),
            ],
            [
                panel("Image store size", [q(f"sum by (instance) (sycri_image_store_bytes{{{SEL}}})", "{{instance}}")], "bytes"),
                panel("Images stored", [q(f"sum by (instance) (sycri_image_store_images{{{SEL}}})", "{{instance}}")]),
            ],
        ],
    )  # fmt: skip


def runtime_operations() -> dict:
    return dashboard(
        "sycri-runtime",
        "sycri / Runtime operations",
        "Container starts, failures, exits and OOM kills; external command and CNI latency.",
        [
            [
                panel("Container starts", [q(f"sum(rate(sycri_container_starts_total{{{SEL}}}[{RATE}]))", "starts")], "ops"),
                panel("Container start failures", [q(f"sum(rate(sycri_container_start_failures_total{{{SEL}}}[{RATE}]))", "failures")], "ops"),
                panel("OOM kills", [q(f"sum(increase(sycri_container_oom_kills_total{{{SEL}}}[{RATE}]))", "OOM kills")]),
            ],
            [
                panel("Container exits by reason",
                      [q(f"sum by (reason) (rate(sycri_container_exits_total{{{SEL}}}[{RATE}]))", "{{reason}}")], "ops", stack=True),
                panel("Dropped container events",
                      [q(f"sum(rate(sycri_container_events_dropped_total{{{SEL}}}[{RATE}]))", "dropped")], "ops"),
            ],
            [
                panel("Commands run by command",
                      [q(f"sum by (command) (rate(sycri_command_duration_seconds_count{{{SEL}}}[{RATE}]))", "{{command}}")], "ops", stack=True),
                panel("Command latency p99 by command",
                      [q(f"histogram_quantile(0.99, sum by (le, command) (rate(sycri_command_duration_seconds_bucket{{{SEL}}}[{RATE}])))", "{{command}}")], "s"),
                panel("Command failures by command",
                      [q(f"sum by (command) (rate(sycri_command_failures_total{{{SEL}}}[{RATE}]))", "{{command}}")], "ops"),
            ],
            [
                panel("CNI operations by result",
                      [q(f"sum by (operation, result) (rate(sycri_cni_operations_total{{{SEL}}}[{RATE}]))", "{{operation}} {{result}}")], "ops"),
                panel("CNI latency", quantiles("sycri_cni_operation_duration_seconds", by="operation"), "s"),
            ],
        ],
    )  # fmt: skip


DASHBOARDS = {
    "sycri-node-overview.json": node_overview,
    "sycri-image-pulls.json": image_pulls,
    "sycri-runtime-operations.json": runtime_operations,
}


def render(build) -> str:
    return json.dumps(build(), indent=2, sort_keys=False) + "\n"


def main() -> int:
    for name, build in DASHBOARDS.items():
        (HERE / name).write_text(render(build))
    return 0


if __name__ == "__main__":
    sys.exit(main())
