"""Grafana dashboards: current with their generator, every query parses and names real metrics."""

from __future__ import annotations

import importlib.util

import promql_parser
import pytest
from sycri.observability.metrics import REGISTRY, StoreStats, inventory

from tests.support.telemetry import DASHBOARDS, dashboards, metric_names, panel_queries

QUERIES = panel_queries()


def _build_module():
    spec = importlib.util.spec_from_file_location("dashboards_build", DASHBOARDS / "build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_json_files_are_what_build_py_writes():
    build = _build_module()
    assert set(build.DASHBOARDS) == {p.name for p in DASHBOARDS.glob("*.json")}
    for name, fn in build.DASHBOARDS.items():
        assert (DASHBOARDS / name).read_text() == build.render(fn), (
            f"{name} is stale: run python dashboards/build.py"
        )


def test_the_three_dashboards_cover_what_operators_watch():
    titles = {name: {p["title"] for p in b["panels"]} for name, b in dashboards().items()}
    assert {"RPC rate by method", "RPC errors by method and code", "RPC latency",
            "Pods by state", "Containers by state"} <= titles["sycri-node-overview.json"]  # fmt: skip
    assert {"Pulls by source and result", "Pull failure ratio", "Download rate",
            "Pull duration (successful pulls)", "SIF conversion duration"} <= titles["sycri-image-pulls.json"]  # fmt: skip
    assert {"Container starts", "Container start failures", "OOM kills",
            "Command latency p99 by command", "CNI operations by result"} <= titles["sycri-runtime-operations.json"]  # fmt: skip


@pytest.mark.parametrize("name", sorted(dashboards()))
def test_datasource_node_and_instance_are_variables(name):
    board = dashboards()[name]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for var in ("node", "instance"):
        assert variables[var]["type"] == "query"
        assert variables[var]["datasource"]["uid"] == "${datasource}"
        promql_parser.parse(variables[var]["definition"].split("(", 1)[1].rsplit(",", 1)[0])
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"
        assert panel["targets"], panel["title"]


@pytest.mark.parametrize("query", QUERIES, ids=[q.label for q in QUERIES])
def test_every_query_parses_and_filters_by_node_and_instance(query):
    assert "$node" in query.expr and "$instance" in query.expr
    promql_parser.parse(query.promql)  # raises ValueError on a syntax error


def test_a_broken_query_would_be_caught():
    with pytest.raises(ValueError):
        promql_parser.parse('sum(rate(sycri_rpc_requests_total{node=~".*"}[1m])')


def test_queries_only_select_metrics_sycri_exports():
    inventory.pods = lambda: {}
    inventory.containers = lambda: {}
    inventory.images = lambda: StoreStats(0, 0)
    try:
        exported = set()
        for family in REGISTRY.collect():
            exported.add(family.name)
            exported.add(family.name + "_total")
            for suffix in ("_bucket", "_count", "_sum", "_info"):
                exported.add(family.name + suffix)
    finally:
        inventory.reset()
    for q in QUERIES:
        unknown = metric_names(q.promql) - exported
        assert not unknown, f"{q.label} selects unknown metrics {unknown}"
